//! [`Audience`]: which devices asked for an artifact lately, so the block
//! server can size its broadcasts to what the broker can deliver: a block
//! broadcast to an artifact's topic costs the broker one delivery per
//! device downloading it (they subscribe for the whole download).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use schemas::{ArtifactId, DeviceId};

/// Recent requesters per artifact, bounded.
#[derive(Debug)]
pub struct Audience {
    recent: HashMap<ArtifactId, HashMap<DeviceId, Instant>>,
    /// Most devices remembered per artifact (the count saturates there).
    cap: usize,
    /// How long a request keeps a device counted: longer than a download's
    /// silence, since a device receiving blocks asks nothing.
    ttl: Duration,
}

impl Audience {
    /// An empty audience remembering `cap` devices per artifact for `ttl`.
    pub fn new(cap: usize, ttl: Duration) -> Self {
        Self {
            recent: HashMap::new(),
            cap: cap.max(1),
            ttl,
        }
    }

    /// `device` asked for `artifact` at `now`.
    pub fn saw(&mut self, artifact: &ArtifactId, device: &DeviceId, now: Instant) {
        let devices = self.recent.entry(artifact.clone()).or_default();
        if let Some(at) = devices.get_mut(device) {
            *at = now;
        } else if devices.len() < self.cap {
            devices.insert(device.clone(), now);
        }
    }

    /// Devices counted for `artifact` (at least 1).
    pub fn size(&self, artifact: &ArtifactId) -> u64 {
        self.recent
            .get(artifact)
            .map_or(1, |d| d.len().max(1) as u64)
    }

    /// Forgets requests older than the ttl.
    pub fn prune(&mut self, now: Instant) {
        let ttl = self.ttl;
        self.recent.retain(|_, devices| {
            devices.retain(|_, at| now.duration_since(*at) < ttl);
            !devices.is_empty()
        });
    }

    /// Forgets an artifact.
    pub fn remove_artifact(&mut self, artifact: &ArtifactId) {
        self.recent.remove(artifact);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_distinct_recent_devices_up_to_the_cap() {
        let a = ArtifactId::new("fw").unwrap();
        let d = |n: u32| DeviceId::new(format!("d{n}")).unwrap();
        let t = Instant::now();
        let mut au = Audience::new(3, Duration::from_secs(10));
        assert_eq!(au.size(&a), 1);
        au.saw(&a, &d(1), t);
        au.saw(&a, &d(1), t);
        au.saw(&a, &d(2), t);
        assert_eq!(au.size(&a), 2);
        for n in 3..10 {
            au.saw(&a, &d(n), t + Duration::from_secs(5));
        }
        assert_eq!(au.size(&a), 3, "saturates at the cap");
        au.prune(t + Duration::from_secs(12));
        assert_eq!(au.size(&a), 1, "d1 and d2 aged out");
        au.remove_artifact(&a);
        assert_eq!(au.size(&a), 1);
    }
}
