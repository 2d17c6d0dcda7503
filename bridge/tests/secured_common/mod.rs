//! The secured stack of the E1 tests (`acl.rs`, `mtls.rs`): the bridge
//! with its embedded broker, accounts for itself and the operator alice,
//! its `Identity` as the broker's authority (as `ota serve` runs it), and
//! only provisioned devices admitted.

#![allow(dead_code)]

use std::time::Duration;

use bridge::blocks::BlocksConfig;
use bridge::client::{ClientOptions, OpsClient};
use bridge::identity::{Admission, Refused};
use bridge::{Bridge, Config};
use schemas::{DeviceId, GroupName};

use crate::blocks_common;
use crate::common::{self, Stack, TestBroker};

pub const BRIDGE: (&str, &str) = ("bridge", "bridge-secret-0123456789");
pub const ALICE: (&str, &str) = ("alice", "alice-secret-0123456789");

pub fn dev(id: &str) -> DeviceId {
    DeviceId::new(id).expect("a device id")
}

pub fn group_name(g: &str) -> GroupName {
    GroupName::new(g).expect("a group name")
}

pub fn creds((username, password): (&str, &str)) -> broker::Credentials {
    broker::Credentials {
        username: username.into(),
        password: password.into(),
    }
}

/// A bridge with its embedded broker, accounts for itself and the
/// operator alice, and only provisioned devices admitted.
pub async fn secured_stack() -> Stack {
    secured_stack_with(None).await
}

/// [`secured_stack`], with the embedded broker's TLS listener `tls` beside
/// its plain one (the bridge stays on the plain one).
pub async fn secured_stack_with(tls: Option<broker::TlsListener>) -> Stack {
    common::init_tracing();
    let port = common::free_port();
    let dir = tempfile::tempdir().expect("a temp dir");
    let embedded = broker::EmbeddedConfig {
        listen: format!("127.0.0.1:{port}").parse().expect("an address"),
        segment_size: 1024 * 1024,
        segment_count: 3,
        users: [BRIDGE, ALICE]
            .into_iter()
            .map(|(u, p)| (u.to_owned(), p.to_owned()))
            .collect(),
        tls,
        ..broker::EmbeddedConfig::default()
    };
    let mut config = Config::with_defaults(
        dir.path().join("data"),
        broker::BrokerConfig::Embedded(embedded),
    );
    let operator = common::operator_key();
    let vk = operator.verifying_key();
    config.bridge.operator_keys = [(schemas::keys::kid(&vk), vk)].into();
    let rk = blocks_common::release_key().verifying_key();
    config.bridge.release_keys = [(schemas::keys::kid(&rk), rk)].into();
    config.bridge.credentials = Some(creds(BRIDGE));
    config.bridge.metrics_interval = Duration::from_secs(3600);
    // Signed control messages (E2), as the devices expect by default.
    config.bridge.director_key = Some(common::director_key());
    config.devices.admission = Admission::Provisioned;
    config.blocks = BlocksConfig {
        merge_window_ms: 20,
        ..BlocksConfig::default()
    };
    let bridge = Bridge::start(config.clone())
        .await
        .expect("the bridge starts");
    common::within("the bridge to subscribe", bridge.ready()).await;
    Stack {
        broker: TestBroker::in_bridge(port),
        bridge: Some(bridge),
        dir,
        operator,
        config,
    }
}

/// The operator alice.
pub async fn alice(stack: &Stack) -> OpsClient {
    let mut o = ClientOptions::new("127.0.0.1", stack.port(), stack.operator.clone());
    o.credentials = Some(creds(ALICE));
    common::within("alice to connect", OpsClient::connect(o))
        .await
        .expect("alice connects")
}

pub fn refused(stack: &Stack, why: Refused) -> u64 {
    stack.bridge().identity().refusals().get(why)
}
