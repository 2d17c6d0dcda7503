//! (map written once the modules settle)

pub mod campaign;
pub mod fleet;
pub mod metrics;
pub mod status;
pub mod store;
