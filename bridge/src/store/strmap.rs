//! [`StrMap`]: a device's labels or versions, a handful of short strings
//! each, kept as one sorted vector of inline strings.
//!
//! Why not a `BTreeMap<String, String>`: its first node reserves room for
//! eleven pairs (528 bytes) and every key and value is its own heap
//! allocation, so one label set cost about 900 bytes and one version map
//! about 550 (heaptrack, `ota bench --only registry`, issue 19). Here a
//! pair is 48 bytes in one allocation, and a key or value of up to 24
//! bytes needs none of its own. Serialized as a JSON object, exactly as
//! the map was: stored records and the API are unchanged.

use std::collections::BTreeMap;
use std::fmt;

use compact_str::CompactString;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A small map of strings, sorted by key, one value per key.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct StrMap(Vec<(CompactString, CompactString)>);

impl StrMap {
    /// The empty map.
    pub const fn new() -> Self {
        StrMap(Vec::new())
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.find(key).ok().map(|i| self.0[i].1.as_str())
    }

    /// True when `key` has a value.
    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    /// Sets `key` to `value`.
    pub fn insert(&mut self, key: &str, value: &str) {
        match self.find(key) {
            Ok(i) => self.0[i].1 = value.into(),
            Err(i) => self.0.insert(i, (key.into(), value.into())),
        }
    }

    /// The pairs, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there is no key.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The same pairs as an ordinary map (the wire types use one).
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// True when it holds exactly the pairs of `map`.
    pub fn same_as<K: AsRef<str>, V: AsRef<str>>(&self, map: &BTreeMap<K, V>) -> bool {
        self.len() == map.len()
            && self
                .iter()
                .zip(map)
                .all(|((k, v), (mk, mv))| k == mk.as_ref() && v == mv.as_ref())
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for StrMap {
    /// The last value given for a key wins, as in a map.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut pairs: Vec<(CompactString, CompactString)> = iter
            .into_iter()
            .map(|(k, v)| (k.as_ref().into(), v.as_ref().into()))
            .collect();
        // Stable: of equal keys the last given stays last, and is kept.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        pairs.reverse();
        pairs.dedup_by(|later, kept| later.0 == kept.0);
        pairs.reverse();
        pairs.shrink_to_fit();
        StrMap(pairs)
    }
}

impl<K: AsRef<str>, V: AsRef<str>> From<&BTreeMap<K, V>> for StrMap {
    fn from(map: &BTreeMap<K, V>) -> Self {
        // Already sorted and unique.
        StrMap(
            map.iter()
                .map(|(k, v)| (k.as_ref().into(), v.as_ref().into()))
                .collect(),
        )
    }
}

impl<'a> IntoIterator for &'a StrMap {
    type Item = (&'a str, &'a str);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (CompactString, CompactString)>,
        fn(&'a (CompactString, CompactString)) -> (&'a str, &'a str),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl<const N: usize> From<[(&str, &str); N]> for StrMap {
    fn from(pairs: [(&str, &str); N]) -> Self {
        pairs.into_iter().collect()
    }
}

impl fmt::Debug for StrMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for StrMap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for StrMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<CompactString, CompactString>::deserialize(d)?;
        let mut pairs: Vec<_> = map.into_iter().collect();
        pairs.shrink_to_fit();
        Ok(StrMap(pairs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_reads_and_writes_like_the_map_it_replaces() {
        let map: BTreeMap<String, String> = [
            (
                "site".to_string(),
                "berlin-north-plant-number-7".to_string(),
            ),
            ("customer".to_string(), "acme".to_string()),
        ]
        .into();
        let m = StrMap::from(&map);
        assert_eq!(m.get("customer"), Some("acme"));
        assert_eq!(m.get("site"), Some("berlin-north-plant-number-7"));
        assert_eq!(m.get("line"), None);
        assert!(m.same_as(&map) && m.to_map() == map);
        // The same JSON as the map: old records load, the API is unchanged.
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, serde_json::to_string(&map).unwrap());
        let back: StrMap = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
        assert_eq!(format!("{m:?}"), format!("{map:?}"));
    }

    #[test]
    fn keys_stay_sorted_and_unique() {
        let mut m: StrMap = [("b", "1"), ("a", "1"), ("b", "2")].into();
        assert_eq!(m.iter().collect::<Vec<_>>(), [("a", "1"), ("b", "2")]);
        m.insert("c", "3");
        m.insert("a", "0");
        assert_eq!(
            m.iter().collect::<Vec<_>>(),
            [("a", "0"), ("b", "2"), ("c", "3")]
        );
        assert!(m.contains_key("c") && !m.contains_key("d"));
        assert!(!m.same_as(&BTreeMap::from([("a", "0")])));
        // A JSON object with a key twice keeps one.
        let m: StrMap = serde_json::from_str(r#"{"k":"1","k":"2"}"#).unwrap();
        assert_eq!(m.len(), 1);
    }
}
