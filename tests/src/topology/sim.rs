//! One `ota sim` process of the topology: a range of devices on one edge,
//! provisioned through the bridge (`--provision`), stopped with SIGTERM
//! and read back from its `--json` summary.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt as _;
use tokio::process::Child;

use super::TopologyError;

/// How long a stopped simulator may take to settle (every Status
/// acknowledged) and print its summary.
pub const SETTLE: Duration = Duration::from_secs(30);

/// A running `ota sim`, killed on drop.
pub struct SimProc {
    /// The first device's number and how many.
    pub first: usize,
    pub devices: usize,
    /// The edge it connects to (index).
    pub edge: usize,
    child: Child,
}

/// What a stopped simulator said (its `--json` summary).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SimReport {
    pub devices: usize,
    pub ever_connected: usize,
    pub statuses: u64,
    pub acked: u64,
    pub unacked_devices: usize,
    pub by_state: std::collections::BTreeMap<String, usize>,
    pub logins_refused: u64,
}

impl SimReport {
    fn parse(text: &str) -> Result<SimReport, TopologyError> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            TopologyError::Sim(format!("its summary is not JSON ({e}): {text:.200}"))
        })?;
        let s = &v["stats"];
        let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
        Ok(SimReport {
            devices: n(&s["devices"]) as usize,
            ever_connected: n(&s["ever_connected"]) as usize,
            statuses: n(&s["statuses"]),
            acked: n(&s["acked"]),
            unacked_devices: n(&v["unacked_devices"]) as usize,
            by_state: serde_json::from_value(s["by_state"].clone()).unwrap_or_default(),
            logins_refused: n(&s["logins_refused"]),
        })
    }

    /// The reports of several simulators, added up.
    pub fn sum(all: &[SimReport]) -> SimReport {
        let mut t = SimReport::default();
        for r in all {
            t.devices += r.devices;
            t.ever_connected += r.ever_connected;
            t.statuses += r.statuses;
            t.acked += r.acked;
            t.unacked_devices += r.unacked_devices;
            t.logins_refused += r.logins_refused;
            for (k, v) in &r.by_state {
                *t.by_state.entry(k.clone()).or_default() += v;
            }
        }
        t
    }
}

impl SimProc {
    /// Starts `ota sim` in `dir` (which holds `ota.toml` and `profile`)
    /// for devices `first..first+devices` on `127.0.0.1:port`; its log
    /// goes to `dir/sim-FIRST.log`.
    pub fn spawn(
        ota: &Path,
        dir: &Path,
        profile: &str,
        (edge, port): (usize, u16),
        first: usize,
        devices: usize,
    ) -> Result<SimProc, TopologyError> {
        let log = std::fs::File::create(dir.join(format!("sim-{first}.log")))?;
        let child = tokio::process::Command::new(ota)
            .args(["sim", "--provision", "ota.toml", "--profile", profile])
            .args(["--broker", &format!("127.0.0.1:{port}")])
            .args(["--first", &first.to_string()])
            .args(["--devices", &devices.to_string()])
            .args(["--settle", &SETTLE.as_secs().to_string(), "--json"])
            .current_dir(dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()?;
        Ok(SimProc {
            first,
            devices,
            edge,
            child,
        })
    }

    /// Its process id (None once reaped).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Has it ended (it stops by itself when a login is refused)?
    pub fn ended(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// SIGTERM, then its summary once it settled and ended.
    pub async fn stop(mut self) -> Result<SimReport, TopologyError> {
        if let Some(pid) = self.child.id() {
            super::signal(pid, "-TERM")?;
        }
        let mut out = String::new();
        let mut stdout = self
            .child
            .stdout
            .take()
            .ok_or_else(|| TopologyError::Sim("no stdout".into()))?;
        let limit = SETTLE + Duration::from_secs(30);
        tokio::time::timeout(limit, stdout.read_to_string(&mut out))
            .await
            .map_err(|_| TopologyError::Sim(format!("no summary within {limit:?} of SIGTERM")))??;
        let status = self.child.wait().await?;
        if !status.success() {
            return Err(TopologyError::Sim(format!(
                "devices {}.. ended with {status}: see sim-{}.log",
                self.first, self.first
            )));
        }
        SimReport::parse(&out)
    }
}
