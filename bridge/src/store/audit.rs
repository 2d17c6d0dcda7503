//! The `audit` tree: every operator command the bridge received, accepted
//! or refused, keyed by `be64(unix secs) ‖ be64(unique id)` so that it reads
//! in time order and the replay guard can be seeded from its recent end.

use serde::{Deserialize, Serialize};

use super::{corrupt, StoreError};

const TREE: &str = "audit";

/// One received command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Unix seconds when the bridge received it.
    pub at: u64,
    /// The request id, when the body could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The signing key's kid as sent (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// The command's name, when the body could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    /// The body's `issued_at`, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<u64>,
    /// True when it passed signature, window and replay checks.
    pub accepted: bool,
    /// Why it was refused, or why the accepted command failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Refusals before this one that were counted but not audited (over
    /// the ops layer's budget a minute).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unaudited: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The `audit` tree.
#[derive(Clone)]
pub struct AuditStore {
    tree: sled::Tree,
    db: sled::Db,
}

impl AuditStore {
    pub(super) fn open(db: &sled::Db) -> Result<Self, StoreError> {
        Ok(Self {
            tree: db.open_tree(TREE)?,
            db: db.clone(),
        })
    }

    /// Appends an entry (durable at the next flush).
    pub fn append(&self, e: &AuditEntry) -> Result<(), StoreError> {
        let mut key = Vec::with_capacity(16);
        key.extend_from_slice(&e.at.to_be_bytes());
        key.extend_from_slice(&self.db.generate_id()?.to_be_bytes());
        // Invariant: an AuditEntry holds only strings, numbers and bools.
        let json = serde_json::to_vec(e).expect("an audit entry always serializes");
        self.tree.insert(key, json)?;
        Ok(())
    }

    /// Entries received at or after `since` (Unix seconds), oldest first.
    pub fn since(&self, since: u64) -> Result<Vec<AuditEntry>, StoreError> {
        let mut out = Vec::new();
        for kv in self.tree.range(since.to_be_bytes()..) {
            let (k, v) = kv?;
            out.push(serde_json::from_slice(&v).map_err(|e| corrupt(TREE, &k, e))?);
        }
        Ok(out)
    }

    /// Removes the entries received before `before` (Unix seconds): the
    /// retention. Returns how many went. Blocks: call on the blocking pool.
    pub fn prune_before(&self, before: u64) -> Result<usize, StoreError> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for k in self.tree.range(..before.to_be_bytes()).keys() {
            batch.remove(k?);
            n += 1;
        }
        self.tree.apply_batch(batch)?;
        Ok(n)
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// True when no command was ever received.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(at: u64, id: &str, accepted: bool) -> AuditEntry {
        AuditEntry {
            at,
            request_id: Some(id.into()),
            kid: None,
            op: Some("group_list".into()),
            issued_at: Some(at),
            accepted,
            error: None,
            unaudited: 0,
        }
    }

    #[test]
    fn retention_removes_only_older_entries() {
        let dir = tempfile::tempdir().unwrap();
        let s = super::super::Store::open(dir.path()).unwrap();
        for (at, id) in [(100, "a"), (199, "b"), (200, "c"), (300, "d")] {
            s.audit.append(&entry(at, id, true)).unwrap();
        }
        assert_eq!(s.audit.prune_before(200).unwrap(), 2);
        let left: Vec<_> = s
            .audit
            .since(0)
            .unwrap()
            .into_iter()
            .map(|e| e.at)
            .collect();
        assert_eq!(left, vec![200, 300]);
        assert_eq!(s.audit.prune_before(200).unwrap(), 0);
    }

    #[test]
    fn reads_from_a_time_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = super::super::Store::open(dir.path()).unwrap();
        s.audit.append(&entry(100, "a", true)).unwrap();
        s.audit.append(&entry(200, "b", false)).unwrap();
        s.audit.append(&entry(200, "c", true)).unwrap();
        let got: Vec<_> = s
            .audit
            .since(150)
            .unwrap()
            .into_iter()
            .map(|e| e.request_id.unwrap())
            .collect();
        assert_eq!(got, vec!["b", "c"]);
        assert_eq!(s.audit.len(), 3);
    }
}
