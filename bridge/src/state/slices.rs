//! Core's work over the whole fleet, a slice at a time (issue 19). At
//! 1,000,000 devices a group put's selector scan, a create's pre-flight
//! and a wave's members each take most of a second; done in one handling
//! they held every Presence, status batch and command behind them. So
//! each is prepared in slices of at most [`TURN`] (steps of [`STEP`]
//! devices, at most `[bridge] core_slice` devices a slice), which core
//! runs between its other messages
//! (the core actor); the command that needs one waits for it
//! (`ops::prepare`), and then takes the finished result instead
//! of scanning. A large group put's memberships go out the same way,
//! [`MEMBERSHIPS`] at once and the rest as many a slice.
//!
//! The order of one slice: the group scan, then the pre-flight, then wave
//! members (the campaign a command waits for first), then memberships.

use std::time::{Duration, Instant};

use schemas::CampaignId;

use super::{CoreError, CoreState};

/// Default devices per slice (`[bridge] core_slice`), in steps of
/// [`STEP`] and at most [`TURN`] long: each slice is followed by one of
/// core's other messages, so smaller ones cost the waiting command time.
pub const DEFAULT_SLICE: usize = crate::config::DEFAULT_CORE_SLICE;

/// Most devices in one step of a slice (a step is about 2 to 10 ms here).
pub const STEP: usize = 4_096;

/// A slice ends after the step that passes this.
pub const TURN: Duration = Duration::from_millis(25);

/// Memberships a group put or delete publishes before it replies; the
/// rest go out as many a slice (each is signed and stored: about 20 µs).
pub const MEMBERSHIPS: usize = 256;

impl CoreState {
    /// True while prepared work or memberships are left.
    pub fn has_sliced_work(&self) -> bool {
        self.fleet.preparing()
            || self.campaigns.has_prepared_work()
            || self.fleet.pending_memberships() > 0
    }

    /// One slice of the work left, `focus`'s members before another
    /// campaign's: steps of at most [`STEP`] devices until `core_slice`
    /// devices are done, [`TURN`] has passed, or nothing is left (or
    /// `done` says what a command waits for is ready).
    pub async fn slice(
        &mut self,
        focus: Option<&CampaignId>,
        done: impl Fn(&CoreState) -> bool,
    ) -> Result<(), CoreError> {
        let began = Instant::now();
        let mut left = self.slice;
        while left > 0 && self.has_sliced_work() && !done(self) {
            let budget = left.min(STEP);
            left -= budget;
            self.step(focus, budget).await?;
            if began.elapsed() >= TURN {
                break;
            }
        }
        Ok(())
    }

    async fn step(&mut self, focus: Option<&CampaignId>, budget: usize) -> Result<(), CoreError> {
        if self.fleet.preparing() {
            self.fleet.step_prepared(budget);
            return Ok(());
        }
        if self.campaigns.has_prepared_work() {
            let (ctx, c) = self.campaigns_mut();
            c.step_prepared(&ctx, budget, focus);
            return Ok(());
        }
        if self.fleet.pending_memberships() > 0 {
            self.publish_pending_memberships().await?;
        }
        Ok(())
    }

    /// Publishes the memberships of the first [`MEMBERSHIPS`]
    /// devices a group put or delete may have moved; returns how many
    /// changed, plus those left for the next slices.
    pub async fn publish_pending_memberships(&mut self) -> Result<usize, CoreError> {
        let changes = self.fleet.group_membership_changes_upto(MEMBERSHIPS);
        let n = changes.len();
        self.publish_memberships(changes).await?;
        Ok(n + self.fleet.pending_memberships())
    }
}
