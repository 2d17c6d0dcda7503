//! The MQTT broker for ota: the `[broker]` section of `ota.toml` and the
//! embedded rumqttd 0.20 broker that `ota serve` runs by default.
//!
//! ```text
//! [broker] (toml) --serde--> RawBrokerConfig --validate()--> BrokerConfig
//!                                                  |-- External(ExternalConfig): host, port, tls,
//!                                                  |     credentials for the bridge's rumqttc client
//!                                                  `-- Embedded(EmbeddedConfig) --start()--> EmbeddedBroker
//! ```
//!
//! # Layout
//!
//! - `config`   — `[broker]`: raw serde struct (unknown keys refused), then
//!   validated types with defaults and errors that name the key; the
//!   endpoint a client should connect to in either mode.
//! - `embedded` — [`start`]: fail-fast port check, rumqttd's config built in
//!   code, the broker on its own thread, wait until it accepts connections.
//! - `auth`     — who may connect: `[broker.users]`, a pluggable
//!   [`CredentialCheck`] (the bridge's device registry), client
//!   certificates (mutual TLS), client ids rumqttd would choke on, and the
//!   connection guard.
//! - `authority` — [`Authority`]: who may connect as whom, publish and
//!   subscribe where (PROTOCOL.md E1); the bridge implements it.
//! - `tls_config` — `[broker] tls_listen` and `[broker.tls]`: the TLS
//!   listener's address and files.
//! - `handshakes` — failed TLS handshakes, counted by kind, logged once
//!   per interval.
//! - `stats`    — [`BrokerCounters`]: admitted logins by credential and
//!   failed handshakes by kind, for the bridge's `/metrics`.
//! - `tally`    — [`Tally`]: counters by kind logged once per interval
//!   (the handshakes', the bridge's refusals).
//! - `anonymous` — `[broker] allow_anonymous`: no broker without
//!   `[broker.users]` unless it is set.
//! - `acl`      — the topic ACL rumqttd's router asks on every PUBLISH,
//!   will and SUBSCRIBE (our patch 7), answered by the [`Authority`].
//! - `guard`    — the connection guard: a conservative live-connection count
//!   that refuses clients before rumqttd's router limit (upstream issue
//!   #991: going over it panics the listener for good).
//! - `meter`    — the thread that feeds the router's connection count to the
//!   guard (rumqttd tells the auth handler about connects, never about
//!   disconnects).
//! - `error`    — [`ConfigError`] and [`BrokerError`].
//! - [`mosquitto`] — `[broker.mosquitto]`: an external Mosquitto whose
//!   password and ACL files ota writes and keeps current.
//!
//! # What rumqttd 0.20 does that clients and operators should know
//!
//! - **Keep-alive 0 is refused.** A CONNECT with keep-alive 0 is dropped
//!   without a CONNACK. Device firmware must send a keep-alive of at least
//!   1 s (rumqttc's default is 60 s). rumqttd disconnects a client silent for
//!   1.5 x its keep-alive.
//! - **A refused client gets no CONNACK**, whatever the reason (bad login,
//!   connection limit, keep-alive 0): it sees the connection close. Clients
//!   should reconnect with backoff.
//! - **With users configured, a CONNECT without a username is refused**
//!   (unless its TLS client presented a certificate: mutual TLS).
//!   With `[broker.users]` empty the broker is anonymous: anyone connects,
//!   and rumqttd calls no auth handler, so no credential check runs, no
//!   guard refuses clients below the router's own limit, and a client id
//!   with `+ $ # /` sent twice breaks the listener. Anonymous mode is for
//!   development on loopback: a config file must ask for it with
//!   `[broker] allow_anonymous = true`.
//! - **Client ids must not contain `+ $ # /`** (refused at login).
//! - **Topics starting with `$` match no subscription**, not even an exact
//!   one: such publishes are dropped.
//! - **Nothing is persisted**: retained messages and persistent sessions
//!   live in memory and are gone after a restart. Topic ACLs come from an
//!   [`Authority`] ([`EmbeddedBroker::set_authority`]); without one every
//!   client may publish and subscribe anywhere.
//! - **A subscriber that falls more than `log_window_bytes()` behind on a
//!   filter silently loses messages**, even at QoS1 (a WARN in rumqttd's
//!   log). See `DEFAULT_SEGMENT_SIZE`.
//! - **TLS** is a second listener (`tls_listen`, `[broker.tls]`) beside
//!   the plain one, which the bridge keeps using on loopback. Each
//!   handshake runs in its connection's own task and gets
//!   `connection_timeout_ms` (our patch 8: upstream ran it in the accept
//!   loop with no timeout, so one silent client stopped the listener).
//!   With `client_ca_file` every client must present a certificate that
//!   CA signed, and a device logs in by it (`auth.rs`); failed handshakes
//!   are counted by kind and logged once per interval (`handshakes.rs`).
//! - **No shutdown:** see [`EmbeddedBroker`].
//!
//! # Logs
//!
//! rumqttd logs through `tracing` under the `rumqttd` target and is noisy:
//! INFO for every accept, connect, subscribe and disconnect, and ERROR for
//! routine events: a client that sends DISCONNECT ("router-drop"), a refused
//! login ("InvalidAuth"), a connection closed before its CONNECT (one at
//! every start: [`start`]'s readiness probe). Quiet it with
//! `RUST_LOG=info,rumqttd=warn`, or `rumqttd=off` to drop its routine
//! errors too (and its WARN on subscribers that lost messages). Our own
//! decisions (refused logins with the reason, the guard, start-up checks)
//! are logged under the `broker` target.

mod acl;
mod addr;
mod anonymous;
mod auth;
mod authority;
mod client_tls;
mod config;
mod embedded;
mod error;
mod guard;
mod handshakes;
mod meter;
pub mod mosquitto;
mod stats;
mod tally;
mod tls_config;
mod url;

pub use auth::CredentialCheck;
pub use authority::{Authority, ConnectVerdict, Login, SharedAuthority};
pub use config::{
    BrokerConfig, ClientTlsFiles, Credentials, EmbeddedConfig, Endpoint, ExternalConfig, Mode,
    RawBrokerConfig, RawTls, TlsListener, DEFAULT_CONNECTION_TIMEOUT_MS, DEFAULT_LISTEN,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_INFLIGHT_COUNT, DEFAULT_MAX_PAYLOAD_SIZE,
    DEFAULT_NEXT_CONNECTION_DELAY_MS, DEFAULT_SEGMENT_COUNT, DEFAULT_SEGMENT_SIZE,
    DEFAULT_TLS_PORT, MIN_MAX_PAYLOAD_SIZE,
};
pub use embedded::{start, ConnectionStats, DisconnectHandle, EmbeddedBroker};
pub use error::{BrokerError, ConfigError};
pub use handshakes::HandshakeFailure;
pub use stats::{BrokerCounters, LoginKind};
pub use tally::Tally;
