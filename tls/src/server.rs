//! The one place that builds a rustls `ServerConfig`: the bridge's HTTP
//! listener (`[http] tls_cert`, `tls_key`), with the same provider as
//! every client ([`crate::provider`]).

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;

use crate::{provider, read_certs, read_key, TlsError};

/// A server config from a PEM certificate chain (leaf first) and its key,
/// speaking HTTP/1.1 (ALPN). Blocking file reads: call it at start.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = read_certs("tls_cert", cert)?;
    let secret = read_key("tls_key", key)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, secret)
        .map_err(|e| TlsError::Identity {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            reason: e.to_string(),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{FleetCa, Validity};

    #[test]
    fn a_cert_and_its_key_make_a_config_and_a_stranger_key_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let ca = FleetCa::generate("test ca", 1).unwrap();
        let a = ca
            .issue_server(&["127.0.0.1".into()], Validity::days(1))
            .unwrap();
        let b = ca
            .issue_server(&["127.0.0.1".into()], Validity::days(1))
            .unwrap();
        let (cert, key, other) = (
            dir.path().join("a.crt"),
            dir.path().join("a.key"),
            dir.path().join("b.key"),
        );
        std::fs::write(&cert, &a.cert_pem).unwrap();
        std::fs::write(&key, &a.key_pem).unwrap();
        std::fs::write(&other, &b.key_pem).unwrap();
        assert!(server_config(&cert, &key).is_ok());
        let e = server_config(&cert, &other).unwrap_err().to_string();
        assert!(e.contains("cannot be used together"), "{e}");
        let e = server_config(&dir.path().join("none"), &key)
            .unwrap_err()
            .to_string();
        assert!(e.contains("tls_cert"), "{e}");
    }
}
