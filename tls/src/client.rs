//! The one place that builds a rustls `ClientConfig` for MQTT: the server
//! is verified against `ca_file` (PEM, one or more CAs) or, without one,
//! the system's roots; a client certificate and key are optional.
//! TLS 1.2 and 1.3, aws-lc-rs' cipher suites, no ALPN (MQTT over 8883 needs
//! none).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::files::{read_certs, read_key};
use crate::TlsError;

/// The crypto provider every config of ours uses: the process's default
/// if one is installed, else aws-lc-rs (what rumqttc's `use-rustls` and
/// the vendored rumqttd use).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            CryptoProvider::get_default()
                .cloned()
                .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        })
        .clone()
}

/// The TLS settings of one MQTT client, as config files and flags give
/// them: `ca_file`, `client_cert`, `client_key`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// CA certificates (PEM) the server's certificate must chain to.
    /// `None`: the system's roots (as for a cloud broker).
    pub ca_file: Option<PathBuf>,
    /// This client's certificate chain (PEM), leaf first.
    pub client_cert: Option<PathBuf>,
    /// The private key of `client_cert` (PEM).
    pub client_key: Option<PathBuf>,
}

/// A client certificate chain and its key, in memory.
#[derive(Debug)]
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl ClientTls {
    /// No setting given.
    pub fn is_empty(&self) -> bool {
        self.ca_file.is_none() && self.client_cert.is_none() && self.client_key.is_none()
    }

    /// Relative paths made relative to `base` (a config file's directory).
    pub fn relative_to(self, base: &Path) -> Self {
        let join = |p: Option<PathBuf>| p.map(|p| if p.is_absolute() { p } else { base.join(p) });
        ClientTls {
            ca_file: join(self.ca_file),
            client_cert: join(self.client_cert),
            client_key: join(self.client_key),
        }
    }

    /// `client_cert` and `client_key` come together.
    pub fn check(&self) -> Result<(), TlsError> {
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err(TlsError::HalfIdentity);
        }
        Ok(())
    }

    /// The roots the server is verified against.
    pub fn roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        match &self.ca_file {
            Some(path) => ca_roots(path),
            None => system_roots(),
        }
    }

    /// The client certificate and key, when given.
    pub fn identity(&self) -> Result<Option<Identity>, TlsError> {
        self.check()?;
        match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => Ok(Some(Identity {
                chain: read_certs("client_cert", cert)?,
                key: read_key("client_key", key)?,
            })),
            _ => Ok(None),
        }
    }

    /// Reads the files and builds the config (blocking file reads: call it
    /// while loading configuration, or on a blocking thread).
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let identity = self.identity()?;
        let roots = self.roots()?;
        client_config(roots, identity).map_err(|e| match (e, self) {
            (
                TlsError::Rustls(r),
                ClientTls {
                    client_cert: Some(cert),
                    client_key: Some(key),
                    ..
                },
            ) => TlsError::Identity {
                cert: cert.clone(),
                key: key.clone(),
                reason: r.to_string(),
            },
            (e, _) => e,
        })
    }
}

/// A rustls client config from roots and an optional identity.
pub fn client_config(
    roots: Arc<RootCertStore>,
    identity: Option<Identity>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match identity {
        Some(id) => builder.with_client_auth_cert(id.chain, id.key)?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

fn ca_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    roots_of(path, read_certs("ca_file", path)?)
}

/// A root store of these CA certificates; `origin` names them in errors.
pub fn roots_of(
    origin: &Path,
    certs: Vec<CertificateDer<'static>>,
) -> Result<Arc<RootCertStore>, TlsError> {
    let path = origin;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| TlsError::BadCa {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(Arc::new(roots))
}

/// The system's roots, loaded once per process.
pub fn system_roots() -> Result<Arc<RootCertStore>, TlsError> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = match found.errors.first() {
                    Some(e) => e.to_string(),
                    None => "the system store is empty".to_string(),
                };
                return Err(why);
            }
            Ok(Arc::new(roots))
        })
        .clone()
        .map_err(TlsError::NoSystemRoots)
}

/// The rumqttc transport for a config.
pub fn transport(config: Arc<ClientConfig>) -> rumqttc::Transport {
    rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(config))
}
