//! `ota pki init | device`: a fleet CA, the broker's server certificate
//! and client certificates (devices, the bridge, operators), through
//! `tls::pki` (rcgen, ECDSA P-256). Keys are written mode 0600 and never
//! overwritten.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use schemas::DeviceId;
use tls::pki::{self, FleetCa, Issued, Validity};

use crate::Run;

/// Certificates for TLS everywhere: a fleet CA, the broker's server
/// certificate, and client certificates whose subject CN is a device id.
///
/// `ota pki init` makes the CA and the server certificate once; `ota pki
/// device` signs client certificates with that CA, for devices (CN = the
/// device id, which a broker with mutual TLS takes as its identity), and
/// also for the bridge and operators where the broker asks every client for
/// a certificate. Brokers and clients trust ca.crt (`ca_file`); ca.key
/// signs certificates and belongs offline once the fleet's are made.
///
/// With an HSM, or a cloud registry that issues certificates itself (AWS
/// IoT just-in-time registration), use your own PKI instead: anything that
/// issues X.509 certificates with CN = device id under one CA works the
/// same (docs/operations.md "TLS clients and certificates").
#[derive(clap::Subcommand)]
pub enum Pki {
    Init(Init),
    Device(Device),
}

impl Run for Pki {
    fn run(self) -> anyhow::Result<()> {
        match self {
            Pki::Init(c) => c.run(),
            Pki::Device(c) => c.run(),
        }
    }
}

/// Create a fleet CA and a server certificate for the broker.
///
/// Writes into DIR: ca.crt (the CA certificate: every broker and client
/// trusts it, as `ca_file` / `cafile`), ca.key (the CA's private key, mode
/// 0600: it signs every certificate of the fleet, keep it offline),
/// server.crt and server.key (the broker's certificate for the names given
/// by --host and --ip; clients check the name they connect to against
/// them). Nothing is overwritten.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    ota pki init --out pki/ --host broker.example.com --ip 10.0.0.5\n  \
    ota pki init --out pki/                # localhost and 127.0.0.1 only\n\n\
    Then: ota pki device dev-0001 dev-0002 --ca pki/ --out pki/devices/\n\
    Mosquitto: `cafile pki/ca.crt`, `certfile pki/server.crt`, `keyfile pki/server.key`, or\n\
    [broker.mosquitto.tls] ca_file, cert_file, key_file and `ota broker mosquitto`.\n\
    Clients: [broker] url = \"mqtts://broker.example.com:8883\", ca_file = \"pki/ca.crt\";\n\
    devices: ota devices provision ID... --mtls --ca pki/ --out factory/ --config ota.toml")]
pub struct Init {
    /// The directory to write into; created if missing.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// A DNS name of the broker (repeatable); clients connecting to it by
    /// this name accept its certificate. Default, with no --ip either:
    /// localhost.
    #[arg(long = "host", value_name = "NAME")]
    hosts: Vec<String>,
    /// An IP address of the broker (repeatable). Default, with no --host
    /// either: 127.0.0.1.
    #[arg(long = "ip", value_name = "IP")]
    ips: Vec<IpAddr>,
    /// The CA's name (its subject CN). Default: "ota fleet CA" and a
    /// random tag, so that two fleets' CAs never share a name.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// How long the CA is valid, in days.
    #[arg(long, value_name = "DAYS", default_value_t = pki::CA_DAYS)]
    ca_days: u32,
    /// How long the server certificate is valid, in days.
    #[arg(long, value_name = "DAYS", default_value_t = pki::SERVER_DAYS)]
    days: u32,
    /// Print a JSON summary (files, names, SHA-256 fingerprints).
    #[arg(long)]
    json: bool,
}

/// Sign client certificates (CN = each ID) with the CA of `ota pki init`.
///
/// Writes ID.crt and ID.key (mode 0600) into DIR for every ID: a device id,
/// or a name for the bridge or an operator. A broker with mutual TLS
/// (Mosquitto's `use_identity_as_username`, the embedded broker's
/// `client_ca_file`) takes the CN as the client's identity, so a device's
/// certificate must carry its own id. `ota devices provision --mtls --ca
/// DIR` makes and writes device certificates into the provisioning files
/// itself; this command is for files of their own.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    ota pki device dev-0001 dev-0002 --ca pki/ --out pki/devices/\n  \
    ota pki device bridge alice --ca pki/ --out pki/clients/   # the bridge's and an operator's\n\n\
    Then: [broker] client_cert = \"pki/clients/bridge.crt\", client_key = \"pki/clients/bridge.key\";\n\
    ota ... --client-cert pki/clients/alice.crt --client-key pki/clients/alice.key")]
pub struct Device {
    /// The names (CN) to certify: device ids, or the bridge's / an
    /// operator's name (1 to 64 characters of [A-Za-z0-9._-]).
    #[arg(value_name = "ID", required = true)]
    ids: Vec<DeviceId>,
    /// The directory of `ota pki init` (ca.crt, ca.key).
    #[arg(long, value_name = "DIR")]
    ca: PathBuf,
    /// Where to write ID.crt and ID.key; created if missing.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// How long each certificate is valid, in days.
    #[arg(long, value_name = "DAYS", default_value_t = pki::DEVICE_DAYS)]
    days: u32,
    /// Print a JSON summary ({"certificates": [{"id", "cert", "key", "sha256"}]}).
    #[arg(long)]
    json: bool,
}

/// One certificate written, as `--json` shows it.
#[derive(serde::Serialize)]
struct Written {
    id: String,
    cert: PathBuf,
    key: PathBuf,
    sha256: String,
}

fn create_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

/// Refuses before anything is written if one of `paths` exists.
fn none_exists(paths: &[&Path]) -> anyhow::Result<()> {
    for p in paths {
        if p.exists() {
            bail!(
                "{} exists: certificates and keys are never overwritten (move it away to make a new one)",
                p.display()
            );
        }
    }
    Ok(())
}

/// Writes a certificate and its key.
fn write_pair(cert: &Path, key: &Path, issued: &Issued) -> anyhow::Result<()> {
    pki::write_private(key, &issued.key_pem)?;
    pki::write_public(cert, &issued.cert_pem)?;
    Ok(())
}

/// "ota fleet CA" and 8 hex characters of the clock and the process id:
/// a CA of another `ota pki init` has another name, so a client given the
/// wrong one is told "unknown CA" (same-named CAs fail as a bad signature).
fn default_ca_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let tag = (nanos as u64 ^ u64::from(std::process::id()).rotate_left(32)) as u32;
    format!("ota fleet CA {tag:08x}")
}

/// The server certificate's names: --host then --ip, each once.
fn server_names(hosts: &[String], ips: &[IpAddr]) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = Vec::new();
    for h in hosts {
        if h.is_empty() || h.contains(['/', ':', ' ']) {
            bail!(
                "--host {h:?}: give a DNS name such as broker.example.com (addresses go in --ip)"
            );
        }
        names.push(h.to_ascii_lowercase());
    }
    names.extend(ips.iter().map(IpAddr::to_string));
    if names.is_empty() {
        names = vec!["localhost".into(), "127.0.0.1".into()];
    }
    names.dedup();
    Ok(names)
}

impl Init {
    fn run(self) -> anyhow::Result<()> {
        let names = server_names(&self.hosts, &self.ips)?;
        let dir = &self.out;
        let (ca_crt, ca_key) = (dir.join(pki::CA_CERT), dir.join(pki::CA_KEY));
        let (srv_crt, srv_key) = (dir.join(pki::SERVER_CERT), dir.join(pki::SERVER_KEY));
        none_exists(&[&ca_crt, &ca_key, &srv_crt, &srv_key])?;
        let name = self.name.clone().unwrap_or_else(default_ca_name);
        let ca = FleetCa::generate(&name, self.ca_days)?;
        let server = ca.issue_server(&names, Validity::days(self.days))?;
        create_dir(dir)?;
        pki::write_private(&ca_key, &ca.key_pem())?;
        pki::write_public(&ca_crt, ca.cert_pem())?;
        write_pair(&srv_crt, &srv_key, &server)?;
        let ca_sha256 = tls::fingerprint_pem(ca.cert_pem())?;
        if self.json {
            let v = serde_json::json!({
                "ca_cert": ca_crt,
                "ca_key": ca_key,
                "ca_sha256": ca_sha256,
                "ca_name": name,
                "server_cert": srv_crt,
                "server_key": srv_key,
                "server_sha256": server.fingerprint(),
                "names": names,
                "ca_days": self.ca_days,
                "server_days": self.days,
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
            return Ok(());
        }
        println!(
            "CA         {} (key {}, mode 0600: keep it offline)",
            ca_crt.display(),
            ca_key.display()
        );
        println!(
            "server     {} (key {}) for {}",
            srv_crt.display(),
            srv_key.display(),
            names.join(", ")
        );
        println!(
            "next: `ota pki device ID... --ca {} --out DIR` for client certificates; clients set ca_file = {:?}",
            dir.display(),
            ca_crt.display().to_string()
        );
        Ok(())
    }
}

impl Device {
    fn run(self) -> anyhow::Result<()> {
        let ca = FleetCa::load(&self.ca)?;
        let files: Vec<(PathBuf, PathBuf)> = self
            .ids
            .iter()
            .map(|id| pki::device_files(&self.out, id.as_str()))
            .collect();
        for (c, k) in &files {
            none_exists(&[c, k])?;
        }
        create_dir(&self.out)?;
        let mut written = Vec::with_capacity(self.ids.len());
        for (id, (cert, key)) in self.ids.iter().zip(files) {
            let issued = ca.issue_device(id.as_str(), Validity::days(self.days))?;
            write_pair(&cert, &key, &issued)?;
            written.push(Written {
                id: id.to_string(),
                cert,
                key,
                sha256: issued.fingerprint(),
            });
        }
        if self.json {
            let v = serde_json::json!({ "certificates": written });
            println!("{}", serde_json::to_string_pretty(&v)?);
            return Ok(());
        }
        for w in &written {
            println!("{}\t{}\t{}", w.id, w.cert.display(), w.key.display());
        }
        println!(
            "signed {} certificate(s) with the CA in {} (keys mode 0600)",
            written.len(),
            self.ca.display()
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_default_to_loopback_and_refuse_urls() {
        assert_eq!(server_names(&[], &[]).unwrap(), ["localhost", "127.0.0.1"]);
        let n = server_names(&["Broker.Example".into()], &["10.0.0.5".parse().unwrap()]).unwrap();
        assert_eq!(n, ["broker.example", "10.0.0.5"]);
        assert!(server_names(&["mqtts://b".into()], &[]).is_err());
    }
}
