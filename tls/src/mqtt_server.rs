//! The embedded broker's TLS listener (`[broker.tls]`): its rustls
//! `ServerConfig`, with client certificates required when a client CA is
//! given (mutual TLS), and what a verified client certificate says: its
//! subject CN (the device id) and its fingerprint (what revocation lists
//! name).

use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{fingerprint, provider, read_certs, read_key, TlsError};

/// The files of a TLS listener, and the config key each came from (for
/// errors: `"[broker.tls] cert_file"`).
#[derive(Debug, Clone, Copy)]
pub struct ServerFiles<'a> {
    /// The server's certificate chain (PEM), leaf first.
    pub cert: (&'static str, &'a Path),
    /// Its private key (PEM).
    pub key: (&'static str, &'a Path),
    /// CA certificates (PEM) a client's certificate must chain to; with
    /// them a client without a certificate is refused in the handshake.
    pub client_ca: Option<(&'static str, &'a Path)>,
}

/// A server config for MQTT over TLS (no ALPN), TLS 1.2 and 1.3, the
/// workspace's provider. Blocking file reads: call it at start.
pub fn mqtt_server_config(files: ServerFiles<'_>) -> Result<Arc<ServerConfig>, TlsError> {
    build(files).map(Arc::new)
}

/// A server config from its files (the HTTP listener's too, `server.rs`).
pub(crate) fn build(files: ServerFiles<'_>) -> Result<ServerConfig, TlsError> {
    let (cert_key, cert) = files.cert;
    let (key_key, key) = files.key;
    let chain = read_certs(cert_key, cert)?;
    let secret = read_key(key_key, key)?;
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match files.client_ca {
        None => builder.with_no_client_auth(),
        Some((ca_key, ca)) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs(ca_key, ca)? {
                roots.add(c).map_err(|e| TlsError::Pem {
                    what: ca_key,
                    path: ca.to_path_buf(),
                    reason: format!("not a CA certificate: {e}"),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::Pem {
                    what: ca_key,
                    path: ca.to_path_buf(),
                    reason: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder
        .with_single_cert(chain, secret)
        .map_err(|e| TlsError::Identity {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            reason: e.to_string(),
        })
}

/// Who a verified client certificate names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The subject's common name: the device id.
    pub common_name: String,
    /// SHA-256 of the certificate's DER ([`fingerprint`]).
    pub fingerprint: String,
}

/// The subject CN and fingerprint of a certificate (DER). Fails on a
/// certificate that does not parse or has no single UTF-8 CN.
pub fn peer_identity(der: &[u8]) -> Result<PeerIdentity, TlsError> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| TlsError::Invalid(format!("client certificate does not parse: {e}")))?;
    let mut names = cert.subject().iter_common_name();
    let (Some(cn), None) = (names.next(), names.next()) else {
        return Err(TlsError::Invalid(
            "a client certificate needs exactly one subject CN (the device id)".into(),
        ));
    };
    let common_name = cn
        .as_str()
        .map_err(|e| TlsError::Invalid(format!("client certificate CN is not text: {e}")))?;
    Ok(PeerIdentity {
        common_name: common_name.to_owned(),
        fingerprint: fingerprint(der),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{test_server_files, FleetCa, Validity};

    #[test]
    fn a_device_certificate_names_its_device() {
        let ca = FleetCa::generate("test ca", 1).unwrap();
        let dev = ca.issue_device("dev-7", Validity::days(1)).unwrap();
        let id = peer_identity(&dev.der).unwrap();
        assert_eq!(id.common_name, "dev-7");
        assert_eq!(id.fingerprint, dev.fingerprint());
        assert!(peer_identity(b"not a certificate").is_err());
    }

    #[test]
    fn files_make_a_config_with_or_without_a_client_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca = FleetCa::generate("test ca", 1).unwrap();
        let (cert, key) = test_server_files(&ca, dir.path(), "s");
        let ca_file = dir.path().join("ca.crt");
        std::fs::write(&ca_file, ca.cert_pem()).unwrap();
        let files = ServerFiles {
            cert: ("cert_file", &cert),
            key: ("key_file", &key),
            client_ca: None,
        };
        assert!(mqtt_server_config(files).is_ok());
        let mtls = ServerFiles {
            client_ca: Some(("client_ca_file", &ca_file)),
            ..files
        };
        assert!(mqtt_server_config(mtls).is_ok());
        let bad = ServerFiles {
            client_ca: Some(("client_ca_file", &key)),
            ..files
        };
        let e = mqtt_server_config(bad).unwrap_err().to_string();
        assert!(e.contains("client_ca_file"), "{e}");
    }
}
