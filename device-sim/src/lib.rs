//! The ota reference device agent and the fleet simulator.
//!
//! # Layout
//!
//! - [`agent`]: one device. A pure state machine ([`agent::Agent`]) that
//!   implements the device side of PROTOCOL.md, its saved state, block
//!   store and installers, and the rumqttc I/O loop that runs it.
//! - [`fleet`]: the simulator (`ota sim`): a profile, thousands of agents
//!   in one process, faults, live counters, [`fleet::Fleet::spawn`].
//! - [`testkit`]: signed releases and blocks made with `schemas` alone, for
//!   tests and demos that play the bridge's part.

pub mod agent;
pub mod fleet;
pub mod testkit;
