//! `ota artifact sign` and `ota artifact inspect`, run as a new user would:
//! keys from `ota keygen`, an image on disk, the built binary. The signed
//! manifest is then checked with the same code a device uses.

mod cli_support;

use std::path::{Path, PathBuf};

use cli_support::ota;
use schemas::cose::TrustStore;
use schemas::keys;
use schemas::merkle::MerkleTree;
use schemas::msg::manifest::verify_entry;
use schemas::msg::{ErrorCode, Kind};
use sha2::{Digest, Sha256};

/// A fresh directory with `keys/` from `ota keygen` and a 10,000-byte
/// image `fw.bin`.
struct Setup {
    dir: tempfile::TempDir,
    image: Vec<u8>,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        ota(dir.path(), &["keygen", "--out", "keys"]).ok();
        let image: Vec<u8> = (0..10_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(dir.path().join("fw.bin"), &image).unwrap();
        Setup { dir, image }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn public(&self, stem: &str) -> keys::VerifyingKey {
        keys::parse_verifying_key(
            &std::fs::read_to_string(self.path(&format!("keys/{stem}.pub"))).unwrap(),
        )
        .unwrap()
    }

    fn inspect_json(&self, args: &[&str]) -> (i32, serde_json::Value, String) {
        let run = ota(self.dir(), args);
        let json = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}\n{}", run.stdout, run.stderr));
        (run.code, json, run.stderr)
    }
}

/// `ota artifact sign fw.bin` as firmware main 1.3.0 for esp32.
fn sign() -> Vec<&'static str> {
    cli_support::sign_firmware("fw.bin", "1.3.0")
}

fn with<'a>(base: &[&'a str], more: &[&'a str]) -> Vec<&'a str> {
    base.iter().chain(more).copied().collect()
}

#[test]
fn sign_then_inspect_shows_every_field_and_verifies() {
    let s = Setup::new();
    let run = ota(s.dir(), &sign()).ok();
    assert!(run.stdout.contains("fw.bin.manifest"), "{}", run.stdout);

    let release_kid = keys::kid_to_hex(&keys::kid(&s.public("release")));
    let (code, j, _) = s.inspect_json(&[
        "artifact",
        "inspect",
        "fw.bin.manifest",
        "--trust",
        "keys/release.pub",
        "--json",
    ]);
    assert_eq!(code, 0);
    let tree = MerkleTree::build(&s.image, 4096).unwrap();
    assert_eq!(j["artifact"], "main-1.3.0-esp32");
    assert_eq!(j["kind"], "firmware");
    assert_eq!(j["component"], "main");
    assert_eq!(j["version"], "1.3.0");
    assert_eq!(j["arch"], "esp32");
    assert_eq!(j["size"], 10_000);
    assert_eq!(j["sha256"], hex::encode(Sha256::digest(&s.image)));
    assert_eq!(j["block_size"], 4096);
    assert_eq!(j["blocks"], 3);
    assert_eq!(j["merkle_root"], hex::encode(tree.root()));
    assert!(j["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(j["min_version"], serde_json::Value::Null);
    assert_eq!(j["allow_downgrade"], false);
    assert_eq!(j["kid"], release_kid);
    assert_eq!(j["tagged"], true);
    assert_eq!(j["verified"], true);

    // The text form names every field too.
    let text = ota(
        s.dir(),
        &[
            "artifact",
            "inspect",
            "fw.bin.manifest",
            "--trust",
            "keys/release.pub",
        ],
    )
    .ok()
    .stdout;
    for field in [
        "artifact",
        "kind",
        "component",
        "version",
        "arch",
        "size",
        "sha256",
        "block_size",
        "blocks",
        "merkle_root",
        "created",
        "min_version",
        "allow_downgrade",
        "kid",
        "signature",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(field)),
            "{field} missing:\n{text}"
        );
    }
    assert!(text.contains("verified with keys/release.pub"), "{text}");
    assert!(text.contains(&hex::encode(tree.root())), "{text}");

    // Without --trust it shows the manifest and says the signature was not checked.
    let text = ota(s.dir(), &["artifact", "inspect", "fw.bin.manifest"])
        .ok()
        .stdout;
    assert!(text.contains("not checked"), "{text}");
}

#[test]
fn the_manifest_verifies_as_a_device_verifies_it() {
    let s = Setup::new();
    ota(s.dir(), &sign()).ok();
    let envelope = std::fs::read(s.path("fw.bin.manifest")).unwrap();
    let m = verify_entry(&envelope, &TrustStore::new([s.public("release")])).unwrap();
    assert_eq!(m.kind, Kind::Firmware);
    assert_eq!(m.size, 10_000);
    assert_eq!(m.sha256, <[u8; 32]>::from(Sha256::digest(&s.image)));
    // Every block of the image verifies against the signed root.
    let tree = MerkleTree::build(&s.image, m.block_size).unwrap();
    for i in 0..m.blocks {
        let start = i as usize * m.block_size as usize;
        let end = (start + m.block_size as usize).min(s.image.len());
        let proof = tree.proof(i).unwrap();
        assert!(schemas::merkle::verify_block(
            &m.merkle_root,
            i,
            m.blocks,
            &s.image[start..end],
            &proof
        ));
    }
    // The operator key is not a release key.
    let e = verify_entry(&envelope, &TrustStore::new([s.public("operator")])).unwrap_err();
    assert_eq!(e.code, ErrorCode::UnknownKey);
}

#[test]
fn optional_flags_land_in_the_manifest() {
    let s = Setup::new();
    let args = with(
        &sign(),
        &[
            "--block-size",
            "256",
            "--id",
            "fw-rollback.1",
            "--min-version",
            "1.1.0",
            "--allow-downgrade",
            "--out",
            "out.cose",
        ],
    );
    ota(s.dir(), &args).ok();
    assert!(!s.path("fw.bin.manifest").exists());
    let (code, j, _) = s.inspect_json(&["artifact", "inspect", "out.cose", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(j["artifact"], "fw-rollback.1");
    assert_eq!(j["block_size"], 256);
    assert_eq!(j["blocks"], 40);
    assert_eq!(j["min_version"], "1.1.0");
    assert_eq!(j["allow_downgrade"], true);
    assert_eq!(
        j["verified"],
        serde_json::Value::Null,
        "not checked without --trust"
    );

    // A version with build metadata gives a default id inside the alphabet.
    let args = [
        "artifact",
        "sign",
        "fw.bin",
        "--kind",
        "app",
        "--component",
        "ui",
        "--version",
        "2.0.0-rc.1+b7",
        "--arch",
        "any",
        "--key",
        "keys/release.key",
    ];
    ota(s.dir(), &args).ok();
    let (_, j, _) = s.inspect_json(&["artifact", "inspect", "fw.bin.manifest", "--json"]);
    assert_eq!(j["artifact"], "ui-2.0.0-rc.1-b7-any");
    assert_eq!(j["kind"], "app");
}

#[test]
fn inspect_fails_when_the_trusted_keys_do_not_verify() {
    let s = Setup::new();
    ota(s.dir(), &sign()).ok();

    // Signed by another key: unknown_key, exit 1, the fields still shown.
    let (code, j, stderr) = s.inspect_json(&[
        "artifact",
        "inspect",
        "fw.bin.manifest",
        "--trust",
        "keys/operator.pub",
        "--json",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(j["verified"], false);
    assert_eq!(j["error"]["code"], "unknown_key");
    assert_eq!(j["artifact"], "main-1.3.0-esp32");
    assert!(
        stderr.starts_with("error: ") && stderr.contains("unknown_key"),
        "{stderr}"
    );

    // Several --trust keys: verifies when one of them signed it.
    ota(
        s.dir(),
        &[
            "artifact",
            "inspect",
            "fw.bin.manifest",
            "--trust",
            "keys/operator.pub",
            "--trust",
            "keys/release.pub",
        ],
    )
    .ok();

    // A flipped bit in the signature: bad_signature.
    let mut envelope = std::fs::read(s.path("fw.bin.manifest")).unwrap();
    let last = envelope.len() - 1;
    envelope[last] ^= 0x01;
    std::fs::write(s.path("tampered.manifest"), &envelope).unwrap();
    ota(
        s.dir(),
        &[
            "artifact",
            "inspect",
            "tampered.manifest",
            "--trust",
            "keys/release.pub",
        ],
    )
    .fails_with(1, &["tampered.manifest", "bad_signature"]);
}

#[test]
fn sign_errors_are_one_clear_line() {
    let s = Setup::new();
    let d = s.dir();
    let replace = |flag: &str, value: &'static str| -> Vec<&'static str> {
        let mut args: Vec<&'static str> = sign();
        let at = args.iter().position(|a| *a == flag).unwrap();
        args[at + 1] = value;
        args
    };

    // A missing image: exit 1, names the file.
    ota(d, &replace("sign", "missing.bin")).fails_with(1, &["missing.bin"]);
    // Bad values are usage errors (exit 2) that name the flag.
    ota(d, &replace("--version", "1.3")).fails_with(2, &["--version", "1.3", "semver"]);
    ota(d, &with(&sign(), &["--min-version", "one"])).fails_with(2, &["--min-version", "semver"]);
    ota(d, &replace("--kind", "kernel"))
        .fails_with(2, &["--kind", "kernel", "firmware, app, config"]);
    ota(d, &with(&sign(), &["--block-size", "1000"]))
        .fails_with(2, &["--block-size", "1000", "power of two"]);
    ota(d, &with(&sign(), &["--block-size", "131072"]))
        .fails_with(2, &["--block-size", "power of two"]);
    ota(d, &with(&sign(), &["--block-size", "big"]))
        .fails_with(2, &["--block-size", "not a number"]);
    ota(d, &replace("--arch", "arm v7")).fails_with(2, &["--arch"]);
    ota(d, &replace("--component", "ma/in")).fails_with(2, &["--component", "ma/in"]);
    ota(d, &with(&sign(), &["--id", "a#b"])).fails_with(2, &["--id"]);
    // Wrong keys: exit 1, say what was expected.
    ota(d, &replace("--key", "keys/release.pub")).fails_with(1, &["public key", "release.key"]);
    ota(d, &replace("--key", "keys/operator.key")).fails_with(1, &["operator key", "release"]);
    ota(d, &replace("--key", "keys/missing.key"))
        .fails_with(1, &["keys/missing.key", "ota keygen"]);
    ota(d, &replace("--key", "fw.bin")).fails_with(1, &["fw.bin", "64 hex characters"]);
    std::fs::write(s.path("garbage.key"), "not a key at all\n").unwrap();
    ota(d, &replace("--key", "garbage.key")).fails_with(1, &["garbage.key", "64 hex characters"]);
    // A key that does not belong to the .pub beside it: one was replaced.
    std::fs::create_dir(s.path("mixed")).unwrap();
    std::fs::copy(s.path("keys/release.key"), s.path("mixed/release.key")).unwrap();
    std::fs::copy(s.path("keys/operator.pub"), s.path("mixed/release.pub")).unwrap();
    ota(d, &replace("--key", "mixed/release.key"))
        .fails_with(1, &["does not belong to", "mixed/release.pub"]);
    // Nothing was written by any of them.
    assert!(!s.path("fw.bin.manifest").exists());
}

#[test]
fn images_must_hold_1_byte_to_64_mib() {
    let s = Setup::new();
    std::fs::write(s.path("empty.bin"), b"").unwrap();
    let mut args = sign();
    args[2] = "empty.bin";
    ota(s.dir(), &args).fails_with(1, &["empty.bin", "empty"]);

    // A sparse file one byte over the limit: refused before it is read.
    let big = std::fs::File::create(s.path("big.bin")).unwrap();
    big.set_len(64 * 1024 * 1024 + 1).unwrap();
    args[2] = "big.bin";
    ota(s.dir(), &args).fails_with(1, &["big.bin", "64 MiB"]);

    // A one-byte image is fine.
    std::fs::write(s.path("one.bin"), [7u8]).unwrap();
    args[2] = "one.bin";
    ota(s.dir(), &args).ok();
}

#[test]
fn inspect_errors_are_one_clear_line() {
    let s = Setup::new();
    ota(s.dir(), &sign()).ok();
    let d = s.dir();
    ota(d, &["artifact", "inspect", "missing.manifest"]).fails_with(1, &["missing.manifest"]);
    ota(d, &["artifact", "inspect", "fw.bin"]).fails_with(1, &["fw.bin", "image"]);
    ota(d, &["artifact", "inspect", "keys/release.pub"]).fails_with(1, &["not a signed manifest"]);
    ota(
        d,
        &[
            "artifact",
            "inspect",
            "fw.bin.manifest",
            "--trust",
            "keys/release.key",
        ],
    )
    .fails_with(1, &["private key", "release.pub"]);
    ota(
        d,
        &[
            "artifact",
            "inspect",
            "fw.bin.manifest",
            "--trust",
            "keys/nope.pub",
        ],
    )
    .fails_with(1, &["keys/nope.pub"]);
}
