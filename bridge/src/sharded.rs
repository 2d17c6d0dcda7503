//! A hash map in shards, for core's maps of every device (issue 19). A
//! hash table grows by moving every entry into one twice its size: at
//! 900,000 devices that is tens of milliseconds of rehashing and page
//! faults in one insert, and core's longest handlings while a fleet
//! registered were such growths (`RUST_LOG=bridge::core=debug`, `ota
//! bench --only registry`). In [`SHARDS`] tables each grows alone, a
//! sixty-fourth of the work at a time.
//!
//! The shard is picked by a hasher seeded apart from the tables' own, so
//! the entries of one shard still spread over all of its table. Both are
//! foldhash, seeded at random per process (ids chosen to collide cannot
//! be computed ahead of time).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

type Hasher = foldhash::fast::RandomState;

/// How many tables.
pub const SHARDS: usize = 64;

/// A map of `K` to `V` in [`SHARDS`] tables.
#[derive(Clone)]
pub struct ShardedMap<K, V> {
    shards: Box<[HashMap<K, V, Hasher>]>,
    pick: Hasher,
    len: usize,
}

impl<K, V> Default for ShardedMap<K, V> {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| HashMap::default()).collect(),
            pick: Hasher::default(),
            len: 0,
        }
    }
}

impl<K: std::fmt::Debug, V: std::fmt::Debug> std::fmt::Debug for ShardedMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K, V> ShardedMap<K, V> {
    /// How many entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every entry, shard by shard (in no order).
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flat_map(|s| s.iter())
    }

    /// Every key (in no order).
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.iter().map(|(k, _)| k)
    }
}

impl<K: Hash + Eq, V> ShardedMap<K, V> {
    fn shard<Q: Hash + ?Sized>(&self, k: &Q) -> usize {
        (self.pick.hash_one(k) % SHARDS as u64) as usize
    }

    /// The value of `k`.
    pub fn get<Q>(&self, k: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards[self.shard(k)].get(k)
    }

    /// The value of `k`, to change.
    pub fn get_mut<Q>(&mut self, k: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let i = self.shard(k);
        self.shards[i].get_mut(k)
    }

    /// True when `k` has a value.
    pub fn contains_key<Q>(&self, k: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards[self.shard(k)].contains_key(k)
    }

    /// Sets `k`'s value; returns the one it replaced.
    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        let i = self.shard(&k);
        let old = self.shards[i].insert(k, v);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes `k`; returns its value.
    pub fn remove<Q>(&mut self, k: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let i = self.shard(k);
        let old = self.shards[i].remove(k);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }
}

impl<K: Hash + Eq, V> FromIterator<(K, V)> for ShardedMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut m = Self::default();
        for (k, v) in iter {
            m.insert(k, v);
        }
        m
    }
}

/// A set of `K` in [`SHARDS`] tables: a wave's members, a pre-flight's
/// targeted devices. Growing one to 1,000,000 ids is never one long stall,
/// and it needs no capacity reserved ahead (allocating a table for a
/// million ids at once took core 75 to 150 ms here).
#[derive(Clone)]
pub struct ShardedSet<K> {
    map: ShardedMap<K, ()>,
}

impl<K> Default for ShardedSet<K> {
    fn default() -> Self {
        Self {
            map: ShardedMap::default(),
        }
    }
}

impl<K: std::fmt::Debug> std::fmt::Debug for ShardedSet<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl<K> ShardedSet<K> {
    /// How many.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every one (in no order).
    pub fn iter(&self) -> impl Iterator<Item = &K> {
        self.map.keys()
    }
}

impl<K: Hash + Eq> ShardedSet<K> {
    /// True when `k` is in.
    pub fn contains<Q>(&self, k: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.contains_key(k)
    }

    /// Adds `k`; true when it was not in.
    pub fn insert(&mut self, k: K) -> bool {
        self.map.insert(k, ()).is_none()
    }

    /// Takes `k` out; true when it was in.
    pub fn remove<Q>(&mut self, k: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.remove(k).is_some()
    }
}

impl<K: Hash + Eq> PartialEq for ShardedSet<K> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|k| other.contains(k))
    }
}

impl<K: Hash + Eq> Eq for ShardedSet<K> {}

impl<K: Hash + Eq> FromIterator<K> for ShardedSet<K> {
    fn from_iter<I: IntoIterator<Item = K>>(iter: I) -> Self {
        let mut s = Self::default();
        for k in iter {
            s.insert(k);
        }
        s
    }
}

impl<'a, K> IntoIterator for &'a ShardedSet<K> {
    type Item = &'a K;
    type IntoIter = Box<dyn Iterator<Item = &'a K> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// It reads and writes like the map it replaces, entries spread over
    /// the shards.
    #[test]
    fn it_behaves_like_a_hash_map() {
        let mut m: ShardedMap<String, u32> = ShardedMap::default();
        let mut want: BTreeMap<String, u32> = BTreeMap::new();
        for i in 0..5000u32 {
            let k = format!("dev-{}", i % 3000);
            assert_eq!(m.insert(k.clone(), i), want.insert(k, i));
            if i % 7 == 0 {
                let k = format!("dev-{}", i / 2);
                assert_eq!(m.remove(k.as_str()), want.remove(&k));
            }
        }
        assert_eq!(m.len(), want.len());
        let mut got: Vec<(String, u32)> = m.iter().map(|(k, v)| (k.clone(), *v)).collect();
        got.sort();
        assert_eq!(got, want.into_iter().collect::<Vec<_>>());
        *m.get_mut("dev-1").unwrap() = 99;
        assert_eq!(m.get("dev-1"), Some(&99));
        assert!(m.contains_key("dev-2") && !m.contains_key("nope"));
        assert!(m.shards.iter().all(|s| !s.is_empty()), "every shard used");
    }

    #[test]
    fn a_set_is_a_set() {
        let mut s: ShardedSet<u32> = (0..100).collect();
        assert!(!s.insert(5) && s.insert(500));
        assert!(s.remove(&5) && !s.remove(&5));
        assert_eq!(s.len(), 100);
        assert!(s.contains(&500) && !s.contains(&5));
        let t: ShardedSet<u32> = s.iter().copied().collect();
        assert_eq!(s, t);
        assert_eq!((&s).into_iter().count(), 100);
    }
}
