//! [`RunError`]: why a benchmark run on a [`Stack`](crate::stack::Stack)
//! failed, one type for every suite that drives a stack and a fleet.

use crate::stack::{StackError, WaitError};

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Stack(#[from] StackError),
    #[error(transparent)]
    Wait(#[from] WaitError),
    #[error("fleet: {0}")]
    Fleet(#[from] device_sim::fleet::FleetError),
    #[error("operator command: {0}")]
    Client(#[from] bridge::client::ClientError),
    #[error("release: {0}")]
    Release(#[from] schemas::release::ReleaseError),
    #[error("status observer: {0}")]
    Observer(String),
    #[error("setup: {0}")]
    Setup(String),
    #[error("{0}")]
    Stalled(String),
}

/// A setup step's failure, kept as its message.
pub fn setup(e: impl std::fmt::Display) -> RunError {
    RunError::Setup(e.to_string())
}
