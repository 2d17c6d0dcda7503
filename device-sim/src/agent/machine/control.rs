//! PROTOCOL.md E2 on the device: a Membership, Announcement or StatusAck
//! from a device provisioned with director keys is believed only when its
//! `auth` passes E2's checks, in E2's order (`schemas::control::verify`).
//! A refused payload is dropped: no event, so the device keeps what it
//! knew from that topic; the reason goes to the log, never into a Status.
//!
//! The last counter accepted per topic is part of the saved state
//! (`DeviceState::counters`), written before the device acts on the body
//! (the event's `Persist`), so a reboot does not reopen the door to an
//! older message. An empty payload keeps its v1 meaning unsigned (no
//! groups, no campaign): it can stop a campaign, never start one.

use schemas::control::{self, ControlBody, ControlError, Expect};
use schemas::msg::{Announcement, Membership, StatusAck};
use schemas::topic::Topic;

use super::Agent;
use crate::agent::event::Event;

/// Why a control payload became no event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// E2 refused it (the code is what the log says).
    #[error(transparent)]
    Control(#[from] ControlError),
    /// An empty StatusAck: nothing to read.
    #[error("empty ack")]
    EmptyAck,
    /// Not a topic that carries a control message.
    #[error("not a control topic")]
    NotControl,
}

impl Refused {
    /// The reason, for the log and the simulator's counters.
    pub fn code(&self) -> &'static str {
        match self {
            Refused::Control(e) => e.code(),
            Refused::EmptyAck => "empty ack",
            Refused::NotControl => "topic",
        }
    }
}

/// True for the topics whose payloads E2 signs.
pub fn is_control(topic: &Topic) -> bool {
    matches!(
        topic,
        Topic::Groups(_)
            | Topic::Ack(_)
            | Topic::GroupCampaign(_)
            | Topic::GroupEmergency(_)
            | Topic::Emergency
    )
}

impl Agent {
    /// True when the device checks control messages (E2): it holds at
    /// least one director key.
    pub fn checks_control(&self) -> bool {
        !self.cfg.directors.is_empty()
    }

    /// E2's checks on a control payload that arrived on `topic` (its exact
    /// string `raw_topic`) at `now_ms` (Unix milliseconds; 0: no clock).
    /// On success the topic's counter is kept (saved with the next
    /// `Persist`, which the event's handling emits) and the event to hand
    /// to [`Agent::handle`] is returned.
    pub fn admit(
        &mut self,
        now_ms: u64,
        topic: Topic,
        raw_topic: &str,
        payload: &[u8],
    ) -> Result<Event, Refused> {
        match topic {
            Topic::Groups(_) if payload.is_empty() => Ok(Event::Membership(Membership::default())),
            Topic::Groups(_) => self
                .check::<Membership>(now_ms, raw_topic, payload)
                .map(Event::Membership),
            Topic::GroupCampaign(_) | Topic::GroupEmergency(_) | Topic::Emergency
                if payload.is_empty() =>
            {
                Ok(Event::Announcement {
                    topic,
                    payload: None,
                })
            }
            Topic::GroupCampaign(_) | Topic::GroupEmergency(_) | Topic::Emergency => {
                let a = self.check::<Announcement>(now_ms, raw_topic, payload)?;
                Ok(Event::Announcement {
                    topic,
                    payload: Some(a),
                })
            }
            Topic::Ack(_) if payload.is_empty() => Err(Refused::EmptyAck),
            Topic::Ack(_) => self
                .check::<StatusAck>(now_ms, raw_topic, payload)
                .map(Event::Ack),
            _ => Err(Refused::NotControl),
        }
    }

    fn check<M: ControlBody>(
        &mut self,
        now_ms: u64,
        raw_topic: &str,
        payload: &[u8],
    ) -> Result<M, Refused> {
        let expect = Expect {
            topic: raw_topic,
            last_counter: self.state.counters.get(raw_topic).copied(),
            now: (now_ms > 0).then_some(now_ms / 1000),
        };
        let v = control::verify::<M>(payload, expect, &self.cfg.directors)?;
        if expect.last_counter != Some(v.stamp.counter) {
            self.state
                .counters
                .insert(raw_topic.to_string(), v.stamp.counter);
            self.dirty = true;
        }
        Ok(v.body)
    }
}
