//! `ota init DIR`: a working setup in one command (keys, `ota.toml`, a
//! simulator profile, an example devices CSV), and the next commands.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

use crate::cmd_keys::{write_pair, PAIRS};
use crate::Run;

/// Make a working setup in DIR: keys, a bridge config, a simulated fleet.
///
/// Writes into DIR:
///
/// - keys/: a release, an operator and a director key pair (`ota keygen`);
/// - ota.toml: `ota serve` with its embedded broker on loopback, accounts
///   for the bridge and the operator (random passwords), per-device
///   credentials for devices, the director key, the dashboard on loopback,
///   and the [operator] section the CLI reads with --config;
/// - fleet.toml: a simulator profile (`ota sim --config DIR/ota.toml`
///   reads it) whose devices trust the release and director keys and carry
///   labels for two customers (acme, globex) and two lines;
/// - devices.csv: an example for `ota devices provision --csv`.
///
/// The broker listens on 127.0.0.1:1883 and the dashboard on
/// 127.0.0.1:8080 when those ports are free, else on free ports that init
/// picks and prints. DIR must be empty or absent, unless --force (which
/// replaces the files init writes, keys included).
///
/// Everything sits in one directory so the first hour is one machine. In
/// production keys/release.key stays offline: only release.pub goes to
/// the bridge and the devices.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  ota init ota-quickstart\n  \
                        ota serve --config ota-quickstart/ota.toml")]
pub struct Init {
    /// The directory to create (or an empty one).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Write into a non-empty DIR, replacing what init writes there (the
    /// old keys are lost).
    #[arg(long)]
    force: bool,
    /// The broker's port (default: 1883, or a free one if it is taken).
    #[arg(long, value_name = "PORT")]
    port: Option<u16>,
    /// The dashboard's port (default: 8080, or a free one if it is taken).
    #[arg(long, value_name = "PORT")]
    http_port: Option<u16>,
}

/// The files init writes, relative to DIR.
const CONFIG: &str = "ota.toml";
const PROFILE: &str = "fleet.toml";
const CSV: &str = "devices.csv";

impl Run for Init {
    fn run(self) -> anyhow::Result<()> {
        let dir = &self.dir;
        check_dir(dir, self.force)?;
        fs::create_dir_all(dir.join("keys"))
            .with_context(|| format!("cannot create {}", dir.join("keys").display()))?;
        let port = pick_port(self.port, 1883, "--port")?;
        let http_port = pick_port(self.http_port, 8080, "--http-port")?;
        if port == http_port {
            bail!("the broker and the dashboard cannot share port {port}: give --port and --http-port");
        }

        for stem in PAIRS {
            write_pair(&dir.join("keys"), stem, self.force)?;
        }
        let bridge_pw = schemas::provisioning::generate_password();
        let operator_pw = schemas::provisioning::generate_password();
        write_file(
            &dir.join(CONFIG),
            &config_text(port, http_port, &bridge_pw, &operator_pw),
            true,
        )?;
        write_file(&dir.join(PROFILE), PROFILE_TEXT, false)?;
        write_file(&dir.join(CSV), CSV_TEXT, false)?;

        let d = dir.display();
        println!("ota init: a working setup in {d}");
        println!(
            "  keys/          release, operator and director key pairs (private files mode 0600)"
        );
        println!("  {CONFIG}       the bridge: embedded broker on 127.0.0.1:{port}, accounts on, dashboard on http://127.0.0.1:{http_port}/");
        println!("  {PROFILE}     a simulated fleet: trusts keys/release.pub, customers acme and globex, lines line-1 and line-2");
        println!("  {CSV}    an example for `ota devices provision --csv` (real devices)");
        println!();
        println!("next, each in its own terminal:");
        println!("  1. ota serve --config {d}/{CONFIG}");
        println!("  2. ota sim --config {d}/{CONFIG} --devices 100");
        println!("  3. ota devices list --config {d}/{CONFIG}");
        println!();
        println!("then roll a signed release out in waves, the README's tour: docs/tour.sh {d}");
        println!(
            "keep keys/release.key offline in production: whoever holds it signs what devices run"
        );
        Ok(())
    }
}

/// DIR absent, empty, or `force`.
fn check_dir(dir: &Path, force: bool) -> anyhow::Result<()> {
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() && !force {
                bail!(
                    "{} is not empty: give an empty or new directory, or --force to replace the files init writes there (the old keys are lost)",
                    dir.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            bail!("{} exists and is not a directory", dir.display())
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", dir.display())),
    }
}

/// The port the user asked for (which must be free), else `default` when
/// free, else one the system picks.
fn pick_port(asked: Option<u16>, default: u16, flag: &str) -> anyhow::Result<u16> {
    let bind = |p: u16| TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, p)));
    if let Some(p) = asked {
        bind(p).with_context(|| {
            format!("{flag} {p}: 127.0.0.1:{p} is taken or not allowed; choose another port")
        })?;
        return Ok(p);
    }
    if bind(default).is_ok() {
        return Ok(default);
    }
    let l = bind(0).context("cannot find a free port on 127.0.0.1")?;
    Ok(l.local_addr()?.port())
}

/// Writes `text` to `path`, replacing it; `secret` files get mode 0600.
fn write_file(path: &Path, text: &str, secret: bool) -> anyhow::Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn config_text(port: u16, http_port: u16, bridge_pw: &str, operator_pw: &str) -> String {
    format!(
        r#"# ota.toml, written by `ota init`: the configuration of `ota serve`, and of
# the ota CLI with --config (the [operator] section). Every key is explained
# in config/ota.toml of the source tree and in docs/operations.md. Relative
# paths are relative to this file. It holds passwords: mode 0600.

[bridge]
data_dir = "data"
broker_user = "bridge"
operator_keys = ["keys/operator.pub"]
release_keys = ["keys/release.pub"]
# Signs what the bridge tells devices (PROTOCOL.md E2).
director_key = "keys/director.key"

[operator]
key = "keys/operator.key"
username = "operator"
password = "{operator_pw}"
# Believe only replies the bridge signed.
bridge_key = "keys/director.pub"

[broker]
mode = "embedded"
listen = "127.0.0.1:{port}"
# Devices log in with their own credentials (`ota devices provision`, or
# `ota sim --config` for simulated ones); nobody logs in anonymously.
max_connections = 2000

[broker.users]
bridge = "{bridge_pw}"
operator = "{operator_pw}"

# The read-only dashboard, /api and /metrics, open on loopback only.
[http]
listen = "127.0.0.1:{http_port}"
allow_anonymous_loopback = true
"#
    )
}

const PROFILE_TEXT: &str = r#"# fleet.toml, written by `ota init`: the simulated fleet of
# `ota sim --config ota.toml` (or `ota sim --profile fleet.toml`). Every key
# is explained in config/fleet.toml of the source tree.

[fleet]
id_prefix = "dev"
seed = 1

[[arch]]
name = "esp32"
weight = 1

# Each device draws one value of each label: groups select on them
# (`ota group put acme --selector customer=acme`).
[labels]
customer = ["acme", "globex"]
line = ["line-1", "line-2"]

[versions]
main = "1.0.0"

# What the devices trust, as devices provisioned by `ota devices provision`
# do: the release key (what they install) and the director key (what the
# bridge tells them).
[keys]
trusted = ["keys/release.pub"]
director = ["keys/director.pub"]
"#;

const CSV_TEXT: &str =
    "# devices.csv, written by `ota init`: real devices to provision, one a line.\n\
# ota devices provision --config ota.toml --csv devices.csv --out provisioning/\n\
# writes one provisioning file per device (its id, password, broker, keys) to flash.\n\
id,customer,line\n\
press-00001,acme,line-1\n\
press-00002,acme,line-2\n\
press-00003,globex,line-1\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_it_writes_is_one_the_bridge_accepts() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("keys")).unwrap();
        for stem in PAIRS {
            write_pair(&dir.path().join("keys"), stem, false).unwrap();
        }
        let path = dir.path().join(CONFIG);
        write_file(&path, &config_text(18830, 18080, "a", "b"), true).unwrap();
        let c = bridge::Config::load(&path).unwrap();
        assert!(c.bridge.director_key.is_some());
        assert_eq!(c.endpoint().port, 18830);
        let p = dir.path().join(PROFILE);
        write_file(&p, PROFILE_TEXT, false).unwrap();
        let profile = device_sim::fleet::Profile::load(&p).unwrap();
        assert_eq!(profile.trusted.len(), 1);
        assert!(crate::cmd_identity::parse_csv(CSV_TEXT).unwrap().len() == 3);
    }
}
