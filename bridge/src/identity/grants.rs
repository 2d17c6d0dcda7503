//! What each device may subscribe to beyond its own topics (PROTOCOL.md
//! E1): the campaign and emergency topics of the groups in its Membership,
//! and the block topics of the artifacts announced there or on
//! `P/emergency`.
//!
//! Grants follow what the bridge retains: [`Grants::observe`] is called
//! with every retained message before it is published (the publisher does
//! it), so a device holds a group's topics before the Membership that names
//! the group reaches it, and loses them with the Membership that drops it.
//! Pure state, no I/O.

use std::collections::{HashMap, HashSet};

use schemas::msg::{Membership, WireMessage};
use schemas::topic::Topic;
use schemas::{ArtifactId, DeviceId, GroupName};

use crate::fleet::{GroupList, GroupSets};
use crate::sharded::ShardedMap;

/// Where an announcement was retained.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Board {
    Campaign(GroupName),
    GroupEmergency(GroupName),
    Emergency,
}

/// Memberships and announced artifacts, as retained.
#[derive(Debug, Default)]
pub struct Grants {
    /// In shards: growing past 900,000 devices is not one long stall of
    /// core (and of the broker's checks that wait on the same lock).
    groups: ShardedMap<DeviceId, GroupList>,
    /// The distinct lists `groups` holds.
    lists: GroupSets,
    announced: HashMap<Board, Vec<ArtifactId>>,
}

impl Grants {
    /// Takes note of a retained message the bridge is about to publish.
    /// Other topics are ignored. A payload that does not decode grants
    /// nothing (and takes back what the topic granted before). Returns
    /// whether any grant changed (a re-signed copy of the same message
    /// changes none).
    pub fn observe(&mut self, topic: &Topic, payload: &[u8]) -> bool {
        match topic {
            Topic::Groups(id) => {
                let groups = if payload.is_empty() {
                    Vec::new()
                } else {
                    Membership::decode(payload)
                        .map(|m| m.groups)
                        .unwrap_or_default()
                };
                let before = if groups.is_empty() {
                    self.groups.remove(id)
                } else {
                    let list = self.lists.intern(&groups);
                    self.groups.insert(id.clone(), list)
                };
                before.as_deref().unwrap_or(&[]) != groups.as_slice()
            }
            Topic::GroupCampaign(g) => self.announce(Board::Campaign(g.clone()), payload),
            Topic::GroupEmergency(g) => self.announce(Board::GroupEmergency(g.clone()), payload),
            Topic::Emergency => self.announce(Board::Emergency, payload),
            _ => false,
        }
    }

    fn announce(&mut self, board: Board, payload: &[u8]) -> bool {
        let artifacts = announced_artifacts(payload);
        let before = if artifacts.is_empty() {
            self.announced.remove(&board)
        } else {
            self.announced.insert(board, artifacts.clone())
        };
        before.unwrap_or_default() != artifacts
    }

    /// The groups in the device's Membership.
    pub fn groups_of(&self, id: &DeviceId) -> &[GroupName] {
        self.groups.get(id).map(|l| &l[..]).unwrap_or(&[])
    }

    /// Is `g` in the device's Membership?
    pub fn in_group(&self, id: &DeviceId, g: &GroupName) -> bool {
        self.groups_of(id).contains(g)
    }

    /// Is `a` announced on a topic the device may subscribe to?
    pub fn may_fetch(&self, id: &DeviceId, a: &ArtifactId) -> bool {
        let has = |b: &Board| self.announced.get(b).is_some_and(|v| v.contains(a));
        has(&Board::Emergency)
            || self
                .groups_of(id)
                .iter()
                .any(|g| has(&Board::Campaign(g.clone())) || has(&Board::GroupEmergency(g.clone())))
    }

    /// Every device with a Membership (for an external broker's ACL file).
    pub fn members(&self) -> impl Iterator<Item = &DeviceId> {
        self.groups.keys()
    }

    /// The artifacts announced to the device: on `P/emergency` and on its
    /// groups' topics, each once.
    pub fn artifacts_of(&self, id: &DeviceId) -> Vec<ArtifactId> {
        let mut boards = vec![Board::Emergency];
        for g in self.groups_of(id) {
            boards.push(Board::Campaign(g.clone()));
            boards.push(Board::GroupEmergency(g.clone()));
        }
        let mut out: Vec<ArtifactId> = Vec::new();
        for a in boards
            .iter()
            .filter_map(|b| self.announced.get(b))
            .flatten()
        {
            if !out.contains(a) {
                out.push(a.clone());
            }
        }
        out
    }

    /// Every artifact announced anywhere (for counts and tests).
    pub fn announced(&self) -> HashSet<&ArtifactId> {
        self.announced.values().flatten().collect()
    }
}

/// The artifact ids of an Announcement's `release` and `deltas` entries,
/// read leniently (unverified: the bridge signed or checked them itself),
/// so that keys added to the Announcement (E2's `auth`, E3's `deltas`) do
/// not need this code to change.
pub fn announced_artifacts(payload: &[u8]) -> Vec<ArtifactId> {
    use ciborium::value::Value;
    let Ok(Value::Map(entries)) = ciborium::de::from_reader::<Value, _>(payload) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in entries {
        let (Value::Text(k), Value::Array(items)) = (k, v) else {
            continue;
        };
        if k != "release" && k != "deltas" {
            continue;
        }
        for item in items {
            if let Value::Bytes(envelope) = item {
                if let Some(a) = peek_artifact(&envelope) {
                    if !out.contains(&a) {
                        out.push(a);
                    }
                }
            }
        }
    }
    out
}

/// The unverified `artifact` of a release entry (a COSE_Sign1 manifest).
fn peek_artifact(envelope: &[u8]) -> Option<ArtifactId> {
    use ciborium::value::Value;
    let payload = schemas::cose::peek_payload(envelope)?;
    let Value::Map(entries) = ciborium::de::from_reader::<Value, _>(payload.as_slice()).ok()?
    else {
        return None;
    };
    entries.into_iter().find_map(|(k, v)| match (k, v) {
        (Value::Text(k), Value::Text(v)) if k == "artifact" => ArtifactId::new(v).ok(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::msg::manifest::sign;
    use schemas::msg::{Announcement, CampaignState, Kind, Manifest};
    use schemas::ComponentName;

    fn sample(arch: &str) -> Manifest {
        Manifest {
            artifact: ArtifactId::new(format!("fw-1.3.0-{arch}")).unwrap(),
            kind: Kind::Firmware,
            component: ComponentName::new("main").unwrap(),
            version: "1.3.0".into(),
            arch: arch.into(),
            size: 10_000,
            sha256: [7; 32],
            block_size: 4096,
            blocks: 3,
            merkle_root: [9; 32],
            created: 1_790_000_000,
            min_version: None,
            allow_downgrade: false,
            delta: None,
        }
    }

    fn announcement(arches: &[&str]) -> Vec<u8> {
        let key = schemas::keys::generate();
        Announcement {
            campaign: schemas::CampaignId::new("c1").unwrap(),
            kind: Kind::Firmware,
            release: arches.iter().map(|a| sign(&sample(a), &key)).collect(),
            cohort: 10_000,
            emergency: false,
            state: CampaignState::Active,
            deadline: None,
            deltas: Vec::new(),
        }
        .encode()
    }

    fn ids() -> (DeviceId, DeviceId, GroupName, ArtifactId) {
        (
            DeviceId::new("dev-1").unwrap(),
            DeviceId::new("dev-2").unwrap(),
            GroupName::new("acme").unwrap(),
            sample("esp32").artifact,
        )
    }

    #[test]
    fn membership_grants_the_group_and_its_artifacts() {
        let (d1, d2, g, a) = ids();
        let mut gr = Grants::default();
        let board = Topic::GroupCampaign(g.clone());
        assert!(gr.observe(&board, &announcement(&["esp32"])), "a change");
        assert!(
            !gr.observe(&board, &announcement(&["esp32"])),
            "the same again"
        );
        assert!(!gr.may_fetch(&d1, &a));
        let member = Membership {
            groups: vec![g.clone()],
        }
        .encode();
        assert!(gr.observe(&Topic::Groups(d1.clone()), &member));
        assert!(!gr.observe(&Topic::Groups(d1.clone()), &member));
        assert!(gr.in_group(&d1, &g));
        assert!(gr.may_fetch(&d1, &a));
        assert!(!gr.may_fetch(&d2, &a));
        assert!(!gr.may_fetch(&d1, &sample("armv7").artifact));
        // Leaving the group takes both back.
        assert!(gr.observe(&Topic::Groups(d1.clone()), &[]));
        assert!(!gr.observe(&Topic::Groups(d1.clone()), &[]));
        assert!(!gr.in_group(&d1, &g));
        assert!(!gr.may_fetch(&d1, &a));
    }

    #[test]
    fn a_cleared_announcement_takes_the_artifacts_back() {
        let (d1, _, g, a) = ids();
        let mut gr = Grants::default();
        gr.observe(
            &Topic::Groups(d1.clone()),
            &Membership {
                groups: vec![g.clone()],
            }
            .encode(),
        );
        gr.observe(&Topic::GroupEmergency(g.clone()), &announcement(&["esp32"]));
        assert!(gr.may_fetch(&d1, &a));
        gr.observe(&Topic::GroupEmergency(g), &[]);
        assert!(!gr.may_fetch(&d1, &a));
    }

    #[test]
    fn the_fleet_emergency_grants_everyone() {
        let (d1, d2, _, a) = ids();
        let mut gr = Grants::default();
        gr.observe(&Topic::Emergency, &announcement(&["esp32", "armv7"]));
        assert!(gr.may_fetch(&d1, &a));
        assert!(gr.may_fetch(&d2, &sample("armv7").artifact));
        assert_eq!(gr.announced().len(), 2);
    }

    #[test]
    fn garbage_grants_nothing() {
        let (d1, _, g, a) = ids();
        let mut gr = Grants::default();
        gr.observe(&Topic::Groups(d1.clone()), b"\xff\x00garbage");
        assert!(gr.groups_of(&d1).is_empty());
        gr.observe(&Topic::Emergency, b"\xa1\x67release\x81\x41\x00");
        assert!(!gr.may_fetch(&d1, &a));
        assert!(announced_artifacts(b"").is_empty());
        let _ = g;
    }
}
