use crate::link::alerts::{self};
use crate::link::console::ConsoleLink;
use crate::link::network::{self, Network, N};
use crate::link::remote::{self, mqtt_connect, RemoteLink};
use crate::link::{bridge, timer};
use crate::local::LinkBuilder;
use crate::protocol::v4::V4;
use crate::protocol::v5::V5;
use crate::protocol::{Packet, Protocol};
#[cfg(any(feature = "use-rustls", feature = "use-native-tls"))]
use crate::server::tls::{self, TLSAcceptor};
use crate::{meters, ConnectionSettings, Meter};
use flume::{RecvError, SendError, Sender};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use tracing::{debug, error, field, info, warn, Instrument};
use uuid::Uuid;

#[cfg(feature = "websocket")]
use async_tungstenite::tokio::accept_hdr_async;
#[cfg(feature = "websocket")]
use async_tungstenite::tungstenite::handshake::server::{
    Callback, ErrorResponse, Request, Response,
};
#[cfg(feature = "websocket")]
use async_tungstenite::tungstenite::http::HeaderValue;
#[cfg(feature = "websocket")]
use ws_stream_tungstenite::WsStream;

use metrics::gauge;
use metrics_exporter_prometheus::PrometheusBuilder;
use std::time::Duration;
use std::{io, thread};

use crate::link::console;
use crate::link::local::{self, LinkRx, LinkTx};
use crate::router::{Event, Router};
use crate::{Config, ConnectionId, ServerSettings, TlsFailure, TlsFailureHandlerSlot};

use tokio::net::{TcpListener, TcpStream};
use tokio::time::error::Elapsed;
use tokio::{task, time};

#[derive(Debug, thiserror::Error)]
#[error("Acceptor error")]
pub enum Error {
    #[error("I/O {0}")]
    Io(#[from] io::Error),
    #[error("Timeout")]
    Timeout(#[from] Elapsed),
    #[error("Channel recv error")]
    Recv(#[from] RecvError),
    #[error("Channel send error")]
    Send(#[from] SendError<(ConnectionId, Event)>),
    #[cfg(any(feature = "use-rustls", feature = "use-native-tls"))]
    #[error("Certs error = {0}")]
    Certs(#[from] tls::Error),
    #[error("Accept error = {0}")]
    Accept(String),
    #[error("Remote error = {0}")]
    Remote(#[from] remote::Error),
    #[error("Invalid configuration")]
    Config(String),
}

pub struct Broker {
    config: Arc<Config>,
    router_tx: Sender<(ConnectionId, Event)>,
}

/// ota patch (OTA-PATCHES.md 7): closes a connected client's connection,
/// as a second CONNECT with its client id would; its will is published.
#[derive(Clone)]
pub struct Disconnector {
    router_tx: Sender<(ConnectionId, Event)>,
}

impl Disconnector {
    pub(crate) fn new(router_tx: Sender<(ConnectionId, Event)>) -> Self {
        Disconnector { router_tx }
    }

    /// Asks the router to drop `client_id`'s connection, if it has one.
    /// Never blocks: false when the router's queue is full or it is gone.
    pub fn disconnect(&self, client_id: &str) -> bool {
        // The connection id is unused: the router finds it by client id.
        let event = Event::DisconnectClient(client_id.to_owned());
        self.router_tx.try_send((0, event)).is_ok()
    }
}

impl Broker {
    pub fn new(config: Config) -> Broker {
        let config = Arc::new(config);
        let router_config = config.router.clone();
        let router: Router = Router::new(config.id, router_config);

        // Setup cluster if cluster settings are configured.
        match config.cluster.clone() {
            Some(_cluster_config) => {
                // let node_id = cluster_config.node_id;
                // let listen = cluster_config.listen;
                // let seniors = cluster_config.seniors;
                // let mut cluster = RemoteCluster::new(node_id, &listen, seniors);
                // Broker::setup_remote_cluster(&mut router, node_id, &mut cluster);

                // Start router first and then cluster in the background
                let router_tx = router.spawn();
                // cluster.spawn();
                Broker { config, router_tx }
            }
            None => {
                let router_tx = router.spawn();
                Broker { config, router_tx }
            }
        }
    }

    // pub fn new_local_cluster(
    //     config: Config,
    //     node_id: NodeId,
    //     seniors: Vec<(NodeId, Sender<ReplicationData>)>,
    // ) -> (Broker, Sender<ReplicationData>) {
    //     let config = Arc::new(config);
    //     let router_config = config.router.clone();

    //     let mut router = Router::new(config.id, router_config);
    //     let (mut cluster, tx) = LocalCluster::new(node_id, seniors);
    //     Broker::setup_local_cluster(&mut router, node_id, &mut cluster);

    //     // Start router first and then cluster in the background
    //     let router_tx = router.spawn();
    //     cluster.spawn();

    //     (Broker { config, router_tx }, tx)
    // }

    // fn setup_remote_cluster(router: &mut Router, node_id: NodeId, cluster: &mut RemoteCluster) {
    //     // Retrieve pre-configured list of router <-> replica link from router
    //     // and add the link to cluster
    //     let nodes: Vec<NodeId> = (0..MAX_NODES).filter(|v| *v != node_id).collect();
    //     for node_id in nodes {
    //         let link = router.get_replica_handle(node_id);
    //         cluster.add_replica_router_handle(node_id, link);
    //     }
    // }

    // fn setup_local_cluster(router: &mut Router, node_id: NodeId, cluster: &mut LocalCluster) {
    //     // Retrieve pre-configured list of router <-> replica link from router
    //     // and add the link to cluster
    //     let nodes: Vec<NodeId> = (0..MAX_NODES).filter(|v| *v != node_id).collect();
    //     for node_id in nodes {
    //         let link = router.get_replica_handle(node_id);
    //         cluster.add_replica_router_handle(node_id, link);
    //     }
    // }

    // Link to get meters
    pub fn meters(&self) -> Result<meters::MetersLink, meters::LinkError> {
        let link = meters::MetersLink::new(self.router_tx.clone())?;
        Ok(link)
    }

    /// ota patch: a handle that closes clients' connections by client id
    /// (OTA-PATCHES.md 7).
    pub fn disconnector(&self) -> Disconnector {
        Disconnector::new(self.router_tx.clone())
    }

    // Link to get alerts
    pub fn alerts(&self) -> Result<alerts::AlertsLink, alerts::LinkError> {
        let link = alerts::AlertsLink::new(self.router_tx.clone())?;
        Ok(link)
    }

    pub fn link(&self, client_id: &str) -> Result<(LinkTx, LinkRx), local::LinkError> {
        // Register this connection with the router. Router replies with ack which if ok will
        // start the link. Router can sometimes reject the connection (ex. max connection limit).
        let (link_tx, link_rx, _ack) =
            LinkBuilder::new(client_id, self.router_tx.clone()).build()?;
        Ok((link_tx, link_rx))
    }

    #[tracing::instrument(skip(self))]
    pub fn start(&mut self) -> Result<(), Error> {
        if self.config.v4.is_none()
            && self.config.v5.is_none()
            && (cfg!(not(feature = "websocket")) || self.config.ws.is_none())
        {
            return Err(Error::Config(
                "Atleast one server config must be specified, \
                consider adding either of [v4.x]/[v5.x] or [ws.x] (if enabled) in config file."
                    .to_string(),
            ));
        }

        // we don't know which servers (v4/v5/ws) user will spawn
        // so we collect handles for all of the spawned servers
        let mut server_thread_handles = Vec::new();

        if let Some(metrics_config) = self.config.metrics.clone() {
            let timer_thread = thread::Builder::new().name("timer".to_owned());
            let router_tx = self.router_tx.clone();
            timer_thread.spawn(move || {
                let mut runtime = tokio::runtime::Builder::new_current_thread();
                let runtime = runtime.enable_all().build().unwrap();

                runtime.block_on(async move {
                    timer::start(metrics_config, router_tx).await;
                });
            })?;
        }

        // Spawn bridge in a separate thread.
        if let Some(bridge_config) = self.config.bridge.clone() {
            let bridge_thread = thread::Builder::new().name(bridge_config.name.clone());
            let router_tx = self.router_tx.clone();
            bridge_thread.spawn(move || {
                let mut runtime = tokio::runtime::Builder::new_current_thread();
                let runtime = runtime.enable_all().build().unwrap();

                runtime.block_on(async move {
                    if let Err(e) = bridge::start(bridge_config, router_tx, V4).await {
                        error!(error=?e, "Bridge Link error");
                    };
                });
            })?;
        }

        // Spawn servers in a separate thread.
        if let Some(v4_config) = &self.config.v4 {
            for (_, config) in v4_config.clone() {
                let server_thread = thread::Builder::new().name(config.name.clone());
                let mut server = Server::new(config, self.router_tx.clone(), V4);
                let handle = server_thread.spawn(move || {
                    let mut runtime = tokio::runtime::Builder::new_current_thread();
                    let runtime = runtime.enable_all().build().unwrap();

                    runtime.block_on(async {
                        if let Err(e) = server.start(LinkType::Remote).await {
                            error!(error=?e, "Server error - V4");
                        }
                    });
                })?;
                server_thread_handles.push(handle)
            }
        }

        if let Some(v5_config) = &self.config.v5 {
            for (_, config) in v5_config.clone() {
                let server_thread = thread::Builder::new().name(config.name.clone());
                let mut server = Server::new(config, self.router_tx.clone(), V5);
                let handle = server_thread.spawn(move || {
                    let mut runtime = tokio::runtime::Builder::new_current_thread();
                    let runtime = runtime.enable_all().build().unwrap();

                    runtime.block_on(async {
                        if let Err(e) = server.start(LinkType::Remote).await {
                            error!(error=?e, "Server error - V5");
                        }
                    });
                })?;
                server_thread_handles.push(handle)
            }
        }

        #[cfg(not(feature = "websocket"))]
        if self.config.ws.is_some() {
            warn!("websocket feature is disabled, [ws] config will be ignored.");
        }

        #[cfg(feature = "websocket")]
        if let Some(ws_config) = &self.config.ws {
            for (_, config) in ws_config.clone() {
                let server_thread = thread::Builder::new().name(config.name.clone());
                //TODO: Add support for V5 procotol with websockets. Registered in config or on ServerSettings
                let mut server = Server::new(config, self.router_tx.clone(), V4);
                let handle = server_thread.spawn(move || {
                    let mut runtime = tokio::runtime::Builder::new_current_thread();
                    let runtime = runtime.enable_all().build().unwrap();

                    runtime.block_on(async {
                        if let Err(e) = server.start(LinkType::Websocket).await {
                            error!(error=?e, "Server error - WS");
                        }
                    });
                })?;
                server_thread_handles.push(handle)
            }
        }

        if let Some(prometheus_setting) = &self.config.prometheus {
            let timeout = prometheus_setting.interval;
            // If port is specified use it instead of listen.
            // NOTE: This means listen is ignored when `port` is specified.
            // `port` will be removed in future release in favour of `listen`
            let addr = {
                #[allow(deprecated)]
                match prometheus_setting.port {
                    Some(port) => SocketAddr::new("127.0.0.1".parse().unwrap(), port),
                    None => prometheus_setting.listen.unwrap_or(SocketAddr::new(
                        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
                        9042,
                    )),
                }
            };
            let metrics_thread = thread::Builder::new().name("Metrics".to_owned());
            let meter_link = self.meters().unwrap();
            metrics_thread.spawn(move || {
                let builder = PrometheusBuilder::new().with_http_listener(addr);
                builder.install().unwrap();

                let total_publishes = gauge!("metrics.router.total_publishes");
                let total_connections = gauge!("metrics.router.total_connections");
                let failed_publishes = gauge!("metrics.router.failed_publishes");
                loop {
                    if let Ok(metrics) = meter_link.recv() {
                        for m in metrics {
                            match m {
                                Meter::Router(_, ref r) => {
                                    total_connections.set(r.total_connections as f64);
                                    total_publishes.set(r.total_publishes as f64);
                                    failed_publishes.set(r.failed_publishes as f64);
                                }
                                _ => continue,
                            }
                        }
                    }

                    std::thread::sleep(Duration::from_secs(timeout));
                }
            })?;
        }

        if let Some(console) = self.config.console.clone() {
            let console_link = ConsoleLink::new(console, self.router_tx.clone());

            let console_link = Arc::new(console_link);
            let console_thread = thread::Builder::new().name("Console".to_string());
            console_thread.spawn(move || {
                let mut runtime = tokio::runtime::Builder::new_current_thread();
                let runtime = runtime.enable_all().build().unwrap();
                runtime.block_on(console::start(console_link));
            })?;
        }

        // in ideal case, where server doesn't crash, join() will never resolve
        // we still try to join threads so that we don't return from function
        // unless everything crashes.
        server_thread_handles.into_iter().for_each(|handle| {
            // join() might panic in case the thread panics
            // we just ignore it
            let _ = handle.join();
        });

        Ok(())
    }
}

#[derive(Copy, Clone)]
pub enum LinkType {
    #[cfg(feature = "websocket")]
    Websocket,
    Remote,
}

#[derive(PartialEq)]
enum AwaitingWill {
    Cancel,
    Fire,
}

pub struct Server<P> {
    config: ServerSettings,
    router_tx: Sender<(ConnectionId, Event)>,
    protocol: P,
    awaiting_will_handler: Arc<Mutex<HashMap<String, Sender<AwaitingWill>>>>,
}

impl<P: Protocol + Clone + Send + 'static> Server<P> {
    pub fn new(
        config: ServerSettings,
        router_tx: Sender<(ConnectionId, Event)>,
        protocol: P,
    ) -> Server<P> {
        Server {
            config,
            router_tx,
            protocol,
            awaiting_will_handler: Arc::new(Mutex::new(HashMap::default())),
        }
    }

    /// ota patch (OTA-PATCHES.md 8): the listener's TLS acceptor, built
    /// once (upstream read the certificate files again on every accept).
    fn tls_acceptor(&self) -> Result<Option<Arc<Acceptor>>, Error> {
        #[cfg(any(feature = "use-rustls", feature = "use-native-tls"))]
        if let Some(c) = &self.config.tls {
            return Ok(Some(Arc::new(TLSAcceptor::new(c)?)));
        }
        Ok(None)
    }

    pub async fn start(&mut self, link_type: LinkType) -> Result<(), Error> {
        let listener = TcpListener::bind(&self.config.listen).await?;
        let delay = Duration::from_millis(self.config.next_connection_delay_ms);
        let mut count: usize = 0;

        let config = Arc::new(self.config.connections.clone());
        let acceptor = self.tls_acceptor()?;
        // ota patch (OTA-PATCHES.md 8): a handshake has as long as a
        // connection has to send its CONNECT.
        let handshake_timeout =
            Duration::from_millis(self.config.connections.connection_timeout_ms.into());
        let failures = self.config.tls_failures.clone();
        info!(
            config = self.config.name,
            listen_addr = self.config.listen.to_string(),
            "Listening for remote connections",
        );
        loop {
            // Await new network connection.
            let (stream, addr) = match listener.accept().await {
                Ok((s, r)) => (s, r),
                Err(e) => {
                    error!(error=?e, "Unable to accept socket.");
                    continue;
                }
            };

            info!(
                name=?self.config.name, ?addr, count, "accept"
            );

            let new = NewConnection {
                config: config.clone(),
                router_tx: self.router_tx.clone(),
                protocol: self.protocol.clone(),
                wills: self.awaiting_will_handler.clone(),
                link_type,
            };
            count += 1;

            // ota patch (OTA-PATCHES.md 8): the TLS handshake runs in the
            // connection's own task, with a timeout. Upstream awaited it
            // here, in the accept loop, with none: one client that opened
            // a TCP connection and sent nothing stopped every new
            // connection of the listener.
            match acceptor.clone() {
                None => {
                    task::spawn(new.serve(Box::new(stream), None, None));
                }
                Some(acceptor) => {
                    let failures = failures.clone();
                    task::spawn(async move {
                        let accepted =
                            time::timeout(handshake_timeout, tls_accept(&acceptor, stream)).await;
                        match accepted {
                            Ok(Ok((network, tenant_id, peer))) => {
                                new.serve(network, tenant_id, peer).await
                            }
                            Ok(Err(e)) => {
                                debug!(error=?e, ?addr, "Tls accept error");
                                if let Some(f) = &failures {
                                    tls_failed(f, addr, &e);
                                }
                            }
                            Err(_) => {
                                debug!(?addr, "Tls handshake timed out");
                                if let Some(f) = &failures {
                                    (f.0)(addr, TlsFailure::TimedOut);
                                }
                            }
                        }
                    });
                }
            }

            time::sleep(delay).await;
        }
    }
}

/// ota patch (OTA-PATCHES.md 8): the listener's acceptor (none without TLS).
#[cfg(any(feature = "use-rustls", feature = "use-native-tls"))]
type Acceptor = TLSAcceptor;
#[cfg(not(any(feature = "use-rustls", feature = "use-native-tls")))]
type Acceptor = ();

/// ota patch (OTA-PATCHES.md 8, 9): a TLS handshake, giving the stream, the
/// tenant id and the client's certificate.
#[cfg(any(feature = "use-rustls", feature = "use-native-tls"))]
async fn tls_accept(
    acceptor: &TLSAcceptor,
    stream: TcpStream,
) -> Result<(Box<dyn N>, Option<String>, Option<Vec<u8>>), Error> {
    let a = acceptor.accept(stream).await?;
    Ok((a.network, a.tenant_id, a.peer_certificate))
}

#[cfg(not(any(feature = "use-rustls", feature = "use-native-tls")))]
async fn tls_accept(
    _: &(),
    stream: TcpStream,
) -> Result<(Box<dyn N>, Option<String>, Option<Vec<u8>>), Error> {
    Ok((Box::new(stream), None, None))
}

/// ota patch (OTA-PATCHES.md 8): tells the handler why a handshake failed.
fn tls_failed(f: &TlsFailureHandlerSlot, addr: SocketAddr, e: &Error) {
    #[cfg(any(feature = "use-rustls", feature = "use-native-tls"))]
    if let Error::Certs(tls::Error::Io(io)) = e {
        return (f.0)(addr, TlsFailure::Handshake(io));
    }
    (f.0)(addr, TlsFailure::Other(e.to_string()))
}

/// ota patch (OTA-PATCHES.md 8): what a new connection needs once its
/// stream is ready, in the connection's own task (upstream ran this part
/// in the accept loop).
struct NewConnection<P> {
    config: Arc<ConnectionSettings>,
    router_tx: Sender<(ConnectionId, Event)>,
    protocol: P,
    wills: Arc<Mutex<HashMap<String, Sender<AwaitingWill>>>>,
    link_type: LinkType,
}

impl<P: Protocol + Clone + Send + 'static> NewConnection<P> {
    async fn serve(
        self,
        network: Box<dyn N>,
        tenant_id: Option<String>,
        peer: Option<Vec<u8>>,
    ) {
        let NewConnection {
            config,
            router_tx,
            protocol,
            wills,
            link_type,
        } = self;
        match link_type {
            #[cfg(feature = "websocket")]
            LinkType::Websocket => {
                let stream = match accept_hdr_async(network, WSCallback).await {
                    Ok(s) => Box::new(WsStream::new(s)),
                    Err(e) => {
                        error!(error=?e, "Websocket failed handshake");
                        return;
                    }
                };
                remote(config, tenant_id, peer, router_tx, stream, protocol, wills)
                    .instrument(tracing::info_span!(
                        "websocket_link",
                        client_id = field::Empty,
                        connection_id = field::Empty
                    ))
                    .await
            }
            LinkType::Remote => {
                let span = tracing::error_span!(
                    "remote_link",
                    ?tenant_id,
                    client_id = field::Empty,
                    connection_id = field::Empty,
                );
                remote(config, tenant_id, peer, router_tx, network, protocol, wills)
                    .instrument(span)
                    .await
            }
        }
    }
}

/// Configures the Websocket connection to indicate the correct protocol
/// by adding the "sec-websocket-protocol" with value of "mqtt" to the response header
#[cfg(feature = "websocket")]
struct WSCallback;
#[cfg(feature = "websocket")]
impl Callback for WSCallback {
    fn on_request(
        self,
        _request: &Request,
        mut response: Response,
    ) -> Result<Response, ErrorResponse> {
        response
            .headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static("mqtt"));
        Ok(response)
    }
}

/// A new network connection should wait for a mqtt connect packet. This should be handled
/// asynchronously to avoid blocking other new connections while this connection is
/// waiting for mqtt connect packet. Also this honours connection wait time as per config to prevent
/// denial of service attacks (rogue clients which only establish network connections without
/// sending a mqtt connection packet to make the server reach its concurrent connection limit).
async fn remote<P: Protocol>(
    config: Arc<ConnectionSettings>,
    tenant_id: Option<String>,
    peer: Option<Vec<u8>>,
    router_tx: Sender<(ConnectionId, Event)>,
    stream: Box<dyn N>,
    protocol: P,
    will_handlers: Arc<Mutex<HashMap<String, Sender<AwaitingWill>>>>,
) {
    let mut network = Network::new(
        stream,
        config.max_payload_size,
        config.max_inflight_count,
        protocol,
    );

    let dynamic_filters = config.dynamic_filters;

    let connect_packet = match mqtt_connect(config, &mut network, peer.as_deref()).await {
        Ok(p) => p,
        // ota patch: a client that hangs up before its CONNECT (a port
        // probe, a device rebooting) is not a broker error.
        Err(e) if hung_up(&e) => {
            debug!(error=?e, "closed before CONNECT");
            return;
        }
        Err(e) => {
            error!(error=?e, "Error while handling MQTT connect packet");
            return;
        }
    };

    let (mut client_id, clean_session) = match &connect_packet {
        Packet::Connect(ref connect, _, _, _, _) => {
            (connect.client_id.clone(), connect.clean_session)
        }
        _ => unreachable!(),
    };

    let mut assigned_client_id = None;
    if client_id.is_empty() {
        let uuid = Uuid::new_v4().simple();
        client_id = format!("rumqtt-{uuid}");
        assigned_client_id = Some(client_id.clone());
    }

    if let Some(tenant_id) = &tenant_id {
        // client_id is set to "tenant_id.client_id"
        // this is to make sure we are consistent,
        // as Connection uses this format of client_id
        client_id = format!("{tenant_id}.{client_id}");
    }

    // ota patch: the lock is not held while telling the earlier
    // connection, and an earlier connection that is gone already (its link
    // failed before it waited for its will) is not an error. Upstream
    // unwrapped that send while holding the lock: one such reconnect
    // poisoned the lock and every later connect panicked.
    let previous = lock_wills(&will_handlers).remove(&client_id);
    if let Some(sender) = previous {
        let awaiting_will = if clean_session {
            AwaitingWill::Fire
        } else {
            AwaitingWill::Cancel
        };
        let _ = sender.try_send(awaiting_will);
    }

    let (will_tx, will_rx) = flume::bounded::<AwaitingWill>(1);
    let our_will = will_tx.clone();
    lock_wills(&will_handlers).insert(client_id.clone(), will_tx);

    // Start the link
    let mut link = match RemoteLink::new(
        router_tx.clone(),
        tenant_id.clone(),
        network,
        connect_packet,
        dynamic_filters,
        assigned_client_id,
    )
    .await
    {
        Ok(l) => l,
        Err(e) => {
            error!(error=?e, "Remote link error");
            // ota patch: take back our will handler, unless a newer
            // connection of this client replaced it already.
            let mut wills = lock_wills(&will_handlers);
            if wills
                .get(&client_id)
                .is_some_and(|s| s.same_channel(&our_will))
            {
                wills.remove(&client_id);
            }
            return;
        }
    };
    // ota patch: a weak handle on our will sender, to tell at the timeout
    // below whether the handler in the map is still ours (a sender kept
    // alive here would stop `recv_async` from seeing it dropped).
    let our_will = our_will.downgrade();

    let connection_id = link.connection_id;
    let will_delay_interval = link.will_delay_interval;
    let mut send_disconnect = true;

    match link.start().await {
        // Connection got closed. This shouldn't usually happen.
        Ok(_) => error!("connection-stop"),
        // No need to send a disconnect message when disconnection
        // originated internally in the router.
        // ota patch: a client's own DISCONNECT ends here too (the router
        // drops the link once it handled it), so this is not an error.
        Err(remote::Error::Link(e)) => {
            debug!(error=?e, "router-drop");
            send_disconnect = false;
        }
        // Connection was closed by peer
        // ota patch: a reset or cut connection (a device rebooting or
        // losing its network) is the client's, not a broker error.
        Err(e) if hung_up(&e) => {
            info!(error=?e, "disconnected");
        }
        // Any other error
        Err(e) => {
            error!(error=?e, "disconnected");
        }
    };

    if send_disconnect {
        let disconnect = Event::Disconnect;
        let message = (connection_id, disconnect);
        // ota patch: async, not a blocking send on the listener's runtime
        router_tx.send_async(message).await.ok();
    }

    // this is important to stop the connection
    drop(link);

    let publish_will = match tokio::time::timeout(
        Duration::from_secs(will_delay_interval as u64),
        will_rx.recv_async(),
    )
    .await
    {
        Ok(w) => w.is_ok_and(|k| k == AwaitingWill::Fire),
        Err(_) => {
            // no need to keep the sender after timeout
            // ota patch: unless a newer connection of this client replaced
            // it: upstream removed that connection's handler here.
            let mut wills = lock_wills(&will_handlers);
            let ours = our_will.upgrade().is_some_and(|mine| {
                wills
                    .get(&client_id)
                    .is_some_and(|s| s.same_channel(&mine))
            });
            if ours {
                wills.remove(&client_id);
            }
            // as will delay interval has passed, publish the will message
            true
        }
    };

    if publish_will {
        let message = Event::PublishWill((client_id, tenant_id));
        // is this connection_id really correct at this point?
        // as we have disconnected already, some other connection
        // might be using this connection ID!
        // It won't matter in this case as we don't use it
        // but might affect logs?
        router_tx.send_async((connection_id, message)).await.ok();
    }
}

/// ota patch: the will handlers' lock, even if a panic elsewhere poisoned
/// it (the map stays valid: each access is a single insert or remove).
fn lock_wills(
    wills: &Mutex<HashMap<String, Sender<AwaitingWill>>>,
) -> std::sync::MutexGuard<'_, HashMap<String, Sender<AwaitingWill>>> {
    wills
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// ota patch: the client closed, reset or cut its connection: the normal
/// end of a device's connection, logged below `error`.
fn hung_up(e: &remote::Error) -> bool {
    let io = match e {
        remote::Error::Network(network::Error::Io(err)) | remote::Error::Io(err) => err,
        _ => return false,
    };
    matches!(
        io.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::BrokenPipe
    )
}
