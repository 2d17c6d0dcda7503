//! The connection guard: refuse a client in the auth handler before
//! rumqttd's router would (going over the router's limit breaks the
//! listener for good: upstream issue #991).
//!
//! The auth handler is told about connects but never about disconnects, so
//! the live count comes from rumqttd's router meters: the router reports its
//! connection count (about once a second; see `meter.rs`). Between two
//! reports the guard adds the clients it admitted since the report *before*
//! the last one. That counts the last second's admissions twice at most and
//! never misses one that the router had not registered yet when it counted,
//! so the estimate errs on the high side:
//!
//! ```text
//! estimate = live at the last report
//!          + admitted since the previous report was received
//! ```
//!
//! Before the first report every admission counts. If reports stop (a
//! stalled router) the estimate only grows and new clients are refused: the
//! safe side, since a stalled router is also when a late burst of registered
//! connections would overshoot its limit.
//!
//! Pure state, no I/O: the auth handler and the meter thread share it behind
//! a mutex.

use std::time::{Duration, Instant};

/// Reports older than this are called stale in logs and stats.
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub(crate) struct GuardState {
    limit: usize,
    /// Every admission since start.
    admitted: u64,
    /// `admitted` when the previous report was received.
    mark: u64,
    /// `admitted` when the last report was received.
    last_mark: u64,
    /// The router's live connection count in the last report, our own
    /// internal links left out.
    live: usize,
    last_report: Option<Instant>,
}

/// What the guard says about a new client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    Admitted,
    Refused { estimate: usize },
}

impl GuardState {
    pub(crate) fn new(limit: usize) -> Self {
        GuardState {
            limit,
            admitted: 0,
            mark: 0,
            last_mark: 0,
            live: 0,
            last_report: None,
        }
    }

    pub(crate) fn estimate(&self) -> usize {
        // `admitted` only grows and `mark` is a past value of it.
        let since = usize::try_from(self.admitted - self.mark).unwrap_or(usize::MAX);
        self.live.saturating_add(since)
    }

    pub(crate) fn admit(&mut self) -> Admission {
        let estimate = self.estimate();
        if estimate >= self.limit {
            return Admission::Refused { estimate };
        }
        self.admitted += 1;
        Admission::Admitted
    }

    /// A router report: `live` connections, not counting our internal links.
    pub(crate) fn report(&mut self, live: usize, now: Instant) {
        self.live = live;
        self.mark = self.last_mark;
        self.last_mark = self.admitted;
        self.last_report = Some(now);
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    pub(crate) fn live(&self) -> Option<usize> {
        self.last_report.map(|_| self.live)
    }

    pub(crate) fn report_age(&self, now: Instant) -> Option<Duration> {
        self.last_report.map(|at| now.saturating_duration_since(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admit_n(g: &mut GuardState, n: usize) {
        for _ in 0..n {
            assert_eq!(g.admit(), Admission::Admitted);
        }
    }

    #[test]
    fn before_any_report_every_admission_counts() {
        let mut g = GuardState::new(3);
        admit_n(&mut g, 3);
        assert_eq!(g.admit(), Admission::Refused { estimate: 3 });
        assert_eq!(g.live(), None);
    }

    #[test]
    fn disconnects_free_slots_after_two_reports() {
        let t = Instant::now();
        let mut g = GuardState::new(3);
        admit_n(&mut g, 3);
        // One client left; the router now has 2. The first report still
        // counts the three admissions since start on top: conservative.
        g.report(2, t);
        assert_eq!(g.estimate(), 5);
        assert!(matches!(g.admit(), Admission::Refused { .. }));
        // The next report only adds what came after the first one.
        g.report(2, t + Duration::from_secs(1));
        assert_eq!(g.estimate(), 2);
        assert_eq!(g.admit(), Admission::Admitted);
        assert_eq!(g.estimate(), 3);
        assert!(matches!(g.admit(), Admission::Refused { estimate: 3 }));
    }

    #[test]
    fn an_admission_the_router_has_not_registered_yet_is_not_lost() {
        let t = Instant::now();
        let mut g = GuardState::new(10);
        g.report(0, t);
        g.report(0, t + Duration::from_secs(1));
        // Admitted just before a report that was taken before the router
        // registered it: the report says 0, but the admission still counts.
        admit_n(&mut g, 1);
        g.report(0, t + Duration::from_secs(2));
        assert_eq!(g.estimate(), 1);
        // One report later it is in the router's count.
        g.report(1, t + Duration::from_secs(3));
        assert_eq!(g.estimate(), 1);
    }

    #[test]
    fn without_reports_the_estimate_only_grows() {
        let mut g = GuardState::new(5);
        g.report(4, Instant::now());
        admit_n(&mut g, 1);
        assert!(matches!(g.admit(), Admission::Refused { estimate: 5 }));
    }

    #[test]
    fn report_age() {
        let t = Instant::now();
        let mut g = GuardState::new(1);
        assert_eq!(g.report_age(t), None);
        g.report(0, t);
        assert_eq!(
            g.report_age(t + Duration::from_secs(2)),
            Some(Duration::from_secs(2))
        );
    }
}
