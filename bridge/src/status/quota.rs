//! Per-device Hello quota. A Hello sets the device's status epoch and
//! republishes its StatusAck; it may register the device, change its
//! labels and so its groups. A device says Hello once per connection, so
//! a few a minute is generous; one that sends hundreds (a reboot loop,
//! or someone with its login) would keep the bridge rewriting its
//! registry and acks. Past `per_minute` in one minute, a device's Hellos
//! are dropped and counted until the next minute. Pure: the caller
//! passes the clock.

use std::collections::HashMap;

use schemas::DeviceId;

/// The Hellos of each device in the current minute.
#[derive(Debug, Default)]
pub struct HelloQuota {
    per_minute: u32,
    minute: u64,
    counts: HashMap<DeviceId, u32>,
}

impl HelloQuota {
    /// A quota of `per_minute` Hellos per device (0: no limit).
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            ..Self::default()
        }
    }

    /// Counts a Hello of `device` at `now` (Unix seconds): false when it
    /// is over the quota and must be dropped.
    pub fn allow(&mut self, device: &DeviceId, now: u64) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        let minute = now / 60;
        if minute != self.minute {
            // A new minute: every count starts again (the map holds only
            // devices heard from this minute).
            self.minute = minute;
            self.counts.clear();
        }
        let n = self.counts.entry(device.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n <= self.per_minute
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::device as d;

    #[test]
    fn a_device_past_its_quota_is_held_until_the_next_minute() {
        let mut q = HelloQuota::new(3);
        let t = 60 * 1000;
        for _ in 0..3 {
            assert!(q.allow(&d("a"), t));
        }
        assert!(!q.allow(&d("a"), t + 59));
        // Others are not held by it.
        assert!(q.allow(&d("b"), t + 59));
        // The next minute starts again.
        assert!(q.allow(&d("a"), t + 60));
    }

    #[test]
    fn zero_is_no_limit() {
        let mut q = HelloQuota::new(0);
        for i in 0..10_000 {
            assert!(q.allow(&d("a"), i));
        }
    }
}
