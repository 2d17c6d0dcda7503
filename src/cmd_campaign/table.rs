//! Text for people: the pre-flight after a create, a campaign's status,
//! the campaign list and the summary at the end of a watch. Plain aligned
//! columns, no colour, so it reads the same in a terminal, a log or CI.

use std::fmt::Write as _;

use bridge::campaign::gate::{Phase, WaveCounts};
use bridge::campaign::plan::DeltaPlan;
use bridge::campaign::record::WaveEnd;
use bridge::campaign::tally::Breakdown;
use bridge::campaign::view::{CampaignList, CampaignStatus, PathLine};
use bridge::campaign::window::WindowOutlook;
use serde::Serialize;

/// Prints a reply as pretty JSON.
pub fn print_json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Prints a reply: as JSON with `--json`, else as `text` renders it.
pub fn show<T: Serialize>(
    json: bool,
    v: &T,
    text: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    if json {
        return print_json(v);
    }
    print!("{}", text(v));
    Ok(())
}

/// Basis points as a percentage: `9500` → `95%`, `250` → `2.50%`.
pub fn pct(bp: u16) -> String {
    if bp.is_multiple_of(100) {
        format!("{}%", bp / 100)
    } else {
        format!("{}.{:02}%", bp / 100, bp % 100)
    }
}

/// Seconds from `now` to `t`, for people: `in 42s`, `3m ago`.
pub fn when(t: u64, now: u64) -> String {
    let span = |s: u64| {
        if s >= 3600 {
            format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
        } else if s >= 60 {
            format!("{}m{:02}s", s / 60, s % 60)
        } else {
            format!("{s}s")
        }
    };
    if t >= now {
        format!("in {}", span(t - now))
    } else {
        format!("{} ago", span(now - t))
    }
}

/// Columns aligned; columns of numbers are right-aligned.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    fn cell(r: &[String], i: usize) -> &str {
        r.get(i).map(String::as_str).unwrap_or("")
    }
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    let mut numeric = vec![!rows.is_empty(); cols];
    for r in rows {
        for i in 0..cols {
            let c = cell(r, i);
            width[i] = width[i].max(c.chars().count());
            numeric[i] &= c.chars().all(|ch| ch.is_ascii_digit());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::from("  ");
        for (i, c) in cells.iter().enumerate() {
            let pad = " ".repeat(width[i].saturating_sub(c.chars().count()));
            if numeric[i] {
                l.push_str(&pad);
                l.push_str(c);
            } else {
                l.push_str(c);
                l.push_str(&pad);
            }
            l.push_str("  ");
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line((0..cols).map(|i| cell(r, i)).collect());
    }
    out
}

fn headline(s: &CampaignStatus) -> String {
    let m = &s.summary;
    let lane = if m.emergency { "emergency " } else { "" };
    let wave = match (m.wave, m.emergency) {
        (_, true) => String::new(),
        (Some(w), false) => format!(", wave {} of {}", w + 1, m.waves),
        (None, false) => format!(", {} waves", m.waves),
    };
    let parent = match (&m.parent, &m.rollback) {
        (Some(p), _) => format!(", follow-up of {p}"),
        (None, Some(child)) => format!(", rolled back by {child}"),
        (None, None) => String::new(),
    };
    let starts = match m.start_at {
        Some(at) => format!(", starts by itself at {}", utc(at)),
        None => String::new(),
    };
    let stops = match m.stop_at {
        Some(at) => format!(", expires at {}", utc(at)),
        None => String::new(),
    };
    format!(
        "{lane}campaign {}: {} {} {} ({}{wave}{parent}{starts}{stops})\n",
        m.id, m.kind, m.component, m.version, m.state
    )
}

/// The maintenance windows, one row a group: open or closed at `now`, and
/// when that changes next. Empty without windows.
pub fn windows(ws: &[WindowOutlook], now: u64) -> String {
    if ws.is_empty() {
        return String::new();
    }
    let rows: Vec<Vec<String>> = ws
        .iter()
        .map(|w| {
            let next = match (w.open, w.next_change) {
                (true, Some(t)) => format!("open, closes {} ({})", when(t, now), utc(t)),
                (false, Some(t)) => format!("closed, opens {} ({})", when(t, now), utc(t)),
                (true, None) => "open".to_string(),
                (false, None) => "closed".to_string(),
            };
            vec![w.group.to_string(), w.window.clone(), next]
        })
        .collect();
    format!(
        "\nmaintenance windows (a group's waves run only inside its window):\n{}",
        table(&["GROUP", "WINDOW", "NOW"], &rows)
    )
}

/// Unix seconds as RFC 3339 UTC.
pub fn utc(at: u64) -> String {
    i64::try_from(at)
        .ok()
        .and_then(|t| jiff::Timestamp::from_second(t).ok())
        .map_or_else(|| at.to_string(), |t| t.to_string())
}

fn release(s: &CampaignStatus) -> String {
    let parts: Vec<String> = s
        .release
        .iter()
        .map(|a| format!("{} ({}, {} bytes)", a.artifact, a.arch, a.size))
        .collect();
    format!("release: {}\n", parts.join(", "))
}

/// After `campaign create` and `emergency`: the pre-flight.
pub fn created(s: &CampaignStatus) -> String {
    let mut out = headline(s);
    out.push_str(&release(s));
    let p = &s.preflight;
    let _ = writeln!(out, "\npre-flight: {} devices targeted", p.targeted);
    let rows: Vec<Vec<String>> = p
        .by_arch
        .iter()
        .map(|(arch, l)| {
            vec![
                arch.clone(),
                l.devices.to_string(),
                if l.covered {
                    "yes".into()
                } else {
                    "NO: will report incompatible_arch".into()
                },
            ]
        })
        .collect();
    if !rows.is_empty() {
        out.push_str(&table(&["ARCH", "DEVICES", "IN RELEASE"], &rows));
    }
    if p.uncovered > 0 {
        let _ = writeln!(
            out,
            "  {} targeted devices have an arch the release does not cover; they will report \
             failed/incompatible_arch, counted apart from failures.",
            p.uncovered
        );
    }
    if let Some(line) = deltas_line(&p.deltas) {
        let _ = writeln!(out, "  {line}; the other downloads take the full image");
    }
    if p.unverifiable > 0 {
        let _ = writeln!(
            out,
            "  {} targeted devices were provisioned without the key that signed the release \
             (kid {}); they will report failed/unknown_key.",
            p.unverifiable,
            p.release_kids.join(", ")
        );
    }
    if !p.groups.is_empty() {
        let rows: Vec<Vec<String>> = p
            .groups
            .iter()
            .map(|(g, l)| {
                vec![
                    g.to_string(),
                    l.devices.to_string(),
                    pct(l.cohort),
                    l.targeted.to_string(),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(
            &["GROUP", "DEVICES", "FINAL SHARE", "TARGETED"],
            &rows,
        ));
    }
    out.push_str(&windows(&s.windows, s.now));
    if !s.summary.emergency && s.summary.state == "draft" {
        out.push('\n');
        out.push_str(&plan(s));
        let _ = writeln!(out, "\nnext: ota campaign start {}", s.summary.id);
    } else {
        let _ = writeln!(out, "\nfollow it: ota campaign watch {}", s.summary.id);
    }
    out
}

/// A wave's cohorts as `group=share,...`, the groups it takes none of
/// left out.
pub fn shares<'a, G: std::fmt::Display + 'a>(
    cohorts: impl IntoIterator<Item = (&'a G, &'a u16)>,
) -> String {
    cohorts
        .into_iter()
        .filter(|(_, &c)| c > 0)
        .map(|(g, &c)| format!("{g}={}", pct(c)))
        .collect::<Vec<_>>()
        .join(",")
}

fn plan(s: &CampaignStatus) -> String {
    let rows: Vec<Vec<String>> = s
        .plan
        .iter()
        .map(|w| {
            let cohorts = shares(&w.cohorts);
            let result = match &w.end {
                Some(WaveEnd::Passed { counts, .. }) => format!("passed: {}", counts_line(counts)),
                Some(WaveEnd::Halted { reason, .. }) if w.state == "halted" => {
                    format!("halted: {reason}")
                }
                _ => String::new(),
            };
            let who = if cohorts.is_empty() {
                "every device".to_string()
            } else {
                cohorts
            };
            vec![(w.wave + 1).to_string(), who, w.state.clone(), result]
        })
        .collect();
    let g = &s.gates;
    let mut out = table(&["WAVE", "SHARES", "STATE", "RESULT"], &rows);
    let _ = writeln!(
        out,
        "  gates: success bar {}, halt above {}, min sample {}, wave timeout {}s, soak {}s",
        pct(g.success_bar_bp),
        pct(g.failure_halt_bp),
        g.min_sample,
        g.wave_timeout_secs,
        g.soak_secs
    );
    out
}

/// `success 10, failure 1, not applicable 2, pending 3 of 16`, and the
/// anomalies among the failures when there are any.
pub fn counts_line(c: &WaveCounts) -> String {
    let mut line = format!(
        "success {}, failure {}, not applicable {}, pending {} of {}",
        c.success, c.failure, c.not_applicable, c.pending, c.members
    );
    if c.anomaly > 0 {
        line.push_str(&format!(
            "; ANOMALY: {} of the failures cancelled on an abort the bridge never announced",
            c.anomaly
        ));
    }
    line
}

/// The current wave's rows: one a group, then `(all)`.
fn wave_rows(s: &CampaignStatus, cur: &Breakdown) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = s
        .groups
        .iter()
        .map(|g| breakdown_rows(g.group.as_str(), &g.members))
        .collect();
    rows.push(breakdown_rows("(all)", cur));
    rows
}

fn breakdown_rows(name: &str, b: &Breakdown) -> Vec<String> {
    let states: Vec<String> = b
        .by_state
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "success"))
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let errors: Vec<String> = b.by_error.iter().map(|(k, v)| format!("{k} {v}")).collect();
    vec![
        name.to_string(),
        b.counts.members.to_string(),
        b.counts.success.to_string(),
        b.counts.failure.to_string(),
        b.counts.not_applicable.to_string(),
        b.counts.pending.to_string(),
        states.join(", "),
        errors.join(", "),
    ]
}

const COUNT_HEADER: [&str; 8] = [
    "GROUP", "MEMBERS", "SUCCESS", "FAILURE", "N/A", "PENDING", "STATES", "ERRORS",
];

/// `campaign status` and the other commands' replies.
pub fn status(s: &CampaignStatus) -> String {
    let mut out = headline(s);
    out.push_str(&release(s));
    match &s.phase {
        Phase::Running {
            held_since: Some(since),
            ..
        } => {
            let _ = writeln!(
                out,
                "every target group is outside its maintenance window (since {}): the wave timeout stands still",
                when(*since, s.now)
            );
        }
        Phase::Running { deadline, .. } => {
            let _ = writeln!(
                out,
                "the wave is judged by its timeout {}",
                when(*deadline, s.now)
            );
        }
        Phase::Expired { at, .. } => {
            let _ = writeln!(
                out,
                "expired {} (its stop time): no wave widens; `ota campaign retry {}` follows up the devices left",
                when(*at, s.now),
                s.summary.id
            );
        }
        Phase::Standing { since, .. } => {
            let _ = writeln!(
                out,
                "standing since {}: admits every device that joins its groups; halts when more than {} of its latest results fail",
                when(*since, s.now),
                pct(s.gates.failure_halt_bp)
            );
        }
        Phase::Soaking { until, .. } => {
            let _ = writeln!(out, "soaking: the next wave starts {}", when(*until, s.now));
        }
        Phase::Halted { reason, .. } => {
            let _ = writeln!(
                out,
                "HALTED: {reason}\n  devices were told `paused`; `ota campaign resume {}` re-runs the wave's gate, `ota campaign abort {}` ends it",
                s.summary.id, s.summary.id
            );
        }
        _ => {}
    }
    out.push_str(&windows(&s.windows, s.now));
    if !s.summary.emergency {
        out.push('\n');
        out.push_str(&plan(s));
    }
    if let Some(cur) = &s.current {
        let rows = wave_rows(s, cur);
        out.push_str("\ncurrent wave:\n");
        out.push_str(&table(&COUNT_HEADER, &rows));
        if cur.counts.anomaly > 0 {
            let _ = writeln!(
                out,
                "ANOMALY: {} of the failures are devices that cancelled on an abort this bridge never announced: someone else can publish on its topics (see foreign_retained in the bridge's counters, and the broker's ACLs)",
                cur.counts.anomaly
            );
        }
        if let Some(line) = paths_line(&s.paths) {
            let _ = writeln!(out, "  {line}");
        }
    }
    let recent: Vec<_> = s.history.iter().rev().take(8).collect();
    if !recent.is_empty() {
        out.push_str("\ndecisions (latest last):\n");
        for d in recent.into_iter().rev() {
            let _ = writeln!(out, "  {}  {}", when(d.at, s.now), d.text);
        }
    }
    out
}

/// E3: `paths: full 412, delta from 1.0.0 301, delta from 1.1.0 287`,
/// the members by what their reports name (every arch's full image
/// together, each from-version's deltas together); none without deltas.
pub fn paths_line(paths: &[PathLine]) -> Option<String> {
    if paths.is_empty() {
        return None;
    }
    let mut by: Vec<(Option<&str>, u32)> = Vec::new();
    for p in paths {
        let from = p.from_version.as_deref();
        match by.iter_mut().find(|(f, _)| *f == from) {
            Some((_, n)) => *n += p.devices,
            None => by.push((from, p.devices)),
        }
    }
    let parts: Vec<String> = by
        .into_iter()
        .map(|(from, n)| match from {
            None => format!("full {n}"),
            Some(v) => format!("delta from {v} {n}"),
        })
        .collect();
    Some(format!("paths: {}", parts.join(", ")))
}

/// E3: `delta downloads: from 1.0.0 301 (saves 289.5 MiB), from 1.1.0
/// 287 (saves 270.0 MiB)`, each from-version's deltas together (every
/// arch); none without deltas.
pub fn deltas_line(deltas: &[DeltaPlan]) -> Option<String> {
    if deltas.is_empty() {
        return None;
    }
    let mut by: Vec<(&str, u32, u64)> = Vec::new();
    for d in deltas {
        match by.iter_mut().find(|(f, _, _)| *f == d.from_version) {
            Some((_, n, saved)) => {
                *n += d.downloads;
                *saved += d.saved_bytes;
            }
            None => by.push((&d.from_version, d.downloads, d.saved_bytes)),
        }
    }
    let parts: Vec<String> = by
        .into_iter()
        .map(|(from, n, saved)| format!("from {from} {n} (saves {})", bytes(saved)))
        .collect();
    Some(format!("delta downloads: {}", parts.join(", ")))
}

/// A byte count for people: B, KiB, MiB or GiB.
pub fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / f64::from(1u32 << 30)),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20)),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// `campaign list`.
pub fn list(l: &CampaignList) -> String {
    if l.campaigns.is_empty() {
        return "no campaigns yet: create one with `ota campaign create` (see --help)\n".into();
    }
    let rows: Vec<Vec<String>> = l
        .campaigns
        .iter()
        .map(|c| {
            let wave = match (c.wave, c.emergency) {
                (_, true) => "emergency".to_string(),
                (Some(w), false) => format!("{}/{}", w + 1, c.waves),
                (None, false) => format!("-/{}", c.waves),
            };
            let counts = c.counts.as_ref().map(counts_line).unwrap_or_default();
            vec![
                c.id.to_string(),
                c.state.clone(),
                wave,
                format!("{} {} {}", c.kind, c.component, c.version),
                counts,
            ]
        })
        .collect();
    table(
        &["CAMPAIGN", "STATE", "WAVE", "RELEASE", "CURRENT WAVE"],
        &rows,
    )
}

/// The summary at the end of a watch: every wave's result, the last
/// wave's groups, errors.
pub fn summary(s: &CampaignStatus) -> String {
    let mut out = String::from("\n");
    out.push_str(&headline(s));
    let rows: Vec<Vec<String>> = s
        .plan
        .iter()
        .map(|w| {
            let (result, c) = match &w.end {
                Some(WaveEnd::Passed { counts, .. }) => ("passed".to_string(), Some(*counts)),
                Some(WaveEnd::Halted { counts, .. }) => ("halted".to_string(), Some(*counts)),
                None if Some(w.wave) == s.summary.wave => (w.state.clone(), s.summary.counts),
                None => (w.state.clone(), None),
            };
            let c = c.unwrap_or_default();
            vec![
                (w.wave + 1).to_string(),
                result,
                c.members.to_string(),
                c.success.to_string(),
                c.failure.to_string(),
                c.not_applicable.to_string(),
                c.pending.to_string(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "WAVE",
            "RESULT",
            "MEMBERS",
            "SUCCESS",
            "FAILURE",
            "N/A",
            "NO REPORT",
        ],
        &rows,
    ));
    if let Some(cur) = &s.current {
        let rows = wave_rows(s, cur);
        out.push('\n');
        out.push_str(&table(&COUNT_HEADER, &rows));
        if let Some(line) = paths_line(&s.paths) {
            let _ = writeln!(out, "  {line}");
        }
    }
    if let Some(last) = s.history.last() {
        let _ = writeln!(out, "\n{}", last.text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_and_times() {
        assert_eq!(pct(9500), "95%");
        assert_eq!(pct(250), "2.50%");
        assert_eq!(when(160, 100), "in 1m00s");
        assert_eq!(when(100, 3800), "1h01m ago");
    }

    #[test]
    fn paths_sum_arches_by_from_version() {
        let p = |artifact: &str, arch: &str, from: Option<&str>, devices| PathLine {
            artifact: schemas::ArtifactId::new(artifact).unwrap(),
            arch: arch.into(),
            from_version: from.map(str::to_string),
            devices,
        };
        assert_eq!(paths_line(&[]), None);
        let line = paths_line(&[
            p("fw-esp32", "esp32", None, 400),
            p("fw-s3", "esp32s3", None, 12),
            p("fw-esp32-from-1.0.0", "esp32", Some("1.0.0"), 300),
            p("fw-esp32-from-1.1.0", "esp32", Some("1.1.0"), 287),
            p("fw-s3-from-1.0.0", "esp32s3", Some("1.0.0"), 1),
        ]);
        assert_eq!(
            line.as_deref(),
            Some("paths: full 412, delta from 1.0.0 301, delta from 1.1.0 287")
        );
    }

    #[test]
    fn deltas_sum_arches_by_from_version() {
        let d = |artifact: &str, arch: &str, from: &str, downloads, saved_bytes| DeltaPlan {
            artifact: schemas::ArtifactId::new(artifact).unwrap(),
            arch: arch.into(),
            from_version: from.into(),
            downloads,
            saved_bytes,
        };
        assert_eq!(deltas_line(&[]), None);
        let line = deltas_line(&[
            d("fw-esp32.from-1.0.0", "esp32", "1.0.0", 300, 3 << 20),
            d("fw-esp32.from-1.1.0", "esp32", "1.1.0", 7, 1536),
            d("fw-s3.from-1.0.0", "esp32s3", "1.0.0", 1, 1 << 20),
        ]);
        assert_eq!(
            line.as_deref(),
            Some("delta downloads: from 1.0.0 301 (saves 4.0 MiB), from 1.1.0 7 (saves 1.5 KiB)")
        );
    }

    #[test]
    fn tables_align() {
        let t = table(
            &["A", "N"],
            &[
                vec!["long".into(), "5".into()],
                vec!["x".into(), "123".into()],
            ],
        );
        assert_eq!(t, "  A       N\n  long    5\n  x     123\n");
    }
}
