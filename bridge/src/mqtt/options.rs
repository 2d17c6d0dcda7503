//! The bridge's two rumqttc connections.
//!
//! - **Ingress** (`client_id`): the persistent session (`clean_session =
//!   false`) holding the subscriptions, with manual acks: a report is
//!   acknowledged to the broker only once it is stored, so reports queued
//!   at an external broker survive a bridge restart. It sends nothing but
//!   SUBSCRIBE and PUBACKs.
//! - **Egress** (`client_id` + [`EGRESS_SUFFIX`]): a clean session that
//!   only publishes (StatusAcks, memberships, replies, blocks).
//!
//! Why two: rumqttc stops reading its request queue (PUBACKs included)
//! while its own window of unacknowledged publishes is full, and rumqttd
//! 0.20 withholds its PUBACKs and PINGRESP to a connection whose window of
//! deliveries to it is full until that connection PUBACKs something
//! (`router/routing.rs`: a `FreshData` reschedule does not wake an
//! `InflightFull` pause). On one connection each side waits for the other
//! and the link stalls until keep-alive kills it. On the ingress connection
//! PUBACKs never queue behind publishes.

use std::time::Duration;

use rumqttc::MqttOptions;

use crate::config::Config;

/// Largest packet the bridge accepts from the broker. It must be at least
/// what the broker lets clients send, or one oversized publish would break
/// the connection over and over (the broker redelivers it to a persistent
/// session). Operator uploads are at most 128 KiB; the embedded broker's
/// default limit is 256 KiB. Configure an external broker's limit below
/// this (Mosquitto: `max_packet_size`).
pub const MAX_INCOMING_PACKET: usize = 1024 * 1024;
/// Largest packet the bridge sends: a block or an announcement, with room.
pub const MAX_OUTGOING_PACKET: usize = 1024 * 1024;
/// Requests (publishes, acks) queued for each event loop.
pub const REQUEST_QUEUE: usize = 4096;
/// The bridge's keep-alive.
pub const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Appended to `client_id` for the egress connection.
pub const EGRESS_SUFFIX: &str = "-out";

fn base(config: &Config, client_id: String) -> MqttOptions {
    let ep = config.endpoint();
    let mut o = MqttOptions::new(client_id, ep.host, ep.port);
    o.set_keep_alive(KEEP_ALIVE);
    let incoming = match &config.broker {
        broker::BrokerConfig::Embedded(e) => MAX_INCOMING_PACKET.max(e.max_payload_size + 1024),
        broker::BrokerConfig::External(_) => MAX_INCOMING_PACKET,
    };
    o.set_max_packet_size(incoming, MAX_OUTGOING_PACKET);
    if let Some(c) = &config.bridge.credentials {
        o.set_credentials(c.username.clone(), c.password.clone());
    }
    // `mqtts://`: the config built once at load (or by `Bridge::start`).
    if let Some(t) = &config.broker_tls {
        o.set_transport(t.transport());
    }
    o
}

/// The ingress connection: persistent session, manual acks.
pub fn ingress_options(config: &Config) -> MqttOptions {
    let mut o = base(config, config.bridge.client_id.clone());
    o.set_clean_session(false);
    o.set_manual_acks(true);
    o
}

/// The egress connection: a clean session that only publishes.
pub fn egress_options(config: &Config) -> MqttOptions {
    let mut o = base(
        config,
        format!("{}{EGRESS_SUFFIX}", config.bridge.client_id),
    );
    o.set_clean_session(true);
    o
}
