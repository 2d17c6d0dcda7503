//! `ota sim`: spawn a fleet, show live counters, print a summary.
//!
//! On a terminal the counters are an indicatif spinner line redrawn four
//! times a second; otherwise (a pipe, CI) one line every 5 s on stderr.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use super::{Fleet, FleetConfig, FleetError, FleetStats};

/// What `ota sim` was asked for, beyond the fleet itself.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// The fleet.
    pub fleet: FleetConfig,
    /// Stop after this long (default: at shutdown only).
    pub duration: Option<Duration>,
    /// Draw live counters (false with `--json` on a pipe, for instance).
    pub live: bool,
    /// Stop as soon as the broker refuses a device's login
    /// ([`FleetStats::first_refused`] names it) or a TLS handshake fails
    /// ([`FleetStats::first_tls_failure`]): `ota sim`'s choice, as
    /// retrying the same credentials or certificates cannot help.
    pub stop_on_refused_login: bool,
    /// Once stopped, wait at most this long for every Status sent to be
    /// acknowledged before the summary (`ota sim --settle`): a harness
    /// that stops the simulator as the campaign ends does not count the
    /// StatusAcks still on their way as missing. `None`: summarize at once.
    pub settle: Option<Duration>,
}

/// The summary printed at the end.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Seconds the fleet ran.
    pub seconds: f64,
    /// The counters at the end.
    pub stats: FleetStats,
    /// Image bytes held in memory at the end.
    pub image_bytes: u64,
    /// Devices holding Statuses no StatusAck covered at the end.
    pub unacked_devices: usize,
    /// A few of them, with the seqs still uncovered (at most 10 devices).
    pub unacked_sample: BTreeMap<String, Vec<u64>>,
}

/// Runs the simulator until `shutdown` (or the duration) and returns the
/// summary.
pub async fn run_sim(
    opts: SimOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<Summary, FleetError> {
    let started = Instant::now();
    let fleet = Fleet::spawn(opts.fleet)?;
    let tracker = fleet.tracker();
    let watched = fleet.tracker();
    let display = opts.live.then(|| {
        tokio::spawn(async move {
            let tty = std::io::stderr().is_terminal();
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            let mut last_line = Instant::now();
            loop {
                let s = tracker.stats();
                if tty {
                    bar.set_message(s.line());
                    bar.tick();
                } else if last_line.elapsed() >= Duration::from_secs(5) {
                    eprintln!("{:>6.0}s {}", started.elapsed().as_secs_f64(), s.line());
                    last_line = Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    });
    let until = async {
        match opts.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let refused = async {
        if !opts.stop_on_refused_login {
            return std::future::pending().await;
        }
        let hour = Duration::from_secs(3600);
        while watched
            .wait_until(hour, |s| {
                s.first_refused.is_some() || s.first_tls_failure.is_some()
            })
            .await
            .is_err()
        {}
    };
    tokio::select! {
        () = shutdown => {}
        () = until => {}
        () = refused => {}
    }
    if let Some(d) = display {
        d.abort();
    }
    if let Some(limit) = opts.settle {
        // Err: not all acknowledged within the limit, which the summary's
        // unacked counts then say.
        let _ = watched.wait_until(limit, |s| s.acked >= s.statuses).await;
    }
    let image_bytes = fleet.image_memory().1;
    let acks = fleet.acks();
    let unacked: Vec<(String, Vec<u64>)> = fleet
        .sent()
        .into_iter()
        .filter_map(|(id, sent)| {
            let missing: Vec<u64> = acks.get(&id).map_or(sent.iter().copied().collect(), |a| {
                sent.difference(a).copied().collect()
            });
            (!missing.is_empty()).then(|| (id.to_string(), missing))
        })
        .collect();
    let stats = fleet.shutdown().await;
    Ok(Summary {
        seconds: started.elapsed().as_secs_f64(),
        stats,
        image_bytes,
        unacked_devices: unacked.len(),
        unacked_sample: unacked.into_iter().take(10).collect(),
    })
}
