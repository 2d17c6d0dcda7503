//! Which devices a cohort admits: PROTOCOL.md "Which devices take part".
//!
//! `bucket(campaign, id)` = the first 4 bytes of
//! `SHA-256(utf8(campaign) ‖ 0x00 ‖ utf8(id))`, as a big-endian u32, mod
//! 10000. A device takes part when the announcement's `emergency` is true or
//! `bucket < cohort`, where `cohort` is in basis points (0..=10000). Every
//! device computes its own bucket, so the bridge raises `cohort` wave by
//! wave without sending a list of members, and a device admitted in one
//! wave stays admitted in every later, larger one.

use crate::ids::{CampaignId, DeviceId};
use sha2::{Digest, Sha256};

/// A cohort of 10000 basis points admits every device.
pub const MAX_COHORT: u16 = 10000;

/// The device's bucket in `0..10000` for this campaign.
pub fn bucket(campaign: &CampaignId, device: &DeviceId) -> u16 {
    let mut h = Sha256::new();
    h.update(campaign.as_str().as_bytes());
    h.update([0x00]);
    h.update(device.as_str().as_bytes());
    let digest = h.finalize();
    let first = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    // A value below 10000 always fits in u16.
    (first % u32::from(MAX_COHORT)) as u16
}

/// True when the device takes part: `emergency || bucket < cohort_bp`.
///
/// A `cohort_bp` above [`MAX_COHORT`] admits everyone, like 10000.
pub fn admitted(campaign: &CampaignId, device: &DeviceId, cohort_bp: u16, emergency: bool) -> bool {
    emergency || bucket(campaign, device) < cohort_bp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn camp(s: &str) -> CampaignId {
        CampaignId::new(s).unwrap()
    }

    fn dev(s: &str) -> DeviceId {
        DeviceId::new(s).unwrap()
    }

    #[test]
    fn spec_test_vectors() {
        let c = camp("camp-2026-001");
        assert_eq!(bucket(&c, &dev("dev-0001")), 7170);
        assert_eq!(bucket(&c, &dev("dev-0002")), 827);
    }

    #[test]
    fn admission() {
        let c = camp("camp-2026-001");
        let d = dev("dev-0002"); // bucket 827
        assert!(!admitted(&c, &d, 0, false));
        assert!(!admitted(&c, &d, 827, false));
        assert!(admitted(&c, &d, 828, false));
        assert!(admitted(&c, &d, MAX_COHORT, false));
        assert!(admitted(&c, &d, 0, true));
        let d = dev("dev-0001"); // bucket 7170
        assert!(!admitted(&c, &d, 7170, false));
        assert!(admitted(&c, &d, 7171, false));
    }

    #[test]
    fn full_cohort_admits_everyone() {
        let c = camp("camp-x");
        for i in 0..2000 {
            let d = dev(&format!("dev-{i:05}"));
            assert!(bucket(&c, &d) < MAX_COHORT);
            assert!(admitted(&c, &d, MAX_COHORT, false));
            assert!(!admitted(&c, &d, 0, false));
        }
    }

    #[test]
    fn roughly_uniform() {
        let c = camp("camp-2026-001");
        let below = (0..10_000)
            .filter(|i| bucket(&c, &dev(&format!("dev-{i:05}"))) < 1000)
            .count();
        // Expected 1000, standard deviation 30: 5 sigma either way.
        assert!((850..=1150).contains(&below), "{below} of 10000 below 1000");
    }

    #[test]
    fn depends_on_the_campaign() {
        let d = dev("dev-0001");
        let same = (0..100)
            .filter(|i| bucket(&camp(&format!("c{i}")), &d) == bucket(&camp("camp-2026-001"), &d))
            .count();
        assert!(same < 5, "{same}");
    }
}
