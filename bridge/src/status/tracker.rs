//! The pure StatusAck arithmetic (PROTOCOL.md, "What the bridge promises").
//!
//! Per device the tracker holds the epoch of the device's latest Hello, the
//! `base` (that Hello's `outbox`), `next` (the lowest seq at or above `base`
//! not known to be stored) and the stored seqs above `next` (a gap waits
//! for the device's re-send). The ack is `next - 1`: every seq from `base`
//! through it is stored; while none is, that is `outbox - 1`.
//!
//! No I/O: the caller stores first, then tells the tracker, and asks the
//! store (through a closure) only when a Hello moves the base somewhere the
//! tracker has not followed.

use std::collections::{BTreeSet, HashMap};

use schemas::{DeviceId, Epoch};

/// Most stored seqs above a gap tracked per device. Beyond it a report is
/// still stored but not remembered here; the device's re-send (a duplicate,
/// which calls [`AckTracker::stored`] again) brings it back in.
pub const MAX_ABOVE: usize = 4096;

/// One device's counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceAcks {
    /// Names the counter; from the latest Hello.
    pub epoch: Epoch,
    /// The `outbox` of the latest Hello.
    pub base: u64,
    /// The lowest seq >= `base` not known to be stored.
    pub next: u64,
    /// Stored seqs above `next` (after a gap).
    pub above: BTreeSet<u64>,
}

impl DeviceAcks {
    /// A counter starting at `outbox` with nothing stored yet.
    pub fn new(epoch: Epoch, outbox: u64) -> Self {
        Self {
            epoch,
            base: outbox,
            next: outbox,
            above: BTreeSet::new(),
        }
    }

    /// The StatusAck to publish: every seq from `base` through it is
    /// stored. `None` when nothing is and `base` is 0 (there is no `-1`).
    pub fn ack(&self) -> Option<u64> {
        self.next.checked_sub(1)
    }

    /// Records that `seq` is durably stored. Returns true when the ack moved.
    pub fn stored(&mut self, seq: u64) -> bool {
        if seq < self.next {
            return false;
        }
        if seq > self.next {
            if self.above.len() < MAX_ABOVE {
                self.above.insert(seq);
            }
            return false;
        }
        self.next = self.next.saturating_add(1);
        while self.above.remove(&self.next) {
            self.next = self.next.saturating_add(1);
        }
        // Entries at or below `next` are covered now; drop them.
        self.above = self.above.split_off(&self.next);
        true
    }

    /// True when `seq` is covered by the ack.
    pub fn covers(&self, seq: u64) -> bool {
        seq >= self.base && seq < self.next
    }
}

/// What a Hello did to a device's counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelloEffect {
    /// The first Hello the bridge has seen from this device.
    First,
    /// A new epoch: a new counter from the Hello's outbox.
    NewEpoch,
    /// The same epoch; the base moved to the Hello's outbox.
    SameEpoch,
}

/// Every device's counter.
#[derive(Debug, Default)]
pub struct AckTracker {
    /// Boxed: a table grown past a million devices moves pointers, and
    /// half-empty slots cost 32 bytes, not 88 (issue 19).
    devices: HashMap<DeviceId, Box<DeviceAcks>>,
}

impl AckTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts back a counter loaded from the store at start.
    pub fn restore(&mut self, device: DeviceId, acks: DeviceAcks) {
        self.devices.insert(device, Box::new(acks));
    }

    /// The device's counter, if it ever said Hello.
    pub fn get(&self, device: &DeviceId) -> Option<&DeviceAcks> {
        self.devices.get(device).map(|a| &**a)
    }

    /// How many devices are tracked.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// True when no device is tracked.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Applies a Hello. `is_stored(epoch, seq)` answers from the store for
    /// seqs the tracker cannot vouch for (a base that moved down, a new
    /// epoch that already has reports stored).
    pub fn hello(
        &mut self,
        device: &DeviceId,
        epoch: &Epoch,
        outbox: u64,
        mut is_stored: impl FnMut(&Epoch, u64) -> bool,
    ) -> HelloEffect {
        let effect;
        let mut acks = match self.devices.remove(device) {
            Some(mut old) if &old.epoch == epoch => {
                effect = HelloEffect::SameEpoch;
                if outbox >= old.base && outbox <= old.next {
                    // The run [old.base, old.next) is stored: start from its end.
                    DeviceAcks {
                        epoch: old.epoch,
                        base: outbox,
                        next: old.next,
                        above: old.above,
                    }
                } else {
                    let mut a = DeviceAcks::new(old.epoch, outbox);
                    a.above = old.above.split_off(&outbox);
                    a
                }
            }
            Some(_) => {
                effect = HelloEffect::NewEpoch;
                DeviceAcks::new(epoch.clone(), outbox)
            }
            None => {
                effect = HelloEffect::First;
                DeviceAcks::new(epoch.clone(), outbox)
            }
        };
        // Walk the store upward from `next`: bounded by what is stored.
        while acks.above.remove(&acks.next) || is_stored(&acks.epoch, acks.next) {
            match acks.next.checked_add(1) {
                Some(n) => acks.next = n,
                None => break,
            }
        }
        acks.above = acks.above.split_off(&acks.next);
        self.devices.insert(device.clone(), Box::new(acks));
        effect
    }

    /// Records a stored report. Returns the device's counter, or `None` for
    /// a device that never said Hello (the caller must not have stored it).
    pub fn stored(&mut self, device: &DeviceId, seq: u64) -> Option<&DeviceAcks> {
        let acks = self.devices.get_mut(device)?;
        acks.stored(seq);
        Some(acks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::device as dev;
    use std::collections::HashSet;

    fn ep(s: &str) -> Epoch {
        Epoch::new(s).unwrap()
    }
    fn none(_: &Epoch, _: u64) -> bool {
        false
    }

    #[test]
    fn ack_is_outbox_minus_one_while_nothing_is_stored() {
        let mut t = AckTracker::new();
        assert_eq!(
            t.hello(&dev("d"), &ep("e1e1e1e1"), 10, none),
            HelloEffect::First
        );
        assert_eq!(t.get(&dev("d")).unwrap().ack(), Some(9));
        t.hello(&dev("z"), &ep("e1e1e1e1"), 0, none);
        assert_eq!(t.get(&dev("z")).unwrap().ack(), None);
    }

    #[test]
    fn contiguous_reports_advance_the_ack() {
        let mut t = AckTracker::new();
        t.hello(&dev("d"), &ep("e1e1e1e1"), 1, none);
        for seq in 1..=5 {
            assert_eq!(t.stored(&dev("d"), seq).unwrap().ack(), Some(seq));
        }
    }

    #[test]
    fn a_gap_holds_the_ack_until_it_is_filled() {
        let mut t = AckTracker::new();
        t.hello(&dev("d"), &ep("e1e1e1e1"), 1, none);
        t.stored(&dev("d"), 1);
        assert_eq!(t.stored(&dev("d"), 3).unwrap().ack(), Some(1));
        assert_eq!(t.stored(&dev("d"), 4).unwrap().ack(), Some(1));
        // The re-send fills the gap: the ack jumps over everything stored.
        assert_eq!(t.stored(&dev("d"), 2).unwrap().ack(), Some(4));
        assert!(t.get(&dev("d")).unwrap().above.is_empty());
    }

    #[test]
    fn duplicates_change_nothing() {
        let mut t = AckTracker::new();
        t.hello(&dev("d"), &ep("e1e1e1e1"), 1, none);
        t.stored(&dev("d"), 1);
        t.stored(&dev("d"), 2);
        let before = t.get(&dev("d")).unwrap().clone();
        assert!(!t.get(&dev("d")).cloned().unwrap().stored(1));
        t.stored(&dev("d"), 2);
        assert_eq!(t.get(&dev("d")).unwrap(), &before);
    }

    #[test]
    fn reports_below_the_base_do_not_move_the_ack() {
        let mut t = AckTracker::new();
        t.hello(&dev("d"), &ep("e1e1e1e1"), 100, none);
        assert_eq!(t.stored(&dev("d"), 50).unwrap().ack(), Some(99));
        assert!(!t.get(&dev("d")).unwrap().covers(50));
    }

    #[test]
    fn unknown_device_is_refused() {
        let mut t = AckTracker::new();
        assert!(t.stored(&dev("ghost"), 1).is_none());
    }

    #[test]
    fn new_epoch_restarts_at_its_outbox() {
        let mut t = AckTracker::new();
        t.hello(&dev("d"), &ep("e1e1e1e1"), 1, none);
        for s in 1..=40 {
            t.stored(&dev("d"), s);
        }
        assert_eq!(t.get(&dev("d")).unwrap().ack(), Some(40));
        // Factory reset: the counter starts over at 1, under a new epoch.
        assert_eq!(
            t.hello(&dev("d"), &ep("e2e2e2e2"), 1, none),
            HelloEffect::NewEpoch
        );
        assert_eq!(t.get(&dev("d")).unwrap().ack(), Some(0));
        assert_eq!(t.stored(&dev("d"), 1).unwrap().ack(), Some(1));
    }

    #[test]
    fn same_epoch_hello_keeps_the_run_when_the_outbox_is_inside_it() {
        let mut t = AckTracker::new();
        t.hello(&dev("d"), &ep("e1e1e1e1"), 1, none);
        for s in 1..=10 {
            t.stored(&dev("d"), s);
        }
        t.stored(&dev("d"), 12);
        // The device missed the ack of 8..=10 and still holds them.
        assert_eq!(
            t.hello(&dev("d"), &ep("e1e1e1e1"), 8, none),
            HelloEffect::SameEpoch
        );
        let a = t.get(&dev("d")).unwrap();
        assert_eq!((a.base, a.ack()), (8, Some(10)));
        assert!(a.above.contains(&12));
    }

    #[test]
    fn same_epoch_hello_below_the_base_asks_the_store() {
        let stored: HashSet<u64> = (1..=10).collect();
        let mut t = AckTracker::new();
        t.hello(&dev("d"), &ep("e1e1e1e1"), 5, |_, s| stored.contains(&s));
        assert_eq!(t.get(&dev("d")).unwrap().ack(), Some(10));
        t.hello(&dev("d"), &ep("e1e1e1e1"), 2, |_, s| stored.contains(&s));
        let a = t.get(&dev("d")).unwrap();
        assert_eq!((a.base, a.ack()), (2, Some(10)));
    }

    #[test]
    fn hello_above_the_run_starts_there() {
        let mut t = AckTracker::new();
        t.hello(&dev("d"), &ep("e1e1e1e1"), 1, none);
        t.stored(&dev("d"), 1);
        t.stored(&dev("d"), 7);
        t.hello(&dev("d"), &ep("e1e1e1e1"), 6, none);
        let a = t.get(&dev("d")).unwrap();
        assert_eq!((a.base, a.ack()), (6, Some(5)));
        assert_eq!(t.stored(&dev("d"), 6).unwrap().ack(), Some(7));
    }

    #[test]
    fn new_epoch_with_reports_already_stored_counts_them() {
        // A restart replayed the Hello of an epoch whose reports were stored.
        let mut t = AckTracker::new();
        t.hello(&dev("d"), &ep("e2e2e2e2"), 3, |e, s| {
            e.as_str() == "e2e2e2e2" && (3..=4).contains(&s)
        });
        assert_eq!(t.get(&dev("d")).unwrap().ack(), Some(4));
    }

    #[test]
    fn the_gap_list_is_bounded() {
        let mut t = AckTracker::new();
        t.hello(&dev("d"), &ep("e1e1e1e1"), 1, none);
        for s in 0..(MAX_ABOVE as u64 + 100) {
            t.stored(&dev("d"), 10 + s);
        }
        assert_eq!(t.get(&dev("d")).unwrap().above.len(), MAX_ABOVE);
        // Seqs at the top end of u64 do not overflow.
        t.hello(&dev("m"), &ep("e1e1e1e1"), u64::MAX, none);
        assert_eq!(
            t.stored(&dev("m"), u64::MAX).unwrap().ack(),
            Some(u64::MAX - 1)
        );
    }
}
