//! `ota devices provision | rotate | revoke`: device credentials. The
//! password is generated here, written into the device's provisioning file
//! (`schemas::provisioning`), and only its `$6$` hash is sent to the bridge
//! in a signed command.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use bridge::client::provision;
use bridge::client::OpsClient;
use bridge::ops::identity_cmds::CredentialView;
use schemas::keys::VerifyingKey;
use schemas::ops::{Command, MAX_PROVISION_BATCH};
use schemas::provisioning::{
    generate_password, Provisioning, ProvisioningTls, PROVISIONING_VERSION,
};
use schemas::DeviceId;
use tls::pki::{FleetCa, Validity};

use crate::conn::Conn;
use crate::keyfile;
use crate::rt;

/// Give devices their own credentials: one provisioning file each.
///
/// For every device id, a random 256-bit password is generated here and
/// written with the broker URL, the topic prefix, the trusted release keys
/// and the director keys into DIR/ID.json (mode 0600), for a factory line
/// to flash. The bridge is sent only a salted hash of it, in a signed
/// command; from then on the device logs in with username = its id and
/// that password, and no one else can log in as it.
///
/// With TLS, --ca PKI_DIR puts the fleet CA (`ota pki init`) in each file,
/// and --mtls a certificate and key of the device's own (CN = its id),
/// made here: on a broker with mutual TLS it logs in by certificate.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    ota devices provision dev-0001 dev-0002 --labels customer=acme,site=berlin --out factory/ --config ota.toml\n  \
    ota devices provision --csv devices.csv --out factory/ --config ota.toml\n  \
    ota devices provision dev-0001 --mtls --ca pki/ --out factory/ --config ota.toml   # mutual TLS\n\n\
    devices.csv: a header line `id,LABEL,LABEL...`, then one device a line:\n  \
    id,customer,site\n  dev-0001,acme,berlin\n  dev-0002,globex,austin")]
pub struct Provision {
    /// Device ids (1 to 64 characters of [A-Za-z0-9._-]).
    #[arg(value_name = "ID")]
    ids: Vec<DeviceId>,
    /// Devices from a CSV file: header `id,LABEL...`, one device a line.
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Labels for every device given: k=v,k=v (the device reports them in
    /// its Hello).
    #[arg(long, value_name = "K=V,...")]
    labels: Option<String>,
    /// Where to write the provisioning files (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The broker URL devices use (mqtt://HOST:PORT); default: the one of
    /// --config (with [broker.mosquitto], its devices_listen port) or
    /// --broker.
    #[arg(long, value_name = "URL")]
    broker_url: Option<String>,
    /// A trusted release key file (.pub), besides the config's
    /// [bridge] release_keys. Repeatable.
    #[arg(long = "release-key", value_name = "FILE")]
    release_keys: Vec<PathBuf>,
    /// Print JSON (for scripts): {"devices": [{"id", "file"}, ...]}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    tls: DeviceTlsArgs,
    #[command(flatten)]
    conn: Conn,
}

/// What a provisioning file carries for TLS.
#[derive(clap::Args)]
struct DeviceTlsArgs {
    /// Give each device a client certificate (CN = its id) signed by the CA
    /// of --ca, in its provisioning file (tls.client_cert_pem and
    /// client_key_pem): it logs in by certificate on a broker with mutual
    /// TLS. Needs --ca.
    #[arg(long, requires = "ca")]
    mtls: bool,
    /// The directory of `ota pki init` (ca.crt, and ca.key with --mtls):
    /// its ca.crt goes into each file (tls.ca_cert_pem), the CA the
    /// device checks the broker's certificate against.
    #[arg(long, value_name = "PKI_DIR")]
    ca: Option<PathBuf>,
}

/// Give a device a new password (its old one is refused from now on).
#[derive(clap::Args)]
#[command(after_help = "Example:\n  ota devices rotate dev-0001 --out factory/ --config ota.toml")]
pub struct Rotate {
    /// The device id.
    id: DeviceId,
    /// Where to write its new provisioning file (an old one is replaced).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The broker URL the device uses; default: the one of --config.
    #[arg(long, value_name = "URL")]
    broker_url: Option<String>,
    /// A trusted release key file (.pub), besides the config's
    /// [bridge] release_keys. Repeatable.
    #[arg(long = "release-key", value_name = "FILE")]
    release_keys: Vec<PathBuf>,
    /// Print JSON (for scripts): {"id", "file"}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    tls: DeviceTlsArgs,
    #[command(flatten)]
    conn: Conn,
}

/// One provisioning file written, as `--json` prints it.
#[derive(serde::Serialize)]
struct Written {
    id: DeviceId,
    file: PathBuf,
}

/// Revoke a device: disconnected at once, refused at every login after.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  ota devices revoke dev-0001 --config ota.toml\n\n\
    To let it in again, `ota devices rotate` gives it new credentials."
)]
pub struct Revoke {
    /// The device id.
    id: DeviceId,
    /// Print JSON (for scripts).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

/// What every file of one run shares.
struct Template {
    broker_url: String,
    prefix: String,
    release_keys: Vec<VerifyingKey>,
    /// The director keys devices trust (E2): the public half of the
    /// config's `director_key`, then every `director_keys_next` key
    /// (rotation: devices provisioned now trust the next key already).
    director_keys: Vec<VerifyingKey>,
    /// `--ca`: the fleet CA, whose certificate every file carries.
    ca: Option<FleetCa>,
    /// `--mtls`: each file gets a certificate of its own, signed by `ca`.
    mtls: bool,
}

fn template(
    conn: &Conn,
    broker_url: Option<String>,
    extra_keys: &[PathBuf],
    tls_args: &DeviceTlsArgs,
) -> anyhow::Result<Template> {
    let opts = conn.options()?;
    let config = conn.config_file().map(bridge::Config::load).transpose()?;
    let devices_port = config
        .as_ref()
        .and_then(|c| c.mosquitto())
        .map(|m| m.devices_listen.port());
    let director_keys = config.as_ref().map(director_keys).unwrap_or_default();
    let mut release_keys: Vec<VerifyingKey> = config
        .map(|c| c.bridge.release_keys.into_values().collect())
        .unwrap_or_default();
    for k in extra_keys {
        release_keys.push(keyfile::load_verifying_key(k)?);
    }
    if release_keys.is_empty() {
        bail!("no release keys to trust: list them in the config's [bridge] release_keys, or give --release-key FILE.pub");
    }
    // With Mosquitto (ota broker mosquitto), devices have a listener of
    // their own on the same host.
    let port = devices_port.unwrap_or(opts.port);
    let scheme = if opts.tls.is_some() { "mqtts" } else { "mqtt" };
    let broker_url = broker_url.unwrap_or_else(|| format!("{scheme}://{}:{port}", opts.host));
    let Some((_, _, url_tls)) = schemas::provisioning::parse_broker_url(&broker_url) else {
        bail!("--broker-url {broker_url:?}: use mqtt://HOST:PORT or mqtts://HOST:PORT");
    };
    if tls_args.ca.is_some() && !url_tls {
        bail!("--ca and --mtls are for TLS, but the devices' broker is {broker_url}: give --broker-url mqtts://HOST:PORT");
    }
    let ca =
        match &tls_args.ca {
            Some(dir) => Some(FleetCa::load(dir).with_context(|| {
                format!("--ca {}: the directory of `ota pki init`", dir.display())
            })?),
            None => None,
        };
    Ok(Template {
        broker_url,
        prefix: opts.topics.prefix().to_string(),
        release_keys,
        director_keys,
        ca,
        mtls: tls_args.mtls,
    })
}

/// What a provisioning file's `director_keys` holds: the current director
/// key's public half first, then the next ones of `director_keys_next`.
fn director_keys(config: &bridge::Config) -> Vec<VerifyingKey> {
    let b = &config.bridge;
    b.director_key
        .as_ref()
        .map(|k| k.verifying_key())
        .into_iter()
        .chain(b.director_keys_next.values().copied())
        .collect()
}

impl Template {
    fn file(
        &self,
        id: &DeviceId,
        labels: BTreeMap<String, String>,
    ) -> anyhow::Result<Provisioning> {
        Ok(Provisioning {
            version: PROVISIONING_VERSION,
            device_id: id.clone(),
            broker_url: self.broker_url.clone(),
            prefix: self.prefix.clone(),
            username: id.to_string(),
            password: generate_password(),
            labels,
            release_keys: self.release_keys.clone(),
            director_keys: self.director_keys.clone(),
            tls: self.tls(id)?,
        })
    }

    /// The file's `tls`: the CA, and with `--mtls` a fresh certificate and
    /// key for the device (CN = its id).
    fn tls(&self, id: &DeviceId) -> anyhow::Result<Option<ProvisioningTls>> {
        let Some(ca) = &self.ca else { return Ok(None) };
        let (client_cert_pem, client_key_pem) = if self.mtls {
            let issued = ca.issue_device(id.as_str(), Validity::days(tls::pki::DEVICE_DAYS))?;
            (Some(issued.cert_pem), Some(issued.key_pem))
        } else {
            (None, None)
        };
        Ok(Some(ProvisioningTls {
            ca_cert_pem: ca.cert_pem().to_string(),
            client_cert_pem,
            client_key_pem,
        }))
    }
}

/// Writes `DIR/ID.json` with mode 0600; `replace`: over an old one.
fn write_file(dir: &Path, p: &Provisioning, replace: bool) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("{}.json", p.device_id));
    let mut o = OpenOptions::new();
    o.write(true);
    if replace {
        o.create(true).truncate(true);
    } else {
        o.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o.open(&path).with_context(|| {
        if path.exists() && !replace {
            format!("{} exists already: the device is provisioned (`ota devices rotate {}` gives it a new password)", path.display(), p.device_id)
        } else {
            format!("cannot write {}", path.display())
        }
    })?;
    f.write_all(p.to_json().as_bytes())
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

fn create_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {} to its owner", dir.display()))?;
    }
    Ok(())
}

/// `k=v,k=v`.
pub(crate) fn parse_labels(s: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for pair in s.split(',').filter(|p| !p.trim().is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            bail!("--labels {s:?}: {pair:?} is not key=value");
        };
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

/// A CSV of devices: header `id,LABEL...`, one device a line. No quoting:
/// ids and labels never need it.
pub(crate) fn parse_csv(text: &str) -> anyhow::Result<Vec<(DeviceId, BTreeMap<String, String>)>> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'));
    let Some((_, header)) = lines.next() else {
        bail!("the CSV is empty: it needs a header line `id,LABEL...`");
    };
    let cols: Vec<&str> = header.split(',').map(str::trim).collect();
    if cols.first() != Some(&"id") {
        bail!("the CSV's header must start with `id`, found {header:?}");
    }
    let mut out = Vec::new();
    for (n, line) in lines {
        if line.contains('"') {
            bail!("CSV line {}: quotes are not supported", n + 1);
        }
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if cells.len() != cols.len() {
            bail!(
                "CSV line {}: {} fields, the header has {}",
                n + 1,
                cells.len(),
                cols.len()
            );
        }
        let id = DeviceId::new(cells[0]).with_context(|| format!("CSV line {}", n + 1))?;
        let labels = cols[1..]
            .iter()
            .zip(&cells[1..])
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        out.push((id, labels));
    }
    Ok(out)
}

impl crate::Run for Provision {
    fn run(self) -> anyhow::Result<()> {
        let mut devices: Vec<(DeviceId, BTreeMap<String, String>)> = Vec::new();
        let common = match &self.labels {
            Some(s) => parse_labels(s)?,
            None => BTreeMap::new(),
        };
        for id in &self.ids {
            devices.push((id.clone(), common.clone()));
        }
        if let Some(csv) = &self.csv {
            let text = std::fs::read_to_string(csv)
                .with_context(|| format!("cannot read {}", csv.display()))?;
            for (id, mut labels) in parse_csv(&text)? {
                for (k, v) in &common {
                    labels.entry(k.clone()).or_insert_with(|| v.clone());
                }
                devices.push((id, labels));
            }
        }
        if devices.is_empty() {
            bail!("no devices to provision: give device ids, or --csv FILE");
        }
        let t = template(
            &self.conn,
            self.broker_url.clone(),
            &self.release_keys,
            &self.tls,
        )?;
        create_dir(&self.out)?;
        let opts = self.conn.options()?;
        let out = self.out.clone();
        let n = devices.len();
        let written = rt::block_on(async move {
            let client = OpsClient::connect(opts).await?;
            let result = provision_all(&client, &t, &out, devices).await;
            client.close().await;
            result
        })??;
        if self.json {
            let v = serde_json::json!({ "devices": written });
            println!("{}", serde_json::to_string_pretty(&v)?);
            return Ok(());
        }
        for w in &written {
            println!("{}\t{}", w.id, w.file.display());
        }
        println!(
            "provisioned {n} device(s); their files are in {} (mode 0600): flash each onto its device, then delete them here",
            self.out.display()
        );
        Ok(())
    }
}

async fn provision_all(
    client: &OpsClient,
    t: &Template,
    out: &Path,
    devices: Vec<(DeviceId, BTreeMap<String, String>)>,
) -> anyhow::Result<Vec<Written>> {
    let mut written = Vec::with_capacity(devices.len());
    let parts = devices.len().div_ceil(MAX_PROVISION_BATCH);
    for (i, chunk) in devices.chunks(MAX_PROVISION_BATCH).enumerate() {
        let files: Vec<Provisioning> = chunk
            .iter()
            .map(|(id, labels)| t.file(id, labels.clone()))
            .collect::<anyhow::Result<_>>()?;
        // The files first: a password the bridge knows the hash of must
        // never be lost.
        let mut paths = Vec::with_capacity(files.len());
        for f in &files {
            match write_file(out, f, false) {
                Ok(p) => paths.push(p),
                Err(e) => {
                    remove(&paths);
                    return Err(e);
                }
            }
        }
        let batch: Vec<_> = files
            .iter()
            .map(|f| (f.device_id.clone(), f.labels.clone(), f.password.clone()))
            .collect();
        let certs = cert_fingerprints(&files)?;
        // Only the last part's reply waits for an external broker's files.
        if let Err(e) = provision::send_part(
            client,
            &batch,
            &certs,
            provision::Mode::New,
            Some(&t.release_keys),
            i + 1 < parts,
        )
        .await
        {
            remove(&paths);
            bail!("{e}");
        }
        for (f, p) in files.iter().zip(paths) {
            written.push(Written {
                id: f.device_id.clone(),
                file: p,
            });
        }
    }
    Ok(written)
}

/// The SHA-256 fingerprint of each file's client certificate (`--mtls`),
/// for the registry's revocation list.
fn cert_fingerprints(files: &[Provisioning]) -> anyhow::Result<Vec<Option<String>>> {
    files
        .iter()
        .map(|f| {
            let pem = f.tls.as_ref().and_then(|t| t.client_cert_pem.as_deref());
            Ok(pem.map(tls::fingerprint_pem).transpose()?)
        })
        .collect()
}

fn remove(paths: &[PathBuf]) {
    for p in paths {
        let _ = std::fs::remove_file(p);
    }
}

impl crate::Run for Rotate {
    fn run(self) -> anyhow::Result<()> {
        let t = template(
            &self.conn,
            self.broker_url.clone(),
            &self.release_keys,
            &self.tls,
        )?;
        create_dir(&self.out)?;
        let file = t.file(&self.id, BTreeMap::new())?;
        // Written aside first, moved over the old file once the bridge took it.
        let tmp_dir = self.out.join(".rotating");
        create_dir(&tmp_dir)?;
        let tmp = write_file(&tmp_dir, &file, true)?;
        let batch = vec![(self.id.clone(), BTreeMap::new(), file.password.clone())];
        let certs = cert_fingerprints(std::slice::from_ref(&file))?;
        let trusts = t.release_keys.clone();
        let opts = self.conn.options()?;
        let result = rt::block_on(async move {
            let client = OpsClient::connect(opts).await?;
            let mode = provision::Mode::Rotate;
            let r = provision::send_batch_with_certs(&client, &batch, &certs, mode, Some(&trusts))
                .await;
            client.close().await;
            Ok::<_, anyhow::Error>(r?)
        })?;
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let path = self.out.join(format!("{}.json", self.id));
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))?;
        let _ = std::fs::remove_dir(&tmp_dir);
        if self.json {
            let w = Written {
                id: self.id.clone(),
                file: path,
            };
            println!("{}", serde_json::to_string_pretty(&w)?);
            return Ok(());
        }
        println!(
            "{}: new credentials in {}; the old password is refused from now on",
            self.id,
            path.display()
        );
        Ok(())
    }
}

impl crate::Run for Revoke {
    fn run(self) -> anyhow::Result<()> {
        let v: CredentialView = self.conn.call(Command::DeviceRevoke {
            id: self.id.clone(),
        })?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            println!(
                "{}: revoked; it is disconnected and refused at every login (`ota devices rotate {}` lets it in again)",
                v.id, v.id
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_labels() {
        let rows = parse_csv("id,customer,site\ndev-1,acme,berlin\n\ndev-2,globex,\n").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].1["site"], "berlin");
        assert!(!rows[1].1.contains_key("site"));
        assert!(parse_csv("name,x\na,b").is_err());
        assert!(parse_csv("id,x\na").is_err());
        assert!(parse_csv("id\nbad/id").is_err());
        assert!(parse_csv("").is_err());
        let l = parse_labels("a=1, b=2").unwrap();
        assert_eq!(l["b"], "2");
        assert!(parse_labels("a").is_err());
    }
}
