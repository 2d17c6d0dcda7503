//! The audit trail's retention (`[bridge] audit_retention_days`): entries
//! older than it are removed at start and then every hour, on the
//! blocking pool. The replay cache is seeded from the last command window
//! only (minutes), so retention never reopens a replay.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::store::{Store, StoreError};

/// How often old entries are removed.
pub const EVERY: Duration = Duration::from_secs(3600);

/// Why the retention task stopped (it stops the bridge, as any actor's
/// failure does).
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("audit retention: {0}")]
    Store(#[from] StoreError),
    #[error("audit retention: the pruning task failed: {0}")]
    Task(String),
}

/// Prunes until `stop`.
pub async fn run(
    store: Store,
    keep: Duration,
    stop: CancellationToken,
) -> Result<(), RetentionError> {
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let before = crate::rt::unix_now().saturating_sub(keep.as_secs());
        let s = store.clone();
        let removed = crate::rt::blocking(move || s.audit.prune_before(before))
            .await
            .map_err(|e| RetentionError::Task(e.to_string()))??;
        if removed > 0 {
            info!(removed, before, "audit: removed entries past the retention");
        }
    }
}
