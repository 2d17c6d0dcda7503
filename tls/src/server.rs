//! The bridge's HTTP listener's rustls `ServerConfig` (`[http] tls_cert`,
//! `tls_key`): the embedded broker's (`mqtt_server.rs`, the one place
//! that builds one, with the same provider as every client), speaking
//! HTTP/1.1.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;

use crate::{ServerFiles, TlsError};

/// A server config from a PEM certificate chain (leaf first) and its key,
/// speaking HTTP/1.1 (ALPN). Blocking file reads: call it at start.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = crate::mqtt_server::build(ServerFiles {
        cert: ("tls_cert", cert),
        key: ("tls_key", key),
        client_ca: None,
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{test_server_files, FleetCa};

    #[test]
    fn a_cert_and_its_key_make_a_config_and_a_stranger_key_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let ca = FleetCa::generate("test ca", 1).unwrap();
        let (cert, key) = test_server_files(&ca, dir.path(), "a");
        let (_, other) = test_server_files(&ca, dir.path(), "b");
        assert!(server_config(&cert, &key).is_ok());
        let e = server_config(&cert, &other).unwrap_err().to_string();
        assert!(e.contains("cannot be used together"), "{e}");
        let e = server_config(&dir.path().join("none"), &key)
            .unwrap_err()
            .to_string();
        assert!(e.contains("tls_cert"), "{e}");
    }
}
