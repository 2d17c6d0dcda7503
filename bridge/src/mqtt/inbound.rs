//! What the event loop hands to the actors: an incoming publish with its
//! parsed topic and the PUBACK it still owes, and the routing table that
//! says which actor owns which topic.

use bytes::Bytes;
use rumqttc::QoS;
use schemas::topic::Topic;
use tokio::sync::mpsc;

/// A PUBACK owed to the broker, sent by whoever finishes the message's work
/// (manual acks). `generation` names the connection it came on: an ack for
/// a previous connection is not sent, because packet ids start over and the
/// broker redelivers the message on the new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckToken {
    pub(crate) pkid: u16,
    pub(crate) qos: QoS,
    pub(crate) generation: u64,
}

impl AckToken {
    /// A token that owes nothing (QoS 0, or a message made up in-process).
    pub fn none() -> Self {
        Self {
            pkid: 0,
            qos: QoS::AtMostOnce,
            generation: 0,
        }
    }
}

/// An incoming publish on a topic of the protocol.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub topic: Topic,
    pub payload: Bytes,
    /// True when the broker delivered it as a retained message.
    pub retain: bool,
    pub ack: AckToken,
    /// When the event loop read it (before any queue): core's wait is
    /// measured from here.
    pub arrived: std::time::Instant,
}

/// Which actor owns a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Hello and Status: the status ingest actor (Hello first, for epochs).
    Ingest,
    /// Presence and operator commands: the core actor.
    Core,
    /// BlockRequests: the block server.
    Blocks,
    /// The retained topics the bridge owns (Membership, StatusAck,
    /// announcements), as the broker holds them: the repair actor.
    Repair,
}

impl Target {
    /// The owner of an incoming topic; `None` for topics the bridge only
    /// publishes (a device echoing one of them is bad input).
    pub fn of(topic: &Topic) -> Option<Target> {
        match topic {
            Topic::Hello(_) | Topic::Status(_) => Some(Target::Ingest),
            Topic::Presence(_) | Topic::OpsCommands => Some(Target::Core),
            Topic::Request(_) => Some(Target::Blocks),
            Topic::Groups(_)
            | Topic::Ack(_)
            | Topic::GroupCampaign(_)
            | Topic::GroupEmergency(_)
            | Topic::Emergency => Some(Target::Repair),
            _ => None,
        }
    }
}

/// The actors' inboxes.
#[derive(Clone)]
pub struct Routes {
    pub ingest: mpsc::Sender<Incoming>,
    /// Presence and commands; the core actor also has an internal inbox
    /// (Hellos and status changes from the ingest actor).
    pub core: mpsc::Sender<Incoming>,
    /// Absent until the block server runs: requests are then dropped,
    /// counted as `unrouted`, and acknowledged.
    pub blocks: Option<mpsc::Sender<Incoming>>,
    /// Absent when the bridge does not watch its retained topics: they
    /// are then not subscribed to.
    pub repair: Option<mpsc::Sender<Incoming>>,
}

/// A reserved slot in one actor's inbox.
pub(crate) enum Permit<'a> {
    Ingest(mpsc::Permit<'a, Incoming>),
    Core(mpsc::Permit<'a, Incoming>),
    Blocks(mpsc::Permit<'a, Incoming>),
    Repair(mpsc::Permit<'a, Incoming>),
}

impl Permit<'_> {
    pub(crate) fn send(self, m: Incoming) {
        match self {
            Permit::Ingest(p) => p.send(m),
            Permit::Core(p) => p.send(m),
            Permit::Blocks(p) => p.send(m),
            Permit::Repair(p) => p.send(m),
        }
    }
}

/// Why a message could not be handed over now.
pub(crate) enum HandOff {
    /// The inbox is full: keep it and retry.
    Full(Incoming),
    /// The owner is gone (shutting down) or does not exist.
    NoOwner(Incoming),
}

impl Routes {
    /// Hands `m` to its owner without waiting.
    pub(crate) fn try_send(&self, target: Target, m: Incoming) -> Result<(), HandOff> {
        fn map<T>(e: mpsc::error::TrySendError<T>, back: impl FnOnce(T) -> Incoming) -> HandOff {
            match e {
                mpsc::error::TrySendError::Full(t) => HandOff::Full(back(t)),
                mpsc::error::TrySendError::Closed(t) => HandOff::NoOwner(back(t)),
            }
        }
        match target {
            Target::Ingest => self.ingest.try_send(m).map_err(|e| map(e, |m| m)),
            Target::Core => self.core.try_send(m).map_err(|e| map(e, |m| m)),
            Target::Blocks => match &self.blocks {
                Some(tx) => tx.try_send(m).map_err(|e| map(e, |m| m)),
                None => Err(HandOff::NoOwner(m)),
            },
            Target::Repair => match &self.repair {
                Some(tx) => tx.try_send(m).map_err(|e| map(e, |m| m)),
                None => Err(HandOff::NoOwner(m)),
            },
        }
    }

    /// Waits for room in `target`'s inbox. `None` when the owner is gone.
    pub(crate) async fn reserve(&self, target: Target) -> Option<Permit<'_>> {
        match target {
            Target::Ingest => self.ingest.reserve().await.ok().map(Permit::Ingest),
            Target::Core => self.core.reserve().await.ok().map(Permit::Core),
            Target::Blocks => match &self.blocks {
                Some(tx) => tx.reserve().await.ok().map(Permit::Blocks),
                None => None,
            },
            Target::Repair => match &self.repair {
                Some(tx) => tx.reserve().await.ok().map(Permit::Repair),
                None => None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::{DeviceId, GroupName};

    #[test]
    fn owners() {
        let d = DeviceId::new("d").unwrap();
        assert_eq!(Target::of(&Topic::Hello(d.clone())), Some(Target::Ingest));
        assert_eq!(Target::of(&Topic::Status(d.clone())), Some(Target::Ingest));
        assert_eq!(Target::of(&Topic::Presence(d.clone())), Some(Target::Core));
        assert_eq!(Target::of(&Topic::OpsCommands), Some(Target::Core));
        assert_eq!(Target::of(&Topic::Request(d.clone())), Some(Target::Blocks));
        // The bridge's own retained topics go to the repair actor.
        assert_eq!(Target::of(&Topic::Ack(d.clone())), Some(Target::Repair));
        assert_eq!(Target::of(&Topic::Groups(d.clone())), Some(Target::Repair));
        assert_eq!(
            Target::of(&Topic::GroupCampaign(GroupName::new("g").unwrap())),
            Some(Target::Repair)
        );
        assert_eq!(Target::of(&Topic::Emergency), Some(Target::Repair));
        // What it only sends and never owns as retained: nobody's.
        assert_eq!(Target::of(&Topic::DeviceBlocks(d)), None);
        assert_eq!(Target::of(&Topic::OpsEvents), None);
    }
}
