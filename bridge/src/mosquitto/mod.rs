//! PROTOCOL.md E1 on an external Mosquitto: the files
//! [`crate::identity::mosquitto`] renders, on disk in `[broker.mosquitto]
//! dir`, and Mosquitto told to reload them.
//!
//! - [`dir`]: writing the files atomically, the conf, SIGHUP.
//! - [`sync`]: the bridge keeps the files current, debounced.
//! - [`export`] (here): `ota broker mosquitto`, the files of a stopped
//!   bridge's registry.

pub mod dir;
pub mod sync;

use std::path::{Path, PathBuf};

use broker::mosquitto::MosquittoConfig;

use crate::config::Config;
use crate::identity::{CredentialStore, Identity};
use crate::store::Store;
use dir::{MosquittoDirError, CONF};

/// The registry of a bridge that is not running, from its data_dir: the
/// credentials, and the grants of the retained Memberships and
/// announcements. A data_dir without a database is an empty registry.
pub fn offline(config: &Config) -> Result<Identity, MosquittoDirError> {
    let data_dir = &config.bridge.data_dir;
    if !data_dir.join("db").exists() {
        return Ok(Identity::new(config.identity(), &[]));
    }
    let store = Store::open(data_dir).map_err(|source| MosquittoDirError::Registry {
        path: data_dir.clone(),
        source,
    })?;
    let records = CredentialStore::open(store.db())?.all()?;
    let identity = Identity::new(config.identity(), &records);
    let topics = &config.bridge.topics;
    for (topic, payload) in store.retained.all()? {
        if let Ok(t) = topics.parse(&topic) {
            identity.observe(&t, &payload);
        }
    }
    Ok(identity)
}

/// What [`export`] wrote, as `ota broker mosquitto --json` prints it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Exported {
    /// The directory, absolute.
    pub dir: PathBuf,
    /// `mosquitto -c` this.
    pub conf: PathBuf,
    pub files: Vec<PathBuf>,
    /// Active devices in the devices' password file.
    pub devices: usize,
    /// Devices with a `user` section (group or artifact grants).
    pub devices_with_grants: usize,
    /// Edges with their own devices (`[[broker.mosquitto.edges]]`): each
    /// one's directory and its devices.
    pub edges: Vec<ExportedEdge>,
    /// The bridge's username on the service listener.
    pub bridge: Option<String>,
    pub operators: Vec<String>,
    pub devices_listen: String,
    pub service_listen: String,
    pub pid_file: Option<PathBuf>,
}

/// One edge's files, as [`Exported`] lists them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportedEdge {
    pub name: String,
    /// Its `password_file` and `acl_file` are in here.
    pub dir: PathBuf,
    pub devices: usize,
}

/// Writes the conf and the four files for `config`'s registry into `out`
/// (default: `[broker.mosquitto] dir`): what `ota broker mosquitto` does.
/// The bridge must be stopped (it holds its database; running, it keeps
/// its `dir` current itself).
pub fn export(
    config: &Config,
    m: &MosquittoConfig,
    out: Option<&Path>,
) -> Result<Exported, MosquittoDirError> {
    let dir = out.unwrap_or(&m.dir);
    let identity = offline(config)?;
    let files = identity.mosquitto_files_for(&m.edges);
    std::fs::create_dir_all(dir).map_err(|source| MosquittoDirError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let dir = std::fs::canonicalize(dir).map_err(|source| MosquittoDirError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let endpoint = config.endpoint();
    let text = dir::conf(m, &dir, (endpoint.host.as_str(), endpoint.port));
    dir::write(&dir, &files, Some(&text))?;
    let identity_config = config.identity();
    Ok(Exported {
        conf: dir.join(CONF),
        files: files.each().iter().map(|(n, _)| dir.join(n)).collect(),
        edges: files
            .edges
            .iter()
            .map(|e| ExportedEdge {
                name: e.name.clone(),
                dir: dir.join(e.dir()),
                devices: e.devices(),
            })
            .collect(),
        devices: files.devices_passwd.lines().count(),
        devices_with_grants: files
            .devices_acl
            .lines()
            .filter(|l| l.starts_with("user "))
            .count(),
        bridge: identity_config.bridge_login.map(|(u, _)| u),
        operators: identity_config.operators.into_keys().collect(),
        devices_listen: m.devices_listen.to_string(),
        service_listen: format!("{}:{}", endpoint.host, endpoint.port),
        pid_file: m.pid_file.clone(),
        dir,
    })
}
