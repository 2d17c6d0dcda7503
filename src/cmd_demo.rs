//! `ota demo`: the main job for a newcomer (the library does the work:
//! `harness::demo`).

use std::path::PathBuf;

use clap::Args;
use std::io::IsTerminal;

use crate::{rt, Run};

/// Run a whole rollout on a simulated fleet, in one process: the place to start.
///
/// Starts an embedded MQTT broker, the bridge (data in a temp dir) and a
/// simulated fleet (3 customers with 2 production lines each, esp32 and
/// armv7). Makes keys and groups, pushes a signed firmware release for both
/// arches and rolls it out in three waves with live progress and injected
/// failures, pushes an esp32-only app that armv7 devices refuse (and report
/// why), sends an emergency config fix that skips the waves, and ends with
/// a summary table. About a minute on a 2-core machine.
///
/// With --tls the devices log in by certificate over mutual TLS: a fleet
/// CA and the broker's certificate are made in the data dir (`pki/`), the
/// broker gets a TLS listener with that CA as client_ca_file, and each
/// device its own certificate (CN = its id).
#[derive(Args)]
#[command(
    after_help = "Examples:\n  ota demo\n  ota demo --devices 200 --keep ./demo-data\n  ota demo --tls --devices 200\n  ota demo --http 127.0.0.1:8080 --stay\n  ota demo --json > summary.json"
)]
pub struct Demo {
    /// How many simulated devices.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=20000))]
    devices: u64,
    /// Keep the bridge's data (sled store, artifacts) in DIR instead of a temp dir.
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// Print the summary as JSON on stdout (and no progress).
    #[arg(long)]
    json: bool,
    /// Where the dashboard listens (read-only, anonymous: loopback only;
    /// port 0 picks a free one). Its URL is printed.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    http: std::net::SocketAddr,
    /// After the summary, keep the bridge and its dashboard running until
    /// Ctrl-C, to look at the campaigns the demo ran.
    #[arg(long)]
    stay: bool,
    /// Devices log in by their own certificates over mutual TLS (mqtts);
    /// the PKI is made in the data dir's pki/.
    #[arg(long)]
    tls: bool,
}

impl Run for Demo {
    fn run(self) -> anyhow::Result<()> {
        let opts = harness::demo::DemoOptions {
            devices: self.devices as usize,
            keep: self.keep,
            json: self.json,
            progress: std::io::stderr().is_terminal(),
            http: Some(self.http),
            stay: self.stay,
            tls: self.tls,
        };
        if opts.stay {
            // The demo waits for Ctrl-C itself once the summary is out.
            return rt::block_on(async move {
                harness::demo::run(opts)
                    .await
                    .map(|_| ())
                    .map_err(anyhow::Error::from)
            })?;
        }
        rt::block_on(async move {
            tokio::select! {
                r = harness::demo::run(opts) => r.map(|_| ()).map_err(anyhow::Error::from),
                _ = rt::shutdown_signal() => anyhow::bail!("interrupted"),
            }
        })?
    }
}
