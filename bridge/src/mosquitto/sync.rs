//! Keeps an external Mosquitto's files current while the bridge runs:
//! after every change to the registry (provision, rotate, revoke, accept,
//! reject) or to the grants (Memberships, announcements), the files are
//! rendered again, each renamed over the old one, and Mosquitto is sent
//! SIGHUP. Mosquitto then judges every login and delivery by them, and
//! closes the connections of devices its new password file no longer
//! holds (a revoked device is out at once).
//!
//! Debounced: the first change starts a window ([`debounce`]: 50 ms, and
//! 400 ms more per MiB of files, because Mosquitto reparses them whole in
//! its only thread: about 2 s for the 5.3 MiB of 10,000 devices, measured
//! in docs/BENCHMARKS.md, so it is busy reloading at most half the time
//! under a storm of changes); what changes within it
//! goes out in the same rewrite, and what changes during the rewrite in
//! the next one. Each rewrite tells [`Identity::mark_applied`] the change
//! it covers, which is what [`Identity::applied`] and the publisher's
//! gate (`crate::mqtt::gate`) wait for.
//!
//! A failed rewrite or signal is logged once (with what to do) until one
//! works again, and retried after [`RETRY`]; meanwhile nothing waits for
//! the files ([`Identity::mark_failing`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use broker::mosquitto::MosquittoConfig;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::dir::{self, MosquittoDirError};
use crate::identity::Identity;
use crate::{BridgeError, Config};

/// Starts the sync when the config has `[broker.mosquitto]`: the first
/// write is done when this returns. The task ends when `token` is
/// cancelled.
pub async fn start(
    config: &Config,
    identity: &Arc<Identity>,
    publisher: &crate::mqtt::Publisher,
    token: &CancellationToken,
) -> Option<tokio::task::JoinHandle<Result<(), BridgeError>>> {
    let m = config.mosquitto()?;
    if m.pid_file.is_none() {
        warn!(dir = %m.dir.display(), "no [broker.mosquitto] pid_file: the bridge rewrites Mosquitto's files but cannot tell it to reload them; set pid_file to Mosquitto's pid_file");
    }
    let e = config.endpoint();
    // A conf that is there is the operator's (`ota broker mosquitto`'s,
    // perhaps edited): left alone.
    let conf =
        (!m.dir.join(dir::CONF).exists()).then(|| dir::conf(m, &m.dir, (e.host.as_str(), e.port)));
    let sync = MosquittoSync {
        identity: identity.clone(),
        config: m.clone(),
        conf,
    };
    let task = sync.start(token.clone()).await;
    let gate = publisher.gate_task(token.clone());
    Some(tokio::spawn(async move {
        let r = task.await;
        if let Some(g) = gate {
            let _ = g.await;
        }
        r.map_err(|e| BridgeError::Task(format!("mosquitto sync: {e}")))
    }))
}

/// How long changes are gathered before one rewrite, at least.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// The window after files of `bytes`: [`DEBOUNCE`] and 400 ms per MiB
/// (about Mosquitto 2.0's reparse time of them, measured),
/// so that Mosquitto, which stops to reparse them, is not kept busy
/// reloading by a storm of changes.
pub fn debounce(bytes: usize) -> Duration {
    DEBOUNCE + Duration::from_millis((bytes as u64).saturating_mul(400) >> 20)
}
/// How long after a failed rewrite it is tried again.
pub const RETRY: Duration = Duration::from_secs(2);

/// What the sync needs.
pub struct MosquittoSync {
    pub identity: Arc<Identity>,
    pub config: MosquittoConfig,
    /// The conf, written at start when there is none (it does not change
    /// while the bridge runs).
    pub conf: Option<String>,
}

impl MosquittoSync {
    /// Writes the files (and the conf) once, tells Mosquitto, and from then
    /// on follows the changes (see the module). The first write happens
    /// before this returns, so the bridge's own login is in place before
    /// it connects.
    pub async fn start(self, token: CancellationToken) -> tokio::task::JoinHandle<()> {
        let mut changes = self.identity.follow_changes();
        let mut failing = false;
        let first = *changes.borrow_and_update();
        let began = std::time::Instant::now();
        let written = self.rewrite(first, self.conf.clone(), &mut failing).await;
        if let Some(bytes) = written {
            info!(dir = %self.config.dir.display(), bytes, "mosquitto's password and ACL files written");
        }
        let window = debounce(written.unwrap_or(0));
        self.identity.set_sync_cycle(window + began.elapsed());
        tokio::spawn(async move { self.follow(changes, failing, window, token).await })
    }

    async fn follow(
        self,
        mut changes: watch::Receiver<u64>,
        mut failing: bool,
        mut window: Duration,
        token: CancellationToken,
    ) {
        loop {
            if !failing {
                tokio::select! {
                    _ = token.cancelled() => return,
                    r = changes.changed() => if r.is_err() { return },
                }
            }
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(if failing { RETRY } else { window }) => {}
            }
            let change = *changes.borrow_and_update();
            let began = std::time::Instant::now();
            if let Some(bytes) = self.rewrite(change, None, &mut failing).await {
                // A change waits up to a window and a rewrite when all is
                // well: what a reply or a Membership may wait for.
                self.identity.set_sync_cycle(window + began.elapsed());
                window = debounce(bytes);
            }
        }
    }

    /// Renders and writes the files (and `conf`), then SIGHUP; the bytes
    /// written when all of it worked, and then `change` is applied.
    async fn rewrite(
        &self,
        change: u64,
        conf: Option<String>,
        failing: &mut bool,
    ) -> Option<usize> {
        let (identity, dir_path) = (self.identity.clone(), self.config.dir.clone());
        let pid_files: Vec<PathBuf> = self
            .config
            .pid_file
            .iter()
            .chain(&self.config.edge_pid_files)
            .cloned()
            .collect();
        let r =
            crate::rt::blocking(move || write_and_reload(&identity, &dir_path, conf, &pid_files))
                .await;
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "the mosquitto sync's task failed; retrying");
                self.identity.mark_failing();
                *failing = true;
                return None;
            }
        };
        match r {
            Ok((bytes, pids)) => {
                if *failing {
                    info!("mosquitto's files are current again");
                }
                *failing = false;
                debug!(change, bytes, ?pids, "mosquitto's files rewritten");
                self.identity.mark_applied(change);
                Some(bytes)
            }
            Err(e) => {
                if !*failing {
                    warn!(error = %e, "mosquitto's files are not current: devices provisioned, revoked or moved since are judged by the old ones until this works (retried every {} s)", RETRY.as_secs());
                }
                self.identity.mark_failing();
                *failing = true;
                None
            }
        }
    }
}

/// Blocks: renders under the identity's read lock (hashing the bridge's
/// and operators' passwords), writes, signals each pid file (the core's,
/// then the edges' of `edge_pid_files`). The bytes written and the pids
/// signalled.
fn write_and_reload(
    identity: &Identity,
    dir_path: &std::path::Path,
    conf: Option<String>,
    pid_files: &[PathBuf],
) -> Result<(usize, Vec<i32>), MosquittoDirError> {
    let files = identity.mosquitto_files();
    dir::write(dir_path, &files, conf.as_deref())?;
    let bytes = files.each().iter().map(|(_, text)| text.len()).sum();
    let pids = pid_files
        .iter()
        .map(|p| dir::reload(p))
        .collect::<Result<_, _>>()?;
    Ok((bytes, pids))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_window_grows_with_the_files() {
        use super::*;
        assert_eq!(debounce(0), DEBOUNCE);
        assert_eq!(debounce(2 << 20), DEBOUNCE + Duration::from_millis(800));
    }
}
