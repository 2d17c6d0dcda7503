//! Helpers for the tests that run the real `ota serve` process
//! (`tests/cli_serve.rs`): key files and a config in a temp dir, the
//! process itself (killed with SIGKILL or stopped with SIGTERM), Mosquitto
//! on a free port, and a device made of a raw rumqttc client that
//! resubscribes after every reconnect (its broker may die with the bridge).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use bridge::client::{ClientOptions, OpsClient};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeFilter};
use schemas::keys::SigningKey;
use schemas::msg::{Hello, Status, StatusAck, StatusState, WireMessage};
use schemas::topic::{Topic, Topics};
use schemas::{CampaignId, ComponentName, DeviceId, Epoch};
use tokio::sync::watch;

/// How long a test waits for anything (a process start included).
pub const WAIT: Duration = Duration::from_secs(20);

pub async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// An operator key pair in `dir` (operator.key, operator.pub).
pub fn operator_key(dir: &Path) -> SigningKey {
    let key = SigningKey::from_bytes(&[9; 32]);
    std::fs::write(
        dir.join("operator.key"),
        schemas::keys::signing_key_to_text(&key),
    )
    .expect("write the key");
    std::fs::write(
        dir.join("operator.pub"),
        schemas::keys::verifying_key_to_text(&key.verifying_key()),
    )
    .expect("write the public key");
    key
}

/// Writes `ota.toml` in `dir` with this `[broker]` section.
pub fn write_config(dir: &Path, broker_section: &str) -> PathBuf {
    let path = dir.join("ota.toml");
    std::fs::write(
        &path,
        format!(
            "[bridge]\n\
             data_dir = \"data\"\n\
             operator_keys = [\"operator.pub\"]\n\
             [operator]\n\
             key = \"operator.key\"\n\
             [devices]\n\
             admission = \"open\"\n\
             {broker_section}\n"
        ),
    )
    .expect("write the config");
    path
}

/// A running `ota serve`.
pub struct Serve {
    /// `None` once it was reaped.
    child: Option<Child>,
}

impl Serve {
    pub fn start(config: &Path) -> Serve {
        let child = Command::new(env!("CARGO_BIN_EXE_ota"))
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn,rumqttd=off")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("ota serve starts");
        Serve { child: Some(child) }
    }

    /// SIGKILL: no shutdown of any kind runs.
    pub fn kill9(mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("kill -9");
        child.wait().expect("reap");
    }

    /// SIGTERM, and the exit status once it stopped: the exit is waited
    /// for on a blocking thread, not polled.
    pub async fn terminate(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        within(
            "ota serve to stop after SIGTERM",
            tokio::task::spawn_blocking(move || child.wait().expect("wait")),
        )
        .await
        .expect("the waiting thread")
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until the bridge answers a command (it is connected and
/// subscribed), and returns the client.
pub async fn wait_ready(port: u16, key: &SigningKey) -> OpsClient {
    within("the bridge to answer", async {
        loop {
            let mut o = ClientOptions::new("127.0.0.1", port, key.clone());
            o.timeout = Duration::from_millis(500);
            if let Ok(c) = OpsClient::connect(o).await {
                if c.call(schemas::ops::Command::GroupList).await.is_ok() {
                    return c;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// Mosquitto on a free loopback port, killed on drop.
pub struct Mosquitto {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    pub async fn start() -> Mosquitto {
        let ok = Command::new("which")
            .arg("mosquitto")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            ok,
            "mosquitto is not installed, and this test needs it: `apt-get install -y mosquitto` (CI installs it)"
        );
        let dir = tempfile::tempdir().expect("a temp dir");
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nmax_packet_size 524288\n\
                 persistence false\nmax_queued_messages 100000\nlog_dest none\n"
            ),
        )
        .expect("write the config");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts");
        within("mosquitto to listen", async {
            while tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        Mosquitto {
            port,
            child,
            _dir: dir,
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A device: publishes what the test says, follows its retained StatusAck,
/// and resubscribes after every reconnect.
pub struct Device {
    pub id: DeviceId,
    client: AsyncClient,
    topics: Topics,
    pub ack: watch::Receiver<Option<u64>>,
    task: tokio::task::JoinHandle<()>,
}

impl Device {
    pub async fn connect(port: u16, id: &str) -> Device {
        let id = DeviceId::new(id).expect("an id");
        let topics = Topics::default();
        let mut o = MqttOptions::new(id.as_str(), "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(5));
        let (client, mut eventloop) = AsyncClient::new(o, 256);
        let (ack_tx, ack) = watch::channel(None);
        let (sub_tx, mut sub_rx) = tokio::sync::mpsc::channel(8);
        let sub = SubscribeFilter::new(topics.build(&Topic::Ack(id.clone())), QoS::AtLeastOnce);
        let (c, t, me) = (client.clone(), topics.clone(), id.clone());
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = c.try_subscribe_many([sub.clone()]);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = sub_tx.try_send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if t.parse(&p.topic) == Ok(Topic::Ack(me.clone())) {
                            ack_tx.send_replace(StatusAck::decode(&p.payload).ok().map(|a| a.seq));
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        within("the device to subscribe", sub_rx.recv()).await;
        Device {
            id,
            client,
            topics,
            ack,
            task,
        }
    }

    pub async fn hello(&self, epoch: &str, outbox: u64) {
        let h = Hello {
            proto: 1,
            arch: "armv7".into(),
            versions: [(
                ComponentName::new("main").expect("a name"),
                "1.0.0".to_string(),
            )]
            .into(),
            labels: Default::default(),
            boot_id: "boot-1".into(),
            epoch: Epoch::new(epoch).expect("an epoch"),
            outbox,
        };
        self.client
            .publish(
                self.topics.build(&Topic::Hello(self.id.clone())),
                QoS::AtLeastOnce,
                false,
                h.encode(),
            )
            .await
            .expect("publish");
    }

    /// Publishes a Status and returns its exact bytes.
    pub async fn status(&self, seq: u64) -> Vec<u8> {
        let s = Status {
            seq,
            campaign: Some(CampaignId::new("camp-k9").expect("a campaign")),
            artifact: None,
            state: StatusState::Downloading,
            progress: Some(seq),
            error: None,
            detail: None,
            versions: [(
                ComponentName::new("main").expect("a name"),
                "1.0.0".to_string(),
            )]
            .into(),
        };
        let b = s.encode();
        self.client
            .publish(
                self.topics.build(&Topic::Status(self.id.clone())),
                QoS::AtLeastOnce,
                false,
                b.clone(),
            )
            .await
            .expect("publish");
        b
    }

    pub async fn wait_ack(&mut self, seq: u64) {
        let id = self.id.clone();
        within(
            &format!("{id}: StatusAck {seq}"),
            self.ack.wait_for(|a| *a == Some(seq)),
        )
        .await
        .expect("the device loop runs");
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.task.abort();
    }
}
