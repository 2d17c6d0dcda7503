//! Campaigns: what an operator asks for ([`spec`]), the wave gate that
//! decides, wave by wave, whether the rollout widens, waits or stops
//! ([`gate`]), and the manager that runs every campaign inside the core
//! actor ([`manager`]): it resolves releases, announces, tallies, ticks
//! and persists. The spec, the gate, the tally and the admission rules
//! are pure (no I/O, no clock, no tokio); the manager carries out what
//! they decide.
//!
//! # Layout
//!
//! - [`spec`]: `CampaignSpec` (the JSON of `campaign create`), its
//!   validation, and the cumulative cohorts of each wave.
//! - [`gate`]: `Gate::step(now, input) -> effects`, the state machine below.
//! - [`members`]: which registered devices a wave's cohorts admit
//!   (`schemas::bucket`, as the devices compute it).
//! - [`tally`]: each device's latest state and the current wave's
//!   `WaveCounts`, kept incrementally.
//! - [`preflight`]: targeted devices by arch, and those the release does
//!   not cover.
//! - [`release`]: checking a release against the artifact store.
//! - [`record`], [`store`]: what is persisted (the `campaigns` tree).
//! - [`announce`]: the retained announcements of a gate announcement.
//! - [`events`]: the `P/ops/events` of every gate effect.
//! - [`view`]: the JSON replies the CLI reads.
//! - [`line`]: what a standing campaign (a factory line's) shows.
//! - [`window`]: maintenance windows (`Mon-Fri 22:00-05:00 Europe/Brussels`), pure.
//! - [`manager`]: [`Campaigns`], every campaign and its live tally.
//! - [`error`]: [`CampaignError`], what the operator reads.
//!
//! # Who calls what, in order
//!
//! ```text
//!  ops::campaign_cmds ◄── campaign_* / emergency ─────────┐
//!  state::campaigns::statuses ◄── committed status batch ──┤
//!  state::campaigns::devices_changed ◄── groups changed ───┼─► Campaigns ─► Gate::step
//!  state::campaigns::tick ◄── every second ────────────────┘   (each with the one Ctx)
//!        record + retained announcement ─► sled, one flush ─► publish retained, events
//! ```
//!
//! Campaign knows nothing of its callers: it is handed a [`Ctx`] (store
//! handles, publisher, block server, the fleet it reads) and `now`, and
//! returns a [`CampaignError`]; `ops` maps that into its reply, `state`
//! into whether core stops.
//!
//! # The gate's state machine
//!
//! ```text
//!                Start             pass, k < last            soak over
//!   Draft ───────────────► Running(k) ──────────────► Soaking(k) ─────────► Running(k+1)
//!                           │  ▲   │                      │
//!             pass, k last  │  │   │ halt                 │ halt
//!                           ▼  │   ▼                      │
//!                   Completed  │  Halted(k) ◄─────────────┘
//!                              │     │
//!                              └─────┘
//!                       Resume: fresh timeout, judged at once
//!
//!   pass      success bar met; or at the timeout, bar met over at least
//!             min_sample terminal reports; or no applicable member.
//!             Soak 0: straight to Running(k+1), which announces cohorts(k+1).
//!   halt      failure rate above the halt bar once the sample is met (also
//!             while soaking); or every applicable member decided, under the
//!             bar; or at the timeout, too few terminal reports or under the
//!             bar. Announces paused.
//!   Pause     Running(k) | Soaking(k) ──► Paused(k, time left), announces paused
//!   Resume    Paused ──► where it was, timer = now + time left, announces active
//!   SetGates  any phase but Completed/Aborted (the override before a Resume)
//!   Abort     any phase but Completed/Aborted ──► Aborted, announces aborted
//!             (from Draft nothing was announced, so nothing is)
//!   Completed leaves the last announcement active for devices still offline.
//!   stop_at   any live phase ──► Expired: no wave widens, the announcement
//!             stays as it was (active or paused), downloads under way finish
//!   Windows   a group outside its maintenance window is announced paused;
//!             while every target group is, the wave timeout stands still
//!
//!   Emergency: one implicit wave (its groups at 10000, or every device), no
//!   success bar, never halted by the gate: Running(0) ──► Completed when
//!   every applicable member decided, or at the timeout.
//! ```

pub mod announce;
pub mod error;
pub mod events;
pub mod followup;
pub mod gate;
pub mod line;
pub mod manager;
pub mod members;
pub mod plan;
pub mod preflight;
pub mod prepared;
pub mod record;
pub mod release;
pub mod roster;
pub mod spec;
pub mod store;
pub mod tally;
pub mod view;
pub mod window;

pub use error::CampaignError;
pub use manager::{Campaigns, Ctx, FIRST_TICK, TICK};
