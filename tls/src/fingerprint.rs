//! A certificate's name for revocation lists: the SHA-256 of its DER, in
//! lowercase hex (what `openssl x509 -fingerprint -sha256` prints, without
//! the colons).

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};

use crate::TlsError;

/// SHA-256 of a certificate's DER, 64 lowercase hex characters.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The fingerprint of the first certificate in PEM text.
pub fn fingerprint_pem(pem: &str) -> Result<String, TlsError> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| TlsError::Invalid(format!("not a PEM certificate: {e}")))?;
    Ok(fingerprint(&der))
}
