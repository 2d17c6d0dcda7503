//! `ota broker mosquitto`: PROTOCOL.md E1 for an external Mosquitto, as
//! its conf, password and ACL files (`bridge::mosquitto`).

use std::path::PathBuf;

use anyhow::bail;
use bridge::mosquitto;

use crate::Run;

/// Files for an external MQTT broker.
#[derive(clap::Subcommand)]
pub enum Broker {
    Mosquitto(Mosquitto),
}

impl Run for Broker {
    fn run(self) -> anyhow::Result<()> {
        match self {
            Broker::Mosquitto(m) => m.run(),
        }
    }
}

/// Write Mosquitto's conf, password and ACL files for the registry.
///
/// Mosquitto then enforces PROTOCOL.md E1 as the embedded broker does:
/// every device logs in with its own provisioned password on the devices'
/// listener, where its client id is its username (no one takes another
/// device's session), and may publish and read only its own topics, its
/// groups' and the artifacts announced to it; revoked and pending devices
/// are refused. The bridge and the operators log in on a second listener
/// ([broker] url) with their own accounts. Passwords are written as
/// salted hashes only.
///
/// Run it once before the first start of Mosquitto, with `ota serve`
/// stopped (it reads the registry from [bridge] data_dir). From then on
/// `ota serve` keeps [broker.mosquitto] dir current itself: every
/// provisioning, revocation and group change rewrites the files (each a
/// temp file renamed over the old one) and sends Mosquitto SIGHUP.
#[derive(clap::Args)]
#[command(
    after_help = "The config needs an external broker and its [broker.mosquitto]:\n\n  \
    [broker]\n  \
    mode = \"external\"\n  \
    url = \"mqtt://127.0.0.1:1884\"       # Mosquitto's service listener: bridge and operators\n  \
    username = \"ota-bridge\"\n  \
    password = \"change-me\"\n  \
    [broker.mosquitto]\n  \
    dir = \"/etc/mosquitto/ota\"          # where the files go (default of --out)\n  \
    pid_file = \"/run/mosquitto/ota.pid\" # the bridge sends this pid SIGHUP\n  \
    devices_listen = \"0.0.0.0:1883\"     # the devices' listener\n  \
    [broker.mosquitto.operators]        # operators' logins ([operator] username/password)\n  \
    alice = \"change-me-too\"\n  \
    [[broker.mosquitto.edges]]          # optional, per edge broker with its own devices:\n  \
    name = \"plant-a\"                  #   its files in DIR/edges/plant-a/\n  \
    pid_file = \"/run/mosquitto/plant-a.pid\"\n  \
    device_prefixes = [\"plant-a-\"]     #   the device ids it serves begin so\n\n\
    Example:\n  \
    ota broker mosquitto --config ota.toml --out /etc/mosquitto/ota\n  \
    mosquitto -c /etc/mosquitto/ota/mosquitto.conf\n  \
    ota serve --config ota.toml\n\n\
    Mosquitto must be able to read the files (mode 0640: put its user in the group of the\n\
    files' owner) and the bridge's user to send it SIGHUP (run both as one user, or as root).\n\
    See docs/operations.md, \"Running against Mosquitto\"."
)]
pub struct Mosquitto {
    /// The config file (ota.toml) of the bridge.
    #[arg(long, value_name = "FILE", env = "OTA_CONFIG")]
    config: PathBuf,
    /// Where to write the files; default: [broker.mosquitto] dir.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Print a JSON summary (for scripts): {"dir", "conf", "files",
    /// "devices", "devices_with_grants", "bridge", "operators",
    /// "devices_listen", "service_listen", "pid_file", "edges": [{"name",
    /// "dir", "devices"}]}.
    #[arg(long)]
    json: bool,
}

impl Run for Mosquitto {
    fn run(self) -> anyhow::Result<()> {
        let config = bridge::Config::load(&self.config)?;
        let Some(m) = config.mosquitto().cloned() else {
            bail!(
                "{} has no [broker.mosquitto]: set [broker] mode = \"external\" with url, username \
                 and password, and add [broker.mosquitto] dir (see `ota broker mosquitto --help`)",
                self.config.display()
            );
        };
        let e = mosquitto::export(&config, &m, self.out.as_deref())?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&e)?);
            return Ok(());
        }
        for f in std::iter::once(&e.conf).chain(&e.files) {
            println!("wrote {}", f.display());
        }
        println!(
            "{} device(s) may log in on {} ({} with group or artifact grants); the bridge ({}) \
             and {} operator(s) on {}",
            e.devices,
            e.devices_listen,
            e.devices_with_grants,
            e.bridge.as_deref().unwrap_or("no account"),
            e.operators.len(),
            e.service_listen,
        );
        for edge in &e.edges {
            println!(
                "edge {}: {} device(s) in {}/{{devices.passwd,devices.acl}} (its password_file and \
                 acl_file)",
                edge.name,
                edge.devices,
                edge.dir.display()
            );
        }
        println!("start Mosquitto with: mosquitto -c {}", e.conf.display());
        match &e.pid_file {
            Some(p) => println!(
                "`ota serve` keeps {} current and sends SIGHUP to the pid in {}",
                m.dir.display(),
                p.display()
            ),
            None => println!(
                "no [broker.mosquitto] pid_file: `ota serve` rewrites {} but cannot tell \
                 Mosquitto to reload them; set pid_file",
                m.dir.display()
            ),
        }
        Ok(())
    }
}
