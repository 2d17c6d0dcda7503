//! What `ota line status` shows of a standing campaign (a factory line's):
//! devices brought up today and in total, the failure rate the gate judges
//! over its latest results, the time from a device's first Hello to its
//! `success`, and the devices that failed. Pure: from the tally and each
//! device's first-seen time.

use schemas::msg::common::Outcome;
use schemas::DeviceId;
use serde::{Deserialize, Serialize};

use super::gate::WaveCounts;
use super::tally::Tally;

/// The latest failures listed.
pub const FAILED_SHOWN: usize = 20;

/// A standing campaign's line, as `campaign status` carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LineView {
    pub halt_window: u32,
    /// The latest `halt_window` results: what the gate judges.
    pub window: WaveCounts,
    /// Members that reached `success` since 00:00 UTC, and in all.
    pub success_today: u32,
    pub success_total: u32,
    pub failure_total: u32,
    /// Seconds from first Hello to `success`, over the members that
    /// succeeded (`None` before the first).
    pub to_success_p50: Option<u64>,
    pub to_success_p99: Option<u64>,
    /// The latest failed members, latest first, at most [`FAILED_SHOWN`].
    pub failed: Vec<FailedDevice>,
}

/// One failed device of the line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FailedDevice {
    pub id: DeviceId,
    /// Its error code, when it gave one.
    pub error: Option<String>,
    /// When the failure was stored (Unix seconds).
    pub at: u64,
}

/// The line view of `tally`; `first_seen` gives a device's first Hello.
pub fn view(
    tally: &Tally,
    halt_window: u32,
    first_seen: impl Fn(&DeviceId) -> Option<u64>,
    now: u64,
) -> LineView {
    let midnight = now - now % 86_400;
    let mut v = LineView {
        halt_window,
        window: tally.window_counts(halt_window),
        ..LineView::default()
    };
    let mut to_success = Vec::new();
    for (d, r) in tally.decided().filter(|(d, _)| tally.is_member(d)) {
        match r.outcome() {
            Some(Outcome::Success) => {
                v.success_total += 1;
                if r.at >= midnight {
                    v.success_today += 1;
                }
                if let Some(seen) = first_seen(d) {
                    to_success.push(r.at.saturating_sub(seen));
                }
            }
            Some(Outcome::Failure) => v.failure_total += 1,
            _ => {}
        }
    }
    v.failed = tally
        .decided()
        .rev()
        .filter(|(d, r)| tally.is_member(d) && r.outcome() == Some(Outcome::Failure))
        .take(FAILED_SHOWN)
        .map(|(d, r)| FailedDevice {
            id: d.clone(),
            error: r.error.map(|e| e.to_string()),
            at: r.at,
        })
        .collect();
    to_success.sort_unstable();
    v.to_success_p50 = percentile(&to_success, 50);
    v.to_success_p99 = percentile(&to_success, 99);
    v
}

/// The `p`th percentile (nearest rank) of sorted `xs`.
fn percentile(xs: &[u64], p: usize) -> Option<u64> {
    if xs.is_empty() {
        return None;
    }
    let rank = (xs.len() * p).div_ceil(100).max(1);
    xs.get(rank - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::tally::Report;
    use schemas::msg::{ErrorCode, StatusState};

    fn d(i: u32) -> DeviceId {
        DeviceId::new(format!("dev-{i}")).unwrap()
    }

    #[test]
    fn today_totals_failures_and_times() {
        let day = 20_000 * 86_400;
        let mut t = Tally::new();
        t.set_members((0..5).map(d).collect());
        let ok = |at| Report::new(StatusState::Success, None, None, at);
        t.report(&d(0), ok(day - 100)); // yesterday
        t.report(&d(1), ok(day + 10));
        t.report(&d(2), ok(day + 20));
        t.report(
            &d(3),
            Report::new(
                StatusState::Failed,
                Some(ErrorCode::InstallFailed),
                None,
                day + 30,
            ),
        );
        // Each device said its first Hello 60 s (dev-2: 600 s) before.
        let seen = |id: &DeviceId| {
            let i: u64 = id.as_str()[4..].parse().unwrap();
            let at = [day - 100, day + 10, day + 20, day + 30][i as usize];
            Some(at - if i == 2 { 600 } else { 60 })
        };
        let v = view(&t, 10, seen, day + 40);
        assert_eq!(
            (v.success_today, v.success_total, v.failure_total),
            (2, 3, 1)
        );
        assert_eq!((v.to_success_p50, v.to_success_p99), (Some(60), Some(600)));
        assert_eq!(v.failed.len(), 1);
        assert_eq!(v.failed[0].error.as_deref(), Some("install_failed"));
        assert_eq!(
            (v.window.success, v.window.failure, v.window.pending),
            (3, 1, 1)
        );
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[7], 99), Some(7));
        let xs: Vec<u64> = (1..=100).collect();
        assert_eq!(
            (percentile(&xs, 50), percentile(&xs, 99)),
            (Some(50), Some(99))
        );
    }
}
