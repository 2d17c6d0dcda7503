//! A refused SUBACK is retried (issue 19). The real embedded broker with a
//! topic authority whose grants change live, as the bridge's do: a device
//! in group `line-7` connects while the broker still refuses it
//! `P/groups/line-7/campaign` (SUBACK 0x80, the grant not there yet, like
//! an ACL file reloaded later). A campaign is already announced, retained,
//! on that topic. Once the broker has refused the filter, the grant is
//! given; the device must re-subscribe on its own, hear the announcement
//! and accept the campaign, on the same connection.

mod sim_support;

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use broker::{Authority, ConnectVerdict, Login};
use device_sim::agent::{DeviceIoConfig, MemoryInstaller, MemoryStore, Notice};
use device_sim::testkit::{announcement, pattern_image, TestImage};
use harness::raw::RawClient;
use schemas::keys::SigningKey;
use schemas::msg::{Kind, Membership, StatusState, WireMessage};
use schemas::topic::{Topic, Topics};
use schemas::{DeviceId, GroupName};
use sim_support::{wait_for, Forward, Seen};
use tokio::sync::{mpsc, Notify};

/// Everyone may connect, publish and subscribe, except to `filter` while
/// it is not granted.
struct Grants {
    filter: String,
    granted: AtomicBool,
    refused: AtomicU64,
    changed: Notify,
}

impl Authority for Grants {
    fn connect(&self, _: &str, _: Login<'_>) -> ConnectVerdict {
        ConnectVerdict::Accept
    }
    fn may_publish(&self, _: &str, _: &str) -> bool {
        true
    }
    fn may_subscribe(&self, _: &str, filter: &str) -> bool {
        if filter == self.filter && !self.granted.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            self.changed.notify_waiters();
            return false;
        }
        true
    }
}

impl Grants {
    /// Waits until the broker has refused the filter `n` times.
    async fn refused_at_least(&self, n: u64, secs: u64) {
        tokio::time::timeout(Duration::from_secs(secs), async {
            loop {
                let changed = self.changed.notified();
                if self.refused.load(Ordering::SeqCst) >= n {
                    return;
                }
                changed.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the broker did not refuse {} {n} times", self.filter));
    }
}

/// A broker of its own (with logins: an authority needs them), and the
/// authority it asks.
fn broker_with(grants: Arc<Grants>) -> SocketAddr {
    harness::test_logs();
    let port = harness::free_port().expect("a free port");
    let cfg = broker::EmbeddedConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        users: [("ota-test".to_string(), "pw".to_string())].into(),
        ..Default::default()
    };
    let b = broker::start(&cfg).expect("embedded broker starts");
    b.set_authority(grants).expect("an authority");
    let addr = b.connect_addr();
    // rumqttd has no shutdown: the broker lives as long as the process.
    std::mem::forget(b);
    addr
}

fn io_config(id: &DeviceId, key: &SigningKey, port: u16) -> DeviceIoConfig {
    DeviceIoConfig {
        seed: 19,
        login: Some((id.to_string(), "pw".into())),
        ..sim_support::io_config(sim_support::agent_config(id, key, "esp32"), port)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_group_subscription_is_retried_until_granted_and_the_campaign_is_heard() {
    let t = Topics::default();
    let g = GroupName::new("line-7").unwrap();
    let grants = Arc::new(Grants {
        filter: t.build(&Topic::GroupCampaign(g.clone())),
        granted: AtomicBool::new(false),
        refused: AtomicU64::new(0),
        changed: Notify::new(),
    });
    let shared = grants.clone();
    let addr = tokio::task::spawn_blocking(move || broker_with(shared))
        .await
        .unwrap();

    // The bridge's part: the Membership and the campaign, retained.
    let key = SigningKey::from_bytes(&[5; 32]);
    let id = DeviceId::new("dev-suback-1").unwrap();
    let img = TestImage::new(
        "app-2.0.0",
        Kind::App,
        "main",
        "2.0.0",
        "esp32",
        pattern_image(3000, 4),
        1024,
    )
    .unwrap();
    let ann = announcement("camp-suback", Kind::App, vec![img.envelope(&key)]).unwrap();
    let mut bridge = RawClient::login(addr.port(), "ota-test", "pw")
        .await
        .unwrap();
    let member = Membership {
        groups: vec![g.clone()],
    };
    bridge
        .publish(&t.build(&Topic::Groups(id.clone())), true, member.encode())
        .await
        .unwrap();
    bridge
        .publish(&t.build(&Topic::GroupCampaign(g)), true, ann.encode())
        .await
        .unwrap();
    bridge.pubacks(2).await.unwrap();

    let (tx, mut rx) = mpsc::channel(1024);
    let device = tokio::spawn(device_sim::agent::run_device(
        io_config(&id, &key, addr.port()),
        MemoryInstaller::default(),
        MemoryStore::new(device_sim::agent::SharedImages::new()),
        Forward(tx),
        std::future::pending(),
    ));
    grants.refused_at_least(1, 20).await;
    wait_for(&mut rx, 20, "the device noticing the refusal", |s| {
        matches!(s, Seen::Notice(Notice::SubscribeRefused { attempt: 1, .. }))
    })
    .await;

    grants.granted.store(true, Ordering::SeqCst);
    let links = Cell::new(0);
    wait_for(&mut rx, 20, "the campaign accepted", |s| {
        if matches!(s, Seen::Link(true)) {
            links.set(links.get() + 1);
        }
        matches!(
            s,
            Seen::Notice(Notice::StatusQueued {
                state: StatusState::Accepted,
                ..
            })
        )
    })
    .await;
    assert_eq!(
        links.get(),
        0,
        "heard after a reconnect, not by re-subscribing"
    );
    device.abort();
}
