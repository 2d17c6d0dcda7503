//! Delta size against full (issue 18): the E3 payload `ota artifact sign
//! --delta-from` makes ([`schemas::release::build_delta`]: the zstd frame
//! with the old image as reference prefix, checked to rebuild the new one)
//! for two realistic changes:
//!
//! - a 1 MiB firmware-like image ([`super::firmware`]) with a few
//!   scattered edits and a 16 KiB insertion;
//! - a C program built twice with one function changed (`cc -O2 -static
//!   -s`, so the image is the program and the C library it carries, as a
//!   firmware image carries its SDK), when a C compiler is installed.
//!
//! Each is compared with the full image, with `zstd -19` of the new image
//! alone (how much of the gain is compression, not the old image) and, when
//! the `zstd` CLI is installed, with `zstd -19 --patch-from`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use schemas::msg::Kind;
use schemas::release::{build_delta, build_manifest, ReleaseSpec};
use schemas::ComponentName;

use super::firmware::{firmware_like, realistic_change, Change};
use super::table::{thousands, Row};

/// The block size the rows count blocks in: the protocol's default.
const BLOCK: u64 = 4096;
/// The goal: a fleet on one version gets at most this share.
pub const GOAL_SHARE: f64 = 0.10;

/// One delta measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeltaSize {
    pub old_bytes: u64,
    pub new_bytes: u64,
    /// The E3 payload.
    pub delta_bytes: u64,
    /// `delta_bytes / new_bytes`.
    pub ratio: f64,
    /// `zstd -19` of the new image alone.
    pub compressed_alone: u64,
    /// `zstd -19 --patch-from=OLD NEW`, when the CLI is installed.
    pub cli_bytes: Option<u64>,
    /// Making the delta and checking it rebuilds the image, as `ota
    /// artifact sign --delta-from` does.
    pub make_secs: f64,
    /// 4 KiB blocks a device downloads: the delta's, the full image's.
    pub blocks_delta: u64,
    pub blocks_full: u64,
    /// The synthetic change, when it is one.
    pub change: Option<Change>,
    /// How the two builds were made, when they are builds.
    pub build: Option<String>,
}

/// Why a row could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum SizeError {
    #[error("{0}")]
    Release(#[from] schemas::release::ReleaseError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Build(String),
}

/// The synthetic release: 1 MiB firmware-like image, its realistic change.
pub fn synthetic() -> Result<DeltaSize, SizeError> {
    let old = firmware_like(1024 * 1024, 1);
    let (new, change) = realistic_change(&old, 2);
    let mut m = measure(&old, &new)?;
    m.change = Some(change);
    Ok(m)
}

/// The C program built twice: `Ok(None)` when no C compiler runs here.
pub fn compiled() -> Result<Option<DeltaSize>, SizeError> {
    let Some(cc) = compiler() else {
        return Ok(None);
    };
    let dir = tempfile::tempdir()?;
    let mut how = String::new();
    let mut build = |changed: bool| -> Result<Vec<u8>, SizeError> {
        let name = if changed { "new" } else { "old" };
        let src = dir.path().join(format!("{name}.c"));
        std::fs::write(&src, program(changed))?;
        let out = dir.path().join(name);
        how = compile(&cc, &src, &out)?;
        Ok(std::fs::read(&out)?)
    };
    let old = build(false)?;
    let new = build(true)?;
    if old == new {
        return Err(SizeError::Build(
            "the two builds are identical: the changed function was optimised away".into(),
        ));
    }
    let mut m = measure(&old, &new)?;
    m.build = Some(how);
    Ok(Some(m))
}

fn measure(old: &[u8], new: &[u8]) -> Result<DeltaSize, SizeError> {
    let main = ComponentName::new("main").map_err(|e| SizeError::Build(e.to_string()))?;
    let spec = ReleaseSpec::new(Kind::Firmware, main, "1.1.0", "any", 0);
    let full = build_manifest(new, &spec)?;
    let started = Instant::now();
    let (payload, _) = build_delta(old, new, &full, "1.0.0")?;
    let make_secs = started.elapsed().as_secs_f64();
    let compressed_alone = zstd::bulk::compress(new, schemas::delta_zstd::LEVEL)?.len() as u64;
    let blocks = |n: u64| n.div_ceil(BLOCK);
    Ok(DeltaSize {
        old_bytes: old.len() as u64,
        new_bytes: new.len() as u64,
        delta_bytes: payload.len() as u64,
        ratio: payload.len() as f64 / new.len().max(1) as f64,
        compressed_alone,
        cli_bytes: zstd_cli(old, new),
        make_secs,
        blocks_delta: blocks(payload.len() as u64),
        blocks_full: blocks(new.len() as u64),
        change: None,
        build: None,
    })
}

/// `zstd -19 --patch-from=OLD NEW`'s size, if the CLI runs here.
fn zstd_cli(old: &[u8], new: &[u8]) -> Option<u64> {
    let dir = tempfile::tempdir().ok()?;
    let (o, n) = (dir.path().join("old"), dir.path().join("new"));
    std::fs::write(&o, old).ok()?;
    std::fs::write(&n, new).ok()?;
    let out = Command::new("zstd")
        .args(["-q", "-19", "-c", "--patch-from"])
        .arg(&o)
        .arg(&n)
        .output()
        .ok()?;
    out.status.success().then_some(out.stdout.len() as u64)
}

/// `$CC`, else `cc`, if it runs.
fn compiler() -> Option<PathBuf> {
    let cc = PathBuf::from(std::env::var_os("CC").unwrap_or_else(|| "cc".into()));
    let ok = Command::new(&cc)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(cc)
}

/// Builds `src` into `out`, statically linked when the C library allows;
/// returns the command used.
fn compile(cc: &Path, src: &Path, out: &Path) -> Result<String, SizeError> {
    let mut last = String::new();
    for flags in [&["-O2", "-static", "-s"][..], &["-O2", "-s"][..]] {
        let o = Command::new(cc)
            .args(flags)
            .arg("-o")
            .arg(out)
            .arg(src)
            .output()?;
        if o.status.success() {
            return Ok(format!("{} {}", cc.display(), flags.join(" ")));
        }
        last = String::from_utf8_lossy(&o.stderr).lines().take(3).collect();
    }
    Err(SizeError::Build(format!("{} failed: {last}", cc.display())))
}

/// Functions in the generated program.
const FUNCTIONS: usize = 400;
/// The one that differs between the builds.
const CHANGED: usize = FUNCTIONS / 2;

/// A C program of [`FUNCTIONS`] small functions, each calling the one
/// before it and logging through a table of messages; `changed` adds two
/// statements to function [`CHANGED`] (it grows, and the code after it
/// moves, as a real one-function fix does).
pub fn program(changed: bool) -> String {
    let mut s = String::from("#include <stdio.h>\n#include <stdlib.h>\n\n");
    s.push_str("static const char *const msgs[] = {\n");
    for i in 0..64 {
        s.push_str(&format!("  \"sensor {i}: reading %u out of range\\n\",\n"));
    }
    s.push_str("};\n\n");
    s.push_str(
        "__attribute__((noinline)) static unsigned f0(unsigned x) { return x * 2654435761u; }\n",
    );
    for i in 1..FUNCTIONS {
        let extra = if changed && i == CHANGED {
            "  x = (x << 7) | (x >> 25);\n  if (x % 7 == 3) fprintf(stderr, msgs[x % 61], x);\n"
        } else {
            ""
        };
        s.push_str(&format!(
            "__attribute__((noinline)) static unsigned f{i}(unsigned x) {{\n  \
               x = x * {m}u + {i}u;\n  x ^= x >> {sh};\n{extra}  \
               if ((x & 255) == {i} % 256) printf(msgs[x % 64], x);\n  \
               return f{p}(x + {i}u) ^ (x >> 3);\n}}\n",
            m = 2 * i + 1,
            sh = 5 + i % 11,
            p = i - 1,
        ));
    }
    s.push_str(&format!(
        "\nint main(int argc, char **argv) {{\n  unsigned x = argc > 1 ? (unsigned)atoi(argv[1]) : 1u;\n  \
           printf(\"%u\\n\", f{}(x));\n  return 0;\n}}\n",
        FUNCTIONS - 1
    ));
    s
}

/// The synthetic row's label.
pub const SYNTHETIC: &str =
    "delta size: 1 MiB firmware-like image, 32 scattered edits + 16 KiB inserted";
/// The builds' row's label.
pub const COMPILED: &str = "delta size: a C program built twice, one function changed";

/// The row of a measured delta.
pub fn row(bench: &str, d: &DeltaSize) -> Row {
    let changed = d
        .change
        .map(|c| format!("{:.1}% changed; ", 100.0 * c.share(d.new_bytes as usize)))
        .unwrap_or_default();
    let cli = d
        .cli_bytes
        .map(|b| format!("; `zstd -19 --patch-from` {} B", thousands(b as usize)))
        .unwrap_or_default();
    Row {
        bench: bench.into(),
        broker: "none".into(),
        devices: 0,
        time: Some(format!("{:.2} s to make", d.make_secs)),
        result: format!(
            "{changed}delta {} B of {} B ({:.1}%), {} blocks of 4 KiB instead of {}; \
             the image alone compresses to {:.0}%{cli}",
            thousands(d.delta_bytes as usize),
            thousands(d.new_bytes as usize),
            100.0 * d.ratio,
            d.blocks_delta,
            d.blocks_full,
            100.0 * d.compressed_alone as f64 / d.new_bytes.max(1) as f64,
        ),
        broker_rss: None,
        egress: Some(format!("{:.3}x", d.ratio)),
        goal: super::suite::goal("delta ≤ 10%", d.ratio <= GOAL_SHARE),
        detail: serde_json::to_value(d).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builds_differ_in_one_function_only() {
        let (old, new) = (program(false), program(true));
        let at = new.find(&format!("f{CHANGED}(unsigned x) {{")).unwrap();
        let end = at + new[at..].find("\n}\n").unwrap();
        let (before, after) = (&new[..at], &new[end..]);
        assert!(old.starts_with(before) && old.ends_with(after));
        let body_old = &old[at..old.len() - after.len()];
        let body_new = &new[at..end];
        assert_eq!(body_new.lines().count(), body_old.lines().count() + 2);
    }
}
