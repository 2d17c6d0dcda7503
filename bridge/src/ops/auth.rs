//! Who may command the bridge: the envelope's signature against the
//! operator keys of the config, the time window and the replay cache
//! (`schemas::ops`). Pure: the caller passes the clock and audits the
//! outcome.

use std::collections::BTreeMap;

use schemas::keys::{Kid, VerifyingKey};
use schemas::ops::{CommandBody, CommandEnvelope, CommandError, ReplayGuard};
use schemas::RequestId;

use crate::metrics::DropReason;
use crate::store::AuditEntry;

/// A command refused before it ran, with what could be read of it (to
/// audit it and, when it names a request id, to reply).
#[derive(Debug, Clone)]
pub struct Refusal {
    pub error: CommandError,
    pub reason: DropReason,
    pub request_id: Option<RequestId>,
    pub kid: Option<String>,
    pub op: Option<String>,
    pub issued_at: Option<u64>,
}

/// Checks commands.
#[derive(Debug)]
pub struct Authenticator {
    keys: BTreeMap<Kid, VerifyingKey>,
    guard: ReplayGuard,
    /// The kid (hex) of this bridge's director key: a command naming
    /// another audience is refused.
    audience: Option<String>,
}

impl Authenticator {
    /// Trusts `keys`; accepts commands issued within `window` seconds.
    pub fn new(keys: BTreeMap<Kid, VerifyingKey>, window: u64) -> Self {
        Self {
            keys,
            guard: ReplayGuard::new(window),
            audience: None,
        }
    }

    /// Refuses commands meant for a bridge other than `kid` (hex).
    pub fn with_audience(mut self, kid: Option<String>) -> Self {
        self.audience = kid;
        self
    }

    /// The time window in seconds.
    pub fn window(&self) -> u64 {
        self.guard.window()
    }

    /// Remembers the request ids of commands accepted before a restart, so
    /// that a replay of one is still refused.
    pub fn seed<'a>(&mut self, entries: impl IntoIterator<Item = &'a AuditEntry>) -> usize {
        let mut n = 0;
        for e in entries {
            if !e.accepted {
                continue;
            }
            let (Some(id), Some(at)) = (e.request_id.as_deref(), e.issued_at) else {
                continue;
            };
            if let Ok(id) = RequestId::new(id) {
                self.guard.remember(id, at);
                n += 1;
            }
        }
        n
    }

    /// Verifies a command payload at time `now` (Unix seconds).
    pub fn check(&mut self, payload: &[u8], now: u64) -> Result<CommandBody, Box<Refusal>> {
        let env = CommandEnvelope::parse(payload).map_err(|error| {
            Box::new(Refusal {
                error,
                reason: DropReason::CommandMalformed,
                request_id: None,
                kid: None,
                op: None,
                issued_at: None,
            })
        })?;
        let body = env.verify(&self.keys).map_err(|error| {
            let reason = match error {
                CommandError::Malformed(_) => DropReason::CommandMalformed,
                _ => DropReason::CommandForged,
            };
            let loose = Loose::read(&env.body);
            Box::new(Refusal {
                error,
                reason,
                request_id: loose.request_id,
                kid: Some(env.kid.chars().take(32).collect()),
                op: loose.op,
                issued_at: loose.issued_at,
            })
        })?;
        if let (Some(ours), Some(meant)) = (&self.audience, &body.audience) {
            if ours != meant {
                return Err(Box::new(Refusal {
                    error: CommandError::WrongAudience {
                        meant: meant.chars().take(32).collect(),
                        ours: ours.clone(),
                    },
                    reason: DropReason::CommandForged,
                    request_id: Some(body.request_id.clone()),
                    kid: Some(env.kid.clone()),
                    op: Some(body.command.name().to_string()),
                    issued_at: Some(body.issued_at),
                }));
            }
        }
        self.guard.check(&body, now).map_err(|error| {
            Box::new(Refusal {
                reason: match error {
                    CommandError::Replay(_) => DropReason::CommandReplayed,
                    _ => DropReason::CommandStale,
                },
                error,
                request_id: Some(body.request_id.clone()),
                kid: Some(env.kid.clone()),
                op: Some(body.command.name().to_string()),
                issued_at: Some(body.issued_at),
            })
        })?;
        Ok(body)
    }
}

/// What an unverified body says about itself: only to audit it and to
/// address the refusal. Nothing here is trusted.
struct Loose {
    request_id: Option<RequestId>,
    op: Option<String>,
    issued_at: Option<u64>,
}

impl Loose {
    fn read(body: &str) -> Self {
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        Self {
            request_id: v
                .get("request_id")
                .and_then(|r| r.as_str())
                .and_then(|r| RequestId::new(r).ok()),
            op: v
                .get("command")
                .and_then(|c| c.get("op"))
                .and_then(|o| o.as_str())
                .map(|o| o.chars().take(40).collect()),
            issued_at: v.get("issued_at").and_then(|t| t.as_u64()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::keys::SigningKey;
    use schemas::ops::Command;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn auth(k: &SigningKey) -> Authenticator {
        let vk = k.verifying_key();
        Authenticator::new([(schemas::keys::kid(&vk), vk)].into(), 300)
    }

    fn cmd(k: &SigningKey, id: &str, at: u64) -> Vec<u8> {
        CommandEnvelope::sign(
            &CommandBody {
                request_id: RequestId::new(id).unwrap(),
                issued_at: at,
                command: Command::GroupList,
                audience: None,
            },
            k,
        )
        .to_bytes()
    }

    #[test]
    fn accepts_once() {
        let k = key(1);
        let mut a = auth(&k);
        assert!(a.check(&cmd(&k, "r1", 1000), 1000).is_ok());
        let r = a.check(&cmd(&k, "r1", 1000), 1001).unwrap_err();
        assert_eq!(r.reason, DropReason::CommandReplayed);
        assert_eq!(r.request_id.unwrap().as_str(), "r1");
    }

    #[test]
    fn classifies_refusals() {
        let k = key(1);
        let mut a = auth(&k);
        let r = a.check(b"not json", 1000).unwrap_err();
        assert_eq!(r.reason, DropReason::CommandMalformed);
        let r = a.check(&cmd(&key(2), "r2", 1000), 1000).unwrap_err();
        assert_eq!(r.reason, DropReason::CommandForged);
        // The refusal still names the request, to reply to it.
        assert_eq!(r.request_id.unwrap().as_str(), "r2");
        assert_eq!(r.op.as_deref(), Some("group_list"));
        let r = a.check(&cmd(&k, "r3", 1), 1000).unwrap_err();
        assert_eq!(r.reason, DropReason::CommandStale);
        let mut env: CommandEnvelope = serde_json::from_slice(&cmd(&k, "r4", 1000)).unwrap();
        env.body = env.body.replace("group_list", "device_list");
        let r = a.check(&env.to_bytes(), 1000).unwrap_err();
        assert_eq!(r.reason, DropReason::CommandForged);
    }

    #[test]
    fn a_command_for_another_bridge_is_refused() {
        let k = key(1);
        let mut a = auth(&k).with_audience(Some("aaaaaaaaaaaaaaaa".into()));
        let to = |id: &str, audience: Option<&str>| {
            CommandEnvelope::sign(
                &CommandBody {
                    request_id: RequestId::new(id).unwrap(),
                    issued_at: 1000,
                    command: Command::GroupList,
                    audience: audience.map(String::from),
                },
                &k,
            )
            .to_bytes()
        };
        let r = a
            .check(&to("r1", Some("bbbbbbbbbbbbbbbb")), 1000)
            .unwrap_err();
        assert!(
            matches!(r.error, CommandError::WrongAudience { .. }),
            "{:?}",
            r.error
        );
        assert_eq!(r.request_id.unwrap().as_str(), "r1");
        // Ours, or none (an operator who pins no key): accepted.
        assert!(a.check(&to("r2", Some("aaaaaaaaaaaaaaaa")), 1000).is_ok());
        assert!(a.check(&to("r3", None), 1000).is_ok());
    }

    #[test]
    fn seeding_refuses_replays_after_a_restart() {
        let k = key(1);
        let mut a = auth(&k);
        let seen = AuditEntry {
            at: 1000,
            request_id: Some("r1".into()),
            kid: None,
            op: None,
            issued_at: Some(1000),
            accepted: true,
            error: None,
            unaudited: 0,
        };
        let refused = AuditEntry {
            request_id: Some("r2".into()),
            accepted: false,
            ..seen.clone()
        };
        assert_eq!(a.seed([&seen, &refused]), 1);
        assert_eq!(
            a.check(&cmd(&k, "r1", 1000), 1010).unwrap_err().reason,
            DropReason::CommandReplayed
        );
        // A refused (e.g. forged) request id does not block a genuine one.
        assert!(a.check(&cmd(&k, "r2", 1000), 1010).is_ok());
    }
}
