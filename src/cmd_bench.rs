//! `ota bench`: every speed figure in one table, measured side by side in
//! one run (the library does the work: `harness::bench::suite`).

use anyhow::Context as _;
use clap::Args;
use harness::bench::child::{run_child, ChildCmd, ChildRole};
use harness::bench::downloads::DownloadBroker;
use harness::bench::suite::{self, Part, Plan};

use crate::{rt, Run};

/// Measure ota on this machine and print one table.
///
/// A 1 MiB firmware to 1,000 and 10,000 devices through the embedded
/// broker and through Mosquitto (each broker in its own process, for its
/// peak RSS), in 4 KiB blocks and, for 10,000 devices, 64 KiB blocks too,
/// broadcast against unicast only, a raw loopback TCP fan-out
/// of the same bytes (the machine's limit), the emergency latency (command
/// to every device `accepted`, p50 and p99), alone and while a 1 MiB
/// download to 10,000 other devices runs, the durable status ingest
/// rate, a factory line (200 fresh devices powered up together, to
/// every one `success` on a 1 MiB firmware) and E3 deltas (delta size
/// against full for a 1 MiB firmware-like image changed by 2%, and for a C
/// program built twice with one function changed when a C compiler is
/// installed; a campaign to 1,000 devices on two installed versions, with
/// deltas and with the full image only), and what TLS costs (1,000 devices
/// connect at 2,000/s and download 1 MiB over plain TCP, then over mutual
/// TLS, with the broker's and this process's CPU seconds). Progress goes to stderr, the
/// table to stdout.
///
/// The full run takes about 10 minutes on 2 cores and needs `ulimit -n`
/// of at least 10,100; --quick (1,000 devices, the delta campaign 200)
/// takes under 3. Build with
/// --release: a debug build measures the debug build. --only, --broker,
/// --devices, --block-size, --fanout and --fanout-bytes narrow or vary the
/// run, to measure one question on your own machine; --watched measures
/// the download and ingest rows with a dashboard open and /metrics
/// scraped every second.
#[derive(Args)]
#[command(after_help = "Examples:\n  \
    ota bench --quick\n  \
    ota bench > table.md\n  \
    ota bench --json > bench.json\n  \
    ota bench --only downloads --broker embedded --devices 10000 --block-size 16384\n  \
    ota bench --only downloads,raw --devices 2000 --fanout 40000\n  \
    ota bench --only line\n  \
    ota bench --only emergency-under-download --devices 10000\n  \
    ota bench --only deltas\n  \
    ota bench --only tls\n  \
    ota bench --only acl\n  \
    ota bench --only downloads,ingest --broker embedded --devices 1000 --watched\n  \
    ota bench --only registry --devices 100000\n  \
    ota bench --only scale --devices 100000 --firmware-devices 20000")]
pub struct Bench {
    /// Smaller sizes (1,000 devices, one run each; the delta campaign
    /// 200): under 3 minutes.
    #[arg(long)]
    quick: bool,
    /// Measure only these parts of the table.
    #[arg(long, value_delimiter = ',', value_name = "PART")]
    only: Vec<PartArg>,
    /// Download rows through these brokers only.
    #[arg(long, value_delimiter = ',', value_name = "BROKER")]
    broker: Vec<BrokerArg>,
    /// Fleet sizes of the download and raw fan-out rows (instead of
    /// 1,000 and 10,000; --quick: 1,000). Unicast-only rows run at sizes up
    /// to 1,000 only. The download under the emergency runs at the
    /// largest.
    #[arg(long, value_delimiter = ',', value_name = "N")]
    devices: Vec<usize>,
    /// Block size of every downloaded image (and of the raw fan-out's
    /// writes), a power of two from 256 to 65536 bytes, instead of the
    /// plan's: 4096 (the protocol's default) and, for the 10,000-device
    /// rows, also 65536.
    #[arg(long, value_name = "BYTES", value_parser = crate::cmd_artifact::parse_block_size)]
    block_size: Option<u32>,
    /// A `[blocks] fanout_per_sec` ceiling in the download rows
    /// (deliveries per second; default: none, the bridge's pacer finds
    /// the broker's rate by itself).
    #[arg(long, value_name = "DELIVERIES_PER_SEC",
          value_parser = clap::value_parser!(u64).range(1..))]
    fanout: Option<u64>,
    /// A `[blocks] fanout_bytes_per_sec` ceiling in the download rows
    /// (bytes of deliveries per second; default: none).
    #[arg(long, value_name = "BYTES_PER_SEC",
          value_parser = clap::value_parser!(u64).range(1..))]
    fanout_bytes: Option<u64>,
    /// Measure the download and ingest rows with the HTTP listener on, a
    /// dashboard open (its event stream and its polls) and `/metrics`
    /// scraped every second: run once with and once without to see what
    /// watching costs.
    #[arg(long)]
    watched: bool,
    /// With --only scale: devices of the 1 MiB firmware campaign through
    /// the same topology (default 0: not run).
    #[arg(long, value_name = "N", default_value_t = 0)]
    firmware_devices: usize,
    /// With --only scale: connect attempts per second of each `ota sim`
    /// (one per edge broker).
    #[arg(long, value_name = "N", default_value_t = 500)]
    connects_per_second: u32,
    /// Print every figure as JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Internal: run as a helper process of a benchmark (ROLE ARGS..).
    #[arg(long, hide = true, num_args = 1.., value_name = "ROLE")]
    child: Option<Vec<String>>,
}

impl Run for Bench {
    fn run(self) -> anyhow::Result<()> {
        if let Some(words) = self.child {
            let role = ChildRole::parse(&words)?;
            return Ok(rt::block_on(run_child(role))??);
        }
        let cmd = ChildCmd {
            program: std::env::current_exe()
                .context("cannot find the ota binary to run helpers")?,
            args: vec!["bench".into(), "--child".into()],
        };
        if self.only.iter().any(|p| matches!(p, PartArg::Scale)) {
            if self.only.len() > 1 {
                anyhow::bail!("--only scale runs alone: its topology needs the whole machine");
            }
            return self.scale(cmd.program);
        }
        let mut plan = if self.quick {
            Plan::quick()
        } else {
            Plan::full()
        };
        if !self.only.is_empty() {
            let parts: Vec<Part> = self.only.iter().filter_map(|p| p.part()).collect();
            plan.only(&parts);
        }
        if !self.broker.is_empty() {
            let brokers: Vec<DownloadBroker> = self.broker.iter().map(|b| b.broker()).collect();
            plan.brokers(&brokers);
        }
        if !self.devices.is_empty() {
            if let Some(n) = self.devices.iter().find(|&&n| n == 0) {
                anyhow::bail!("--devices {n}: a fleet needs at least one device");
            }
            plan.devices(&self.devices);
        }
        if let Some(b) = self.block_size {
            plan.block_size(b);
        }
        plan.fanout_per_sec = self.fanout;
        plan.fanout_bytes_per_sec = self.fanout_bytes;
        plan.watched = self.watched;
        // The table says how it was made, flags included.
        plan.command = Some(command_line());
        if cfg!(debug_assertions) {
            eprintln!("note: a debug build; build with --release for the figures to record");
        }
        let progress = |s: String| eprintln!("{s}");
        run_and_print(
            self.json,
            async move { suite::run(&plan, &cmd, &progress).await },
            |t| t.markdown(),
        )
    }
}

impl Bench {
    /// `--only scale`: the topology past one broker (issue 19).
    fn scale(self, ota: std::path::PathBuf) -> anyhow::Result<()> {
        use harness::bench::scale;
        let opts = scale::ScaleOptions {
            ota,
            devices: self.devices.first().copied().unwrap_or(100_000),
            firmware_devices: self.firmware_devices,
            firmware_block_size: self.block_size.unwrap_or(65_536),
            connects_per_second: self.connects_per_second,
        };
        let command = Some(command_line());
        let progress = |s: String| eprintln!("{s}");
        run_and_print(
            self.json,
            async move { scale::run(&opts, command, &progress).await },
            |r| r.markdown(),
        )
    }
}

/// `ota ARGS...` as typed: a table says how it was made, flags included.
fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("ota {}", args.join(" "))
}

/// Runs `bench` until it ends or Ctrl-C / SIGTERM interrupts it, and
/// prints what it measured: as JSON with `--json`, else as `markdown`.
fn run_and_print<T: serde::Serialize>(
    json: bool,
    bench: impl std::future::Future<Output = T>,
    markdown: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    let done = rt::block_on(async move {
        tokio::select! {
            t = bench => Ok(t),
            _ = rt::shutdown_signal() => Err(anyhow::anyhow!("interrupted")),
        }
    })??;
    if json {
        println!("{}", serde_json::to_string_pretty(&done)?);
    } else {
        println!("{}", markdown(&done));
    }
    Ok(())
}

/// `--only` values.
#[derive(Clone, Copy, clap::ValueEnum)]
enum PartArg {
    /// The 1 MiB firmware rows (broadcast and unicast only).
    Downloads,
    /// The raw loopback TCP fan-out.
    Raw,
    /// The emergency latency.
    Emergency,
    /// The emergency latency to 1,000 devices while a 1 MiB download to
    /// 10,000 others (or --devices) runs through the same broker and
    /// bridge. Not in --quick.
    EmergencyUnderDownload,
    /// The durable status ingest.
    Ingest,
    /// A factory line: 200 fresh devices powered up together.
    Line,
    /// E3 deltas: delta size against full, and a campaign to devices on
    /// two versions with deltas and with the full image.
    Deltas,
    /// What TLS costs: 1,000 devices connect in a storm and download
    /// 1 MiB, over plain TCP and over mutual TLS, with CPU seconds.
    Tls,
    /// What the identity checks cost: 1,000 devices connect in a storm
    /// and take a 1 MiB campaign through an anonymous broker, then with
    /// per-device logins and E1 ACLs, with CPU seconds.
    Acl,
    /// Issue 19: a 3-wave config campaign (and with --firmware-devices a
    /// 1 MiB firmware) through a core and edge Mosquittos, one `ota sim`
    /// per edge; --devices sets the fleet (default 100,000). Alone only.
    Scale,
    /// The bridge with a large registry: 1,000,000 devices (or --devices)
    /// registered by a few connections through a Mosquitto without ACL,
    /// 50 groups, a campaign, a Status from each. Not in the full run.
    Registry,
}

impl PartArg {
    fn part(self) -> Option<Part> {
        Some(match self {
            PartArg::Downloads => Part::Downloads,
            PartArg::Raw => Part::Raw,
            PartArg::Emergency => Part::Emergency,
            PartArg::EmergencyUnderDownload => Part::EmergencyUnderDownload,
            PartArg::Ingest => Part::Ingest,
            PartArg::Line => Part::Line,
            PartArg::Deltas => Part::Deltas,
            PartArg::Tls => Part::Tls,
            PartArg::Acl => Part::Acl,
            PartArg::Registry => Part::Registry,
            // Runs alone, before any plan (Bench::scale).
            PartArg::Scale => return None,
        })
    }
}

/// `--broker` values.
#[derive(Clone, Copy, clap::ValueEnum)]
enum BrokerArg {
    /// rumqttd, ota's embedded broker.
    Embedded,
    /// Mosquitto (must be installed).
    Mosquitto,
}

impl BrokerArg {
    fn broker(self) -> DownloadBroker {
        match self {
            BrokerArg::Embedded => DownloadBroker::Embedded,
            BrokerArg::Mosquitto => DownloadBroker::Mosquitto,
        }
    }
}
