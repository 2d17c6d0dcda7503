//! `ota demo`: the whole story in one process, for a newcomer.
//!
//! An embedded broker, the bridge and a simulated fleet (3 customers with
//! 2 lines each, esp32 and armv7). It makes keys and groups, rolls a
//! firmware release out in three waves with live progress and injected
//! failures, sends an esp32-only app update that armv7 devices refuse, an
//! emergency config fix that skips the waves, and a bad build that halts
//! in its canary wave and rolls back by itself, then prints a summary.
//!
//! With `tls` (`ota demo --tls`) the same story runs over mutual TLS: a
//! fleet PKI in the data dir (`pki/`, as `ota pki init` lays it out), the
//! broker's TLS listener with that CA as its client CA, every device
//! logging in by its own certificate (CN = its id) over mqtts, the bridge
//! and the operator on the plain listener on loopback.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use device_sim::fleet::{Fleet, FleetHandle, Profile};
use indicatif::{ProgressBar, ProgressStyle};
use schemas::msg::Kind;
use schemas::ops::Command;
use schemas::release::ReleaseSpec;
use schemas::{ArtifactId, CampaignId, ComponentName, GroupName};
use serde::Serialize;

use crate::stack::{Stack, StackError, StackOptions};

mod campaign;
mod line;
use campaign::{follow_rollback, run as run_campaign, run_campaign as run_keeping_events};

/// What the demo does.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Simulated devices (default 1,000).
    pub devices: usize,
    /// Keep the bridge's data here (default: a temp dir, removed).
    pub keep: Option<PathBuf>,
    /// Print the summary as JSON instead of a table.
    pub json: bool,
    /// Draw progress bars (off when stderr is not a terminal).
    pub progress: bool,
    /// The dashboard's address (loopback, anonymous reads); `None`: off.
    pub http: Option<std::net::SocketAddr>,
    /// After the summary, keep the bridge and the dashboard up until
    /// Ctrl-C (or SIGTERM).
    pub stay: bool,
    /// Devices log in by certificate over mutual TLS.
    pub tls: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            devices: 1000,
            keep: None,
            json: false,
            progress: true,
            http: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
            stay: false,
            tls: false,
        }
    }
}

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Stack(#[from] StackError),
    #[error("operator command failed: {0}")]
    Client(#[from] bridge::client::ClientError),
    #[error("fleet: {0}")]
    Fleet(#[from] device_sim::fleet::FleetError),
    #[error("{0}")]
    Stalled(String),
}

/// One campaign's line in the summary.
#[derive(Debug, Clone, Serialize)]
pub struct CampaignLine {
    pub campaign: CampaignId,
    pub kind: String,
    pub emergency: bool,
    pub state: String,
    pub targeted: u32,
    pub success: u32,
    pub failure: u32,
    pub not_applicable: u32,
    pub no_report: u32,
    pub seconds: f64,
    pub errors: BTreeMap<String, u32>,
}

/// What the demo shows at the end.
#[derive(Debug, Clone, Serialize)]
pub struct DemoSummary {
    pub devices: usize,
    pub campaigns: Vec<CampaignLine>,
    pub versions: BTreeMap<String, BTreeMap<String, usize>>,
    pub statuses_sent: u64,
    pub statuses_acked: u64,
    /// Devices in the bridge's credential registry (each its own password).
    pub provisioned: usize,
    /// Logins, publishes, subscriptions and block requests the bridge's
    /// identity refused (none, for a fleet that keeps to PROTOCOL.md E1).
    pub identity_refused: u64,
    /// Devices logged in by certificate over mutual TLS (`tls`).
    pub tls: bool,
    /// CONNECTs the broker admitted by client certificate, and by
    /// password (the bridge's and the operator's, and password devices).
    pub certificate_logins: u64,
    pub password_logins: u64,
    pub seconds: f64,
    pub data_dir: Option<PathBuf>,
    /// The dashboard's URL, when the HTTP listener ran.
    pub dashboard: Option<String>,
}

const CUSTOMERS: [&str; 3] = ["acme", "globex", "initech"];

/// Fresh devices that come off the demo's factory line.
const LINE_DEVICES: usize = 100;

pub(crate) fn say(opts: &DemoOptions, s: impl AsRef<str>) {
    if !opts.json {
        println!("{}", s.as_ref());
    }
}

/// Runs the demo; returns its summary (already printed unless `json`).
pub async fn run(opts: DemoOptions) -> Result<DemoSummary, DemoError> {
    let started = Instant::now();
    say(
        &opts,
        "ota demo: a rollout to a simulated fleet, end to end\n",
    );

    // 1. The stack.
    if let Some(a) = opts.http.filter(|a| !a.ip().is_loopback()) {
        return Err(DemoError::Stalled(format!(
            "the demo's dashboard is anonymous, so it listens on loopback only; {a} is not"
        )));
    }
    let stack = Stack::start(StackOptions {
        data_dir: opts.keep.clone(),
        secured: true,
        http: opts.http,
        mtls: opts.tls,
        ..StackOptions::default()
    })
    .await?;
    let dashboard = stack
        .bridge()
        .and_then(|b| b.http_addr())
        .map(|a| format!("http://{a}/"));
    say(
        &opts,
        format!(
            "1. started the bridge and its embedded MQTT broker on 127.0.0.1:{} with accounts: the bridge's, an operator's, and each device its own (data in {})",
            stack.port,
            stack.bridge_dir().display()
        ),
    );
    if let Some((pki, port)) = stack.mtls() {
        say(
            &opts,
            format!(
                "   TLS: made a fleet CA and the broker's certificate in {} (as `ota pki init`); devices connect to mqtts://127.0.0.1:{port}, mutual TLS, the CA as client_ca_file; the bridge stays on loopback",
                pki.dir().display()
            ),
        );
    }
    if let Some(url) = &dashboard {
        say(
            &opts,
            format!("   the dashboard is at {url} (read-only; /metrics and /api/v1/... beside it)"),
        );
    }
    say(
        &opts,
        format!(
            "   made a release key (kid {}) that signs images and an operator key (kid {}) that signs commands",
            hex::encode(schemas::keys::kid(&stack.keys.release.verifying_key())),
            hex::encode(schemas::keys::kid(&stack.keys.operator.verifying_key()))
        ),
    );

    // 2. The fleet.
    let fleet = spawn_fleet(&stack, &opts).await?;
    wait_registered(&stack, &fleet, &opts).await?;

    // 3. Groups, customer by customer, and a canary group.
    let canary: Vec<_> = fleet
        .ids()
        .iter()
        .take(20.min(opts.devices))
        .cloned()
        .collect();
    put_group(&stack, "canary", None, Some(canary)).await?;
    for c in CUSTOMERS {
        put_group(&stack, c, Some(format!("customer={c}")), None).await?;
    }
    say(
        &opts,
        "3. grouped the fleet: canary (20 named devices), acme, globex, initech (label selectors customer=...)",
    );

    let mut lines = Vec::new();

    // 4. Firmware in three waves.
    let fw = [
        push(&stack, Kind::Firmware, "main", "1.1.0", "esp32", 256 * 1024).await?,
        push(&stack, Kind::Firmware, "main", "1.1.0", "armv7", 256 * 1024).await?,
    ];
    say(&opts, "4. pushed firmware main 1.1.0 for esp32 and armv7 (256 KiB each, signed) and rolled it out in waves:");
    say(
        &opts,
        "   wave 1: canary 100% | wave 2: each customer 20% | wave 3: everyone 100%",
    );
    let spec = serde_json::json!({
        "id": "fw-main-1.1.0",
        "kind": "firmware",
        "release": fw,
        "waves": [
            {"cohorts": {"canary": 10000}},
            {"cohorts": {"acme": 2000, "globex": 2000, "initech": 2000}},
            {"cohorts": {"acme": 10000, "globex": 10000, "initech": 10000}},
        ],
        "gates": {"success_bar_bp": 9000, "failure_halt_bp": 1000, "min_sample": 5,
                  "wave_timeout_secs": 30, "soak_secs": 1},
    });
    lines.push(run_campaign(&stack, &opts, spec, None).await?);

    // 5. An app for esp32 only: armv7 devices refuse it and say why.
    let app = push(&stack, Kind::App, "dashboard", "2.1.0", "esp32", 64 * 1024).await?;
    say(
        &opts,
        "5. pushed app dashboard 2.1.0 for esp32 only and offered it to everyone in one wave;",
    );
    say(
        &opts,
        "   armv7 devices refuse it (incompatible_arch), counted apart from failures",
    );
    let spec = serde_json::json!({
        "id": "app-dashboard-2.1.0",
        "kind": "app",
        "release": [app],
        "waves": [{"cohorts": {"acme": 10000, "globex": 10000, "initech": 10000}}],
        "gates": {"success_bar_bp": 9000, "failure_halt_bp": 1000, "min_sample": 5,
                  "wave_timeout_secs": 30, "soak_secs": 0},
    });
    lines.push(run_campaign(&stack, &opts, spec, None).await?);

    // 6. An emergency config fix: no waves, no "not now".
    let cfg = push(&stack, Kind::Config, "settings", "1.0.1", "any", 4 * 1024).await?;
    say(&opts, "6. an emergency: config settings 1.0.1 for every device, skipping the waves and every deferral");
    let emergency = Command::Emergency {
        id: CampaignId::new("emergency-settings-1.0.1").expect("a valid id"),
        release: vec![cfg],
        groups: vec![],
        all: true,
    };
    lines.push(run_campaign(&stack, &opts, serde_json::Value::Null, Some(emergency)).await?);

    // 7. A bad build halts by itself and rolls back.
    let bad = [
        push(&stack, Kind::Firmware, "main", "1.2.0", "esp32", 256 * 1024).await?,
        push(&stack, Kind::Firmware, "main", "1.2.0", "armv7", 256 * 1024).await?,
    ];
    let back = [
        push_rollback(&stack, "main", "1.1.0", "esp32", 256 * 1024).await?,
        push_rollback(&stack, "main", "1.1.0", "armv7", 256 * 1024).await?,
    ];
    say(
        &opts,
        "7. a bad build: firmware main 1.2.0 fails to boot on a third of the devices;",
    );
    say(
        &opts,
        "   its campaign names a rollback release (main 1.1.0, signed with allow_downgrade)",
    );
    let spec = serde_json::json!({
        "id": "fw-main-1.2.0",
        "kind": "firmware",
        "release": bad,
        "waves": [
            {"cohorts": {"canary": 10000}},
            {"cohorts": {"acme": 10000, "globex": 10000, "initech": 10000}},
        ],
        "gates": {"success_bar_bp": 9000, "failure_halt_bp": 1000, "min_sample": 5,
                  "wave_timeout_secs": 30, "soak_secs": 0},
        "rollback": {"release": back},
    });
    let (line, mut events) = run_keeping_events(&stack, &opts, spec, None).await?;
    let halted = line.campaign.clone();
    lines.push(line);
    say(
        &opts,
        "   the halt rolls back exactly the devices that installed 1.2.0:",
    );
    lines.push(follow_rollback(&stack, &opts, &halted, &mut events).await?);

    // 8. A factory line brings fresh devices onto the fleet's firmware.
    let (line, line_fleet) = line::run(&stack, &opts, &fw, LINE_DEVICES.min(opts.devices)).await?;
    lines.push(line);

    // 9. The summary.
    let stats = fleet.stats();
    let versions = fleet_versions(&stack).await?;
    let (provisioned, identity_refused) = stack
        .bridge()
        .map(|b| (b.identity().len(), b.identity().refusals().sum()))
        .unwrap_or_default();
    let (certificate_logins, password_logins) = logins(&stack);
    let summary = DemoSummary {
        devices: opts.devices,
        campaigns: lines,
        versions,
        statuses_sent: stats.statuses,
        statuses_acked: stats.acked,
        provisioned,
        identity_refused,
        tls: opts.tls,
        certificate_logins,
        password_logins,
        seconds: started.elapsed().as_secs_f64(),
        data_dir: opts.keep.clone(),
        dashboard: dashboard.clone(),
    };
    if opts.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).unwrap_or_default()
        );
    } else {
        print_summary(&summary);
    }
    if opts.stay {
        if let Some(url) = &dashboard {
            say(
                &opts,
                format!("\nThe bridge keeps running: the dashboard is at {url}. Ctrl-C stops it."),
            );
        }
        wait_for_stop().await;
    }
    fleet.shutdown().await;
    line_fleet.shutdown().await;
    stack.shutdown().await?;
    Ok(summary)
}

/// CONNECTs the broker admitted by certificate, and by password (with or
/// without a certificate).
fn logins(stack: &Stack) -> (u64, u64) {
    use broker::LoginKind;
    let Some(c) = stack.bridge().and_then(|b| b.broker_counters()) else {
        return (0, 0);
    };
    (
        c.logins(LoginKind::Certificate),
        c.logins(LoginKind::Password) + c.logins(LoginKind::PasswordWithCertificate),
    )
}

/// Ctrl-C or SIGTERM.
async fn wait_for_stop() {
    #[cfg(unix)]
    {
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        match term {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn spawn_fleet(stack: &Stack, opts: &DemoOptions) -> Result<FleetHandle, DemoError> {
    let mut profile = Profile {
        id_prefix: "dev".into(),
        connects_per_second: 500,
        arches: vec![("esp32".into(), 1), ("armv7".into(), 1)],
        labels: [
            (
                "customer".to_string(),
                CUSTOMERS.iter().map(|s| s.to_string()).collect(),
            ),
            ("line".to_string(), vec!["1".into(), "2".into()]),
        ]
        .into(),
        versions: first_versions(),
        ..Profile::default()
    };
    // Failures to show the gates at work, and busy devices that defer.
    profile.faults.install_failure = 0.01;
    profile.faults.boot_failure = 0.01;
    profile.faults.busy_deferral = 0.03;
    profile.faults.busy_deferral_secs = 3;
    profile.faults.block_loss = 0.02;
    profile.faults.bad_build = Some("1.2.0".into());
    profile.faults.bad_build_failure = 0.33;
    let credential = if opts.tls {
        "certificate (CN = its id), over mutual TLS"
    } else {
        "password"
    };
    say(
        opts,
        format!(
            "2. provisioning {} simulated devices, each with its own {credential}, and connecting them (3 customers x 2 lines, esp32 and armv7; 2% block loss, 1% install and 1% boot failures, 3% busy)",
            opts.devices
        ),
    );
    let mut cfg = stack.fleet(opts.devices, profile);
    stack.provision(&mut cfg).await?;
    Ok(Fleet::spawn(cfg)?)
}

/// What the demo's devices run when they first boot (the fleet's and the
/// factory line's): the releases the demo pushes are newer.
fn first_versions() -> BTreeMap<ComponentName, Vec<String>> {
    [
        (component("main"), vec!["1.0.0".to_string()]),
        (component("dashboard"), vec!["2.0.0".to_string()]),
        (component("settings"), vec!["1.0.0".to_string()]),
    ]
    .into()
}

fn component(s: &str) -> ComponentName {
    ComponentName::new(s).expect("a valid component name")
}

async fn wait_registered(
    stack: &Stack,
    fleet: &FleetHandle,
    opts: &DemoOptions,
) -> Result<(), DemoError> {
    let pb = bar(opts, opts.devices as u64, "devices registered");
    stack
        .wait_registered(opts.devices, Duration::from_secs(60), |n| {
            pb.set_position(n as u64);
            pb.set_message(format!(
                "devices registered ({} connected)",
                fleet.stats().connected
            ));
        })
        .await
        .map_err(|e| DemoError::Stalled(e.to_string()))?;
    pb.finish_and_clear();
    say(
        opts,
        format!(
            "   {} devices connected and said Hello (arch, versions, labels)",
            opts.devices
        ),
    );
    Ok(())
}

async fn put_group(
    stack: &Stack,
    name: &str,
    selector: Option<String>,
    members: Option<Vec<schemas::DeviceId>>,
) -> Result<(), DemoError> {
    stack
        .ops()
        .call_ok::<serde_json::Value>(Command::GroupPut {
            name: GroupName::new(name).expect("a valid group name"),
            selector,
            members,
        })
        .await?;
    Ok(())
}

async fn push(
    stack: &Stack,
    kind: Kind,
    comp: &str,
    version: &str,
    arch: &str,
    size: usize,
) -> Result<ArtifactId, DemoError> {
    let image = crate::faults::image(&format!("{comp}-{version}-{arch}"), size);
    let spec = ReleaseSpec::new(kind, component(comp), version, arch, bridge::unix_now());
    Ok(stack.push(&image, &spec).await?)
}

/// The same image as [`push`] made for this version, signed again as a
/// rollback release (`allow_downgrade`) under its own artifact id.
async fn push_rollback(
    stack: &Stack,
    comp: &str,
    version: &str,
    arch: &str,
    size: usize,
) -> Result<ArtifactId, DemoError> {
    let image = crate::faults::image(&format!("{comp}-{version}-{arch}"), size);
    let mut spec = ReleaseSpec::new(
        Kind::Firmware,
        component(comp),
        version,
        arch,
        bridge::unix_now(),
    );
    spec.allow_downgrade = true;
    spec.artifact = Some(
        ArtifactId::new(format!("{comp}-{version}-{arch}-rollback")).expect("a valid artifact id"),
    );
    Ok(stack.push(&image, &spec).await?)
}

async fn fleet_versions(
    stack: &Stack,
) -> Result<BTreeMap<String, BTreeMap<String, usize>>, DemoError> {
    let mut out: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for d in stack.ops().all_devices(None).await? {
        for (comp, ver) in &d.record.versions {
            *out.entry(comp.to_string())
                .or_default()
                .entry(ver.to_string())
                .or_default() += 1;
        }
    }
    Ok(out)
}

fn print_summary(s: &DemoSummary) {
    let over = if s.tls { ", mutual TLS" } else { "" };
    println!(
        "\nSummary ({} devices{over}, {:.0} s)\n",
        s.devices, s.seconds
    );
    if let Some(url) = &s.dashboard {
        println!("Dashboard: {url}\n");
    }
    println!(
        "{:<28} {:<9} {:<10} {:>8} {:>8} {:>7} {:>6} {:>8} {:>6}",
        "campaign", "kind", "state", "targeted", "success", "failed", "n/a", "pending", "secs"
    );
    for c in &s.campaigns {
        let name = if c.emergency {
            format!("{} (!)", c.campaign)
        } else {
            c.campaign.to_string()
        };
        println!(
            "{:<28} {:<9} {:<10} {:>8} {:>8} {:>7} {:>6} {:>8} {:>6.1}",
            name,
            c.kind,
            c.state,
            c.targeted,
            c.success,
            c.failure,
            c.not_applicable,
            c.no_report,
            c.seconds
        );
        if !c.errors.is_empty() {
            let e: Vec<String> = c.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
            println!("{:<28}   errors: {}", "", e.join(", "));
        }
    }
    println!("\nInstalled versions now:");
    for (comp, vs) in &s.versions {
        let v: Vec<String> = vs.iter().map(|(k, n)| format!("{k} on {n}")).collect();
        println!("  {comp:<10} {}", v.join(", "));
    }
    println!(
        "\nStatus reports: {} sent by devices, {} acknowledged as durably stored.",
        s.statuses_sent, s.statuses_acked
    );
    println!(
        "Devices with their own credentials: {}; logins, publishes and requests the broker and bridge refused: {}.",
        s.provisioned, s.identity_refused
    );
    if s.tls {
        println!(
            "TLS: {} device logins by certificate over mutual TLS; {} logins by password (the bridge's and the operator's, on loopback).",
            s.certificate_logins, s.password_logins
        );
    }
    if let Some(d) = &s.data_dir {
        println!("The bridge's data is kept in {}.", d.display());
    }
}

pub(crate) fn bar(opts: &DemoOptions, len: u64, msg: &str) -> ProgressBar {
    if opts.json || !opts.progress {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("   [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}
