//! Errors: a bad `[broker]` section ([`ConfigError`]) and a broker that
//! cannot start ([`BrokerError`]). Each message says what was wrong and
//! what to do about it.

use std::net::SocketAddr;
use std::time::Duration;

/// A `[broker]` key with a value that cannot be used.
///
/// Displays as `[broker] max_payload_size: must be at least ...`, so that
/// the operator knows which line of the file to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[broker] {key}: {message}")]
pub struct ConfigError {
    /// The key as written in the file (`tls.cert_path` for nested keys).
    pub key: String,
    /// What is wrong with it and what is expected.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(key: &str, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// Why the embedded broker did not start, or refused a request.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("invalid broker config: {0}")]
    Config(#[from] ConfigError),

    /// Someone else listens on the port. rumqttd itself would only log this
    /// and keep running without a listener, hence the check before it.
    #[error("address {addr} is in use: stop the other broker or set [broker] {key}")]
    AddrInUse { addr: SocketAddr, key: &'static str },

    #[error("cannot listen on {addr}: {source}: check [broker] {key}")]
    Bind {
        addr: SocketAddr,
        key: &'static str,
        source: std::io::Error,
    },

    /// A `[broker.tls]` file that cannot be used (the message names the key).
    #[error("[broker.tls] {0}")]
    Tls(#[source] tls::TlsError),

    #[error("cannot start the embedded broker: {0}")]
    Thread(#[source] std::io::Error),

    /// A link to rumqttd's router (meters, the tick link) could not be made.
    #[error("cannot attach to the embedded broker's router: {0}")]
    Router(String),

    #[error("the embedded broker stopped while starting on {addr}: see rumqttd's error above")]
    Stopped { addr: SocketAddr },

    #[error("the embedded broker did not accept connections on {addr} within {waited:?}")]
    NotReady { addr: SocketAddr, waited: Duration },

    /// [`crate::EmbeddedBroker::set_credential_check`] or
    /// [`crate::EmbeddedBroker::set_authority`] on a broker that runs
    /// without authentication.
    #[error(
        "[broker] users is empty, so the embedded broker accepts anonymous clients and checks \
         neither credentials nor topics: add at least one user under [broker.users] to enable \
         the checks"
    )]
    Anonymous,
}
