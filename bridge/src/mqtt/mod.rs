//! The bridge's one MQTT connection: options, the event loop task, what it
//! hands to the actors, and the [`Publisher`] they answer with.
//!
//! - [`options`]: persistent session, manual acks, packet limits.
//! - [`event_loop`]: the task that polls rumqttc and routes publishes.
//! - [`inbound`]: [`Incoming`], [`AckToken`] and the routing table.
//! - [`publisher`]: [`Publisher`], cloneable, for every actor.

pub mod event_loop;
pub mod inbound;
pub mod options;
pub mod publisher;

pub use event_loop::{LinkState, MqttLoop};
pub use inbound::{AckToken, Incoming, Routes, Target};
pub use publisher::{PublishError, Publisher};
