//! A TLS failure of the bridge's connections in the log: the one line of
//! [`tls::explain`] (host and reason: unknown CA, name mismatch, expired,
//! a refused client certificate), as an error, once per reason and again
//! at most every [`RELOG`] while it lasts; the reconnect backoff goes on
//! (a renewed certificate or a fixed broker is picked up at the next try).

use std::time::{Duration, Instant};

use rumqttc::ConnectionError;
use tracing::error;

/// How often a failure that lasts is logged again.
pub const RELOG: Duration = Duration::from_secs(300);

/// The last TLS failure logged by one connection.
#[derive(Default)]
pub struct TlsFailures {
    last: Option<(String, Instant)>,
}

impl TlsFailures {
    /// Logs `e` if it is a TLS failure not logged within [`RELOG`];
    /// returns whether it was one. `conn` names the connection.
    pub fn observe(
        &mut self,
        conn: &'static str,
        (host, port): (String, u16),
        e: &ConnectionError,
    ) -> bool {
        let Some(failure) = tls::explain(&host, port, e) else {
            return false;
        };
        let line = failure.to_string();
        let fresh = match &self.last {
            Some((l, at)) => *l != line || at.elapsed() >= RELOG,
            None => true,
        };
        if fresh {
            error!(connection = conn, kind = ?failure.kind, "{line}");
            self.last = Some((line, Instant::now()));
        }
        true
    }

    /// Connected: a failure after this is news again.
    pub fn connected(&mut self) {
        self.last = None;
    }
}
