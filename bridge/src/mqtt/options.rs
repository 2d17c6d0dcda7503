//! The bridge's rumqttc options.

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
/// Requests (publishes, acks) queued for the event loop.
pub const REQUEST_QUEUE: usize = 4096;
/// The bridge's keep-alive.
pub const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// Persistent session (`clean_session = false`) and manual acks: a report
/// is acknowledged to the broker only once it is stored, so reports queued
/// at an external broker survive a bridge restart.
pub fn mqtt_options(config: &Config) -> MqttOptions {
    let ep = config.endpoint();
    let mut o = MqttOptions::new(config.bridge.client_id.clone(), ep.host, ep.port);
    o.set_clean_session(false);
    o.set_manual_acks(true);
    o.set_keep_alive(KEEP_ALIVE);
    let incoming = match &config.broker {
        broker::BrokerConfig::Embedded(e) => MAX_INCOMING_PACKET.max(e.max_payload_size + 1024),
        broker::BrokerConfig::External(_) => MAX_INCOMING_PACKET,
    };
    o.set_max_packet_size(incoming, MAX_OUTGOING_PACKET);
    if let Some(c) = &config.bridge.credentials {
        o.set_credentials(c.username.clone(), c.password.clone());
    }
    o
}
