//! PUBACKs in the order the broker sent the messages.
//!
//! rumqttd 0.20 treats a PUBACK that does not acknowledge its oldest
//! unacknowledged delivery as a protocol error and drops the connection
//! ("out of order ack", `router/iobufs.rs`). With manual acks, a Status is
//! acknowledged only after its group commit while a BlockRequest that came
//! after it is done at once, so acks must be put back in delivery order:
//! each delivery is registered as it arrives, marked done when its work is
//! finished, and released only once every delivery before it is done too.
//! MQTT 3.1.1 also asks for this order (§4.6).

use std::collections::VecDeque;
use std::sync::Mutex;

/// Deliveries awaiting their PUBACK, in arrival order, for one connection.
#[derive(Debug, Default)]
pub struct AckOrder {
    inner: Mutex<Queue>,
}

#[derive(Debug, Default)]
struct Queue {
    generation: u64,
    /// (pkid, done) in delivery order.
    pending: VecDeque<(u16, bool)>,
    /// Done at the head, not yet handed to the client (its queue was full).
    ready: VecDeque<u16>,
}

impl AckOrder {
    /// Records a QoS 1 delivery on connection `generation`. A new
    /// generation forgets the old connection's deliveries: the broker
    /// redelivers them, and their packet ids start over.
    pub fn register(&self, generation: u64, pkid: u16) {
        let mut q = self.lock();
        if q.generation != generation {
            q.generation = generation;
            q.pending.clear();
            q.ready.clear();
        }
        q.pending.push_back((pkid, false));
    }

    /// Marks a delivery done. Returns false when it belongs to an older
    /// connection (nothing to send).
    pub fn complete(&self, generation: u64, pkid: u16) -> bool {
        let mut q = self.lock();
        if q.generation != generation {
            return false;
        }
        if let Some(e) = q.pending.iter_mut().find(|(p, done)| *p == pkid && !*done) {
            e.1 = true;
        }
        while let Some(&(p, true)) = q.pending.front() {
            q.pending.pop_front();
            q.ready.push_back(p);
        }
        true
    }

    /// Hands the releasable acks to `send` in order, stopping at the first
    /// it refuses (kept for the next call).
    pub fn drain(&self, mut send: impl FnMut(u16) -> bool) {
        let mut q = self.lock();
        while let Some(&p) = q.ready.front() {
            if !send(p) {
                break;
            }
            q.ready.pop_front();
        }
    }

    /// Deliveries not yet acknowledged (waiting or ready).
    pub fn outstanding(&self) -> usize {
        let q = self.lock();
        q.pending.len() + q.ready.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A panic while holding this lock leaves plain data behind: go on.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(o: &AckOrder) -> Vec<u16> {
        let mut v = Vec::new();
        o.drain(|p| {
            v.push(p);
            true
        });
        v
    }

    #[test]
    fn later_work_waits_for_earlier_work() {
        let o = AckOrder::default();
        for p in [1, 2, 3] {
            o.register(1, p);
        }
        assert!(o.complete(1, 3));
        assert!(o.complete(1, 2));
        assert_eq!(sent(&o), Vec::<u16>::new());
        o.complete(1, 1);
        assert_eq!(sent(&o), vec![1, 2, 3]);
        assert_eq!(o.outstanding(), 0);
    }

    #[test]
    fn a_refused_send_is_kept_in_order() {
        let o = AckOrder::default();
        o.register(1, 7);
        o.register(1, 8);
        o.complete(1, 7);
        o.complete(1, 8);
        let mut first = true;
        o.drain(|_| std::mem::take(&mut first));
        assert_eq!(sent(&o), vec![8]);
    }

    #[test]
    fn a_new_connection_forgets_the_old_one() {
        let o = AckOrder::default();
        o.register(1, 1);
        o.register(2, 1);
        assert!(!o.complete(1, 1));
        assert!(o.complete(2, 1));
        assert_eq!(sent(&o), vec![1]);
    }
}
