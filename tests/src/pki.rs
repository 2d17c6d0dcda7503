//! A fleet PKI for tests (`tls::pki`, as `ota pki` makes one): a CA, the
//! embedded broker's server certificate for 127.0.0.1 and localhost,
//! device certificates (CN = device id), and the TLS client configs that
//! go with them. Standalone (only `tls`, `broker`, `tempfile`): the broker
//! crate's tests include this file too.

use std::path::PathBuf;
use std::sync::Arc;

use tls::pki::{FleetCa, Issued, Validity};
use tls::rustls::{ClientConfig, RootCertStore};

/// A CA and the broker's certificate, written to a temp dir.
pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub ca: FleetCa,
}

impl TestPki {
    /// A new CA (`ca.crt`) and a server certificate (`server.crt`,
    /// `server.key`) for 127.0.0.1, ::1 and localhost.
    pub fn new() -> TestPki {
        let dir = tempfile::tempdir().expect("a temp dir");
        let ca = FleetCa::generate("ota test fleet CA", 1).expect("a CA");
        let names = ["127.0.0.1", "::1", "localhost"].map(String::from);
        let server = ca
            .issue_server(&names, Validity::days(1))
            .expect("a server certificate");
        let write = |name: &str, text: &str| {
            std::fs::write(dir.path().join(name), text).expect("a PKI file");
        };
        write("ca.crt", ca.cert_pem());
        write("server.crt", &server.cert_pem);
        write("server.key", &server.key_pem);
        TestPki { dir, ca }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A device certificate, CN = `id`.
    pub fn device(&self, id: &str) -> Issued {
        self.ca
            .issue_device(id, Validity::days(1))
            .expect("a device certificate")
    }

    /// A device certificate written as `ID.crt` and `ID.key` (the key 0600).
    pub fn device_files(&self, id: &str) -> (Issued, PathBuf, PathBuf) {
        let issued = self.device(id);
        let (cert, key) = tls::pki::device_files(self.dir.path(), id);
        std::fs::write(&cert, &issued.cert_pem).expect("a device certificate file");
        tls::pki::write_private(&key, &issued.key_pem).expect("a device key file");
        (issued, cert, key)
    }

    /// The embedded broker's TLS listener on `listen`, with this CA as the
    /// client CA when `mutual`.
    pub fn listener(&self, listen: std::net::SocketAddr, mutual: bool) -> broker::TlsListener {
        broker::TlsListener {
            listen,
            cert_file: self.dir.path().join("server.crt"),
            key_file: self.dir.path().join("server.key"),
            client_ca_file: mutual.then(|| self.ca_file()),
        }
    }

    /// A client config that trusts this CA, presenting `identity` if any.
    pub fn client(&self, identity: Option<&Issued>) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        let ca = tls::read_certs("ca_file", &self.ca_file()).expect("the CA file");
        for c in ca {
            roots.add(c).expect("a CA certificate");
        }
        let identity = identity.map(|i| i.identity().expect("an identity"));
        tls::client_config(Arc::new(roots), identity).expect("a client config")
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}
