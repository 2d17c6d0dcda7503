//! The `counters` line the bridge logs every `[bridge]
//! metrics_interval_secs`: the counters of [`crate::metrics`] and
//! identity's refusals by reason, for operators without a scraper.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::identity;
use crate::metrics::Metrics;

/// Logs the line every `every` until `stop`.
pub async fn log_every(
    metrics: Arc<Metrics>,
    identity: Arc<identity::Identity>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {
                let s = metrics.snapshot();
                // Refusals since start by reason (E1), e.g.
                // "publish_not_allowed=4 subscribe_not_allowed=7".
                let identity_refused: Vec<String> = identity
                    .refusals()
                    .snapshot()
                    .into_iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(why, n)| format!("{why}={n}"))
                    .collect();
                info!(
                    hellos = s.hellos,
                    statuses_stored = s.statuses_stored,
                    duplicates = s.statuses_duplicate,
                    conflicts = s.statuses_conflict,
                    commits = s.commits,
                    acks = s.acks_published,
                    commands = s.commands_accepted,
                    refused = s.commands_refused,
                    dropped = s.dropped_total(),
                    identity_refused = identity_refused.join(" "),
                    "counters"
                );
            }
        }
    }
}
