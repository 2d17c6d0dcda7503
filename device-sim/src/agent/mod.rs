//! The reference device agent: a faithful implementation of PROTOCOL.md
//! "What a device does with an announcement", runnable on an embedded-Linux
//! device or by the thousands in the simulator.
//!
//! # Layout
//!
//! - [`machine`]: the pure state machine, [`Agent::handle`]`(now, event) -> actions`.
//! - [`event`]: its events and actions.
//! - [`steps`]: steps 1 to 3 (pick, verify, versions) as a pure function.
//! - [`policy`]: the deferral hook (step 4).
//! - [`config`]: identity, provisioning and timings.
//! - [`state`]: what survives a restart.
//! - [`store`]: where it survives: a state directory ([`FileStore`]) or
//!   memory ([`MemoryStore`], the simulator's).
//! - [`installer`]: installing images ([`FileInstaller`], [`MemoryInstaller`]).
//! - [`io`]: the rumqttc I/O loop, [`run_device`].
//! - [`pace`]: connect pacing and reconnect backoff.
//!
//! A device team reads [`machine`] for the protocol's rules, each with its
//! unit test in `machine/tests/`.

pub mod config;
pub mod event;
pub mod installer;
pub mod io;
pub mod machine;
pub mod pace;
pub mod policy;
pub mod state;
pub mod steps;
pub mod store;

pub use config::{AgentConfig, Timing};
pub use event::{
    Action, BootOutcome, Event, Geometry, ImageDigest, InstallRequest, Notice, TimerId,
};
pub use installer::{FileInstaller, Installer, MemoryInstaller};
pub use io::{run_device, DeviceError, DeviceIoConfig, Disruption, Hooks, NoHooks};
pub use machine::Agent;
pub use policy::{BusyFor, DeferPolicy, NeverDefer};
pub use state::{DeviceState, Job, OutboxEntry, OutboxState, Stage, StateError};
pub use store::{DeviceStore, FileStore, MemoryStore, SharedImages, StoreError};
