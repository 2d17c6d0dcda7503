//! The `director` tree: how far the director key's counter (PROTOCOL.md
//! E2) may have gone. The director key's signer (`director.rs`) reserves a range ahead, durably,
//! before it signs with a counter inside it, so a restart (or a crash at
//! any point) resumes above every counter it ever signed.

use super::StoreError;

const TREE: &str = "director";
const RESERVED: &[u8] = b"reserved";

/// The `director` tree.
#[derive(Clone)]
pub struct CounterStore {
    db: sled::Db,
    tree: sled::Tree,
}

impl CounterStore {
    pub(super) fn open(db: &sled::Db) -> Result<Self, StoreError> {
        Ok(Self {
            db: db.clone(),
            tree: db.open_tree(TREE)?,
        })
    }

    /// Every counter signed so far is at most this (0: none yet).
    pub fn reserved(&self) -> Result<u64, StoreError> {
        match self.tree.get(RESERVED)? {
            None => Ok(0),
            Some(v) => {
                let b: [u8; 8] = v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                    tree: TREE,
                    key: "reserved".into(),
                    reason: format!("{} bytes, expected 8", v.len()),
                })?;
                Ok(u64::from_be_bytes(b))
            }
        }
    }

    /// Records `upto` and flushes. Blocks (one fsync): the director calls
    /// it once per reserved range, about once an hour.
    pub fn reserve(&self, upto: u64) -> Result<(), StoreError> {
        self.tree.insert(RESERVED, &upto.to_be_bytes())?;
        self.db.flush()?;
        Ok(())
    }
}
