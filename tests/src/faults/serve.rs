//! The real `ota serve` process, over an external broker or with its
//! embedded one, for faults where a process dies or where the fleet needs
//! a process of its own (10,000 devices and the broker's 10,000 sockets do
//! not fit one process's open-file limit): its config and key files in a
//! directory, SIGKILL (nothing of the bridge's shutdown runs), SIGTERM,
//! panics counted from its stderr, and a ready check.
//!
//! The binary is `target/<profile>/ota`, found next to the running test
//! executable (`cargo test --workspace` builds it), or `OTA_BIN`.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bridge::client::{ClientOptions, OpsClient};
use schemas::keys::SigningKey;

use super::{poll, FaultError};
use crate::stack::Keys;

/// The `ota` binary: `OTA_BIN`, or `ota` in the target directory of the
/// running test executable (`target/debug/deps/x` → `target/debug/ota`).
pub fn ota_binary() -> Result<PathBuf, FaultError> {
    if let Some(p) = std::env::var_os("OTA_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .unwrap_or(Path::new("."));
    let bin = dir.join(format!("ota{}", std::env::consts::EXE_SUFFIX));
    if bin.exists() {
        Ok(bin)
    } else {
        Err(FaultError::NoBinary(bin))
    }
}

/// The broker an `ota serve` of the fault suite uses.
#[derive(Debug, Clone, Copy)]
pub enum ServeBroker {
    /// Any MQTT broker at 127.0.0.1:port (Mosquitto in the suite).
    External(u16),
    /// Its own embedded rumqttd listening on 127.0.0.1:port, as `ota
    /// serve` runs it: accounts for the bridge and the operator
    /// ([`SUITE_BRIDGE`], [`SUITE_OPERATOR`]), only provisioned devices
    /// (each with its own password, `bridge::client::provision::logins`).
    Embedded(u16),
}

impl ServeBroker {
    /// The port devices and operators connect to.
    pub fn port(&self) -> u16 {
        match self {
            ServeBroker::External(p) | ServeBroker::Embedded(p) => *p,
        }
    }

    fn section(&self) -> String {
        match self {
            ServeBroker::External(port) => {
                format!("mode = \"external\"\nurl = \"mqtt://127.0.0.1:{port}\"\n")
            }
            ServeBroker::Embedded(port) => {
                // Room for the suite's largest fleet (10,000), below the
                // open-file limit of this machine (20,000).
                let ((bu, bp), (ou, op)) = (SUITE_BRIDGE, SUITE_OPERATOR);
                format!(
                    "mode = \"embedded\"\nlisten = \"127.0.0.1:{port}\"\nmax_connections = 12000\n\
                     [broker.users]\n{bu} = \"{bp}\"\n{ou} = \"{op}\"\n"
                )
            }
        }
    }
}

/// The embedded broker's account for the bridge ([`ServeBroker::Embedded`]).
pub const SUITE_BRIDGE: (&str, &str) = ("bridge", "bridge-secret-0123456789abcdef");
/// The embedded broker's account for the operator (the suite's client).
pub const SUITE_OPERATOR: (&str, &str) = ("alice", "alice-secret-0123456789abcdef");

/// Writes `ota.toml`, the operator key pair, the release public key and
/// the director key pair in `dir`, for a bridge on `broker` whose block
/// server sends at most `egress` bytes per second (a slow download leaves
/// room for faults mid-download).
pub fn write_config(
    dir: &Path,
    broker: ServeBroker,
    keys: &Keys,
    egress: u64,
) -> Result<PathBuf, FaultError> {
    std::fs::write(
        dir.join("operator.key"),
        schemas::keys::signing_key_to_text(&keys.operator),
    )?;
    std::fs::write(
        dir.join("operator.pub"),
        schemas::keys::verifying_key_to_text(&keys.operator.verifying_key()),
    )?;
    std::fs::write(
        dir.join("release.pub"),
        schemas::keys::verifying_key_to_text(&keys.release.verifying_key()),
    )?;
    let mut head = crate::serve_config::bridge_head(dir, &keys.director)?;
    // Over an external broker (anonymous in the suite) any Hello
    // registers; the embedded one has accounts and provisioned devices.
    let admission = match broker {
        ServeBroker::External(_) => "open",
        ServeBroker::Embedded(_) => {
            let ((bu, _), (ou, op)) = (SUITE_BRIDGE, SUITE_OPERATOR);
            head = head.replacen(
                "[operator]\n",
                &format!("broker_user = \"{bu}\"\n[operator]\n"),
                1,
            );
            head.push_str(&format!("username = \"{ou}\"\npassword = \"{op}\"\n"));
            "provisioned"
        }
    };
    let path = dir.join("ota.toml");
    std::fs::write(
        &path,
        format!(
            "{head}\
             [broker]\n\
             {}\
             [blocks]\n\
             merge_window_ms = 20\n\
             egress_bytes_per_sec = {egress}\n\
             [devices]\n\
             admission = \"{admission}\"\n",
            broker.section()
        ),
    )?;
    Ok(path)
}

/// A running `ota serve`, killed on drop.
pub struct Serve {
    /// `None` once it was reaped.
    child: Option<Child>,
    panics: Arc<AtomicU64>,
}

impl Serve {
    /// Starts `ota serve --config config` (warnings only). Its stderr is
    /// passed on to ours by a thread that also counts the panics in it.
    pub fn start(config: &Path) -> Result<Serve, FaultError> {
        let mut child = Command::new(ota_binary()?)
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let panics = Arc::new(AtomicU64::new(0));
        if let Some(err) = child.stderr.take() {
            let count = panics.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(err).lines() {
                    let Ok(line) = line else { break };
                    if line.contains("panicked at") {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    eprintln!("[ota serve] {line}");
                }
            });
        }
        Ok(Serve {
            child: Some(child),
            panics,
        })
    }

    /// Panics the process printed so far (a panic in one of rumqttd's
    /// threads does not end the process).
    pub fn panics(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill9(mut self) -> Result<(), FaultError> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// SIGTERM, and the exit status once it stopped (at most 20 s): the
    /// exit is waited for on a blocking thread, not polled.
    pub async fn terminate(mut self) -> Result<ExitStatus, FaultError> {
        let Some(mut child) = self.child.take() else {
            return Err(FaultError::Stalled("ota serve was already reaped".into()));
        };
        let pid = child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let limit = Duration::from_secs(20);
        match tokio::time::timeout(limit, tokio::task::spawn_blocking(move || child.wait())).await {
            Ok(Ok(status)) => Ok(status?),
            Ok(Err(e)) => Err(FaultError::Stalled(format!("waiting for ota serve: {e}"))),
            Err(_) => Err(FaultError::Stalled(format!(
                "ota serve to stop after SIGTERM: not within {limit:?}"
            ))),
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until the bridge answers a command through the broker at
/// `port`, and returns the client (2 s per call).
pub async fn wait_ready(
    port: u16,
    key: &SigningKey,
    limit: Duration,
) -> Result<OpsClient, FaultError> {
    wait_ready_as(port, key, None, limit).await
}

/// [`wait_ready`], logging in with `login` (the embedded broker's
/// [`SUITE_OPERATOR`]).
pub async fn wait_ready_as(
    port: u16,
    key: &SigningKey,
    login: Option<(&str, &str)>,
    limit: Duration,
) -> Result<OpsClient, FaultError> {
    poll("the bridge to answer", limit, || async {
        let mut o = ClientOptions::new("127.0.0.1", port, key.clone());
        o.timeout = Duration::from_secs(2);
        o.credentials = login.map(|(username, password)| broker::Credentials {
            username: username.into(),
            password: password.into(),
        });
        let c = OpsClient::connect(o).await.ok()?;
        if c.call(schemas::ops::Command::GroupList).await.is_ok() {
            Some(c)
        } else {
            c.close().await;
            None
        }
    })
    .await
}
