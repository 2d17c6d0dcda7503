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
//! With `[[broker.mosquitto.edges]]` each edge has its own devices'
//! files: a rewrite writes and signals only the brokers whose files
//! changed (a device provisioned for one edge reloads that edge alone;
//! the core, with the service logins and the devices no edge takes, only
//! when those changed).
//!
//! A broker is not signalled again while it may still be reloading
//! ([`reload_guard`]): Mosquitto 2.0 clears its reload flag when a reload
//! ends, so a SIGHUP that arrives during one is lost, and the broker keeps
//! the files it was reading (measured: two SIGHUPs 0.2 s apart to an edge
//! of 10,000 devices load the first change only). A change waits for such
//! a broker's guard to pass, and is applied once every broker that needs
//! it has been told.
//!
//! A failed rewrite or signal is logged once (with what to do) until one
//! works again, and retried after [`RETRY`]; meanwhile nothing waits for
//! the files ([`Identity::mark_failing`]).

use std::collections::BTreeMap;
use std::hash::{Hash as _, Hasher as _};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
        written: Arc::default(),
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
/// How long a broker reading files of `bytes` may take to reload them, at
/// most, and so how long after a SIGHUP it is not sent another (which it
/// would lose): 1 s and 2 s per MiB, five times Mosquitto 2.0's reload on
/// a quiet machine (0.4 s per MiB), for a loaded one.
pub fn reload_guard(bytes: usize) -> Duration {
    Duration::from_secs(1) + Duration::from_millis((bytes as u64).saturating_mul(2000) >> 20)
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
    /// What the brokers hold: written and signalled (`Default` at start:
    /// every broker is written and signalled once).
    pub written: Arc<Mutex<Written>>,
}

/// A digest of each broker's files as last written and signalled, to
/// write and signal only those that changed, and until when each may
/// still be reloading.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Written {
    core: Option<u64>,
    edges: BTreeMap<String, u64>,
    /// Broker (`None`: the core) → the end of its [`reload_guard`].
    busy: BTreeMap<Option<String>, Instant>,
}

impl Written {
    /// May `broker` be signalled at `now`, or until when is it busy?
    fn free(&self, broker: &Option<String>, now: Instant) -> Result<(), Instant> {
        match self.busy.get(broker) {
            Some(&until) if until > now => Err(until),
            _ => Ok(()),
        }
    }
}

/// What one rewrite did.
#[derive(Debug)]
struct Rewrote {
    /// Bytes of the largest set one broker reads.
    bytes: usize,
    pids: Vec<i32>,
    /// A broker whose files changed was still reloading: it is told once
    /// its guard ends, at this instant (the change is not applied yet).
    owed: Option<Instant>,
}

fn digest<'a>(texts: impl IntoIterator<Item = &'a str>) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for t in texts {
        t.hash(&mut h);
    }
    h.finish()
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
        if let Some(r) = &written {
            info!(dir = %self.config.dir.display(), bytes = r.bytes, "mosquitto's password and ACL files written");
        }
        let window = debounce(written.as_ref().map_or(0, |r| r.bytes));
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
        let mut owed: Option<Instant> = None;
        loop {
            if !failing && owed.is_none() {
                tokio::select! {
                    _ = token.cancelled() => return,
                    r = changes.changed() => if r.is_err() { return },
                }
            }
            let wait = match (failing, owed) {
                (true, _) => RETRY,
                (false, Some(at)) => at.saturating_duration_since(Instant::now()).max(DEBOUNCE),
                (false, None) => window,
            };
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let change = *changes.borrow_and_update();
            let began = Instant::now();
            owed = None;
            if let Some(r) = self.rewrite(change, None, &mut failing).await {
                // A change waits up to a window (or a broker's reload
                // guard) and a rewrite when all is well: what a reply or
                // a Membership may wait for.
                let wait = window.max(reload_guard(r.bytes));
                self.identity.set_sync_cycle(wait + began.elapsed());
                window = debounce(r.bytes);
                owed = r.owed;
            }
        }
    }

    /// Renders and writes the files (and `conf`), then SIGHUP; what it did
    /// when all of it worked, and then `change` is applied unless a broker
    /// is still owed it.
    async fn rewrite(
        &self,
        change: u64,
        conf: Option<String>,
        failing: &mut bool,
    ) -> Option<Rewrote> {
        let (identity, config) = (self.identity.clone(), self.config.clone());
        let written = self.written.clone();
        let r = crate::rt::blocking(move || {
            let mut w = written.lock().unwrap_or_else(|p| p.into_inner());
            write_and_reload(&identity, &config, conf, &mut w, Instant::now())
        })
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
            Ok(r) => {
                if *failing {
                    info!("mosquitto's files are current again");
                }
                *failing = false;
                debug!(change, bytes = r.bytes, pids = ?r.pids, owed = r.owed.is_some(), "mosquitto's files rewritten");
                if r.owed.is_none() {
                    self.identity.mark_applied(change);
                }
                Some(r)
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

/// Blocks: renders under the identity's read lock, writes the files that changed since
/// `written`, and signals their brokers (the core's `pid_file` and the
/// `edge_pid_files` that share its files, then each edge of `edges` whose
/// own files changed), except a broker still in its [`reload_guard`] at
/// `now`: that one is left as it is, owed the change. `written` is brought
/// up to date as each broker is told.
fn write_and_reload(
    identity: &Identity,
    config: &MosquittoConfig,
    conf: Option<String>,
    written: &mut Written,
    now: Instant,
) -> Result<Rewrote, MosquittoDirError> {
    let files = identity.mosquitto_files_for(&config.edges);
    let dir_path = &config.dir;
    let mut out = Rewrote {
        bytes: files.largest(),
        pids: Vec::new(),
        owed: None,
    };
    let mut owe = |until: Instant| {
        out.owed = Some(out.owed.map_or(until, |o: Instant| o.min(until)));
    };
    let core = digest(files.each().map(|(_, t)| t));
    if written.core != Some(core) || conf.is_some() {
        match written.free(&None, now) {
            Err(until) => owe(until),
            Ok(()) => {
                dir::write_core(dir_path, &files, conf.as_deref())?;
                for p in config.pid_file.iter().chain(&config.edge_pid_files) {
                    out.pids.push(dir::reload(p)?);
                }
                written.core = Some(core);
                let bytes = files.each().iter().map(|(_, t)| t.len()).sum();
                written.busy.insert(None, now + reload_guard(bytes));
            }
        }
    }
    for (edge, text) in config.edges.iter().zip(&files.edges) {
        let d = digest(text.each().map(|(_, t)| t));
        if written.edges.get(&edge.name) == Some(&d) {
            continue;
        }
        let broker = Some(edge.name.clone());
        if let Err(until) = written.free(&broker, now) {
            owe(until);
            continue;
        }
        dir::write_edge(dir_path, text)?;
        if let Some(p) = &edge.pid_file {
            out.pids.push(dir::reload(p)?);
        }
        written.edges.insert(edge.name.clone(), d);
        let bytes = text.passwd.len() + text.acl.len();
        written.busy.insert(broker, now + reload_guard(bytes));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_window_grows_with_the_files() {
        use super::*;
        assert_eq!(debounce(0), DEBOUNCE);
        assert_eq!(debounce(2 << 20), DEBOUNCE + Duration::from_millis(800));
    }

    /// Brokers that ignore SIGHUP (`nohup`), so they can be told again.
    struct Brokers(Vec<std::process::Child>);
    impl Drop for Brokers {
        fn drop(&mut self) {
            for c in &mut self.0 {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    #[test]
    fn only_the_brokers_whose_files_changed_are_written_and_signalled() {
        use super::*;
        use crate::identity::{Admission, CredentialRecord, IdentityConfig, Standing};
        use broker::mosquitto::MosquittoEdge;
        use std::process::{Command, Stdio};
        let tmp = tempfile::tempdir().unwrap();
        let mut brokers = Brokers(Vec::new());
        let mut pid_file = |name: &str| {
            let c = Command::new("nohup")
                .args(["sleep", "60"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let path = tmp.path().join(format!("{name}.pid"));
            std::fs::write(&path, format!("{}\n", c.id())).unwrap();
            brokers.0.push(c);
            path
        };
        let edge = |name: &str, pid_file: std::path::PathBuf| MosquittoEdge {
            name: name.into(),
            pid_file: Some(pid_file),
            device_prefixes: vec![format!("{name}-")],
        };
        let config = MosquittoConfig {
            dir: tmp.path().join("m"),
            pid_file: Some(pid_file("core")),
            edge_pid_files: vec![],
            devices_listen: broker::mosquitto::DEFAULT_DEVICES_LISTEN,
            operators: Default::default(),
            tls: None,
            edges: vec![edge("a", pid_file("a")), edge("b", pid_file("b"))],
        };
        let pids: Vec<i32> = brokers.0.iter().map(|c| c.id() as i32).collect();
        let (core, a, b) = (pids[0], pids[1], pids[2]);
        let record = |id: &str| {
            CredentialRecord::new(
                schemas::DeviceId::new(id).unwrap(),
                "pw",
                Standing::Active,
                1,
            )
        };
        let identity = Identity::new(
            IdentityConfig {
                topics: Default::default(),
                bridge_client_id: "ota-bridge".into(),
                bridge_login: Some(("bridge".into(), "bridge-pw".into())),
                operators: Default::default(),
                admission: Admission::Provisioned,
                registrations_per_minute: 0,
            },
            &[record("a-1")],
        );
        let mut w = Written::default();
        // Rounds far enough apart that no broker may still be reloading.
        let mut at = Instant::now();
        let mut round = |w: &mut Written| {
            at += Duration::from_secs(60);
            let r = write_and_reload(&identity, &config, None, w, at).unwrap();
            assert!(r.owed.is_none(), "{r:?}");
            r.pids
        };
        // The first rewrite tells every broker.
        assert_eq!(round(&mut w), [core, a, b]);
        assert!(
            std::fs::read_to_string(config.dir.join("edges/a/devices.passwd"))
                .unwrap()
                .starts_with("a-1:")
        );
        // Nothing changed: nobody is told (the service accounts are salted
        // once, so the core's files are the same text).
        assert_eq!(round(&mut w), Vec::<i32>::new());
        identity.upsert(&record("b-1"));
        assert_eq!(round(&mut w), [b]);
        identity.upsert(&record("c-1"));
        assert_eq!(round(&mut w), [core]);
        // A written conf always reloads the core.
        let later = Instant::now() + Duration::from_secs(600);
        let r = write_and_reload(&identity, &config, Some("conf\n".into()), &mut w, later).unwrap();
        assert_eq!(r.pids, [core]);

        // A broker told a moment ago may still be reloading: it would lose
        // a second SIGHUP, so it is owed the change until its guard ends,
        // and then told.
        identity.upsert(&record("a-2"));
        let soon = later + Duration::from_millis(200);
        let r = write_and_reload(&identity, &config, None, &mut w, soon).unwrap();
        assert_eq!(r.pids, [a], "edge a was last told long ago");
        identity.upsert(&record("a-3"));
        let r = write_and_reload(&identity, &config, None, &mut w, soon).unwrap();
        assert!(r.pids.is_empty(), "{r:?}");
        let until = r.owed.expect("edge a is owed the change");
        assert!(
            until > soon && until <= soon + reload_guard(r.bytes),
            "{r:?}"
        );
        let r = write_and_reload(&identity, &config, None, &mut w, until).unwrap();
        assert_eq!((r.pids, r.owed), (vec![a], None));
        assert!(
            std::fs::read_to_string(config.dir.join("edges/a/devices.passwd"))
                .unwrap()
                .contains("a-3:")
        );
    }

    #[test]
    fn the_reload_guard_grows_with_the_files() {
        use super::*;
        assert_eq!(reload_guard(0), Duration::from_secs(1));
        assert_eq!(reload_guard(6 << 20), Duration::from_secs(13));
    }
}
