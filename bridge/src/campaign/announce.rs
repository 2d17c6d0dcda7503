//! From the gate's announcement to the retained messages devices read:
//! one [`schemas::msg::Announcement`] per group whose cohort is above 0,
//! on `P/groups/{g}/campaign` (emergency false) or, for the emergency lane,
//! `P/groups/{g}/emergency` (emergency true); an emergency to every device
//! goes on `P/emergency`. Every topic of a campaign carries the same
//! `state` and `emergency` (PROTOCOL.md step 0).
//!
//! Groups still at cohort 0 get nothing: no device of theirs takes part
//! yet, and the topic may still carry an earlier, completed campaign that
//! devices which were offline can finish.

use schemas::msg::{Announcement, CampaignState, WireMessage};
use schemas::topic::Topic;
use schemas::GroupName;

use super::gate::{self, AnnounceState};
use super::record::{wire_kind, CampaignRecord};
use super::spec::FULL_COHORT;

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

/// The retained (topic, payload) pairs that say `a`.
pub fn messages(record: &CampaignRecord, a: &gate::Announcement) -> Vec<(Topic, Vec<u8>)> {
    let emergency = record.is_emergency();
    let payload = |cohort: u16| {
        Announcement {
            campaign: record.id().clone(),
            kind: wire_kind(record.release.kind),
            release: record.release.manifests(),
            cohort,
            emergency,
            state: wire_state(a.state),
            deadline: a.deadline,
        }
        .encode()
    };
    if emergency && a.cohorts.is_empty() {
        return vec![(Topic::Emergency, payload(FULL_COHORT))];
    }
    a.cohorts
        .iter()
        .filter(|(_, &c)| c > 0)
        .map(|(g, &c)| (group_topic(emergency, g.clone()), payload(c)))
        .collect()
}

/// Every topic the campaign may announce on over its life: the topics of
/// all its target groups (or `P/emergency`).
pub fn topics(record: &CampaignRecord) -> Vec<Topic> {
    let emergency = record.is_emergency();
    let groups = record.spec.target_groups();
    if emergency && groups.is_empty() {
        return vec![Topic::Emergency];
    }
    groups
        .into_iter()
        .map(|g| group_topic(emergency, g))
        .collect()
}
