//! `ota --help` and `ota keygen`, run as a new user would: the built
//! binary in a fresh directory.

mod cli_support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use cli_support::ota;
use schemas::keys;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn help_explains_ota_and_lists_commands_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let help = ota(dir.path(), &["--help"]).ok().stdout;
    assert!(help.contains("over MQTT"), "{help}");
    let keygen = help.find("\n  keygen").expect("keygen is listed");
    let artifact = help.find("\n  artifact").expect("artifact is listed");
    assert!(keygen < artifact, "{help}");
    assert!(help.contains("RUST_LOG"), "{help}");

    // No subcommand, or an unknown one: a usage error, exit 2.
    assert_eq!(ota(dir.path(), &[]).code, 2);
    ota(dir.path(), &["frobnicate"]).fails_with(2, &["frobnicate"]);
}

#[test]
fn every_flag_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &[&str])] = &[
        (&["keygen", "--help"], &["--out", "--force"]),
        (
            &["artifact", "sign", "--help"],
            &[
                "--kind",
                "--component",
                "--version",
                "--arch",
                "--block-size",
                "--id",
                "--min-version",
                "--allow-downgrade",
                "--key",
                "--out",
            ],
        ),
        (&["artifact", "inspect", "--help"], &["--trust", "--json"]),
    ];
    for (args, flags) in cases {
        let help = ota(dir.path(), args).ok().stdout;
        // The Options section: one line per flag, its explanation below.
        let lines: Vec<&str> = help
            .lines()
            .skip_while(|l| !l.starts_with("Options:"))
            .collect();
        for flag in *flags {
            // The flag's line, then its explanation on the next line.
            let at = lines
                .iter()
                .position(|l| l.trim_start().starts_with(flag))
                .unwrap_or_else(|| panic!("{args:?}: {flag} is not in the help:\n{help}"));
            let explained = lines.get(at + 1).is_some_and(|l| l.trim().len() > 10);
            assert!(explained, "{args:?}: {flag} has no explanation:\n{help}");
        }
    }
}

#[test]
fn keygen_writes_three_pairs_with_private_files_0600() {
    let dir = tempfile::tempdir().unwrap();
    let run = ota(dir.path(), &["keygen", "--out", "keys"]).ok();
    let keys_dir = dir.path().join("keys");
    for stem in ["release", "operator", "director"] {
        let private = keys_dir.join(format!("{stem}.key"));
        let public = keys_dir.join(format!("{stem}.pub"));
        assert_eq!(mode(&private), 0o600, "{stem}.key");
        let (sk, pk) = (read(&private), read(&public));
        for text in [&sk, &pk] {
            assert_eq!(text.len(), 65);
            assert!(text.ends_with('\n'));
            assert!(text[..64]
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        }
        let sk = keys::parse_signing_key(&sk).unwrap();
        let pk = keys::parse_verifying_key(&pk).unwrap();
        assert_eq!(sk.verifying_key(), pk, "{stem}.pub belongs to {stem}.key");
        let kid = keys::kid_to_hex(&keys::kid(&pk));
        assert!(
            run.stdout.contains(&kid),
            "the kid of {stem} is printed:\n{}",
            run.stdout
        );
    }
    assert!(run.stdout.contains("next steps"), "{}", run.stdout);
    assert!(run.stdout.contains("ota artifact sign"), "{}", run.stdout);
    assert_ne!(
        read(&keys_dir.join("release.key")),
        read(&keys_dir.join("operator.key")),
        "two different keys"
    );
    assert_ne!(
        read(&keys_dir.join("release.key")),
        read(&keys_dir.join("director.key")),
        "the director key is never the release key"
    );
    assert!(run.stdout.contains("director_key"), "{}", run.stdout);
}

#[test]
fn keygen_adds_the_director_pair_to_an_older_key_directory() {
    let dir = tempfile::tempdir().unwrap();
    ota(dir.path(), &["keygen", "--out", "keys"]).ok();
    let keys_dir = dir.path().join("keys");
    let release = read(&keys_dir.join("release.key"));
    std::fs::remove_file(keys_dir.join("director.key")).unwrap();
    std::fs::remove_file(keys_dir.join("director.pub")).unwrap();
    let run = ota(dir.path(), &["keygen", "--out", "keys"]).ok();
    assert!(
        run.stdout.contains("release key pair: kept"),
        "{}",
        run.stdout
    );
    assert_eq!(read(&keys_dir.join("release.key")), release, "kept");
    let sk = keys::parse_signing_key(&read(&keys_dir.join("director.key"))).unwrap();
    let pk = keys::parse_verifying_key(&read(&keys_dir.join("director.pub"))).unwrap();
    assert_eq!(sk.verifying_key(), pk);
    assert_eq!(mode(&keys_dir.join("director.key")), 0o600);
    // Half a director pair is still refused.
    std::fs::remove_file(keys_dir.join("director.key")).unwrap();
    ota(dir.path(), &["keygen", "--out", "keys"])
        .fails_with(1, &["director.pub", "already exists"]);
}

#[test]
fn keygen_never_overwrites_without_force() {
    let dir = tempfile::tempdir().unwrap();
    ota(dir.path(), &["keygen", "--out", "keys"]).ok();
    let release = dir.path().join("keys/release.key");
    let before = read(&release);

    ota(dir.path(), &["keygen", "--out", "keys"]).fails_with(1, &["already exists", "--force"]);
    assert_eq!(read(&release), before, "the key is untouched");

    // Only one file of the six present: still refused, nothing written.
    let lone = tempfile::tempdir().unwrap();
    std::fs::write(lone.path().join("operator.pub"), "x\n").unwrap();
    ota(lone.path(), &["keygen", "--out", "."]).fails_with(1, &["operator.pub", "already exists"]);
    assert!(
        !lone.path().join("release.key").exists(),
        "a refusal writes nothing"
    );

    // --force replaces them, and the new private file is 0600 again.
    ota(dir.path(), &["keygen", "--out", "keys", "--force"]).ok();
    assert_ne!(read(&release), before, "a new key");
    assert_eq!(mode(&release), 0o600);
    let sk = keys::parse_signing_key(&read(&release)).unwrap();
    let pk = keys::parse_verifying_key(&read(&dir.path().join("keys/release.pub"))).unwrap();
    assert_eq!(sk.verifying_key(), pk);
}

#[test]
fn keygen_into_a_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("taken"), "x").unwrap();
    ota(dir.path(), &["keygen", "--out", "taken"]).fails_with(1, &["taken", "not a directory"]);
    ota(dir.path(), &["keygen"]).fails_with(2, &["--out"]);
}
