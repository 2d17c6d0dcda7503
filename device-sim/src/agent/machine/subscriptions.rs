//! Subscriptions the broker refused (PROTOCOL.md E1, and docs/protocol.md
//! "A refused subscription"): a SUBACK 0x80 for a topic the device still
//! wants is tried again after a back-off of 1 s doubling to 60 s, with
//! jitter, until the broker grants it; a grant ends the retries. A broker
//! whose grants were stale when the device connected (an ACL reloaded
//! later) then serves the device without a reconnect.
//!
//! The state is bounded: at most one entry per topic the device wants (its
//! own topics, its groups', the running download's), dropped when the
//! topic is granted or no longer wanted, and all of it on a new connection
//! (a clean session subscribes to everything again).

use schemas::topic::Topic;

use super::{Agent, Link};
use crate::agent::event::{Action, Notice, TimerId};
use crate::agent::pace::Backoff;

/// A refused topic and its back-off.
#[derive(Debug, Clone)]
pub(super) struct Refused {
    topic: Topic,
    /// Refusals in a row.
    attempt: u32,
    /// When to subscribe again; `None`: subscribed again, its SUBACK not
    /// in yet.
    due_ms: Option<u64>,
}

impl Agent {
    pub(super) fn on_subscribed(
        &mut self,
        now: u64,
        topic: Topic,
        granted: bool,
        out: &mut Vec<Action>,
    ) {
        let at = self.refused.iter().position(|r| r.topic == topic);
        if granted {
            if let Some(i) = at {
                let r = self.refused.remove(i);
                out.push(Action::Notice(Notice::SubscribeGranted {
                    topic,
                    refused: r.attempt,
                }));
            }
            return;
        }
        if self.link == Link::Offline || !self.wants(&topic) {
            // Unsubscribed meanwhile, or the SUBACK of a past connection.
            if let Some(i) = at {
                self.refused.remove(i);
            }
            return;
        }
        let attempt = at.map_or(0, |i| self.refused[i].attempt).saturating_add(1);
        let t = self.cfg.timing;
        let backoff = Backoff {
            min: std::time::Duration::from_millis(t.resubscribe_min_ms),
            max: std::time::Duration::from_millis(t.resubscribe_max_ms),
        };
        let wait = backoff.delay(attempt - 1, &mut self.rng).as_millis() as u64;
        let entry = Refused {
            topic: topic.clone(),
            attempt,
            due_ms: Some(now + wait),
        };
        match at {
            Some(i) => self.refused[i] = entry,
            None => self.refused.push(entry),
        }
        out.push(Action::Notice(Notice::SubscribeRefused {
            topic,
            attempt,
            retry_in_ms: wait,
        }));
        self.arm_resubscribe(out);
    }

    /// The back-off of some refused topics is over: subscribe to them again.
    pub(super) fn on_resubscribe(&mut self, now: u64, out: &mut Vec<Action>) {
        if self.link == Link::Offline {
            return;
        }
        self.forget_unwanted_refusals();
        for r in &mut self.refused {
            if r.due_ms.is_some_and(|at| at <= now) {
                r.due_ms = None;
                out.push(Action::Subscribe(r.topic.clone()));
            }
        }
        self.arm_resubscribe(out);
    }

    /// Drops the refusals of topics the device no longer wants (a group it
    /// left, a download that ended).
    pub(super) fn forget_unwanted_refusals(&mut self) {
        let wanted: Vec<bool> = self.refused.iter().map(|r| self.wants(&r.topic)).collect();
        let mut keep = wanted.into_iter();
        self.refused.retain(|_| keep.next().unwrap_or(false));
    }

    /// Sets the timer for the earliest back-off still running (a timer
    /// that fires early re-arms itself).
    fn arm_resubscribe(&self, out: &mut Vec<Action>) {
        if let Some(at) = self.refused.iter().filter_map(|r| r.due_ms).min() {
            out.push(Action::SetTimer {
                id: TimerId::Resubscribe,
                at_ms: at,
            });
        }
    }

    /// Whether the device subscribes to `topic` now (PROTOCOL.md
    /// "Topics": its own, the groups of its Membership, the artifact it
    /// downloads).
    fn wants(&self, topic: &Topic) -> bool {
        let id = &self.cfg.id;
        match topic {
            Topic::Groups(d) | Topic::DeviceBlocks(d) | Topic::Ack(d) => d == id,
            Topic::Emergency => true,
            Topic::GroupCampaign(g) | Topic::GroupEmergency(g) => self.groups.contains(g),
            Topic::ArtifactBlocks(a) => self.active.as_ref().is_some_and(|act| {
                self.state
                    .jobs
                    .iter()
                    .any(|j| j.campaign == act.campaign && &j.manifest.artifact == a)
            }),
            _ => false,
        }
    }
}
