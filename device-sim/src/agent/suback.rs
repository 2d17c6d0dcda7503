//! What the broker answered to the device's subscriptions, for the I/O
//! loop: SUBACKs back to the topics subscribed, and the log of refusals,
//! once per interval.
//!
//! rumqttc's `try_subscribe` does not say which packet id it will use; it
//! tells it later, as `Outgoing::Subscribe(pkid)`, when the SUBSCRIBE is
//! written. Its request channel keeps order, so the topics handed to it,
//! in order, are matched to those events one by one; the SUBACK names the
//! packet id. One filter per SUBSCRIBE (the agent asks for one at a time).
//! Everything here belongs to one connection ([`Subacks::reset`]).

use std::collections::{HashMap, VecDeque};

use rumqttc::{SubAck, SubscribeReasonCode};
use schemas::topic::{Topic, Topics};
use tracing::{info, warn};

use super::event::{Event, Notice};

/// SUBSCRIBEs without a SUBACK yet, at most. A broker that never answers
/// would otherwise grow the map; past this a subscription goes untracked
/// (its refusal unnoticed, as before the retries existed).
const MAX_PENDING: usize = 1024;

/// How often a device logs refused subscriptions, at most.
const LOG_EVERY_MS: u64 = 60_000;

/// The subscriptions of one connection awaiting their SUBACK.
#[derive(Debug, Default)]
pub(super) struct Subacks {
    /// Handed to the client, packet id not known yet, oldest first.
    handed: VecDeque<Topic>,
    /// Written, by packet id.
    sent: HashMap<u16, Topic>,
}

impl Subacks {
    /// A new connection: the old client and what it held are gone.
    pub fn reset(&mut self) {
        self.handed.clear();
        self.sent.clear();
    }

    /// `topic` was handed to the client (`try_subscribe` took it). These
    /// are as many as the client's bounded request channel holds, until
    /// it writes them.
    pub fn handed(&mut self, topic: Topic) {
        self.handed.push_back(topic);
    }

    /// The client wrote the next SUBSCRIBE, with packet id `pkid`.
    pub fn sent(&mut self, pkid: u16) {
        if let Some(t) = self.handed.pop_front() {
            if self.sent.len() < MAX_PENDING {
                self.sent.insert(pkid, t);
            }
        }
    }

    /// The broker's SUBACK: the agent's event, if the SUBSCRIBE was ours.
    pub fn acked(&mut self, ack: &SubAck) -> Option<Event> {
        let topic = self.sent.remove(&ack.pkid)?;
        let granted = !matches!(
            ack.return_codes.first(),
            Some(SubscribeReasonCode::Failure) | None
        );
        Some(Event::Subscribed { topic, granted })
    }
}

/// Refused subscriptions, logged once per interval with how many there
/// were since the last line.
#[derive(Debug, Default)]
pub(super) struct RefusalLog {
    last_ms: Option<u64>,
    since: u64,
}

impl RefusalLog {
    /// Logs `n` (a `SubscribeRefused` or `SubscribeGranted`) at `now_ms`.
    pub fn note(&mut self, device: &str, topics: &Topics, now_ms: u64, n: &Notice) {
        match n {
            Notice::SubscribeRefused {
                topic,
                attempt,
                retry_in_ms,
            } => {
                self.since += 1;
                if self
                    .last_ms
                    .is_some_and(|at| now_ms.saturating_sub(at) < LOG_EVERY_MS)
                {
                    return;
                }
                warn!(
                    device,
                    topic = %topics.build(topic),
                    attempt,
                    retry_in_ms,
                    refusals = self.since,
                    "subscription refused by the broker (SUBACK 0x80): its topic ACL does not \
                     grant it yet; retrying with back-off (refusals counts those since the last \
                     such line)"
                );
                self.since = 0;
                self.last_ms = Some(now_ms);
            }
            Notice::SubscribeGranted { topic, refused } => {
                info!(
                    device,
                    topic = %topics.build(topic),
                    refused,
                    "subscription granted after refusals"
                )
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use rumqttc::QoS;
    use schemas::GroupName;

    use super::*;

    fn granted(e: Option<Event>) -> Option<(Topic, bool)> {
        match e? {
            Event::Subscribed { topic, granted } => Some((topic, granted)),
            _ => None,
        }
    }

    #[test]
    fn subacks_find_their_topics_by_packet_id_in_any_order() {
        let g = Topic::GroupCampaign(GroupName::new("line-1").unwrap());
        let mut s = Subacks::default();
        s.handed(Topic::Emergency);
        s.handed(g.clone());
        s.sent(7);
        s.sent(8);
        let refused = SubAck::new(8, vec![SubscribeReasonCode::Failure]);
        assert_eq!(granted(s.acked(&refused)), Some((g, false)));
        let ok = SubAck::new(7, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
        assert_eq!(granted(s.acked(&ok)), Some((Topic::Emergency, true)));
        // Twice, or never sent: not ours.
        assert_eq!(granted(s.acked(&ok)), None);
        s.handed(Topic::Emergency);
        s.reset();
        s.sent(9);
        assert_eq!(granted(s.acked(&SubAck::new(9, vec![]))), None);
    }

    #[test]
    fn subscriptions_never_acked_are_bounded() {
        let mut s = Subacks::default();
        for pkid in 0..(MAX_PENDING as u16 + 50) {
            s.handed(Topic::Emergency);
            s.sent(pkid);
        }
        assert_eq!(s.sent.len(), MAX_PENDING);
        assert!(s.handed.is_empty());
    }
}
