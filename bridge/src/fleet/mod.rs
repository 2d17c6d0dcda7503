//! The fleet: who the devices are and which groups they are in.

pub mod groups;
pub mod selector;
