//! Live counters of a simulated fleet. Devices report through their hooks
//! into one [`Tracker`]; readers take a [`FleetStats`] snapshot, or wait
//! for one that satisfies a predicate. Hot paths (every block) touch only
//! atomics; the lock is taken on rarer events (a Status, an ack, a link
//! change).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use schemas::msg::{ErrorCode, StatusState};
use schemas::DeviceId;
use serde::Serialize;
use tokio::sync::Notify;

/// A snapshot of the fleet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FleetStats {
    /// Devices in the fleet.
    pub devices: usize,
    /// Device tasks still running.
    pub running: usize,
    /// Devices connected now.
    pub connected: usize,
    /// Boots, counting every power loss and firmware reboot.
    pub boots: u64,
    /// Devices by the state of their latest Status (`none`: no Status yet).
    pub by_state: BTreeMap<String, usize>,
    /// Devices whose latest Status is `failed` or `rolled_back`, by error.
    pub failed_by_reason: BTreeMap<String, usize>,
    /// Statuses made.
    pub statuses: u64,
    /// Statuses covered by a StatusAck.
    pub acked: u64,
    /// Blocks that failed their checks.
    pub blocks_rejected: u64,
    /// Payloads refused (malformed, bad names).
    pub payloads_dropped: u64,
    /// SUBACKs that refused a subscription (0x80); the device retries it.
    pub subscriptions_refused: u64,
    /// Bytes of Block payloads that reached the devices, both block
    /// topics, duplicates included: what the fleet downloaded.
    pub block_bytes: u64,
    /// Faults injected.
    pub injected: Injected,
    /// Devices that stopped with an error (store failures).
    pub errors: usize,
    /// Devices that connected at least once.
    pub ever_connected: usize,
    /// Connection attempts that ended before the broker accepted them.
    pub connect_failures: u64,
    /// What the last such attempt ended with (a refused login names it).
    pub last_connect_error: Option<String>,
    /// Logins the broker refused with a CONNACK (bad username or
    /// password, not authorised).
    pub logins_refused: u64,
    /// The first of them.
    pub first_refused: Option<RefusedLogin>,
    /// Connection attempts whose TLS handshake failed.
    pub tls_failures: u64,
    /// The first of them: the device and `tls::explain`'s line.
    pub first_tls_failure: Option<RefusedLogin>,
}

/// A login the broker refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefusedLogin {
    pub device: DeviceId,
    /// The CONNACK's code, as the client names it.
    pub reason: String,
}

/// Device `i` refused for `reason`, kept in `first` unless an earlier
/// refusal is there already.
fn keep_first(first: &mut Option<RefusedLogin>, ids: &[DeviceId], i: usize, reason: &str) {
    if first.is_some() {
        return;
    }
    *first = ids.get(i).map(|id| RefusedLogin {
        device: id.clone(),
        reason: reason.to_string(),
    });
}

/// Faults injected so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Injected {
    /// Blocks dropped on arrival.
    pub blocks_lost: u64,
    /// Connections dropped mid-download.
    pub disconnects: u64,
    /// Power losses mid-download.
    pub power_losses: u64,
}

impl FleetStats {
    /// Devices whose latest Status is `state`.
    pub fn count(&self, state: StatusState) -> usize {
        self.by_state.get(state.as_str()).copied().unwrap_or(0)
    }

    /// Devices whose latest Status failed with `error`.
    pub fn failed(&self, error: ErrorCode) -> usize {
        self.failed_by_reason
            .get(error.as_str())
            .copied()
            .unwrap_or(0)
    }

    /// Devices whose latest Status is terminal.
    pub fn terminal(&self) -> usize {
        StatusState::ALL
            .iter()
            .filter(|s| s.is_terminal())
            .map(|s| self.count(*s))
            .sum()
    }

    /// One line for a terminal.
    pub fn line(&self) -> String {
        let mut s = format!(
            "connected {}/{} | downloading {} | installed {} | deferred {}",
            self.connected,
            self.devices,
            self.count(StatusState::Downloading)
                + self.count(StatusState::Downloaded)
                + self.count(StatusState::Installing)
                + self.count(StatusState::Rebooting),
            self.count(StatusState::Success),
            self.count(StatusState::Deferred),
        );
        let failed: Vec<String> = self
            .failed_by_reason
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if !failed.is_empty() {
            s.push_str(&format!(" | failed {}", failed.join(" ")));
        }
        let cancelled = self.count(StatusState::Cancelled);
        if cancelled > 0 {
            s.push_str(&format!(" | cancelled {cancelled}"));
        }
        s.push_str(&format!(" | acked {}/{}", self.acked, self.statuses));
        s
    }
}

#[derive(Debug, Default, Clone)]
struct DeviceView {
    connected: bool,
    ever_connected: bool,
    latest: Option<(StatusState, Option<ErrorCode>)>,
    queued: BTreeSet<u64>,
    acked: BTreeSet<u64>,
}

#[derive(Debug, Default)]
struct Inner {
    ids: Vec<DeviceId>,
    views: Vec<DeviceView>,
    stats: FleetStats,
}

/// Where devices report. One per fleet.
#[derive(Debug, Default)]
pub struct Tracker {
    inner: Mutex<Inner>,
    changed: Notify,
    pub(crate) blocks_lost: AtomicU64,
    pub(crate) disconnects: AtomicU64,
    pub(crate) power_losses: AtomicU64,
    pub(crate) blocks_rejected: AtomicU64,
    pub(crate) payloads_dropped: AtomicU64,
    pub(crate) subscriptions_refused: AtomicU64,
    pub(crate) block_bytes: AtomicU64,
}

fn key(latest: Option<(StatusState, Option<ErrorCode>)>) -> (String, Option<String>) {
    match latest {
        None => ("none".into(), None),
        Some((s, e)) => {
            let failed = matches!(s, StatusState::Failed | StatusState::RolledBack);
            (
                s.as_str().to_string(),
                failed.then(|| e.map_or("unknown", |e| e.as_str()).to_string()),
            )
        }
    }
}

fn bump(map: &mut BTreeMap<String, usize>, k: &str, up: bool) {
    let v = map.entry(k.to_string()).or_insert(0);
    if up {
        *v += 1;
    } else {
        *v = v.saturating_sub(1);
        if *v == 0 {
            map.remove(k);
        }
    }
}

impl Tracker {
    /// A tracker for these devices (index = position).
    pub fn new(ids: Vec<DeviceId>) -> Self {
        let n = ids.len();
        let mut stats = FleetStats {
            devices: n,
            running: n,
            ..Default::default()
        };
        if n > 0 {
            stats.by_state.insert("none".into(), n);
        }
        Self {
            inner: Mutex::new(Inner {
                ids,
                views: vec![DeviceView::default(); n],
                stats,
            }),
            ..Default::default()
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Counters only: a panic elsewhere leaves them usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut Inner)) {
        f(&mut self.lock());
        self.changed.notify_waiters();
    }

    /// A device's connection attempt ended before it was accepted.
    pub fn connect_failed(&self, error: &str) {
        self.update(|g| {
            g.stats.connect_failures += 1;
            g.stats.last_connect_error = Some(error.to_string());
        });
    }

    /// The broker refused device `i`'s login (a CONNACK refusal).
    pub fn login_refused(&self, i: usize, reason: &str) {
        self.update(|g| {
            g.stats.logins_refused += 1;
            keep_first(&mut g.stats.first_refused, &g.ids, i, reason);
        });
    }

    /// Device `i`'s TLS handshake failed: `line` says where and why.
    pub fn tls_failed(&self, i: usize, line: &str) {
        self.update(|g| {
            g.stats.tls_failures += 1;
            keep_first(&mut g.stats.first_tls_failure, &g.ids, i, line);
        });
    }

    /// Device `i` connected or lost its connection.
    pub fn link(&self, i: usize, up: bool) {
        self.update(|g| {
            let Some(v) = g.views.get_mut(i) else { return };
            if up && !v.ever_connected {
                v.ever_connected = true;
                g.stats.ever_connected += 1;
            }
            if v.connected != up {
                v.connected = up;
                if up {
                    g.stats.connected += 1;
                } else {
                    g.stats.connected = g.stats.connected.saturating_sub(1);
                }
            }
        });
    }

    /// Device `i` made a Status.
    pub fn status(&self, i: usize, seq: u64, state: StatusState, error: Option<ErrorCode>) {
        self.update(|g| {
            let Some(v) = g.views.get_mut(i) else { return };
            let old = key(v.latest);
            v.latest = Some((state, error));
            v.queued.insert(seq);
            let new = key(v.latest);
            let s = &mut g.stats;
            s.statuses += 1;
            bump(&mut s.by_state, &old.0, false);
            bump(&mut s.by_state, &new.0, true);
            if let Some(r) = old.1 {
                bump(&mut s.failed_by_reason, &r, false);
            }
            if let Some(r) = new.1 {
                bump(&mut s.failed_by_reason, &r, true);
            }
        });
    }

    /// Device `i` saw these seqs acknowledged.
    pub fn acked(&self, i: usize, seqs: &[u64]) {
        self.update(|g| {
            let Some(v) = g.views.get_mut(i) else { return };
            let before = v.acked.len();
            v.acked.extend(seqs.iter().copied());
            let added = (v.acked.len() - before) as u64;
            g.stats.acked += added;
        });
    }

    /// Device `i` booted.
    pub fn booted(&self, _i: usize) {
        self.update(|g| g.stats.boots += 1);
    }

    /// A device task ended (`error`: it stopped on an error).
    pub fn ended(&self, i: usize, error: bool) {
        self.update(|g| {
            g.stats.running = g.stats.running.saturating_sub(1);
            if error {
                g.stats.errors += 1;
            }
            if let Some(v) = g.views.get_mut(i) {
                if v.connected {
                    v.connected = false;
                    g.stats.connected = g.stats.connected.saturating_sub(1);
                }
            }
        });
    }

    /// A snapshot.
    pub fn stats(&self) -> FleetStats {
        let mut s = self.lock().stats.clone();
        s.injected = Injected {
            blocks_lost: self.blocks_lost.load(Ordering::Relaxed),
            disconnects: self.disconnects.load(Ordering::Relaxed),
            power_losses: self.power_losses.load(Ordering::Relaxed),
        };
        s.blocks_rejected = self.blocks_rejected.load(Ordering::Relaxed);
        s.payloads_dropped = self.payloads_dropped.load(Ordering::Relaxed);
        s.subscriptions_refused = self.subscriptions_refused.load(Ordering::Relaxed);
        s.block_bytes = self.block_bytes.load(Ordering::Relaxed);
        s
    }

    /// Per device: the seqs of the Statuses it made and of those it saw
    /// acknowledged (for "nothing lost" checks).
    pub fn seqs(&self) -> BTreeMap<DeviceId, (BTreeSet<u64>, BTreeSet<u64>)> {
        let g = self.lock();
        g.ids
            .iter()
            .zip(&g.views)
            .map(|(id, v)| (id.clone(), (v.queued.clone(), v.acked.clone())))
            .collect()
    }

    /// Waits until `pred` holds, or `timeout` passes (then `Err` with the
    /// last snapshot).
    pub async fn wait_until(
        &self,
        timeout: Duration,
        pred: impl Fn(&FleetStats) -> bool,
    ) -> Result<FleetStats, FleetStats> {
        let wait = async {
            loop {
                let notified = self.changed.notified();
                let s = self.stats();
                if pred(&s) {
                    return s;
                }
                // Injected-fault counters change without a notification:
                // look again at least every 100 ms.
                let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| self.stats())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_each_devices_latest_status() {
        let ids = (0..3)
            .map(|i| DeviceId::new(format!("d{i}")).unwrap())
            .collect();
        let t = Tracker::new(ids);
        t.link(0, true);
        t.link(1, true);
        t.link(1, true);
        t.status(0, 10, StatusState::Accepted, None);
        t.status(0, 11, StatusState::Failed, Some(ErrorCode::HashMismatch));
        t.status(1, 5, StatusState::Success, None);
        t.acked(0, &[10, 11]);
        t.acked(0, &[11]);
        let s = t.stats();
        assert_eq!(s.connected, 2);
        assert_eq!(s.count(StatusState::Failed), 1);
        assert_eq!(s.failed(ErrorCode::HashMismatch), 1);
        assert_eq!(s.count(StatusState::Success), 1);
        assert_eq!(s.by_state.get("none"), Some(&1));
        assert_eq!(s.count(StatusState::Accepted), 0);
        assert_eq!((s.statuses, s.acked), (3, 2));
        assert_eq!(s.terminal(), 2);
        t.status(0, 12, StatusState::Accepted, None);
        assert_eq!(t.stats().failed(ErrorCode::HashMismatch), 0);
        t.ended(1, false);
        assert_eq!((t.stats().running, t.stats().connected), (2, 1));
        let seqs = t.seqs();
        assert_eq!(seqs[&DeviceId::new("d0").unwrap()].1, [10, 11].into());
        assert!(t.stats().line().contains("connected 1/3"));
    }
}
