//! `[broker] tls_listen` and `[broker.tls]`: the embedded broker's TLS
//! listener beside its plain one, and whether clients must present a
//! certificate (mutual TLS).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::ConfigError;

/// `tls_listen` when only `[broker.tls]` is given: `listen`'s address on
/// MQTT's TLS port.
pub const DEFAULT_TLS_PORT: u16 = 8883;

/// `[broker.tls]`: PEM files for the TLS listener (`tls_listen`).
/// `cert_path` and `key_path`, the names before TLS was served, are read
/// as `cert_file` and `key_file`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    #[serde(alias = "cert_path")]
    pub cert_file: PathBuf,
    #[serde(alias = "key_path")]
    pub key_file: PathBuf,
    /// Mutual TLS: clients must present a certificate this CA signed.
    pub client_ca_file: Option<PathBuf>,
}

/// The TLS listener (`[broker] tls_listen`, `[broker.tls]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsListener {
    /// The address it binds.
    pub listen: SocketAddr,
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key of `cert_file`.
    pub key_file: PathBuf,
    /// Mutual TLS: every client must present a certificate that chains to
    /// these CAs (PEM), and a device logs in by it (its CN = its client
    /// id); see `auth.rs`.
    pub client_ca_file: Option<PathBuf>,
}

/// The listener `[broker.tls]` and `tls_listen` ask for, if any.
pub(crate) fn listener(
    tls: Option<RawTls>,
    tls_listen: Option<SocketAddr>,
    listen: SocketAddr,
) -> Result<Option<TlsListener>, ConfigError> {
    match (tls, tls_listen) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(ConfigError::new(
            "tls_listen",
            "needs [broker.tls] with cert_file and key_file",
        )),
        (Some(t), addr) => Ok(Some(TlsListener {
            listen: addr.unwrap_or(SocketAddr::new(listen.ip(), DEFAULT_TLS_PORT)),
            cert_file: t.cert_file,
            key_file: t.key_file,
            client_ca_file: t.client_ca_file,
        })),
    }
}

impl TlsListener {
    /// Relative paths made relative to `base` (a config file's directory).
    pub fn relative_to(mut self, base: &Path) -> Self {
        let join = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        self.cert_file = join(self.cert_file);
        self.key_file = join(self.key_file);
        self.client_ca_file = self.client_ca_file.map(join);
        self
    }

    /// Mutual TLS: clients must present a certificate.
    pub fn mutual(&self) -> bool {
        self.client_ca_file.is_some()
    }

    pub(crate) fn validate(&self, plain: SocketAddr) -> Result<(), ConfigError> {
        if self.listen.port() == 0 {
            return Err(ConfigError::new(
                "tls_listen",
                "port 0 is not supported (clients could not find the broker): pick a port",
            ));
        }
        if self.listen.port() == plain.port() {
            return Err(ConfigError::new(
                "tls_listen",
                format!(
                    "port {} is listen's too: the TLS listener needs its own port (8883 is \
                     MQTT's TLS port)",
                    plain.port()
                ),
            ));
        }
        Ok(())
    }
}
