//! A device's own MQTT client (raw rumqttc, not the reference agent), for
//! the attacker tests of PROTOCOL.md E1: it logs in with a device's
//! credentials, does exactly what the test says, records every SUBACK,
//! PUBACK and publish it gets in order, and never reconnects, so a test
//! sees when the broker closes its connection.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeFilter, SubscribeReasonCode};
use schemas::msg::{Hello, WireMessage};
use schemas::topic::{Topic, Topics};
use schemas::{ComponentName, DeviceId, Epoch};
use tokio::sync::mpsc;

/// How long a [`RawClient`] waits for anything.
pub const WAIT: Duration = Duration::from_secs(20);

/// What the connection brought, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got {
    ConnAck,
    SubAck(Vec<SubscribeReasonCode>),
    PubAck,
    Publish {
        topic: String,
        payload: Vec<u8>,
    },
    /// The connection ended (refused at CONNECT, or closed by the broker).
    Closed(String),
}

#[derive(Debug, thiserror::Error)]
pub enum RawError {
    #[error("the connection ended: {0}")]
    Closed(String),
    #[error("nothing came within {0:?}")]
    Timeout(Duration),
    #[error("the client's request queue is closed")]
    Queue,
}

/// Loopback, a 10 s keep-alive, packets up to 1 MiB.
fn options(port: u16, id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(10));
    o.set_max_packet_size(1 << 20, 1 << 20);
    o
}

/// A logged-in device client.
pub struct RawClient {
    pub client: AsyncClient,
    got: mpsc::UnboundedReceiver<Got>,
    /// PUBACKs received so far.
    pubacks: usize,
}

impl RawClient {
    /// Connects as device `id` (username = `id`) with `password`. A
    /// refused login is `Err(Closed)`: rumqttd closes a refused connection
    /// without a CONNACK.
    pub async fn login(port: u16, id: &str, password: &str) -> Result<RawClient, RawError> {
        Self::login_with_will(port, id, password, None).await
    }

    /// [`RawClient::login`], leaving a will (`topic`, `payload`, not
    /// retained) for when the connection ends without a DISCONNECT.
    pub async fn login_with_will(
        port: u16,
        id: &str,
        password: &str,
        will: Option<(String, Vec<u8>)>,
    ) -> Result<RawClient, RawError> {
        let mut o = options(port, id);
        o.set_credentials(id, password);
        if let Some((topic, payload)) = will {
            o.set_last_will(rumqttc::LastWill::new(
                topic,
                payload,
                QoS::AtLeastOnce,
                false,
            ));
        }
        Self::connect(o).await
    }

    /// Connects as client `id` over TLS (`tls` trusts the broker's CA and
    /// may hold a client certificate), with `login` as username and
    /// password if given: a device logs in by its certificate with none.
    pub async fn tls_login(
        port: u16,
        id: &str,
        login: Option<(&str, &str)>,
        tls: std::sync::Arc<tls::rustls::ClientConfig>,
    ) -> Result<RawClient, RawError> {
        let mut o = options(port, id);
        o.set_transport(tls::transport(tls));
        if let Some((username, password)) = login {
            o.set_credentials(username, password);
        }
        Self::connect(o).await
    }

    /// Connects with these options and waits for the CONNACK.
    pub async fn connect(o: MqttOptions) -> Result<RawClient, RawError> {
        let (client, mut el) = AsyncClient::new(o, 64);
        let (tx, got) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let g = match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => Got::ConnAck,
                    Ok(Event::Incoming(Packet::SubAck(s))) => Got::SubAck(s.return_codes),
                    Ok(Event::Incoming(Packet::PubAck(_))) => Got::PubAck,
                    Ok(Event::Incoming(Packet::Publish(p))) => Got::Publish {
                        topic: p.topic,
                        payload: p.payload.to_vec(),
                    },
                    Ok(_) => continue,
                    Err(e) => {
                        let _ = tx.send(Got::Closed(e.to_string()));
                        return;
                    }
                };
                if tx.send(g).is_err() {
                    return;
                }
            }
        });
        let mut raw = RawClient {
            client,
            got,
            pubacks: 0,
        };
        match raw.next().await? {
            Got::ConnAck => Ok(raw),
            Got::Closed(why) => Err(RawError::Closed(why)),
            other => Err(RawError::Closed(format!("{other:?} before the CONNACK"))),
        }
    }

    /// The next thing that came, waiting at most [`WAIT`].
    pub async fn next(&mut self) -> Result<Got, RawError> {
        let g = tokio::time::timeout(WAIT, self.got.recv())
            .await
            .map_err(|_| RawError::Timeout(WAIT))?
            .unwrap_or(Got::Closed("the event task ended".into()));
        if g == Got::PubAck {
            self.pubacks += 1;
        }
        Ok(g)
    }

    /// What came already, without waiting.
    pub fn drain(&mut self) -> Vec<Got> {
        let mut out = Vec::new();
        while let Ok(g) = self.got.try_recv() {
            out.push(g);
        }
        out
    }

    /// The next thing `pick` takes, and what came before it. The
    /// connection ending first is an error.
    pub async fn until<T>(
        &mut self,
        mut pick: impl FnMut(&Got) -> Option<T>,
    ) -> Result<(T, Vec<Got>), RawError> {
        let mut skipped = Vec::new();
        loop {
            let g = self.next().await?;
            if let Some(t) = pick(&g) {
                return Ok((t, skipped));
            }
            if let Got::Closed(why) = g {
                return Err(RawError::Closed(why));
            }
            skipped.push(g);
        }
    }

    /// Subscribes to `filters` in one SUBSCRIBE (QoS 1) and returns its
    /// SUBACK's codes, and what came before the SUBACK.
    pub async fn subscribe(
        &mut self,
        filters: &[String],
    ) -> Result<(Vec<SubscribeReasonCode>, Vec<Got>), RawError> {
        let filters = filters
            .iter()
            .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
        self.client
            .subscribe_many(filters)
            .await
            .map_err(|_| RawError::Queue)?;
        self.until(|g| match g {
            Got::SubAck(codes) => Some(codes.clone()),
            _ => None,
        })
        .await
    }

    /// Publishes at QoS 1 (its PUBACK is counted, see [`RawClient::pubacks`]).
    pub async fn publish(
        &self,
        topic: &str,
        retain: bool,
        payload: Vec<u8>,
    ) -> Result<(), RawError> {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .map_err(|_| RawError::Queue)
    }

    /// Says Hello as device `id` (arch esp32, main 1.0.0) with the label
    /// `customer`.
    pub async fn hello(
        &self,
        topics: &Topics,
        id: &DeviceId,
        customer: &str,
    ) -> Result<(), RawError> {
        let hello = Hello {
            proto: 1,
            arch: "esp32".into(),
            versions: [(
                ComponentName::new("main").expect("a component name"),
                "1.0.0".to_string(),
            )]
            .into(),
            labels: [("customer".to_string(), customer.to_string())].into(),
            boot_id: "boot-1".into(),
            epoch: Epoch::new("ep000001").expect("an epoch"),
            outbox: 0,
            features: Vec::new(),
        };
        self.publish(
            &topics.build(&Topic::Hello(id.clone())),
            false,
            hello.encode(),
        )
        .await
    }

    /// PUBACKs received so far (for [`RawClient::pubacks`]).
    pub fn pubacks_seen(&self) -> usize {
        self.pubacks
    }

    /// Waits until `n` PUBACKs came in all; returns what else came
    /// meanwhile.
    pub async fn pubacks(&mut self, n: usize) -> Result<Vec<Got>, RawError> {
        let mut seen = Vec::new();
        while self.pubacks < n {
            match self.next().await? {
                Got::Closed(why) => return Err(RawError::Closed(why)),
                g => seen.push(g),
            }
        }
        Ok(seen)
    }

    /// Waits until the broker closes this connection; returns why.
    pub async fn closed(&mut self) -> Result<String, RawError> {
        self.until(|g| match g {
            Got::Closed(why) => Some(why.clone()),
            _ => None,
        })
        .await
        .map(|(why, _)| why)
    }
}
