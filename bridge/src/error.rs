//! [`BridgeError`]: why the bridge could not start or had to stop, each
//! layer's error with its cause.

use crate::config::ConfigError;
use crate::store::StoreError;
use crate::{artifacts, blocks, http, mqtt, ops, repair, state, status};

/// Why the bridge could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("no operator keys are configured, so no command could ever be accepted: generate one with `ota keygen` and list its .pub file in [bridge] operator_keys")]
    NoOperatorKeys,
    #[error("no [bridge] director_key: the bridge signs every Membership, announcement and status ack with it (PROTOCOL.md E2), and devices provisioned with its public key refuse anything unsigned; run `ota keygen` (it writes director.key and director.pub) and set director_key = \"keys/director.key\" under [bridge]")]
    NoDirectorKey,
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
    #[error(transparent)]
    Retention(#[from] ops::retention::RetentionError),
    #[error("[broker] TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("a bridge task failed: {0}")]
    Task(String),
}
