//! Factory lines through the real binaries, as a line operator runs them:
//! `ota init`, `ota serve`, `ota line put`, and batches of fresh devices
//! from `ota sim --factory-line`, each its own process powering up
//! together. Every batch reaches the line's release; one that powers up
//! later does too; after a retarget, later batches and the devices already
//! off the line take the newer release;
//! a batch whose installs fail halts the line by itself. (A `kill -9` of
//! the bridge mid-line: tests/cli_campaign.rs.)

mod cli_support;
mod serve_support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cli_support::ota;
use serve_support::{free_port, Serve};

/// A batch's devices connecting, downloading 64 KiB and reporting.
const BATCH_DEADLINE: Duration = Duration::from_secs(120);

/// An `ota sim` batch, killed (and reaped) on drop.
struct Batch(Child);

impl Drop for Batch {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ota sim --config ota.toml --factory-line LINE --first N --devices M`,
/// with extra `args` (a profile).
fn batch(dir: &Path, line: &str, first: usize, devices: usize, args: &[&str]) -> Batch {
    let child = Command::new(env!("CARGO_BIN_EXE_ota"))
        .args(["sim", "--config", "ota.toml", "--factory-line", line])
        .args([
            "--first",
            &first.to_string(),
            "--devices",
            &devices.to_string(),
        ])
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("ota sim starts");
    Batch(child)
}

/// `ota line status LINE --json`, once it answers.
fn line_status(dir: &Path, line: &str) -> Option<serde_json::Value> {
    let out = ota(
        dir,
        &["line", "status", line, "--json", "--config", "ota.toml"],
    );
    if out.code != 0 {
        return None;
    }
    serde_json::from_str(&out.stdout).ok()
}

/// Waits until `f` holds of the line's status; the last status on failure.
fn wait_line(
    dir: &Path,
    line: &str,
    what: &str,
    f: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + BATCH_DEADLINE;
    let mut last = None;
    while Instant::now() < deadline {
        if let Some(s) = line_status(dir, line) {
            if f(&s) {
                return s;
            }
            last = Some(s);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("{what} within {BATCH_DEADLINE:?}; the line's last status: {last:#?}");
}

fn brought_up(s: &serde_json::Value) -> u64 {
    s["line"]["success_total"].as_u64().unwrap_or(0)
}

/// Signs a 64 KiB firmware with the setup's release key and pushes it.
fn push_firmware(dir: &Path, version: &str) -> String {
    let file = format!("fw-{version}.bin");
    std::fs::write(dir.join(&file), vec![version.len() as u8 ^ 0x5a; 64 * 1024]).unwrap();
    ota(dir, &cli_support::sign_firmware(&file, version)).ok();
    ota(dir, &["artifact", "push", &file, "--config", "ota.toml"]).ok();
    format!("main-{version}-esp32")
}

/// The versions of `main` that devices `line-{first..=last}` report.
fn versions(dir: &Path, line: &str, first: u32, last: u32) -> Vec<String> {
    let out = ota(dir, &["devices", "list", "--json", "--config", "ota.toml"]).ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    let of_batch = |id: &str| {
        id.strip_prefix(line)
            .and_then(|n| n.strip_prefix('-'))
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| (first..=last).contains(&n))
    };
    v["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["id"].as_str().is_some_and(of_batch))
        .map(|d| d["versions"]["main"].as_str().unwrap_or("-").to_string())
        .collect()
}

#[test]
fn batches_off_a_line_reach_its_release_follow_a_retarget_and_a_bad_batch_halts_it() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("plant");
    let (port, http) = (free_port().to_string(), free_port().to_string());
    let init = ota(
        tmp.path(),
        &[
            "init",
            d.to_str().unwrap(),
            "--port",
            &port,
            "--http-port",
            &http,
        ],
    );
    init.ok();
    let _serve = Serve::start(&d.join("ota.toml"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while ota(&d, &["group", "list", "--config", "ota.toml"]).code != 0 {
        assert!(Instant::now() < deadline, "the bridge never answered");
        std::thread::sleep(Duration::from_millis(200));
    }
    let r1 = push_firmware(&d, "1.1.0");
    let r2 = push_firmware(&d, "1.2.0");

    // The line, before any device: a standing campaign may start empty.
    let put = ota(
        &d,
        &[
            "line",
            "put",
            "press-4",
            "--release",
            &r1,
            "--min-sample",
            "1",
            "--config",
            "ota.toml",
        ],
    )
    .ok();
    assert!(put.stdout.contains("line press-4: made"), "{}", put.stdout);

    // A first batch of 20 powers up together; a second of 10 comes later.
    let b1 = batch(&d, "press-4", 1, 20, &[]);
    wait_line(&d, "press-4", "20 devices brought up", |s| {
        brought_up(s) == 20
    });
    let b2 = batch(&d, "press-4", 21, 10, &[]);
    let s = wait_line(&d, "press-4", "30 devices brought up", |s| {
        brought_up(s) == 30
    });
    assert_eq!(s["state"], "standing", "{s:#}");
    assert_eq!(s["version"], "1.1.0");

    // A newer release: later batches take it, and so do the devices of
    // the earlier ones (still in the line's group, on the old release).
    let put = ota(
        &d,
        &[
            "line",
            "put",
            "press-4",
            "--release",
            &r2,
            "--config",
            "ota.toml",
        ],
    )
    .ok();
    assert!(
        put.stdout.contains("retargeted from main 1.1.0 to 1.2.0"),
        "{}",
        put.stdout
    );
    let b3 = batch(&d, "press-4", 31, 10, &[]);
    let s = wait_line(
        &d,
        "press-4",
        "the 10 new devices and the 30 still on the line brought up to 1.2.0",
        |s| s["version"] == "1.2.0" && brought_up(s) == 40,
    );
    assert_eq!(s["state"], "standing", "{s:#}");
    let third = versions(&d, "press-4", 31, 40);
    assert_eq!(third.len(), 10, "{third:?}");
    assert!(third.iter().all(|v| v == "1.2.0"), "{third:?}");
    let first = versions(&d, "press-4", 1, 30);
    assert!(first.iter().all(|v| v == "1.2.0"), "{first:?}");

    // A bad batch: every install fails. The line halts by itself.
    std::fs::write(d.join("bad.toml"), "[faults]\ninstall_failure = 1.0\n").unwrap();
    let b4 = batch(&d, "press-4", 41, 10, &["--profile", "bad.toml"]);
    let s = wait_line(&d, "press-4", "the line halted", |s| s["state"] == "halted");
    assert!(
        s["line"]["failure_total"].as_u64().unwrap_or(0) >= 1,
        "{s:#}"
    );
    let text = ota(&d, &["line", "status", "press-4", "--config", "ota.toml"]).ok();
    assert!(text.stdout.contains("halted"), "{}", text.stdout);
    assert!(text.stdout.contains("install_failed"), "{}", text.stdout);
    drop((b1, b2, b3, b4));
}
