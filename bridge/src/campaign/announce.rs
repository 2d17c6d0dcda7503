//! From the gate's announcement to the retained messages devices read:
//! one [`schemas::msg::Announcement`] per group whose cohort is above 0,
//! on `P/groups/{g}/campaign` (emergency false) or, for the emergency lane,
//! `P/groups/{g}/emergency` (emergency true); an emergency to every device
//! goes on `P/emergency`. Every topic of a campaign carries the same
//! `state` and `emergency` (PROTOCOL.md step 0), with one exception: a
//! group outside its maintenance window is announced `paused` while the
//! campaign is `active` elsewhere (a device in two groups of the campaign
//! with different windows follows the one it received last).
//!
//! Groups still at cohort 0 get nothing: no device of theirs takes part
//! yet, and the topic may still carry an earlier, completed campaign that
//! devices which were offline can finish.

use schemas::msg::{Announcement, CampaignState};
use schemas::topic::Topic;
use schemas::GroupName;

use super::gate::{self, AnnounceState};
use super::record::{wire_kind, CampaignRecord};
use super::spec::{CampaignSpec, FULL_COHORT};

/// The wire state of an announcement state.
pub fn wire_state(s: AnnounceState) -> CampaignState {
    match s {
        AnnounceState::Active => CampaignState::Active,
        AnnounceState::Paused => CampaignState::Paused,
        AnnounceState::Aborted => CampaignState::Aborted,
    }
}

/// The topic of one target group for this campaign.
pub fn group_topic(emergency: bool, group: GroupName) -> Topic {
    if emergency {
        Topic::GroupEmergency(group)
    } else {
        Topic::GroupCampaign(group)
    }
}

/// The retained (topic, announcement) pairs that say `a` (the publisher
/// signs each for its topic, E2).
pub fn messages(record: &CampaignRecord, a: &gate::Announcement) -> Vec<(Topic, Announcement)> {
    let emergency = record.is_emergency();
    let payload = |cohort: u16, state: AnnounceState| Announcement {
        campaign: record.id().clone(),
        kind: wire_kind(record.release.kind),
        release: record.release.manifests(),
        cohort,
        emergency,
        state: wire_state(state),
        deadline: a.deadline,
        deltas: record.release.delta_manifests(),
    };
    if emergency && a.cohorts.is_empty() {
        return vec![(Topic::Emergency, payload(FULL_COHORT, a.state))];
    }
    a.cohorts
        .iter()
        .filter(|(_, &c)| c > 0)
        .map(|(g, &c)| (group_topic(emergency, g.clone()), payload(c, a.state_on(g))))
        .collect()
}

/// Every topic a campaign may announce on over its life: the topics of
/// all its target groups (or `P/emergency`).
pub fn topics(spec: &CampaignSpec) -> Vec<Topic> {
    let emergency = spec.emergency;
    let groups = spec.target_groups();
    if emergency && groups.is_empty() {
        return vec![Topic::Emergency];
    }
    groups
        .into_iter()
        .map(|g| group_topic(emergency, g))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::gate::{Gate, Input};
    use crate::campaign::record::{Release, ReleaseEntry};
    use crate::campaign::spec::{Kind, WaveSpec};
    use schemas::{ArtifactId, CampaignId, ComponentName};

    fn record(emergency: bool, waves: &[&[(&str, u16)]]) -> CampaignRecord {
        let spec = CampaignSpec {
            emergency,
            ..CampaignSpec::new(
                CampaignId::new("c1").unwrap(),
                Kind::Firmware,
                vec![ArtifactId::new("fw-esp32").unwrap()],
                waves.iter().map(|w| WaveSpec::of(w)).collect(),
            )
        };
        CampaignRecord {
            release: Release {
                kind: Kind::Firmware,
                component: ComponentName::new("main").unwrap(),
                version: "2.0.0".into(),
                entries: vec![ReleaseEntry {
                    artifact: ArtifactId::new("fw-esp32").unwrap(),
                    arch: "esp32".into(),
                    size: 10,
                    blocks: 1,
                    manifest: vec![0xd2, 0x84],
                }],
                deltas: Vec::new(),
            },
            created: 0,
            preflight: Default::default(),
            gate: Gate::new(&spec).unwrap(),
            waves: Default::default(),
            rollback: None,
            rollback_child: None,
            spec,
        }
    }

    #[test]
    fn groups_at_zero_get_nothing_and_state_is_shared() {
        let mut r = record(false, &[&[("canary", 10000)], &[("acme", 1000)]]);
        r.gate.step(100, Input::Start).unwrap();
        let a = r.gate.announcement().unwrap();
        let m = messages(&r, &a);
        assert_eq!(m.len(), 1, "acme is still at 0");
        assert_eq!(
            m[0].0,
            Topic::GroupCampaign(GroupName::new("canary").unwrap())
        );
        let ann = m[0].1.clone();
        assert_eq!(
            (ann.cohort, ann.emergency, ann.state, ann.deadline),
            (10000, false, CampaignState::Active, Some(700))
        );
        assert_eq!(ann.release, vec![vec![0xd2, 0x84]]);
        r.gate.step(101, Input::Pause).unwrap();
        let a = r.gate.announcement().unwrap();
        assert!(messages(&r, &a)
            .iter()
            .all(|(_, p)| p.state == CampaignState::Paused));
        assert_eq!(topics(&r.spec).len(), 2);
    }

    #[test]
    fn emergencies_use_their_own_topics() {
        let mut r = record(true, &[&[("acme", 10000), ("globex", 10000)]]);
        r.gate.step(100, Input::Start).unwrap();
        let m = messages(&r, &r.gate.announcement().unwrap());
        assert_eq!(
            m.iter().map(|(t, _)| t.clone()).collect::<Vec<_>>(),
            vec![
                Topic::GroupEmergency(GroupName::new("acme").unwrap()),
                Topic::GroupEmergency(GroupName::new("globex").unwrap())
            ]
        );
        assert!(m.iter().all(|(_, p)| p.emergency));
        let mut all = record(true, &[]);
        all.gate.step(100, Input::Start).unwrap();
        let m = messages(&all, &all.gate.announcement().unwrap());
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].0, Topic::Emergency);
        assert_eq!(topics(&all.spec), vec![Topic::Emergency]);
    }
}
