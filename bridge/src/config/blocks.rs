//! `[blocks]`: the block server's knobs. Every key is optional; unknown keys
//! are refused. [`BlocksConfig::validate`] names the key that is out of
//! range.
//!
//! ```toml
//! [blocks]
//! merge_window_ms = 150            # requests merged per window, 10..=500
//! resend_after_ms = 1500           # a block just broadcast waits this long
//!                                  # before it is broadcast again, 0..=2000
//! egress_bytes_per_sec = 2097152   # the whole bridge's block output
//! # fanout_per_sec = 200000        # optional ceilings on what the broker is
//! # fanout_bytes_per_sec = 1000000000 # asked: unset, the pacer finds its rate
//! broadcast = true                 # false: unicast only (for comparison)
//! device_requests_per_sec = 10     # per device, then refused
//! device_request_burst = 40
//! max_devices = 10000              # devices with unicast wants held at once
//! cache_bytes = 33554432           # encoded blocks kept in memory
//! max_loaded_artifacts = 16        # Merkle trees kept in memory
//! ```

use serde::{Deserialize, Serialize};

/// Default `merge_window_ms`.
pub const DEFAULT_MERGE_WINDOW_MS: u64 = 150;
/// The protocol's bound on the merge window.
pub const MAX_MERGE_WINDOW_MS: u64 = 500;
/// Default `resend_after_ms`.
pub const DEFAULT_RESEND_AFTER_MS: u64 = 1500;
/// `resend_after_ms` stays within the devices' shortest quiet spell (2 s,
/// PROTOCOL.md step 6): a device that asked gets its block before it
/// would ask again (were it asked again, the request merges).
pub const MAX_RESEND_AFTER_MS: u64 = 2000;
/// Default `egress_bytes_per_sec`: 2 MiB/s (16 Mbit/s).
pub const DEFAULT_EGRESS_BYTES_PER_SEC: u64 = 2 * 1024 * 1024;
/// The smallest `fanout_bytes_per_sec`: one largest block a second.
const MIN_FANOUT_BYTES_PER_SEC: u64 = 80 * 1024;
/// Egress is counted by governor in a u32 of bytes per second.
const MAX_EGRESS_BYTES_PER_SEC: u64 = u32::MAX as u64;
/// Egress must allow at least one largest block (64 KiB + overhead) a second.
const MIN_EGRESS_BYTES_PER_SEC: u64 = 80 * 1024;

/// The validated `[blocks]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlocksConfig {
    /// Requests arriving within one window are merged; every wanted block
    /// goes out at most once per window (per target).
    pub merge_window_ms: u64,
    /// A block broadcast less than this ago is not broadcast again at once
    /// when asked for again: it waits until that broadcast is this old,
    /// gathering every device that asks meanwhile into one more pass.
    /// 0: again in the next window.
    pub resend_after_ms: u64,
    /// The bridge's block output, bytes per second (payload bytes of the
    /// Block messages it publishes).
    pub egress_bytes_per_sec: u64,
    /// A ceiling on the block deliveries the broker is asked to make per
    /// second (a block broadcast to an artifact downloaded by N devices
    /// counts N). Unset (the default): no ceiling, the pacer
    /// ([`super::pacing`]) finds the rate the broker delivers.
    pub fanout_per_sec: Option<u64>,
    /// A ceiling on the bytes of those deliveries per second. Unset: none.
    pub fanout_bytes_per_sec: Option<u64>,
    /// Publish a block wanted by several devices once on
    /// `P/artifacts/{a}/blocks`. `false`: every block to every device on
    /// its own topic (only useful to measure what broadcast saves).
    pub broadcast: bool,
    /// BlockRequests accepted per device per second (sustained).
    pub device_requests_per_sec: u32,
    /// BlockRequests a device may send at once before the rate applies.
    pub device_request_burst: u32,
    /// Devices whose wants are tracked one by one. Past it, a block wanted
    /// by a new device is broadcast instead (unicast-only mode: refused).
    pub max_devices: usize,
    /// Bytes of encoded blocks kept for the next request.
    pub cache_bytes: usize,
    /// Artifacts whose Merkle tree and file are kept open.
    pub max_loaded_artifacts: usize,
}

impl Default for BlocksConfig {
    fn default() -> Self {
        Self {
            merge_window_ms: DEFAULT_MERGE_WINDOW_MS,
            resend_after_ms: DEFAULT_RESEND_AFTER_MS,
            egress_bytes_per_sec: DEFAULT_EGRESS_BYTES_PER_SEC,
            fanout_per_sec: None,
            fanout_bytes_per_sec: None,
            broadcast: true,
            device_requests_per_sec: 10,
            device_request_burst: 40,
            max_devices: 10_000,
            cache_bytes: 32 * 1024 * 1024,
            max_loaded_artifacts: 16,
        }
    }
}

/// A `[blocks]` key out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[blocks] {key}: {message}")]
pub struct BlocksConfigError {
    pub key: &'static str,
    pub message: String,
}

impl BlocksConfig {
    /// Checks every key's range.
    pub fn validate(&self) -> Result<(), BlocksConfigError> {
        let err = |key, message: String| Err(BlocksConfigError { key, message });
        if !(10..=MAX_MERGE_WINDOW_MS).contains(&self.merge_window_ms) {
            return err(
                "merge_window_ms",
                format!(
                    "{} is outside 10..=500 ms (the protocol promises at most 500)",
                    self.merge_window_ms
                ),
            );
        }
        if self.resend_after_ms > MAX_RESEND_AFTER_MS {
            return err(
                "resend_after_ms",
                format!(
                    "{} is over {MAX_RESEND_AFTER_MS} ms (the devices' shortest quiet spell; 0 turns the wait off)",
                    self.resend_after_ms
                ),
            );
        }
        if !(MIN_EGRESS_BYTES_PER_SEC..=MAX_EGRESS_BYTES_PER_SEC)
            .contains(&self.egress_bytes_per_sec)
        {
            return err(
                "egress_bytes_per_sec",
                format!(
                    "{} is outside {MIN_EGRESS_BYTES_PER_SEC}..={MAX_EGRESS_BYTES_PER_SEC} bytes per second",
                    self.egress_bytes_per_sec
                ),
            );
        }
        if let Some(f) = self.fanout_per_sec.filter(|f| *f < 100) {
            return err(
                "fanout_per_sec",
                format!("{f} is below 100 deliveries per second (leave it unset: no ceiling)"),
            );
        }
        if let Some(f) = self
            .fanout_bytes_per_sec
            .filter(|f| *f < MIN_FANOUT_BYTES_PER_SEC)
        {
            return err(
                "fanout_bytes_per_sec",
                format!(
                    "{f} is below {MIN_FANOUT_BYTES_PER_SEC} bytes per second (one largest block; leave it unset: no ceiling)"
                ),
            );
        }
        if self.device_requests_per_sec == 0 {
            return err("device_requests_per_sec", "must be at least 1".into());
        }
        if self.device_request_burst == 0 {
            return err("device_request_burst", "must be at least 1".into());
        }
        if !(1..=1_000_000).contains(&self.max_devices) {
            return err(
                "max_devices",
                format!("{} is outside 1..=1000000", self.max_devices),
            );
        }
        if self.max_loaded_artifacts == 0 {
            return err("max_loaded_artifacts", "must be at least 1".into());
        }
        Ok(())
    }

    /// The merge window.
    pub fn merge_window(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.merge_window_ms)
    }

    /// How long a broadcast block waits before it is broadcast again.
    pub fn resend_after(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.resend_after_ms)
    }

    /// Bytes the bridge may send in one window: the scheduler's budget.
    pub fn window_budget(&self) -> u64 {
        (self.egress_bytes_per_sec * self.merge_window_ms / 1000).max(1)
    }

    /// The ceiling on bytes of broker deliveries in one window, if set.
    pub fn window_fanout_bytes(&self) -> Option<u64> {
        self.fanout_bytes_per_sec
            .map(|b| (b.saturating_mul(self.merge_window_ms) / 1000).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_an_empty_section_takes_them() {
        BlocksConfig::default().validate().unwrap();
        let c: BlocksConfig = toml::from_str("").unwrap();
        assert_eq!(c, BlocksConfig::default());
        let c: BlocksConfig = toml::from_str("merge_window_ms = 200\nbroadcast = false").unwrap();
        assert_eq!(c.merge_window_ms, 200);
        assert!(!c.broadcast);
        // An older file's fixed budget is read as a ceiling.
        let c: BlocksConfig = toml::from_str("fanout_per_sec = 15000").unwrap();
        assert_eq!(c.fanout_per_sec, Some(15_000));
        assert_eq!(c.fanout_bytes_per_sec, None);
        c.validate().unwrap();
    }

    #[test]
    fn bad_values_name_the_key() {
        assert!(toml::from_str::<BlocksConfig>("merge_windw_ms = 1").is_err());
        let cases = [
            (
                BlocksConfig {
                    merge_window_ms: 600,
                    ..Default::default()
                },
                "merge_window_ms",
            ),
            (
                BlocksConfig {
                    merge_window_ms: 0,
                    ..Default::default()
                },
                "merge_window_ms",
            ),
            (
                BlocksConfig {
                    resend_after_ms: 2001,
                    ..Default::default()
                },
                "resend_after_ms",
            ),
            (
                BlocksConfig {
                    egress_bytes_per_sec: 10,
                    ..Default::default()
                },
                "egress_bytes_per_sec",
            ),
            (
                BlocksConfig {
                    device_requests_per_sec: 0,
                    ..Default::default()
                },
                "device_requests_per_sec",
            ),
            (
                BlocksConfig {
                    fanout_per_sec: Some(1),
                    ..Default::default()
                },
                "fanout_per_sec",
            ),
            (
                BlocksConfig {
                    max_devices: 0,
                    ..Default::default()
                },
                "max_devices",
            ),
        ];
        for (c, key) in cases {
            let e = c.validate().unwrap_err();
            assert_eq!(e.key, key);
            assert!(e.to_string().starts_with(&format!("[blocks] {key}")), "{e}");
        }
    }
}
