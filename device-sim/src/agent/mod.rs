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
//! - [`io`]: the rumqttc I/O loop, [`run_device`]; [`classify`] turns its
//!   incoming publishes into events; `suback` matches SUBACKs to the
//!   topics subscribed and logs refusals once per interval; [`hooks`] let
//!   the simulator watch and disrupt it.
//! - `rebuild`: the I/O of whole images: installed images' hashes, E3's
//!   rebuild of a delta's target, the image handed to the installer.
//! - [`image`]: an image's bytes and hash ([`ImageBytes`]), where an
//!   installer reads one from ([`ImageSource`]).
//! - [`pace`]: connect pacing and reconnect backoff.
//!
//! A device team reads [`machine`] for the protocol's rules, each with its
//! unit test in `machine/tests/`.

pub mod classify;
pub mod config;
pub mod event;
pub mod hooks;
pub mod image;
pub mod installer;
pub mod io;
pub mod machine;
pub mod pace;
pub mod policy;
mod rebuild;
pub mod state;
pub mod steps;
pub mod store;
mod suback;
pub mod tls_config;

pub use config::{AgentConfig, Timing};
pub use event::{
    Action, BootOutcome, Event, Geometry, ImageDigest, InstallRequest, Notice, RebuildRequest,
    TimerId,
};
pub use image::{ImageBytes, ImageSource};
pub use installer::{FileInstaller, Installer, MemoryInstaller};
pub use io::{run_device, DeviceError, DeviceIoConfig, Disruption, Hooks, NoHooks};
pub use machine::Agent;
pub use policy::{BusyFor, DeferPolicy, NeverDefer};
pub use state::{DeviceState, Job, OutboxEntry, OutboxState, Stage, StateError};
pub use store::{DeviceStore, FileStore, MemoryStore, SharedImages, StoreError};
