//! The ota reference device agent and the fleet simulator.
//!
//! # Layout
//!
//! - [`agent`]: one device. A pure state machine ([`agent::Agent`]) that
//!   implements the device side of PROTOCOL.md, its saved state, block
//!   store and installers, and the rumqttc I/O loop that runs it.
//! - [`fleet`]: the simulator (`ota sim`): a profile, thousands of agents
//!   in one process, faults, live counters, [`fleet::Fleet::spawn`].
//! - `testkit` (feature `testkit`, and this crate's own unit tests): signed
//!   releases and blocks made with `schemas` alone, for tests that play the
//!   bridge's part. The stand-in bridge that serves them over MQTT lives
//!   in the test harness (`ota-tests`, `harness::minibridge`), not here.

pub mod agent;
pub mod fleet;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
