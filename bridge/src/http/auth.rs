//! Who may read: a bearer token whose SHA-256 is in `[http] read_tokens`
//! (compared in constant time, every stored hash checked), or, with
//! `allow_anonymous_loopback`, a request without an `Authorization` header
//! from a loopback address. A header that is there but wrong is refused
//! everywhere, loopback too. [`decide`] is pure; [`Refusals`] counts each
//! refusal by reason and logs them at most once per interval.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;
use tracing::warn;

use crate::config::http::{HttpConfig, TokenHash};

/// How often, at most, refusals are logged.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Why a read was refused (the 401's reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization` header, from where anonymous reads are not let in.
    NoToken,
    /// An `Authorization` header that is not `Bearer <token>`.
    NotBearer,
    /// A bearer token whose hash is not in `read_tokens`.
    WrongToken,
}

impl Refusal {
    pub const ALL: [Refusal; 3] = [Refusal::NoToken, Refusal::NotBearer, Refusal::WrongToken];

    /// The reason's name in `/metrics` and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NoToken => "no_token",
            Refusal::NotBearer => "not_bearer",
            Refusal::WrongToken => "wrong_token",
        }
    }

    /// The 401's text: what was wrong and what to do.
    pub fn message(self, anonymous_loopback: bool) -> &'static str {
        match (self, anonymous_loopback) {
            (Refusal::NoToken, true) => {
                "a token is required from this address (only loopback may read without one): \
                 send Authorization: Bearer <token>"
            }
            (Refusal::NoToken, false) => {
                "a token is required: send Authorization: Bearer <token> (its sha256 must be in [http] read_tokens)"
            }
            (Refusal::NotBearer, _) => {
                "the Authorization header must be \"Bearer <token>\""
            }
            (Refusal::WrongToken, _) => {
                "this token is not accepted: check it, or add its sha256 to [http] read_tokens (`ota http-token`)"
            }
        }
    }
}

/// Lets the request in, or says why not. `authorization` is the raw header.
pub fn decide(cfg: &HttpConfig, peer: IpAddr, authorization: Option<&[u8]>) -> Result<(), Refusal> {
    let Some(header) = authorization else {
        return if cfg.allow_anonymous_loopback && peer.to_canonical().is_loopback() {
            Ok(())
        } else {
            Err(Refusal::NoToken)
        };
    };
    let token = header
        .strip_prefix(b"Bearer ")
        .ok_or(Refusal::NotBearer)?
        .trim_ascii();
    if token.is_empty() {
        return Err(Refusal::NotBearer);
    }
    let presented = TokenHash::of(token);
    // Every stored hash is compared, in constant time, whichever matches.
    let mut ok = subtle::Choice::from(0);
    for h in &cfg.read_tokens {
        ok |= h.0[..].ct_eq(&presented.0[..]);
    }
    if bool::from(ok) {
        Ok(())
    } else {
        Err(Refusal::WrongToken)
    }
}

/// Refusals so far, by reason, and when they were last logged.
#[derive(Debug, Default)]
pub struct Refusals {
    total: [AtomicU64; Refusal::ALL.len()],
    since_log: [AtomicU64; Refusal::ALL.len()],
    last_log: Mutex<Option<Instant>>,
}

impl Refusals {
    /// Counts one; logs the counts since the last line when the interval
    /// has passed (an attacker's flood is one line per interval).
    pub fn count(&self, why: Refusal, peer: IpAddr) {
        let i = why as usize;
        self.total[i].fetch_add(1, Ordering::Relaxed);
        self.since_log[i].fetch_add(1, Ordering::Relaxed);
        let Ok(mut last) = self.last_log.try_lock() else {
            return;
        };
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            return;
        }
        *last = Some(now);
        drop(last);
        let counts: Vec<String> = Refusal::ALL
            .iter()
            .filter_map(|r| {
                let n = self.since_log[*r as usize].swap(0, Ordering::Relaxed);
                (n > 0).then(|| format!("{}={n}", r.as_str()))
            })
            .collect();
        warn!(
            refused = counts.join(" "),
            example_peer = %peer,
            interval_secs = LOG_EVERY.as_secs(),
            "http: reads refused (counts since the last such line)"
        );
    }

    /// Refusals of one reason since start.
    pub fn get(&self, why: Refusal) -> u64 {
        self.total[why as usize].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(tokens: &[&str], anon: bool) -> HttpConfig {
        HttpConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            read_tokens: tokens.iter().map(|t| TokenHash::of(t.as_bytes())).collect(),
            allow_anonymous_loopback: anon,
            tls: None,
        }
    }

    const LOOP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const FAR: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));

    #[test]
    fn tokens_and_loopback() {
        let c = cfg(&["alpha", "beta"], true);
        assert_eq!(decide(&c, FAR, Some(b"Bearer beta")), Ok(()));
        assert_eq!(decide(&c, LOOP, None), Ok(()));
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(decide(&c, mapped, None), Ok(()));
        assert_eq!(decide(&c, FAR, None), Err(Refusal::NoToken));
        // A wrong token is refused on loopback too.
        assert_eq!(
            decide(&c, LOOP, Some(b"Bearer gamma")),
            Err(Refusal::WrongToken)
        );
        assert_eq!(
            decide(&c, FAR, Some(b"Basic YTpi")),
            Err(Refusal::NotBearer)
        );
        assert_eq!(decide(&c, FAR, Some(b"Bearer ")), Err(Refusal::NotBearer));
        // Without the option, loopback needs a token as well.
        assert_eq!(
            decide(&cfg(&["a"], false), LOOP, None),
            Err(Refusal::NoToken)
        );
    }

    #[test]
    fn refusals_are_counted() {
        let r = Refusals::default();
        for _ in 0..100 {
            r.count(Refusal::WrongToken, FAR);
        }
        r.count(Refusal::NoToken, FAR);
        assert_eq!(r.get(Refusal::WrongToken), 100);
        assert_eq!(r.get(Refusal::NoToken), 1);
        assert_eq!(r.get(Refusal::NotBearer), 0);
    }
}
