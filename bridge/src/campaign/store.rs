//! The `campaigns` tree: campaign id → JSON [`CampaignRecord`] (spec,
//! resolved release, pre-flight, gate with its timers, wave results). The
//! manager writes a record before it publishes anything that record
//! decided, and flushes before publishing, so a restarted bridge never
//! finds the broker ahead of its store.

use schemas::CampaignId;

use super::record::CampaignRecord;
use crate::store::StoreError;

const TREE: &str = "campaigns";

/// The `campaigns` tree.
#[derive(Clone)]
pub struct CampaignStore {
    tree: sled::Tree,
}

impl CampaignStore {
    /// Opens the tree in the bridge's database.
    pub fn open(db: &sled::Db) -> Result<Self, StoreError> {
        Ok(Self {
            tree: db.open_tree(TREE)?,
        })
    }

    /// Writes a record (durable at the next flush).
    pub fn put(&self, r: &CampaignRecord) -> Result<(), StoreError> {
        let json = serde_json::to_vec(r).map_err(|e| StoreError::Corrupt {
            tree: TREE,
            key: r.id().to_string(),
            reason: format!("cannot serialize: {e}"),
        })?;
        self.tree.insert(r.id().as_str(), json)?;
        Ok(())
    }

    /// True when a campaign of that id exists.
    pub fn contains(&self, id: &CampaignId) -> Result<bool, StoreError> {
        Ok(self.tree.contains_key(id.as_str())?)
    }

    /// Every record that reads, and the keys and errors of those that do
    /// not (the caller logs them; one bad record must not stop the rest).
    pub fn all(&self) -> Result<Loaded, StoreError> {
        let mut out = Loaded::default();
        for kv in self.tree.iter() {
            let (k, v) = kv?;
            match serde_json::from_slice::<CampaignRecord>(&v) {
                Ok(r) => out.records.push(r),
                Err(e) => out
                    .unreadable
                    .push((String::from_utf8_lossy(&k).into_owned(), e.to_string())),
            }
        }
        Ok(out)
    }
}

/// What [`CampaignStore::all`] read.
#[derive(Debug, Default)]
pub struct Loaded {
    pub records: Vec<CampaignRecord>,
    /// (key, why) of each record that does not read.
    pub unreadable: Vec<(String, String)>,
}
