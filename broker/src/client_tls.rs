//! `[broker] ca_file`, `client_cert`, `client_key`: the TLS files of the
//! bridge's client to an external `mqtts://` broker, as written. The
//! bridge's config resolves the paths and builds the rustls config
//! (`bridge::config::client_tls`); this crate only checks the keys.

use std::path::PathBuf;

use crate::error::ConfigError;

/// The TLS files of an `mqtts://` client, as `[broker]` names them. All
/// `None`: the server is verified against the system's roots and no
/// client certificate is sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTlsFiles {
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl ClientTlsFiles {
    /// No file given.
    pub fn is_empty(&self) -> bool {
        self.ca_file.is_none() && self.client_cert.is_none() && self.client_key.is_none()
    }

    /// `[ca_file, client_cert, client_key]` as written: only with TLS
    /// (`mqtts://` of `host:port`), the client pair whole.
    pub(crate) fn validate(
        [ca_file, client_cert, client_key]: [Option<PathBuf>; 3],
        tls: bool,
        (host, port): (&str, u16),
    ) -> Result<Self, ConfigError> {
        let files = ClientTlsFiles {
            ca_file,
            client_cert,
            client_key,
        };
        if !tls {
            for (key, present) in [
                ("ca_file", files.ca_file.is_some()),
                ("client_cert", files.client_cert.is_some()),
                ("client_key", files.client_key.is_some()),
            ] {
                if present {
                    return Err(ConfigError::new(
                        key,
                        format!("only used with TLS: write url = \"mqtts://{host}:{port}\" (or remove it)"),
                    ));
                }
            }
        }
        if files.client_cert.is_some() != files.client_key.is_some() {
            let missing = if files.client_cert.is_some() {
                "client_key"
            } else {
                "client_cert"
            };
            return Err(ConfigError::new(
                missing,
                "client_cert and client_key come together: give both, or neither",
            ));
        }
        Ok(files)
    }
}
