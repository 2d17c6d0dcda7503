//! `ota sim`: the fleet simulator (`device_sim::fleet`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bridge::client::{ClientOptions, OpsClient};
use device_sim::fleet::run::{run_sim, SimOptions};
use device_sim::fleet::{FleetConfig, Profile};
use schemas::keys::VerifyingKey;
use schemas::provisioning::Provisioning;
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
    after_help = "Examples:\n  ota sim --broker 127.0.0.1:1883 --devices 1000 --profile config/fleet.toml\n  \
                        ota sim --broker 127.0.0.1:1883 --factory-line press-4 --devices 200 --json"
)]
pub struct Sim {
    /// The broker: HOST:PORT or mqtt://HOST:PORT.
    #[arg(
        long,
        value_name = "HOST:PORT",
        env = "OTA_BROKER",
        default_value = "127.0.0.1:1883"
    )]
    broker: String,
    /// How many devices to simulate.
    #[arg(long, value_name = "N", default_value_t = 100)]
    devices: usize,
    /// The fleet profile (see config/fleet.toml). Without one: esp32
    /// devices with main 1.0.0, no faults, and no trusted release key.
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
}

/// Logins from a directory of provisioning files, and the director keys
/// they carry (E2).
type Logins = BTreeMap<DeviceId, (String, String)>;

fn logins_from_dir(dir: &Path) -> anyhow::Result<(Logins, Vec<VerifyingKey>)> {
    let mut out = BTreeMap::new();
    let mut directors: Vec<VerifyingKey> = Vec::new();
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
            if !directors.contains(k) {
                directors.push(*k);
            }
        }
        out.insert(p.device_id.clone(), (p.username, p.password));
    }
    if out.is_empty() {
        bail!(
            "{} holds no provisioning files (ID.json): write them with `ota devices provision`",
            dir.display()
        );
    }
    Ok((out, directors))
}

impl Run for Sim {
    fn run(self) -> anyhow::Result<()> {
        if self.devices == 0 {
            bail!("--devices must be at least 1");
        }
        let (host, port) = crate::cmd_fleet::parse_broker(&self.broker)?;
        let profile = match &self.profile {
            Some(p) => Profile::load(p)?,
            None => Profile::default(),
        };
        let mut fleet = FleetConfig::new(host, port, self.devices, profile);
        fleet.first = self.first;
        fleet.factory_line = self.factory_line;
        if let Some(dir) = &self.provisioning {
            let (logins, directors) = logins_from_dir(dir)?;
            fleet.logins = Arc::new(logins);
            if fleet.profile.directors.is_empty() {
                fleet.profile.directors = directors;
            }
        }
        if let Some(cfg) = &self.provision {
            let config = bridge::Config::load(cfg)?;
            // Provisioned by this bridge: with its director key (E2).
            if fleet.profile.directors.is_empty() {
                fleet.profile.directors = config
                    .bridge
                    .director_key
                    .iter()
                    .map(|k| k.verifying_key())
                    .collect();
            }
            let opts = ClientOptions::from_config(&config)?;
            let ids = fleet.ids()?;
            let logins = rt::block_on(async move {
                let client = OpsClient::connect(opts).await?;
                let r = bridge::client::provision::logins(&client, &ids).await;
                client.close().await;
                Ok::<_, anyhow::Error>(r?)
            })??;
            eprintln!(
                "provisioned {} simulated device(s) through the bridge",
                logins.len()
            );
            fleet.logins = Arc::new(logins);
        }
        let opts = SimOptions {
            fleet,
            duration: self.duration.map(Duration::from_secs),
            live: true,
        };
        let summary = rt::block_on(run_sim(opts, rt::shutdown_signal()))??;
        if summary.stats.ever_connected == 0 {
            let why = summary
                .stats
                .last_connect_error
                .clone()
                .unwrap_or_else(|| "no attempt finished".into());
            bail!(
                "no device could connect to {} ({} attempts; the last one: {why}). A broker with accounts refuses devices without credentials: give --provisioning DIR or --provision OTA_TOML",
                self.broker,
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
