//! Campaigns: what an operator asks for ([`spec`]) and the wave gate that
//! decides, wave by wave, whether the rollout widens, waits or stops
//! ([`gate`]). Both are pure: no I/O, no clock, no tokio. The core actor
//! feeds the gate operator commands, tallies and ticks, carries out the
//! effects it returns (announcements, events) and stores it in sled.
//!
//! # Layout
//!
//! - [`spec`]: `CampaignSpec` (the JSON of `campaign create`), its
//!   validation, and the cumulative cohorts of each wave.
//! - [`gate`]: `Gate::step(now, input) -> effects`, the state machine below.
//!
//! # The gate's state machine
//!
//! ```text
//!                 Start
//!   Draft ─────────────────────────► Running(k) ◄──────────────────────┐
//!     │                                 │  │ │                          │
//!     │       failure rate > halt bar   │  │ │ success bar met, or      │ soak over,
//!     │       (once sample reached), or │  │ │ timeout: bar met over    │ k+1 < n:
//!     │       timeout: too few reports  │  │ │ ≥ min_sample terminal,   │ announce
//!     │       or under the bar          │  │ │ or no applicable member  │ cohorts(k+1)
//!     │                                 ▼  │ ▼                          │
//!     │                      Halted(k) ◄───│─── Soaking(k, until) ──────┘
//!     │           announce paused │  ▲     │     (still halts on the failure rate;
//!     │                           │  │     │      soak 0: straight to Running(k+1))
//!     │    Resume: Running(k),    │  │     │
//!     │    fresh timeout, judged  │  │     │ k = last wave passed
//!     │    at once ◄──────────────┘  │     ▼
//!     │                              │   Completed   (announcement stays active)
//!     │
//!     │   Pause:  Running(k) / Soaking(k) ──► Paused(k, time left), announce paused
//!     │   Resume: Paused ──► where it was, deadline = now + time left, announce active
//!     │   Abort:  any phase but Completed/Aborted ──► Aborted, announce aborted
//!     └──────────────────────────────────────────────► (nothing announced from Draft)
//!
//!   Emergency: one implicit wave (its groups at 10000, or every device), no
//!   success bar, never halted by the gate: Running(0) ──► Completed when every
//!   applicable member decided or at the timeout.
//! ```

pub mod gate;
pub mod spec;
