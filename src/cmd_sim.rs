//! `ota sim`: the fleet simulator (`device_sim::fleet`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bridge::client::{ClientOptions, OpsClient};
use device_sim::fleet::run::{run_sim, SimOptions};
use device_sim::fleet::{FleetConfig, FleetTls, Profile};
use schemas::keys::VerifyingKey;
use schemas::provisioning::{Provisioning, ProvisioningTls};
use schemas::DeviceId;

use crate::{rt, Run};

/// Simulate a fleet of devices running the reference device agent.
///
/// Each simulated device has its own MQTT connection, its own state (kept
/// in memory, so a simulated power loss resumes from it), verifies every
/// manifest and block, and reports every Status until the bridge
/// acknowledges it. The profile sets arches, labels, installed versions,
/// trusted release keys and fault rates (block loss, disconnects, power
/// loss, install and boot failures, busy deferral, a wrong key).
///
/// Connects are paced (the profile's connects_per_second, 500 by default).
/// Live counters are drawn on stderr; stop with Ctrl-C (or --duration).
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  ota sim --config ota-quickstart/ota.toml --devices 100   # a setup of `ota init`\n  \
                        ota sim --broker 127.0.0.1:1883 --devices 1000 --profile config/fleet.toml\n  \
                        ota sim --broker 127.0.0.1:1883 --factory-line press-4 --devices 200 --json"
)]
pub struct Sim {
    /// The broker: HOST:PORT, mqtt://HOST:PORT or mqtts://HOST[:PORT]
    /// (TLS); default: the broker of --config, else the broker_url of the
    /// --provisioning files, else 127.0.0.1:1883.
    #[arg(long, value_name = "HOST:PORT", env = "OTA_BROKER")]
    broker: Option<String>,
    /// Everything from the setup of this ota.toml (`ota init` writes one):
    /// its broker, provisioning through its bridge (as --provision), and
    /// the profile fleet.toml beside it (unless --profile).
    #[arg(long, value_name = "OTA_TOML", conflicts_with_all = ["provision", "provisioning"])]
    config: Option<PathBuf>,
    /// How many devices to simulate.
    #[arg(long, value_name = "N", default_value_t = 100)]
    devices: usize,
    /// The fleet profile (see config/fleet.toml). Without one: esp32
    /// devices with main 1.0.0, no labels, no faults, and the release keys
    /// of their provisioning (none without --provision or --provisioning).
    #[arg(long, value_name = "FILE")]
    profile: Option<PathBuf>,
    /// Simulate a production line: the devices are named NAME-00001...,
    /// share arch, versions and labels (line = NAME), and power up together.
    #[arg(long, value_name = "NAME")]
    factory_line: Option<String>,
    /// The number of the first device (to run several simulators side by side).
    #[arg(long, value_name = "N", default_value_t = 1)]
    first: usize,
    /// Stop after this many seconds instead of at Ctrl-C.
    #[arg(long, value_name = "SECS")]
    duration: Option<u64>,
    /// Once stopped (Ctrl-C, SIGTERM, --duration), wait at most this many
    /// seconds for every Status sent to be acknowledged before the
    /// summary, instead of summarizing at once.
    #[arg(long, value_name = "SECS")]
    settle: Option<u64>,
    /// Print a JSON summary on stdout at the end (counters by state and by
    /// failure reason, acks, injected faults).
    #[arg(long)]
    json: bool,
    /// Log the devices in with the provisioning files in DIR (ID.json,
    /// written by `ota devices provision`); a device without a file logs
    /// in without credentials.
    #[arg(long, value_name = "DIR", conflicts_with = "provision")]
    provisioning: Option<PathBuf>,
    /// Provision the simulated devices through the bridge of this config
    /// first (fresh passwords, kept in memory; devices provisioned before
    /// get new ones), with its [operator] key and login.
    #[arg(long, value_name = "OTA_TOML")]
    provision: Option<PathBuf>,
    /// With mqtts://: the CA certificate (PEM) the broker's certificate
    /// must chain to, over the provisioning files' (default: theirs, else
    /// the system's roots). Each device sends the certificate of its
    /// provisioning file, if it has one (`ota devices provision --mtls`).
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,
}

/// Logins from a directory of provisioning files.
type Logins = BTreeMap<DeviceId, (String, String)>;

/// The keys provisioning files carry, each once, and their TLS.
#[derive(Default)]
struct FileKeys {
    /// Director keys (E2).
    directors: Vec<VerifyingKey>,
    /// Trusted release keys.
    release_keys: Vec<VerifyingKey>,
    /// The first file's broker_url.
    broker_url: Option<String>,
    /// Each device's `tls`, with the file it came from.
    tls: Vec<(DeviceId, PathBuf, ProvisioningTls)>,
}

fn logins_from_dir(dir: &Path) -> anyhow::Result<(Logins, FileKeys)> {
    let mut out = BTreeMap::new();
    let mut keys = FileKeys::default();
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for e in entries {
        let path = e?.path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let p = Provisioning::from_json(&bytes).with_context(|| path.display().to_string())?;
        for k in &p.director_keys {
            if !keys.directors.contains(k) {
                keys.directors.push(*k);
            }
        }
        for k in &p.release_keys {
            if !keys.release_keys.contains(k) {
                keys.release_keys.push(*k);
            }
        }
        keys.broker_url.get_or_insert_with(|| p.broker_url.clone());
        if let Some(t) = p.tls {
            keys.tls.push((p.device_id.clone(), path.clone(), t));
        }
        out.insert(p.device_id.clone(), (p.username, p.password));
    }
    if out.is_empty() {
        bail!(
            "{} holds no provisioning files (ID.json): write them with `ota devices provision`",
            dir.display()
        );
    }
    Ok((out, keys))
}

impl Run for Sim {
    fn run(self) -> anyhow::Result<()> {
        if self.devices == 0 {
            bail!("--devices must be at least 1");
        }
        let config = match &self.config {
            Some(path) => Some(bridge::Config::load(path)?),
            None => None,
        };
        let files = match &self.provisioning {
            Some(dir) => Some(logins_from_dir(dir)?),
            None => None,
        };
        let file_url = files.as_ref().and_then(|(_, k)| k.broker_url.clone());
        let (host, port, use_tls) = match (&self.broker, &config, &file_url) {
            (Some(b), _, _) => crate::cmd_fleet::parse_broker(b)?,
            (None, Some(c), _) => (c.endpoint().host, c.endpoint().port, c.endpoint().tls),
            (None, None, Some(url)) => crate::cmd_fleet::parse_broker(url)?,
            (None, None, None) => ("127.0.0.1".to_string(), 1883, false),
        };
        let tls_files = files
            .as_ref()
            .map(|(_, k)| k.tls.as_slice())
            .unwrap_or_default();
        let fleet_tls = fleet_tls(use_tls, self.ca_file.as_deref(), tls_files, &host, port)?;
        let profile_path = self.profile.clone().or_else(|| {
            let beside = self.config.as_ref()?.with_file_name("fleet.toml");
            beside.is_file().then_some(beside)
        });
        let profile = match &profile_path {
            Some(p) => {
                // Found beside --config: say which file it was.
                if self.profile.is_none() {
                    eprintln!("fleet profile: {}", p.display());
                }
                Profile::load(p)?
            }
            None => Profile::default(),
        };
        let labelled = !profile.labels.is_empty();
        let mut fleet = FleetConfig::new(host, port, self.devices, profile);
        fleet.first = self.first;
        fleet.factory_line = self.factory_line;
        fleet.tls = fleet_tls;
        if let Some((logins, files)) = files {
            fleet.logins = Arc::new(logins);
            // Devices flashed with these files hold their keys.
            if fleet.profile.directors.is_empty() {
                fleet.profile.directors = files.directors;
            }
            if fleet.profile.trusted.is_empty() {
                fleet.profile.trusted = files.release_keys;
            }
        }
        let bridge_config = match (&self.provision, config) {
            (Some(path), _) => Some(bridge::Config::load(path)?),
            (None, c) => c,
        };
        if let Some(config) = bridge_config {
            // Provisioned by this bridge: with its director key (E2) and its
            // release keys, as `ota devices provision` writes them.
            if fleet.profile.directors.is_empty() {
                fleet.profile.directors = config
                    .bridge
                    .director_key
                    .iter()
                    .map(|k| k.verifying_key())
                    .collect();
            }
            if fleet.profile.trusted.is_empty() {
                fleet.profile.trusted = config.bridge.release_keys.values().copied().collect();
            }
            let opts = ClientOptions::from_config(&config)?;
            let ids = fleet.ids()?;
            let trusts = fleet.profile.trusted.clone();
            let logins = rt::block_on(async move {
                let client = OpsClient::connect(opts).await?;
                let r = bridge::client::provision::logins(&client, &ids, Some(&trusts)).await;
                client.close().await;
                Ok::<_, anyhow::Error>(r?)
            })??;
            eprintln!(
                "provisioned {} simulated device(s) through the bridge",
                logins.len()
            );
            fleet.logins = Arc::new(logins);
        }
        if let Some(w) = fleet_warning(
            !fleet.profile.trusted.is_empty(),
            labelled,
            fleet.factory_line.is_some(),
        ) {
            eprintln!("{w}");
        }
        let (summary_host, summary_port) = (fleet.host.clone(), fleet.port);
        let with_login: BTreeSet<DeviceId> = fleet.logins.keys().cloned().collect();
        let opts = SimOptions {
            fleet,
            duration: self.duration.map(Duration::from_secs),
            live: true,
            stop_on_refused_login: true,
            settle: self.settle.map(Duration::from_secs),
        };
        let summary = rt::block_on(run_sim(opts, rt::shutdown_signal()))??;
        if let Some(f) = &summary.stats.first_tls_failure {
            bail!("{}: {}; the simulator stopped", f.device, f.reason);
        }
        if let Some(r) = &summary.stats.first_refused {
            let how = if with_login.contains(&r.device) {
                "with its provisioning credentials: it is not provisioned on this bridge, revoked, or they are not its current ones (`ota devices rotate` writes new ones)"
            } else {
                "without credentials (no provisioning file for it): give --provisioning DIR with its ID.json, or --provision OTA_TOML to provision the simulated fleet"
            };
            bail!(
                "the broker at {summary_host}:{summary_port} refused {}'s login ({}) {how}; the simulator stopped",
                r.device,
                r.reason
            );
        }
        if summary.stats.ever_connected == 0 {
            let why = summary
                .stats
                .last_connect_error
                .clone()
                .unwrap_or_else(|| "no attempt finished".into());
            bail!(
                "no device could connect to {}:{} ({} attempts; the last one: {why}). A broker with accounts refuses devices without credentials: give --config OTA_TOML, --provisioning DIR or --provision OTA_TOML",
                summary_host,
                summary_port,
                summary.stats.connect_failures
            );
        }
        if self.json {
            println!("{}", serde_json::to_string_pretty(&summary)?);
        } else {
            eprintln!("{:.0}s {}", summary.seconds, summary.stats.line());
        }
        Ok(())
    }
}

/// The fleet's TLS for an `mqtts://` broker: each provisioned device's CA
/// and certificate (`--ca-file` over the CA), and for devices without a
/// file, `--ca-file` or the first file's CA or the system's roots. Every
/// file is parsed here, before a device connects.
fn fleet_tls(
    use_tls: bool,
    ca_file: Option<&Path>,
    files: &[(DeviceId, PathBuf, ProvisioningTls)],
    host: &str,
    port: u16,
) -> anyhow::Result<Option<FleetTls>> {
    if !use_tls {
        if ca_file.is_some() {
            bail!("--ca-file is for TLS, but the broker {host}:{port} is plain MQTT: give --broker mqtts://HOST[:PORT]");
        }
        return Ok(None);
    }
    let ca = match ca_file {
        Some(p) => Some(tls::roots_of(p, tls::read_certs("--ca-file", p)?)?),
        None => None,
    };
    let mut devices = BTreeMap::new();
    for (id, path, t) in files {
        let c = device_sim::agent::tls_config::client_config(Some(t), ca.clone(), path)?;
        devices.insert(id.clone(), c);
    }
    let shared = match files.first() {
        Some((_, path, t)) if ca.is_none() => {
            let ca_only = ProvisioningTls {
                client_cert_pem: None,
                client_key_pem: None,
                ..t.clone()
            };
            device_sim::agent::tls_config::client_config(Some(&ca_only), None, path)?
        }
        _ => device_sim::agent::tls_config::client_config(None, ca, Path::new("--ca-file"))?,
    };
    Ok(Some(FleetTls {
        shared,
        devices: Arc::new(devices),
    }))
}

/// What to tell the user about the fleet before it starts: a fleet that
/// trusts no release key refuses every release, and one without labels is
/// found by no selector. Say so before they wonder why a campaign gets
/// nowhere.
fn fleet_warning(trusts_a_key: bool, labelled: bool, factory_line: bool) -> Option<String> {
    if !trusts_a_key {
        let labels = if labelled { "" } else { " and carry no labels" };
        return Some(format!(
            "warning: the simulated devices trust no release key{labels}: they will refuse every release as `unknown_key`. \
             Give --config OTA_TOML (`ota init DIR` writes a setup), --provision OTA_TOML, --provisioning DIR, \
             or --profile FILE with [keys] trusted (config/fleet.toml shows one)"
        ));
    }
    (!labelled && !factory_line).then(|| {
        "note: without a profile the devices carry no labels, so only a group with an empty selector or `id=...` finds them; give --profile FILE (config/fleet.toml shows one)".to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::fleet_warning;

    #[test]
    fn a_fleet_without_keys_or_labels_is_warned_about() {
        let w = fleet_warning(false, false, false).expect("a warning");
        assert!(
            w.contains("trust no release key and carry no labels"),
            "{w}"
        );
        assert!(w.contains("ota init DIR"), "{w}");
        let w = fleet_warning(false, true, false).expect("a warning");
        assert!(w.contains("trust no release key:"), "{w}");
        let n = fleet_warning(true, false, false).expect("a note");
        assert!(n.contains("carry no labels"), "{n}");
        assert_eq!(fleet_warning(true, true, false), None);
        // A factory line's devices carry its label.
        assert_eq!(fleet_warning(true, false, true), None);
    }
}
