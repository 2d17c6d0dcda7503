//! What TLS costs (issue 14): the same fleet connects in a storm and then
//! downloads the same 1 MiB image through the embedded broker twice in one
//! run, once over plain MQTT and once over mutual TLS (each device its own
//! certificate, CN = its id; the bridge plain on loopback in both), with
//! the wall time and the CPU seconds of each phase: the broker's process,
//! and this one (the bridge and every device share its runtime).

use std::time::Duration;

use super::child::ChildCmd;
use super::download_run::PhaseCpu;
use super::downloads::{self, DownloadBroker, DownloadOptions, DownloadRow};
use super::suite::{BLOCK_SIZE, IMAGE_BYTES};
use super::table::Row;

/// Connects per second of the storm: 4x the download rows' 500/s.
pub const STORM_RATE: u32 = 2000;

const STORM: &str = "connect storm at 2,000/s: CONNECT + 2 SUBACKs each";
const DOWNLOAD: &str = "1 MiB firmware, 4 KiB blocks, broadcast";

/// Runs the pair at `devices` devices; four rows (storm and download,
/// plain and mutual TLS), or a failed row for a run that failed.
pub async fn run(cmd: &ChildCmd, devices: usize, say: &(dyn Fn(String) + Sync)) -> Vec<Row> {
    let mut rows = Vec::new();
    for tls in [false, true] {
        let opts = DownloadOptions {
            broker: DownloadBroker::Embedded,
            devices,
            image_bytes: IMAGE_BYTES,
            block_size: BLOCK_SIZE,
            fanout_per_sec: None,
            fanout_bytes_per_sec: None,
            broadcast: true,
            deadline: Duration::from_secs(300),
            connect_rate: STORM_RATE,
            watched: false,
            tls,
        };
        match downloads::run(cmd, &opts, say).await {
            Ok(r) => {
                say(format!(
                    "{}: connected in {:.2} s, {}/{} complete in {:.1} s",
                    transport(tls),
                    r.connect_secs,
                    r.completed,
                    r.devices,
                    r.wall_secs
                ));
                rows.extend(rows_of(&r));
            }
            Err(e) => rows.push(Row::failed(STORM, broker(tls), devices, &e)),
        }
    }
    rows
}

fn transport(tls: bool) -> &'static str {
    if tls {
        "mutual TLS"
    } else {
        "plain TCP"
    }
}

fn broker(tls: bool) -> &'static str {
    if tls {
        "embedded, mTLS"
    } else {
        "embedded"
    }
}

/// `CPU: broker B s, bridge + devices P s`.
fn cpu(c: &PhaseCpu) -> String {
    let b = c.broker.map_or("?".into(), |b| format!("{b:.2}"));
    format!(
        "CPU: broker {b} s, bridge + devices {:.2} s",
        c.this_process
    )
}

fn rows_of(r: &DownloadRow) -> [Row; 2] {
    let detail = serde_json::to_value(r).unwrap_or_default();
    let storm = Row {
        bench: format!("{STORM}, {}", transport(r.tls)),
        broker: broker(r.tls).into(),
        devices: r.devices,
        time: Some(format!("{:.2} s", r.connect_secs)),
        result: cpu(&r.connect_cpu),
        broker_rss: None,
        egress: None,
        goal: String::new(),
        detail: serde_json::json!({ "connect_secs": r.connect_secs, "cpu": r.connect_cpu }),
    };
    let download = Row {
        bench: format!("{DOWNLOAD}, {}", transport(r.tls)),
        broker: broker(r.tls).into(),
        devices: r.devices,
        time: Some(format!("{:.1} s", r.wall_secs)),
        result: format!(
            "{}/{} complete; {}",
            r.completed,
            r.devices,
            cpu(&r.download_cpu)
        ),
        broker_rss: r.broker_peak_rss.map(|b| format!("{} MiB", b >> 20)),
        egress: Some(format!("{:.2}x", r.egress_ratio)),
        goal: String::new(),
        detail,
    };
    [storm, download]
}
