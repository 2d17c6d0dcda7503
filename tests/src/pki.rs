//! A fleet PKI for tests and `ota demo --tls` (`tls::pki`, as `ota pki`
//! makes one): a CA, the embedded broker's server certificate for
//! 127.0.0.1 and localhost, device certificates (CN = device id), and the
//! TLS client configs that go with them. Standalone (only `tls`, `broker`,
//! `tempfile`): the broker crate's tests include this file too.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tls::pki::{FleetCa, Issued, Validity};
use tls::rustls::{ClientConfig, RootCertStore};

/// A CA and the broker's certificate, written to a directory.
pub struct TestPki {
    root: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub ca: FleetCa,
}

impl TestPki {
    /// A new CA (`ca.crt`) and a server certificate (`server.crt`,
    /// `server.key`) for 127.0.0.1, ::1 and localhost, in a temp dir.
    pub fn new() -> TestPki {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut pki = Self::in_dir(dir.path()).expect("a PKI in a temp dir");
        pki._tmp = Some(dir);
        pki
    }

    /// The same in `dir` (created), laid out as `ota pki init` does: also
    /// the CA's key (`ca.key`); keys 0600, no file replaced.
    pub fn in_dir(dir: &Path) -> Result<TestPki, tls::TlsError> {
        std::fs::create_dir_all(dir).map_err(|source| tls::TlsError::Read {
            what: "PKI directory",
            path: dir.to_path_buf(),
            source,
        })?;
        let ca = FleetCa::generate("ota test fleet CA", 1)?;
        let names = ["127.0.0.1", "::1", "localhost"].map(String::from);
        let server = ca.issue_server(&names, Validity::days(1))?;
        use tls::pki::{write_private, write_public, CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY};
        write_public(&dir.join(CA_CERT), ca.cert_pem())?;
        write_private(&dir.join(CA_KEY), &ca.key_pem())?;
        write_public(&dir.join(SERVER_CERT), &server.cert_pem)?;
        write_private(&dir.join(SERVER_KEY), &server.key_pem)?;
        Ok(TestPki {
            root: dir.to_path_buf(),
            _tmp: None,
            ca,
        })
    }

    /// Where its files are.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    pub fn ca_file(&self) -> PathBuf {
        self.root.join("ca.crt")
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
        let (cert, key) = tls::pki::device_files(&self.root, id);
        std::fs::write(&cert, &issued.cert_pem).expect("a device certificate file");
        tls::pki::write_private(&key, &issued.key_pem).expect("a device key file");
        (issued, cert, key)
    }

    /// The embedded broker's TLS listener on `listen`, with this CA as the
    /// client CA when `mutual`.
    pub fn listener(&self, listen: std::net::SocketAddr, mutual: bool) -> broker::TlsListener {
        broker::TlsListener {
            listen,
            cert_file: self.root.join("server.crt"),
            key_file: self.root.join("server.key"),
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
