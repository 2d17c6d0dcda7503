//! Durable status.

pub mod tracker;
