//! The bridge's MQTT link: an ingress connection (persistent session,
//! subscriptions, manual PUBACKs) and an egress connection (publishes),
//! the event loop tasks, what they hand to the actors, and the
//! [`Publisher`] the actors answer with.
//!
//! - [`options`]: both connections' options, and why there are two.
//! - [`event_loop`]: the ingress task that polls rumqttc and routes publishes.
//! - [`egress`]: the egress task.
//! - [`inbound`]: [`Incoming`], [`AckToken`] and the routing table.
//! - [`ack_order`]: PUBACKs released in delivery order (rumqttd requires it).
//! - [`publisher`]: [`Publisher`], cloneable, for every actor.
//! - [`gate`]: retained publishes held until an external Mosquitto has
//!   the grants they make.
//! - [`tls_log`]: a TLS failure of either connection, one line in the log.

pub mod ack_order;
pub mod egress;
pub mod event_loop;
pub mod gate;
pub mod inbound;
pub mod options;
pub mod publisher;
pub mod tls_log;

pub use event_loop::{LinkState, MqttLoop};
pub use inbound::{AckToken, Incoming, Routes, Target};
pub use publisher::{PublishError, Publisher};
