//! What survives a restart: installed versions, the Status counter and its
//! outbox, the campaigns already reported terminal, and the accepted queue
//! (with each job's stage). Saved as one small JSON document by a
//! [`DeviceStore`](super::store::DeviceStore), which also keeps a partial
//! download's verified blocks and their bitmap beside it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand::Rng;
use schemas::bitmap::BlockSet;
use schemas::msg::Manifest;
use schemas::{CampaignId, ComponentName, Epoch};
use serde::{Deserialize, Serialize};

/// The state file's format version.
pub const STATE_FORMAT: u32 = 1;

/// The characters an epoch is drawn from (a subset of the id alphabet).
const EPOCH_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Everything a device keeps across a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceState {
    /// [`STATE_FORMAT`].
    pub format: u32,
    /// Installed version per component.
    pub versions: BTreeMap<ComponentName, String>,
    /// The Status counter and the unacknowledged reports.
    pub outbox: OutboxState,
    /// Campaigns already reported terminal: ignored from then on.
    pub done: BTreeSet<CampaignId>,
    /// Accepted campaigns, in accept order.
    pub jobs: Vec<Job>,
    /// E2: the last director counter accepted per topic (the exact topic
    /// string). Forgotten by a factory reset.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counters: BTreeMap<String, u64>,
}

impl DeviceState {
    /// A device's first boot (or a factory reset): a new epoch, and a seq
    /// counter that starts from the clock in Unix milliseconds (from 1 when
    /// the clock is unknown, i.e. `now_unix_ms == 0`).
    pub fn fresh(
        versions: BTreeMap<ComponentName, String>,
        now_unix_ms: u64,
        rng: &mut impl Rng,
    ) -> Self {
        Self {
            format: STATE_FORMAT,
            versions,
            outbox: OutboxState {
                epoch: new_epoch(rng),
                next_seq: now_unix_ms.max(1),
                entries: VecDeque::new(),
            },
            done: BTreeSet::new(),
            jobs: Vec::new(),
            counters: BTreeMap::new(),
        }
    }

    /// Reads a saved state, refusing another format.
    pub fn from_json(bytes: &[u8]) -> Result<Self, StateError> {
        let s: DeviceState = serde_json::from_slice(bytes).map_err(StateError::Parse)?;
        if s.format != STATE_FORMAT {
            return Err(StateError::Format(s.format));
        }
        Ok(s)
    }

    /// The saved form.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

/// A random epoch of 8 to 32 characters of the id alphabet.
pub fn new_epoch(rng: &mut impl Rng) -> Epoch {
    let len = rng.gen_range(8..=32);
    let s: String = (0..len)
        .map(|_| char::from(EPOCH_ALPHABET[rng.gen_range(0..EPOCH_ALPHABET.len())]))
        .collect();
    // Built from the alphabet above with a length in 8..=32: always valid.
    Epoch::new(s).unwrap_or_else(|_| unreachable!("epoch alphabet is valid"))
}

/// Why a saved state could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Not JSON of the expected shape.
    #[error(
        "state file is not a device state: {0}; remove it to start the device afresh (a new epoch)"
    )]
    Parse(#[source] serde_json::Error),
    /// Written by another version.
    #[error("state file has format {0}, this agent reads format {STATE_FORMAT}")]
    Format(u32),
}

/// The Status counter, its epoch and the reports not yet acknowledged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxState {
    /// Names this counter; new at first boot and factory reset.
    pub epoch: Epoch,
    /// The seq of the next Status.
    pub next_seq: u64,
    /// Unacknowledged Status payloads, oldest first, as published.
    pub entries: VecDeque<OutboxEntry>,
}

impl OutboxState {
    /// Hello's `outbox`: the lowest seq held, or the next seq when none is.
    pub fn low_water(&self) -> u64 {
        self.entries.front().map_or(self.next_seq, |e| e.seq)
    }

    /// The last seq used, if any.
    pub fn last_used(&self) -> Option<u64> {
        self.next_seq.checked_sub(1)
    }
}

/// One kept Status: its seq and exact bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxEntry {
    /// The Status's seq.
    pub seq: u64,
    /// The exact payload, resent as is.
    #[serde(with = "schemas::hex_bytes")]
    pub payload: Vec<u8>,
    /// When it was last published (same clock as `now_ms`); not saved.
    #[serde(skip)]
    pub published_at: Option<u64>,
}

/// How far an accepted campaign has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Accepted (maybe deferred), no block asked for yet.
    Waiting,
    /// Downloading, or stopped with the blocks it has (paused, pre-empted,
    /// offline).
    Downloading,
    /// Every block is verified; the whole image is being checked.
    Verifying,
    /// E3: the delta payload checked out; the target is being rebuilt.
    Rebuilding,
    /// Reported `downloaded` and `installing`; the installer runs.
    Installing,
    /// Firmware written, reported `rebooting`; the outcome comes after boot.
    Rebooting,
}

/// An accepted campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// The campaign.
    pub campaign: CampaignId,
    /// The verified manifest of what is downloaded: the picked release
    /// entry, or (E3) the delta manifest taken instead of it.
    #[serde(with = "manifest_hex")]
    pub manifest: Manifest,
    /// E3: when `manifest` is a delta, the picked release entry it
    /// rebuilds (installed in the end; taken instead if the delta no
    /// longer fits when the job's turn comes).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_manifest_hex"
    )]
    pub full: Option<Manifest>,
    /// Whether the campaign is an emergency (the latest announcement says).
    pub emergency: bool,
    /// The component's installed version when the device accepted.
    pub installed_at_accept: String,
    /// `deferred` was reported.
    pub deferred_reported: bool,
    /// Put off until then (same clock as `now_ms`).
    pub defer_until_ms: Option<u64>,
    /// How far it has come.
    pub stage: Stage,
    /// Download time without a new verified block, not counting time
    /// stopped (paused, waiting, offline).
    pub stalled_ms: u64,
    /// Verified blocks, loaded from the block store at boot.
    #[serde(skip)]
    pub have: Option<BlockSet>,
    /// When `downloading` was last reported.
    #[serde(skip)]
    pub last_progress_ms: Option<u64>,
}

mod manifest_hex {
    use schemas::msg::{Manifest, WireMessage};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(m: &Manifest, s: S) -> Result<S::Ok, S::Error> {
        schemas::hex_bytes::serialize(&m.encode(), s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Manifest, D::Error> {
        let b = schemas::hex_bytes::deserialize(d)?;
        Manifest::decode(&b).map_err(serde::de::Error::custom)
    }
}

mod opt_manifest_hex {
    use schemas::msg::Manifest;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(m: &Option<Manifest>, s: S) -> Result<S::Ok, S::Error> {
        match m {
            Some(m) => super::manifest_hex::serialize(m, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Manifest>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super::manifest_hex")] Manifest);
        Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn epochs_are_8_to_32_characters_of_the_alphabet() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let e = new_epoch(&mut rng);
            assert!((8..=32).contains(&e.as_str().len()));
        }
    }

    #[test]
    fn fresh_seq_starts_from_the_clock_or_1() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let s = DeviceState::fresh(BTreeMap::new(), 1_790_000_000_123, &mut rng);
        assert_eq!(s.outbox.next_seq, 1_790_000_000_123);
        let s = DeviceState::fresh(BTreeMap::new(), 0, &mut rng);
        assert_eq!(s.outbox.next_seq, 1);
        assert_eq!(s.outbox.low_water(), 1);
    }

    #[test]
    fn json_round_trip_and_refusals() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let mut s = DeviceState::fresh(
            [(ComponentName::new("main").unwrap(), "1.2.0".to_string())].into(),
            5,
            &mut rng,
        );
        s.outbox.entries.push_back(OutboxEntry {
            seq: 5,
            payload: vec![0xa1, 0x00],
            published_at: Some(3),
        });
        s.done.insert(CampaignId::new("c1").unwrap());
        let back = DeviceState::from_json(&s.to_json()).unwrap();
        assert_eq!(back.outbox.entries[0].published_at, None);
        assert_eq!(back.outbox.entries[0].payload, vec![0xa1, 0x00]);
        assert_eq!(back.versions, s.versions);
        assert!(matches!(
            DeviceState::from_json(b"{}"),
            Err(StateError::Parse(_))
        ));
        let mut other = s.clone();
        other.format = 99;
        assert!(matches!(
            DeviceState::from_json(&other.to_json()),
            Err(StateError::Format(99))
        ));
    }
}
