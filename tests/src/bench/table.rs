//! The one table `ota bench` prints: its rows, the machine it ran on, and
//! its rendering as Markdown (the form docs/BENCHMARKS.md keeps).

use std::fmt::Write as _;

/// One line of the table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    /// What was measured.
    pub bench: String,
    /// `embedded`, `mosquitto` or `none`.
    pub broker: String,
    /// Devices (or sockets); 0: none (printed `—`).
    pub devices: usize,
    /// Wall time, as printed.
    pub time: Option<String>,
    /// The headline figure, as printed.
    pub result: String,
    /// The broker process's peak RSS, as printed.
    pub broker_rss: Option<String>,
    /// Bytes sent / image size, as printed.
    pub egress: Option<String>,
    /// Goals and whether they were met.
    pub goal: String,
    /// Every figure of the run, for `--json`.
    pub detail: serde_json::Value,
}

impl Row {
    /// A row that did not run, and why.
    pub fn skipped(bench: &str, broker: &str, devices: usize, why: &str) -> Row {
        Row {
            bench: bench.into(),
            broker: broker.into(),
            devices,
            time: None,
            result: why.into(),
            broker_rss: None,
            egress: None,
            goal: String::new(),
            detail: serde_json::Value::Null,
        }
    }

    /// A row whose run failed with `e`.
    pub fn failed(bench: &str, broker: &str, devices: usize, e: &dyn std::fmt::Display) -> Row {
        let why = format!("failed: {e}").replace(['\n', '|'], " ");
        Row::skipped(bench, broker, devices, &why)
    }
}

/// The machine a table was measured on.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
    /// The soft limit on open files.
    pub open_files: Option<u64>,
    /// Whether the binary was built with optimizations.
    pub release_build: bool,
}

impl Machine {
    /// This machine, from /proc.
    pub fn this() -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".into(), |(_, v)| v.trim().to_string());
        let mem_kib: f64 = read("/proc/meminfo")
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let open_files = read("/proc/self/limits")
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse().ok());
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            memory_gib: mem_kib / 1024.0 / 1024.0,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            open_files,
            release_build: !cfg!(debug_assertions),
        }
    }

    /// One line: `2 cores (model), 24 GiB, Linux 6.x, release build`.
    pub fn line(&self) -> String {
        format!(
            "{} cores ({}), {:.0} GiB, Linux {}, open files {}, {} build",
            self.cpus,
            self.cpu_model,
            self.memory_gib,
            self.kernel,
            self.open_files.map_or("?".into(), |n| n.to_string()),
            if self.release_build {
                "release"
            } else {
                "debug"
            }
        )
    }
}

/// Every row of one `ota bench` run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Table {
    /// The command that made it.
    pub command: String,
    pub machine: Machine,
    /// The whole run.
    pub seconds: f64,
    pub rows: Vec<Row>,
}

impl Table {
    /// The table as Markdown, with the command and machine above it.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "—".into());
        // Writing to a String cannot fail.
        let _ = writeln!(out, "`{}` ({:.0} s)  ", self.command, self.seconds);
        let _ = writeln!(out, "{}\n", self.machine.line());
        out.push_str("| benchmark | broker | devices | wall time | result | broker peak RSS | egress / image | goal |\n");
        out.push_str("|---|---|---|---|---|---|---|---|\n");
        for r in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                r.bench,
                r.broker,
                if r.devices == 0 {
                    "—".into()
                } else {
                    thousands(r.devices)
                },
                dash(&r.time),
                r.result,
                dash(&r.broker_rss),
                dash(&r.egress),
                r.goal
            );
        }
        out
    }
}

/// `10000` → `10,000`.
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(10_000), "10,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn a_failed_row_stays_on_one_table_line() {
        let t = Table {
            command: "ota bench --quick".into(),
            machine: Machine::this(),
            seconds: 1.0,
            rows: vec![Row::failed("x", "embedded", 10, &"a\nb | c")],
        };
        let md = t.markdown();
        let last = md.lines().last().unwrap();
        assert!(last.starts_with("| x | embedded | 10 |"), "{last}");
        assert!(last.contains("failed: a b   c"), "{last}");
    }
}
