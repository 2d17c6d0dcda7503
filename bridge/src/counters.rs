//! The `counters` line the bridge logs every `[bridge]
//! metrics_interval_secs`: the counters of [`crate::metrics`] and
//! identity's refusals by reason, for operators without a scraper. The
//! same fields end the `bridge stopped` line.

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
            _ = tick.tick() => log_once(&metrics, &identity, "counters"),
        }
    }
}

/// Logs the counters once as structured fields, with `what` as the
/// message: "counters" every interval, "bridge stopped" at the end.
pub fn log_once(metrics: &Metrics, identity: &identity::Identity, what: &str) {
    let s = metrics.snapshot();
    // By reason, the non-zero ones only, quoted (Debug) so the field reads
    // back whole: identity_refused="publish_not_allowed=4 subscribe_not_allowed=7".
    let dropped_by = pairs(s.dropped.iter().map(|(why, n)| (*why, *n)));
    let identity_refused = pairs(identity.refusals().snapshot());
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
        dropped_by = ?dropped_by,
        identity_refused = ?identity_refused,
        foreign_retained = s.foreign_retained,
        anomalies = s.status_anomalies,
        "{what}"
    );
}

fn pairs(counts: impl IntoIterator<Item = (&'static str, u64)>) -> String {
    counts
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(why, n)| format!("{why}={n}"))
        .collect::<Vec<_>>()
        .join(" ")
}
