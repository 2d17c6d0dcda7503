//! PEM files: certificate chains and private keys (PKCS#8, PKCS#1 or SEC1),
//! each error naming the file.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::TlsError;

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate in a PEM file, in order (leaf first for a chain).
/// `what` names the setting in errors ("ca_file", "client_cert").
pub fn read_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(what, path)?;
    parse_certs(what, path, &bytes)
}

/// Every certificate in PEM text held in memory (a provisioning file's
/// `tls`); `origin` names where it came from in errors.
pub fn parse_certs(
    what: &'static str,
    origin: &Path,
    bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let path = origin;
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_path_buf(),
            expected: "certificate (-----BEGIN CERTIFICATE-----)",
        });
    }
    Ok(certs)
}

/// The first private key in a PEM file.
pub fn read_key(what: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(what, path)?;
    parse_key(what, path, &bytes)
}

/// The first private key in PEM text held in memory.
pub fn parse_key(
    what: &'static str,
    origin: &Path,
    bytes: &[u8],
) -> Result<PrivateKeyDer<'static>, TlsError> {
    let path = origin;
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            what,
            path: path.to_path_buf(),
            expected: "private key (-----BEGIN PRIVATE KEY-----)",
        },
        e => TlsError::Pem {
            what,
            path: path.to_path_buf(),
            reason: e.to_string(),
        },
    })
}
