//! Refusals counted by reason and logged once per interval with their
//! count, never one WARN each: an attacker's flood must not flood the log.
//! Safe to call from the broker's threads (atomics and one try-lock).

use std::time::Duration;

use broker::Tally;
use tracing::warn;

/// How often, at most, refusals are logged.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Why the broker was told no.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A login whose password does not match, or for no known identity.
    BadCredentials,
    /// A client id that is not the identity its login proves.
    ClientIdMismatch,
    /// A device that was revoked or rejected.
    Revoked,
    /// A client certificate on the registry's revocation list.
    CertificateRevoked,
    /// A client id reserved for the bridge or operators.
    Reserved,
    /// A publish outside E1's table.
    Publish,
    /// A subscription outside E1's table.
    Subscribe,
    /// A Hello from a device that is not provisioned (the bridge's core).
    UnknownHello,
    /// A BlockRequest for an artifact not announced to the device.
    Blocks,
    /// An enrollment over `[devices] registrations_per_minute`.
    RegistrationRate,
}

const ALL: [Refused; 10] = [
    Refused::BadCredentials,
    Refused::ClientIdMismatch,
    Refused::Revoked,
    Refused::CertificateRevoked,
    Refused::Reserved,
    Refused::Publish,
    Refused::Subscribe,
    Refused::UnknownHello,
    Refused::Blocks,
    Refused::RegistrationRate,
];

impl Refused {
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::BadCredentials => "bad_credentials",
            Refused::ClientIdMismatch => "client_id_mismatch",
            Refused::Revoked => "revoked",
            Refused::CertificateRevoked => "certificate_revoked",
            Refused::Reserved => "reserved_client_id",
            Refused::Publish => "publish_not_allowed",
            Refused::Subscribe => "subscribe_not_allowed",
            Refused::UnknownHello => "hello_not_provisioned",
            Refused::Blocks => "blocks_not_announced",
            Refused::RegistrationRate => "registration_rate",
        }
    }
}

/// The counters.
#[derive(Debug, Default)]
pub struct Refusals(Tally<{ ALL.len() }>);

impl Refusals {
    /// Counts one refusal of `client_id` (the last one of an interval is
    /// named in the log line, as an example).
    pub fn count(&self, why: Refused, client_id: &str, what: &str) {
        self.0.count(why as usize);
        let Some(counts) = self.0.due(LOG_INTERVAL) else {
            return;
        };
        let counts: Vec<String> = counts
            .into_iter()
            .map(|(i, n)| format!("{}={n}", ALL[i].as_str()))
            .collect();
        warn!(
            refused = counts.join(" "),
            example_client = client_id,
            example = what,
            interval_secs = LOG_INTERVAL.as_secs(),
            "identity: refused (counts since the last such line)"
        );
    }

    /// Refusals of this kind since start.
    pub fn get(&self, why: Refused) -> u64 {
        self.0.get(why as usize)
    }

    /// Every counter, by name.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        ALL.iter().map(|r| (r.as_str(), self.get(*r))).collect()
    }

    /// Sum of every counter.
    pub fn sum(&self) -> u64 {
        ALL.iter().map(|r| self.get(*r)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_refusal() {
        let r = Refusals::default();
        for _ in 0..1000 {
            r.count(Refused::Publish, "dev-1", "topic");
        }
        r.count(Refused::Revoked, "dev-2", "login");
        assert_eq!(r.get(Refused::Publish), 1000);
        assert_eq!(r.get(Refused::Revoked), 1);
        assert_eq!(r.sum(), 1001);
        // One line logged, the rest held for the next interval.
        assert_eq!(r.0.unlogged(), 1000);
    }
}
