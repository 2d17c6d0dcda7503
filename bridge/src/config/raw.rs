//! `ota.toml` as written: every section and key optional, unknown keys
//! refused (a typo must not be silently ignored). [`super::Config::load`]
//! validates it into the types the code uses.

use std::path::PathBuf;

use serde::Deserialize;

/// The whole file.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub bridge: RawBridge,
    #[serde(default)]
    pub broker: broker::RawBrokerConfig,
    #[serde(default)]
    pub status: RawStatus,
    #[serde(default)]
    pub operator: RawOperator,
    /// `[blocks]`: validated as it is (see `super::blocks::BlocksConfig`).
    #[serde(default)]
    pub blocks: super::blocks::BlocksConfig,
    #[serde(default)]
    pub devices: RawDevices,
    /// `[http]`: absent, no HTTP listener (see `super::http`).
    pub http: Option<super::http::RawHttp>,
}

/// `[devices]`: who may log in and register.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDevices {
    /// `"provisioned"` (default), `"enroll"` or `"open"`.
    pub admission: Option<String>,
    /// With `"enroll"`: the file holding the enrollment token's `$6$` hash.
    pub enrollment_token_hash: Option<PathBuf>,
    /// Enrollments the whole fleet may make a minute (0: no bound).
    pub registrations_per_minute: Option<u32>,
}

/// `[bridge]`
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBridge {
    pub prefix: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub cache_mib: Option<u64>,
    pub client_id: Option<String>,
    pub broker_user: Option<String>,
    pub operator_keys: Option<Vec<PathBuf>>,
    pub release_keys: Option<Vec<PathBuf>>,
    pub director_key: Option<PathBuf>,
    pub director_keys_next: Option<Vec<PathBuf>>,
    pub control_ttl_secs: Option<u64>,
    pub command_window_secs: Option<u64>,
    pub metrics_interval_secs: Option<u64>,
    pub audit_retention_days: Option<u64>,
}

/// `[status]`
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStatus {
    pub commit_window_ms: Option<u64>,
    pub max_batch: Option<usize>,
    pub hellos_per_minute: Option<u32>,
}

/// `[operator]`: what the `ota` CLI uses when given `--config`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOperator {
    pub key: Option<PathBuf>,
    pub bridge_key: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// With `mqtts://`: each falls back to `[broker]`'s.
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}
