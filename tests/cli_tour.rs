//! The first hour, word for word: `ota init DIR`, the three commands it
//! prints (run as printed, with `ota` the built binary), then
//! `docs/tour.sh DIR`, must end with a completed campaign and every one of
//! 100 simulated devices on the new version. The README shows the same
//! commands, so they cannot drift from the code.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The whole tour: 100 devices connecting, three waves of a 256 KiB image.
const TOUR_DEADLINE: Duration = Duration::from_secs(240);
/// The bridge's start and the fleet's Hellos.
const START_DEADLINE: Duration = Duration::from_secs(60);

fn ota() -> &'static str {
    env!("CARGO_BIN_EXE_ota")
}

fn free_port() -> u16 {
    harness::free_port().expect("a free port")
}

fn run(args: &[&str]) -> Output {
    Command::new(ota())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("ota runs")
}

/// A command line `init` printed, `ota ...`, with `ota` the built binary.
fn printed(line: &str) -> Command {
    let mut words = line.split_whitespace();
    assert_eq!(words.next(), Some("ota"), "a printed command: {line}");
    let mut c = Command::new(ota());
    c.args(words).stdin(Stdio::null());
    c
}

/// Killed (and reaped) on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for `child` to exit, at most until `deadline`: a thread blocks
/// in `wait` and sends the status; on time-out the child is killed (the
/// thread then returns too).
fn wait_until(child: Child, deadline: Instant, what: &str) -> std::process::ExitStatus {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let mut child = child;
        let _ = tx.send(child.wait().expect("wait"));
    });
    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(status) => status,
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            let _ = waiter.join();
            panic!("{what} did not finish in time");
        }
    }
}

fn devices(config: &Path) -> Vec<serde_json::Value> {
    let out = run(&[
        "devices",
        "list",
        "--json",
        "--config",
        config.to_str().unwrap(),
    ]);
    if !out.status.success() {
        return Vec::new();
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    v["devices"].as_array().cloned().unwrap_or_default()
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn init_then_its_three_commands_then_the_tour_complete_a_campaign() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("quickstart");
    let d = dir.to_str().unwrap();
    // Free ports, so parallel tests never meet on 1883.
    let (port, http) = (free_port().to_string(), free_port().to_string());
    let init = run(&["init", d, "--port", &port, "--http-port", &http]);
    let stdout = String::from_utf8_lossy(&init.stdout).to_string();
    assert!(init.status.success(), "ota init: {init:?}");
    let commands: Vec<&str> = stdout
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            ["1. ", "2. ", "3. "].iter().find_map(|p| l.strip_prefix(p))
        })
        .collect();
    assert_eq!(commands.len(), 3, "three next commands in:\n{stdout}");
    assert!(stdout.contains(&format!("docs/tour.sh {d}")), "{stdout}");

    // A second init into the same directory is refused.
    let again = run(&["init", d]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));

    // 1. ota serve; 2. ota sim (with RUST_LOG as a user has it: default).
    let serve_log = tmp.path().join("serve.log");
    let sim_log = tmp.path().join("sim.log");
    let log_file = |p: &Path| std::fs::File::create(p).expect("a log file");
    let _serve = Running(
        printed(commands[0])
            .stdout(Stdio::null())
            .stderr(log_file(&serve_log))
            .spawn()
            .expect("ota serve"),
    );
    let config = dir.join("ota.toml");
    let deadline = Instant::now() + START_DEADLINE;
    while run(&["group", "list", "--config", config.to_str().unwrap()])
        .status
        .code()
        != Some(0)
    {
        assert!(Instant::now() < deadline, "the bridge never answered");
        std::thread::sleep(Duration::from_millis(200));
    }
    let _sim = Running(
        printed(commands[1])
            .stdout(Stdio::null())
            .stderr(log_file(&sim_log))
            .spawn()
            .expect("ota sim"),
    );
    while devices(&config).len() < 100 {
        assert!(Instant::now() < deadline, "100 devices never said Hello");
        std::thread::sleep(Duration::from_millis(200));
    }
    // 3. ota devices list.
    let list = printed(commands[2]).output().expect("devices list");
    assert!(list.status.success(), "{list:?}");
    assert!(String::from_utf8_lossy(&list.stdout).contains("100 device(s)"));

    // The tour, verbatim.
    let tour = Command::new("sh")
        .arg(repo_root().join("docs/tour.sh"))
        .arg(d)
        .env("OTA", ota())
        .env_remove("OTA_CONFIG")
        .stdin(Stdio::null())
        .spawn()
        .expect("sh docs/tour.sh");
    let status = wait_until(tour, Instant::now() + TOUR_DEADLINE, "docs/tour.sh");
    assert!(status.success(), "docs/tour.sh failed: {status}");

    let fleet = devices(&config);
    assert_eq!(fleet.len(), 100);
    let behind: Vec<&serde_json::Value> = fleet
        .iter()
        .filter(|dev| dev["versions"]["main"] != "1.1.0")
        .collect();
    assert!(behind.is_empty(), "devices not on 1.1.0: {behind:?}");

    // A healthy tour logs no WARN or ERROR, in the bridge or the fleet.
    for log in [&serve_log, &sim_log] {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let loud: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .collect();
        assert!(
            loud.is_empty(),
            "{} on a healthy tour:\n{}",
            log.display(),
            loud.join("\n")
        );
    }
}

#[test]
fn the_readme_shows_the_tour_and_points_to_init() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    assert!(readme.contains("ota init"), "the README points to ota init");
    assert!(
        readme.contains("docs/tour.sh"),
        "the README points to the tour"
    );
    let tour = std::fs::read_to_string(repo_root().join("docs/tour.sh")).unwrap();
    // Every ota command of the README's tour block is in the script.
    let block = readme
        .split("## A quick tour")
        .nth(1)
        .and_then(|s| s.split("```sh").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("the README's tour block");
    for line in block.lines().map(str::trim) {
        if let Some(cmd) = line.strip_prefix("ota ") {
            if cmd.starts_with("init") || cmd.starts_with("serve") || cmd.starts_with("sim") {
                continue;
            }
            let first = cmd.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
            assert!(
                tour.contains(&format!("\"$OTA\" {first}")),
                "the README's `ota {first}` is not in docs/tour.sh"
            );
        }
    }
    let help = run(&["--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("ota init DIR"));
}
