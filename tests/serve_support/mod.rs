//! Helpers for the tests that run the real `ota serve` process
//! (`tests/cli_serve.rs`): key files and a config in a temp dir, the
//! process itself (killed with SIGKILL or stopped with SIGTERM), Mosquitto
//! on a free port, and a device made of a raw rumqttc client that
//! resubscribes after every reconnect (its broker may die with the bridge).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bridge::client::{ClientOptions, OpsClient};
use device_sim::agent::{
    AgentConfig, DeviceIoConfig, MemoryInstaller, MemoryStore, NeverDefer, SharedImages, Timing,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeFilter};
use schemas::cose::TrustStore;
use schemas::keys::SigningKey;
use schemas::msg::{Hello, Kind, Status, StatusAck, StatusState, WireMessage};
use schemas::release::{build_manifest, ReleaseSpec};
use schemas::topic::{Topic, Topics};
use schemas::{ArtifactId, CampaignId, ComponentName, DeviceId, Epoch};
use tokio::sync::watch;

/// How long a test waits for anything (a process start included).
pub const WAIT: Duration = Duration::from_secs(20);

pub async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// Waits (within [`WAIT`]) for the operator event `kind` of `campaign`
/// (e.g. `bridge::campaign::events::kind::COMPLETED`) on `events`,
/// subscribed before the step that causes it.
pub async fn wait_event(
    events: &mut bridge::client::EventStream,
    campaign: &CampaignId,
    kind: &str,
) {
    within(&format!("campaign {campaign}: {kind}"), async {
        loop {
            let ev = events.next().await.expect("the event stream stays open");
            if ev.campaign.as_ref() == Some(campaign) && ev.kind == kind {
                return;
            }
        }
    })
    .await
}

pub fn free_port() -> u16 {
    harness::free_port().expect("a free port")
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

/// A release key (from `seed`) whose public half is `release.pub` in `dir`.
pub fn release_key(dir: &Path, seed: u8) -> SigningKey {
    let key = SigningKey::from_bytes(&[seed; 32]);
    std::fs::write(
        dir.join("release.pub"),
        schemas::keys::verifying_key_to_text(&key.verifying_key()),
    )
    .expect("write the release key");
    key
}

/// The bridge's director key in these tests (seed 6), written by
/// [`director_key`].
pub fn director() -> SigningKey {
    SigningKey::from_bytes(&[6; 32])
}

/// Writes the director key pair ([`director`]) in `dir` as director.key
/// and director.pub, and returns the `[bridge]` line naming it: every
/// config `ota serve` runs with needs one.
pub fn director_key(dir: &Path) -> &'static str {
    harness::serve_config::write_director(dir, &director()).expect("write the director key")
}

/// [`harness::serve_config::bridge_head`] with [`director`]: the head of a
/// config with the operator, release and director keys.
pub fn bridge_head(dir: &Path) -> String {
    harness::serve_config::bridge_head(dir, &director()).expect("write the director key")
}

/// Writes `text` as `dir/ota.toml` and returns its path.
fn write_ota_toml(dir: &Path, text: String) -> PathBuf {
    let path = dir.join("ota.toml");
    std::fs::write(&path, text).expect("write the config");
    path
}

/// Writes `ota.toml` in `dir`: the head of [`bridge_head`], `[broker]`
/// with these lines, a 20 ms merge window and open admission.
pub fn open_config(dir: &Path, broker_lines: &str) -> PathBuf {
    let head = bridge_head(dir);
    write_ota_toml(
        dir,
        format!(
            "{head}\
             [broker]\n\
             {broker_lines}\
             [blocks]\n\
             merge_window_ms = 20\n\
             [devices]\n\
             admission = \"open\"\n"
        ),
    )
}

/// Writes `ota.toml` in `dir` with this `[broker]` section (and the
/// director key).
pub fn write_config(dir: &Path, broker_section: &str) -> PathBuf {
    let director = director_key(dir);
    write_ota_toml(
        dir,
        format!(
            "[bridge]\n\
             data_dir = \"data\"\n\
             operator_keys = [\"operator.pub\"]\n\
             {director}\
             [operator]\n\
             key = \"operator.key\"\n\
             [devices]\n\
             admission = \"open\"\n\
             {broker_section}\n"
        ),
    )
}

/// The accounts of [`mosquitto_config`]: the bridge's, and the operator
/// alice's.
pub const MOSQUITTO_BRIDGE: (&str, &str) = ("ota-bridge", "bridge-secret-0123456789");
pub const MOSQUITTO_ALICE: (&str, &str) = ("alice", "alice-secret-0123456789");

pub fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `ota.toml` for an external Mosquitto whose files ota keeps in
/// `dir/mosquitto`, its pid in `dir/run`. Mosquitto started as root runs
/// as its own user: as docs/operations.md says, the files' directory is
/// its group's with the setgid bit (new files, mode 0640, get that group),
/// and it may write its pid file. `tls`: both listeners over TLS with the
/// files of `ota pki` in `dir/pki` (server) and `dir/pki/clients` (the
/// bridge's and alice's certificates).
pub fn mosquitto_config(dir: &Path, service: u16, devices: u16, tls: bool) -> PathBuf {
    let ((bu, bp), (au, ap)) = (MOSQUITTO_BRIDGE, MOSQUITTO_ALICE);
    let (run, files) = (dir.join("run"), dir.join("mosquitto"));
    std::fs::create_dir_all(&run).unwrap();
    std::fs::create_dir_all(&files).unwrap();
    set_mode(dir, 0o755);
    set_mode(&run, 0o777);
    harness::mosquitto::share_with_mosquitto(&files).unwrap();
    let (scheme, operator_tls, broker_tls, mosquitto_tls) = if tls {
        (
            "mqtts",
            format!(
                "client_cert = \"pki/clients/{au}.crt\"\nclient_key = \"pki/clients/{au}.key\"\n"
            ),
            format!(
                "ca_file = \"pki/ca.crt\"\nclient_cert = \"pki/clients/{bu}.crt\"\n\
                 client_key = \"pki/clients/{bu}.key\"\n"
            ),
            "[broker.mosquitto.tls]\nca_file = \"pki/ca.crt\"\ncert_file = \"pki/server.crt\"\n\
             key_file = \"pki/server.key\"\n"
                .to_string(),
        )
    } else {
        ("mqtt", String::new(), String::new(), String::new())
    };
    let head = bridge_head(dir);
    write_ota_toml(
        dir,
        format!(
            "{head}\
             username = \"{au}\"\n\
             password = \"{ap}\"\n\
             {operator_tls}\
             [broker]\n\
             mode = \"external\"\n\
             url = \"{scheme}://127.0.0.1:{service}\"\n\
             username = \"{bu}\"\n\
             password = \"{bp}\"\n\
             {broker_tls}\
             [broker.mosquitto]\n\
             dir = \"mosquitto\"\n\
             pid_file = \"run/mosquitto.pid\"\n\
             devices_listen = \"127.0.0.1:{devices}\"\n\
             [broker.mosquitto.operators]\n\
             {au} = \"{ap}\"\n\
             {mosquitto_tls}"
        ),
    )
}

/// The accounts of [`secured_config`]: the bridge's, and the operator
/// alice's.
pub const BRIDGE_LOGIN: (&str, &str) = ("bridge", "bridge-secret-0123456789");
pub const ALICE_LOGIN: (&str, &str) = ("alice", "alice-secret-0123456789");

/// Writes `ota.toml` in `dir` for an embedded broker on `port` with
/// accounts (the bridge and alice, who is the CLI's login), only
/// provisioned devices, the operator and release keys `operator.pub`
/// and `release.pub`, and the director key ([`director_key`]).
/// `bridge_keys` go into `[bridge]`, `tail` at the end.
pub fn secured_config(dir: &Path, port: u16, bridge_keys: &str, tail: &str) -> PathBuf {
    let ((bu, bp), (au, ap)) = (BRIDGE_LOGIN, ALICE_LOGIN);
    let director = director_key(dir);
    write_ota_toml(
        dir,
        format!(
            "[bridge]\n\
             data_dir = \"data\"\n\
             operator_keys = [\"operator.pub\"]\n\
             release_keys = [\"release.pub\"]\n\
             broker_user = \"{bu}\"\n\
             {director}\
             {bridge_keys}\
             [operator]\n\
             key = \"operator.key\"\n\
             username = \"{au}\"\n\
             password = \"{ap}\"\n\
             [broker]\n\
             listen = \"127.0.0.1:{port}\"\n\
             segment_size = 1048576\n\
             segment_count = 3\n\
             [broker.users]\n\
             {bu} = \"{bp}\"\n\
             {au} = \"{ap}\"\n\
             {tail}"
        ),
    )
}

/// Signs a 6,000-byte firmware image of main `version` for esp32 (blocks
/// of 1 KiB) as artifact `id`, and pushes it as `ota artifact push` does.
pub async fn push_firmware(
    client: &OpsClient,
    key: &SigningKey,
    id: &str,
    version: &str,
    allow_downgrade: bool,
) {
    let image: Vec<u8> = (0..6000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut spec = ReleaseSpec::new(
        Kind::Firmware,
        ComponentName::new("main").expect("a name"),
        version,
        "esp32",
        1_790_000_000,
    );
    spec.artifact = Some(ArtifactId::new(id).expect("an artifact id"));
    spec.block_size = 1024;
    spec.allow_downgrade = allow_downgrade;
    let manifest = build_manifest(&image, &spec).expect("a manifest");
    let envelope = schemas::msg::manifest::sign(&manifest, key);
    bridge::client::push::push(client, &envelope, &image, |_, _| {})
        .await
        .expect("the push completes");
}

/// Waits until the bridge lists `n` devices.
pub async fn wait_registered(client: &OpsClient, n: usize) {
    within(&format!("{n} devices to register"), async {
        loop {
            let l = client.all_devices(None).await.expect("device list");
            if l.len() == n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
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

    /// Starts `ota serve` with `RUST_LOG=filter` and its stderr piped:
    /// every line comes on the receiver.
    pub fn start_logged(config: &Path, filter: &str) -> (Serve, std::sync::mpsc::Receiver<String>) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ota"))
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ota serve starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                eprintln!("{line}");
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        (Serve { child: Some(child) }, rx)
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
    wait_ready_as(port, key, None).await
}

/// [`wait_ready`], logging in with `login` (an operator account).
pub async fn wait_ready_as(port: u16, key: &SigningKey, login: Option<(&str, &str)>) -> OpsClient {
    within("the bridge to answer", async {
        loop {
            let mut o = ClientOptions::new("127.0.0.1", port, key.clone());
            o.timeout = Duration::from_millis(500);
            o.credentials = login.map(|(username, password)| broker::Credentials {
                username: username.into(),
                password: password.into(),
            });
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

/// A reference device agent (esp32, main 1.0.0) with one label, quick
/// protocol timings, trusting `key`; `login` for a broker with accounts.
pub fn agent(
    id: &str,
    port: u16,
    key: &SigningKey,
    images: Arc<SharedImages>,
    label: (&str, &str),
    login: Option<(String, String)>,
) -> tokio::task::JoinHandle<()> {
    agent_with(
        id,
        port,
        key,
        images,
        label,
        AgentOpts {
            login,
            ..AgentOpts::default()
        },
    )
}

/// What [`agent_with`] sets beyond [`agent`]'s defaults.
#[derive(Default)]
pub struct AgentOpts {
    /// The broker login.
    pub login: Option<(String, String)>,
    /// Director public keys (E2): with one, control messages are checked.
    pub directors: Vec<schemas::keys::VerifyingKey>,
    /// When it puts a campaign off; `None`: never.
    pub policy: Option<Box<dyn device_sim::agent::DeferPolicy>>,
    /// Where it records the payloads it refused.
    pub drops: Drops,
}

/// The payloads devices refused, by device and reason (E2's codes:
/// `missing_auth`, `unknown_key`, `wrong_topic`, `old_counter`...).
#[derive(Clone, Default)]
pub struct Drops(Arc<std::sync::Mutex<Vec<(String, &'static str)>>>);

impl Drops {
    /// How many payloads `device` refused for `reason`.
    pub fn count(&self, device: &str, reason: &str) -> usize {
        let all = self.0.lock().expect("the drops");
        all.iter()
            .filter(|(d, r)| d == device && *r == reason)
            .count()
    }

    /// Every (device, reason), for a failure message.
    pub fn all(&self) -> Vec<(String, &'static str)> {
        self.0.lock().expect("the drops").clone()
    }
}

struct DropHooks {
    id: String,
    drops: Drops,
}

impl device_sim::agent::Hooks for DropHooks {
    fn dropped(&mut self, what: &'static str) {
        let mut all = self.drops.0.lock().expect("the drops");
        all.push((self.id.clone(), what));
    }
}

/// [`agent`] with [`AgentOpts`].
pub fn agent_with(
    id: &str,
    port: u16,
    key: &SigningKey,
    images: Arc<SharedImages>,
    label: (&str, &str),
    opts: AgentOpts,
) -> tokio::task::JoinHandle<()> {
    let AgentOpts {
        login,
        directors,
        policy,
        drops,
    } = opts;
    let cfg = DeviceIoConfig {
        agent: Arc::new(AgentConfig {
            id: DeviceId::new(id).expect("a device id"),
            arch: "esp32".into(),
            labels: [(label.0.to_string(), label.1.to_string())].into(),
            trust: Arc::new(TrustStore::new([key.verifying_key()])),
            directors: Arc::new(schemas::control::DirectorKeys::new(directors)),
            deltas: true,
            room_bytes: None,
            timing: Timing {
                quiet_ms: 300,
                quiet_jitter_ms: 200,
                resend_wait_ms: 500,
                ..Timing::default()
            },
        }),
        host: "127.0.0.1".into(),
        port,
        topics: Topics::default(),
        keep_alive: Duration::from_secs(10),
        backoff: device_sim::agent::pace::Backoff {
            min: Duration::from_millis(200),
            max: Duration::from_secs(1),
        },
        factory_versions: [(
            ComponentName::new("main").expect("a name"),
            "1.0.0".to_string(),
        )]
        .into(),
        policy: policy.unwrap_or_else(|| Box::new(NeverDefer)),
        seed: id.len() as u64,
        pacer: None,
        login,
        tls: None,
    };
    let hooks = DropHooks {
        id: id.to_string(),
        drops,
    };
    tokio::spawn(async move {
        let _ = device_sim::agent::run_device(
            cfg,
            MemoryInstaller::default(),
            MemoryStore::new(images),
            hooks,
            std::future::pending::<()>(),
        )
        .await;
    })
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
            features: Vec::new(),
        };
        self.publish(Topic::Hello(self.id.clone()), h.encode())
            .await;
    }

    /// Publishes `payload` on `topic`, QoS 1.
    async fn publish(&self, topic: Topic, payload: Vec<u8>) {
        self.client
            .publish(self.topics.build(&topic), QoS::AtLeastOnce, false, payload)
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
        self.publish(Topic::Status(self.id.clone()), b.clone())
            .await;
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
