//! The topology past one broker (docs/scaling.md): a core Mosquitto and K
//! edge Mosquittos bridged to it, PROTOCOL.md E1 on every one of them,
//! `ota serve` on the core, and `ota sim` processes spread over the edges.
//! Everything here is started by [`Topology::start`] and stopped by
//! [`Topology::stop`] (or on drop).
//!
//! ```text
//!   ota serve ──service listener──┐
//!                                 core Mosquitto ◄── ota broker mosquitto's conf
//!        ┌──────── edge listener ─┴──────┐          + the edges' listener
//!     edge 1        edge 2   ...      edge K        (connection bridges, QoS 1)
//!   ota sim 1     ota sim 2         ota sim K       (devices, own passwords)
//! ```
//!
//! Each edge holds only its own devices (`[[broker.mosquitto.edges]]`):
//! edge N serves the ids that begin `eN-` ([`edge_id_prefix`]), its
//! simulator names its devices so, and the bridge writes that edge's
//! password and ACL files in `mosquitto/edges/edge-N/` and sends it
//! SIGHUP when they change. The core's devices' listener holds none of
//! them: Mosquitto 2.0 reparses a whole ACL file on every reload, in a
//! time that grows with the square of its users (docs/scaling.md).
//!
//! - [`campaign`]: one campaign through it, measured.
//! - [`confs`]: the edges' confs and the core's edge listener (text).
//! - [`sim`]: one `ota sim` process and its summary.

pub mod campaign;
pub mod confs;
pub mod sim;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bridge::client::{ClientOptions, OpsClient};
use schemas::topic::Topics;

use crate::mosquitto::{self, Mosquitto};
use crate::raw::{Got, RawClient};
use crate::stack::Keys;
use sim::{SimProc, SimReport};

pub use crate::procfs::{cpu_seconds, load_average};

/// How long a broker, an edge link or the bridge may take to come up.
const UP: Duration = Duration::from_secs(30);

/// The bridge's and the operator's accounts on the core's service listener.
pub const BRIDGE_USER: &str = "ota-bridge";
pub const OPERATOR_USER: &str = "alice";

/// How to build a topology.
#[derive(Debug, Clone)]
pub struct TopologyOptions {
    /// The `ota` binary (`ota serve`, `ota sim`, `ota broker mosquitto`).
    pub ota: PathBuf,
    /// Edge brokers (at least 1).
    pub edges: usize,
    /// Keep everything here instead of a temp dir.
    pub dir: Option<PathBuf>,
    /// Extra `ota.toml` text, after the `[broker.mosquitto]` sections
    /// (e.g. `[blocks]`).
    pub extra_config: String,
    /// `RUST_LOG` of `ota serve`.
    pub serve_log: String,
}

impl TopologyOptions {
    pub fn new(ota: impl Into<PathBuf>, edges: usize) -> Self {
        TopologyOptions {
            ota: ota.into(),
            edges,
            // OTA_TOPOLOGY_DIR keeps the files and logs there, to debug.
            dir: std::env::var_os("OTA_TOPOLOGY_DIR").map(PathBuf::from),
            extra_config: String::new(),
            serve_log: "warn,rumqttd=off".into(),
        }
    }
}

/// Why a topology could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Mosquitto(#[from] mosquitto::MosquittoError),
    #[error("`ota broker mosquitto` failed: {0}")]
    Export(String),
    #[error("edge link(s) not up within {UP:?}: {0}")]
    Links(String),
    #[error("`ota serve` did not answer within {UP:?} (see {0})")]
    Serve(PathBuf),
    #[error("ota sim: {0}")]
    Sim(String),
    #[error("a topology needs at least one edge broker")]
    NoEdges,
}

/// A running topology.
pub struct Topology {
    /// Where ota.toml, the keys, the Mosquitto files and the logs are.
    pub dir: PathBuf,
    /// The keys (release, operator, director).
    pub keys: Keys,
    /// The core's service listener (the bridge's and the operator's).
    pub service_port: u16,
    /// The edges' device listeners, by edge.
    pub edge_ports: Vec<u16>,
    /// The core's devices' listener (no edge's device is in its files).
    pub core_devices_port: u16,
    ota: PathBuf,
    core: Mosquitto,
    edges: Vec<Mosquitto>,
    serve: Option<Child>,
    sims: Vec<SimProc>,
    _tmp: Option<tempfile::TempDir>,
}

impl Topology {
    /// Writes the config and keys, starts the core, the edges (and waits
    /// for every edge link), then `ota serve` (and waits until it answers).
    pub async fn start(opts: TopologyOptions) -> Result<Topology, TopologyError> {
        if opts.edges == 0 {
            return Err(TopologyError::NoEdges);
        }
        if mosquitto::binary().is_none() {
            return Err(mosquitto::MosquittoError::Missing.into());
        }
        let (dir, tmp) = match &opts.dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                (d.canonicalize()?, None)
            }
            None => {
                let t = tempfile::tempdir()?;
                (t.path().canonicalize()?, Some(t))
            }
        };
        let keys = Keys::generate();
        let ports = Ports::pick(opts.edges)?;
        let secrets = Secrets::generate(opts.edges);
        write_config(&dir, &keys, &ports, &secrets, &opts.extra_config)?;
        export(&opts.ota, &dir)?;
        let topics = Topics::default();
        let files = dir.join("mosquitto");
        // The edges' accounts and ACL beside ota's files: the core reads
        // them again on the bridge's SIGHUPs, as Mosquitto's user.
        let (passwd, acl) = (files.join("edges.passwd"), files.join("edges.acl"));
        let mut accounts = String::new();
        for (i, pw) in secrets.edges.iter().enumerate() {
            let user = confs::edge_user(i);
            let hash = schemas::provisioning::hash_password(pw);
            accounts.push_str(&format!("{user}:{hash}\n"));
        }
        let watch_hash = schemas::provisioning::hash_password(&secrets.watcher);
        accounts.push_str(&format!("{}:{watch_hash}\n", confs::WATCHER_USER));
        write_shared(&passwd, &accounts)?;
        write_shared(&acl, &confs::core_edge_acl(&topics))?;
        let conf = files.join("mosquitto.conf");
        let mut text = std::fs::read_to_string(&conf)?;
        text.push_str(&confs::core_edge_listener(ports.core_edges, &passwd, &acl));
        std::fs::write(&conf, text)?;
        let core = Mosquitto::start_conf(&conf, ports.core_devices).await?;
        let mut edges = Vec::with_capacity(opts.edges);
        for (i, port) in ports.edges.iter().enumerate() {
            let path = dir.join("brokers").join(format!("edge-{}.conf", i + 1));
            let text = confs::edge(
                &topics,
                i,
                *port,
                &files.join("edges").join(edge_name(i)),
                &edge_pid_file(&dir, i),
                ports.core_edges,
                &secrets.edges[i],
            );
            std::fs::write(&path, text)?;
            edges.push(Mosquitto::start_conf(&path, *port).await?);
        }
        links_up(ports.core_edges, &secrets.watcher, opts.edges).await?;
        let log = dir.join("serve.log");
        let serve = Command::new(&opts.ota)
            .args(["serve", "--config", "ota.toml"])
            .current_dir(&dir)
            .env("RUST_LOG", &opts.serve_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log)?))
            .spawn()?;
        let mut t = Topology {
            dir,
            keys,
            service_port: ports.service,
            edge_ports: ports.edges,
            core_devices_port: ports.core_devices,
            ota: opts.ota,
            core,
            edges,
            serve: Some(serve),
            sims: Vec::new(),
            _tmp: tmp,
        };
        // Answering is enough: the bridge subscribes before it serves.
        let deadline = tokio::time::Instant::now() + UP;
        loop {
            if let Ok(ops) = t.ops(Duration::from_millis(500)).await {
                let ok = ops.call(schemas::ops::Command::GroupList).await.is_ok();
                ops.close().await;
                if ok {
                    break;
                }
            }
            if tokio::time::Instant::now() > deadline || t.serve_ended() {
                return Err(TopologyError::Serve(log));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(t)
    }

    /// An operator client (alice) on the core's service listener, replies
    /// waited for at most `timeout`.
    pub async fn ops(&self, timeout: Duration) -> Result<OpsClient, bridge::client::ClientError> {
        let mut o = ClientOptions::new("127.0.0.1", self.service_port, self.keys.operator.clone());
        o.timeout = timeout;
        o.credentials = Some(broker::Credentials {
            username: OPERATOR_USER.into(),
            password: operator_password(&self.dir)?,
        });
        o.bridge_key = Some(self.keys.director.verifying_key());
        OpsClient::connect(o).await
    }

    /// Starts `ota sim` processes for devices `1..=devices`, spread evenly
    /// over the edges (one process per edge, each under the open-file
    /// limit), with `profile(id_prefix)` (fleet.toml text, whose
    /// `[fleet] id_prefix` must be the one given: the edge's; the release
    /// keys come from the bridge through `--provision`).
    pub fn spawn_sims(
        &mut self,
        devices: usize,
        profile: &dyn Fn(&str) -> String,
    ) -> Result<(), TopologyError> {
        let k = self.edge_ports.len();
        let mut first = 1;
        for (i, port) in self.edge_ports.iter().enumerate() {
            let n = devices / k + usize::from(i < devices % k);
            if n == 0 {
                continue;
            }
            let name = format!("fleet-{}.toml", edge_name(i));
            std::fs::write(self.dir.join(&name), profile(&edge_id_prefix(i)))?;
            let s = SimProc::spawn(&self.ota, &self.dir, &name, (i, *port), first, n)?;
            self.sims.push(s);
            first += n;
        }
        Ok(())
    }

    /// A simulator that ended by itself (a refused login, a crash): its
    /// log's name.
    pub fn ended_sim(&mut self) -> Option<String> {
        self.sims
            .iter_mut()
            .find_map(|s| s.ended().then(|| format!("sim-{}.log", s.first)))
    }

    /// Stops every simulator (SIGTERM; each settles its StatusAcks) and
    /// returns their summaries.
    pub async fn stop_sims(&mut self) -> Result<Vec<SimReport>, TopologyError> {
        let sims = std::mem::take(&mut self.sims);
        let stops = sims.into_iter().map(SimProc::stop);
        let all = join_all(stops).await;
        all.into_iter().collect()
    }

    /// The process ids: `ota serve`, the core, the edges, the simulators.
    pub fn pids(&self) -> Pids {
        Pids {
            serve: self.serve.as_ref().map(Child::id),
            core: self.core.pid(),
            edges: self.edges.iter().map(Mosquitto::pid).collect(),
            sims: self.sims.iter().filter_map(SimProc::pid).collect(),
        }
    }

    fn serve_ended(&mut self) -> bool {
        self.serve
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// Stops the simulators, `ota serve` (SIGTERM, waited for) and the
    /// brokers.
    pub async fn stop(mut self) -> Result<(), TopologyError> {
        for s in std::mem::take(&mut self.sims) {
            drop(s);
        }
        if let Some(mut serve) = self.serve.take() {
            signal(serve.id(), "-TERM")?;
            let _ = tokio::time::timeout(
                UP,
                tokio::task::spawn_blocking(move || {
                    let _ = serve.wait();
                }),
            )
            .await;
        }
        Ok(())
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if let Some(serve) = &mut self.serve {
            let _ = serve.kill();
            let _ = serve.wait();
        }
    }
}

/// The process ids of a topology, to read their memory and CPU in /proc.
#[derive(Debug, Clone)]
pub struct Pids {
    pub serve: Option<u32>,
    pub core: u32,
    pub edges: Vec<u32>,
    pub sims: Vec<u32>,
}

/// `kill SIG pid`.
fn signal(pid: u32, sig: &str) -> std::io::Result<()> {
    let ok = Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status()?
        .success();
    if ok {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("kill {sig} {pid} failed")))
    }
}

/// Runs every future on its own task and waits for all of them.
async fn join_all<F>(fs: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        match h.await {
            Ok(v) => out.push(v),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    out
}

/// The ports of a topology, all free on loopback.
struct Ports {
    service: u16,
    core_devices: u16,
    core_edges: u16,
    edges: Vec<u16>,
}

impl Ports {
    fn pick(edges: usize) -> std::io::Result<Ports> {
        // Held together while picking: no port twice.
        let mut held = Vec::new();
        for _ in 0..3 + edges {
            held.push(std::net::TcpListener::bind("127.0.0.1:0")?);
        }
        let p: Vec<u16> = held
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<Result<_, _>>()?;
        Ok(Ports {
            service: p[0],
            core_devices: p[1],
            core_edges: p[2],
            edges: p[3..].to_vec(),
        })
    }
}

/// The passwords of the topology's own accounts.
struct Secrets {
    bridge: String,
    operator: String,
    edges: Vec<String>,
    watcher: String,
}

impl Secrets {
    fn generate(edges: usize) -> Secrets {
        let g = schemas::provisioning::generate_password;
        Secrets {
            bridge: g(),
            operator: g(),
            edges: (0..edges).map(|_| g()).collect(),
            watcher: g(),
        }
    }
}

fn edge_pid_file(dir: &Path, i: usize) -> PathBuf {
    dir.join("run").join(format!("{}.pid", edge_name(i)))
}

/// Edge `i`'s name in `[[broker.mosquitto.edges]]`: `edge-1`, ...
pub fn edge_name(i: usize) -> String {
    format!("edge-{}", i + 1)
}

/// The `[fleet] id_prefix` of edge `i`'s simulator: its devices are
/// `e1-00001`, ..., and the edge takes the ids that begin `e1-`.
pub fn edge_id_prefix(i: usize) -> String {
    format!("e{}", i + 1)
}

/// The keys' files and `ota.toml`: the bridge on the core's service
/// listener, `[broker.mosquitto]` with the core's pid file and every
/// edge's.
fn write_config(
    dir: &Path,
    keys: &Keys,
    ports: &Ports,
    secrets: &Secrets,
    extra: &str,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let (run, files, brokers) = (dir.join("run"), dir.join("mosquitto"), dir.join("brokers"));
    for d in [&run, &files, &brokers] {
        std::fs::create_dir_all(d)?;
    }
    // Mosquitto runs as its own user: it walks into the dir, writes its
    // pid files, and reads ota's files as their group.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o777))?;
    mosquitto::share_with_mosquitto(&files)?;
    let text =
        |k: &schemas::keys::SigningKey| schemas::keys::verifying_key_to_text(&k.verifying_key());
    std::fs::write(
        dir.join("operator.key"),
        schemas::keys::signing_key_to_text(&keys.operator),
    )?;
    std::fs::write(dir.join("operator.pub"), text(&keys.operator))?;
    std::fs::write(dir.join("release.pub"), text(&keys.release))?;
    let head = crate::serve_config::bridge_head(dir, &keys.director)?;
    let edges: String = (0..ports.edges.len())
        .map(|i| {
            format!(
                "[[broker.mosquitto.edges]]\nname = \"{}\"\npid_file = {:?}\n\
                 device_prefixes = [\"{}-\"]\n",
                edge_name(i),
                edge_pid_file(dir, i).display().to_string(),
                edge_id_prefix(i),
            )
        })
        .collect();
    let config = format!(
        "{head}\
         username = \"{OPERATOR_USER}\"\n\
         password = \"{op}\"\n\
         [broker]\n\
         mode = \"external\"\n\
         url = \"mqtt://127.0.0.1:{service}\"\n\
         username = \"{BRIDGE_USER}\"\n\
         password = \"{bp}\"\n\
         [broker.mosquitto]\n\
         dir = \"mosquitto\"\n\
         pid_file = \"run/core.pid\"\n\
         devices_listen = \"127.0.0.1:{devices}\"\n\
         [broker.mosquitto.operators]\n\
         {OPERATOR_USER} = \"{op}\"\n\
         {edges}\
         {extra}",
        op = secrets.operator,
        bp = secrets.bridge,
        service = ports.service,
        devices = ports.core_devices,
    );
    std::fs::write(dir.join("ota.toml"), config)
}

/// The operator's password, from `ota.toml`'s `[operator]`.
fn operator_password(dir: &Path) -> Result<String, bridge::client::ClientError> {
    let config = bridge::Config::load(&dir.join("ota.toml"))
        .map_err(|e| bridge::client::ClientError::Options(e.to_string()))?;
    let o = ClientOptions::from_config_without_tls(&config)?;
    Ok(o.credentials.map(|c| c.password).unwrap_or_default())
}

/// `ota broker mosquitto` in `dir`: the conf and the files of the empty
/// registry (the bridge's and alice's logins).
fn export(ota: &Path, dir: &Path) -> Result<(), TopologyError> {
    let out = Command::new(ota)
        .args(["broker", "mosquitto", "--config", "ota.toml"])
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()?;
    if !out.status.success() {
        return Err(TopologyError::Export(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(())
}

/// Writes a file Mosquitto reads as its group (mode 0640, in a dir that
/// [`mosquitto::share_with_mosquitto`] made).
fn write_shared(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o640))
}

/// Waits until every edge's bridge state on the core is `1` (each edge
/// publishes it retained on connecting, `0` as its will).
async fn links_up(core_edges: u16, password: &str, edges: usize) -> Result<(), TopologyError> {
    let links = |e: String| TopologyError::Links(e);
    let mut c = RawClient::login(core_edges, confs::WATCHER_USER, password)
        .await
        .map_err(|e| links(format!("the watcher's login on the core: {e:?}")))?;
    c.subscribe(&["$SYS/broker/connection/+/state".to_string()])
        .await
        .map_err(|e| links(format!("subscribe: {e:?}")))?;
    let mut up = std::collections::BTreeMap::new();
    let deadline = tokio::time::Instant::now() + UP;
    while up.values().filter(|v| **v).count() < edges {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let got = tokio::time::timeout(left, c.next()).await;
        match got {
            Ok(Ok(Got::Publish { topic, payload })) => {
                up.insert(topic, payload == b"1");
            }
            Ok(Ok(_)) | Ok(Err(crate::raw::RawError::Timeout(_))) => {}
            Ok(Err(e)) => return Err(links(format!("{e:?}"))),
            Err(_) => return Err(links(format!("up: {up:?}"))),
        }
    }
    let _ = c.client.disconnect().await;
    Ok(())
}
