//! `ota bench`: every measurement in one run, one after the other on the
//! same machine, gathered into one [`Table`]. The download rows go first,
//! while this process holds no embedded broker (rumqttd cannot be stopped:
//! the brokers of the emergency and ingest rows live until the process
//! ends).

use std::time::{Duration, Instant};

use super::ingest::{BenchBroker, IngestOptions, IngestReport};

use super::child::ChildCmd;
use super::delta_campaign::{self, CampaignOptions};
use super::delta_size;
use super::downloads::{self, DownloadBroker, DownloadOptions, DownloadRow};
use super::emergency::{self, EmergencyOptions, EmergencyReport};
use super::line::{self, LineOptions, LineReport};
use super::raw_fanout::{self, RawFanout};
use super::table::{Machine, Row, Table};

/// The image every download row sends: 1 MiB.
pub const IMAGE_BYTES: usize = 1024 * 1024;
/// The protocol's default block size, the rows' default.
pub const BLOCK_SIZE: u32 = 4096;
/// The block size for large fleets: 16 times fewer messages for the broker
/// to deliver than the default (the largest the protocol allows).
pub const LARGE_BLOCK_SIZE: u32 = 64 * 1024;
/// The largest fleet of a unicast-only row: it sends the image once per
/// device (1,000 x 1 MiB already takes 2 GiB of broker memory).
pub const UNICAST_MAX: usize = 1000;

/// What to measure, at which sizes.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `--quick` or full.
    pub quick: bool,
    /// The command line to show above the table; `None`: `ota bench`
    /// (`--quick`).
    pub command: Option<String>,
    /// (broker, devices, broadcast, block size) per download row.
    pub downloads: Vec<(DownloadBroker, usize, bool, u32)>,
    /// Block size of the raw fan-out's writes.
    pub block_size: u32,
    /// The bridge's `[blocks] fanout_per_sec` in the download rows; `None`:
    /// its default.
    pub fanout_per_sec: Option<u64>,
    /// The bridge's `[blocks] fanout_bytes_per_sec`; `None`: its default.
    pub fanout_bytes_per_sec: Option<u64>,
    /// Socket counts for the raw fan-out.
    pub raw: Vec<usize>,
    /// Fleet size for the emergency latency; 0: not measured.
    pub emergency_devices: usize,
    /// Devices of the download that runs while an emergency goes to
    /// 1,000 others ([`super::busy_emergency`]); 0: not measured.
    pub busy_download_devices: usize,
    /// Ingest runs (0: not measured), devices, reports per device.
    pub ingest_runs: usize,
    pub ingest_devices: usize,
    pub ingest_reports: u64,
    /// Devices of one factory line brought up together; 0: not measured.
    pub line_devices: usize,
    /// The delta sizes (a synthetic change, a program built twice).
    pub delta_sizes: bool,
    /// Devices of the delta campaign (half on each of two versions), run
    /// with deltas and with the full image only; 0: not measured.
    pub delta_devices: usize,
    /// The download and ingest rows with `[http]` on, the dashboard open
    /// and `/metrics` scraped every second ([`super::watcher`]).
    pub watched: bool,
    /// Devices of the connect storm and download over plain TCP and
    /// over mutual TLS ([`super::tls_cost`]); 0: not measured.
    pub tls_devices: usize,
    /// Devices of the connect storm and firmware campaign through an
    /// anonymous broker and through E1's checks ([`super::acl_cost`]); 0:
    /// not measured.
    pub acl_devices: usize,
    /// Registry sizes of the large-registry rows (`--only registry`).
    pub registry: Vec<usize>,
}

impl Plan {
    /// Small sizes, one repetition: under 3 minutes on 2 cores.
    pub fn quick() -> Self {
        use DownloadBroker::*;
        Plan {
            quick: true,
            command: None,
            downloads: vec![
                (Embedded, 1000, true, BLOCK_SIZE),
                (Mosquitto, 1000, true, BLOCK_SIZE),
                (Embedded, 1000, false, BLOCK_SIZE),
            ],
            block_size: BLOCK_SIZE,
            fanout_per_sec: None,
            fanout_bytes_per_sec: None,
            raw: vec![1000],
            emergency_devices: 1000,
            // Not in --quick: its 10,000 devices alone take a minute.
            busy_download_devices: 0,
            ingest_runs: 1,
            ingest_devices: 1000,
            ingest_reports: 50,
            line_devices: 200,
            delta_sizes: true,
            delta_devices: 200,
            watched: false,
            tls_devices: 1000,
            acl_devices: 1000,
            registry: Vec::new(),
        }
    }

    /// The table in docs/BENCHMARKS.md.
    pub fn full() -> Self {
        use DownloadBroker::*;
        Plan {
            quick: false,
            command: None,
            downloads: vec![
                (Embedded, 1000, true, BLOCK_SIZE),
                (Embedded, 10_000, true, BLOCK_SIZE),
                (Embedded, 10_000, true, LARGE_BLOCK_SIZE),
                (Mosquitto, 1000, true, BLOCK_SIZE),
                (Mosquitto, 10_000, true, BLOCK_SIZE),
                (Mosquitto, 10_000, true, LARGE_BLOCK_SIZE),
                (Embedded, 1000, false, BLOCK_SIZE),
            ],
            block_size: BLOCK_SIZE,
            fanout_per_sec: None,
            fanout_bytes_per_sec: None,
            raw: vec![1000, 10_000],
            emergency_devices: 1000,
            busy_download_devices: 10_000,
            ingest_runs: 3,
            ingest_devices: 1000,
            ingest_reports: 50,
            line_devices: 200,
            delta_sizes: true,
            delta_devices: 1000,
            watched: false,
            tls_devices: 1000,
            acl_devices: 1000,
            registry: Vec::new(),
        }
    }

    /// Keeps only the named parts: `downloads`, `raw`, `emergency`,
    /// `emergency-under-download`, `ingest`, `line`, `deltas`, `tls`, `acl`.
    pub fn only(&mut self, parts: &[Part]) {
        if !parts.contains(&Part::Downloads) {
            self.downloads.clear();
        }
        if !parts.contains(&Part::Raw) {
            self.raw.clear();
        }
        if !parts.contains(&Part::Emergency) {
            self.emergency_devices = 0;
        }
        if parts.contains(&Part::EmergencyUnderDownload) {
            // Named: measured even where the plan (--quick) leaves it out.
            self.busy_download_devices = Plan::full().busy_download_devices;
        } else {
            self.busy_download_devices = 0;
        }
        if !parts.contains(&Part::Ingest) {
            self.ingest_runs = 0;
        }
        if !parts.contains(&Part::Line) {
            self.line_devices = 0;
        }
        if !parts.contains(&Part::Deltas) {
            self.delta_sizes = false;
            self.delta_devices = 0;
        }
        if !parts.contains(&Part::Tls) {
            self.tls_devices = 0;
        }
        if !parts.contains(&Part::Acl) {
            self.acl_devices = 0;
        }
        // Never in the full plan: only when named.
        if parts.contains(&Part::Registry) {
            self.registry = vec![1_000_000];
        }
    }

    /// Download rows through `brokers` only.
    pub fn brokers(&mut self, brokers: &[DownloadBroker]) {
        self.downloads.retain(|(b, _, _, _)| brokers.contains(b));
    }

    /// Download and raw rows at these fleet sizes instead: every broker,
    /// mode and block size of the plan at each size (unicast only up to
    /// [`UNICAST_MAX`] devices).
    pub fn devices(&mut self, sizes: &[usize]) {
        let mut kinds: Vec<(DownloadBroker, bool, u32)> = Vec::new();
        for &(b, _, broadcast, block) in &self.downloads {
            if !kinds.contains(&(b, broadcast, block)) {
                kinds.push((b, broadcast, block));
            }
        }
        // Unicast only sends the image once per device: up to
        // UNICAST_MAX devices, as in the full plan.
        self.downloads = sizes
            .iter()
            .flat_map(|&n| kinds.iter().map(move |&(b, bc, bs)| (b, n, bc, bs)))
            .filter(|&(_, n, broadcast, _)| broadcast || n <= UNICAST_MAX)
            .collect();
        if !self.raw.is_empty() {
            self.raw = sizes.to_vec();
        }
        if self.busy_download_devices > 0 {
            self.busy_download_devices = sizes.iter().copied().max().unwrap_or(0);
        }
        if !self.registry.is_empty() {
            self.registry = sizes.to_vec();
        }
    }

    /// Every download row (and the raw fan-out) with this block size;
    /// rows that then repeat another are dropped.
    pub fn block_size(&mut self, block: u32) {
        self.block_size = block;
        let mut rows: Vec<(DownloadBroker, usize, bool, u32)> = Vec::new();
        for &(b, n, bc, _) in &self.downloads {
            if !rows.contains(&(b, n, bc, block)) {
                rows.push((b, n, bc, block));
            }
        }
        self.downloads = rows;
    }

    fn steps(&self) -> usize {
        self.downloads.len()
            + self.raw.len()
            + usize::from(self.emergency_devices > 0)
            + usize::from(self.busy_download_devices > 0)
            + usize::from(self.ingest_runs > 0)
            + usize::from(self.line_devices > 0)
            + usize::from(self.delta_sizes)
            + 2 * usize::from(self.delta_devices > 0)
            + usize::from(self.tls_devices > 0)
            + usize::from(self.acl_devices > 0)
            + self.registry.len()
    }
}

/// The parts of the table, for `ota bench --only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Downloads,
    Raw,
    Emergency,
    EmergencyUnderDownload,
    Ingest,
    Line,
    Deltas,
    Tls,
    Acl,
    Registry,
}

/// Runs the plan; `progress` gets one line per step and a few while a step
/// runs. A step that fails becomes a row saying why; the others still run.
pub async fn run(plan: &Plan, cmd: &ChildCmd, progress: &(dyn Fn(String) + Sync)) -> Table {
    let started = Instant::now();
    let mut rows = Vec::new();
    let total = plan.steps();
    let mut step = 0;
    let mut next = |what: &str| {
        step += 1;
        progress(format!("[{step}/{total}] {what}"));
    };
    let say = |s: String| progress(format!("      {s}"));

    for &(broker, devices, broadcast, block_size) in &plan.downloads {
        let mode = if broadcast {
            "broadcast"
        } else {
            "unicast only"
        };
        let bname = broker_name(broker);
        next(&format!(
            "1 MiB to {devices} devices via {bname}, {} KiB blocks, {mode}",
            block_size / 1024
        ));
        if broker == DownloadBroker::Mosquitto && crate::mosquitto::binary().is_none() {
            rows.push(Row::skipped(
                &download_label(broadcast, block_size),
                bname,
                devices,
                "skipped: mosquitto is not installed (apt-get install -y mosquitto)",
            ));
            continue;
        }
        let opts = DownloadOptions {
            broker,
            devices,
            image_bytes: IMAGE_BYTES,
            block_size,
            fanout_per_sec: plan.fanout_per_sec,
            fanout_bytes_per_sec: plan.fanout_bytes_per_sec,
            broadcast,
            deadline: Duration::from_secs(if devices > 1000 { 900 } else { 300 }),
            connect_rate: 500,
            watched: plan.watched,
            tls: false,
        };
        let row = match downloads::run(cmd, &opts, &say).await {
            Ok(r) => {
                say(format!(
                    "{}/{} complete in {:.1} s, egress {:.2}x",
                    r.completed, r.devices, r.wall_secs, r.egress_ratio
                ));
                download_row(&r)
            }
            Err(e) => Row::failed(&download_label(broadcast, block_size), bname, devices, &e),
        };
        rows.push(watched(row, plan.watched));
    }

    let image = super::download_run::image_bytes(IMAGE_BYTES);
    let mut raw_walls = Vec::new();
    for &n in &plan.raw {
        next(&format!("raw TCP fan-out of 1 MiB to {n} loopback sockets"));
        rows.push(match raw_fanout::run_split(cmd, n, &image).await {
            Ok(r) => {
                raw_walls.push((n, r.wall.as_secs_f64()));
                raw_row(&r)
            }
            Err(e) => Row::failed("raw TCP fan-out (the machine's limit)", "none", n, &e),
        });
    }
    let mut bulk_rate = None;
    if !plan.raw.is_empty() {
        let streams = super::bulk::streams();
        next(&format!("bulk loopback TCP, {streams} streams for 1 s"));
        rows.push(
            match super::bulk::run(streams, std::time::Duration::from_secs(1)).await {
                Ok(b) => {
                    bulk_rate = Some(b.bytes_per_sec());
                    bulk_row(&b)
                }
                Err(e) => Row::failed(BULK, "none", 0, &e),
            },
        );
    }
    if plan.tls_devices > 0 {
        let n = plan.tls_devices;
        next(&format!(
            "{n} devices: connect storm and 1 MiB download, plain TCP, then mutual TLS"
        ));
        rows.extend(super::tls_cost::run(cmd, n, &say).await);
    }
    compare_with_raw(&mut rows, &raw_walls);
    if let Some(rate) = bulk_rate {
        compare_with_bulk(&mut rows, rate);
    }

    if plan.busy_download_devices > 0 {
        let n = plan.busy_download_devices;
        next(&format!(
            "emergency to 1000 reference device agents while 1 MiB downloads to {n} others"
        ));
        rows.push(super::busy_emergency::step(cmd, n, &say).await);
    }
    if plan.emergency_devices > 0 {
        rows.push(emergency_step(plan.emergency_devices, &mut next, &say).await);
    }
    if plan.ingest_runs > 0 {
        let row = ingest_step(plan, &mut next, &say).await;
        rows.push(watched(row, plan.watched));
    }
    if plan.line_devices > 0 {
        rows.push(line_step(plan.line_devices, &mut next, &say).await);
    }
    if plan.delta_sizes {
        rows.extend(delta_size_step(&mut next).await);
    }
    if plan.acl_devices > 0 {
        let n = plan.acl_devices;
        next(&format!(
            "{n} devices: connect storm and 1 MiB campaign, anonymous, then per-device logins and E1 ACLs"
        ));
        rows.extend(super::acl_cost::run(n, &say).await);
    }
    if plan.delta_devices > 0 {
        let mut campaign = delta_campaign_step(plan, &mut next, &say).await;
        // The time to move the full image to as many sockets, raw.
        compare_with_raw(&mut campaign, &raw_walls);
        rows.extend(campaign);
    }
    for &n in &plan.registry {
        next(&format!("the bridge with {n} registered devices"));
        rows.extend(super::registry::step(n, &say).await);
    }

    Table {
        command: plan.command.clone().unwrap_or_else(|| {
            if plan.quick {
                "ota bench --quick".into()
            } else {
                "ota bench".into()
            }
        }),
        machine: Machine::this(),
        seconds: started.elapsed().as_secs_f64(),
        rows,
    }
}

async fn emergency_step(
    n: usize,
    next: &mut impl FnMut(&str),
    say: &(dyn Fn(String) + Sync),
) -> Row {
    next(&format!("emergency to {n} reference device agents"));
    let opts = EmergencyOptions {
        devices: n,
        artifact_bytes: 4096,
        deadline: Duration::from_secs(60),
    };
    match emergency::run(&opts, say).await {
        Ok(r) => emergency_row(&r),
        Err(e) => Row::failed(EMERGENCY, "embedded", n, &e),
    }
}

async fn ingest_step(
    plan: &Plan,
    next: &mut impl FnMut(&str),
    say: &(dyn Fn(String) + Sync),
) -> Row {
    next(&format!(
        "durable status ingest, {} devices x {} reports, {} run(s)",
        plan.ingest_devices, plan.ingest_reports, plan.ingest_runs
    ));
    let mut runs = Vec::new();
    let mut error = None;
    for i in 0..plan.ingest_runs {
        let port = match crate::free_port() {
            Ok(p) => p,
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        };
        let opts = IngestOptions {
            devices: plan.ingest_devices,
            reports_per_device: plan.ingest_reports,
            watched: plan.watched,
            ..IngestOptions::new(BenchBroker::Embedded(port))
        };
        match super::ingest::ingest(&opts).await {
            Ok(r) => {
                say(format!("run {}: {:.0} reports/s", i + 1, r.reports_per_sec));
                runs.push(r);
            }
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    match error {
        Some(e) if runs.is_empty() => Row::failed(INGEST, "embedded", plan.ingest_devices, &e),
        _ => ingest_row(&runs),
    }
}

async fn line_step(n: usize, next: &mut impl FnMut(&str), say: &(dyn Fn(String) + Sync)) -> Row {
    next(&format!(
        "factory line: {n} fresh devices powered up together, 1 MiB firmware"
    ));
    let opts = LineOptions {
        devices: n,
        image_bytes: IMAGE_BYTES,
        block_size: BLOCK_SIZE,
        deadline: Duration::from_secs(300),
    };
    match line::run(&opts, say).await {
        Ok(r) => line_row(&r),
        Err(e) => Row::failed(LINE, "embedded", n, &e),
    }
}

async fn delta_size_step(next: &mut impl FnMut(&str)) -> Vec<Row> {
    next("delta sizes: a 1 MiB firmware-like image changed, a C program built twice");
    let synthetic = match tokio::task::spawn_blocking(delta_size::synthetic).await {
        Ok(Ok(d)) => delta_size::row(delta_size::SYNTHETIC, &d),
        Ok(Err(e)) => Row::failed(delta_size::SYNTHETIC, "none", 0, &e),
        Err(e) => Row::failed(delta_size::SYNTHETIC, "none", 0, &e),
    };
    let compiled = match tokio::task::spawn_blocking(delta_size::compiled).await {
        Ok(Ok(Some(d))) => delta_size::row(delta_size::COMPILED, &d),
        Ok(Ok(None)) => Row::skipped(
            delta_size::COMPILED,
            "none",
            0,
            "skipped: no C compiler (cc, or $CC) runs here",
        ),
        Ok(Err(e)) => Row::failed(delta_size::COMPILED, "none", 0, &e),
        Err(e) => Row::failed(delta_size::COMPILED, "none", 0, &e),
    };
    vec![synthetic, compiled]
}

async fn delta_campaign_step(
    plan: &Plan,
    next: &mut impl FnMut(&str),
    say: &(dyn Fn(String) + Sync),
) -> Vec<Row> {
    let n = plan.delta_devices;
    let mut opts = CampaignOptions {
        devices: n,
        image_bytes: IMAGE_BYTES,
        block_size: BLOCK_SIZE,
        deltas: true,
        deadline: Duration::from_secs(300),
    };
    next(&format!(
        "delta campaign: {n} devices on 1.0.0 and 1.1.0, to 1.2.0 by E3 deltas"
    ));
    let with = delta_campaign::run(&opts, say).await;
    next(&format!(
        "delta campaign: the same {n} devices, to 1.2.0 by the full image"
    ));
    opts.deltas = false;
    let full = delta_campaign::run(&opts, say).await;
    delta_campaign::rows(with, full, n)
}

/// A row measured with the dashboard open says so in its name.
fn watched(mut row: Row, on: bool) -> Row {
    if on {
        row.bench = format!("{} — dashboard open, /metrics every 1 s", row.bench);
    }
    row
}

const EMERGENCY: &str = "emergency: command to every device `accepted`";
const LINE: &str = "factory line: power-up to every device `success`, 1 MiB firmware";
const INGEST: &str = "durable status ingest (stored, flushed, acked)";

fn broker_name(b: DownloadBroker) -> &'static str {
    match b {
        DownloadBroker::Embedded => "embedded",
        DownloadBroker::Mosquitto => "mosquitto",
    }
}

fn download_label(broadcast: bool, block_size: u32) -> String {
    let mode = if broadcast {
        "broadcast"
    } else {
        "unicast only"
    };
    format!("1 MiB firmware, {} KiB blocks, {mode}", block_size / 1024)
}

fn download_row(r: &DownloadRow) -> Row {
    let rss_ok = r.broker_peak_rss.is_some_and(|b| b < 1_000_000_000);
    let mut goals = Vec::new();
    if r.broadcast {
        goals.push(goal("egress ≤ 1.5x", r.egress_ratio <= 1.5));
    }
    if r.broadcast && r.devices >= 10_000 && r.broker == DownloadBroker::Embedded {
        goals.push(goal(
            "≤ 20 s",
            r.wall_secs <= 20.0 && r.completed == r.devices,
        ));
        goals.push(goal("RSS < 1 GB", rss_ok));
    }
    Row {
        bench: download_label(r.broadcast, r.block_size),
        broker: broker_name(r.broker).into(),
        devices: r.devices,
        time: Some(format!("{:.1} s", r.wall_secs)),
        result: format!("{}/{} complete", r.completed, r.devices),
        broker_rss: r.broker_peak_rss.map(mib),
        egress: Some(format!("{:.2}x", r.egress_ratio)),
        goal: goals.join(", "),
        detail: serde_json::to_value(r).unwrap_or_default(),
    }
}

/// Each row with a `wall_secs` (download rows, the delta campaign's)
/// against the raw fan-out to as many sockets in the same run: the ratio
/// in its result, and for a broadcast download row of 1,000 devices at
/// 4 KiB the goal of at most twice the raw time.
fn compare_with_raw(rows: &mut [Row], raw: &[(usize, f64)]) {
    for r in rows.iter_mut() {
        let Some(wall) = r.detail.get("wall_secs").and_then(|w| w.as_f64()) else {
            continue;
        };
        let Some(&(_, raw_wall)) = raw.iter().find(|(n, _)| *n == r.devices) else {
            continue;
        };
        let ratio = wall / raw_wall.max(1e-6);
        r.result = format!("{}, {ratio:.1}x raw", r.result);
        let broadcast = r.detail.get("broadcast").and_then(|b| b.as_bool()) == Some(true);
        let block = r.detail.get("block_size").and_then(|b| b.as_u64());
        if broadcast && r.devices == 1000 && block == Some(u64::from(BLOCK_SIZE)) {
            let g = goal("≤ 2x raw", ratio <= 2.0);
            r.goal = if r.goal.is_empty() {
                g
            } else {
                format!("{}, {g}", r.goal)
            };
        }
    }
}

const BULK: &str = "bulk loopback TCP, one stream per core (as `iperf3 -P N`)";

/// Each download row against the bulk loopback rate of the same run: the
/// time the bytes every device received would take at that rate (devices
/// x image), as a ratio; for 64 KiB blocks at 10,000 devices the goal of
/// at most twice that.
fn compare_with_bulk(rows: &mut [Row], bytes_per_sec: f64) {
    for r in rows.iter_mut() {
        let Some(wall) = r.detail.get("wall_secs").and_then(|w| w.as_f64()) else {
            continue;
        };
        if r.devices == 0 || r.detail.get("broadcast").is_none() {
            continue;
        }
        let limit = r.devices as f64 * IMAGE_BYTES as f64 / bytes_per_sec.max(1.0);
        let ratio = wall / limit.max(1e-6);
        r.result = format!("{}, {ratio:.1}x bulk", r.result);
        let block = r.detail.get("block_size").and_then(|b| b.as_u64());
        if r.devices == 10_000 && block == Some(64 * 1024) {
            let g = goal("≤ 2x bulk", ratio <= 2.0);
            r.goal = if r.goal.is_empty() {
                g
            } else {
                format!("{}, {g}", r.goal)
            };
        }
    }
}

fn bulk_row(b: &super::bulk::Bulk) -> Row {
    Row {
        bench: BULK.into(),
        broker: "none".into(),
        devices: 0,
        time: Some(format!("{:.2} s", b.wall.as_secs_f64())),
        result: format!("{:.1} Gbit/s, {} streams", b.gbit_per_s(), b.streams),
        broker_rss: None,
        egress: None,
        goal: String::new(),
        detail: serde_json::to_value(b).unwrap_or_default(),
    }
}

fn raw_row(r: &RawFanout) -> Row {
    Row {
        bench: "raw TCP fan-out (the machine's limit)".into(),
        broker: "none".into(),
        devices: r.clients,
        time: Some(format!("{:.2} s", r.wall.as_secs_f64())),
        result: format!("{:.1} Gbit/s", r.gbit_per_s()),
        broker_rss: None,
        egress: Some(format!(
            "{:.2}x",
            r.bytes_per_client as f64 / IMAGE_BYTES as f64
        )),
        goal: String::new(),
        detail: serde_json::to_value(r).unwrap_or_default(),
    }
}

fn emergency_row(r: &EmergencyReport) -> Row {
    Row {
        bench: EMERGENCY.into(),
        broker: "embedded".into(),
        devices: r.devices,
        time: Some(format!("{:.2} s max", r.max_secs)),
        result: match r.announce_secs {
            Some(a) => format!(
                "p50 {:.2} s, p99 {:.2} s (announced at {a:.2} s)",
                r.p50_secs, r.p99_secs
            ),
            None => format!("p50 {:.2} s, p99 {:.2} s", r.p50_secs, r.p99_secs),
        },
        broker_rss: None,
        egress: None,
        goal: goal("p99 ≤ 2 s", r.p99_secs <= 2.0),
        detail: serde_json::to_value(r).unwrap_or_default(),
    }
}

fn ingest_row(runs: &[IngestReport]) -> Row {
    let mut rates: Vec<f64> = runs.iter().map(|r| r.reports_per_sec).collect();
    rates.sort_by(f64::total_cmp);
    let median = rates.get(rates.len() / 2).copied().unwrap_or_default();
    let result = match (rates.first(), rates.last()) {
        (Some(lo), Some(hi)) if rates.len() > 1 => {
            format!("{median:.0} reports/s (median; {lo:.0}–{hi:.0})")
        }
        _ => format!("{median:.0} reports/s"),
    };
    let reports = runs.first().map_or(0, |r| r.reports);
    Row {
        bench: INGEST.into(),
        broker: "embedded".into(),
        devices: runs.first().map_or(0, |r| r.devices),
        time: runs
            .first()
            .map(|r| format!("{:.2} s / {reports}", r.elapsed.as_secs_f64())),
        result,
        broker_rss: None,
        egress: None,
        goal: goal("≥ 20,000/s", median >= 20_000.0),
        detail: serde_json::to_value(runs).unwrap_or_default(),
    }
}

fn line_row(r: &LineReport) -> Row {
    Row {
        bench: LINE.into(),
        broker: "embedded".into(),
        devices: r.devices,
        time: Some(format!("{:.1} s", r.wall_secs)),
        result: format!(
            "{}/{} on the release, {} KiB sent per device",
            r.succeeded,
            r.devices,
            (r.egress_per_device / 1024.0).round()
        ),
        broker_rss: None,
        egress: Some(format!("{:.2}x", r.egress_ratio)),
        // No goal set by the issue: the row records what a line costs.
        goal: String::new(),
        detail: serde_json::to_value(r).unwrap_or_default(),
    }
}

/// `what: met` or `what: MISSED`.
pub fn goal(what: &str, met: bool) -> String {
    format!("{what}: {}", if met { "met" } else { "MISSED" })
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes >> 20)
}

#[cfg(test)]
mod tests {
    use super::*;
    use DownloadBroker::*;

    #[test]
    fn only_keeps_the_named_parts() {
        let mut p = Plan::full();
        p.only(&[Part::Raw, Part::Ingest]);
        assert!(p.downloads.is_empty());
        assert_eq!(p.raw, vec![1000, 10_000]);
        assert_eq!(p.emergency_devices, 0);
        assert_eq!(p.ingest_runs, 3);
        assert_eq!(p.line_devices, 0);
        assert!(!p.delta_sizes);
        assert_eq!(p.delta_devices, 0);
        assert_eq!(p.steps(), 3);
    }

    #[test]
    fn the_emergency_under_a_download_is_measured_when_named() {
        let mut p = Plan::quick();
        assert_eq!(p.busy_download_devices, 0);
        p.only(&[Part::EmergencyUnderDownload]);
        assert_eq!(p.busy_download_devices, 10_000);
        p.devices(&[1000, 2000]);
        assert_eq!(p.busy_download_devices, 2000);
        assert_eq!(p.steps(), 1);
    }

    #[test]
    fn devices_repeat_every_kind_and_keep_unicast_small() {
        let mut p = Plan::quick();
        p.devices(&[500, 5000]);
        assert_eq!(
            p.downloads,
            vec![
                (Embedded, 500, true, BLOCK_SIZE),
                (Mosquitto, 500, true, BLOCK_SIZE),
                (Embedded, 500, false, BLOCK_SIZE),
                (Embedded, 5000, true, BLOCK_SIZE),
                (Mosquitto, 5000, true, BLOCK_SIZE),
            ]
        );
        assert_eq!(p.raw, vec![500, 5000]);
    }

    #[test]
    fn one_block_size_merges_the_rows_that_then_repeat() {
        let mut p = Plan::full();
        p.brokers(&[Embedded]);
        p.block_size(16 * 1024);
        assert_eq!(
            p.downloads,
            vec![
                (Embedded, 1000, true, 16 * 1024),
                (Embedded, 10_000, true, 16 * 1024),
                (Embedded, 1000, false, 16 * 1024),
            ]
        );
        assert_eq!(p.block_size, 16 * 1024);
    }
}
