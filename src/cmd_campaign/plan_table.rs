//! The text of `campaign plan`: a row a wave, then the devices that will
//! not download and what the estimate assumes.

use std::fmt::Write as _;

use bridge::campaign::plan::Plan;

use super::table::{bytes, deltas_line, shares, table, utc, windows};

/// `campaign plan`: a row a wave, then what will not download.
pub fn plan(p: &Plan) -> String {
    let mut out = String::new();
    let deltas = !p.deltas.is_empty();
    let rows: Vec<Vec<String>> = p
        .waves
        .iter()
        .map(|w| {
            let mut row = vec![
                (w.wave + 1).to_string(),
                shares(&w.cohorts),
                w.members.to_string(),
                w.new.to_string(),
                w.downloads.to_string(),
                w.online.to_string(),
                bytes(w.broadcast_bytes),
                bytes(w.delivered_bytes),
                format!("{} s", w.download_secs),
            ];
            if deltas {
                row.insert(5, w.delta_downloads.to_string());
            }
            row
        })
        .collect();
    let mut header = vec![
        "WAVE",
        "COHORTS",
        "MEMBERS",
        "NEW",
        "DOWNLOADS",
        "ONLINE",
        "BROADCAST",
        "DELIVERED",
        "DOWNLOAD",
    ];
    if deltas {
        header.insert(5, "OF THEM DELTA");
    }
    out.push_str(&table(&header, &rows));
    let _ = writeln!(
        out,
        "{} devices targeted, {} will download; the block server sends at least {} (one pass a wave), the broker delivers {}",
        p.targeted,
        p.downloads,
        bytes(p.broadcast_bytes),
        bytes(p.delivered_bytes)
    );
    if let Some(line) = deltas_line(&p.deltas) {
        let took: u32 = p.deltas.iter().map(|d| d.downloads).sum();
        let _ = writeln!(
            out,
            "{line}; the other {} downloads take the full image",
            p.downloads.saturating_sub(took)
        );
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use bridge::campaign::plan::{DeltaPlan, WavePlan};

    fn delta(artifact: &str, arch: &str, from: &str, downloads: u32, saved: u64) -> DeltaPlan {
        DeltaPlan {
            artifact: schemas::ArtifactId::new(artifact).unwrap(),
            arch: arch.into(),
            from_version: from.into(),
            downloads,
            saved_bytes: saved,
        }
    }

    #[test]
    fn the_deltas_line_and_column() {
        let mut p = Plan {
            waves: vec![WavePlan {
                downloads: 1000,
                delta_downloads: 588,
                ..WavePlan::default()
            }],
            downloads: 1000,
            ..Plan::default()
        };
        assert!(!plan(&p).contains("DELTA"), "{}", plan(&p));
        p.deltas = vec![
            delta("fw-esp32.from-1.0.0", "esp32", "1.0.0", 300, 300 << 20),
            delta("fw-esp32.from-1.1.0", "esp32", "1.1.0", 287, 270 << 20),
            delta("fw-s3.from-1.0.0", "esp32s3", "1.0.0", 1, 1 << 19),
            delta("fw-esp32.from-0.9.0", "esp32", "0.9.0", 0, 0),
        ];
        let text = plan(&p);
        assert!(
            text.contains(
                "\ndelta downloads: from 1.0.0 301 (saves 300.5 MiB), from 1.1.0 287 \
                 (saves 270.0 MiB), from 0.9.0 0 (saves 0 B); the other 412 downloads \
                 take the full image\n"
            ),
            "{text}"
        );
        let text = plan(&p);
        let header = text.lines().next().unwrap();
        assert!(
            header.contains("DOWNLOADS  OF THEM DELTA  ONLINE"),
            "{header}"
        );
        let row = text.lines().nth(1).unwrap();
        assert!(row.contains(" 1000            588 "), "{row}");
    }
}
