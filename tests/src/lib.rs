//! The harness: start the real stack (embedded broker or Mosquitto, the
//! bridge, a simulated fleet) for end-to-end tests, the demo and the
//! benchmarks.
//!
//! # Layout
//!
//! - [`bench`]: benchmarks behind `ota bench`, returning figures.

pub mod bench;
