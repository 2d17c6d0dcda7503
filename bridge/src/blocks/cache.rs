//! [`BlockCache`]: encoded blocks (Block message bytes, proof included)
//! kept for the next window, least recently used out first, bounded by
//! bytes. A popular artifact is read and encoded once, however many
//! windows and devices ask for it.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use schemas::ArtifactId;

type Key = (ArtifactId, u32);

/// An LRU of encoded blocks, bounded by the sum of their sizes.
#[derive(Debug)]
pub struct BlockCache {
    cap: usize,
    used: usize,
    tick: u64,
    map: HashMap<Key, (Bytes, u64)>,
    order: BTreeMap<u64, Key>,
}

impl BlockCache {
    /// A cache of at most `cap` bytes (0: caches nothing).
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            used: 0,
            tick: 0,
            map: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    /// Bytes held.
    pub fn used(&self) -> usize {
        self.used
    }

    /// The block, marked as just used.
    pub fn get(&mut self, artifact: &ArtifactId, index: u32) -> Option<Bytes> {
        self.tick += 1;
        let key = (artifact.clone(), index);
        let (bytes, stamp) = self.map.get_mut(&key)?;
        self.order.remove(stamp);
        *stamp = self.tick;
        self.order.insert(self.tick, key);
        Some(bytes.clone())
    }

    /// Keeps a block, evicting the least recently used to make room.
    pub fn insert(&mut self, artifact: &ArtifactId, index: u32, bytes: Bytes) {
        if bytes.len() > self.cap {
            return;
        }
        self.remove(&(artifact.clone(), index));
        while self.used + bytes.len() > self.cap {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((b, _)) = self.map.remove(&oldest) {
                self.used -= b.len();
            }
        }
        self.tick += 1;
        let key = (artifact.clone(), index);
        self.used += bytes.len();
        self.order.insert(self.tick, key.clone());
        self.map.insert(key, (bytes, self.tick));
    }

    /// Drops every block of `artifact`.
    pub fn remove_artifact(&mut self, artifact: &ArtifactId) {
        let keys: Vec<Key> = self
            .map
            .keys()
            .filter(|(a, _)| a == artifact)
            .cloned()
            .collect();
        for k in keys {
            self.remove(&k);
        }
    }

    fn remove(&mut self, key: &Key) {
        if let Some((b, stamp)) = self.map.remove(key) {
            self.used -= b.len();
            self.order.remove(&stamp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::artifact as a;

    #[test]
    fn evicts_least_recently_used_within_the_byte_bound() {
        let mut c = BlockCache::new(30);
        c.insert(&a("x"), 0, Bytes::from(vec![0; 10]));
        c.insert(&a("x"), 1, Bytes::from(vec![1; 10]));
        c.insert(&a("x"), 2, Bytes::from(vec![2; 10]));
        assert!(c.get(&a("x"), 0).is_some()); // 1 is now the oldest
        c.insert(&a("y"), 0, Bytes::from(vec![3; 10]));
        assert!(c.get(&a("x"), 1).is_none());
        assert!(c.get(&a("x"), 0).is_some());
        assert_eq!(c.used(), 30);
        c.insert(&a("y"), 1, Bytes::from(vec![0; 31]));
        assert_eq!(c.used(), 30, "a block larger than the cache is not kept");
        c.remove_artifact(&a("x"));
        assert_eq!(c.used(), 10);
        c.insert(&a("y"), 0, Bytes::from(vec![3; 5]));
        assert_eq!(c.used(), 5, "replacing a block frees the old bytes");
    }
}
