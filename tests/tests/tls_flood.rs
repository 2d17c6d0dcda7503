//! A flood of failed TLS handshakes on the embedded broker's mutual-TLS
//! listener, while a provisioned fleet connects (issue 14, the attacker's
//! test): garbage bytes, clients with no certificate, clients with a
//! certificate from another CA, and silent sockets. Every one is refused
//! in its handshake and counted by reason on the bridge's `/metrics`
//! (`ota_broker_tls_handshake_failures_total{reason}`), the log gets one
//! line per interval with the counts rather than one per client, and the
//! fleet's devices connect by certificate in about the time they take
//! without the flood.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use device_sim::fleet::{Fleet, Profile};
use harness::bench::watcher;
use harness::pki::TestPki;
use harness::raw::RawClient;
use harness::{Stack, StackOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every log line of this test process.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn lines_with(&self, needle: &str) -> Vec<String> {
        let text = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        String::from_utf8_lossy(&text)
            .lines()
            .filter(|l| l.contains(needle))
            .map(String::from)
            .collect()
    }
}

const GARBAGE: usize = 100;
const NO_CERT: usize = 50;
const STRANGERS: usize = 50;
const SILENT: usize = 50;
const DEVICES: usize = 50;
const WAIT: Duration = Duration::from_secs(60);

/// The broker's connection (and so handshake) timeout in this test.
const HANDSHAKE_MS: u16 = 3000;

fn tune(c: &mut bridge::Config) {
    if let broker::BrokerConfig::Embedded(e) = &mut c.broker {
        e.connection_timeout_ms = HANDSHAKE_MS;
    }
}

/// Provisions and spawns `n` devices named `{prefix}-NNNNN`, and returns
/// how long until the bridge had registered `total` devices.
async fn connect_fleet(
    stack: &Stack,
    prefix: &str,
    total: usize,
) -> (Duration, device_sim::fleet::FleetHandle) {
    let profile = Profile {
        id_prefix: prefix.into(),
        connects_per_second: 500,
        ..Profile::default()
    };
    let mut cfg = stack.fleet(DEVICES, profile);
    stack.provision(&mut cfg).await.expect("provisioned");
    let started = Instant::now();
    let fleet = Fleet::spawn(cfg).expect("the fleet starts");
    stack
        .wait_registered(total, WAIT, |_| {})
        .await
        .expect("the fleet registers");
    (started.elapsed(), fleet)
}

/// One client that sends bytes no TLS server takes (plain HTTP, then
/// noise: no TLS record starts with `G`), until it is closed.
async fn garbage(port: u16, seed: u64) {
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return;
    };
    let mut bytes = b"GET / HTTP/1.1\r\n".to_vec();
    bytes.extend(harness::bench::download_run::xorshift_bytes(512, seed));
    let _ = s.write_all(&bytes).await;
    let mut buf = [0u8; 256];
    let _ = tokio::time::timeout(WAIT, async {
        while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// The failures of the broker's TLS listener on `/metrics`, by reason.
async fn failures(http: SocketAddr) -> std::collections::BTreeMap<String, f64> {
    let (status, body) = watcher::get(http, "/metrics")
        .await
        .expect("/metrics answers");
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body).to_string();
    text.lines()
        .filter_map(|l| l.strip_prefix("ota_broker_tls_handshake_failures_total{reason=\""))
        .filter_map(|l| {
            let (reason, value) = l.split_once("\"} ")?;
            Some((reason.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_failed_handshakes_is_refused_counted_and_logged_once_per_interval() {
    let log = Log::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_env_filter("warn,rumqttd=off")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    let stack = Stack::start(StackOptions {
        secured: true,
        mtls: true,
        http: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        tune,
        ..StackOptions::default()
    })
    .await
    .expect("the stack starts");
    let (_, tls_port) = stack.mtls().expect("a mutual-TLS listener");
    let http = stack.bridge().and_then(|b| b.http_addr()).expect("[http]");

    // How long the fleet takes without a flood.
    let (alone, calm) = connect_fleet(&stack, "calm", DEVICES).await;

    // The flood: silent sockets held open, and the rest over and over
    // from many tasks at once.
    let flood_started = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..SILENT {
        let s = tokio::net::TcpStream::connect(("127.0.0.1", tls_port)).await;
        silent.push(s.expect("a silent socket connects"));
    }
    let stranger = TestPki::new();
    let pki = stack.mtls().expect("a PKI").0;
    let pki_client = pki.client(None);
    let mut attackers = tokio::task::JoinSet::new();
    for i in 0..GARBAGE {
        attackers.spawn(garbage(tls_port, i as u64 + 7));
    }
    for i in 0..NO_CERT {
        let c = pki_client.clone();
        attackers.spawn(async move {
            // The fleet's CA trusted, no certificate presented.
            let id = format!("calm-{:05}", i + 1);
            assert!(RawClient::tls_login(tls_port, &id, None, c).await.is_err());
        });
    }
    for i in 0..STRANGERS {
        // Another CA's certificate, for a provisioned device's id; the
        // fleet's CA trusted.
        let id = format!("calm-{:05}", i + 1);
        let c = pki.client(Some(&stranger.device(&id)));
        attackers.spawn(async move {
            assert!(RawClient::tls_login(tls_port, &id, None, c).await.is_err());
        });
    }

    // Meanwhile the busy fleet connects by certificate.
    let (beside, busy) = connect_fleet(&stack, "busy", 2 * DEVICES).await;
    while let Some(r) = attackers.join_next().await {
        r.expect("an attacker's task");
    }
    eprintln!("{DEVICES} devices over mutual TLS: {alone:?} alone, {beside:?} in the flood");
    let bound = alone * 5 + Duration::from_secs(5);
    assert!(beside < bound, "{beside:?} in the flood, {alone:?} without");
    for fleet in [&calm, &busy] {
        let s = fleet.stats();
        assert_eq!(s.tls_failures, 0, "{s:?}");
        assert_eq!(s.ever_connected, DEVICES, "{s:?}");
    }

    // Every attempt counted by its reason, the silent ones once the
    // handshake timeout closed them.
    let want = [
        ("other", GARBAGE),
        ("no_certificate", NO_CERT),
        ("bad_certificate", STRANGERS),
        ("timed_out", SILENT),
    ];
    let counted = tokio::time::timeout(WAIT, async {
        loop {
            let f = failures(http).await;
            if want
                .iter()
                .all(|(r, n)| f.get(*r).copied().unwrap_or_default() >= *n as f64)
            {
                return f;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("every failed handshake is counted on /metrics");
    for (reason, n) in want {
        assert_eq!(
            counted.get(reason).copied(),
            Some(n as f64),
            "{reason}: {counted:?}"
        );
    }
    drop(silent);

    // Logged once per 10 s interval with the counts, not once each.
    let lines = log.lines_with("TLS handshakes failed on the embedded broker");
    let intervals = 1 + flood_started.elapsed().as_secs() / 10;
    assert!(!lines.is_empty(), "no log line");
    assert!(
        lines.len() as u64 <= intervals,
        "{} lines in {intervals} intervals: {lines:#?}",
        lines.len()
    );
    assert!(lines[0].contains("counts="), "{}", lines[0]);
    calm.shutdown().await;
    busy.shutdown().await;
    stack.shutdown().await.expect("the bridge stops");
}
