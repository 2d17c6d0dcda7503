//! Durable status ingest: N devices publish R Status reports each; the
//! bridge stores every one (sled, flushed) before its StatusAck. Prints
//! reports per second from the first report to the last ack.
//!
//! The broker is the bridge's embedded rumqttd (default config) in the same
//! process, as `ota serve` runs it; `--broker HOST:PORT` uses one already
//! running (e.g. Mosquitto) as an external broker instead.
//!
//! ```text
//! cargo run --release -p ota-tests --example ingest_bench -- \
//!     [--devices 1000] [--reports 50] [--commit-window-ms 5] [--max-batch 4096] \
//!     [--broker HOST:PORT] [--json]
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use bridge::config::StatusConfig;
use harness::bench::ingest::{ingest, BenchBroker, IngestOptions};

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,rumqttd=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let devices: usize = flag(&args, "--devices").map_or(Ok(1000), |v| v.parse())?;
    let reports: u64 = flag(&args, "--reports").map_or(Ok(50), |v| v.parse())?;
    let window: u64 = flag(&args, "--commit-window-ms").map_or(Ok(5), |v| v.parse())?;
    let max_batch: usize = flag(&args, "--max-batch").map_or(Ok(4096), |v| v.parse())?;

    let broker = match flag(&args, "--broker") {
        Some(b) => BenchBroker::External(b.parse::<SocketAddr>()?),
        None => BenchBroker::Embedded(
            std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port(),
        ),
    };
    let mut opts = IngestOptions::new(broker);
    opts.devices = devices;
    opts.reports_per_device = reports;
    opts.status = StatusConfig {
        commit_window: Duration::from_millis(window),
        max_batch,
        ..StatusConfig::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let r = rt.block_on(ingest(&opts))?;
    if args.iter().any(|a| a == "--json") {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{} devices x {} reports = {} reports in {:.2} s: {:.0} reports/s durable ({} commits, {:.1} reports/commit, {} acks)",
            r.devices,
            reports,
            r.reports,
            r.elapsed.as_secs_f64(),
            r.reports_per_sec,
            r.commits,
            r.reports_per_commit,
            r.acks_published
        );
    }
    Ok(())
}
