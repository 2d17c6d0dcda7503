//! The `[broker]` section, in two steps: [`RawBrokerConfig`] is what serde
//! reads (unknown keys refused, every key optional), and
//! [`RawBrokerConfig::validate`] turns it into the [`BrokerConfig`] the code
//! uses, with defaults applied and an error that names the key.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::Deserialize;

use crate::addr::{loopback, parse_addr};
pub use crate::client_tls::ClientTlsFiles;
use crate::error::ConfigError;
pub use crate::tls_config::{RawTls, TlsListener, DEFAULT_TLS_PORT};
use crate::url::parse_url;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// The block size of the OTA protocol and the overhead around a block
/// (CBOR envelope, Merkle proof). Mirrored here, not imported, because the
/// broker speaks no protocol; the bridge checks its own limits against
/// [`EmbeddedConfig::max_payload_size`] and [`EmbeddedConfig::log_window_bytes`].
const BLOCK_SIZE: usize = 64 * KIB;
const BLOCK_OVERHEAD: usize = 2 * KIB;
/// Signed operator commands are sent in chunks of about 90 KiB of JSON.
const OPERATOR_CHUNK: usize = 90 * KIB;

/// The smallest `max_payload_size` we accept: a block with its overhead and an
/// operator command chunk, each with room for the topic and packet header.
pub const MIN_MAX_PAYLOAD_SIZE: usize = 96 * KIB;
/// MQTT's own limit on a packet's remaining length.
const MQTT_MAX_PACKET: usize = 268_435_455;

/// The largest artifact the defaults are sized for.
const ARTIFACT_BUDGET: usize = 64 * MIB;
/// What one artifact costs in a router log: its blocks with their overhead.
const ARTIFACT_ON_WIRE: usize = ARTIFACT_BUDGET / BLOCK_SIZE * (BLOCK_SIZE + BLOCK_OVERHEAD);

pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1883);
/// Well above a 10,000-device fleet plus the bridge and operators.
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;
/// A 64 KiB block plus 2 KiB overhead (66 KiB) and a ~90 KiB operator
/// command chunk both fit, with room to spare for a larger block size later.
pub const DEFAULT_MAX_PAYLOAD_SIZE: usize = 256 * KIB;
pub const DEFAULT_MAX_INFLIGHT_COUNT: usize = 100;
/// rumqttd keeps, per subscription filter, a log of `segment_count` segments
/// of `segment_size` bytes and drops the oldest segment when the newest is
/// full. A subscriber whose cursor falls out of the log is jumped forward and
/// silently loses messages, even at QoS1. Right after a rotation only
/// `segment_count - 1` full segments remain, so the history a slow subscriber
/// can count on is `(segment_count - 1) * segment_size`:
/// 5 x 32 MiB = 160 MiB, which holds two whole 64 MiB artifacts with their
/// block overhead (2 x 66 MiB). The memory a busy filter may hold is
/// `segment_count * segment_size` = 192 MiB; smaller segments keep the gap
/// between the two small.
pub const DEFAULT_SEGMENT_SIZE: usize = 32 * MIB;
pub const DEFAULT_SEGMENT_COUNT: usize = 6;
/// rumqttd sleeps this long after every accept. 0: no pause. 1 ms was the
/// default while upstream rumqttd slowed with every session held; since the
/// vendored patches (vendor/rumqttd/OTA-PATCHES.md) a 10,000-device storm
/// at 2,000 connects/s connects in 21 s, while 1 ms capped accepts at about
/// 500/s (tokio's timer rounds up) and a fleet connecting at 500/s
/// overflowed the accept queue and timed clients out.
pub const DEFAULT_NEXT_CONNECTION_DELAY_MS: u64 = 0;
/// How long a new TCP connection may take to send its MQTT CONNECT.
pub const DEFAULT_CONNECTION_TIMEOUT_MS: u16 = 10_000;

/// `[broker] mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// rumqttd inside the `ota serve` process.
    #[default]
    Embedded,
    /// Any MQTT 3.1.1 broker (Mosquitto, EMQX, VerneMQ, HiveMQ).
    External,
}

/// The `[broker]` section as written. Every key is optional; defaults are
/// applied by [`RawBrokerConfig::validate`]. A missing section is
/// `RawBrokerConfig::default()`: an embedded broker on 127.0.0.1:1883,
/// refused until it has `[broker.users]` or `allow_anonymous = true`.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBrokerConfig {
    pub mode: Option<Mode>,
    // embedded
    pub listen: Option<String>,
    /// The TLS listener's address, beside `listen` (needs `[broker.tls]`).
    pub tls_listen: Option<String>,
    pub max_connections: Option<usize>,
    pub max_payload_size: Option<usize>,
    pub max_inflight_count: Option<usize>,
    pub segment_size: Option<usize>,
    pub segment_count: Option<usize>,
    pub next_connection_delay_ms: Option<u64>,
    pub connection_timeout_ms: Option<u64>,
    pub users: Option<BTreeMap<String, String>>,
    /// Run without `[broker.users]`: anyone connects as anyone. Refused
    /// unless set (development on loopback only).
    pub allow_anonymous: Option<bool>,
    pub tls: Option<RawTls>,
    // external
    pub url: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// With `mqtts://`: the CA file the broker's certificate must chain to
    /// (default: the system's roots), and the bridge's client certificate
    /// and key (optional). Relative to the config file.
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// `[broker.mosquitto]` (external only): see [`crate::mosquitto`].
    pub mosquitto: Option<crate::mosquitto::RawMosquitto>,
}

/// The validated `[broker]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerConfig {
    Embedded(EmbeddedConfig),
    External(ExternalConfig),
}

/// Settings of the embedded rumqttd broker.
///
/// Build it with [`RawBrokerConfig::validate`] or [`EmbeddedConfig::default`]
/// and adjust the fields; [`crate::start`] validates it again.
#[derive(Clone, PartialEq, Eq)]
pub struct EmbeddedConfig {
    /// The address the plain MQTT (v4, i.e. 3.1.1) listener binds; the
    /// bridge connects here (see [`EmbeddedConfig::connect_addr`]).
    pub listen: SocketAddr,
    /// Connections admitted at once, the bridge and operators included.
    /// Past it the auth handler refuses new clients; rumqttd's own router
    /// limit is set higher (see [`EmbeddedConfig::router_max_connections`]).
    pub max_connections: usize,
    /// The largest packet a client may send, in bytes (rumqttd checks the
    /// MQTT "remaining length": topic, packet id and payload). A larger
    /// packet disconnects the client.
    pub max_payload_size: usize,
    /// Despite its name in rumqttd, not an in-flight window: how many
    /// packets rumqttd reads from one socket in one batch before handing them
    /// to the router. The outbound QoS1 window is fixed at 100 by rumqttd.
    pub max_inflight_count: usize,
    /// Bytes per segment of each subscription filter's log.
    pub segment_size: usize,
    /// Segments per log; see [`DEFAULT_SEGMENT_SIZE`] for the sizing.
    pub segment_count: usize,
    /// Pause after each accepted connection: the accept rate cap.
    pub next_connection_delay_ms: u64,
    /// Time a new connection has to send CONNECT.
    pub connection_timeout_ms: u16,
    /// Username to password. Empty: anonymous clients are accepted, there is
    /// no credential check and no connection guard below the router limit.
    pub users: BTreeMap<String, String>,
    /// A second listener, MQTT over TLS, beside `listen`.
    pub tls: Option<TlsListener>,
}

/// An external broker, as the bridge's rumqttc client needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalConfig {
    pub host: String,
    pub port: u16,
    /// `mqtts://`: connect with TLS.
    pub tls: bool,
    /// With `tls`: `ca_file`, `client_cert`, `client_key` as written (the
    /// bridge's config resolves them and builds the rustls config).
    pub client_tls: ClientTlsFiles,
    pub credentials: Option<Credentials>,
    /// `[broker.mosquitto]`: see [`crate::mosquitto`].
    pub mosquitto: Option<crate::mosquitto::MosquittoConfig>,
}

/// MQTT username and password. `Debug` does not show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// Where an MQTT client should connect, whatever the mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl RawBrokerConfig {
    /// Apply defaults and check every key.
    pub fn validate(self) -> Result<BrokerConfig, ConfigError> {
        match self.mode.unwrap_or_default() {
            Mode::Embedded => self.validate_embedded().map(BrokerConfig::Embedded),
            Mode::External => self.validate_external().map(BrokerConfig::External),
        }
    }

    fn validate_embedded(self) -> Result<EmbeddedConfig, ConfigError> {
        for (key, present) in [
            ("url", self.url.is_some()),
            ("username", self.username.is_some()),
            ("password", self.password.is_some()),
            ("ca_file", self.ca_file.is_some()),
            ("client_cert", self.client_cert.is_some()),
            ("client_key", self.client_key.is_some()),
            ("mosquitto", self.mosquitto.is_some()),
        ] {
            if present {
                return Err(ConfigError::new(
                    key,
                    "only used with mode = \"external\"; the embedded broker's accounts are \
                     under [broker.users]",
                ));
            }
        }
        let listen = match self.listen {
            None => DEFAULT_LISTEN,
            Some(s) => parse_addr("listen", &s, "127.0.0.1:1883")?,
        };
        let tls_listen =
            (self.tls_listen.as_deref()).map(|s| parse_addr("tls_listen", s, "[::]:8883"));
        let tls = crate::tls_config::listener(self.tls, tls_listen.transpose()?, listen)?;
        let connection_timeout_ms = match self.connection_timeout_ms {
            None => DEFAULT_CONNECTION_TIMEOUT_MS,
            Some(ms) => u16::try_from(ms).map_err(|_| {
                ConfigError::new(
                    "connection_timeout_ms",
                    format!("must be at most 65535 (rumqttd keeps it in a u16), got {ms}"),
                )
            })?,
        };
        let config = EmbeddedConfig {
            listen,
            max_connections: self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
            max_payload_size: self.max_payload_size.unwrap_or(DEFAULT_MAX_PAYLOAD_SIZE),
            max_inflight_count: self
                .max_inflight_count
                .unwrap_or(DEFAULT_MAX_INFLIGHT_COUNT),
            segment_size: self.segment_size.unwrap_or(DEFAULT_SEGMENT_SIZE),
            segment_count: self.segment_count.unwrap_or(DEFAULT_SEGMENT_COUNT),
            next_connection_delay_ms: self
                .next_connection_delay_ms
                .unwrap_or(DEFAULT_NEXT_CONNECTION_DELAY_MS),
            connection_timeout_ms,
            users: self.users.unwrap_or_default(),
            tls,
        };
        config.validate()?;
        crate::anonymous::check(config.requires_auth(), self.allow_anonymous)?;
        Ok(config)
    }

    fn validate_external(self) -> Result<ExternalConfig, ConfigError> {
        for (key, present) in [
            ("listen", self.listen.is_some()),
            ("tls_listen", self.tls_listen.is_some()),
            ("max_connections", self.max_connections.is_some()),
            ("max_payload_size", self.max_payload_size.is_some()),
            ("max_inflight_count", self.max_inflight_count.is_some()),
            ("segment_size", self.segment_size.is_some()),
            ("segment_count", self.segment_count.is_some()),
            (
                "next_connection_delay_ms",
                self.next_connection_delay_ms.is_some(),
            ),
            (
                "connection_timeout_ms",
                self.connection_timeout_ms.is_some(),
            ),
            ("users", self.users.is_some()),
            ("allow_anonymous", self.allow_anonymous.is_some()),
            ("tls", self.tls.is_some()),
        ] {
            if present {
                return Err(ConfigError::new(
                    key,
                    "only used with mode = \"embedded\"; configure the external broker itself",
                ));
            }
        }
        let Some(url) = self.url else {
            return Err(ConfigError::new(
                "url",
                "required with mode = \"external\", such as \"mqtt://broker.example:1883\"",
            ));
        };
        let (host, port, tls) = parse_url(&url).map_err(|m| ConfigError::new("url", m))?;
        let client_tls = ClientTlsFiles::validate(
            [self.ca_file, self.client_cert, self.client_key],
            tls,
            (&host, port),
        )?;
        let credentials = match (self.username, self.password) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "password",
                    "given without a username: set [broker] username too",
                ))
            }
            (Some(username), password) => Some(Credentials {
                username,
                password: password.unwrap_or_default(),
            }),
        };
        let user = credentials.as_ref().map(|c| c.username.as_str());
        let mosquitto = self.mosquitto.map(|m| m.validate(port, tls, user));
        Ok(ExternalConfig {
            host,
            port,
            tls,
            client_tls,
            credentials,
            mosquitto: mosquitto.transpose()?,
        })
    }
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig {
            listen: DEFAULT_LISTEN,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_payload_size: DEFAULT_MAX_PAYLOAD_SIZE,
            max_inflight_count: DEFAULT_MAX_INFLIGHT_COUNT,
            segment_size: DEFAULT_SEGMENT_SIZE,
            segment_count: DEFAULT_SEGMENT_COUNT,
            next_connection_delay_ms: DEFAULT_NEXT_CONNECTION_DELAY_MS,
            connection_timeout_ms: DEFAULT_CONNECTION_TIMEOUT_MS,
            users: BTreeMap::new(),
            tls: None,
        }
    }
}

impl EmbeddedConfig {
    /// Check the values that rumqttd would misbehave on (it panics on a
    /// segment under 1 KiB or a log of 0 segments) or that break the OTA
    /// protocol (a payload limit below a block).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.port() == 0 {
            return Err(ConfigError::new(
                "listen",
                "port 0 is not supported (clients could not find the broker): pick a port",
            ));
        }
        if let Some(tls) = &self.tls {
            tls.validate(self.listen)?;
        }
        if !(1..=MAX_CONNECTIONS_LIMIT).contains(&self.max_connections) {
            return Err(ConfigError::new(
                "max_connections",
                format!(
                    "must be between 1 and {MAX_CONNECTIONS_LIMIT} (rumqttd reserves a slot \
                     per connection at start), got {}",
                    self.max_connections
                ),
            ));
        }
        if !(MIN_MAX_PAYLOAD_SIZE..=MQTT_MAX_PACKET).contains(&self.max_payload_size) {
            return Err(ConfigError::new(
                "max_payload_size",
                format!(
                    "must be between {MIN_MAX_PAYLOAD_SIZE} bytes (a {BLOCK_SIZE}-byte block plus \
                     {BLOCK_OVERHEAD} bytes of overhead, and a {OPERATOR_CHUNK}-byte operator \
                     command chunk, fit) and {MQTT_MAX_PACKET}, got {}",
                    self.max_payload_size
                ),
            ));
        }
        if self.max_inflight_count == 0 {
            return Err(ConfigError::new("max_inflight_count", "must be at least 1"));
        }
        if self.segment_size < self.max_payload_size {
            return Err(ConfigError::new(
                "segment_size",
                format!(
                    "must be at least max_payload_size ({} bytes) so that a segment holds a \
                     whole message, got {}",
                    self.max_payload_size, self.segment_size
                ),
            ));
        }
        if self.segment_count < 2 {
            return Err(ConfigError::new(
                "segment_count",
                format!(
                    "must be at least 2: with {} a log keeps no history after each rotation and \
                     a subscriber a moment behind silently loses messages",
                    self.segment_count
                ),
            ));
        }
        if self.segment_size.checked_mul(self.segment_count).is_none() {
            return Err(ConfigError::new(
                "segment_count",
                "segment_size x segment_count overflows",
            ));
        }
        if self.connection_timeout_ms == 0 {
            return Err(ConfigError::new(
                "connection_timeout_ms",
                "must be at least 1: rumqttd would drop every client before its CONNECT",
            ));
        }
        if self.next_connection_delay_ms > 1_000 {
            return Err(ConfigError::new(
                "next_connection_delay_ms",
                format!(
                    "must be at most 1000 (one connect per second), got {}",
                    self.next_connection_delay_ms
                ),
            ));
        }
        if let Some(user) = self.users.keys().find(|u| u.is_empty()) {
            return Err(ConfigError::new(
                "users",
                format!("a username must not be empty, got {user:?}"),
            ));
        }
        Ok(())
    }

    /// The router's own connection limit. Going over it breaks rumqttd's
    /// listener for good (upstream issue #991), so it sits above
    /// `max_connections` by a margin that absorbs the guard's estimate
    /// lagging behind a connect burst (about one second of accepts).
    pub fn router_max_connections(&self) -> usize {
        self.max_connections + (self.max_connections / 10).max(ROUTER_MARGIN_MIN)
    }

    /// History a subscriber can count on in each filter's log, in bytes:
    /// `(segment_count - 1) * segment_size`. A subscriber further behind
    /// than this may be jumped forward and lose messages; the bridge should
    /// not have more than this in flight on one filter.
    pub fn log_window_bytes(&self) -> usize {
        (self.segment_count - 1) * self.segment_size
    }

    /// Whether clients must log in (`users` is not empty).
    pub fn requires_auth(&self) -> bool {
        !self.users.is_empty()
    }

    /// The address a local client (the bridge) should connect to: `listen`,
    /// with an unspecified address (`0.0.0.0`, `::`) replaced by loopback.
    pub fn connect_addr(&self) -> SocketAddr {
        loopback(self.listen)
    }

    /// Log a warning if the log window cannot hold two whole artifacts of
    /// the size the defaults are made for.
    pub(crate) fn warn_if_small_log(&self) {
        if self.log_window_bytes() < 2 * ARTIFACT_ON_WIRE {
            tracing::warn!(
                window = self.log_window_bytes(),
                wanted = 2 * ARTIFACT_ON_WIRE,
                "[broker] segment_size x (segment_count - 1) holds less than two 64 MiB \
                 artifacts: slow devices may silently miss blocks and have to re-request them"
            );
        }
    }
}

/// rumqttd reserves (virtual) slabs of this many slots when it starts.
const MAX_CONNECTIONS_LIMIT: usize = 500_000;
const ROUTER_MARGIN_MIN: usize = 1_000;

impl BrokerConfig {
    /// Where the bridge's MQTT client should connect.
    pub fn endpoint(&self) -> Endpoint {
        match self {
            // The bridge's link: the plain listener (`tls_listen` is for devices).
            BrokerConfig::Embedded(e) => {
                let addr = e.connect_addr();
                Endpoint {
                    host: addr.ip().to_string(),
                    port: addr.port(),
                    tls: false,
                }
            }
            BrokerConfig::External(x) => Endpoint {
                host: x.host.clone(),
                port: x.port,
                tls: x.tls,
            },
        }
    }

    /// The external broker's credentials. `None` for the embedded broker,
    /// whose accounts are in `users`: which of them a client uses is that
    /// client's own setting.
    pub fn credentials(&self) -> Option<&Credentials> {
        match self {
            BrokerConfig::Embedded(_) => None,
            BrokerConfig::External(x) => x.credentials.as_ref(),
        }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig::Embedded(EmbeddedConfig::default())
    }
}

// Debug without secrets: configs get logged.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for EmbeddedConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedConfig")
            .field("listen", &self.listen)
            .field("max_connections", &self.max_connections)
            .field("max_payload_size", &self.max_payload_size)
            .field("max_inflight_count", &self.max_inflight_count)
            .field("segment_size", &self.segment_size)
            .field("segment_count", &self.segment_count)
            .field("next_connection_delay_ms", &self.next_connection_delay_ms)
            .field("connection_timeout_ms", &self.connection_timeout_ms)
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("tls", &self.tls)
            .finish()
    }
}

impl fmt::Debug for RawBrokerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawBrokerConfig")
            .field("mode", &self.mode)
            .field("listen", &self.listen)
            .field("tls_listen", &self.tls_listen)
            .field("max_connections", &self.max_connections)
            .field("max_payload_size", &self.max_payload_size)
            .field("max_inflight_count", &self.max_inflight_count)
            .field("segment_size", &self.segment_size)
            .field("segment_count", &self.segment_count)
            .field("next_connection_delay_ms", &self.next_connection_delay_ms)
            .field("connection_timeout_ms", &self.connection_timeout_ms)
            .field(
                "users",
                &self.users.as_ref().map(|u| u.keys().collect::<Vec<_>>()),
            )
            .field("allow_anonymous", &self.allow_anonymous)
            .field("tls", &self.tls)
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        broker: RawBrokerConfig,
    }

    fn parse(text: &str) -> Result<BrokerConfig, ConfigError> {
        let file: File = toml::from_str(text).expect("toml");
        file.broker.validate()
    }

    fn embedded(text: &str) -> EmbeddedConfig {
        match parse(text).expect("valid") {
            BrokerConfig::Embedded(e) => e,
            other => panic!("expected embedded, got {other:?}"),
        }
    }

    fn error_key(text: &str) -> String {
        parse(text).expect_err("invalid").key
    }

    #[test]
    fn missing_section_is_the_default_embedded_broker_and_needs_users() {
        let err = parse("").expect_err("anonymous by default");
        assert_eq!(err.key, "allow_anonymous");
        assert!(err.to_string().contains("[broker.users]"), "{err}");
        let cfg = embedded("[broker]\nallow_anonymous = true");
        assert_eq!(cfg, EmbeddedConfig::default());
        assert_eq!(cfg.listen, "127.0.0.1:1883".parse().unwrap());
        assert!(!cfg.requires_auth());
    }

    #[test]
    fn anonymous_only_when_allowed_and_never_with_users() {
        assert_eq!(
            error_key("[broker]\nallow_anonymous = false"),
            "allow_anonymous"
        );
        assert_eq!(
            error_key("[broker]\nallow_anonymous = true\n[broker.users]\nb = \"x\""),
            "allow_anonymous"
        );
        assert!(
            embedded("[broker]\nallow_anonymous = false\n[broker.users]\nb = \"x\"")
                .requires_auth()
        );
        assert_eq!(
            error_key("[broker]\nmode = \"external\"\nurl = \"mqtt://h\"\nallow_anonymous = true"),
            "allow_anonymous"
        );
    }

    #[test]
    fn defaults_hold_the_protocol_and_two_artifacts() {
        let cfg = EmbeddedConfig::default();
        cfg.validate().unwrap();
        assert!(cfg.max_payload_size > BLOCK_SIZE + BLOCK_OVERHEAD);
        assert!(cfg.max_payload_size > OPERATOR_CHUNK);
        assert!(cfg.log_window_bytes() >= 2 * ARTIFACT_ON_WIRE);
        assert!(cfg.segment_size * cfg.segment_count >= 2 * 64 * MIB);
        assert!(cfg.router_max_connections() > cfg.max_connections);
    }

    #[test]
    fn the_example_file_is_valid() {
        let text = include_str!("../../config/ota.toml");
        let value: toml::Table = toml::from_str(text).unwrap();
        let broker: RawBrokerConfig = value["broker"].clone().try_into().unwrap();
        broker.validate().unwrap();
    }

    #[test]
    fn every_embedded_key_is_read() {
        let cfg = embedded(
            r#"
            [broker]
            mode = "embedded"
            listen = "0.0.0.0:2883"
            max_connections = 100
            max_payload_size = 131072
            max_inflight_count = 50
            segment_size = 1048576
            segment_count = 3
            next_connection_delay_ms = 2
            connection_timeout_ms = 5000
            [broker.users]
            bridge = "b-secret"
            [broker.tls]
            cert_file = "/etc/ota/cert.pem"
            key_file = "/etc/ota/key.pem"
            "#,
        );
        assert_eq!(cfg.listen.port(), 2883);
        assert_eq!(cfg.connect_addr(), "127.0.0.1:2883".parse().unwrap());
        assert_eq!(cfg.max_connections, 100);
        assert_eq!(cfg.router_max_connections(), 1_100);
        assert_eq!(cfg.max_payload_size, 131_072);
        assert_eq!(cfg.max_inflight_count, 50);
        assert_eq!(cfg.log_window_bytes(), 2 * MIB);
        assert_eq!(cfg.next_connection_delay_ms, 2);
        assert_eq!(cfg.connection_timeout_ms, 5_000);
        assert_eq!(cfg.users["bridge"], "b-secret");
        assert!(cfg.requires_auth());
        let tls = cfg.tls.unwrap();
        assert_eq!(tls.key_file, PathBuf::from("/etc/ota/key.pem"));
        // Beside listen, on MQTT's TLS port; no client certificates.
        assert_eq!(tls.listen, "0.0.0.0:8883".parse().unwrap());
        assert_eq!(tls.client_ca_file, None);
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("[broker]\nlisten = \"localhost\"", "listen"),
            ("[broker]\nlisten = \"127.0.0.1:0\"", "listen"),
            ("[broker]\nmax_connections = 0", "max_connections"),
            ("[broker]\nmax_payload_size = 20480", "max_payload_size"),
            ("[broker]\nmax_inflight_count = 0", "max_inflight_count"),
            ("[broker]\nsegment_size = 1024", "segment_size"),
            ("[broker]\nsegment_count = 1", "segment_count"),
            (
                "[broker]\nconnection_timeout_ms = 70000",
                "connection_timeout_ms",
            ),
            (
                "[broker]\nconnection_timeout_ms = 0",
                "connection_timeout_ms",
            ),
            (
                "[broker]\nnext_connection_delay_ms = 5000",
                "next_connection_delay_ms",
            ),
            ("[broker.users]\n\"\" = \"x\"", "users"),
            ("[broker]\nurl = \"mqtt://h\"", "url"),
            ("[broker]\nmode = \"external\"", "url"),
            (
                "[broker]\nmode = \"external\"\nurl = \"mqtt://h\"\nlisten = \"127.0.0.1:1\"",
                "listen",
            ),
            (
                "[broker]\nmode = \"external\"\nurl = \"mqtt://h\"\npassword = \"p\"",
                "password",
            ),
            ("[broker]\nmode = \"external\"\nurl = \"http://h\"", "url"),
        ];
        for (text, key) in cases {
            assert_eq!(error_key(text), key, "for {text:?}");
        }
    }

    #[test]
    fn error_message_names_the_key_and_the_fix() {
        let err = parse("[broker]\nmax_payload_size = 20480").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("[broker] max_payload_size: must be between 98304"),
            "{text}"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<File>("[broker]\nlisten_addr = \"127.0.0.1:1883\"")
            .err()
            .expect("unknown key accepted");
        assert!(err.to_string().contains("listen_addr"), "{err}");
        let err = toml::from_str::<File>("[broker.tls]\ncert = \"a\"\nkey_file = \"b\"")
            .err()
            .expect("unknown tls key accepted");
        assert!(err.to_string().contains("cert"), "{err}");
        assert!(toml::from_str::<File>("[broker]\nmode = \"cluster\"").is_err());
    }

    #[test]
    fn a_tls_listener_beside_the_plain_one() {
        let users = "[broker.users]\nbridge = \"b\"\n";
        let cfg = embedded(&format!(
            "[broker]\nlisten = \"127.0.0.1:1883\"\ntls_listen = \"0.0.0.0:8884\"\n{users}\
             [broker.tls]\ncert_file = \"s.crt\"\nkey_file = \"s.key\"\n\
             client_ca_file = \"ca.crt\"\n"
        ));
        let tls = cfg.tls.clone().unwrap();
        assert_eq!(tls.listen, "0.0.0.0:8884".parse().unwrap());
        assert_eq!(tls.client_ca_file, Some(PathBuf::from("ca.crt")));
        // The bridge stays on the plain listener.
        let endpoint = BrokerConfig::Embedded(cfg).endpoint();
        assert_eq!((endpoint.port, endpoint.tls), (1883, false));
        let tls = tls.relative_to(std::path::Path::new("/etc/ota"));
        assert_eq!(tls.cert_file, PathBuf::from("/etc/ota/s.crt"));
        assert_eq!(tls.client_ca_file, Some(PathBuf::from("/etc/ota/ca.crt")));
        // The names before version 3 still read.
        let old = embedded(&format!(
            "{users}[broker.tls]\ncert_path = \"c\"\nkey_path = \"k\"\n"
        ));
        assert_eq!(old.tls.unwrap().cert_file, PathBuf::from("c"));
        for (text, key) in [
            (
                format!("[broker]\ntls_listen = \"0.0.0.0:8883\"\n{users}"),
                "tls_listen",
            ),
            (
                format!(
                    "[broker]\ntls_listen = \"0.0.0.0:1883\"\n{users}\
                     [broker.tls]\ncert_file = \"c\"\nkey_file = \"k\"\n"
                ),
                "tls_listen",
            ),
            (
                format!(
                    "[broker]\ntls_listen = \"8883\"\n{users}\
                     [broker.tls]\ncert_file = \"c\"\nkey_file = \"k\"\n"
                ),
                "tls_listen",
            ),
        ] {
            assert_eq!(error_key(&text), key, "for {text:?}");
        }
    }

    #[test]
    fn external_broker_is_typed_for_the_client() {
        let cfg = parse(
            r#"
            [broker]
            mode = "external"
            url = "mqtts://broker.example"
            username = "bridge"
            password = "s3cret"
            "#,
        )
        .unwrap();
        assert_eq!(
            cfg.endpoint(),
            Endpoint {
                host: "broker.example".into(),
                port: 8883,
                tls: true
            }
        );
        let creds = cfg.credentials().unwrap();
        assert_eq!(
            (creds.username.as_str(), creds.password.as_str()),
            ("bridge", "s3cret")
        );
        assert!(!format!("{cfg:?}").contains("s3cret"));
    }

    #[test]
    fn tls_files_only_with_mqtts_and_in_pairs() {
        let BrokerConfig::External(x) = parse(
            "[broker]\nmode = \"external\"\nurl = \"mqtts://b\"\nca_file = \"ca.crt\"\n\
             client_cert = \"c.crt\"\nclient_key = \"c.key\"",
        )
        .unwrap() else {
            panic!("external")
        };
        assert_eq!(x.client_tls.ca_file, Some(PathBuf::from("ca.crt")));
        assert_eq!(x.client_tls.client_key, Some(PathBuf::from("c.key")));
        let e = parse("[broker]\nmode = \"external\"\nurl = \"mqtt://b:1\"\nca_file = \"ca.crt\"")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ca_file: only used with TLS: write url = \"mqtts://b:1\""),
            "{e}"
        );
        assert_eq!(
            error_key("[broker]\nmode = \"external\"\nurl = \"mqtts://b\"\nclient_cert = \"c\""),
            "client_key"
        );
        assert_eq!(error_key("[broker]\nca_file = \"ca.crt\""), "ca_file");
    }

    #[test]
    fn embedded_endpoint_is_loopback_for_a_wildcard_listen() {
        let cfg = parse("[broker]\nlisten = \"[::]:1999\"\nallow_anonymous = true").unwrap();
        assert_eq!(cfg.endpoint().host, "::1");
        assert_eq!(cfg.endpoint().port, 1999);
        assert!(cfg.credentials().is_none());
    }

    #[test]
    fn urls() {
        let ok = [
            ("mqtt://h", ("h", 1883, false)),
            ("mqtt://h:1884/", ("h", 1884, false)),
            ("mqtts://10.0.0.1:8884", ("10.0.0.1", 8884, true)),
            ("mqtt://[::1]", ("::1", 1883, false)),
            ("mqtt://[fe80::1]:2000", ("fe80::1", 2000, false)),
        ];
        for (url, (host, port, tls)) in ok {
            assert_eq!(parse_url(url), Ok((host.to_owned(), port, tls)), "{url}");
        }
        let bad = [
            "h:1883",
            "tcp://h",
            "mqtt://",
            "mqtt://:1883",
            "mqtt://h:0",
            "mqtt://h:99999",
            "mqtt://h:x",
            "mqtt://u:p@h",
            "mqtt://h/topic",
            "mqtt://::1",
            "mqtt://[::1",
            "mqtt://[nope]",
        ];
        for url in bad {
            assert!(parse_url(url).is_err(), "{url} accepted");
        }
    }

    #[test]
    fn debug_hides_passwords() {
        let mut raw = RawBrokerConfig {
            password: Some("hunter2".into()),
            ..Default::default()
        };
        raw.users = Some([("dev".to_owned(), "hunter2".to_owned())].into());
        assert!(!format!("{raw:?}").contains("hunter2"));
        let cfg = EmbeddedConfig {
            users: [("dev".to_owned(), "hunter2".to_owned())].into(),
            ..Default::default()
        };
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }
}
