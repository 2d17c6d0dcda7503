//! The fault suite (issue 7 §1): kill things, drop things, flood things,
//! and count what was lost (nothing).
//!
//! - [`kill9`]: `ota serve` killed with SIGKILL several times in one
//!   campaign; no acknowledged Status lost, the campaign ends right.
//! - [`broker_restart`]: Mosquitto restarted mid-download; every device
//!   completes.
//! - [`loss`]: 30% block loss, and devices losing power mid-download;
//!   every device completes.
//! - [`storm`]: a connect storm against the embedded broker; no panic,
//!   every device connected and registered.
//! - [`fuzz`]: seeded bad payloads on every topic the bridge reads; the
//!   bridge counts the drops and still works.
//!
//! Each test runs at its CI size by default and at full size with
//! `OTA_FAULTS_FULL=1`; `OTA_FAULTS_SEED=N` changes every random choice.
//! The tests take a shared lock and run one at a time. See docs/FAULTS.md.

mod broker_restart;
mod fuzz;
mod kill9;
mod loss;
mod storm;
