//! A sled tree of JSON records keyed by device id: the shape the device
//! registry and the credential registry share ([`super::DeviceStore`] and
//! the identity module's credential store).

use std::marker::PhantomData;

use schemas::DeviceId;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{corrupt, StoreError};

/// A record kept in [`Records`]: its tree's name and its device id.
pub trait Record: Serialize + DeserializeOwned {
    /// The sled tree the records live in.
    const TREE: &'static str;
    /// The key: the device the record is of.
    fn id(&self) -> &DeviceId;
}

/// Records of type `T`, one per device id, as JSON in one tree.
pub struct Records<T> {
    tree: sled::Tree,
    name: &'static str,
    _record: PhantomData<fn() -> T>,
}

impl<T> Clone for Records<T> {
    fn clone(&self) -> Self {
        Records {
            tree: self.tree.clone(),
            name: self.name,
            _record: PhantomData,
        }
    }
}

impl<T: Record> Records<T> {
    /// Opens (or creates) the tree [`Record::TREE`]. Blocks briefly.
    pub fn open(db: &sled::Db) -> Result<Self, StoreError> {
        Ok(Records {
            tree: db.open_tree(T::TREE)?,
            name: T::TREE,
            _record: PhantomData,
        })
    }

    /// Writes a record under its id (durable at the next flush).
    pub fn put(&self, r: &T) -> Result<(), StoreError> {
        // Invariant: records hold only strings, maps and numbers.
        let json = serde_json::to_vec(r).expect("a record always serializes");
        self.tree.insert(r.id().as_str(), json)?;
        Ok(())
    }

    /// One record.
    pub fn get(&self, id: &DeviceId) -> Result<Option<T>, StoreError> {
        match self.tree.get(id.as_str())? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| corrupt(self.name, id.as_str().as_bytes(), e)),
        }
    }

    /// Every record. An unreadable one is an error naming its key. Blocks:
    /// call it at start, off the runtime.
    pub fn all(&self) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::with_capacity(self.tree.len());
        for kv in self.tree.iter() {
            let (k, v) = kv?;
            out.push(serde_json::from_slice(&v).map_err(|e| corrupt(self.name, &k, e))?);
        }
        Ok(out)
    }
}

/// The round trip every record type keeps, on `s`: `r` put, read back
/// alone and in `all`, and an id never put reads as `None`.
#[cfg(test)]
pub(crate) fn assert_round_trip<T>(s: &Records<T>, r: T)
where
    T: Record + Clone + PartialEq + std::fmt::Debug,
{
    s.put(&r).unwrap();
    assert_eq!(s.get(r.id()).unwrap(), Some(r.clone()));
    assert_eq!(s.all().unwrap(), vec![r]);
    assert_eq!(s.get(&DeviceId::new("nope").unwrap()).unwrap(), None);
}
