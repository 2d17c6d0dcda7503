//! The operator client: signed commands to the bridge over MQTT, the way
//! the `ota` CLI (and tests) talk to a running `ota serve`.
//!
//! ```no_run
//! # async fn demo(key: schemas::keys::SigningKey) -> Result<(), bridge::client::ClientError> {
//! use bridge::client::{ClientOptions, OpsClient};
//! use schemas::ops::Command;
//! let client = OpsClient::connect(ClientOptions::new("127.0.0.1", 1883, key)).await?;
//! let reply = client.call(Command::GroupList).await?;
//! println!("{}", reply.ok);
//! # Ok(()) }
//! ```
//!
//! Each [`OpsClient::call`] subscribes to its reply topic and waits for
//! the SubAck before publishing the command, so the reply cannot be missed;
//! calls on one client run one at a time.
//!
//! [`push`] is the operator's side of `ota artifact push` (chunks,
//! resume), and [`provision`] that of `ota devices provision | rotate`
//! (passwords made here, only their hashes sent), on top of [`OpsClient`].

pub mod provision;
pub mod push;

use std::path::Path;
use std::time::Duration;

use rand::Rng;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use schemas::keys::{SigningKey, VerifyingKey};
use schemas::ops::{Command, CommandBody, CommandEnvelope, Reply};
use schemas::topic::{Filter, Topic, Topics};
use schemas::RequestId;
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, mpsc, oneshot, Mutex};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::config::client_tls::ClientTlsConfig;
use crate::config::Config;

/// How long a call waits for the bridge's reply by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting to the broker may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest message the client accepts (replies listing many devices).
const MAX_PACKET: usize = 16 * 1024 * 1024;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the broker at {endpoint}: {reason} (is the broker running? check --broker or the [broker] section)")]
    Connect { endpoint: String, reason: String },
    /// The TLS handshake failed: one line naming the host and the reason.
    #[error("{0}")]
    Tls(tls::Failure),
    #[error("TLS settings: {0}")]
    TlsConfig(#[from] tls::TlsError),
    #[error("no reply from the bridge within {}s: is `ota serve` running and connected to this broker?", .0.as_secs())]
    NoReply(Duration),
    #[error("the broker did not confirm the subscription within {}s", .0.as_secs())]
    NoSubAck(Duration),
    #[error("the bridge refused the command: {0}")]
    Refused(String),
    #[error("the reply does not read as expected: {0}")]
    BadReply(String),
    #[error("operator key {path}: {reason} (give the private key file made by `ota keygen`)")]
    Key { path: String, reason: String },
    #[error("{0}")]
    Options(String),
    #[error("the connection to the broker is closed")]
    Closed,
    #[error("refused a reply not signed by the pinned bridge key ({0}); someone else can publish on the broker: check its ACLs")]
    Forged(String),
}

/// Where and as whom to connect.
#[derive(Clone)]
pub struct ClientOptions {
    pub host: String,
    pub port: u16,
    pub credentials: Option<broker::Credentials>,
    pub key: SigningKey,
    pub topics: Topics,
    /// How long a call waits for its reply.
    pub timeout: Duration,
    /// The bridge's director public key, pinned: replies and events must
    /// be signed by it (an unsigned or wrongly signed reply fails the
    /// call; such an event is dropped), and commands name it as their
    /// audience. `None`: replies are read unverified, as from a bridge
    /// without a director key.
    pub bridge_key: Option<VerifyingKey>,
    /// TLS (`mqtts://`): the server verified against its `ca_file` or the
    /// system's roots, an optional client certificate. `None`: plain MQTT.
    pub tls: Option<ClientTlsConfig>,
}

impl ClientOptions {
    /// Defaults: prefix `ota/v1`, no login, a 10 s timeout.
    pub fn new(host: impl Into<String>, port: u16, key: SigningKey) -> Self {
        Self {
            host: host.into(),
            port,
            credentials: None,
            key,
            topics: Topics::default(),
            timeout: DEFAULT_TIMEOUT,
            bridge_key: None,
            tls: None,
        }
    }

    /// TLS with `files` (read now: call it before the runtime, or on a
    /// blocking thread).
    pub fn with_tls(mut self, files: tls::ClientTls) -> Result<Self, ClientError> {
        self.tls = Some(ClientTlsConfig::build(files)?);
        Ok(self)
    }

    /// From a config file: its broker, its prefix, its `[operator]` key,
    /// login and TLS files (each the bridge's when `[operator]` has none).
    /// Reads the TLS files: call it before the runtime.
    pub fn from_config(config: &Config) -> Result<Self, ClientError> {
        let mut o = Self::from_config_without_tls(config)?;
        o.tls = operator_tls(config)?;
        Ok(o)
    }

    /// [`ClientOptions::from_config`] but for TLS, which the caller sets
    /// (the CLI's flags over the config's files).
    pub fn from_config_without_tls(config: &Config) -> Result<Self, ClientError> {
        let Some(key_path) = &config.operator.key else {
            return Err(ClientError::Options(
                "the config has no [operator] key: add `key = \"path/to/operator.key\"` under [operator], or pass --key".into(),
            ));
        };
        let ep = config.endpoint();
        Ok(Self {
            host: ep.host,
            port: ep.port,
            credentials: config
                .operator
                .credentials
                .clone()
                .or_else(|| config.bridge.credentials.clone()),
            key: read_signing_key(key_path)?,
            topics: config.bridge.topics.clone(),
            timeout: DEFAULT_TIMEOUT,
            bridge_key: config.operator.bridge_key,
            tls: None,
        })
    }
}

/// The CLI's TLS for `config`'s broker: `[operator]`'s files over
/// `[broker]`'s, built now; `None` for plain MQTT.
pub fn operator_tls(config: &Config) -> Result<Option<ClientTlsConfig>, ClientError> {
    if !config.endpoint().tls {
        return Ok(None);
    }
    Ok(Some(ClientTlsConfig::build(config.operator.tls.clone())?))
}

/// Reads a private key file.
pub fn read_signing_key(path: &Path) -> Result<SigningKey, ClientError> {
    let key_err = |reason: String| ClientError::Key {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| key_err(e.to_string()))?;
    schemas::keys::parse_signing_key(&text).map_err(|e| key_err(e.to_string()))
}

/// A random name of the protocol alphabet.
pub fn random_name(prefix: &str, len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    let tail: String = (0..len)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}{tail}")
}

/// Events from `P/ops/events`, in order; lagging readers skip ahead.
pub struct EventStream {
    rx: broadcast::Receiver<schemas::ops::Event>,
}

impl EventStream {
    /// The next event; `None` once the client is gone.
    pub async fn next(&mut self) -> Option<schemas::ops::Event> {
        loop {
            match self.rx.recv().await {
                Ok(e) => return Some(e),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    warn!(skipped = n, "event reader fell behind")
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// A reply as it arrived: read, or refused with why (pinned key only).
type Arrived = Result<Reply, String>;

struct Waiters {
    subacks: mpsc::Receiver<()>,
    replies: mpsc::Receiver<Arrived>,
}

/// Reads a reply: from the pinned bridge only, when a key is pinned. A
/// refusal names its topic so the one-line error says where it came from.
fn read_reply(payload: &[u8], pinned: Option<&VerifyingKey>, topic: &str) -> Option<Arrived> {
    match pinned {
        Some(k) => match CommandEnvelope::open::<Reply>(payload, k) {
            Ok(r) => Some(Ok(r)),
            Err(e) => Some(Err(format!("{topic}: {e}"))),
        },
        None => match CommandEnvelope::read_unpinned::<Reply>(payload) {
            Ok(r) => Some(Ok(r)),
            Err(e) => {
                warn!(error = %e, "a reply that does not read");
                None
            }
        },
    }
}

/// A connection to the broker that sends signed commands to the bridge.
pub struct OpsClient {
    client: AsyncClient,
    topics: Topics,
    key: SigningKey,
    timeout: Duration,
    /// The pinned bridge key's kid, as commands name their audience.
    audience: Option<String>,
    waiters: Mutex<Waiters>,
    events: broadcast::Sender<schemas::ops::Event>,
    /// Taken by [`OpsClient::close`]; aborted on drop.
    task: Option<JoinHandle<()>>,
}

impl OpsClient {
    /// Connects (clean session, a random client id) and waits for the
    /// broker's ConnAck.
    pub async fn connect(opts: ClientOptions) -> Result<Self, ClientError> {
        let endpoint = format!("{}:{}", opts.host, opts.port);
        let mut o = MqttOptions::new(random_name("ota-cli-", 12), opts.host.clone(), opts.port);
        o.set_keep_alive(Duration::from_secs(30));
        o.set_max_packet_size(MAX_PACKET, MAX_PACKET);
        if let Some(c) = &opts.credentials {
            o.set_credentials(c.username.clone(), c.password.clone());
        }
        if let Some(t) = &opts.tls {
            o.set_transport(t.transport());
        }
        let (client, mut eventloop) = AsyncClient::new(o, 64);
        let (sub_tx, subacks) = mpsc::channel(16);
        let (reply_tx, replies) = mpsc::channel(64);
        let (events, _) = broadcast::channel(1024);
        let (conn_tx, conn_rx) = oneshot::channel();
        let topics = opts.topics.clone();
        let events_tx = events.clone();
        let pinned = opts.bridge_key;
        let task = tokio::spawn(async move {
            let mut conn_tx = Some(conn_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(tx) = conn_tx.take() {
                            let _ = tx.send(Ok(()));
                        }
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = sub_tx.try_send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => match topics.parse(&p.topic) {
                        Ok(Topic::OpsReply(_)) => {
                            if let Some(r) = read_reply(&p.payload, pinned.as_ref(), &p.topic) {
                                let _ = reply_tx.try_send(r);
                            }
                        }
                        Ok(Topic::OpsEvents) => {
                            let read = match &pinned {
                                Some(k) => CommandEnvelope::open(&p.payload, k),
                                None => CommandEnvelope::read_unpinned(&p.payload),
                            };
                            match read {
                                Ok(e) => {
                                    let _ = events_tx.send(e);
                                }
                                // Never shown as a fact.
                                Err(e) => {
                                    warn!(error = %e, "dropped an event not signed by the bridge")
                                }
                            }
                        }
                        _ => debug!(topic = %p.topic, "ignored a publish"),
                    },
                    Ok(_) => {}
                    Err(e) => {
                        if let Some(tx) = conn_tx.take() {
                            let (host, port) = eventloop.mqtt_options.broker_address();
                            let failed = match tls::explain(&host, port, &e) {
                                Some(f) => ClientError::Tls(f),
                                None => ClientError::Connect {
                                    endpoint: format!("{host}:{port}"),
                                    reason: e.to_string(),
                                },
                            };
                            let _ = tx.send(Err(failed));
                            return;
                        }
                        warn!(error = %e, "lost the broker connection; reconnecting");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, conn_rx).await;
        let fail = |reason: String| ClientError::Connect {
            endpoint: endpoint.clone(),
            reason,
        };
        match connected {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                task.abort();
                return Err(e);
            }
            Ok(Err(_)) => {
                task.abort();
                return Err(fail("the connection task ended".into()));
            }
            Err(_) => {
                task.abort();
                return Err(fail(format!(
                    "no CONNACK within {}s",
                    CONNECT_TIMEOUT.as_secs()
                )));
            }
        }
        Ok(Self {
            client,
            topics: opts.topics,
            key: opts.key,
            timeout: opts.timeout,
            audience: opts
                .bridge_key
                .map(|k| schemas::keys::kid_to_hex(&schemas::keys::kid(&k))),
            waiters: Mutex::new(Waiters { subacks, replies }),
            events,
            task: Some(task),
        })
    }

    /// The topic set in use.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Sends a command with a fresh request id and waits for its reply
    /// (which may be a refusal: see [`OpsClient::call_ok`]).
    pub async fn call(&self, command: Command) -> Result<Reply, ClientError> {
        // The bridge answers a provisioning and a revocation once an
        // external Mosquitto's files hold them: a debounce window and a
        // rewrite, which grow with the files.
        let timeout = match command.settles() {
            true => self.timeout.max(provision::PROVISION_TIMEOUT),
            false => self.timeout,
        };
        self.call_within(command, timeout).await
    }

    /// [`OpsClient::call`], waiting up to `timeout` for the reply.
    async fn call_within(&self, command: Command, timeout: Duration) -> Result<Reply, ClientError> {
        // Invariant: the random name is 4 + 16 characters of the alphabet.
        let request_id = RequestId::new(random_name("req-", 16))
            .map_err(|e| ClientError::Options(e.to_string()))?;
        let body = CommandBody {
            request_id,
            issued_at: crate::rt::unix_now(),
            command,
            audience: self.audience.clone(),
        };
        self.send_within(
            CommandEnvelope::sign(&body, &self.key).to_bytes(),
            &body.request_id,
            timeout,
        )
        .await
    }

    /// Sends raw envelope bytes and waits for the reply to `request_id`:
    /// for tests that forge, replay or age commands.
    pub async fn send(
        &self,
        envelope: Vec<u8>,
        request_id: &RequestId,
    ) -> Result<Reply, ClientError> {
        self.send_within(envelope, request_id, self.timeout).await
    }

    async fn send_within(
        &self,
        envelope: Vec<u8>,
        request_id: &RequestId,
        timeout: Duration,
    ) -> Result<Reply, ClientError> {
        let mut w = self.waiters.lock().await;
        while w.replies.try_recv().is_ok() {}
        while w.subacks.try_recv().is_ok() {}
        let reply_topic = self.topics.build(&Topic::OpsReply(request_id.clone()));
        self.client
            .subscribe(reply_topic.clone(), QoS::AtLeastOnce)
            .await
            .map_err(|_| ClientError::Closed)?;
        match tokio::time::timeout(self.timeout, w.subacks.recv()).await {
            Ok(Some(())) => {}
            Ok(None) => return Err(ClientError::Closed),
            Err(_) => return Err(ClientError::NoSubAck(self.timeout)),
        }
        self.client
            .publish(
                self.topics.build(&Topic::OpsCommands),
                QoS::AtLeastOnce,
                false,
                envelope,
            )
            .await
            .map_err(|_| ClientError::Closed)?;
        let deadline = tokio::time::Instant::now() + timeout;
        let reply = loop {
            match tokio::time::timeout_at(deadline, w.replies.recv()).await {
                Ok(Some(Ok(r))) if &r.request_id == request_id => break r,
                Ok(Some(Ok(_))) => continue,
                // Fail loudly: someone else answers on the bridge's behalf.
                Ok(Some(Err(why))) => return Err(ClientError::Forged(why)),
                Ok(None) => return Err(ClientError::Closed),
                Err(_) => return Err(ClientError::NoReply(timeout)),
            }
        };
        // Best effort: the subscription dies with the session anyway.
        let _ = self.client.try_unsubscribe(reply_topic);
        Ok(reply)
    }

    /// Sends a command and reads its result as `T`; a refusal is an error.
    pub async fn call_ok<T: DeserializeOwned>(&self, command: Command) -> Result<T, ClientError> {
        let reply = self.call(command).await?;
        if !reply.ok {
            return Err(ClientError::Refused(
                reply.error.unwrap_or_else(|| "no reason given".into()),
            ));
        }
        serde_json::from_value(reply.result.unwrap_or_default())
            .map_err(|e| ClientError::BadReply(e.to_string()))
    }

    /// Every device (of `group`), fetched a page at a time.
    pub async fn all_devices(
        &self,
        group: Option<schemas::GroupName>,
    ) -> Result<Vec<crate::ops::fleet_cmds::DeviceView>, ClientError> {
        Ok(self.device_list(group).await?.devices)
    }

    /// Every device, page by page, as one list (`next` none), with the
    /// pending devices of the first page (`devices list`).
    pub async fn device_list(
        &self,
        group: Option<schemas::GroupName>,
    ) -> Result<crate::ops::fleet_cmds::DeviceList, ClientError> {
        let mut out: Option<crate::ops::fleet_cmds::DeviceList> = None;
        let mut after = None;
        loop {
            let page: crate::ops::fleet_cmds::DeviceList = self
                .call_ok(Command::DeviceList {
                    group: group.clone(),
                    after: after.take(),
                    limit: None,
                })
                .await?;
            let next = page.next.clone();
            match &mut out {
                None => out = Some(page),
                Some(o) => o.devices.extend(page.devices),
            }
            match next {
                Some(n) => after = Some(n),
                None => {
                    let mut o = out.unwrap_or_default();
                    o.total = o.devices.len();
                    o.next = None;
                    return Ok(o);
                }
            }
        }
    }

    /// Subscribes to `P/ops/events` and returns the stream of events from
    /// now on.
    pub async fn events(&self) -> Result<EventStream, ClientError> {
        let mut w = self.waiters.lock().await;
        while w.subacks.try_recv().is_ok() {}
        let rx = self.events.subscribe();
        self.client
            .subscribe(self.topics.filter(Filter::OpsEvents), QoS::AtLeastOnce)
            .await
            .map_err(|_| ClientError::Closed)?;
        match tokio::time::timeout(self.timeout, w.subacks.recv()).await {
            Ok(Some(())) => Ok(EventStream { rx }),
            Ok(None) => Err(ClientError::Closed),
            Err(_) => Err(ClientError::NoSubAck(self.timeout)),
        }
    }

    /// Disconnects cleanly: waits (briefly) until the DISCONNECT is sent.
    pub async fn close(mut self) {
        let _ = self.client.disconnect().await;
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
        }
    }
}

impl Drop for OpsClient {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
