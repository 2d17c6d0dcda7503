//! [`BridgeError`]: why the bridge could not start or had to stop, each
//! layer's error with its cause.

use crate::config::ConfigError;
use crate::store::StoreError;
use crate::{artifacts, blocks, http, mqtt, repair, state, status};

/// Why the bridge could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("no operator keys are configured, so no command could ever be accepted: generate one with `ota keygen` and list its .pub file in [bridge] operator_keys")]
    NoOperatorKeys,
    #[error("cannot create data_dir {path}: {source} (check the path and its permissions)")]
    DataDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
    #[error(transparent)]
    Publish(#[from] mqtt::PublishError),
    #[error(transparent)]
    Artifacts(#[from] artifacts::ArtifactError),
    #[error(transparent)]
    Core(#[from] state::CoreError),
    #[error(transparent)]
    Ingest(#[from] status::IngestError),
    #[error(transparent)]
    Blocks(#[from] blocks::BlocksError),
    #[error(transparent)]
    Http(#[from] http::HttpError),
    #[error(transparent)]
    Repair(#[from] repair::RepairError),
    #[error("[broker] TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("a bridge task failed: {0}")]
    Task(String),
}
