//! Mosquitto as an external broker, started on a free loopback port with a
//! generated config and killed on drop. `.ci/run` installs it.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::sync::{oneshot, watch};

/// How long [`Mosquitto::reload`] waits for Mosquitto to say it reloaded.
const RELOAD_WAIT: Duration = Duration::from_secs(10);

/// A running Mosquitto child process.
pub struct Mosquitto {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Child,
    conf: PathBuf,
    /// How many "Reloading config." lines it has logged.
    reloads: watch::Receiver<u64>,
    /// The temp dir of a config made here; `None` for a config given.
    _dir: Option<tempfile::TempDir>,
}

/// Why Mosquitto could not start.
#[derive(Debug, thiserror::Error)]
pub enum MosquittoError {
    #[error(
        "mosquitto is not installed: install it with `apt-get install -y mosquitto` (.ci/run does)"
    )]
    Missing,
    #[error("mosquitto: {0}")]
    Io(#[from] std::io::Error),
    #[error("mosquitto did not accept connections on port {0} within 10 s")]
    NotReady(u16),
    #[error("mosquitto did not log \"Reloading config.\" within 10 s of its SIGHUP")]
    NoReload,
}

/// The mosquitto binary, if installed.
pub fn binary() -> Option<PathBuf> {
    [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// Makes `dir` readable to Mosquitto as docs/operations.md says: its
/// group Mosquitto's, with the setgid bit (mode 2750), so that every file
/// written there (mode 0640, by root in the tests) is Mosquitto's group's.
/// Mosquitto started as root reads its files as root at start, but as its
/// own user on SIGHUP.
pub fn share_with_mosquitto(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let groups = std::fs::read_to_string("/etc/group")?;
    let gid = groups
        .lines()
        .find_map(|l| l.strip_prefix("mosquitto:x:"))
        .and_then(|rest| rest.split(':').next())
        .and_then(|g| g.parse().ok())
        .ok_or_else(|| {
            std::io::Error::other(
                "no mosquitto group in /etc/group (the mosquitto package makes it)",
            )
        })?;
    std::os::unix::fs::chown(dir, None, Some(gid))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o2750))
}

impl Mosquitto {
    /// Starts Mosquitto on a free port and waits until it accepts.
    pub async fn start() -> Result<Mosquitto, MosquittoError> {
        let dir = tempfile::tempdir()?;
        let port = crate::free_port()?;
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\n\
                 allow_anonymous true\n\
                 max_packet_size 524288\n\
                 persistence false\n\
                 max_queued_messages 100000\n\
                 max_inflight_messages 100\n\
                 log_dest stderr\n\
                 log_type error\n\
                 log_type warning\n\
                 log_type notice\n\
                 log_type information\n\
                 connection_messages false\n"
            ),
        )?;
        Self::launch(conf, port, Some(dir)).await
    }

    /// Starts Mosquitto as PROTOCOL.md E1 wants it (issue 12): `conf`
    /// (given the dir, the devices' port and the service port) is written
    /// as its config, `files` (name, text) beside it. `port` is the
    /// devices' listener; the service listener's port is returned too.
    pub async fn start_secured(
        files: &[(&str, &str)],
        conf: impl FnOnce(&std::path::Path, u16, u16) -> String,
    ) -> Result<(Mosquitto, u16), MosquittoError> {
        let dir = tempfile::tempdir()?;
        let (port, service) = (crate::free_port()?, crate::free_port()?);
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text)?;
        }
        let path = dir.path().join("mosquitto.conf");
        std::fs::write(
            &path,
            format!(
                "{}
max_packet_size 524288
persistence false
log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
",
                conf(dir.path(), port, service)
            ),
        )?;
        Ok((Self::launch(path, port, Some(dir)).await?, service))
    }

    /// Starts Mosquitto with a config written elsewhere (`ota broker
    /// mosquitto`'s), listening on `port` among others, and waits until it
    /// runs.
    pub async fn start_conf(
        conf: &std::path::Path,
        port: u16,
    ) -> Result<Mosquitto, MosquittoError> {
        Self::launch(conf.to_path_buf(), port, None).await
    }

    /// Runs Mosquitto on `conf` and waits until it runs.
    async fn launch(
        conf: PathBuf,
        port: u16,
        dir: Option<tempfile::TempDir>,
    ) -> Result<Mosquitto, MosquittoError> {
        let bin = binary().ok_or(MosquittoError::Missing)?;
        let (child, ready, reloads) = spawn(&bin, &conf)?;
        let m = Mosquitto {
            port,
            child,
            conf,
            reloads,
            _dir: dir,
        };
        m.wait_ready(ready).await?;
        Ok(m)
    }

    /// The directory of its config (where [`Mosquitto::start_secured`]'s
    /// files are).
    pub fn dir(&self) -> &std::path::Path {
        self.conf.parent().unwrap_or(std::path::Path::new("."))
    }

    /// Tells it to reload its config, password and ACL files (SIGHUP) and
    /// waits for its "Reloading config." log line. Mosquitto logs it in
    /// its main loop and reloads right after, in the same turn of that
    /// single thread: every packet sent once this returns is judged by the
    /// new files.
    pub async fn reload(&self) -> Result<(), MosquittoError> {
        let mut reloads = self.reloads.clone();
        let before = *reloads.borrow_and_update();
        let ok = Command::new("kill")
            .arg("-HUP")
            .arg(self.child.id().to_string())
            .status()?
            .success();
        if !ok {
            return Err(std::io::Error::other("kill -HUP mosquitto failed").into());
        }
        tokio::time::timeout(RELOAD_WAIT, reloads.wait_for(|n| *n > before))
            .await
            .map_err(|_| MosquittoError::NoReload)?
            .map_err(|_| MosquittoError::NoReload)?;
        Ok(())
    }

    /// How many times it has logged "Reloading config." (the bridge's
    /// SIGHUPs are seen here too).
    pub fn reloads(&self) -> watch::Receiver<u64> {
        self.reloads.clone()
    }

    /// Kills and starts it again on the same port (a broker restart: it
    /// loses its sessions and retained messages).
    pub async fn restart(&mut self) -> Result<(), MosquittoError> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let bin = binary().ok_or(MosquittoError::Missing)?;
        let (child, ready, reloads) = spawn(&bin, &self.conf)?;
        self.child = child;
        self.reloads = reloads;
        self.wait_ready(ready).await
    }

    /// Its process id (to read its memory in /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for Mosquitto's own "running" log line, which it prints once
    /// its listener is open.
    async fn wait_ready(&self, ready: oneshot::Receiver<()>) -> Result<(), MosquittoError> {
        match tokio::time::timeout(Duration::from_secs(10), ready).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(MosquittoError::NotReady(self.port)),
        }
    }
}

/// Starts Mosquitto logging to a pipe; a thread reads the log to its end
/// (so the pipe never fills), signals the "running" line and counts the
/// "Reloading config." lines.
fn spawn(
    bin: &PathBuf,
    conf: &PathBuf,
) -> std::io::Result<(Child, oneshot::Receiver<()>, watch::Receiver<u64>)> {
    let mut child = Command::new(bin)
        .arg("-c")
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let (tx, rx) = oneshot::channel();
    let (reloaded, reloads) = watch::channel(0u64);
    if let Some(log) = child.stderr.take() {
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(log).lines().map_while(Result::ok) {
                if line.contains(" running") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }
                if line.contains("Reloading config.") {
                    reloaded.send_modify(|n| *n += 1);
                }
                // OTA_MOSQUITTO_LOG=1 shows its log, to debug a test.
                if std::env::var_os("OTA_MOSQUITTO_LOG").is_some() {
                    eprintln!("mosquitto: {line}");
                }
            }
        });
    }
    Ok((child, rx, reloads))
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
