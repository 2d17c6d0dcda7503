//! The director key (PROTOCOL.md E2): the bridge's online key that signs
//! every Membership, Announcement and StatusAck it publishes, so that a
//! device provisioned with its public key believes only the bridge about
//! *who, when and how*, whoever else can publish on the broker.
//!
//! The counter is one for all topics: the greater of the last one + 1 and
//! the clock in milliseconds (`schemas::control::next_counter`). It never
//! goes backwards across restarts: before signing with a counter above
//! what the store has reserved, the director reserves [`RESERVE_MS`] more
//! and flushes ([`crate::store::CounterStore`]), so every counter it ever
//! signed is at most the stored reservation, and a restarted bridge starts
//! above it. With the clock as the counter that is one fsync an hour.
//!
//! `expires` is `issued` + `[bridge] control_ttl_secs`; core re-signs and
//! republishes its retained Memberships and Announcements every tenth of
//! that ([`Director::refresh_interval`]).

use std::sync::Mutex;
use std::time::Duration;

use schemas::control::{self, ControlBody, Stamp};
use schemas::keys::{kid, Kid, SigningKey, VerifyingKey};
use schemas::msg::{Announcement, Membership, StatusAck, WireMessage};
use schemas::topic::Topic;

use crate::store::{CounterStore, StoreError};

/// How far ahead of the clock (in counter units, milliseconds) a
/// reservation goes.
pub const RESERVE_MS: u64 = 3_600_000;

/// Threads [`par_map`] runs on, at most.
pub const SIGNING_THREADS: usize = 4;

/// Fewer messages than this are signed on the calling thread (and core
/// signs them inline, without a trip to the blocking pool).
pub const PARALLEL_FROM: usize = 64;

/// `f` of every item, in order, on up to [`SIGNING_THREADS`] threads (the
/// machine's cores) when there are [`PARALLEL_FROM`] or more. Blocks.
pub fn par_map<I: Sync, O: Send>(items: &[I], f: impl Fn(&I) -> O + Sync) -> Vec<O> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(SIGNING_THREADS);
    if threads < 2 || items.len() < PARALLEL_FROM {
        return items.iter().map(&f).collect();
    }
    let per = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|sc| {
        let parts: Vec<_> = items
            .chunks(per)
            .map(|part| sc.spawn(move || part.iter().map(f).collect::<Vec<O>>()))
            .collect();
        parts
            .into_iter()
            // A thread only panics if `f` does: the same panic here.
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// The counter's pure state: the last counter signed and the durable
/// reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    pub last: u64,
    pub reserved: u64,
}

impl Counter {
    /// The state after a restart: nothing above `reserved` was signed.
    pub fn resumed(reserved: u64) -> Self {
        Self {
            last: reserved,
            reserved,
        }
    }

    /// The next counter at `now_ms`, and the reservation to make durable
    /// first when it lies beyond the current one.
    pub fn next(&mut self, now_ms: u64) -> (u64, Option<u64>) {
        let c = control::next_counter(self.last, now_ms);
        self.last = c;
        if c > self.reserved {
            self.reserved = c.saturating_add(RESERVE_MS);
            (c, Some(self.reserved))
        } else {
            (c, None)
        }
    }
}

/// The bridge's signer.
pub struct Director {
    key: SigningKey,
    kid: Kid,
    ttl: Duration,
    /// A std mutex: held for a few microseconds (and, once an hour, one
    /// fsync), never across an await.
    counter: Mutex<Counter>,
    store: CounterStore,
}

impl std::fmt::Debug for Director {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Director")
            .field("kid", &hex::encode(self.kid))
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Director {
    /// Loads the counter reservation. Blocks (sled): call it on the
    /// blocking pool.
    pub fn open(key: SigningKey, ttl: Duration, store: CounterStore) -> Result<Self, StoreError> {
        let reserved = store.reserved()?;
        Ok(Self {
            kid: kid(&key.verifying_key()),
            key,
            ttl,
            counter: Mutex::new(Counter::resumed(reserved)),
            store,
        })
    }

    /// The public key devices are provisioned with.
    pub fn public(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The kid of the director key.
    pub fn kid(&self) -> Kid {
        self.kid
    }

    /// How long a signature holds.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How often retained messages are re-signed: a tenth of the ttl.
    pub fn refresh_interval(&self) -> Duration {
        (self.ttl / 10).max(Duration::from_secs(1))
    }

    /// A fresh stamp: the next counter, issued now, expiring after the ttl.
    /// Blocks for one fsync when it must reserve a new range.
    pub fn stamp(&self) -> Result<Stamp, StoreError> {
        let now = now_ms();
        // A poisoned lock means a panic while holding it, which only the
        // arithmetic above could cause; the state is still a valid counter.
        let mut c = self.counter.lock().unwrap_or_else(|p| p.into_inner());
        let (counter, reserve) = c.next(now);
        if let Some(upto) = reserve {
            self.store.reserve(upto)?;
        }
        let issued = now / 1000;
        Ok(Stamp {
            counter,
            issued,
            expires: issued.saturating_add(self.ttl.as_secs()),
        })
    }

    /// `msg` signed for `topic` (its v1 keys and `auth`).
    pub fn sign<M: ControlBody>(&self, msg: &M, topic: &str) -> Result<Vec<u8>, StoreError> {
        Ok(control::sign(msg, topic, self.stamp()?, &self.key))
    }

    /// Each `(msg, topic)` signed, in order: the counters are taken one
    /// after the other (the same as one `sign` each), the signatures made
    /// on several threads ([`par_map`]: an ed25519 signature is the bulk
    /// of a StatusAck's or a Membership's cost). Blocks: call from the
    /// blocking pool.
    pub fn sign_many<M: ControlBody + Sync>(
        &self,
        items: &[(M, String)],
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let stamped = items
            .iter()
            .map(|i| Ok((i, self.stamp()?)))
            .collect::<Result<Vec<(&(M, String), Stamp)>, StoreError>>()?;
        Ok(par_map(&stamped, |((m, t), st)| {
            control::sign(m, t, *st, &self.key)
        }))
    }

    /// Each value signed in the envelope of operator replies and events
    /// ([`Director::envelope`]), on several threads. Blocks.
    pub fn envelopes<T: serde::Serialize + Sync>(&self, values: &[T]) -> Vec<Vec<u8>> {
        par_map(values, |v| self.envelope(v).to_bytes())
    }

    /// A reply or event for operators, signed in the envelope of commands.
    pub fn envelope<T: serde::Serialize>(&self, value: &T) -> schemas::ops::CommandEnvelope {
        schemas::ops::CommandEnvelope::sign_json(value, &self.key)
    }

    /// True when `payload` carries a valid `auth` by this director key for
    /// `topic`, whatever its counter and expiry: a message the bridge once
    /// published (an echo, or an old one replayed), not a forgery.
    pub fn signed_it(&self, topic: &Topic, topic_str: &str, payload: &[u8]) -> bool {
        let keys = control::DirectorKeys::new([self.public()]);
        let expect = control::Expect {
            topic: topic_str,
            last_counter: None,
            now: None,
        };
        match topic {
            Topic::Groups(_) => control::verify::<Membership>(payload, expect, &keys).is_ok(),
            Topic::Ack(_) => control::verify::<StatusAck>(payload, expect, &keys).is_ok(),
            Topic::GroupCampaign(_) | Topic::GroupEmergency(_) | Topic::Emergency => {
                control::verify::<Announcement>(payload, expect, &keys).is_ok()
            }
            _ => false,
        }
    }

    /// A stored retained payload signed afresh (new counter and expiry),
    /// from its v1 keys. `None` for what is not re-signed: an empty payload
    /// (unsigned by E2), a topic that carries no control message, or a
    /// payload that does not decode (left as it is, and logged by whoever
    /// reads it).
    pub fn resign(
        &self,
        topic: &Topic,
        topic_str: &str,
        payload: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        if payload.is_empty() {
            return Ok(None);
        }
        match topic {
            Topic::Groups(_) => match Membership::decode(payload) {
                Ok(m) => self.sign(&m, topic_str).map(Some),
                Err(_) => Ok(None),
            },
            Topic::Ack(_) => match StatusAck::decode(payload) {
                Ok(m) => self.sign(&m, topic_str).map(Some),
                Err(_) => Ok(None),
            },
            Topic::GroupCampaign(_) | Topic::GroupEmergency(_) | Topic::Emergency => {
                match Announcement::decode(payload) {
                    Ok(m) => self.sign(&m, topic_str).map(Some),
                    Err(_) => Ok(None),
                }
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::control::{DirectorKeys, Expect};
    use schemas::msg::StatusAck;

    #[test]
    fn the_counter_reserves_ahead_and_resumes_above() {
        let mut c = Counter::resumed(0);
        let (first, r) = c.next(1_000);
        assert_eq!((first, r), (1_000, Some(1_000 + RESERVE_MS)));
        // Inside the reservation: no write.
        assert_eq!(c.next(1_000), (1_001, None));
        assert_eq!(c.next(5_000), (5_000, None));
        // A clock that went backwards: still forward.
        assert_eq!(c.next(10), (5_001, None));
        // Past it: a new reservation.
        let far = 2_000 + RESERVE_MS;
        assert_eq!(c.next(far), (far, Some(far + RESERVE_MS)));
        // After a restart (the clock reset to 0), above every counter used.
        let mut after = Counter::resumed(c.reserved);
        let (n, _) = after.next(0);
        assert!(n > far);
    }

    #[test]
    fn signs_across_a_reopen_with_a_greater_counter() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[3; 32]);
        let store = crate::store::Store::open(dir.path()).unwrap();
        let d =
            Director::open(key.clone(), Duration::from_secs(600), store.counter.clone()).unwrap();
        let topic = "ota/v1/devices/d/ack";
        let a = d.sign(&StatusAck { seq: 1 }, topic).unwrap();
        let b = d.sign(&StatusAck { seq: 2 }, topic).unwrap();
        let keys = DirectorKeys::new([d.public()]);
        let expect = |last| Expect {
            topic,
            last_counter: last,
            now: None,
        };
        let va = control::verify::<StatusAck>(&a, expect(None), &keys).unwrap();
        let vb = control::verify::<StatusAck>(&b, expect(None), &keys).unwrap();
        assert!(vb.stamp.counter > va.stamp.counter);
        assert_eq!(va.stamp.expires, va.stamp.issued + 600);
        drop(d);
        // Reopened (same store): the next counter is above both.
        let d = Director::open(key, Duration::from_secs(600), store.counter.clone()).unwrap();
        let c = d.sign(&StatusAck { seq: 3 }, topic).unwrap();
        let vc = control::verify::<StatusAck>(&c, expect(Some(vb.stamp.counter)), &keys).unwrap();
        assert!(vc.stamp.counter > vb.stamp.counter);
        assert!(store.counter.reserved().unwrap() >= vc.stamp.counter);
        assert_eq!(d.refresh_interval(), Duration::from_secs(60));
    }
}
