//! A device's TLS from its provisioning file (`tls`, PEM text inline): the
//! broker's certificate checked against `ca_cert_pem` (empty: the system's
//! roots), the device's own certificate and key (CN = its id) sent when
//! the file has them. Parsed once, before the device connects.

use std::path::Path;
use std::sync::Arc;

use schemas::provisioning::ProvisioningTls;
use tls::rustls::{ClientConfig, RootCertStore};
use tls::{Identity, TlsError};

/// The rustls config of a device: `ca` overrides the file's CA (the
/// simulator's `--ca-file`); `origin` names the file in errors.
pub fn client_config(
    file: Option<&ProvisioningTls>,
    ca: Option<Arc<RootCertStore>>,
    origin: &Path,
) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = match (ca, file) {
        (Some(r), _) => r,
        (None, Some(t)) if !t.ca_cert_pem.trim().is_empty() => tls::roots_of(
            origin,
            tls::parse_certs("tls.ca_cert_pem of", origin, t.ca_cert_pem.as_bytes())?,
        )?,
        (None, _) => tls::system_roots()?,
    };
    let identity =
        match file.and_then(|t| t.client_cert_pem.as_ref().zip(t.client_key_pem.as_ref())) {
            Some((cert, key)) => Some(Identity {
                chain: tls::parse_certs("tls.client_cert_pem of", origin, cert.as_bytes())?,
                key: tls::parse_key("tls.client_key_pem of", origin, key.as_bytes())?,
            }),
            None => None,
        };
    tls::client_config(roots, identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provisioned_pair_builds_and_a_garbled_one_names_the_file() {
        let ca = tls::pki::FleetCa::generate("sim test CA", 1).unwrap();
        let dev = ca
            .issue_device("dev-1", tls::pki::Validity::days(1))
            .unwrap();
        let mut t = ProvisioningTls {
            ca_cert_pem: ca.cert_pem().to_string(),
            client_cert_pem: Some(dev.cert_pem.clone()),
            client_key_pem: Some(dev.key_pem.clone()),
        };
        let origin = Path::new("factory/dev-1.json");
        assert!(client_config(Some(&t), None, origin).is_ok());
        t.client_key_pem = Some("not a key".into());
        let e = client_config(Some(&t), None, origin)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tls.client_key_pem of factory/dev-1.json"),
            "{e}"
        );
    }
}
