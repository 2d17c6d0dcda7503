//! Helpers: a real embedded broker on a free loopback port and rumqttc
//! clients that wait for events with timeouts.

#![allow(dead_code)] // each test file uses its own subset

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use broker::{EmbeddedBroker, EmbeddedConfig};
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Packet, Publish};
use tokio::time::timeout;

/// Long enough for a loaded CI machine, short enough to fail loudly.
pub const WAIT: Duration = Duration::from_secs(10);
/// Client-side packet limit: the broker's default payload limit.
pub const CLIENT_MAX_PACKET: usize = broker::DEFAULT_MAX_PAYLOAD_SIZE + 1024;

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,rumqttd=off".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A loopback address whose port was free a moment ago.
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local addr")
}

pub fn config() -> EmbeddedConfig {
    EmbeddedConfig {
        listen: free_addr(),
        ..EmbeddedConfig::default()
    }
}

pub fn config_with_users(users: &[(&str, &str)]) -> EmbeddedConfig {
    EmbeddedConfig {
        users: users
            .iter()
            .map(|(u, p)| (u.to_string(), p.to_string()))
            .collect(),
        ..config()
    }
}

/// `broker::start` blocks while rumqttd comes up: keep it off the runtime.
pub async fn start(cfg: EmbeddedConfig) -> EmbeddedBroker {
    init_logs();
    tokio::task::spawn_blocking(move || broker::start(&cfg))
        .await
        .expect("start task")
        .expect("embedded broker starts")
}

pub fn options(broker: &EmbeddedBroker, id: &str, login: Option<(&str, &str)>) -> MqttOptions {
    let addr = broker.connect_addr();
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(CLIENT_MAX_PACKET, CLIENT_MAX_PACKET);
    if let Some((user, pass)) = login {
        o.set_credentials(user, pass);
    }
    o
}

/// Connect and wait for the CONNACK; the error if the broker refuses.
pub async fn try_connect(
    broker: &EmbeddedBroker,
    id: &str,
    login: Option<(&str, &str)>,
) -> Result<(AsyncClient, EventLoop), Box<ConnectionError>> {
    let (client, mut events) = AsyncClient::new(options(broker, id, login), 16);
    let Ok(first) = timeout(WAIT, events.poll()).await else {
        panic!("{id}: no answer to CONNECT within {WAIT:?}");
    };
    let first = first.map_err(Box::new)?;
    match first {
        Event::Incoming(Packet::ConnAck(_)) => Ok((client, events)),
        other => panic!("{id}: expected CONNACK, got {other:?}"),
    }
}

pub async fn connect(
    broker: &EmbeddedBroker,
    id: &str,
    login: Option<(&str, &str)>,
) -> (AsyncClient, EventLoop) {
    try_connect(broker, id, login)
        .await
        .unwrap_or_else(|e| panic!("{id}: connect refused: {e}"))
}

/// Poll until `pick` returns something; panic on an error or after `WAIT`.
pub async fn wait_for<T>(
    events: &mut EventLoop,
    what: &str,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> T {
    let found = timeout(WAIT, async {
        loop {
            let event = events
                .poll()
                .await
                .unwrap_or_else(|e| panic!("waiting for {what}: connection error: {e}"));
            if let Some(found) = pick(&event) {
                return found;
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
}

pub async fn wait_suback(events: &mut EventLoop) {
    wait_for(events, "SUBACK", |e| {
        matches!(e, Event::Incoming(Packet::SubAck(_))).then_some(())
    })
    .await
}

pub async fn wait_publish(events: &mut EventLoop) -> Publish {
    wait_for(events, "PUBLISH", |e| match e {
        Event::Incoming(Packet::Publish(p)) => Some(p.clone()),
        _ => None,
    })
    .await
}

/// Poll until the connection fails; panic if it stays up for `WAIT`.
pub async fn wait_disconnect(events: &mut EventLoop, what: &str) -> ConnectionError {
    let failed = timeout(WAIT, async {
        loop {
            if let Err(e) = events.poll().await {
                return e;
            }
        }
    })
    .await;
    failed.unwrap_or_else(|_| panic!("{what}: still connected after {WAIT:?}"))
}
