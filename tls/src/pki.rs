//! The fleet PKI behind `ota pki`: a CA, server certificates for the
//! broker's names and addresses, and device certificates whose subject CN
//! is the device id. ECDSA P-256 keys (rcgen with aws-lc-rs), random 128-bit
//! serials, PEM files; private keys are written mode 0600 and never
//! overwritten.
//!
//! A fleet with an HSM or a cloud registry (AWS IoT just-in-time
//! registration) brings its own CA instead: anything that issues X.509
//! certificates with CN = device id under one CA works the same.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};

use crate::{fingerprint, Identity, TlsError};

/// File names in an `ota pki init` directory.
pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const SERVER_CERT: &str = "server.crt";
pub const SERVER_KEY: &str = "server.key";

/// Default lifetimes, in days.
pub const CA_DAYS: u32 = 3650;
pub const SERVER_DAYS: u32 = 825;
pub const DEVICE_DAYS: u32 = 3650;

/// A CA that signs the fleet's certificates.
pub struct FleetCa {
    cert: Certificate,
    key: KeyPair,
    /// The CA certificate as read (a re-signed copy is kept in `cert` for
    /// rcgen; its PEM is what devices and brokers must trust).
    pem: String,
}

/// A certificate and its fresh private key.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

/// When a certificate is valid.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From an hour ago (clock skew) for `days` days.
    pub fn days(days: u32) -> Self {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(i64::from(days)),
        }
    }
}

impl Issued {
    /// SHA-256 of the certificate's DER, as revocation lists name it.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.der)
    }

    /// The certificate and key for a rustls client config.
    pub fn identity(&self) -> Result<Identity, TlsError> {
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| TlsError::Invalid(format!("issued key: {e}")))?;
        Ok(Identity {
            chain: vec![CertificateDer::from(self.der.clone())],
            key,
        })
    }
}

fn serial() -> Result<SerialNumber, TlsError> {
    let mut bytes = [0u8; 16];
    crate::provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| TlsError::Invalid("no randomness for a serial number".into()))?;
    bytes[0] &= 0x7f; // a positive INTEGER
    Ok(SerialNumber::from_slice(&bytes))
}

fn params(
    common_name: &str,
    sans: Vec<String>,
    v: Validity,
) -> Result<CertificateParams, TlsError> {
    let mut p = CertificateParams::new(sans)?;
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, common_name);
    p.not_before = v.not_before;
    p.not_after = v.not_after;
    p.serial_number = Some(serial()?);
    p.use_authority_key_identifier_extension = true;
    Ok(p)
}

impl FleetCa {
    /// A new CA named `name`.
    pub fn generate(name: &str, days: u32) -> Result<Self, TlsError> {
        let key = KeyPair::generate()?;
        let mut p = params(name, Vec::new(), Validity::days(days))?;
        p.distinguished_name
            .push(DnType::OrganizationName, "ota fleet");
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        p.use_authority_key_identifier_extension = false;
        let cert = p.self_signed(&key)?;
        let pem = cert.pem();
        Ok(FleetCa { cert, key, pem })
    }

    /// A CA from its certificate and key (PEM text).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let key = KeyPair::from_pem(key_pem)?;
        let params = CertificateParams::from_ca_cert_pem(cert_pem)?;
        let cert = params.self_signed(&key)?;
        Ok(FleetCa {
            cert,
            key,
            pem: cert_pem.to_string(),
        })
    }

    /// The CA of an `ota pki init` directory (`ca.crt`, `ca.key`).
    pub fn load(dir: &Path) -> Result<Self, TlsError> {
        let read = |name: &str, what: &'static str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| TlsError::Read { what, path, source })
        };
        let cert = read(CA_CERT, "CA certificate")?;
        let key = read(CA_KEY, "CA key")?;
        Self::from_pem(&cert, &key)
            .map_err(|e| TlsError::Invalid(format!("the CA in {}: {e}", dir.display())))
    }

    /// The CA certificate (what clients put in `ca_file`).
    pub fn cert_pem(&self) -> &str {
        &self.pem
    }

    /// The CA's private key, PEM.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A server certificate for these DNS names and IP addresses (the first
    /// is its CN).
    pub fn issue_server(&self, names: &[String], validity: Validity) -> Result<Issued, TlsError> {
        let Some(first) = names.first() else {
            return Err(TlsError::Invalid(
                "a server certificate needs at least one host name or address".into(),
            ));
        };
        let mut p = params(first, names.to_vec(), validity)?;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(p)
    }

    /// A device certificate: subject CN = the device id, for client
    /// authentication only.
    pub fn issue_device(&self, device_id: &str, validity: Validity) -> Result<Issued, TlsError> {
        let mut p = params(device_id, Vec::new(), validity)?;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(p)
    }

    fn sign(&self, p: CertificateParams) -> Result<Issued, TlsError> {
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &self.cert, &self.key)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        })
    }
}

/// Writes a private file (mode 0600). Refuses to replace an existing file:
/// a key that is overwritten by mistake cannot be had back.
pub fn write_private(path: &Path, contents: &str) -> Result<(), TlsError> {
    write(path, contents, 0o600)
}

/// Writes a public file (mode 0644), refusing to replace one.
pub fn write_public(path: &Path, contents: &str) -> Result<(), TlsError> {
    write(path, contents, 0o644)
}

fn write(path: &Path, contents: &str, mode: u32) -> Result<(), TlsError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let err = |source: std::io::Error| TlsError::Read {
        what: "output file",
        path: path.to_path_buf(),
        source,
    };
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            TlsError::Invalid(format!(
                "{} exists: not replaced (move it away to make a new one)",
                path.display()
            ))
        } else {
            err(e)
        }
    })?;
    f.write_all(contents.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)
}

/// The certificate and key files of a device in a directory.
pub fn device_files(dir: &Path, device_id: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{device_id}.crt")),
        dir.join(format!("{device_id}.key")),
    )
}

/// A server certificate for 127.0.0.1 from `ca`, written as `NAME.crt` and
/// `NAME.key` in `dir` (the tests' listeners).
#[cfg(test)]
pub(crate) fn test_server_files(ca: &FleetCa, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let issued = ca
        .issue_server(&["127.0.0.1".into()], Validity::days(1))
        .unwrap();
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    (cert, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_reloaded_from_pem_signs_certificates_that_chain_to_it() {
        let ca = FleetCa::generate("test CA", 30).unwrap();
        let again = FleetCa::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
        let dev = again.issue_device("dev-1", Validity::days(1)).unwrap();
        // Verify the chain the way a broker's rustls does.
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap())
            .unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            crate::provider(),
        )
        .build()
        .unwrap();
        verifier
            .verify_client_cert(
                &CertificateDer::from(dev.der.clone()),
                &[],
                rustls_pki_types::UnixTime::now(),
            )
            .unwrap();
        assert_eq!(dev.fingerprint().len(), 64);
    }

    #[test]
    fn keys_are_0600_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.key");
        write_private(&p, "secret").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let e = write_private(&p, "other").unwrap_err().to_string();
        assert!(e.contains("not replaced"), "{e}");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "secret");
    }
}
