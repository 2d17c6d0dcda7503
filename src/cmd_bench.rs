//! `ota bench`: every speed figure in one table, measured side by side in
//! one run (the library does the work: `harness::bench::suite`).

use anyhow::Context as _;
use clap::Args;
use harness::bench::child::{run_child, ChildCmd, ChildRole};
use harness::bench::suite::{self, Plan};

use crate::{rt, Run};

/// Measure ota on this machine and print one table.
///
/// A 1 MiB firmware to 1,000 and 10,000 devices through the embedded
/// broker and through Mosquitto (each broker in its own process, for its
/// peak RSS), broadcast against unicast only, a raw loopback TCP fan-out
/// of the same bytes (the machine's limit), the emergency latency (command
/// to every device `accepted`, p50 and p99) and the durable status ingest
/// rate. Progress goes to stderr, the table to stdout.
///
/// The full run takes about 10 minutes on 2 cores and needs `ulimit -n`
/// of at least 10,100; --quick (1,000 devices) takes under 3. Build with
/// --release: a debug build measures the debug build.
#[derive(Args)]
#[command(
    after_help = "Examples:\n  ota bench --quick\n  ota bench > table.md\n  ota bench --json > bench.json"
)]
pub struct Bench {
    /// Smaller sizes (1,000 devices, one run each): under 3 minutes.
    #[arg(long)]
    quick: bool,
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
        let plan = if self.quick {
            Plan::quick()
        } else {
            Plan::full()
        };
        if cfg!(debug_assertions) {
            eprintln!("note: a debug build; build with --release for the figures to record");
        }
        let progress = |s: String| eprintln!("{s}");
        let table = rt::block_on(async move {
            tokio::select! {
                t = suite::run(&plan, &cmd, &progress) => Ok(t),
                _ = rt::shutdown_signal() => Err(anyhow::anyhow!("interrupted")),
            }
        })??;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&table)?);
        } else {
            println!("{}", table.markdown());
        }
        Ok(())
    }
}
