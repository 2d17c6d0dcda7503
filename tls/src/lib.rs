//! ota's one TLS stack: rustls 0.23 with the aws-lc-rs provider, for every MQTT
//! client of the workspace (the bridge's two connections, the `ota` CLI,
//! the reference agent and `ota sim`), and the fleet PKI behind `ota pki`.
//!
//! ```text
//! ClientTls (ca_file, client_cert, client_key)  --client_config()-->  Arc<rustls::ClientConfig>
//!                                                                        |-- transport() --> rumqttc::Transport
//! rumqttc::ConnectionError --explain()--> Failure: one line, host and reason (unknown CA, name, expired)
//! FleetCa (rcgen) --issue_server / issue_device--> Issued (PEM cert + key, DER, SHA-256)
//! ```
//!
//! # Layout
//!
//! - `files`   — PEM certificates and keys read from files, errors naming the file.
//! - `client`  — [`ClientTls`]: the three settings every client takes, and
//!   the one place that builds a rustls `ClientConfig` (server verified
//!   against `ca_file` or the system roots, optional client certificate).
//! - `explain` — [`explain`]: a failed TLS connection as one line that names
//!   the reason a user can act on.
//! - `pki`     — [`pki::FleetCa`]: a fleet CA, server certificates for the
//!   broker's names, device certificates (CN = device id); files with keys
//!   written 0600.
//! - `fingerprint` — [`fingerprint`]: SHA-256 of a certificate's DER, the
//!   name a revocation list uses.
//! - `server`  — [`server_config`]: the rustls `ServerConfig` of the
//!   bridge's HTTP listener.
//! - `mqtt_server` — [`mqtt_server_config`]: the embedded broker's TLS
//!   listener (client certificates required with a client CA), and
//!   [`peer_identity`]: a client certificate's CN and fingerprint.
//!
//! No process-wide crypto provider is needed: every config names its
//! provider ([`provider`]), the same one as the embedded broker's.

mod client;
mod error;
mod explain;
mod files;
mod fingerprint;
mod mqtt_server;
pub mod pki;
mod server;

pub use client::{client_config, provider, roots_of, system_roots, transport, ClientTls, Identity};
pub use error::TlsError;
pub use explain::{explain, Failure, FailureKind};
pub use files::{parse_certs, parse_key, read_certs, read_key};
pub use fingerprint::{fingerprint, fingerprint_pem};
pub use mqtt_server::{mqtt_server_config, peer_identity, PeerIdentity, ServerFiles};
pub use server::server_config;

/// The rustls this workspace uses, for callers that name its types.
pub use rustls;
