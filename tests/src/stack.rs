//! A whole ota stack in one process: a broker (embedded rumqttd, or
//! Mosquitto), the bridge on a data dir, keys, and an operator client.
//!
//! The bridge connects to the broker in `external` mode even when the
//! broker is the embedded one, so that a test can stop and restart the
//! bridge while the broker (which rumqttd cannot stop) keeps running.
//!
//! A `secured` stack runs as `ota serve` does (PROTOCOL.md E1): rumqttd in
//! the bridge with accounts for the bridge and the operator, only
//! provisioned devices admitted, each fleet provisioned with its own
//! passwords ([`Stack::provision`]). Its bridge cannot be
//! restarted in-process (the broker goes with it).
//!
//! A secured stack with `mtls` adds the broker's mutual-TLS listener
//! (`tls_listen` with `client_ca_file`), a fleet PKI in `DATA/pki` made
//! with `tls::pki` ([`TestPki::in_dir`]), and its fleets log in by their
//! certificates (CN = device id) over it; the bridge and the operator stay
//! on the plain listener on loopback.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bridge::client::{ClientOptions, OpsClient};
use bridge::{Bridge, Config};
use schemas::keys::SigningKey;
use schemas::msg::manifest;
use schemas::release::{build_manifest, ReleaseSpec};
use schemas::ArtifactId;

use crate::mosquitto::Mosquitto;
use crate::pki::TestPki;

/// Which broker the stack runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerChoice {
    /// rumqttd, in this process.
    Embedded,
    /// Mosquitto, a child process.
    Mosquitto,
    /// A broker already listening there (a benchmark's broker process):
    /// the stack neither starts nor stops it.
    External(std::net::SocketAddr),
}

/// How to build a stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// The broker.
    pub broker: BrokerChoice,
    /// Keep the data here instead of a temp dir.
    pub data_dir: Option<PathBuf>,
    /// Adjusts the bridge's config before it starts.
    pub tune: fn(&mut Config),
    /// Accounts and per-device credentials (embedded broker only).
    pub secured: bool,
    /// Turns on the bridge's HTTP listener here, anonymous on loopback.
    pub http: Option<std::net::SocketAddr>,
    /// Devices log in by certificate over mutual TLS (secured only).
    pub mtls: bool,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            broker: BrokerChoice::Embedded,
            data_dir: None,
            tune: |_| {},
            secured: false,
            http: None,
            mtls: false,
        }
    }
}

/// The release and operator keys of a stack.
#[derive(Clone)]
pub struct Keys {
    /// Signs manifests; devices trust its public half.
    pub release: SigningKey,
    /// Signs operator commands; the bridge trusts its public half.
    pub operator: SigningKey,
    /// The bridge's director key (E2): signs control messages; devices
    /// are provisioned with its public half.
    pub director: SigningKey,
}

impl Keys {
    /// Fresh random keys.
    pub fn generate() -> Keys {
        Keys {
            release: schemas::keys::generate(),
            operator: schemas::keys::generate(),
            director: schemas::keys::generate(),
        }
    }
}

/// Why a stack could not start.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("broker: {0}")]
    Broker(#[from] broker::BrokerError),
    #[error("{0}")]
    Mosquitto(#[from] crate::mosquitto::MosquittoError),
    #[error("bridge: {0}")]
    Bridge(#[from] bridge::BridgeError),
    #[error("operator client: {0}")]
    Client(#[from] bridge::client::ClientError),
    #[error("the bridge did not connect to the broker within 10 s")]
    NotReady,
    #[error("release: {0}")]
    Release(#[from] schemas::release::ReleaseError),
    #[error("push: {0}")]
    Push(#[from] bridge::client::push::PushError),
    #[error("a secured stack runs the broker in the bridge: choose BrokerChoice::Embedded")]
    SecuredNeedsEmbedded,
    #[error("a secured stack's bridge holds its broker and cannot be restarted in-process")]
    SecuredRestart,
    #[error("fleet: {0}")]
    Fleet(#[from] device_sim::fleet::FleetError),
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("devices log in by certificate on a secured stack only: set secured too")]
    MtlsNeedsSecured,
}

/// A wait that did not end in time.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("only {registered} of {wanted} devices registered within {limit:?}")]
    Timeout {
        registered: usize,
        wanted: usize,
        limit: Duration,
    },
    #[error("operator client: {0}")]
    Client(#[from] bridge::client::ClientError),
}

enum BrokerProc {
    // Held for the stack's lifetime; rumqttd itself runs until the process ends.
    Embedded(#[allow(dead_code)] broker::EmbeddedBroker),
    Mosquitto(Mosquitto),
    /// rumqttd inside the bridge (a secured stack).
    InBridge,
    /// Someone else's ([`BrokerChoice::External`]).
    External,
}

/// The broker accounts of a secured stack: the bridge's and the operator's.
const BRIDGE_USER: &str = "ota-bridge";
const OPERATOR_USER: &str = "operator";

/// A running stack.
pub struct Stack {
    /// The keys.
    pub keys: Keys,
    /// Broker host (127.0.0.1).
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// The bridge's data dir.
    pub data_dir: PathBuf,
    config: Config,
    bridge: Option<Bridge>,
    ops: OpsClient,
    broker: BrokerProc,
    /// The fleet PKI and the mutual-TLS port (`mtls`).
    mtls: Option<(TestPki, u16)>,
    _tmp: Option<tempfile::TempDir>,
}

impl Stack {
    /// Starts the broker, the bridge and an operator client.
    pub async fn start(opts: StackOptions) -> Result<Stack, StackError> {
        let (data_dir, tmp) = match &opts.data_dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                (d.clone(), None)
            }
            None => {
                let t = tempfile::tempdir()?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let keys = Keys::generate();
        let port = crate::free_port()?;
        if opts.mtls && !opts.secured {
            return Err(StackError::MtlsNeedsSecured);
        }
        let mtls = match opts.mtls {
            true => Some((TestPki::in_dir(&data_dir.join("pki"))?, crate::free_port()?)),
            false => None,
        };
        let bridge_login = broker::Credentials {
            username: BRIDGE_USER.into(),
            password: schemas::provisioning::generate_password(),
        };
        let operator_login = broker::Credentials {
            username: OPERATOR_USER.into(),
            password: schemas::provisioning::generate_password(),
        };
        let embedded = |users| broker::EmbeddedConfig {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            // Room for the largest fleet the harness runs (10,000) and
            // below this machine's open-file limit.
            max_connections: 12_000,
            users,
            tls: mtls.as_ref().map(|(pki, p)| {
                pki.listener(std::net::SocketAddr::from(([127, 0, 0, 1], *p)), true)
            }),
            ..broker::EmbeddedConfig::default()
        };
        let (broker, mut config) = match (opts.broker, opts.secured) {
            (BrokerChoice::Embedded, true) => {
                let users = [&bridge_login, &operator_login]
                    .into_iter()
                    .map(|c| (c.username.clone(), c.password.clone()))
                    .collect();
                let mut config = Config::with_defaults(
                    data_dir.join("bridge"),
                    broker::BrokerConfig::Embedded(embedded(users)),
                );
                config.bridge.credentials = Some(bridge_login);
                config.devices.admission = bridge::identity::Admission::Provisioned;
                (BrokerProc::InBridge, config)
            }
            (BrokerChoice::Mosquitto | BrokerChoice::External(_), true) => {
                return Err(StackError::SecuredNeedsEmbedded)
            }
            (BrokerChoice::Embedded, false) => {
                let cfg = embedded(Default::default());
                let b = tokio::task::spawn_blocking(move || broker::start(&cfg))
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))??;
                (BrokerProc::Embedded(b), external(&data_dir, loopback(port)))
            }
            (BrokerChoice::Mosquitto, false) => {
                let m = Mosquitto::start().await?;
                let config = external(&data_dir, loopback(m.port));
                (BrokerProc::Mosquitto(m), config)
            }
            (BrokerChoice::External(at), false) => (BrokerProc::External, external(&data_dir, at)),
        };
        let op = keys.operator.verifying_key();
        config
            .bridge
            .operator_keys
            .insert(schemas::keys::kid(&op), op);
        let rel = keys.release.verifying_key();
        config
            .bridge
            .release_keys
            .insert(schemas::keys::kid(&rel), rel);
        config.bridge.director_key = Some(keys.director.clone());
        let endpoint = config.endpoint();
        let (host, port) = (endpoint.host.clone(), endpoint.port);
        if let Some(addr) = opts.http {
            config.http = Some(bridge::config::http::HttpConfig::anonymous_loopback(addr));
        }
        (opts.tune)(&mut config);
        let bridge = start_bridge(config.clone()).await?;
        let mut o = ClientOptions::new(host.clone(), port, keys.operator.clone());
        if opts.secured {
            o.credentials = Some(operator_login);
        }
        // The operator pins the bridge's director key: signed replies only.
        o.bridge_key = config
            .bridge
            .director_key
            .as_ref()
            .map(|k| k.verifying_key());
        let ops = OpsClient::connect(o).await?;
        Ok(Stack {
            keys,
            host,
            port,
            data_dir,
            config,
            bridge: Some(bridge),
            ops,
            broker,
            mtls,
            _tmp: tmp,
        })
    }

    /// The operator client.
    pub fn ops(&self) -> &OpsClient {
        &self.ops
    }

    /// The running bridge (None while it is stopped).
    pub fn bridge(&self) -> Option<&Bridge> {
        self.bridge.as_ref()
    }

    /// Block bytes the bridge's block server has published so far (0
    /// while the bridge is stopped).
    pub fn block_egress(&self) -> u64 {
        self.bridge
            .as_ref()
            .map_or(0, |b| b.blocks().metrics().snapshot().egress_bytes())
    }

    /// The bridge's config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Stops the bridge cleanly.
    pub async fn stop_bridge(&mut self) -> Result<(), StackError> {
        if let Some(b) = self.bridge.take() {
            b.shutdown().await?;
        }
        Ok(())
    }

    /// Starts the bridge again on the same data dir (not on a secured
    /// stack).
    pub async fn start_bridge(&mut self) -> Result<(), StackError> {
        if matches!(self.broker, BrokerProc::InBridge) {
            return Err(StackError::SecuredRestart);
        }
        if self.bridge.is_none() {
            self.bridge = Some(start_bridge(self.config.clone()).await?);
        }
        Ok(())
    }

    /// Restarts the broker (Mosquitto only: rumqttd cannot be stopped).
    pub async fn restart_broker(&mut self) -> Result<bool, StackError> {
        match &mut self.broker {
            BrokerProc::Mosquitto(m) => {
                m.restart().await?;
                Ok(true)
            }
            BrokerProc::Embedded(_) | BrokerProc::InBridge | BrokerProc::External => Ok(false),
        }
    }

    /// Signs `image` with the stack's release key and pushes it to the
    /// bridge. Returns the artifact id.
    pub async fn push(&self, image: &[u8], spec: &ReleaseSpec) -> Result<ArtifactId, StackError> {
        let m = build_manifest(image, spec)?;
        let id = m.artifact.clone();
        let envelope = manifest::sign(&m, &self.keys.release);
        bridge::client::push::push(&self.ops, &envelope, image, |_, _| {}).await?;
        Ok(id)
    }

    /// A fleet config for devices that trust this stack's release key and
    /// are provisioned with its director key (when the bridge signs).
    pub fn fleet(
        &self,
        devices: usize,
        mut profile: device_sim::fleet::Profile,
    ) -> device_sim::fleet::FleetConfig {
        profile.trusted = vec![self.keys.release.verifying_key()];
        profile.directors = self
            .config
            .bridge
            .director_key
            .iter()
            .map(|k| k.verifying_key())
            .collect();
        let port = self.mtls.as_ref().map_or(self.port, |(_, p)| *p);
        let mut cfg =
            device_sim::fleet::FleetConfig::new(self.host.clone(), port, devices, profile);
        cfg.tls = self
            .mtls
            .as_ref()
            .map(|(pki, _)| device_sim::fleet::FleetTls {
                shared: pki.client(None),
                devices: Default::default(),
            });
        cfg
    }

    /// On a secured stack, provisions every device of `cfg` with its own
    /// password and gives the fleet those logins (with `mtls`: its own
    /// certificate, whose fingerprint the registry keeps, and no password
    /// to log in with); elsewhere does nothing. Call it once `cfg`'s ids
    /// are settled (prefix, factory line).
    pub async fn provision(
        &self,
        cfg: &mut device_sim::fleet::FleetConfig,
    ) -> Result<(), StackError> {
        if let Some((pki, _)) = &self.mtls {
            let ids = cfg.ids()?;
            let trusts = cfg.profile.trusted.clone();
            let configs = provision_certificates(&self.ops, pki, &ids, &trusts).await?;
            if let Some(t) = &mut cfg.tls {
                t.devices = std::sync::Arc::new(configs);
            }
        } else if self.is_secured() {
            let ids = cfg.ids()?;
            let trusts = cfg.profile.trusted.clone();
            let logins = bridge::client::provision::logins(&self.ops, &ids, Some(&trusts)).await?;
            cfg.logins = std::sync::Arc::new(logins);
        }
        Ok(())
    }

    /// The mutual-TLS listener's port and the fleet PKI (`mtls`).
    pub fn mtls(&self) -> Option<(&TestPki, u16)> {
        self.mtls.as_ref().map(|(pki, p)| (pki, *p))
    }

    /// Do devices log in with their own credentials?
    pub fn is_secured(&self) -> bool {
        matches!(self.broker, BrokerProc::InBridge)
    }

    /// Waits until the bridge has registered `n` devices: see
    /// [`wait_registered`].
    pub async fn wait_registered(
        &self,
        n: usize,
        limit: Duration,
        progress: impl FnMut(usize),
    ) -> Result<(), WaitError> {
        wait_registered(&self.ops, n, limit, progress).await
    }

    /// Stops the bridge (the broker ends with the process or on drop).
    pub async fn shutdown(mut self) -> Result<(), StackError> {
        self.stop_bridge().await
    }

    /// Where the bridge keeps its data.
    pub fn bridge_dir(&self) -> &Path {
        &self.config.bridge.data_dir
    }
}

/// Waits until the bridge behind `ops` has registered `n` devices, driven
/// by its `device.registered` events: the devices registered before the
/// subscription are read once, then each event counts. Events are not
/// durable (a broker may drop some for a subscriber that is behind, in a
/// connect storm), so after [`QUIET`] without one the registry is read
/// again. `progress(registered)` is called as they come.
pub async fn wait_registered(
    ops: &OpsClient,
    n: usize,
    limit: Duration,
    mut progress: impl FnMut(usize),
) -> Result<(), WaitError> {
    /// How long without an event before the registry is read again.
    const QUIET: Duration = Duration::from_secs(3);
    let mut events = ops.events().await?;
    let mut seen: std::collections::HashSet<String> = ops
        .all_devices(None)
        .await?
        .into_iter()
        .map(|d| d.record.id.to_string())
        .collect();
    progress(seen.len());
    let counted = tokio::time::timeout(limit, async {
        while seen.len() < n {
            let ev = match tokio::time::timeout(QUIET, events.next()).await {
                Ok(Some(ev)) => ev,
                Ok(None) => return,
                Err(_) => {
                    if let Ok(all) = ops.all_devices(None).await {
                        seen.extend(all.into_iter().map(|d| d.record.id.to_string()));
                        progress(seen.len());
                    }
                    continue;
                }
            };
            if ev.kind == "device.registered" {
                if let Some(id) = ev.data.get("device").and_then(|d| d.as_str()) {
                    seen.insert(id.to_string());
                    progress(seen.len());
                }
            }
        }
    })
    .await;
    match counted {
        Ok(()) if seen.len() >= n => Ok(()),
        _ => Err(WaitError::Timeout {
            registered: seen.len(),
            wanted: n,
            limit,
        }),
    }
}

/// Issues each device its certificate (CN = its id) and provisions it,
/// the certificate's fingerprint in the registry (a password too, which
/// the registry requires and the device is never given); returns each
/// device's TLS client config.
async fn provision_certificates(
    ops: &OpsClient,
    pki: &TestPki,
    ids: &[schemas::DeviceId],
    trusts: &[schemas::keys::VerifyingKey],
) -> Result<
    std::collections::BTreeMap<schemas::DeviceId, std::sync::Arc<tls::rustls::ClientConfig>>,
    StackError,
> {
    use bridge::client::provision::{send_batch_with_certs, Mode};
    let mut out = std::collections::BTreeMap::new();
    for chunk in ids.chunks(schemas::ops::MAX_PROVISION_BATCH) {
        let mut batch = Vec::with_capacity(chunk.len());
        let mut certs = Vec::with_capacity(chunk.len());
        for id in chunk {
            let issued = pki
                .ca
                .issue_device(id.as_str(), tls::pki::Validity::days(1))?;
            certs.push(Some(issued.fingerprint()));
            out.insert(id.clone(), pki.client(Some(&issued)));
            let password = schemas::provisioning::generate_password();
            batch.push((id.clone(), Default::default(), password));
        }
        send_batch_with_certs(ops, &batch, &certs, Mode::Upsert, Some(trusts)).await?;
    }
    Ok(out)
}

fn loopback(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

/// The bridge's config for a stack in `data_dir` on the plain broker at
/// `at`.
fn external(data_dir: &Path, at: std::net::SocketAddr) -> Config {
    bridge_config(data_dir.join("bridge"), at)
}

/// A bridge's default config with its data in `dir`, on the plain,
/// anonymous broker at `at` (the stacks' and the benchmarks' bridges).
pub fn bridge_config(dir: PathBuf, at: std::net::SocketAddr) -> Config {
    Config::with_defaults(
        dir,
        broker::BrokerConfig::External(broker::ExternalConfig {
            host: at.ip().to_string(),
            port: at.port(),
            tls: false,
            client_tls: Default::default(),
            credentials: None,
            mosquitto: None,
        }),
    )
}

async fn start_bridge(config: Config) -> Result<Bridge, StackError> {
    let bridge = Bridge::start(config).await?;
    tokio::time::timeout(Duration::from_secs(10), bridge.ready())
        .await
        .map_err(|_| StackError::NotReady)?;
    Ok(bridge)
}
