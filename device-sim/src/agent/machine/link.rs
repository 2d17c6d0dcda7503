//! The connection, Hello and the Status outbox (step 9): keep every Status's
//! exact bytes until a StatusAck covers its seq; after a reconnect wait for
//! an ack or 2 s, then resend what is uncovered, oldest first, before any
//! new Status; resend whenever the oldest uncovered one waited 30 s.

use schemas::msg::{Presence, WireMessage};
use schemas::topic::Topic;

use super::{hello, Agent, Link};
use crate::agent::event::{Action, Notice, TimerId};

impl Agent {
    pub(super) fn on_connected(&mut self, now: u64, out: &mut Vec<Action>) {
        // A clean session: subscriptions are gone, and retained messages
        // come again. What this device held from the announcement topics is
        // dropped, so an announcement withdrawn while it was offline (the
        // broker keeps no empty retained message) does not linger.
        self.link = Link::Resync;
        self.groups.clear();
        self.held.clear();
        self.refused.clear();
        let id = self.cfg.id.clone();
        for t in [
            Topic::Groups(id.clone()),
            Topic::DeviceBlocks(id.clone()),
            Topic::Ack(id.clone()),
            Topic::Emergency,
        ] {
            out.push(Action::Subscribe(t));
        }
        out.push(Action::Publish {
            topic: Topic::Presence(id),
            payload: Presence { online: true }.encode(),
            retain: true,
        });
        self.publish_hello(out);
        let at = now + self.cfg.timing.resend_wait_ms;
        self.resend_wait_until = Some(at);
        out.push(Action::SetTimer {
            id: TimerId::ResendWait,
            at_ms: at,
        });
        self.reconcile(now, out);
    }

    pub(super) fn on_disconnected(&mut self, now: u64, out: &mut Vec<Action>) {
        self.link = Link::Offline;
        self.resend_wait_until = None;
        self.refused.clear();
        self.suspend(now, out);
    }

    /// Publishes Hello (on connect, and after an in-place install).
    pub(super) fn publish_hello(&mut self, out: &mut Vec<Action>) {
        if self.link == Link::Offline {
            return;
        }
        out.push(Action::Publish {
            topic: Topic::Hello(self.cfg.id.clone()),
            payload: hello(self).encode(),
            retain: false,
        });
    }

    pub(super) fn on_ack(&mut self, now: u64, seq: u64, out: &mut Vec<Action>) {
        let above = self.state.outbox.last_used().is_none_or(|last| seq > last);
        if above {
            out.push(Action::Notice(Notice::AckIgnored { seq }));
            return;
        }
        let mut covered = Vec::new();
        while let Some(front) = self.state.outbox.entries.front() {
            if front.seq > seq {
                break;
            }
            covered.push(front.seq);
            self.state.outbox.entries.pop_front();
        }
        if !covered.is_empty() {
            self.dirty = true;
            out.push(Action::Notice(Notice::Acked { seqs: covered }));
        }
        if self.link == Link::Resync {
            self.go_online(now, out);
        }
    }

    pub(super) fn on_resend_wait(&mut self, now: u64, out: &mut Vec<Action>) {
        if self.link == Link::Resync && self.resend_wait_until.is_some_and(|at| now >= at) {
            self.go_online(now, out);
        }
    }

    pub(super) fn on_resend(&mut self, now: u64, out: &mut Vec<Action>) {
        if self.link != Link::Online {
            return;
        }
        let every = self.cfg.timing.resend_every_ms;
        match self.state.outbox.entries.front().map(|e| e.published_at) {
            None => {}
            Some(Some(at)) if now < at + every => out.push(Action::SetTimer {
                id: TimerId::Resend,
                at_ms: at + every,
            }),
            Some(_) => self.resend_all(now, out),
        }
    }

    /// The wait after a reconnect is over: resend everything uncovered.
    fn go_online(&mut self, now: u64, out: &mut Vec<Action>) {
        self.link = Link::Online;
        self.resend_wait_until = None;
        self.resend_all(now, out);
    }

    fn resend_all(&mut self, now: u64, out: &mut Vec<Action>) {
        self.persist_if_dirty(out);
        for i in 0..self.state.outbox.entries.len() {
            self.publish_entry(now, i, out);
        }
        self.arm_resend(out);
    }

    pub(super) fn publish_entry(&mut self, now: u64, i: usize, out: &mut Vec<Action>) {
        let id = self.cfg.id.clone();
        if let Some(e) = self.state.outbox.entries.get_mut(i) {
            e.published_at = Some(now);
            out.push(Action::Publish {
                topic: Topic::Status(id),
                payload: e.payload.clone(),
                retain: false,
            });
        }
    }

    /// Sets the resend timer for the oldest entry (a timer that fires
    /// early re-arms itself).
    pub(super) fn arm_resend(&mut self, out: &mut Vec<Action>) {
        if let Some(Some(at)) = self.state.outbox.entries.front().map(|e| e.published_at) {
            out.push(Action::SetTimer {
                id: TimerId::Resend,
                at_ms: at + self.cfg.timing.resend_every_ms,
            });
        }
    }
}
