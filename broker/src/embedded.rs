//! Start rumqttd inside the process: check the port, build rumqttd's config,
//! install the auth handler, run the broker on its own thread and wait
//! until it accepts connections.

use std::collections::HashMap;
use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rumqttd::{
    AclHandler, Broker, Config, ConnectRequest, ConnectionSettings, Disconnector, MetricSettings,
    MetricType, RouterConfig, ServerSettings, TlsConfig, TlsFailureHandlerSlot,
};
use tracing::{error, info, warn};

use crate::addr::loopback;
use crate::auth::{Auth, CredentialCheck, TICK_CLIENT_ID};
use crate::authority::SharedAuthority;
use crate::config::{EmbeddedConfig, TlsListener};
use crate::error::BrokerError;
use crate::handshakes::{HandshakeFailure, Handshakes};
use crate::meter;
use crate::stats::BrokerCounters;

/// How long [`start`] waits for the listener to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const READY_POLL: Duration = Duration::from_millis(20);
/// rumqttd's sample value: QoS0 messages read from a filter's log per
/// connection per round. (QoS1 is bounded by its fixed 100-message window.)
const MAX_OUTGOING_PACKET_COUNT: u64 = 200;
/// File descriptors the process needs besides the broker's connections:
/// the bridge's store, logs, its own MQTT connection.
const FD_HEADROOM: usize = 64;

/// A running embedded broker.
///
/// rumqttd has no shutdown API: the broker's threads (router, listener,
/// metrics timer, our meter thread) run until the process exits. Dropping
/// this handle does not stop them, and the port stays taken. Start one
/// broker per process (tests may start several, on different ports).
pub struct EmbeddedBroker {
    listen: SocketAddr,
    connect_addr: SocketAddr,
    tls_listen: Option<SocketAddr>,
    handshakes: Arc<Handshakes>,
    auth: Arc<Auth>,
    requires_auth: bool,
    disconnector: DisconnectHandle,
    thread: JoinHandle<()>,
}

/// Closes connected clients' connections by client id (a revoked device's,
/// say). Cheap to clone; never blocks.
#[derive(Clone)]
pub struct DisconnectHandle(Disconnector);

impl DisconnectHandle {
    /// Asks the router to drop `client_id`'s connection, as a second
    /// CONNECT with its id would: the client sees its connection close, and
    /// its will is published. Nothing happens to a client not connected.
    /// False when the router's queue was full (try again) or it is gone.
    pub fn disconnect(&self, client_id: &str) -> bool {
        self.0.disconnect(client_id)
    }
}

/// The connection guard's view, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionStats {
    /// `[broker] max_connections`.
    pub limit: usize,
    /// The guard's conservative count of live connections (see `guard.rs`).
    pub estimate: usize,
    /// The router's count in its last report, if any came.
    pub live: Option<usize>,
    /// How old that report is; reports come about every second.
    pub report_age: Option<Duration>,
    /// Whether the guard refuses clients: only with authentication on
    /// (rumqttd calls no handler for anonymous brokers).
    pub guarded: bool,
}

impl EmbeddedBroker {
    /// The address the listener is bound to (`[broker] listen`).
    pub fn addr(&self) -> SocketAddr {
        self.listen
    }

    /// The address a client in this process should connect to: `addr()`
    /// with a wildcard IP replaced by loopback.
    pub fn connect_addr(&self) -> SocketAddr {
        self.connect_addr
    }

    /// The TLS listener's address (`[broker] tls_listen`), if it runs.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_listen
    }

    /// TLS handshakes of this kind that failed on the TLS listener since
    /// start (they are logged once per interval with their counts).
    pub fn handshake_failures(&self, kind: HandshakeFailure) -> u64 {
        self.handshakes.get(kind)
    }

    /// The broker's counters (logins by credential, failed handshakes),
    /// for `/metrics`.
    pub fn counters(&self) -> BrokerCounters {
        BrokerCounters {
            handshakes: self.handshakes.clone(),
            logins: self.auth.logins.clone(),
            tls: self.tls_listen.is_some(),
        }
    }

    /// Let `check` accept logins that `[broker.users]` does not, such as
    /// devices registered with the bridge. It replaces any earlier check and
    /// takes effect for the next CONNECT. See [`CredentialCheck`] for what
    /// it may do. Fails on a broker without users, which runs anonymous.
    pub fn set_credential_check(&self, check: CredentialCheck) -> Result<(), BrokerError> {
        if !self.requires_auth {
            return Err(BrokerError::Anonymous);
        }
        self.auth.set_check(check);
        Ok(())
    }

    /// Let `authority` decide PROTOCOL.md E1: who may connect as whom (in
    /// place of `[broker.users]` and any credential check: it must know
    /// those accounts), and who may publish and subscribe where, asked on
    /// rumqttd's router thread for every PUBLISH, will and SUBSCRIBE filter
    /// (vendor/rumqttd/OTA-PATCHES.md, patch 7). A refused publish is acked
    /// and dropped, a refused filter gets SUBACK 0x80, a refused will is
    /// forgotten. It replaces any earlier authority and takes effect for the
    /// next packet. Fails on a broker without users, which runs anonymous:
    /// without logins a client id proves nothing.
    pub fn set_authority(&self, authority: SharedAuthority) -> Result<(), BrokerError> {
        if !self.requires_auth {
            return Err(BrokerError::Anonymous);
        }
        self.auth.set_authority(authority);
        Ok(())
    }

    /// A handle that closes clients' connections by client id.
    pub fn disconnector(&self) -> DisconnectHandle {
        self.disconnector.clone()
    }

    /// The connection guard's current numbers.
    pub fn connection_stats(&self) -> ConnectionStats {
        let guard = self.auth.guard();
        ConnectionStats {
            limit: guard.limit(),
            estimate: guard.estimate(),
            live: guard.live(),
            report_age: guard.report_age(Instant::now()),
            guarded: self.requires_auth,
        }
    }

    /// False once rumqttd's listener thread has ended (it logs why).
    pub fn is_running(&self) -> bool {
        !self.thread.is_finished()
    }
}

/// Start the embedded broker and return once it accepts TCP connections.
///
/// Blocks for as long as that takes (tens of milliseconds, at most 10 s):
/// call it before starting the async runtime or inside `spawn_blocking`.
///
/// Fails fast, with a message naming the `[broker]` key to change, on an
/// invalid config, a port already in use, or TLS files that cannot be read.
pub fn start(cfg: &EmbeddedConfig) -> Result<EmbeddedBroker, BrokerError> {
    cfg.validate()?;
    // Read and checked now: a bad file fails the start, not a client's
    // handshake.
    let server_tls = cfg.tls.as_ref().map(server_tls).transpose()?;
    check_port(cfg.listen, "listen")?;
    if let Some(tls) = &cfg.tls {
        check_port(tls.listen, "tls_listen")?;
        if tls.client_ca_file.is_some() && !cfg.requires_auth() {
            warn!(
                tls_listen = %tls.listen,
                "mutual TLS on an anonymous embedded broker: a certificate gets a client through \
                 the handshake, and then it may connect as anyone"
            );
        }
    }
    cfg.warn_if_small_log();
    if !cfg.requires_auth() {
        warn!(
            listen = %cfg.listen,
            "anonymous embedded broker ([broker] allow_anonymous = true): anyone can connect as \
             any device, as the bridge or as an operator, and publish and subscribe anywhere; \
             for development only: set [broker.users] to require logins and topic ACLs"
        );
    }
    if !cfg.requires_auth() && !cfg.listen.ip().is_loopback() {
        warn!(
            listen = %cfg.listen,
            "anonymous embedded broker on a network address: rumqttd 0.20 lets a client break \
             its listener (a client id with + $ # / sent twice): set [broker.users]"
        );
    }
    warn_if_few_fds(cfg.router_max_connections() + FD_HEADROOM);

    let auth = Arc::new(Auth::new(cfg.users.clone(), cfg.max_connections));
    let handshakes = Arc::new(Handshakes::default());
    // Broker::new starts the router thread; links are taken before start().
    let mut broker = Broker::new(rumqttd_config(cfg, &auth, server_tls, &handshakes));
    let disconnector = DisconnectHandle(broker.disconnector());
    let meters = broker
        .meters()
        .map_err(|e| BrokerError::Router(format!("meters link: {e}")))?;
    let tick = broker
        .link(TICK_CLIENT_ID)
        .map_err(|e| BrokerError::Router(format!("tick link: {e}")))?;
    meter::spawn(auth.clone(), meters, tick).map_err(BrokerError::Thread)?;

    let listen = cfg.listen;
    let thread = thread::Builder::new()
        .name("ota-broker".into())
        .spawn(move || {
            // Blocks while the listener runs, which is until the process
            // exits unless the listener fails (a bind error, a panic).
            match broker.start() {
                Ok(()) => error!(%listen, "embedded broker listener stopped"),
                Err(e) => error!(%listen, error = %e, "embedded broker failed"),
            }
        })
        .map_err(BrokerError::Thread)?;

    let connect_addr = cfg.connect_addr();
    wait_until_accepting(connect_addr, &thread)?;
    let tls_listen = cfg.tls.as_ref().map(|t| t.listen);
    if let Some(tls) = &cfg.tls {
        wait_until_accepting(loopback(tls.listen), &thread)?;
    }
    info!(
        %listen,
        tls_listen = ?tls_listen,
        mutual_tls = cfg.tls.as_ref().is_some_and(TlsListener::mutual),
        max_connections = cfg.max_connections,
        auth = cfg.requires_auth(),
        "embedded broker accepting connections"
    );
    Ok(EmbeddedBroker {
        listen,
        connect_addr,
        tls_listen,
        handshakes,
        auth,
        requires_auth: cfg.requires_auth(),
        disconnector,
        thread,
    })
}

/// The TLS listener's rustls config, from its files.
fn server_tls(t: &TlsListener) -> Result<Arc<tls::rustls::ServerConfig>, BrokerError> {
    let files = tls::ServerFiles {
        cert: ("cert_file", &t.cert_file),
        key: ("key_file", &t.key_file),
        client_ca: t.client_ca_file.as_deref().map(|p| ("client_ca_file", p)),
    };
    tls::mqtt_server_config(files).map_err(BrokerError::Tls)
}

fn rumqttd_config(
    cfg: &EmbeddedConfig,
    auth: &Arc<Auth>,
    server_tls: Option<Arc<tls::rustls::ServerConfig>>,
    handshakes: &Arc<Handshakes>,
) -> Config {
    let mut connections = ConnectionSettings {
        connection_timeout_ms: cfg.connection_timeout_ms,
        max_payload_size: cfg.max_payload_size,
        max_inflight_count: cfg.max_inflight_count,
        // The static map is not given to rumqttd: our connect handler
        // checks the same map before the guard.
        auth: None,
        external_auth: None,
        // No effect in rumqttd 0.20 (its filter lookup never reports "no
        // match"): a publish nobody subscribes to is dropped, not stored.
        dynamic_filters: false,
        connect_handler: None,
    };
    if cfg.requires_auth() {
        let auth = auth.clone();
        connections.connect_handler = Some(Arc::new(move |r: ConnectRequest<'_>| {
            auth.connect(r.client_id, r.login, r.peer_certificate)
        }));
    }
    let plain = ServerSettings {
        name: "ota-v4".into(),
        listen: cfg.listen,
        tls: None,
        next_connection_delay_ms: cfg.next_connection_delay_ms,
        connections: connections.clone(),
        tls_failures: None,
    };
    let mut servers = HashMap::from([("ota".to_owned(), plain)]);
    if let (Some(t), Some(server_tls)) = (&cfg.tls, server_tls) {
        let handshakes = handshakes.clone();
        let tls = ServerSettings {
            name: "ota-v4-tls".into(),
            listen: t.listen,
            tls: Some(TlsConfig::RustlsConfig(server_tls)),
            next_connection_delay_ms: cfg.next_connection_delay_ms,
            connections,
            tls_failures: Some(TlsFailureHandlerSlot(Arc::new(move |addr, failure| {
                handshakes.failed(addr, failure)
            }))),
        };
        servers.insert("ota-tls".to_owned(), tls);
    }
    let router = RouterConfig {
        max_connections: cfg.router_max_connections(),
        max_outgoing_packet_count: MAX_OUTGOING_PACKET_COUNT,
        max_segment_size: cfg.segment_size,
        max_segment_count: cfg.segment_count,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
        // Allows everything until an authority is set (`acl.rs`).
        acl: Some(AclHandler(auth.clone())),
    };
    Config {
        id: 0,
        router,
        v4: Some(servers),
        // Drives the router's meter reports to our meter thread. Both kinds
        // must be set: with only one, rumqttd's timer thread unwraps the
        // other's `None` and dies (`link/timer.rs`), and no report ever comes.
        metrics: Some(HashMap::from([
            (MetricType::Meters, metric_every(1)),
            // Nobody listens to alerts (rumqttd logs cursor jumps itself).
            (MetricType::Alerts, metric_every(3_600)),
        ])),
        ..Default::default()
    }
}

fn metric_every(seconds: u64) -> MetricSettings {
    // MetricSettings' only field is private; serde is the way in. The
    // value matches that one field, so this cannot fail.
    serde_json::from_value(serde_json::json!({ "push_interval": seconds }))
        .expect("MetricSettings is { push_interval: u64 }")
}

/// rumqttd only logs a port it cannot bind and runs on without a listener:
/// bind it ourselves first, and let go. (Another process could take the
/// port in the microseconds between; `wait_until_accepting` would then see
/// the listener thread end.)
fn check_port(addr: SocketAddr, key: &'static str) -> Result<(), BrokerError> {
    match TcpListener::bind(addr) {
        Ok(listener) => {
            drop(listener);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            Err(BrokerError::AddrInUse { addr, key })
        }
        Err(source) => Err(BrokerError::Bind { addr, key, source }),
    }
}

/// Poll a TCP connect until the listener answers. The probe sends no
/// CONNECT, so rumqttd logs one "Error while handling MQTT connect packet"
/// at start: that is this probe.
fn wait_until_accepting(addr: SocketAddr, thread: &JoinHandle<()>) -> Result<(), BrokerError> {
    let started = Instant::now();
    loop {
        if thread.is_finished() {
            return Err(BrokerError::Stopped { addr });
        }
        if TcpStream::connect_timeout(&addr, READY_POLL * 5).is_ok() {
            return Ok(());
        }
        if started.elapsed() >= READY_TIMEOUT {
            return Err(BrokerError::NotReady {
                addr,
                waited: started.elapsed(),
            });
        }
        thread::sleep(READY_POLL);
    }
}

/// At the open-file limit rumqttd's accept loop retries at once, forever,
/// logging an error each time: warn while that can still be avoided.
fn warn_if_few_fds(needed: usize) {
    if let Some(advice) = soft_fd_limit().and_then(|soft| fd_advice(soft, needed)) {
        warn!(needed, "{advice}");
    }
}

/// What to tell the user when the soft open-file limit is below `needed`.
fn fd_advice(soft: usize, needed: usize) -> Option<String> {
    (soft < needed).then(|| {
        format!(
            "the open-file limit is {soft}, below the {needed} that [broker] max_connections \
             and its margin need: at the limit the broker spins on failing accepts. Run \
             `ulimit -n {needed}` before `ota serve` (or set LimitNOFILE={needed} in its \
             systemd unit), or lower [broker] max_connections"
        )
    })
}

/// The soft `RLIMIT_NOFILE` from `/proc/self/limits` (Linux only).
fn soft_fd_limit() -> Option<usize> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod fd_tests {
    use super::fd_advice;

    #[test]
    fn a_low_open_file_limit_says_what_to_do() {
        let a = fd_advice(20_000, 22_064).expect("advice");
        assert!(a.contains("the open-file limit is 20000"), "{a}");
        assert!(a.contains("`ulimit -n 22064`"), "{a}");
        assert!(a.contains("lower [broker] max_connections"), "{a}");
        assert_eq!(fd_advice(22_064, 22_064), None);
    }
}
