//! The registered devices: each record found by id in constant time, and
//! the ids in order for pages and listings.
//!
//! A `BTreeMap<DeviceId, DeviceRecord>` did both, but a lookup in a
//! million-entry map is about twenty string comparisons across cold
//! memory: 55 % of a campaign create's pre-flight at 1,000,000 devices was
//! those lookups (`perf`, `ota bench --only registry`, issue 19). Here the
//! records sit in a hash map (foldhash, seeded at random per process, so
//! ids chosen to collide cannot be computed ahead of time; and ids come
//! only from devices the broker let in), boxed so that growing the table
//! moves pointers, not records; the order is a set of ids beside it. The
//! map is in shards ([`crate::sharded`]), so that its growth past
//! 900,000 devices is not one stall of core.

use std::collections::BTreeSet;
use std::ops::Bound;

use schemas::DeviceId;

use crate::sharded::ShardedMap;
use crate::store::DeviceRecord;

/// Registered devices by id.
#[derive(Debug, Default)]
pub struct Registry {
    records: ShardedMap<DeviceId, Box<Entry>>,
    order: BTreeSet<DeviceId>,
}

/// One device: its record, and the `last_seen` last written to the store
/// (kept here, not in a map of its own: one id fewer per device).
#[derive(Debug)]
struct Entry {
    record: DeviceRecord,
    persisted_seen: u64,
}

impl Registry {
    /// One device.
    pub fn get(&self, id: &DeviceId) -> Option<&DeviceRecord> {
        self.records.get(id).map(|e| &e.record)
    }

    /// One device, to change (not its id).
    pub fn get_mut(&mut self, id: &DeviceId) -> Option<&mut DeviceRecord> {
        self.records.get_mut(id).map(|e| &mut e.record)
    }

    /// One device, to change, and the `last_seen` last written for it.
    pub fn get_mut_seen(&mut self, id: &DeviceId) -> Option<(&mut DeviceRecord, &mut u64)> {
        self.records
            .get_mut(id)
            .map(|e| (&mut e.record, &mut e.persisted_seen))
    }

    /// True when the device is registered.
    pub fn contains_key(&self, id: &DeviceId) -> bool {
        self.records.contains_key(id)
    }

    /// Registers (or replaces) a record under its own id, its
    /// `last_seen` as written.
    pub fn insert(&mut self, record: DeviceRecord) {
        if !self.records.contains_key(&record.id) {
            self.order.insert(record.id.clone());
        }
        let persisted_seen = record.last_seen;
        self.records.insert(
            record.id.clone(),
            Box::new(Entry {
                record,
                persisted_seen,
            }),
        );
    }

    /// Every id, in order.
    pub fn keys(&self) -> impl Iterator<Item = &DeviceId> {
        self.order.iter()
    }

    /// Every record, by id.
    pub fn values(&self) -> impl Iterator<Item = &DeviceRecord> {
        self.after(None)
    }

    /// The records after `after` (from the first without), by id.
    pub fn after<'a>(
        &'a self,
        after: Option<&DeviceId>,
    ) -> impl Iterator<Item = &'a DeviceRecord> + 'a {
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.order
            .range::<DeviceId, _>((from, Bound::Unbounded))
            .filter_map(|id| self.get(id))
    }

    /// How many devices.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when none is registered.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

impl FromIterator<DeviceRecord> for Registry {
    fn from_iter<I: IntoIterator<Item = DeviceRecord>>(iter: I) -> Self {
        let mut r = Registry::default();
        for d in iter {
            r.insert(d);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, arch: &str) -> DeviceRecord {
        DeviceRecord {
            id: DeviceId::new(id).unwrap(),
            arch: arch.into(),
            versions: Default::default(),
            labels: Default::default(),
            boot_id: "b".into(),
            online: false,
            first_seen: 0,
            last_seen: 0,
            last_hello: 0,
            reboots: 0,
            features: Vec::new(),
        }
    }

    #[test]
    fn records_are_found_by_id_and_listed_in_id_order() {
        let mut r: Registry = ["c", "a", "b"].iter().map(|i| record(i, "x")).collect();
        r.insert(record("a", "esp32"));
        assert_eq!(r.len(), 3);
        assert_eq!(r.get(&DeviceId::new("a").unwrap()).unwrap().arch, "esp32");
        let ids = |it: &mut dyn Iterator<Item = &DeviceRecord>| {
            it.map(|d| d.id.to_string()).collect::<Vec<_>>()
        };
        assert_eq!(ids(&mut r.values()), ["a", "b", "c"]);
        assert_eq!(
            ids(&mut r.after(Some(&DeviceId::new("a").unwrap()))),
            ["b", "c"]
        );
        r.get_mut(&DeviceId::new("b").unwrap()).unwrap().online = true;
        assert!(r.get(&DeviceId::new("b").unwrap()).unwrap().online);
        assert!(!r.contains_key(&DeviceId::new("d").unwrap()));
    }
}
