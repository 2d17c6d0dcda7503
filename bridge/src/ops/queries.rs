//! Read-only queries from the HTTP listener (`http`): asked on
//! core's bounded query inbox ([`INBOX`]), answered by core between its
//! other work with the shapes the CLI's `--json` prints (`campaign list`,
//! `campaign status`, `devices list`), plus the fleet's counts. Nothing
//! here changes state; no query is signed or audited.
//!
//! The asker never waits on a full inbox (`try_send`): a busy core answers
//! "busy", it is not queued behind.

use std::collections::BTreeMap;

use schemas::{CampaignId, DeviceId, GroupName};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::fleet_cmds::{self, DeviceList};
use super::OpsError;
use crate::campaign::roster::{MemberFilter, MemberPage};
use crate::campaign::view::{CampaignList, CampaignStatus};
use crate::fleet::selector::Selector;
use crate::fleet::Fleet;
use crate::state::CoreState;
use crate::store::DeviceRecord;

/// Queries waiting at core at most; more are refused as busy.
pub const INBOX: usize = 16;

/// One query and where its answer goes.
#[derive(Debug)]
pub struct Query {
    pub ask: Ask,
    pub reply: oneshot::Sender<Result<Answer, OpsError>>,
    /// When it was asked: core's wait is measured from here.
    pub asked: std::time::Instant,
}

/// What is asked.
#[derive(Debug, Clone)]
pub enum Ask {
    /// [`FleetCounts`].
    Fleet,
    /// A page of devices.
    Devices(DeviceFilter),
    /// `group list`.
    Groups,
    /// `campaign list`.
    Campaigns,
    /// `campaign status ID`.
    Campaign(CampaignId),
    /// A page of a campaign's members.
    Members(CampaignId, MemberFilter),
}

/// A page of `devices list`, narrowed.
#[derive(Debug, Clone, Default)]
pub struct DeviceFilter {
    /// Only the devices in this group.
    pub group: Option<GroupName>,
    /// Only the devices whose labels match.
    pub labels: Option<Selector>,
    /// Only this arch.
    pub arch: Option<String>,
    /// Only those online (`true`) or offline (`false`).
    pub online: Option<bool>,
    /// Only those with this (component, installed version).
    pub version: Option<(String, String)>,
    /// The page starts after this id.
    pub after: Option<DeviceId>,
    /// At most this many (clamped to `schemas::ops::MAX_PAGE`).
    pub limit: Option<u32>,
}

impl DeviceFilter {
    /// True when no filter but the group is given (every device passes).
    pub fn keeps_all(&self) -> bool {
        self.labels.is_none()
            && self.arch.is_none()
            && self.online.is_none()
            && self.version.is_none()
    }

    /// Whether `r` passes every filter but the group.
    pub fn keeps(&self, r: &DeviceRecord) -> bool {
        self.labels.as_ref().is_none_or(|s| s.matches(&r.labels))
            && self.arch.as_ref().is_none_or(|a| &r.arch == a)
            && self.online.is_none_or(|o| r.online == o)
            && self
                .version
                .as_ref()
                .is_none_or(|(c, v)| r.versions.get(c) == Some(v.as_str()))
    }
}

/// The answer, typed by what was asked.
#[derive(Debug)]
pub enum Answer {
    Fleet(FleetCounts),
    Devices(DeviceList),
    /// `group list`'s JSON.
    Groups(serde_json::Value),
    Campaigns(CampaignList),
    Campaign(Box<CampaignStatus>),
    Members(MemberPage),
}

/// The registry in numbers (`/api/v1/fleet`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FleetCounts {
    /// Devices that said Hello.
    pub registered: usize,
    /// Of those, online now (their last Presence).
    pub online: usize,
    pub by_arch: BTreeMap<String, ArchCounts>,
    /// Component → installed version → devices.
    pub by_version: BTreeMap<String, BTreeMap<String, usize>>,
    pub groups: usize,
}

/// Devices of one arch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ArchCounts {
    pub devices: usize,
    pub online: usize,
}

/// The counts, in one pass over the registry.
pub fn fleet_counts(fleet: &Fleet) -> FleetCounts {
    let mut c = FleetCounts {
        groups: fleet.groups().len(),
        ..FleetCounts::default()
    };
    for d in fleet.devices() {
        c.registered += 1;
        let arch = match c.by_arch.get_mut(&d.arch) {
            Some(a) => a,
            None => c.by_arch.entry(d.arch.clone()).or_default(),
        };
        arch.devices += 1;
        if d.online {
            c.online += 1;
            arch.online += 1;
        }
        for (component, version) in &d.versions {
            let versions = match c.by_version.get_mut(component) {
                Some(v) => v,
                None => c.by_version.entry(component.to_string()).or_default(),
            };
            match versions.get_mut(version) {
                Some(n) => *n += 1,
                None => {
                    versions.insert(version.to_string(), 1);
                }
            }
        }
    }
    c
}

/// Answers one query from core's state.
pub async fn answer(state: &mut CoreState, ask: Ask, now: u64) -> Result<Answer, OpsError> {
    match ask {
        Ask::Fleet => Ok(Answer::Fleet(fleet_counts(state.fleet()))),
        Ask::Devices(f) => {
            let keep = |r: &crate::store::DeviceRecord| f.keeps(r);
            Ok(Answer::Devices(fleet_cmds::device_page(
                state.fleet(),
                f.group.as_ref(),
                (!f.keeps_all()).then_some(&keep as &dyn Fn(&_) -> bool),
                f.after.as_ref(),
                f.limit,
            )?))
        }
        Ask::Groups => Ok(Answer::Groups(fleet_cmds::group_list(state.fleet())?)),
        Ask::Campaigns => {
            let (_, c) = state.campaigns_mut();
            Ok(Answer::Campaigns(c.list()))
        }
        Ask::Campaign(id) => {
            let (ctx, c) = state.campaigns_mut();
            Ok(Answer::Campaign(Box::new(c.status(&ctx, &id, now).await?)))
        }
        Ask::Members(id, f) => {
            let (ctx, c) = state.campaigns_mut();
            Ok(Answer::Members(c.members(&ctx, &id, &f, now).await?))
        }
    }
}
