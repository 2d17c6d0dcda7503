//! Every MQTT topic of the protocol and of the operator API, built and parsed
//! in one place. No other crate formats or splits a topic string.
//!
//! ```
//! use schemas::topic::{Topic, Topics};
//! use schemas::DeviceId;
//! let t = Topics::new("ota/v1").unwrap();
//! let id = DeviceId::new("dev-0001").unwrap();
//! let s = t.build(&Topic::Status(id.clone()));
//! assert_eq!(s, "ota/v1/devices/dev-0001/status");
//! assert_eq!(t.parse(&s).unwrap(), Topic::Status(id));
//! ```

use crate::ids::{ArtifactId, DeviceId, GroupName, NameError, RequestId};

/// A topic of the protocol, typed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// `P/devices/{id}/hello`: device → bridge, Hello.
    Hello(DeviceId),
    /// `P/devices/{id}/presence`: device → bridge (and its will), retained.
    Presence(DeviceId),
    /// `P/devices/{id}/groups`: bridge → device, Membership, retained.
    Groups(DeviceId),
    /// `P/devices/{id}/request`: device → bridge, BlockRequest.
    Request(DeviceId),
    /// `P/devices/{id}/blocks`: bridge → one device, Block.
    DeviceBlocks(DeviceId),
    /// `P/devices/{id}/status`: device → bridge, Status.
    Status(DeviceId),
    /// `P/devices/{id}/ack`: bridge → device, StatusAck, retained.
    Ack(DeviceId),
    /// `P/groups/{group}/campaign`: bridge → devices, Announcement, retained.
    GroupCampaign(GroupName),
    /// `P/groups/{group}/emergency`: bridge → devices, Announcement, retained.
    GroupEmergency(GroupName),
    /// `P/emergency`: bridge → every device, Announcement, retained.
    Emergency,
    /// `P/artifacts/{artifact}/blocks`: bridge → devices downloading it.
    ArtifactBlocks(ArtifactId),
    /// `P/ops/commands`: operator → bridge, signed JSON command.
    OpsCommands,
    /// `P/ops/replies/{request_id}`: bridge → operator, JSON reply.
    OpsReply(RequestId),
    /// `P/ops/events`: bridge → operators, JSON events.
    OpsEvents,
}

/// Why a topic string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic prefix {0:?} is not usable: use levels of [A-Za-z0-9._-] separated by '/', e.g. \"ota/v1\"")]
    BadPrefix(String),
    #[error("topic {0:?} is not under our prefix")]
    ForeignPrefix(String),
    #[error("topic {0:?} is not a topic of the ota protocol")]
    Unknown(String),
    #[error("topic {topic:?}: {source}")]
    BadName {
        topic: String,
        #[source]
        source: NameError,
    },
}

/// Subscription filters the bridge and devices use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// `P/devices/+/hello`
    AllHello,
    /// `P/devices/+/presence`
    AllPresence,
    /// `P/devices/+/request`
    AllRequests,
    /// `P/devices/+/status`
    AllStatus,
    /// `P/ops/commands`
    OpsCommands,
    /// `P/ops/events`
    OpsEvents,
    /// `P/artifacts/+/blocks`: every broadcast block (the bridge's own
    /// delivery probe).
    AllArtifactBlocks,
    /// `P/devices/+/groups`: every Membership (the bridge watches what it
    /// owns, to repair it).
    AllMemberships,
    /// `P/devices/+/ack`: every StatusAck (likewise).
    AllAcks,
    /// `P/groups/+/campaign`: every group's announcement (likewise).
    AllGroupCampaigns,
    /// `P/groups/+/emergency`: every group's emergency (likewise).
    AllGroupEmergencies,
    /// `P/emergency` (likewise).
    Emergency,
}

/// Builds and parses topics under one prefix (default `ota/v1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            prefix: crate::DEFAULT_PREFIX.to_string(),
        }
    }
}

impl Topics {
    /// A topic set under `prefix`: one or more levels of the name alphabet.
    pub fn new(prefix: impl Into<String>) -> Result<Self, TopicError> {
        let prefix = prefix.into();
        let ok = !prefix.is_empty() && prefix.split('/').all(crate::ids::is_valid_name);
        if !ok {
            return Err(TopicError::BadPrefix(prefix));
        }
        Ok(Self { prefix })
    }

    /// The prefix, e.g. `ota/v1`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The topic string of `t`.
    pub fn build(&self, t: &Topic) -> String {
        let p = &self.prefix;
        match t {
            Topic::Hello(id) => format!("{p}/devices/{id}/hello"),
            Topic::Presence(id) => format!("{p}/devices/{id}/presence"),
            Topic::Groups(id) => format!("{p}/devices/{id}/groups"),
            Topic::Request(id) => format!("{p}/devices/{id}/request"),
            Topic::DeviceBlocks(id) => format!("{p}/devices/{id}/blocks"),
            Topic::Status(id) => format!("{p}/devices/{id}/status"),
            Topic::Ack(id) => format!("{p}/devices/{id}/ack"),
            Topic::GroupCampaign(g) => format!("{p}/groups/{g}/campaign"),
            Topic::GroupEmergency(g) => format!("{p}/groups/{g}/emergency"),
            Topic::Emergency => format!("{p}/emergency"),
            Topic::ArtifactBlocks(a) => format!("{p}/artifacts/{a}/blocks"),
            Topic::OpsCommands => format!("{p}/ops/commands"),
            Topic::OpsReply(r) => format!("{p}/ops/replies/{r}"),
            Topic::OpsEvents => format!("{p}/ops/events"),
        }
    }

    /// The filter string of `f`.
    pub fn filter(&self, f: Filter) -> String {
        let p = &self.prefix;
        match f {
            Filter::AllHello => format!("{p}/devices/+/hello"),
            Filter::AllPresence => format!("{p}/devices/+/presence"),
            Filter::AllRequests => format!("{p}/devices/+/request"),
            Filter::AllStatus => format!("{p}/devices/+/status"),
            Filter::OpsCommands => format!("{p}/ops/commands"),
            Filter::OpsEvents => format!("{p}/ops/events"),
            Filter::AllArtifactBlocks => format!("{p}/artifacts/+/blocks"),
            Filter::AllMemberships => format!("{p}/devices/+/groups"),
            Filter::AllAcks => format!("{p}/devices/+/ack"),
            Filter::AllGroupCampaigns => format!("{p}/groups/+/campaign"),
            Filter::AllGroupEmergencies => format!("{p}/groups/+/emergency"),
            Filter::Emergency => format!("{p}/emergency"),
        }
    }

    /// Parses any topic of the protocol. A name outside the alphabet is an
    /// error ([`TopicError::BadName`]), as is a topic we do not know.
    pub fn parse(&self, topic: &str) -> Result<Topic, TopicError> {
        let rest = topic
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| TopicError::ForeignPrefix(clip(topic)))?;
        let levels: Vec<&str> = rest.split('/').collect();
        let bad = |source: NameError| TopicError::BadName {
            topic: clip(topic),
            source,
        };
        let t = match levels.as_slice() {
            ["devices", id, leaf] => {
                let id = DeviceId::new(*id).map_err(bad)?;
                match *leaf {
                    "hello" => Topic::Hello(id),
                    "presence" => Topic::Presence(id),
                    "groups" => Topic::Groups(id),
                    "request" => Topic::Request(id),
                    "blocks" => Topic::DeviceBlocks(id),
                    "status" => Topic::Status(id),
                    "ack" => Topic::Ack(id),
                    _ => return Err(TopicError::Unknown(clip(topic))),
                }
            }
            ["groups", g, "campaign"] => Topic::GroupCampaign(GroupName::new(*g).map_err(bad)?),
            ["groups", g, "emergency"] => Topic::GroupEmergency(GroupName::new(*g).map_err(bad)?),
            ["emergency"] => Topic::Emergency,
            ["artifacts", a, "blocks"] => Topic::ArtifactBlocks(ArtifactId::new(*a).map_err(bad)?),
            ["ops", "commands"] => Topic::OpsCommands,
            ["ops", "replies", r] => Topic::OpsReply(RequestId::new(*r).map_err(bad)?),
            ["ops", "events"] => Topic::OpsEvents,
            _ => return Err(TopicError::Unknown(clip(topic))),
        };
        Ok(t)
    }
}

/// Topics come from the network: keep error messages short.
fn clip(s: &str) -> String {
    s.chars().take(160).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(t: &Topics) -> Vec<Topic> {
        let d = DeviceId::new("dev-1").unwrap();
        let g = GroupName::new("acme").unwrap();
        let a = ArtifactId::new("fw-1.2.0-esp32").unwrap();
        let r = RequestId::new("req-1").unwrap();
        let _ = t;
        vec![
            Topic::Hello(d.clone()),
            Topic::Presence(d.clone()),
            Topic::Groups(d.clone()),
            Topic::Request(d.clone()),
            Topic::DeviceBlocks(d.clone()),
            Topic::Status(d.clone()),
            Topic::Ack(d),
            Topic::GroupCampaign(g.clone()),
            Topic::GroupEmergency(g),
            Topic::Emergency,
            Topic::ArtifactBlocks(a),
            Topic::OpsCommands,
            Topic::OpsReply(r),
            Topic::OpsEvents,
        ]
    }

    #[test]
    fn build_then_parse_is_identity() {
        for prefix in ["ota/v1", "plant-7/ota/v1", "x"] {
            let t = Topics::new(prefix).unwrap();
            for topic in all(&t) {
                let s = t.build(&topic);
                assert_eq!(t.parse(&s).unwrap(), topic, "{s}");
            }
        }
    }

    #[test]
    fn spec_table_strings() {
        let t = Topics::default();
        let d = DeviceId::new("dev-0001").unwrap();
        assert_eq!(
            t.build(&Topic::Hello(d.clone())),
            "ota/v1/devices/dev-0001/hello"
        );
        assert_eq!(t.build(&Topic::Ack(d)), "ota/v1/devices/dev-0001/ack");
        assert_eq!(t.build(&Topic::Emergency), "ota/v1/emergency");
        assert_eq!(
            t.build(&Topic::GroupEmergency(GroupName::new("g").unwrap())),
            "ota/v1/groups/g/emergency"
        );
        assert_eq!(t.filter(Filter::AllStatus), "ota/v1/devices/+/status");
        assert_eq!(
            t.filter(Filter::AllArtifactBlocks),
            "ota/v1/artifacts/+/blocks"
        );
    }

    #[test]
    fn refuses_bad_topics() {
        let t = Topics::default();
        assert!(matches!(
            t.parse("other/devices/a/hello"),
            Err(TopicError::ForeignPrefix(_))
        ));
        assert!(matches!(
            t.parse("ota/v1x/devices/a/hello"),
            Err(TopicError::ForeignPrefix(_))
        ));
        assert!(matches!(
            t.parse("ota/v1/devices/a/reboot"),
            Err(TopicError::Unknown(_))
        ));
        assert!(matches!(
            t.parse("ota/v1/devices/a/b/hello"),
            Err(TopicError::Unknown(_))
        ));
        assert!(matches!(
            t.parse("ota/v1/devices//hello"),
            Err(TopicError::BadName { .. })
        ));
        assert!(matches!(
            t.parse("ota/v1/devices/a+b/hello"),
            Err(TopicError::BadName { .. })
        ));
        assert!(matches!(
            t.parse(&format!("ota/v1/devices/{}/status", "x".repeat(65))),
            Err(TopicError::BadName { .. })
        ));
        assert!(Topics::new("").is_err());
        assert!(Topics::new("ota/").is_err());
        assert!(Topics::new("ota/#").is_err());
    }
}
