//! N devices downloading the same image at once, with broadcast and with
//! unicast only: bridge egress / image size, wall time, broker peak RSS.
//! The broker (embedded rumqttd, default config) runs in a child process
//! started afresh for each row, so its peak RSS is its own.
//!
//! ```text
//! cargo run -p ota-tests --example blocks_bench -- \
//!     [--devices 1000] [--image-kib 1024] [--block-size 4096] \
//!     [--egress BYTES_PER_SEC] [--unicast-egress BYTES_PER_SEC] \
//!     [--window-ms 150] [--fanout DELIVERIES_PER_SEC] [--modes broadcast,unicast]
//! ```

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use bridge::blocks::BlocksConfig;
use harness::bench::download_run::{run, BenchOptions, BenchResult};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,rumqttd=off".into()),
        )
        .with_writer(std::io::stderr);
    if let Some(port) = flag(&args, "--broker-child") {
        if std::env::var_os("BENCH_BROKER_LOG").is_some() {
            logs.init();
        }
        return broker_child(port.parse()?);
    }
    logs.init();
    let devices: usize = flag(&args, "--devices").map_or(Ok(1000), |v| v.parse())?;
    let image_kib: usize = flag(&args, "--image-kib").map_or(Ok(1024), |v| v.parse())?;
    let block_size: u32 = flag(&args, "--block-size").map_or(Ok(4096), |v| v.parse())?;
    let defaults = BlocksConfig::default();
    let egress: u64 =
        flag(&args, "--egress").map_or(Ok(defaults.egress_bytes_per_sec), |v| v.parse())?;
    let unicast_egress: u64 =
        flag(&args, "--unicast-egress").map_or(Ok(64 * 1024 * 1024), |v| v.parse())?;
    let window: u64 =
        flag(&args, "--window-ms").map_or(Ok(defaults.merge_window_ms), |v| v.parse())?;
    let fanout: Option<u64> = flag(&args, "--fanout")
        .map(|v| v.parse::<u64>())
        .transpose()?
        .or(defaults.fanout_per_sec);
    let modes = flag(&args, "--modes").unwrap_or_else(|| "broadcast,unicast".into());

    println!("| devices | mode | egress budget | fan-out budget | bridge egress / image | wall time | broker peak RSS | blocks broadcast / unicast | requests | completed |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for mode in modes.split(',') {
        let broadcast = mode == "broadcast";
        let blocks = BlocksConfig {
            broadcast,
            egress_bytes_per_sec: if broadcast { egress } else { unicast_egress },
            merge_window_ms: window,
            fanout_per_sec: fanout,
            max_devices: devices.max(1) * 2,
            ..BlocksConfig::default()
        };
        blocks.validate()?;
        let child = BrokerChild::start()?;
        let opts = BenchOptions {
            devices,
            image_bytes: image_kib * 1024,
            block_size,
            blocks,
            connect_rate: 500,
            broker: child.addr,
            deadline: Duration::from_secs(600),
            watched: false,
            device_tls: None,
            broker_pid: None,
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let r: BenchResult = rt.block_on(run(&opts))?;
        drop(rt);
        let rss = child.peak_rss_mib();
        println!(
            "| {} | {} | {:.1} MiB/s | {} | {:.2} | {:.1} s | {} | {} / {} | {} | {}/{} |",
            r.devices,
            mode,
            opts.blocks.egress_bytes_per_sec as f64 / 1048576.0,
            opts.blocks
                .fanout_per_sec
                .map_or("adaptive".to_string(), |f| format!("{f}/s")),
            r.egress_ratio,
            r.wall.as_secs_f64(),
            rss.map_or("?".into(), |m| format!("{m} MiB")),
            r.blocks_broadcast,
            r.blocks_unicast,
            r.requests,
            r.completed,
            r.devices
        );
        child.stop();
    }
    Ok(())
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// The broker in a child process of this same example.
struct BrokerChild {
    child: std::process::Child,
    addr: SocketAddr,
}

impl BrokerChild {
    fn start() -> Result<Self, Box<dyn std::error::Error>> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--broker-child", &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // BENCH_BROKER_LOG=1 shows the broker's own log (RUST_LOG applies).
            .stderr(if std::env::var_os("BENCH_BROKER_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()?;
        let out = child
            .stdout
            .take()
            .ok_or("no stdout from the broker child")?;
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line)?;
        if !line.starts_with("ready") {
            return Err(format!("the broker child said {line:?}").into());
        }
        Ok(Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        })
    }

    /// VmHWM of the child, in MiB.
    fn peak_rss_mib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
            .map(|kb| kb / 1024)
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Child mode: the embedded broker with its default config on `port`,
/// until the parent closes our stdin (or kills us).
fn broker_child(port: u16) -> Result<(), Box<dyn std::error::Error>> {
    let cfg = broker::EmbeddedConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        ..broker::EmbeddedConfig::default()
    };
    let _broker = broker::start(&cfg)?;
    println!("ready");
    let mut sink = String::new();
    while std::io::stdin().read_line(&mut sink)? > 0 {}
    Ok(())
}
