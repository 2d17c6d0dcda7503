//! `ota.toml` in two steps: [`raw`] (serde, unknown keys refused), then
//! validated here into [`Config`], with defaults applied, key files read and
//! every error naming its section and key.
//!
//! ```toml
//! [bridge]
//! prefix = "ota/v1"                 # topic prefix, default "ota/v1"
//! data_dir = "data"                 # default "data"; relative to this file
//! cache_mib = 128                   # the database's page cache (sled), MiB; 16..=65536
//! client_id = "ota-bridge"          # the bridge's MQTT client id
//! broker_user = "bridge"            # embedded broker with users: which one the bridge logs in as
//! operator_keys = ["keys/alice.pub"]   # public key files, relative to this file
//! release_keys = ["keys/release.pub"]
//! director_key = "keys/director.key"  # required to serve: signs control messages (E2); never a release key
//! director_keys_next = ["keys/director-2.pub"]  # the next director keys, put in provisioning files (rotation)
//! control_ttl_secs = 604800         # how long a signed control message holds (7 days)
//! command_window_secs = 300
//! metrics_interval_secs = 60
//! audit_retention_days = 90          # operator commands kept this long (0: for ever)
//!
//! [broker]                          # the broker crate's section
//!
//! [status]
//! commit_window_ms = 5
//! max_batch = 4096
//! hellos_per_minute = 30            # per device; more are dropped, counted (0: no limit)
//!
//! [operator]                        # for the `ota` CLI with --config
//! key = "keys/alice.key"
//! ca_file = "pki/ca.crt"            # with mqtts://: each falls back to [broker]'s
//! client_cert = "pki/alice.crt"
//! client_key = "pki/alice.key"
//! ```
//!
//! [`client_tls`] builds the rustls configs of `[broker]` and
//! `[operator]` `ca_file`, `client_cert`, `client_key` at load.
//!
//! Key lists hold paths to key files (64 hex characters and a newline, the
//! format of `schemas::keys`), never inline keys: a key file can be
//! rotated, permission-checked and shared without editing the config.
//!
//! [`http`] is the `[http]` section (the read-only HTTP listener).
//!
//! [`blocks`] is the `[blocks]` section, the block server's knobs (here, at
//! the bottom of the bridge, so that every layer can read it).

pub mod blocks;
mod cache;
pub mod client_tls;
mod credentials;
mod devices;
pub mod http;
mod keys;
pub mod raw;
mod redacted;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use raw::RawConfig;
use schemas::keys::{Kid, SigningKey, VerifyingKey};
use schemas::topic::Topics;

/// Default `[bridge] client_id`.
pub const DEFAULT_CLIENT_ID: &str = "ota-bridge";
/// Longest `[bridge] client_id`: the egress connection appends `-out`.
pub const MAX_CLIENT_ID: usize = 60;
/// Default `[bridge] data_dir`, relative to the config file.
pub const DEFAULT_DATA_DIR: &str = "data";
/// Default `[bridge] command_window_secs`.
pub const DEFAULT_COMMAND_WINDOW_SECS: u64 = 300;
/// Default `[bridge] audit_retention_days`.
pub const DEFAULT_AUDIT_RETENTION_DAYS: u64 = 90;
/// Default `BridgeConfig::core_slice`.
pub const DEFAULT_CORE_SLICE: usize = 65_536;
/// Default `[bridge] metrics_interval_secs`.
pub const DEFAULT_METRICS_INTERVAL_SECS: u64 = 60;
/// Default `[bridge] control_ttl_secs`: 7 days.
pub const DEFAULT_CONTROL_TTL_SECS: u64 = 7 * 86_400;
/// Shortest and longest `[bridge] control_ttl_secs`.
pub const CONTROL_TTL_RANGE: std::ops::RangeInclusive<u64> = 60..=90 * 86_400;
/// Default `[status] commit_window_ms`.
pub const DEFAULT_COMMIT_WINDOW_MS: u64 = 5;
/// Default `[status] hellos_per_minute`: a device says Hello once per
/// connection, so this is generous.
pub const DEFAULT_HELLOS_PER_MINUTE: u32 = 30;
/// Default `[status] max_batch`.
pub const DEFAULT_MAX_BATCH: usize = 4096;

/// A config file that cannot be used: which file, which key, what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: [{section}] {key}: {message}")]
    Key {
        path: PathBuf,
        section: &'static str,
        key: String,
        message: String,
    },
    /// The `[broker]` error is part of the message, not a source: a chain
    /// printed with `{:#}` would say it twice.
    #[error("config file {path}: {error}")]
    Broker {
        path: PathBuf,
        error: broker::ConfigError,
    },
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub bridge: BridgeConfig,
    pub broker: broker::BrokerConfig,
    pub status: StatusConfig,
    pub operator: OperatorConfig,
    /// `[blocks]`: the block server.
    pub blocks: blocks::BlocksConfig,
    /// `[devices]`: who may log in and register.
    pub devices: DevicesConfig,
    /// `[http]`: the read-only HTTP listener; `None`, none runs.
    pub http: Option<http::HttpConfig>,
    /// The bridge's TLS to an external `mqtts://` broker, built at load
    /// from `[broker] ca_file`, `client_cert`, `client_key`. `None`: plain
    /// MQTT (or a config built in code: `Bridge::start` builds it then).
    pub broker_tls: Option<client_tls::ClientTlsConfig>,
}

/// `[devices]`
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DevicesConfig {
    /// `admission`: `"provisioned"` (the default of a config file),
    /// `"enroll"` (with the enrollment token's hash) or `"open"` (version
    /// 1: any Hello registers; the default of [`Config::with_defaults`],
    /// for code and tests).
    pub admission: crate::identity::Admission,
    /// `registrations_per_minute`: enrollments the whole fleet may make a
    /// minute (0: no bound).
    pub registrations_per_minute: u32,
}

/// `[bridge]`
#[derive(Clone)]
pub struct BridgeConfig {
    /// The topic set under `prefix`.
    pub topics: Topics,
    /// Where the database lives (`data_dir/db`): what to back up.
    pub data_dir: PathBuf,
    /// The database's page cache, in bytes (`cache_mib`).
    pub cache_bytes: u64,
    /// The bridge's MQTT client id (and persistent session name); its
    /// publishing connection uses this plus `-out`.
    pub client_id: String,
    /// The bridge's broker login, resolved from `broker_user` (embedded) or
    /// `[broker] username/password` (external).
    pub credentials: Option<broker::Credentials>,
    /// Operator public keys by kid: who may send commands.
    pub operator_keys: BTreeMap<Kid, VerifyingKey>,
    /// Release public keys by kid: whose manifests uploads may carry.
    pub release_keys: BTreeMap<Kid, VerifyingKey>,
    /// Commands issued further than this from now are refused.
    pub command_window_secs: u64,
    /// How often the counters are logged.
    pub metrics_interval: Duration,
    /// How long the audit trail keeps a command; `None`: for ever.
    pub audit_retention: Option<Duration>,
    /// The director key (E2) that signs Memberships, Announcements,
    /// StatusAcks, replies and events. Optional in the file (the CLI reads
    /// configs without one), required to run: `None` and
    /// [`crate::Bridge::start`] refuses to start.
    pub director_key: Option<SigningKey>,
    /// `director_keys_next`: the public halves of the director keys that
    /// come next, by kid. `ota devices provision` puts them in every
    /// provisioning file beside the current one, so devices provisioned
    /// now already trust the key the bridge moves to. Never a release key,
    /// never the current director key.
    pub director_keys_next: BTreeMap<Kid, VerifyingKey>,
    /// How long a signed control message holds (`expires` - `issued`).
    pub control_ttl: Duration,
    /// Most devices in one slice of core's work over the fleet
    /// (`state::slices`). Not in the file: tests and benches set it.
    pub core_slice: usize,
}

/// `[status]`: the group commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusConfig {
    /// How long a batch gathers after its first report.
    pub commit_window: Duration,
    /// The most reports one commit covers.
    pub max_batch: usize,
    /// Hellos a device may send in one minute; more are dropped and
    /// counted (`status::quota`). 0: no limit.
    pub hellos_per_minute: u32,
}

impl Default for StatusConfig {
    fn default() -> Self {
        Self {
            commit_window: Duration::from_millis(DEFAULT_COMMIT_WINDOW_MS),
            max_batch: DEFAULT_MAX_BATCH,
            hellos_per_minute: DEFAULT_HELLOS_PER_MINUTE,
        }
    }
}

/// `[operator]`: the CLI's own identity when run with `--config`.
#[derive(Clone, Default)]
pub struct OperatorConfig {
    /// The operator's private key file.
    pub key: Option<PathBuf>,
    /// The bridge's director public key (`director.pub`): replies and
    /// events are believed only when it signed them, and commands name it
    /// as their audience.
    pub bridge_key: Option<VerifyingKey>,
    /// The operator's broker login; when absent the CLI uses the bridge's.
    pub credentials: Option<broker::Credentials>,
    /// `ca_file`, `client_cert`, `client_key` for an `mqtts://` broker,
    /// resolved, each falling back to `[broker]`'s (the CLI builds the
    /// rustls config when it connects: see [`client_tls::overlay`]).
    pub tls: tls::ClientTls,
}

impl std::fmt::Debug for OperatorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorConfig")
            .field("key", &self.key)
            .field(
                "bridge_key",
                &self
                    .bridge_key
                    .as_ref()
                    .map(|k| hex::encode(schemas::keys::kid(k))),
            )
            .field("username", &self.credentials.as_ref().map(|c| &c.username))
            .field("tls", &self.tls)
            .finish()
    }
}

impl Config {
    /// Reads and validates a config file. Relative paths inside it are
    /// relative to the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Validates config text as if read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Validator { path, base }.config(raw)
    }

    /// A configuration with every default, an embedded broker as given and
    /// the data in `data_dir`: for tests and tools that build it in code.
    pub fn with_defaults(data_dir: PathBuf, broker: broker::BrokerConfig) -> Config {
        Config {
            bridge: BridgeConfig {
                topics: Topics::default(),
                data_dir,
                cache_bytes: crate::store::DEFAULT_CACHE_BYTES,
                client_id: DEFAULT_CLIENT_ID.to_string(),
                credentials: broker.credentials().cloned(),
                operator_keys: BTreeMap::new(),
                release_keys: BTreeMap::new(),
                command_window_secs: DEFAULT_COMMAND_WINDOW_SECS,
                metrics_interval: Duration::from_secs(DEFAULT_METRICS_INTERVAL_SECS),
                audit_retention: Some(Duration::from_secs(DEFAULT_AUDIT_RETENTION_DAYS * 86_400)),
                director_key: None,
                director_keys_next: BTreeMap::new(),
                control_ttl: Duration::from_secs(DEFAULT_CONTROL_TTL_SECS),
                core_slice: DEFAULT_CORE_SLICE,
            },
            broker,
            status: StatusConfig::default(),
            operator: OperatorConfig::default(),
            blocks: blocks::BlocksConfig::default(),
            devices: DevicesConfig {
                admission: crate::identity::Admission::Open,
                registrations_per_minute: devices::DEFAULT_REGISTRATIONS_PER_MINUTE,
            },
            http: None,
            broker_tls: None,
        }
    }

    /// What the bridge's [`crate::identity::Identity`] needs: the bridge's
    /// client id and account, the operators' accounts (the other
    /// `[broker.users]` of an embedded broker, `[broker.mosquitto.operators]`
    /// of an external Mosquitto), the admission rule.
    pub fn identity(&self) -> crate::identity::IdentityConfig {
        let bridge_login = self
            .bridge
            .credentials
            .as_ref()
            .map(|c| (c.username.clone(), c.password.clone()));
        let operators = match &self.broker {
            broker::BrokerConfig::Embedded(e) => e
                .users
                .iter()
                .filter(|(u, _)| bridge_login.as_ref().map(|(b, _)| b) != Some(*u))
                .map(|(u, p)| (u.clone(), p.clone()))
                .collect(),
            broker::BrokerConfig::External(x) => x
                .mosquitto
                .as_ref()
                .map(|m| m.operators.clone())
                .unwrap_or_default(),
        };
        crate::identity::IdentityConfig {
            topics: self.bridge.topics.clone(),
            bridge_client_id: self.bridge.client_id.clone(),
            bridge_login,
            operators,
            admission: self.devices.admission.clone(),
            registrations_per_minute: self.devices.registrations_per_minute,
        }
    }

    /// `[broker.mosquitto]`, when the bridge keeps an external
    /// Mosquitto's files.
    pub fn mosquitto(&self) -> Option<&broker::mosquitto::MosquittoConfig> {
        match &self.broker {
            broker::BrokerConfig::External(x) => x.mosquitto.as_ref(),
            broker::BrokerConfig::Embedded(_) => None,
        }
    }

    /// Where MQTT clients of this config connect.
    pub fn endpoint(&self) -> broker::Endpoint {
        self.broker.endpoint()
    }
}

struct Validator<'a> {
    path: &'a Path,
    base: &'a Path,
}

impl Validator<'_> {
    fn err(
        &self,
        section: &'static str,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Key {
            path: self.path.to_path_buf(),
            section,
            key: key.into(),
            message: message.into(),
        }
    }

    fn resolve(&self, p: PathBuf) -> PathBuf {
        if p.is_absolute() {
            p
        } else {
            self.base.join(p)
        }
    }

    fn config(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let broker_users = raw.broker.users.clone().unwrap_or_default();
        let mut broker = raw.broker.validate().map_err(|error| ConfigError::Broker {
            path: self.path.to_path_buf(),
            error,
        })?;
        if let broker::BrokerConfig::External(broker::ExternalConfig {
            mosquitto: Some(m), ..
        }) = &mut broker
        {
            m.dir = self.resolve(std::mem::take(&mut m.dir));
            m.pid_file = m.pid_file.take().map(|p| self.resolve(p));
            m.edge_pid_files = std::mem::take(&mut m.edge_pid_files)
                .into_iter()
                .map(|p| self.resolve(p))
                .collect();
            for e in &mut m.edges {
                e.pid_file = e.pid_file.take().map(|p| self.resolve(p));
            }
            if let Some(t) = &mut m.tls {
                for p in [&mut t.ca_file, &mut t.cert_file, &mut t.key_file] {
                    *p = self.resolve(std::mem::take(p));
                }
            }
        }
        if let broker::BrokerConfig::Embedded(e) = &mut broker {
            e.tls = e.tls.take().map(|t| t.relative_to(self.base));
        }
        let broker_tls = client_tls::for_broker(&mut broker, |p| self.resolve(p))
            .map_err(|(key, message)| self.err("broker", key, message))?;
        let b = raw.bridge;
        let topics = Topics::new(
            b.prefix
                .unwrap_or_else(|| schemas::DEFAULT_PREFIX.to_string()),
        )
        .map_err(|e| self.err("bridge", "prefix", e.to_string()))?;
        let client_id = b.client_id.unwrap_or_else(|| DEFAULT_CLIENT_ID.to_string());
        if let Err(e) = schemas::DeviceId::new(client_id.as_str()) {
            return Err(self.err("bridge", "client_id", e.to_string()));
        }
        if client_id.len() > MAX_CLIENT_ID {
            return Err(self.err(
                "bridge",
                "client_id",
                format!("at most {MAX_CLIENT_ID} characters: the publishing connection appends \"-out\""),
            ));
        }
        let credentials = self.bridge_credentials(&broker, &broker_users, b.broker_user)?;
        let command_window_secs = b.command_window_secs.unwrap_or(DEFAULT_COMMAND_WINDOW_SECS);
        if !(10..=86_400).contains(&command_window_secs) {
            return Err(self.err(
                "bridge",
                "command_window_secs",
                format!("{command_window_secs} is outside 10..=86400 seconds"),
            ));
        }
        let cache_bytes =
            cache::cache_bytes(b.cache_mib).map_err(|e| self.err("bridge", "cache_mib", e))?;
        let metrics_secs = b
            .metrics_interval_secs
            .unwrap_or(DEFAULT_METRICS_INTERVAL_SECS);
        if metrics_secs == 0 {
            return Err(self.err("bridge", "metrics_interval_secs", "must be at least 1"));
        }
        let audit_days = b
            .audit_retention_days
            .unwrap_or(DEFAULT_AUDIT_RETENTION_DAYS);
        if audit_days > 36_500 {
            return Err(self.err(
                "bridge",
                "audit_retention_days",
                format!("{audit_days} is over 36500 days; use 0 to keep the audit trail for ever"),
            ));
        }
        let audit_retention = (audit_days > 0).then(|| Duration::from_secs(audit_days * 86_400));
        let control_ttl_secs = b.control_ttl_secs.unwrap_or(DEFAULT_CONTROL_TTL_SECS);
        if !CONTROL_TTL_RANGE.contains(&control_ttl_secs) {
            return Err(self.err(
                "bridge",
                "control_ttl_secs",
                format!(
                    "{control_ttl_secs} is outside {}..={} seconds (1 minute to 90 days)",
                    CONTROL_TTL_RANGE.start(),
                    CONTROL_TTL_RANGE.end()
                ),
            ));
        }
        let release_keys = self.keys("release_keys", b.release_keys.unwrap_or_default())?;
        let director_key = b
            .director_key
            .map(|p| self.director_key(p, &release_keys))
            .transpose()?;
        let director_keys_next = self.director_keys_next(
            b.director_keys_next.unwrap_or_default(),
            &release_keys,
            director_key.as_ref(),
        )?;
        let bridge = BridgeConfig {
            topics,
            data_dir: self.resolve(b.data_dir.unwrap_or_else(|| DEFAULT_DATA_DIR.into())),
            cache_bytes,
            client_id,
            credentials,
            operator_keys: self.keys("operator_keys", b.operator_keys.unwrap_or_default())?,
            release_keys,
            command_window_secs,
            metrics_interval: Duration::from_secs(metrics_secs),
            audit_retention,
            director_key,
            director_keys_next,
            control_ttl: Duration::from_secs(control_ttl_secs),
            core_slice: DEFAULT_CORE_SLICE,
        };

        let s = raw.status;
        let commit_ms = s.commit_window_ms.unwrap_or(DEFAULT_COMMIT_WINDOW_MS);
        if commit_ms > 1000 {
            return Err(self.err(
                "status",
                "commit_window_ms",
                format!("{commit_ms} ms would hold every StatusAck that long; use 0..=1000"),
            ));
        }
        let max_batch = s.max_batch.unwrap_or(DEFAULT_MAX_BATCH);
        if !(1..=65_536).contains(&max_batch) {
            return Err(self.err(
                "status",
                "max_batch",
                format!("{max_batch} is outside 1..=65536"),
            ));
        }
        let status = StatusConfig {
            commit_window: Duration::from_millis(commit_ms),
            max_batch,
            hellos_per_minute: s.hellos_per_minute.unwrap_or(DEFAULT_HELLOS_PER_MINUTE),
        };

        raw.blocks
            .validate()
            .map_err(|e| self.err("blocks", e.key, e.message))?;
        let blocks = raw.blocks;

        let o = raw.operator;
        let operator_credentials = match (o.username, o.password) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(self.err(
                    "operator",
                    "password",
                    "given without a username: set [operator] username too",
                ))
            }
            (Some(username), password) => Some(broker::Credentials {
                username,
                password: password.unwrap_or_default(),
            }),
        };
        let bridge_key = o
            .bridge_key
            .map(|f| self.public_key("operator", "bridge_key".into(), f))
            .transpose()?;
        let operator_tls = tls::ClientTls {
            ca_file: o.ca_file.map(|p| self.resolve(p)),
            client_cert: o.client_cert.map(|p| self.resolve(p)),
            client_key: o.client_key.map(|p| self.resolve(p)),
        };
        if !operator_tls.is_empty() && !broker.endpoint().tls {
            return Err(self.err(
                "operator",
                "ca_file",
                "ca_file, client_cert and client_key are only used with TLS: [broker] url must be mqtts://",
            ));
        }
        let operator = OperatorConfig {
            key: o.key.map(|k| self.resolve(k)),
            bridge_key,
            credentials: operator_credentials,
            tls: match &broker_tls {
                Some(b) => client_tls::overlay(&b.files, &operator_tls),
                None => operator_tls,
            },
        };
        let devices = self.devices(raw.devices, &broker)?;
        let http = match raw.http {
            None => None,
            Some(h) => Some(
                http::validate(h, |p| self.resolve(p))
                    .map_err(|e| self.err("http", e.key, e.message))?,
            ),
        };
        Ok(Config {
            bridge,
            broker,
            status,
            operator,
            blocks,
            devices,
            http,
            broker_tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_key(dir: &Path, name: &str, seed: u8) -> VerifyingKey {
        let vk = schemas::keys::SigningKey::from_bytes(&[seed; 32]).verifying_key();
        std::fs::write(dir.join(name), schemas::keys::verifying_key_to_text(&vk)).unwrap();
        vk
    }

    fn write_private(dir: &Path, name: &str, seed: u8) -> SigningKey {
        let k = SigningKey::from_bytes(&[seed; 32]);
        std::fs::write(dir.join(name), schemas::keys::signing_key_to_text(&k)).unwrap();
        k
    }

    #[test]
    fn the_operator_pins_the_bridge_key() {
        let dir = tempfile::tempdir().unwrap();
        let d = write_key(dir.path(), "director.pub", 5);
        let c = load(
            dir.path(),
            "[broker]\nallow_anonymous = true\n[operator]\nbridge_key = \"director.pub\"\n",
        )
        .unwrap();
        assert_eq!(c.operator.bridge_key, Some(d));
        let e = load(
            dir.path(),
            "[broker]\nallow_anonymous = true\n[operator]\nbridge_key = \"absent.pub\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("[operator] bridge_key"), "{e}");
    }

    #[test]
    fn mqtts_builds_the_tls_config_at_load_with_paths_beside_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let ca = tls::pki::FleetCa::generate("config test CA", 1).unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca.cert_pem()).unwrap();
        let c = load(
            dir.path(),
            "[broker]\nmode = \"external\"\nurl = \"mqtts://b.example\"\nca_file = \"ca.crt\"\n\
             [operator]\nclient_cert = \"alice.crt\"\nclient_key = \"alice.key\"\n",
        )
        .unwrap();
        let t = c.broker_tls.clone().expect("built");
        assert_eq!(t.files.ca_file, Some(dir.path().join("ca.crt")));
        // The operator's pair, the bridge's CA; read only when the CLI connects.
        assert_eq!(c.operator.tls.ca_file, Some(dir.path().join("ca.crt")));
        assert_eq!(
            c.operator.tls.client_cert,
            Some(dir.path().join("alice.crt"))
        );
        assert_eq!(c.endpoint().port, 8883);
        // Not PEM: refused at load, naming the key and the file.
        std::fs::write(dir.path().join("bad.crt"), "hello").unwrap();
        let e = load(
            dir.path(),
            "[broker]\nmode = \"external\"\nurl = \"mqtts://b\"\nca_file = \"bad.crt\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("[broker] ca_file: ca_file") && e.contains("bad.crt"),
            "{e}"
        );
    }

    #[test]
    fn the_director_key_is_read_and_never_a_release_key() {
        let dir = tempfile::tempdir().unwrap();
        let d = write_private(dir.path(), "director.key", 5);
        let c = load_anon(
            dir.path(),
            "[bridge]\ndirector_key = \"director.key\"\ncontrol_ttl_secs = 3600\n",
        )
        .unwrap();
        assert_eq!(
            c.bridge.director_key.map(|k| k.verifying_key()),
            Some(d.verifying_key())
        );
        assert_eq!(c.bridge.control_ttl, Duration::from_secs(3600));
        assert!(load_anon(dir.path(), "")
            .unwrap()
            .bridge
            .director_key
            .is_none());

        // The release key's private half, named as director key: refused,
        // by its public half in release_keys or by its name.
        let r = write_private(dir.path(), "rel.key", 6);
        std::fs::write(
            dir.path().join("rel.pub"),
            schemas::keys::verifying_key_to_text(&r.verifying_key()),
        )
        .unwrap();
        let e = load_anon(
            dir.path(),
            "[bridge]\nrelease_keys = [\"rel.pub\"]\ndirector_key = \"rel.key\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("[bridge] director_key"), "{e}");
        assert!(e.contains("release private key"), "{e}");
        write_private(dir.path(), "release.key", 7);
        let e = load_anon(dir.path(), "[bridge]\ndirector_key = \"release.key\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("never sit on the server"), "{e}");
        // A public key file, a missing file, a ttl out of range.
        write_key(dir.path(), "director.pub", 5);
        for (text, want) in [
            ("director_key = \"absent.key\"", "cannot read"),
            ("control_ttl_secs = 10", "control_ttl_secs"),
        ] {
            let e = load_anon(dir.path(), &format!("[bridge]\n{text}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn the_next_director_keys_are_read_and_never_a_release_or_the_current_key() {
        let dir = tempfile::tempdir().unwrap();
        let d = write_private(dir.path(), "director.key", 5);
        write_key(dir.path(), "director.pub", 5);
        let next = write_key(dir.path(), "director-2.pub", 8);
        let rel = write_key(dir.path(), "rel.pub", 6);
        let c = load_anon(
            dir.path(),
            "[bridge]\ndirector_key = \"director.key\"\ndirector_keys_next = [\"director-2.pub\"]\n",
        )
        .unwrap();
        assert_eq!(
            c.bridge.director_key.map(|k| k.verifying_key()),
            Some(d.verifying_key())
        );
        assert_eq!(
            c.bridge
                .director_keys_next
                .values()
                .copied()
                .collect::<Vec<_>>(),
            vec![next]
        );
        assert!(load_anon(dir.path(), "")
            .unwrap()
            .bridge
            .director_keys_next
            .is_empty());
        // Without a director key (a CLI config), the next keys still load.
        let c = load_anon(
            dir.path(),
            "[bridge]\ndirector_keys_next = [\"director-2.pub\"]\n",
        )
        .unwrap();
        assert_eq!(c.bridge.director_keys_next.len(), 1);

        for (list, want) in [
            ("[\"director-2.pub\", \"rel.pub\"]", "director_keys_next[1]"),
            ("[\"rel.pub\"]", "is a release key"),
            ("[\"director.pub\"]", "current director_key's public half"),
            ("[\"absent.pub\"]", "cannot read"),
            ("[\"director.key\"]", "director_keys_next[0]"),
        ] {
            let e = load_anon(
                dir.path(),
                &format!(
                    "[bridge]\nrelease_keys = [\"rel.pub\"]\ndirector_key = \"director.key\"\ndirector_keys_next = {list}\n"
                ),
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains(want), "{list}: {e}");
            assert!(e.contains("[bridge] director_keys_next"), "{list}: {e}");
        }
        let e = load_anon(
            dir.path(),
            "[bridge]\nrelease_keys = [\"rel.pub\"]\ndirector_keys_next = [\"rel.pub\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains(&hex::encode(schemas::keys::kid(&rel))), "{e}");
    }

    /// [`load`] on an anonymous embedded broker (allowed for tests).
    fn load_anon(dir: &Path, text: &str) -> Result<Config, ConfigError> {
        load(dir, &format!("[broker]\nallow_anonymous = true\n{text}"))
    }

    fn load(dir: &Path, text: &str) -> Result<Config, ConfigError> {
        let path = dir.join("ota.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path)
    }

    #[test]
    fn enroll_reads_the_tokens_hash_and_refuses_what_cannot_enroll() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let head =
            "[bridge]\nbroker_user = \"bridge\"\n[broker]\n[broker.users]\nbridge = \"pw\"\n";
        std::fs::write(
            d.join("enroll.hash"),
            schemas::provisioning::hash_password("tok") + "\n",
        )
        .unwrap();
        std::fs::write(d.join("enroll.token"), "tok\n").unwrap();
        let devices = |file: &str, extra: &str| {
            format!(
                "{head}[devices]\nadmission = \"enroll\"\nenrollment_token_hash = \"{file}\"\n{extra}"
            )
        };
        let c = load(d, &devices("enroll.hash", "registrations_per_minute = 5\n")).unwrap();
        let crate::identity::Admission::Enroll { token } = &c.devices.admission else {
            panic!("{:?}", c.devices.admission)
        };
        assert!(token.verify("tok") && !token.verify("tik"));
        assert_eq!(c.devices.registrations_per_minute, 5);
        let e = load(d, &devices("enroll.token", ""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("holds no `$6$` hash"), "{e}");
        let e = load(d, &format!("{head}[devices]\nadmission = \"enroll\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ota devices enrollment-token"), "{e}");
        let e = load_anon(
            d,
            "[devices]\nadmission = \"enroll\"\nenrollment_token_hash = \"enroll.hash\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("[broker.users]"), "{e}");
        let c = load(d, head).unwrap();
        assert_eq!(c.devices.registrations_per_minute, 60);
    }

    #[test]
    fn an_empty_file_is_refused_for_its_anonymous_broker() {
        let dir = tempfile::tempdir().unwrap();
        let e = load(dir.path(), "").unwrap_err().to_string();
        assert!(e.contains("[broker] allow_anonymous"), "{e}");
        assert!(e.contains("[broker.users]"), "{e}");
    }

    #[test]
    fn an_anonymous_file_takes_every_default() {
        let dir = tempfile::tempdir().unwrap();
        let c = load(dir.path(), "[broker]\nallow_anonymous = true\n").unwrap();
        assert_eq!(c.bridge.topics.prefix(), "ota/v1");
        assert_eq!(c.bridge.client_id, "ota-bridge");
        assert_eq!(c.bridge.data_dir, dir.path().join("data"));
        assert_eq!(c.bridge.command_window_secs, 300);
        assert_eq!(c.bridge.cache_bytes, 128 << 20);
        assert_eq!(c.status, StatusConfig::default());
        assert!(c.bridge.operator_keys.is_empty());
        assert!(matches!(c.broker, broker::BrokerConfig::Embedded(_)));
        assert!(c.bridge.credentials.is_none());
    }

    #[test]
    fn a_full_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let op = write_key(dir.path(), "op.pub", 1);
        write_key(dir.path(), "rel.pub", 2);
        let c = load(
            dir.path(),
            r#"
            [bridge]
            prefix = "plant-7/ota/v1"
            data_dir = "/var/lib/ota"
            client_id = "bridge-2"
            broker_user = "bridge"
            operator_keys = ["op.pub"]
            release_keys = ["rel.pub"]
            command_window_secs = 60
            [broker]
            listen = "127.0.0.1:18830"
            [broker.users]
            bridge = "s3cret"
            [status]
            commit_window_ms = 2
            max_batch = 100
            [operator]
            key = "op.key"
            "#,
        )
        .unwrap();
        assert_eq!(c.bridge.topics.prefix(), "plant-7/ota/v1");
        assert_eq!(c.bridge.data_dir, PathBuf::from("/var/lib/ota"));
        assert_eq!(
            c.bridge.operator_keys.get(&schemas::keys::kid(&op)),
            Some(&op)
        );
        assert_eq!(c.bridge.release_keys.len(), 1);
        assert_eq!(c.bridge.credentials.as_ref().unwrap().password, "s3cret");
        assert_eq!(c.status.max_batch, 100);
        assert_eq!(c.operator.key, Some(dir.path().join("op.key")));
        assert_eq!(c.endpoint().port, 18830);
        // Debug never shows secrets.
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s3cret"), "{dbg}");
    }

    #[test]
    fn errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.pub"), "not a key\n").unwrap();
        let cases = [
            ("[bridge]\nprefx = \"x\"", "prefx"),
            ("[bridge]\nprefix = \"a/#\"", "[bridge] prefix"),
            ("[bridge]\nclient_id = \"a/b\"", "[bridge] client_id"),
            (
                "[bridge]\noperator_keys = [\"missing.pub\"]",
                "[bridge] operator_keys[0]: cannot read",
            ),
            (
                "[bridge]\noperator_keys = [\"bad.pub\"]",
                "[bridge] operator_keys[0]",
            ),
            (
                "[bridge]\ncommand_window_secs = 1",
                "[bridge] command_window_secs",
            ),
            ("[bridge]\nbroker_user = \"x\"", "[bridge] broker_user"),
            (
                "[broker.users]\nu = \"p\"",
                "[bridge] broker_user: required",
            ),
            ("[status]\nmax_batch = 0", "[status] max_batch"),
            (
                "[status]\ncommit_window_ms = 5000",
                "[status] commit_window_ms",
            ),
            ("[broker]\nmode = \"external\"", "[broker] url"),
            (
                "[broker]\nmode = \"external\"\nurl = \"mqtts://h\"\nca_file = \"absent.crt\"",
                "[broker] ca_file: cannot read ca_file",
            ),
            (
                "[broker]\nmode = \"external\"\nurl = \"mqtt://h\"\n[operator]\nca_file = \"ca.crt\"",
                "[operator] ca_file: ca_file, client_cert and client_key are only used with TLS",
            ),
            ("[operator]\npassword = \"p\"", "[operator] password"),
            ("[nope]\n", "nope"),
            ("[http]\nlisten = \"x\"", "[http] listen"),
            (
                "[http]\nlisten = \"127.0.0.1:1\"\nread_token = []",
                "read_token",
            ),
            ("[bridge\n", "not valid"),
        ];
        for (text, needle) in cases {
            // Past the broker's own check (no anonymous broker unless allowed).
            let text = if text.contains("[broker") {
                text.to_string()
            } else {
                format!("[broker]\nallow_anonymous = true\n{text}")
            };
            let text = text.as_str();
            let e = load(dir.path(), text).expect_err(text).to_string();
            assert!(e.contains(needle), "{text:?} gave {e}");
            assert!(e.contains("ota.toml"), "{e}");
        }
        let e = Config::load(&dir.path().join("absent.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read config file"), "{e}");
    }

    #[test]
    fn the_example_file_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("keys")).unwrap();
        write_key(&dir.path().join("keys"), "operator.pub", 1);
        write_key(&dir.path().join("keys"), "release.pub", 2);
        write_private(&dir.path().join("keys"), "director.key", 3);
        let c = load(dir.path(), include_str!("../../../config/ota.toml")).unwrap();
        assert_eq!(c.bridge.operator_keys.len(), 1);
        assert!(c.bridge.director_key.is_some());
        assert_eq!(c.bridge.control_ttl, Duration::from_secs(604_800));
        assert_eq!(c.status, StatusConfig::default());
        assert_eq!(c.operator.key, Some(dir.path().join("keys/operator.key")));
        assert_eq!(c.endpoint().port, 1883);
        assert_eq!(
            c.bridge.audit_retention,
            Some(Duration::from_secs(90 * 86_400))
        );
    }

    #[test]
    fn quotas_and_retention_are_read_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let c = load_anon(
            dir.path(),
            "[bridge]\naudit_retention_days = 0\n[status]\nhellos_per_minute = 5\n",
        )
        .unwrap();
        assert_eq!(c.bridge.audit_retention, None);
        assert_eq!(c.status.hellos_per_minute, 5);
        let e = load_anon(dir.path(), "[bridge]\naudit_retention_days = 99999\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("audit_retention_days") && e.contains("use 0"),
            "{e}"
        );
        let c = load_anon(dir.path(), "[bridge]\ncache_mib = 64\n").unwrap();
        assert_eq!(c.bridge.cache_bytes, 64 << 20);
        for bad in [0, 15, 65_537] {
            let e = load_anon(dir.path(), &format!("[bridge]\ncache_mib = {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("cache_mib") && e.contains("16..=65536"), "{e}");
        }
    }

    #[test]
    fn external_broker_credentials_are_the_bridges() {
        let dir = tempfile::tempdir().unwrap();
        let c = load(
            dir.path(),
            "[broker]\nmode = \"external\"\nurl = \"mqtt://10.0.0.5:1884\"\nusername = \"b\"\npassword = \"p\"",
        )
        .unwrap();
        assert_eq!(c.bridge.credentials.as_ref().unwrap().username, "b");
        assert_eq!(c.endpoint().host, "10.0.0.5");
    }
}
