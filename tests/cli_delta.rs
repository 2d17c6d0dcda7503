//! `ota artifact sign --delta-from` (E3), run as a release engineer would,
//! and interop with the reference tool: Debian's `zstd` CLI rebuilds the
//! image from our delta, and a patch the CLI made applies with our code.

mod cli_support;

use std::path::Path;
use std::process::Command;

use cli_support::{ota, sign_firmware};
use schemas::cose::TrustStore;
use schemas::keys;
use schemas::msg::delta::{check_against, pick_delta, Installed};
use schemas::msg::manifest::verify_entry;
use sha2::{Digest, Sha256};

/// A pseudo-random image of `len` bytes: firmware does not compress much.
fn image(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// `old` with about 3% changed: 64 scattered 256-byte edits and a 16 KiB
/// insertion in the middle.
fn changed(old: &[u8]) -> Vec<u8> {
    let mut new = old.to_vec();
    let step = new.len() / 64;
    for k in 0..64 {
        let at = k * step + 100;
        let patch = image(256, k as u64 + 1000);
        new[at..at + 256].copy_from_slice(&patch);
    }
    let mid = new.len() / 2;
    new.splice(mid..mid, image(16 * 1024, 7));
    new
}

fn sha(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

fn zstd_cli() -> Command {
    Command::new("/usr/bin/zstd")
}

fn public(dir: &Path) -> keys::VerifyingKey {
    keys::parse_verifying_key(&std::fs::read_to_string(dir.join("keys/release.pub")).unwrap())
        .unwrap()
}

#[test]
fn sign_writes_deltas_that_the_zstd_cli_rebuilds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ota(d, &["keygen", "--out", "keys"]).ok();
    let v110 = image(1 << 20, 1);
    let v120 = changed(&v110);
    let v130 = changed(&v120);
    std::fs::write(d.join("fw-1.1.0.bin"), &v110).unwrap();
    std::fs::write(d.join("fw-1.2.0.bin"), &v120).unwrap();
    std::fs::write(d.join("fw-1.3.0.bin"), &v130).unwrap();

    let mut args = sign_firmware("fw-1.3.0.bin", "1.3.0");
    args.extend([
        "--delta-from",
        "fw-1.2.0.bin@1.2.0",
        "--delta-from",
        "fw-1.1.0.bin@1.1.0",
    ]);
    let run = ota(d, &args).ok();
    assert!(run.stdout.contains("% of the image"), "{}", run.stdout);

    let trust = TrustStore::new([public(d)]);
    let full = verify_entry(
        &std::fs::read(d.join("fw-1.3.0.bin.manifest")).unwrap(),
        &trust,
    )
    .unwrap();
    assert!(full.delta.is_none());
    for (from, old) in [("1.2.0", &v120), ("1.1.0", &v110)] {
        let payload_path = d.join(format!("fw-1.3.0.bin.from-{from}.zst"));
        let payload = std::fs::read(&payload_path).unwrap();
        let envelope =
            std::fs::read(d.join(format!("fw-1.3.0.bin.from-{from}.zst.manifest"))).unwrap();
        let m = verify_entry(&envelope, &trust).unwrap();
        check_against(&m, &full).unwrap();
        assert_eq!(m.size, payload.len() as u64);
        assert_eq!(m.sha256, sha(&payload));
        let info = m.delta.as_ref().unwrap();
        assert_eq!(info.from_version, from);
        assert_eq!(info.from_sha256, sha(old));
        // A device on `from` with that image picks it.
        let installed = Installed {
            version: from,
            sha256: &sha(old),
        };
        assert_eq!(
            pick_delta(std::slice::from_ref(&envelope), &full, installed, &trust),
            Some(m.clone())
        );

        // The reference tool rebuilds the image byte for byte.
        let out = d.join(format!("rebuilt-{from}.bin"));
        let status = zstd_cli()
            .arg("-q")
            .arg("-d")
            .arg(format!(
                "--patch-from={}",
                d.join(format!("fw-{from}.bin")).display()
            ))
            .arg(&payload_path)
            .arg("-o")
            .arg(&out)
            .status()
            .expect("the zstd CLI is at /usr/bin/zstd (.ci/run installs it)");
        assert!(status.success());
        assert!(
            std::fs::read(&out).unwrap() == v130,
            "zstd -d --patch-from rebuilt other bytes"
        );
    }
    // One version step (about 3% changed) is far below a tenth of the image.
    let one_step = std::fs::metadata(d.join("fw-1.3.0.bin.from-1.2.0.zst"))
        .unwrap()
        .len();
    assert!(
        one_step * 10 < v130.len() as u64,
        "delta {one_step} bytes for {} bytes",
        v130.len()
    );
}

#[test]
fn a_patch_made_by_the_zstd_cli_applies_with_our_code() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Not a power of two, and exactly one: the CLI's window rules differ.
    for len in [(1 << 20) + 12_345, 1 << 20] {
        let old = image(len, 3);
        let new = changed(&old);
        std::fs::write(d.join("old.bin"), &old).unwrap();
        std::fs::write(d.join("new.bin"), &new).unwrap();
        let status = zstd_cli()
            .args(["-q", "-f", "-19"])
            .arg(format!("--patch-from={}", d.join("old.bin").display()))
            .arg(d.join("new.bin"))
            .arg("-o")
            .arg(d.join("new.zst"))
            .status()
            .unwrap();
        assert!(status.success());
        let patch = std::fs::read(d.join("new.zst")).unwrap();
        let mut out = Vec::new();
        schemas::delta_zstd::apply(&old, &patch, new.len() as u64, &sha(&new), &mut out)
            .unwrap_or_else(|e| panic!("{len} bytes: {e}"));
        assert!(out == new);
    }
}

#[test]
fn bad_delta_flags_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ota(d, &["keygen", "--out", "keys"]).ok();
    std::fs::write(d.join("fw.bin"), image(5000, 1)).unwrap();
    let mut args = sign_firmware("fw.bin", "1.3.0");
    args.extend(["--delta-from", "fw.bin"]);
    ota(d, &args).fails_with(2, &["OLD.bin@VERSION"]);
    let mut args = sign_firmware("fw.bin", "1.3.0");
    args.extend(["--delta-from", "fw.bin@1.2"]);
    ota(d, &args).fails_with(2, &["semver"]);
    let mut args = sign_firmware("fw.bin", "1.3.0");
    args.extend(["--delta-from", "missing.bin@1.2.0"]);
    ota(d, &args).fails_with(1, &["missing.bin"]);
    let mut args = sign_firmware("fw.bin", "1.3.0");
    args.extend(["--delta-from", "fw.bin@1.3.0"]);
    ota(d, &args).fails_with(1, &["same version"]);
}
