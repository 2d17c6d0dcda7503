//! Running the built `ota` binary as a user would, for the root package's
//! CLI tests (`tests/cli_*.rs`). Not a test target itself: cargo only
//! builds `tests/*.rs` and `tests/*/main.rs`.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// What one run of `ota` printed and how it ended.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Succeeded with exit code 0.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Failed with `code` and an `error: ...` line on stderr that contains
    /// every one of `words`, and no panic or backtrace. Exit code 1 (our
    /// errors) prints that one line only; exit code 2 (clap's usage
    /// errors) may add clap's usage lines, where the words may also be.
    #[track_caller]
    pub fn fails_with(self, code: i32, words: &[&str]) -> Self {
        assert_eq!(
            self.code, code,
            "expected exit code {code}\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        let first = self.stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error: "),
            "stderr does not start with 'error: ':\n{}",
            self.stderr
        );
        if code == 1 {
            assert_eq!(
                self.stderr.trim_end().lines().count(),
                1,
                "more than one line on stderr:\n{}",
                self.stderr
            );
        }
        let searched = if code == 1 {
            first
        } else {
            self.stderr.as_str()
        };
        for w in words {
            assert!(
                searched.contains(w),
                "the error lacks {w:?}:\n{}",
                self.stderr
            );
        }
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        assert!(!self.stderr.contains("backtrace"), "{}", self.stderr);
        self
    }
}

/// Runs `ota args...` in `dir`, with the default log filter.
pub fn ota(dir: &Path, args: &[&str]) -> Run {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_ota"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("the ota binary runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `ota artifact sign IMAGE` for firmware `main` VERSION on esp32, signed
/// with the release key `ota keygen --out keys` wrote.
pub fn sign_firmware<'a>(image: &'a str, version: &'a str) -> Vec<&'a str> {
    vec![
        "artifact",
        "sign",
        image,
        "--kind",
        "firmware",
        "--component",
        "main",
        "--version",
        version,
        "--arch",
        "esp32",
        "--key",
        "keys/release.key",
    ]
}

/// [`ota`] off the async runtime (a test's tokio runtime must not block).
pub async fn ota_async(dir: &Path, args: &[&str]) -> Run {
    let (dir, args): (std::path::PathBuf, Vec<String>) = (
        dir.to_path_buf(),
        args.iter().map(|s| s.to_string()).collect(),
    );
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ota(&dir, &args)
    })
    .await
    .expect("the ota task")
}

/// `ota args... --config ota.toml` in `dir`, off the runtime; it must
/// succeed.
pub async fn ota_ok(dir: &Path, args: &[&str]) -> Run {
    let args = [args, &["--config", "ota.toml"]].concat();
    ota_async(dir, &args).await.ok()
}

/// `ota campaign create` of campaign `id`: `release` to all of group acme
/// in one wave that passes on 100 % success, judged from the first
/// report, with 60 s to report.
pub async fn create_to_acme(dir: &Path, id: &str, release: &str) -> Run {
    ota_ok(
        dir,
        &[
            "campaign",
            "create",
            "--id",
            id,
            "--release",
            release,
            "--wave",
            "acme=100%",
            "--success-bar",
            "100%",
            "--min-sample",
            "1",
            "--wave-timeout",
            "60s",
        ],
    )
    .await
}

/// [`ota`] with `input` on its stdin.
pub fn ota_stdin(dir: &Path, args: &[&str], input: &str) -> Run {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ota"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("RUST_BACKTRACE")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the ota binary runs");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("the ota binary ends");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
