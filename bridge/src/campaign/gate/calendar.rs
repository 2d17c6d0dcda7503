//! The gate and the calendar: `stop_at` ends a live campaign `expired`,
//! and maintenance windows pause groups and hold the wave timeout. Pure,
//! as the rest of the gate: the bridge says which windows are closed
//! ([`super::Input::Windows`]), the gate never reads a clock or a time zone.

use std::collections::BTreeSet;

use schemas::ids::GroupName;

use super::{AnnounceState, DecisionKind, Effect, Gate, Phase};

impl Gate {
    /// Every target group is outside its window: the wave cannot move.
    pub(super) fn windows_hold(&self) -> bool {
        let groups = self.cohorts(self.last_wave());
        !self.emergency && !groups.is_empty() && groups.keys().all(|g| self.closed.contains(g))
    }

    /// `stop_at` came: a live campaign ends `expired`, its announcement
    /// left as it stands. A draft or a finished campaign is not touched.
    pub(super) fn expire(&mut self, now: u64, fx: &mut Vec<Effect>) {
        let Some(wave) = self.current_wave().filter(|_| !self.is_finished()) else {
            return;
        };
        let announced = self
            .announcement()
            .map_or(AnnounceState::Active, |a| a.state);
        let stop_at = self.stop_at.unwrap_or(now);
        self.phase = Phase::Expired {
            at: now,
            wave,
            announced,
        };
        self.note(now, wave, DecisionKind::Expired { stop_at }, fx);
        fx.push(Effect::Expired {
            wave,
            counts: self.counts.unwrap_or_default(),
        });
    }

    /// New maintenance window states. A change is logged and announced
    /// (closed groups say `paused`); in a running wave, the timeout stands
    /// still while every target group is closed and moves on by the time
    /// held once one opens. A draft keeps them for its start; ignored by
    /// an emergency and an aborted campaign; a completed or expired one keeps announcing it, so
    /// late devices too wait for their window.
    pub(super) fn windows(&mut self, now: u64, closed: BTreeSet<GroupName>, fx: &mut Vec<Effect>) {
        if self.emergency || closed == self.closed || matches!(self.phase, Phase::Aborted { .. }) {
            return;
        }
        if self.phase == Phase::Draft {
            // Kept for the start's first announcement; nothing to say yet.
            self.closed = closed;
            return;
        }
        let newly: Vec<GroupName> = closed.difference(&self.closed).cloned().collect();
        let opened: Vec<GroupName> = self.closed.difference(&closed).cloned().collect();
        self.closed = closed;
        let hold = self.windows_hold();
        let mut deadline_now = None;
        if let Phase::Running {
            deadline,
            held_since,
            ..
        } = &mut self.phase
        {
            match (*held_since, hold) {
                (None, true) => *held_since = Some(now),
                (Some(since), false) => {
                    *deadline = deadline.saturating_add(now.saturating_sub(since));
                    *held_since = None;
                }
                _ => {}
            }
            deadline_now = Some(*deadline);
        }
        let wave = self.current_wave();
        let kind = DecisionKind::Windows {
            closed: newly,
            opened,
            held: hold && deadline_now.is_some(),
            deadline: deadline_now,
        };
        self.log(now, wave, kind, fx);
        self.announce(fx);
    }
}
