//! The text of `campaign plan`: a row a wave, then the devices that will
//! not download and what the estimate assumes.

use std::fmt::Write as _;

use bridge::campaign::plan::Plan;

use super::table::{pct, table, utc, windows};

/// `campaign plan`: a row a wave, then what will not download.
pub fn plan(p: &Plan) -> String {
    let mut out = String::new();
    let rows: Vec<Vec<String>> = p
        .waves
        .iter()
        .map(|w| {
            let cohorts: Vec<String> = w
                .cohorts
                .iter()
                .filter(|(_, &c)| c > 0)
                .map(|(g, &c)| format!("{g}={}", pct(c)))
                .collect();
            vec![
                (w.wave + 1).to_string(),
                cohorts.join(","),
                w.members.to_string(),
                w.new.to_string(),
                w.downloads.to_string(),
                w.online.to_string(),
                bytes(w.broadcast_bytes),
                bytes(w.delivered_bytes),
                format!("{} s", w.download_secs),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "WAVE",
            "COHORTS",
            "MEMBERS",
            "NEW",
            "DOWNLOADS",
            "ONLINE",
            "BROADCAST",
            "DELIVERED",
            "DOWNLOAD",
        ],
        &rows,
    ));
    let _ = writeln!(
        out,
        "{} devices targeted, {} will download; the block server sends at least {} (one pass a wave), the broker delivers {}",
        p.targeted,
        p.downloads,
        bytes(p.broadcast_bytes),
        bytes(p.delivered_bytes)
    );
    let s = &p.skipped;
    for (n, why) in [
        (
            s.uncovered,
            "have an arch the release does not cover (incompatible_arch, counted apart)",
        ),
        (
            s.on_target,
            "already run this version (success, nothing to download)",
        ),
        (
            s.below_min_version,
            "run less than the manifest's min_version (min_version)",
        ),
        (
            s.would_downgrade,
            "run a higher version, and the manifest has no allow_downgrade (version_rejected)",
        ),
    ] {
        if n > 0 {
            let _ = writeln!(out, "  {n} {why}");
        }
    }
    let _ = writeln!(
        out,
        "download times: the online devices' blocks at {} deliveries/s ({}); installs, reboots and devices coming online later add to it, and a wave waits at most {} s",
        p.rate,
        if p.rate_measured { "the pacer's measured rate" } else { "a default: nothing measured since the bridge started" },
        p.wave_timeout_secs
    );
    if let Some(at) = p.start_at {
        let _ = writeln!(out, "starts by itself at {}", utc(at));
    }
    if let Some(at) = p.stop_at {
        let _ = writeln!(out, "expires at {}: no wave starts after it", utc(at));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    out.push_str(&windows(&p.windows, now));
    out
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / f64::from(1u32 << 30)),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20)),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}
