//! Durable status: four trees.
//!
//! - `status_history`: `device ‖ 0 ‖ epoch ‖ 0 ‖ be64(seq)` → the Status's
//!   exact bytes. One entry per (device, epoch, seq): a duplicate is not
//!   stored twice.
//! - `status_conflicts`: the same key plus `be64(unique id)` → the bytes of
//!   a report whose seq was already stored with other content.
//! - `status_current`: `device ‖ 0 ‖ campaign ‖ 0` → JSON [`CurrentState`],
//!   the device's latest state in that campaign; the first terminal state
//!   is kept whatever comes after.
//! - `status_epochs`: `device` → JSON [`EpochRecord`], the ack counter, so a
//!   restart acknowledges exactly what it did before.

use schemas::msg::{ErrorCode, StatusState};
use schemas::{ArtifactId, CampaignId, DeviceId, Epoch};
use serde::{Deserialize, Serialize};

use super::{corrupt, key_of, split_key, StoreError};

const HISTORY: &str = "status_history";
const CONFLICTS: &str = "status_conflicts";
const CURRENT: &str = "status_current";
const EPOCHS: &str = "status_epochs";

/// A device's state in one campaign, from its latest Status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrentState {
    pub campaign: CampaignId,
    pub state: StatusState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<ArtifactId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<u64>,
    /// The report's epoch and seq.
    pub epoch: Epoch,
    pub seq: u64,
    /// Unix seconds when the bridge stored it.
    pub at: u64,
}

impl CurrentState {
    /// True when the state ends the device's part in the campaign.
    pub fn is_terminal(&self) -> bool {
        self.state.is_terminal()
    }

    /// Whether `new` replaces `self`: never once terminal; otherwise when it
    /// is from another epoch (the device started over) or a later seq.
    pub fn replaced_by(&self, new: &CurrentState) -> bool {
        !self.is_terminal() && (new.epoch != self.epoch || new.seq > self.seq)
    }
}

/// A device's ack counter as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: Epoch,
    /// The outbox of the latest Hello.
    pub base: u64,
    /// The lowest seq >= base not stored.
    pub next: u64,
}

/// What [`StatusStore::insert`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Stored now.
    New,
    /// The same bytes were stored already.
    Duplicate,
    /// Other bytes were stored under this seq: kept aside.
    Conflict,
    /// A conflict, not kept: the device has [`MAX_CONFLICTS_PER_DEVICE`]
    /// aside already. Only counted.
    ConflictNotKept,
}

/// Conflicting reports kept aside per device. A conflict is evidence (a
/// device that reuses seqs, or someone publishing under its id): a few
/// are worth keeping for an operator to read; a device or an impostor
/// that sends thousands must not fill the disk.
pub const MAX_CONFLICTS_PER_DEVICE: usize = 32;

/// The status trees.
#[derive(Clone)]
pub struct StatusStore {
    history: sled::Tree,
    conflicts: sled::Tree,
    current: sled::Tree,
    epochs: sled::Tree,
    db: sled::Db,
}

fn history_key(device: &DeviceId, epoch: &Epoch, seq: u64) -> Vec<u8> {
    let mut k = key_of(&[device.as_str().as_bytes(), epoch.as_str().as_bytes()]);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

impl StatusStore {
    pub(super) fn open(db: &sled::Db) -> Result<Self, StoreError> {
        Ok(Self {
            history: db.open_tree(HISTORY)?,
            conflicts: db.open_tree(CONFLICTS)?,
            current: db.open_tree(CURRENT)?,
            epochs: db.open_tree(EPOCHS)?,
            db: db.clone(),
        })
    }

    /// Stores a report's exact bytes under (device, epoch, seq), unless the
    /// same bytes are there already; other bytes there make it a conflict,
    /// kept in its own tree.
    pub fn insert(
        &self,
        device: &DeviceId,
        epoch: &Epoch,
        seq: u64,
        bytes: &[u8],
    ) -> Result<Inserted, StoreError> {
        let key = history_key(device, epoch, seq);
        // compare_and_swap from "absent" makes the check and the insert one step.
        match self
            .history
            .compare_and_swap(&key, None::<&[u8]>, Some(bytes))?
        {
            Ok(()) => Ok(Inserted::New),
            Err(cas) if cas.current.as_deref() == Some(bytes) => Ok(Inserted::Duplicate),
            Err(_) => {
                let prefix = key_of(&[device.as_str().as_bytes()]);
                let kept = self
                    .conflicts
                    .scan_prefix(&prefix)
                    .keys()
                    .take(MAX_CONFLICTS_PER_DEVICE)
                    .count();
                if kept >= MAX_CONFLICTS_PER_DEVICE {
                    return Ok(Inserted::ConflictNotKept);
                }
                let mut ck = key;
                ck.extend_from_slice(&self.db.generate_id()?.to_be_bytes());
                self.conflicts.insert(ck, bytes)?;
                Ok(Inserted::Conflict)
            }
        }
    }

    /// True when (device, epoch, seq) is stored.
    pub fn is_stored(
        &self,
        device: &DeviceId,
        epoch: &Epoch,
        seq: u64,
    ) -> Result<bool, StoreError> {
        Ok(self.history.contains_key(history_key(device, epoch, seq))?)
    }

    /// The exact bytes stored for (device, epoch, seq).
    pub fn get(
        &self,
        device: &DeviceId,
        epoch: &Epoch,
        seq: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .history
            .get(history_key(device, epoch, seq))?
            .map(|v| v.to_vec()))
    }

    /// Stored seqs of (device, epoch) at or above `from`, at most `limit`.
    pub fn seqs_from(
        &self,
        device: &DeviceId,
        epoch: &Epoch,
        from: u64,
        limit: usize,
    ) -> Result<Vec<u64>, StoreError> {
        let prefix = key_of(&[device.as_str().as_bytes(), epoch.as_str().as_bytes()]);
        let start = history_key(device, epoch, from);
        let mut out = Vec::new();
        for kv in self.history.range(start..) {
            let (k, _) = kv?;
            if !k.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            let tail: [u8; 8] = k[prefix.len()..]
                .try_into()
                .map_err(|_| corrupt(HISTORY, &k, "the seq is not 8 bytes"))?;
            out.push(u64::from_be_bytes(tail));
        }
        Ok(out)
    }

    /// How many reports are stored, all devices together.
    pub fn history_len(&self) -> usize {
        self.history.len()
    }

    /// Conflicting reports of one device: (epoch, seq, bytes).
    pub fn conflicts_of(
        &self,
        device: &DeviceId,
    ) -> Result<Vec<(String, u64, Vec<u8>)>, StoreError> {
        let prefix = key_of(&[device.as_str().as_bytes()]);
        let mut out = Vec::new();
        for kv in self.conflicts.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let (parts, tail) =
                split_key(&k, 2).ok_or_else(|| corrupt(CONFLICTS, &k, "bad key"))?;
            let seq: [u8; 8] = tail
                .get(..8)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(|| corrupt(CONFLICTS, &k, "the seq is not 8 bytes"))?;
            out.push((parts[1].to_string(), u64::from_be_bytes(seq), v.to_vec()));
        }
        Ok(out)
    }

    /// The device's state in a campaign.
    pub fn current(
        &self,
        device: &DeviceId,
        campaign: &CampaignId,
    ) -> Result<Option<CurrentState>, StoreError> {
        let k = key_of(&[device.as_str().as_bytes(), campaign.as_str().as_bytes()]);
        match self.current.get(&k)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| corrupt(CURRENT, &k, e)),
        }
    }

    /// Applies a new report to the device's state in its campaign. Returns
    /// the state now held when it changed, `None` when the held one stays
    /// (a terminal state is never replaced; an older seq does not win).
    pub fn update_current(
        &self,
        device: &DeviceId,
        new: CurrentState,
    ) -> Result<Option<CurrentState>, StoreError> {
        if let Some(old) = self.current(device, &new.campaign)? {
            if !old.replaced_by(&new) {
                return Ok(None);
            }
        }
        let k = key_of(&[device.as_str().as_bytes(), new.campaign.as_str().as_bytes()]);
        // Invariant: a CurrentState holds only names, enums, strings and numbers.
        let json = serde_json::to_vec(&new).expect("a current state always serializes");
        self.current.insert(k, json)?;
        Ok(Some(new))
    }

    /// Every campaign state of one device.
    pub fn currents_of(&self, device: &DeviceId) -> Result<Vec<CurrentState>, StoreError> {
        let prefix = key_of(&[device.as_str().as_bytes()]);
        let mut out = Vec::new();
        for kv in self.current.scan_prefix(&prefix) {
            let (k, v) = kv?;
            out.push(serde_json::from_slice(&v).map_err(|e| corrupt(CURRENT, &k, e))?);
        }
        Ok(out)
    }

    /// Every (device, state) of one campaign, oldest report first (a
    /// standing campaign judges its latest results). Scans the whole tree:
    /// for reports and restarts, not for hot paths.
    pub fn currents_of_campaign(
        &self,
        campaign: &CampaignId,
    ) -> Result<Vec<(DeviceId, CurrentState)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.current.iter() {
            let (k, v) = kv?;
            let Some((parts, _)) = split_key(&k, 2) else {
                return Err(corrupt(CURRENT, &k, "bad key"));
            };
            if parts[1] != campaign.as_str() {
                continue;
            }
            let id = DeviceId::new(parts[0]).map_err(|e| corrupt(CURRENT, &k, e))?;
            out.push((
                id,
                serde_json::from_slice(&v).map_err(|e| corrupt(CURRENT, &k, e))?,
            ));
        }
        out.sort_by_key(|(_, c): &(DeviceId, CurrentState)| c.at);
        Ok(out)
    }

    /// Writes a device's ack counter.
    pub fn put_epoch(&self, device: &DeviceId, r: &EpochRecord) -> Result<(), StoreError> {
        // Invariant: an EpochRecord holds a name and two numbers.
        let json = serde_json::to_vec(r).expect("an epoch record always serializes");
        self.epochs.insert(device.as_str(), json)?;
        Ok(())
    }

    /// Every device's ack counter. A record that does not read is an error
    /// naming its key.
    pub fn epochs(&self) -> Result<Vec<(DeviceId, EpochRecord)>, StoreError> {
        let mut out = Vec::with_capacity(self.epochs.len());
        for kv in self.epochs.iter() {
            let (k, v) = kv?;
            let id = std::str::from_utf8(&k)
                .ok()
                .and_then(|s| DeviceId::new(s).ok())
                .ok_or_else(|| corrupt(EPOCHS, &k, "not a device id"))?;
            out.push((
                id,
                serde_json::from_slice(&v).map_err(|e| corrupt(EPOCHS, &k, e))?,
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::device as d;

    fn e(s: &str) -> Epoch {
        Epoch::new(s).unwrap()
    }
    fn state(seq: u64, st: StatusState) -> CurrentState {
        CurrentState {
            campaign: CampaignId::new("c1").unwrap(),
            state: st,
            error: None,
            detail: None,
            artifact: None,
            progress: None,
            epoch: e("ep000001"),
            seq,
            at: 0,
        }
    }

    fn store() -> (tempfile::TempDir, super::super::Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = super::super::Store::open(dir.path()).unwrap();
        (dir, s)
    }

    #[test]
    fn duplicates_and_conflicts() {
        let (_d, s) = store();
        let st = &s.status;
        assert_eq!(
            st.insert(&d("a"), &e("ep000001"), 5, b"x").unwrap(),
            Inserted::New
        );
        assert_eq!(
            st.insert(&d("a"), &e("ep000001"), 5, b"x").unwrap(),
            Inserted::Duplicate
        );
        assert_eq!(
            st.insert(&d("a"), &e("ep000001"), 5, b"y").unwrap(),
            Inserted::Conflict
        );
        assert_eq!(st.get(&d("a"), &e("ep000001"), 5).unwrap().unwrap(), b"x");
        assert_eq!(st.history_len(), 1);
        assert_eq!(
            st.conflicts_of(&d("a")).unwrap(),
            vec![("ep000001".into(), 5, b"y".to_vec())]
        );
        // Past the bound per device, conflicts are counted, not kept.
        for i in 1..MAX_CONFLICTS_PER_DEVICE {
            let bytes = format!("y{i}");
            assert_eq!(
                st.insert(&d("a"), &e("ep000001"), 5, bytes.as_bytes())
                    .unwrap(),
                Inserted::Conflict
            );
        }
        assert_eq!(
            st.insert(&d("a"), &e("ep000001"), 5, b"z").unwrap(),
            Inserted::ConflictNotKept
        );
        assert_eq!(
            st.conflicts_of(&d("a")).unwrap().len(),
            MAX_CONFLICTS_PER_DEVICE
        );
        // Another device's bound is its own.
        st.insert(&d("b"), &e("ep000001"), 5, b"x").unwrap();
        assert_eq!(
            st.insert(&d("b"), &e("ep000001"), 5, b"y").unwrap(),
            Inserted::Conflict
        );
        // Another epoch is another counter.
        assert_eq!(
            st.insert(&d("a"), &e("ep000002"), 5, b"y").unwrap(),
            Inserted::New
        );
        // Another device with a longer id sharing a prefix stays apart.
        assert_eq!(
            st.insert(&d("a-1"), &e("ep000001"), 5, b"z").unwrap(),
            Inserted::New
        );
        assert!(st.conflicts_of(&d("a-1")).unwrap().is_empty());
    }

    #[test]
    fn seqs_from_stays_inside_the_epoch() {
        let (_d, s) = store();
        for seq in [3u64, 4, 9] {
            s.status.insert(&d("a"), &e("ep000001"), seq, b"x").unwrap();
        }
        s.status.insert(&d("a"), &e("ep000002"), 1, b"x").unwrap();
        assert_eq!(
            s.status.seqs_from(&d("a"), &e("ep000001"), 4, 10).unwrap(),
            vec![4, 9]
        );
        assert_eq!(
            s.status.seqs_from(&d("a"), &e("ep000001"), 0, 2).unwrap(),
            vec![3, 4]
        );
        assert!(s.status.is_stored(&d("a"), &e("ep000001"), 9).unwrap());
    }

    #[test]
    fn first_terminal_state_is_kept() {
        let (_d, s) = store();
        let st = &s.status;
        assert!(st
            .update_current(&d("a"), state(1, StatusState::Accepted))
            .unwrap()
            .is_some());
        // An older report does not win.
        assert!(st
            .update_current(&d("a"), state(0, StatusState::Downloading))
            .unwrap()
            .is_none());
        assert!(st
            .update_current(&d("a"), state(2, StatusState::Failed))
            .unwrap()
            .is_some());
        assert!(st
            .update_current(&d("a"), state(3, StatusState::Success))
            .unwrap()
            .is_none());
        let cur = st
            .current(&d("a"), &CampaignId::new("c1").unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(cur.state, StatusState::Failed);
        assert_eq!(st.currents_of(&d("a")).unwrap().len(), 1);
        assert_eq!(
            st.currents_of_campaign(&CampaignId::new("c1").unwrap())
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn epochs_round_trip() {
        let (_d, s) = store();
        let r = EpochRecord {
            epoch: e("ep000001"),
            base: 3,
            next: 7,
        };
        s.status.put_epoch(&d("a"), &r).unwrap();
        assert_eq!(s.status.epochs().unwrap(), vec![(d("a"), r)]);
    }
}
