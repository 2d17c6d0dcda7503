//! Group and device commands, and the JSON shapes of their results (which
//! the CLI reads back through the operator client). Reads borrow the
//! fleet (and the status store); changes borrow core's state, whose
//! membership publishing tells the campaigns.

use std::collections::BTreeMap;

use schemas::ops::MAX_PAGE;
use schemas::{DeviceId, GroupName};
use serde::{Deserialize, Serialize};

use super::OpsError;
use crate::fleet::Fleet;
use crate::fleet::{Group, GroupRecord};
use crate::state::CoreState;
use crate::store::Store;
use crate::store::{CurrentState, DeviceRecord};

/// A device as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceView {
    #[serde(flatten)]
    pub record: DeviceRecord,
    /// The groups it is in now.
    pub groups: Vec<GroupName>,
}

/// `device_list` result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceList {
    /// This page, by id.
    pub devices: Vec<DeviceView>,
    /// Devices in the whole listing.
    #[serde(default)]
    pub total: usize,
    /// Pass as `after` for the next page; `None` on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<DeviceId>,
    /// Devices that enrolled with the fleet token and wait for `ota
    /// devices accept` (first page of the whole fleet only, at most
    /// `MAX_PAGE`): in no group, counted in no campaign, not in `total`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<super::enrollment_cmds::PendingView>,
    /// Pending devices in all.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pending_total: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// `device_show` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceShow {
    pub device: DeviceView,
    /// Its state in each campaign it reported on.
    pub campaigns: Vec<CurrentState>,
    /// Reports kept aside because their seq was stored with other content.
    pub conflicts: usize,
}

/// A group as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupView {
    #[serde(flatten)]
    pub record: GroupRecord,
    /// Registered devices in it now.
    pub devices: usize,
}

/// `group_list` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupList {
    pub groups: Vec<GroupView>,
}

/// `group_put` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupPut {
    pub group: GroupView,
    /// True when it replaced a group of the same name.
    pub replaced: bool,
    /// Devices whose membership changed (and were sent it).
    pub membership_changed: usize,
    /// When the group's selector matched no device: the label keys the
    /// fleet has, each with up to [`LABEL_VALUES_SHOWN`] of its values, so
    /// the operator sees what a selector could match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fleet_labels: BTreeMap<String, Vec<String>>,
    /// Registered devices (filled with `fleet_labels`).
    #[serde(default)]
    pub registered: usize,
}

/// Values listed per label key in [`GroupPut::fleet_labels`].
pub const LABEL_VALUES_SHOWN: usize = 10;

/// Every label key of the fleet, with its first values in order.
fn fleet_labels(fleet: &Fleet) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, std::collections::BTreeSet<&str>> = BTreeMap::new();
    for d in fleet.devices() {
        for (k, v) in &d.labels {
            let values = match out.get_mut(k) {
                Some(v) => v,
                None => out.entry(k.to_string()).or_default(),
            };
            if values.len() < LABEL_VALUES_SHOWN {
                values.insert(v);
            }
        }
    }
    out.into_iter()
        .map(|(k, vs)| (k, vs.into_iter().map(str::to_string).collect()))
        .collect()
}

/// `group_delete` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupDelete {
    pub name: GroupName,
    pub membership_changed: usize,
}

fn to_json<T: Serialize>(v: &T) -> serde_json::Value {
    // Invariant: these result types hold strings, numbers, maps and lists.
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

fn view(fleet: &Fleet, r: &DeviceRecord) -> DeviceView {
    DeviceView {
        record: r.clone(),
        groups: fleet.groups_of(&r.id),
    }
}

fn group_view(fleet: &Fleet, g: &Group) -> GroupView {
    GroupView {
        record: g.to_record(),
        devices: fleet.count_in(&g.name),
    }
}

/// `group put NAME (--selector EXPR | --members a,b)`
pub async fn group_put(
    state: &mut CoreState,
    name: GroupName,
    selector: Option<String>,
    members: Option<Vec<DeviceId>>,
    now: u64,
) -> Result<serde_json::Value, OpsError> {
    let g = Group::new(name, selector.as_deref(), members.as_deref(), now)
        .map_err(|e| OpsError::Invalid(e.to_string()))?;
    let (replaced, membership_changed) = state.put_group(g.clone()).await?;
    let group = group_view(state.fleet(), &g);
    state
        .event(
            "group.put",
            format!(
                "group {} {} ({} devices)",
                g.name,
                if replaced { "replaced" } else { "created" },
                group.devices
            ),
            serde_json::json!({ "group": g.name, "devices": group.devices }),
        )
        .await?;
    let empty = group.devices == 0 && matches!(g.rule, crate::fleet::GroupRule::Selector(_));
    let (fleet_labels, registered) = if empty {
        (fleet_labels(state.fleet()), state.fleet().len())
    } else {
        (BTreeMap::new(), 0)
    };
    Ok(to_json(&GroupPut {
        group,
        replaced,
        membership_changed,
        fleet_labels,
        registered,
    }))
}

/// `group delete NAME`
pub async fn group_delete(
    state: &mut CoreState,
    name: GroupName,
) -> Result<serde_json::Value, OpsError> {
    if state.fleet_mut().remove_group(&name).is_none() {
        return Err(OpsError::NotFound(format!(
            "group {name} does not exist: see `ota group list`"
        )));
    }
    state.store().groups.delete(&name)?;
    let membership_changed = state.publish_pending_memberships().await?;
    state
        .event(
            "group.deleted",
            format!("group {name} deleted"),
            serde_json::json!({ "group": name }),
        )
        .await?;
    Ok(to_json(&GroupDelete {
        name,
        membership_changed,
    }))
}

/// `group list`
pub fn group_list(fleet: &Fleet) -> Result<serde_json::Value, OpsError> {
    let groups = fleet
        .groups()
        .iter()
        .map(|g| group_view(fleet, g))
        .collect();
    Ok(to_json(&GroupList { groups }))
}

/// A page of the devices in `group` (or all) that `keep` keeps (every
/// one without), by id (`devices list`, and the HTTP API with a label
/// filter). The page starts after the cursor `after` in the id-ordered
/// registry or group index: its cost is the page's, plus one pass to count
/// the total when a filter is given.
pub fn device_page(
    fleet: &Fleet,
    group: Option<&GroupName>,
    keep: Option<&dyn Fn(&DeviceRecord) -> bool>,
    after: Option<&DeviceId>,
    limit: Option<u32>,
) -> Result<DeviceList, OpsError> {
    let pass = |r: &DeviceRecord| keep.is_none_or(|k| k(r));
    let limit = limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE) as usize;
    let (total, page): (usize, Vec<&DeviceRecord>) = match group {
        None => (
            match keep {
                None => fleet.len(),
                Some(_) => fleet.devices().filter(|r| pass(r)).count(),
            },
            fleet
                .devices_after(after)
                .filter(|r| pass(r))
                .take(limit + 1)
                .collect(),
        ),
        Some(g) => {
            if fleet.groups().get(g).is_none() {
                return Err(OpsError::NotFound(format!(
                    "group {g} does not exist: see `ota group list`"
                )));
            }
            (
                match keep {
                    None => fleet.count_in(g),
                    Some(_) => fleet.devices_in_after(g, None).filter(|r| pass(r)).count(),
                },
                fleet
                    .devices_in_after(g, after)
                    .filter(|r| pass(r))
                    .take(limit + 1)
                    .collect(),
            )
        }
    };
    let more = page.len() > limit;
    let page = &page[..page.len().min(limit)];
    let next = if more {
        page.last().map(|r| r.id.clone())
    } else {
        None
    };
    let devices = page.iter().map(|r| view(fleet, r)).collect();
    Ok(DeviceList {
        devices,
        total,
        next,
        pending: Vec::new(),
        pending_total: 0,
    })
}

/// `devices show ID`
pub fn device_show(
    fleet: &Fleet,
    store: &Store,
    id: &DeviceId,
) -> Result<serde_json::Value, OpsError> {
    let Some(r) = fleet.device(id) else {
        return Err(OpsError::NotFound(format!(
            "device {id} is not registered: it has not said Hello to this bridge (check its id and its broker)"
        )));
    };
    let campaigns = store.status.currents_of(id)?;
    let conflicts = store.status.conflicts_of(id)?.len();
    Ok(to_json(&DeviceShow {
        device: view(fleet, r),
        campaigns,
        conflicts,
    }))
}

/// Labels (or versions) as `k=v,k=v`, for tables.
pub fn labels_text<K: std::fmt::Display, V: std::fmt::Display>(
    labels: impl IntoIterator<Item = (K, V)>,
) -> String {
    labels
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::members::tests::fleet;

    fn ids(l: &DeviceList) -> Vec<&str> {
        l.devices.iter().map(|d| d.record.id.as_str()).collect()
    }

    /// A page starts after its cursor, in the registry or a group's index,
    /// with or without a filter, and the last page says there is no next.
    #[test]
    fn pages_follow_the_cursor() {
        let f = fleet(&[("acme", 5), ("globex", 3)]);
        let all = device_page(&f, None, None, None, Some(3)).unwrap();
        assert_eq!(ids(&all), ["acme-000", "acme-001", "acme-002"]);
        assert_eq!(
            (all.total, all.next.as_ref().map(|d| d.as_str())),
            (8, Some("acme-002"))
        );
        let p2 = device_page(&f, None, None, all.next.as_ref(), Some(3)).unwrap();
        assert_eq!(ids(&p2), ["acme-003", "acme-004", "globex-000"]);
        let p3 = device_page(&f, None, None, p2.next.as_ref(), Some(3)).unwrap();
        assert_eq!(ids(&p3), ["globex-001", "globex-002"]);
        assert_eq!(p3.next, None);
        // A group, from a cursor that is not one of its devices.
        let g = GroupName::new("globex").unwrap();
        let after = DeviceId::new("b").unwrap();
        let p = device_page(&f, Some(&g), None, Some(&after), Some(2)).unwrap();
        assert_eq!((ids(&p), p.total), (vec!["globex-000", "globex-001"], 3));
        // A filter: esp32 only (the even ones), counted apart.
        let esp = |r: &DeviceRecord| r.arch == "esp32";
        let p = device_page(&f, None, Some(&esp), None, Some(4)).unwrap();
        assert_eq!(ids(&p), ["acme-000", "acme-002", "acme-004", "globex-000"]);
        assert_eq!(
            (p.total, p.next.as_ref().map(|d| d.as_str())),
            (5, Some("globex-000"))
        );
        let p = device_page(&f, None, Some(&esp), p.next.as_ref(), Some(4)).unwrap();
        assert_eq!(ids(&p), ["globex-002"]);
        assert_eq!(p.next, None);
        assert!(device_page(&f, Some(&GroupName::new("nope").unwrap()), None, None, None).is_err());
    }
}
