//! A campaign's members one by one (`/api/v1/campaigns/{id}/members`):
//! each member of the current wave with its latest state, error and the
//! device's own detail text, paged by id and narrowed by outcome, so that
//! an operator sees which devices failed and why. Pure: the tally, the
//! fleet and a detail lookup come in.

use schemas::msg::common::Outcome;
use schemas::ops::MAX_PAGE;
use schemas::DeviceId;
use serde::{Deserialize, Serialize};

use super::tally::{Report, Tally, NO_REPORT};
use crate::fleet::Fleet;

/// Which members a page lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemberOutcome {
    Success,
    Failure,
    NotApplicable,
    /// No terminal state yet (nothing sent, downloading, rebooting...).
    Pending,
}

impl MemberOutcome {
    /// The class the tally counts a member with `report` in (`None`: sent
    /// nothing): an anomaly is a failure.
    pub fn of(tally: &Tally, report: Option<&Report>) -> MemberOutcome {
        match report.and_then(|r| tally.outcome(r)) {
            None => MemberOutcome::Pending,
            Some(Outcome::Success) => MemberOutcome::Success,
            Some(Outcome::Failure) => MemberOutcome::Failure,
            Some(Outcome::NotApplicable) => MemberOutcome::NotApplicable,
        }
    }

    /// From the word the API takes.
    pub fn parse(s: &str) -> Result<MemberOutcome, String> {
        serde_json::from_value(serde_json::Value::String(s.to_string()))
            .map_err(|_| format!("{s:?}: use success, failure, not_applicable or pending"))
    }
}

/// Which page of members.
#[derive(Debug, Clone, Default)]
pub struct MemberFilter {
    pub outcome: Option<MemberOutcome>,
    /// The page starts after this id.
    pub after: Option<DeviceId>,
    /// At most this many (clamped to [`MAX_PAGE`]).
    pub limit: Option<u32>,
}

/// One member and where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MemberView {
    pub id: DeviceId,
    pub outcome: MemberOutcome,
    /// Its latest state in the campaign (`none`: it sent nothing yet).
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the device said about it (its Status `detail`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// When the bridge stored that state (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<u64>,
    /// The device's arch and presence, when it is registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    pub online: bool,
    /// The version of the campaign's component it runs now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installed: Option<String>,
}

/// A page of members, by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MemberPage {
    pub members: Vec<MemberView>,
    /// Members that pass the filter, over every page.
    pub total: usize,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<DeviceId>,
}

/// The page of `tally`'s members that `filter` asks for; `detail` reads a
/// member's stored detail text (called for the page's members only).
pub fn page(
    tally: &Tally,
    fleet: &Fleet,
    component: &str,
    filter: &MemberFilter,
    detail: impl Fn(&DeviceId) -> Option<String>,
) -> MemberPage {
    let mut all: Vec<(&DeviceId, Option<&Report>)> = tally
        .members()
        .iter()
        .map(|d| (d, tally.get(d)))
        .filter(|(_, r)| {
            filter
                .outcome
                .is_none_or(|o| MemberOutcome::of(tally, *r) == o)
        })
        .collect();
    all.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let total = all.len();
    let limit = filter.limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE) as usize;
    let start = filter
        .after
        .as_ref()
        .map_or(0, |a| all.partition_point(|(d, _)| *d <= a));
    let shown = &all[start.min(total)..(start + limit).min(total)];
    let next = (start + shown.len() < total)
        .then(|| shown.last().map(|(d, _)| (*d).clone()))
        .flatten();
    let members = shown
        .iter()
        .map(|(d, r)| {
            let device = fleet.device(d);
            MemberView {
                id: (*d).clone(),
                outcome: MemberOutcome::of(tally, *r),
                state: r.map_or(NO_REPORT, |r| r.state.as_str()).to_string(),
                error: r.and_then(|r| r.error).map(|e| e.as_str().to_string()),
                detail: r.and_then(|_| detail(d)),
                at: r.map(|r| r.at),
                arch: device.map(|x| x.arch.clone()),
                online: device.is_some_and(|x| x.online),
                installed: device.and_then(|x| x.versions.get(component).map(str::to_string)),
            }
        })
        .collect();
    MemberPage {
        members,
        total,
        next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::device as id;
    use schemas::msg::{ErrorCode, StatusState};

    fn tally() -> Tally {
        let mut t = Tally::new();
        t.set_members((1..=5).map(|i| id(&format!("d{i}"))).collect());
        let r = |state, error| Report::new(state, error, None, 7);
        t.report(&id("d1"), r(StatusState::Success, None));
        t.report(
            &id("d2"),
            r(StatusState::Failed, Some(ErrorCode::HashMismatch)),
        );
        t.report(
            &id("d3"),
            r(StatusState::Failed, Some(ErrorCode::IncompatibleArch)),
        );
        t.report(&id("d4"), r(StatusState::Downloading, None));
        // Not a member: never listed.
        t.report(&id("x9"), r(StatusState::Failed, None));
        t
    }

    #[test]
    fn lists_members_by_outcome_with_their_detail() {
        let t = tally();
        let fleet = Fleet::default();
        let f = MemberFilter {
            outcome: Some(MemberOutcome::Failure),
            ..MemberFilter::default()
        };
        let p = page(&t, &fleet, "main", &f, |d| Some(format!("{d} broke")));
        assert_eq!(p.total, 1);
        assert_eq!(p.members[0].id, id("d2"));
        assert_eq!(p.members[0].error.as_deref(), Some("hash_mismatch"));
        assert_eq!(p.members[0].detail.as_deref(), Some("d2 broke"));
        let all = page(&t, &fleet, "main", &MemberFilter::default(), |_| None);
        let outcomes: Vec<_> = all.members.iter().map(|m| m.outcome).collect();
        use MemberOutcome::*;
        assert_eq!(
            outcomes,
            [Success, Failure, NotApplicable, Pending, Pending]
        );
        assert_eq!(all.members[4].state, NO_REPORT);
        assert_eq!(all.members[4].at, None);
    }

    #[test]
    fn pages_by_id() {
        let t = tally();
        let fleet = Fleet::default();
        let mut f = MemberFilter {
            limit: Some(2),
            ..MemberFilter::default()
        };
        let mut seen = Vec::new();
        loop {
            let p = page(&t, &fleet, "main", &f, |_| None);
            assert_eq!(p.total, 5);
            seen.extend(p.members.iter().map(|m| m.id.to_string()));
            match p.next {
                Some(n) => f.after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, ["d1", "d2", "d3", "d4", "d5"]);
        f.after = Some(id("zzz"));
        assert!(page(&t, &fleet, "main", &f, |_| None).members.is_empty());
    }

    #[test]
    fn outcome_words() {
        assert_eq!(
            MemberOutcome::parse("not_applicable"),
            Ok(MemberOutcome::NotApplicable)
        );
        assert!(MemberOutcome::parse("broken")
            .unwrap_err()
            .contains("pending"));
    }
}
