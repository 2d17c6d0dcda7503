//! What keeping an external Mosquitto current costs per change
//! (docs/operations.md "Running against Mosquitto securely"): N devices
//! (default 10,000), each in a group (a `user` section each), rendered,
//! written and reloaded by a real /usr/sbin/mosquitto; then one device is
//! added and the time from SIGHUP to its first accepted login is taken,
//! which is when Mosquitto has reparsed the files.
//!
//! ```text
//! cargo run -p ota-tests --example mosquitto_reload -- [N] [ROUNDS]
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
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        ms(&v[v.len() / 2])
    };
    println!(
        "| {n} devices | files {:.1} MiB | render {:.0} ms | render + write {:.0} ms | SIGHUP to first login {:.0} ms |",
        bytes as f64 / (1024.0 * 1024.0),
        ms(&render),
        median(&mut writes),
        median(&mut reloads),
    );
    Ok(())
}
