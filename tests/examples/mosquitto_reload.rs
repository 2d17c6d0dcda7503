//! What keeping an external Mosquitto current costs per change
//! (docs/operations.md "Running against Mosquitto securely"): N devices
//! (default 10,000), each in a group (a `user` section each), rendered,
//! written and reloaded by a real /usr/sbin/mosquitto; then one device is
//! added and the time from SIGHUP to its first accepted login is taken,
//! which is when Mosquitto has reparsed the files.
//!
//! With CONNECTED > 0, that many of the N devices first log in, each with
//! its own password, 200 at a time (the connect storm with per-device
//! passwords and ACLs, timed), stay connected through the rounds, and are
//! counted after them: Mosquitto must keep every one. The same storm
//! against an anonymous Mosquitto (no password file, no ACL) is timed
//! first, for the cost of the checks.
//!
//! ```text
//! cargo run -p ota-tests --example mosquitto_reload -- [N] [ROUNDS] [CONNECTED]
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bridge::identity::{
    mosquitto, Admission, CredentialRecord, Identity, IdentityConfig, Standing,
};
use harness::mosquitto::Mosquitto;
use harness::raw::RawClient;
use schemas::msg::{Membership, WireMessage};
use schemas::topic::{Topic, Topics};
use schemas::{DeviceId, GroupName};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10_000);
    let rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5);
    let connected: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(0);
    anyhow::ensure!(
        connected <= n,
        "CONNECTED ({connected}) is more than N ({n})"
    );
    let t = Topics::default();
    let config = IdentityConfig {
        topics: t.clone(),
        bridge_client_id: "ota-bridge".into(),
        bridge_login: Some(("ota-bridge".into(), "bridge-secret".into())),
        operators: BTreeMap::from([("alice".into(), "alice-secret".into())]),
        admission: Admission::Provisioned,
        registrations_per_minute: 0,
    };
    let records: Vec<CredentialRecord> = (0..n)
        .map(|i| {
            let id = DeviceId::new(format!("dev-{i:06}")).expect("an id");
            CredentialRecord::new(id, "pw", Standing::Active, 1)
        })
        .collect();
    let identity = Identity::new(config, &records);
    let member = Membership {
        groups: vec![GroupName::new("acme")?],
    }
    .encode();
    for r in &records {
        identity.observe(&Topic::Groups(r.id.clone()), &member);
    }
    let started = Instant::now();
    let files = identity.mosquitto_files();
    let render = started.elapsed();
    let bytes: usize = files.each().iter().map(|(_, text)| text.len()).sum();
    let (m, _service) = Mosquitto::start_secured(&files.each(), |dir, dp, sp| {
        mosquitto::conf(dir, ("127.0.0.1", dp), ("127.0.0.1", sp))
    })
    .await?;
    let dir = m.dir().to_path_buf();
    harness::mosquitto::share_with_mosquitto(&dir)?;

    let ids: Vec<String> = records
        .iter()
        .take(connected)
        .map(|r| r.id.to_string())
        .collect();
    let mut online = Vec::new();
    if connected > 0 {
        let anonymous = Mosquitto::start().await?;
        let (clients, took) = storm(anonymous.port, &ids, None).await?;
        println!(
            "| storm, anonymous Mosquitto | {connected} logins | {:.2} s | {:.0}/s |",
            took.as_secs_f64(),
            connected as f64 / took.as_secs_f64()
        );
        drop(clients);
        drop(anonymous);
        let (clients, took) = storm(m.port, &ids, Some("pw")).await?;
        println!(
            "| storm, per-device passwords and ACLs | {connected} logins | {:.2} s | {:.0}/s |",
            took.as_secs_f64(),
            connected as f64 / took.as_secs_f64()
        );
        online = clients;
    }

    let mut writes = Vec::new();
    let mut reloads = Vec::new();
    for round in 0..rounds {
        let id = DeviceId::new(format!("new-{round}"))?;
        let pw = schemas::provisioning::generate_password();
        identity.upsert(&CredentialRecord::new(id.clone(), &pw, Standing::Active, 1));
        let started = Instant::now();
        let files = identity.mosquitto_files();
        bridge::mosquitto::dir::write(&dir, &files, None)?;
        writes.push(started.elapsed());
        let started = Instant::now();
        m.reload().await?;
        loop {
            if RawClient::login(m.port, id.as_str(), &pw).await.is_ok() {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                anyhow::bail!("{id} still refused 30 s after SIGHUP");
            }
        }
        reloads.push(started.elapsed());
    }
    // Every client still connected after the reloads: none was closed.
    let mut kept = 0;
    for c in &mut online {
        let closed = c
            .drain()
            .iter()
            .any(|g| matches!(g, harness::raw::Got::Closed(_)));
        kept += usize::from(!closed);
    }
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        ms(&v[v.len() / 2])
    };
    println!(
        "| {n} devices, {connected} connected | files {:.1} MiB | render {:.0} ms | render + write {:.0} ms | SIGHUP to first login {:.0} ms | still connected {kept}/{connected} |",
        bytes as f64 / (1024.0 * 1024.0),
        ms(&render),
        median(&mut writes),
        median(&mut reloads),
    );
    anyhow::ensure!(
        kept == connected,
        "the reloads closed {} connections",
        connected - kept
    );
    Ok(())
}

/// Logs every id in, 200 at a time (with `password`, or anonymously), and
/// returns the clients and the time from the first CONNECT to the last
/// CONNACK.
async fn storm(
    port: u16,
    ids: &[String],
    password: Option<&str>,
) -> anyhow::Result<(Vec<RawClient>, Duration)> {
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(200));
    let started = Instant::now();
    let mut logins = tokio::task::JoinSet::new();
    for id in ids {
        let id = id.clone();
        let password = password.map(str::to_string);
        let permit = gate.clone().acquire_owned().await?;
        logins.spawn(async move {
            let _permit = permit;
            match password {
                Some(pw) => RawClient::login(port, &id, &pw).await,
                None => {
                    let mut o = rumqttc::MqttOptions::new(&id, "127.0.0.1", port);
                    o.set_keep_alive(Duration::from_secs(60));
                    RawClient::connect(o).await
                }
            }
            .map_err(|e| anyhow::anyhow!("{id}: {e}"))
        });
    }
    let mut clients = Vec::with_capacity(ids.len());
    while let Some(c) = logins.join_next().await {
        clients.push(c??);
    }
    Ok((clients, started.elapsed()))
}
