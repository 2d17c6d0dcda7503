//! The moves of an attacker who holds one provisioned device's login
//! (issue 12), and the checks that they changed nothing, shared by the
//! attacker tests against an in-process bridge (`bridge/tests/acl.rs`)
//! and the real `ota serve` (`tests/cli_acl.rs`).

use rumqttc::{QoS, SubscribeReasonCode};
use schemas::msg::WireMessage;
use schemas::msg::{Announcement, ErrorCode, Membership, Status, StatusAck, StatusState};
use schemas::topic::{Topic, Topics};
use schemas::{CampaignId, ComponentName, DeviceId, GroupName};

use crate::raw::{Got, RawClient, RawError};

/// The payload of every forged announcement.
pub const FORGED: &[u8] = b"forged";

/// Filters a device may not subscribe to (PROTOCOL.md E1): everything, the
/// operators' topics, every device's Status, the `victim`'s Membership and
/// acks, and the campaign topic of `group`, which the attacker is not in.
pub fn forbidden_filters(t: &Topics, victim: &DeviceId, group: &GroupName) -> Vec<String> {
    let p = t.prefix();
    vec![
        "#".to_string(),
        format!("{p}/ops/#"),
        t.build(&Topic::OpsCommands),
        format!("{p}/devices/+/status"),
        t.build(&Topic::Groups(victim.clone())),
        t.build(&Topic::Ack(victim.clone())),
        t.build(&Topic::GroupCampaign(group.clone())),
    ]
}

/// One attack: who the attacker is, whom it impersonates, the group it
/// is not in and the campaign that runs meanwhile.
pub struct Scene {
    pub port: u16,
    pub topics: Topics,
    /// The attacker's own (provisioned) device id.
    pub me: DeviceId,
    /// The device it reports as.
    pub victim: DeviceId,
    /// The victim's group, and the campaign sent to it.
    pub group: GroupName,
    pub campaign: CampaignId,
    /// A provisioned device of `group`, not yet registered, that logs in
    /// at the end to read what is retained (its id, password, customer
    /// label).
    pub member: (DeviceId, String, String),
}

impl Scene {
    /// Subscribes to every forbidden filter and to its own Membership in
    /// one SUBSCRIBE. `Ok(n)` when each of the `n` forbidden filters got
    /// the failure code 0x80 and its own Membership was granted.
    pub async fn subscribe_everywhere(&self, attacker: &mut RawClient) -> Result<usize, String> {
        let t = &self.topics;
        let mut filters = forbidden_filters(t, &self.victim, &self.group);
        let n = filters.len();
        filters.push(t.build(&Topic::Groups(self.me.clone())));
        let (codes, _) = attacker
            .subscribe(&filters)
            .await
            .map_err(|e| e.to_string())?;
        let mut want = vec![SubscribeReasonCode::Failure; n];
        want.push(SubscribeReasonCode::Success(QoS::AtLeastOnce));
        if codes != want {
            return Err(format!("SUBACK {codes:?} for {filters:?}"));
        }
        Ok(n)
    }

    /// Reports as the victim, retained, during the campaign: a `failed`
    /// Status (heard, it would count against the campaign's gates) and a
    /// StatusAck far ahead (heard, the victim would drop its unsent
    /// reports). Two publishes.
    pub async fn forge_reports(&self, attacker: &RawClient) -> Result<(), RawError> {
        let t = &self.topics;
        let status = Status {
            seq: 1,
            campaign: Some(self.campaign.clone()),
            artifact: None,
            state: StatusState::Failed,
            progress: None,
            error: Some(ErrorCode::InstallFailed),
            detail: None,
            versions: [(
                ComponentName::new("main").expect("a component name"),
                "1.0.0".to_string(),
            )]
            .into(),
        };
        let victim = &self.victim;
        attacker
            .publish(
                &t.build(&Topic::Status(victim.clone())),
                true,
                status.encode(),
            )
            .await?;
        let ack = StatusAck { seq: 1_000_000 };
        attacker
            .publish(&t.build(&Topic::Ack(victim.clone())), true, ack.encode())
            .await
    }

    /// After the campaign: retained garbage on the group's campaign topic
    /// and `P/emergency` (two publishes), then the checks: every one of
    /// the attacker's `publishes` is acked (none resent forever), the
    /// retained announcement is still the campaign's, and through all of
    /// it the attacker heard nothing but its own Membership.
    pub async fn forge_announcements_and_check(
        &self,
        attacker: &mut RawClient,
        publishes: usize,
    ) -> Result<(), String> {
        let t = &self.topics;
        for topic in [Topic::GroupCampaign(self.group.clone()), Topic::Emergency] {
            attacker
                .publish(&t.build(&topic), true, FORGED.to_vec())
                .await
                .map_err(|e| e.to_string())?;
        }
        let mut heard = attacker
            .pubacks(publishes)
            .await
            .map_err(|e| e.to_string())?;
        let (id, password, customer) = &self.member;
        let a = retained_announcement(self.port, (id, password), customer, t, &self.group).await?;
        if a.campaign != self.campaign {
            return Err(format!("the retained announcement is {}'s", a.campaign));
        }
        heard.extend(attacker.drain());
        heard_only(&heard, &t.build(&Topic::Groups(self.me.clone())))
    }
}

/// What a device that joins `group` now reads: logs in as `id`, says
/// Hello (customer `customer`), waits for its Membership naming `group`,
/// then subscribes to `P/emergency` and the group's campaign topic, in
/// that order, and returns the retained announcement. A forged retained
/// emergency would come before it: that is an error.
async fn retained_announcement(
    port: u16,
    (id, password): (&DeviceId, &str),
    customer: &str,
    t: &Topics,
    group: &GroupName,
) -> Result<Announcement, String> {
    let e = |e: RawError| e.to_string();
    let mut member = RawClient::login(port, id.as_str(), password)
        .await
        .map_err(e)?;
    let groups = t.build(&Topic::Groups(id.clone()));
    member
        .subscribe(std::slice::from_ref(&groups))
        .await
        .map_err(e)?;
    member.hello(t, id, customer).await.map_err(e)?;
    member
        .until(|g| match g {
            Got::Publish { topic, payload } if *topic == groups => {
                Membership::decode_retained(payload)
                    .ok()
                    .filter(|m| m.groups.contains(group))
            }
            _ => None,
        })
        .await
        .map_err(e)?;
    let emergency = t.build(&Topic::Emergency);
    let campaign = t.build(&Topic::GroupCampaign(group.clone()));
    let (codes, mut before) = member
        .subscribe(&[emergency.clone(), campaign.clone()])
        .await
        .map_err(e)?;
    if codes != [SubscribeReasonCode::Success(QoS::AtLeastOnce); 2] {
        return Err(format!("a member was refused its topics: {codes:?}"));
    }
    let (payload, more) = member
        .until(|g| match g {
            Got::Publish { topic, payload } if *topic == campaign => Some(payload.clone()),
            _ => None,
        })
        .await
        .map_err(e)?;
    before.extend(more);
    if before
        .iter()
        .any(|g| matches!(g, Got::Publish { topic, payload } if *topic == emergency && payload == FORGED))
    {
        return Err("the forged emergency was retained".into());
    }
    Announcement::decode_retained(&payload)
        .map_err(|e| format!("the retained announcement does not decode: {e}"))?
        .ok_or_else(|| "no announcement is retained".to_string())
}

/// Every publish in `got` was on `own` (the attacker's own Membership),
/// or the first one that was not.
fn heard_only(got: &[Got], own: &str) -> Result<(), String> {
    match got
        .iter()
        .find(|g| matches!(g, Got::Publish { topic, .. } if topic != own))
    {
        Some(Got::Publish { topic, .. }) => Err(format!("the attacker heard {topic}")),
        _ => Ok(()),
    }
}
