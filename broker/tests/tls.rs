//! The embedded broker's TLS listener, beside its plain one, with real
//! rustls clients (rumqttc over `tls::transport`) and certificates from
//! `tls::pki::FleetCa`: mutual TLS logs a device in by its certificate
//! (CN = client id) and refuses a client without one, with one from
//! another CA, or with another device's; a TLS listener without a client
//! CA takes password logins; and silent TCP clients on the TLS port hold
//! no one else up (vendored rumqttd patch 8).

mod common;

// The harness's PKI fixture (the harness itself depends on this crate).
#[allow(dead_code)]
#[path = "../../tests/src/pki.rs"]
mod pki;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::{EmbeddedBroker, EmbeddedConfig, HandshakeFailure};
use common::*;
use pki::TestPki;
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS};
use tls::rustls::ClientConfig;
use tokio::time::timeout;

const BRIDGE: (&str, &str) = ("bridge", "bridge-pw");

fn tls_config(pki: &TestPki, mutual: bool) -> EmbeddedConfig {
    EmbeddedConfig {
        tls: Some(pki.listener(free_addr(), mutual)),
        ..config_with_users(&[BRIDGE])
    }
}

fn tls_addr(b: &EmbeddedBroker) -> SocketAddr {
    b.tls_addr().expect("a TLS listener")
}

fn tls_options(
    b: &EmbeddedBroker,
    client: Arc<ClientConfig>,
    id: &str,
    login: Option<(&str, &str)>,
) -> MqttOptions {
    let addr = tls_addr(b);
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    o.set_transport(tls::transport(client));
    if let Some((u, p)) = login {
        o.set_credentials(u, p);
    }
    o
}

/// CONNACK, or the error that ended the connection first.
async fn first_answer(o: MqttOptions) -> Result<(AsyncClient, EventLoop), ConnectionError> {
    let (client, mut events) = AsyncClient::new(o, 16);
    loop {
        match timeout(WAIT, events.poll()).await {
            Err(_) => panic!("no answer to CONNECT within {WAIT:?}"),
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => return Ok((client, events)),
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => return Err(e),
        }
    }
}

async fn tls_connect(
    b: &EmbeddedBroker,
    client: Arc<ClientConfig>,
    id: &str,
    login: Option<(&str, &str)>,
) -> Result<(AsyncClient, EventLoop), ConnectionError> {
    first_answer(tls_options(b, client, id, login)).await
}

/// Waits until the broker has counted `n` handshake failures of `kind`
/// (it counts them in the connection's task, a moment after the client
/// saw its handshake fail).
async fn wait_failures(b: &EmbeddedBroker, kind: HandshakeFailure, n: u64) {
    let counted = timeout(WAIT, async {
        while b.handshake_failures(kind) < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        counted.is_ok(),
        "{kind:?}: {} counted, {n} expected",
        b.handshake_failures(kind)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_logs_a_device_in_by_its_certificate_and_refuses_the_rest() {
    let pki = TestPki::new();
    let b = start(tls_config(&pki, true)).await;
    let dev1 = pki.device("dev-1");
    let good = pki.client(Some(&dev1));

    // No username: the certificate is the login. Its CN as the username,
    // with any password or none, is the same login.
    let (c, mut events) = tls_connect(&b, good.clone(), "dev-1", None)
        .await
        .expect("dev-1 logs in by its certificate");
    c.subscribe("dev-1/x", QoS::AtLeastOnce).await.unwrap();
    wait_suback(&mut events).await;
    c.publish("dev-1/x", QoS::AtLeastOnce, false, "hi")
        .await
        .unwrap();
    assert_eq!(&wait_publish(&mut events).await.payload[..], b"hi");
    drop((c, events));
    tls_connect(&b, good.clone(), "dev-1", Some(("dev-1", "not checked")))
        .await
        .expect("username = CN");

    // Another device's client id with dev-1's certificate, with or
    // without that device's name as the username.
    assert!(tls_connect(&b, good.clone(), "dev-2", None).await.is_err());
    assert!(tls_connect(&b, good.clone(), "dev-2", Some(("dev-2", "x")))
        .await
        .is_err());
    // An account other than the CN logs in with its own password.
    tls_connect(&b, good.clone(), "bridge-tls", Some(BRIDGE))
        .await
        .expect("the bridge's account over mutual TLS");
    assert!(
        tls_connect(&b, good.clone(), "bridge-tls", Some(("bridge", "wrong")))
            .await
            .is_err()
    );

    // No certificate: refused in the handshake.
    assert!(
        tls_connect(&b, pki.client(None), "dev-1", Some(("dev-1", "x")))
            .await
            .is_err()
    );
    wait_failures(&b, HandshakeFailure::NoCertificate, 1).await;

    // A certificate from another CA, with the right CN.
    let stranger = TestPki::new();
    let forged = stranger.device("dev-1");
    assert!(tls_connect(&b, pki.client(Some(&forged)), "dev-1", None)
        .await
        .is_err());
    wait_failures(&b, HandshakeFailure::BadCertificate, 1).await;
    assert_eq!(b.handshake_failures(HandshakeFailure::NoCertificate), 1);

    // The plain listener beside it still takes the bridge's password.
    connect(&b, "ota-bridge", Some(BRIDGE)).await;
    assert!(b.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_without_a_client_ca_takes_password_logins() {
    let pki = TestPki::new();
    let b = start(tls_config(&pki, false)).await;
    let anon = pki.client(None);
    tls_connect(&b, anon.clone(), "b1", Some(BRIDGE))
        .await
        .expect("the bridge's password over TLS");
    assert!(tls_connect(&b, anon.clone(), "b1", Some(("bridge", "no")))
        .await
        .is_err());
    assert!(tls_connect(&b, anon, "b1", None).await.is_err());
    // A client that trusts another CA refuses the broker's certificate.
    let other = TestPki::new();
    assert!(tls_connect(&b, other.client(None), "b1", Some(BRIDGE))
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_tls_client_is_dropped_at_the_connection_timeout() {
    use tokio::io::AsyncReadExt;
    let pki = TestPki::new();
    let b = start(EmbeddedConfig {
        connection_timeout_ms: 300,
        ..tls_config(&pki, true)
    })
    .await;
    let mut silent = tokio::net::TcpStream::connect(tls_addr(&b)).await.unwrap();
    let mut buf = [0u8; 16];
    let read = timeout(WAIT, silent.read(&mut buf))
        .await
        .expect("the broker closes a silent client's connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    wait_failures(&b, HandshakeFailure::TimedOut, 1).await;
}

/// Connects `n` devices over mutual TLS at once; returns how long until
/// all had their CONNACK, and keeps their connections.
async fn connect_fleet(
    b: &EmbeddedBroker,
    pki: &TestPki,
    prefix: &str,
    n: usize,
) -> (Duration, Vec<(AsyncClient, EventLoop)>) {
    // Certificates and client configs first: only the connects are timed.
    let options: Vec<MqttOptions> = (0..n)
        .map(|i| {
            let id = format!("{prefix}-{i}");
            tls_options(b, pki.client(Some(&pki.device(&id))), &id, None)
        })
        .collect();
    let started = Instant::now();
    let tasks: Vec<_> = options
        .into_iter()
        .map(|o| tokio::spawn(first_answer(o)))
        .collect();
    let mut fleet = Vec::with_capacity(n);
    for t in tasks {
        fleet.push(t.await.unwrap().expect("a device connects over TLS"));
    }
    (started.elapsed(), fleet)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_silent_sockets_on_the_tls_port_hold_up_no_device() {
    let pki = TestPki::new();
    // Long enough that no silent socket times out while the devices
    // connect: any device that had to wait for one would wait 30 s.
    let timeout_ms = 30_000;
    let b = start(EmbeddedConfig {
        connection_timeout_ms: timeout_ms,
        ..tls_config(&pki, true)
    })
    .await;
    let (alone, first) = connect_fleet(&b, &pki, "calm", 100).await;
    drop(first);

    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(tokio::net::TcpStream::connect(tls_addr(&b)).await.unwrap());
    }
    let (beside_silent, second) = connect_fleet(&b, &pki, "busy", 100).await;
    eprintln!(
        "100 devices over mutual TLS: {alone:?} alone, {beside_silent:?} beside 50 silent sockets"
    );
    assert_eq!(second.len(), 100);
    // Every silent handshake is still pending: the devices did not wait
    // for one to time out (upstream rumqttd waited forever for the first).
    assert_eq!(b.handshake_failures(HandshakeFailure::TimedOut), 0);
    // A generous bound: well under the silent sockets' timeout.
    let bound = alone * 10 + Duration::from_secs(5);
    assert!(
        beside_silent < bound.min(Duration::from_millis(timeout_ms.into())),
        "{beside_silent:?} beside silent sockets, {alone:?} without"
    );
    drop(silent);
}
