//! Test helpers: the real embedded broker on a free loopback port, a device
//! that reports its progress through hooks.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use device_sim::agent::{
    AgentConfig, DeviceIoConfig, Disruption, Hooks, NeverDefer, Notice, Timing,
};
use schemas::cose::TrustStore;
use schemas::keys::SigningKey;
use schemas::topic::Topics;
use schemas::{ComponentName, DeviceId};
use tokio::sync::mpsc;

/// Starts an embedded broker (one per test process is plenty; rumqttd
/// cannot be stopped) and returns its address.
pub fn broker() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        harness::test_logs();
        let port = harness::free_port().expect("a free port");
        let cfg = broker::EmbeddedConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            ..Default::default()
        };
        let b = broker::start(&cfg).expect("embedded broker starts");
        let addr = b.connect_addr();
        // rumqttd has no shutdown: the broker lives as long as the process.
        std::mem::forget(b);
        addr
    })
}

/// A device of `arch` that trusts `key`'s releases: no labels, no deltas.
pub fn agent_config(id: &DeviceId, key: &SigningKey, arch: &str) -> AgentConfig {
    AgentConfig {
        id: id.clone(),
        arch: arch.into(),
        labels: Default::default(),
        trust: Arc::new(TrustStore::new([key.verifying_key()])),
        directors: Default::default(),
        deltas: false,
        room_bytes: None,
        timing: Timing::default(),
    }
}

/// `agent` on the loopback broker at `port`: factory `main` 1.0.0, never
/// deferring, anonymous, plain TCP, seed 7.
pub fn io_config(agent: AgentConfig, port: u16) -> DeviceIoConfig {
    DeviceIoConfig {
        agent: Arc::new(agent),
        host: "127.0.0.1".into(),
        port,
        topics: Topics::default(),
        keep_alive: Duration::from_secs(10),
        backoff: Default::default(),
        factory_versions: [(ComponentName::new("main").unwrap(), "1.0.0".to_string())].into(),
        policy: Box::new(NeverDefer),
        seed: 7,
        pacer: None,
        login: None,
        tls: None,
    }
}

/// What a device under test tells the test.
#[derive(Debug, Clone)]
pub enum Seen {
    /// Verified blocks so far, after each new block.
    Progress(u32, u32),
    /// A notice from the agent.
    Notice(Notice),
    /// Connected or not.
    Link(bool),
}

/// Hooks that forward to a channel (dropping when it is full).
pub struct Forward(pub mpsc::Sender<Seen>);

impl Hooks for Forward {
    fn link(&mut self, up: bool) {
        let _ = self.0.try_send(Seen::Link(up));
    }
    fn notice(&mut self, n: &Notice) {
        let _ = self.0.try_send(Seen::Notice(n.clone()));
    }
    fn disrupt(&mut self, have: u32, blocks: u32) -> Option<Disruption> {
        let _ = self.0.try_send(Seen::Progress(have, blocks));
        None
    }
}

/// Waits for the first `Seen` that `pred` accepts, failing loudly after
/// `secs`.
pub async fn wait_for(
    rx: &mut mpsc::Receiver<Seen>,
    secs: u64,
    what: &str,
    pred: impl Fn(&Seen) -> bool,
) -> Seen {
    let r = tokio::time::timeout(Duration::from_secs(secs), async {
        while let Some(s) = rx.recv().await {
            if pred(&s) {
                return Some(s);
            }
        }
        None
    })
    .await;
    match r {
        Ok(Some(s)) => s,
        Ok(None) => panic!("device stopped before {what}"),
        Err(_) => panic!("timed out after {secs} s waiting for {what}"),
    }
}
