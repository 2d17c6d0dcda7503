//! What a device is and how it times itself: fixed for a boot, given to
//! [`Agent::new`](super::Agent::new).

use std::collections::BTreeMap;
use std::sync::Arc;

use schemas::control::DirectorKeys;
use schemas::cose::TrustStore;
use schemas::DeviceId;

/// A device's identity and provisioning.
#[derive(Clone)]
pub struct AgentConfig {
    /// The device id, also its MQTT client id.
    pub id: DeviceId,
    /// Its architecture, matched against manifests' `arch`.
    pub arch: String,
    /// Provisioning facts sent in Hello (customer, site, line, hw_rev).
    pub labels: BTreeMap<String, String>,
    /// The trusted release public keys.
    pub trust: Arc<TrustStore>,
    /// The director public keys (E2), apart from the release keys; empty:
    /// control messages are read as in v1.
    pub directors: Arc<DirectorKeys>,
    /// E3: apply delta images (listing `delta-zstd` in Hello once the
    /// installed image of a component is known); `false`: full images only.
    pub deltas: bool,
    /// The largest image the device can make room for; `None`: no limit.
    pub room_bytes: Option<u64>,
    /// Timings of the protocol.
    pub timing: Timing,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("id", &self.id)
            .field("arch", &self.arch)
            .field("labels", &self.labels)
            .field("deltas", &self.deltas)
            .field("room_bytes", &self.room_bytes)
            .field("directors", &self.directors.len())
            .field("timing", &self.timing)
            .finish_non_exhaustive()
    }
}

/// The protocol's timings, in milliseconds. The defaults are the spec's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// A quiet spell is at least this long (2 s)...
    pub quiet_ms: u64,
    /// ...plus a uniform random jitter of up to this (2 s).
    pub quiet_jitter_ms: u64,
    /// Give up a download after this long without a new verified block
    /// (at least 2 min), time stopped not counted.
    pub timeout_ms: u64,
    /// `downloading` progress at most this often (at least 2 s).
    pub progress_every_ms: u64,
    /// After a reconnect, resend the outbox after this long without an ack.
    pub resend_wait_ms: u64,
    /// Resend the outbox when its oldest entry has waited this long.
    pub resend_every_ms: u64,
    /// BlockRequests (of up to 1024 blocks each) outstanding at once.
    pub requests_in_flight: usize,
    /// A subscription the broker refused is tried again after this (1 s),
    /// doubling with each refusal in a row...
    pub resubscribe_min_ms: u64,
    /// ...up to this (60 s); each wait is drawn between half of it and
    /// all of it (jitter).
    pub resubscribe_max_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            quiet_ms: 2_000,
            quiet_jitter_ms: 2_000,
            timeout_ms: 120_000,
            progress_every_ms: 5_000,
            resend_wait_ms: 2_000,
            resend_every_ms: 30_000,
            requests_in_flight: 4,
            resubscribe_min_ms: 1_000,
            resubscribe_max_ms: 60_000,
        }
    }
}

impl Timing {
    /// The same timings raised to the protocol's floors where they are
    /// below (quiet spell 2 s, timeout 2 min, progress 2 s).
    pub fn within_protocol(self) -> Self {
        Self {
            quiet_ms: self.quiet_ms.max(2_000),
            timeout_ms: self.timeout_ms.max(120_000),
            progress_every_ms: self.progress_every_ms.max(2_000),
            requests_in_flight: self.requests_in_flight.max(1),
            resubscribe_min_ms: self.resubscribe_min_ms.max(1),
            resubscribe_max_ms: self.resubscribe_max_ms.max(self.resubscribe_min_ms.max(1)),
            ..self
        }
    }
}
