//! PROTOCOL.md E2 against the real `ota serve`, on a Mosquitto without
//! ACLs: anonymous, every client on one shared login, so anyone may
//! publish anything anywhere, retained.
//!
//! - Devices provisioned with the director key, on a live campaign (wave
//!   1 running, its canary putting it off): a forged `paused`, a forged
//!   cohort raise, a forged emergency and a genuine signed announcement
//!   replayed as an emergency change nothing on any device; each is
//!   refused for its E2 reason, the bridge overwrites its retained topics
//!   within seconds, and the real campaign then completes.
//! - A v1 device without the director key believes a forged `aborted`
//!   and reports `cancelled`: the bridge never aborted, so the gate counts
//!   an anomaly, not a not-applicable, and the campaign halts with a
//!   reason that says so instead of ending "completed" with no success.
//!
//! The other E2 attacks (an older announcement replayed, one moved to
//! another group's topic, forged StatusAck and Membership, forged replies,
//! commands for another bridge) are `bridge/tests/campaign_director.rs`
//! and `bridge/tests/ops_signed.rs`.

mod cli_support;
mod serve_support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bridge::campaign::gate::{HaltReason, Phase};
use bridge::campaign::view::CampaignStatus;
use cli_support::ota_ok as ota;
use device_sim::agent::{DeferPolicy, SharedImages};
use harness::mosquitto::Mosquitto;
use harness::raw::{Got, RawClient};
use schemas::control::{self, DirectorKeys, Expect, Stamp};
use schemas::msg::{Announcement, CampaignState, Manifest, Status, StatusState, WireMessage};
use schemas::ops::Command as Op;
use schemas::CampaignId;
use serve_support::*;

/// The one login every client of this broker shares (Mosquitto without a
/// password file takes any).
const SHARED: &str = "shared-login";

/// `ota.toml` for `ota serve` on the external, ACL-less Mosquitto at
/// `port`, with the operator, release and director keys in `dir`.
fn config(dir: &Path, port: u16) -> PathBuf {
    open_config(
        dir,
        &format!("mode = \"external\"\nurl = \"mqtt://127.0.0.1:{port}\"\n"),
    )
}

/// `ota serve` on its own ACL-less Mosquitto, an operator client, and
/// the release `fw-2-esp32` (main 2.0.0) pushed.
struct Served {
    port: u16,
    dir: tempfile::TempDir,
    client: bridge::client::OpsClient,
    release: schemas::keys::SigningKey,
    _serve: Serve,
    _mosquitto: Mosquitto,
}

impl Served {
    async fn start() -> Served {
        let mosquitto = Mosquitto::start().await.expect("mosquitto starts");
        let port = mosquitto.port;
        let dir = tempfile::tempdir().unwrap();
        let operator = operator_key(dir.path());
        let release = release_key(dir.path(), 11);
        let serve = Serve::start(&config(dir.path(), port));
        let client = wait_ready(port, &operator).await;
        push_firmware(&client, &release, "fw-2-esp32", "2.0.0", false).await;
        Served {
            port,
            dir,
            client,
            release,
            _serve: serve,
            _mosquitto: mosquitto,
        }
    }
}

/// `ota campaign create` of fw-2 (the release above) with these waves,
/// judged from one report, then `ota campaign start`.
async fn create_and_start(dir: &Path, waves: &[&str]) {
    let mut args = vec![
        "campaign",
        "create",
        "--id",
        "fw-2",
        "--release",
        "fw-2-esp32",
    ];
    for w in waves {
        args.extend(["--wave", w]);
    }
    args.extend(["--min-sample", "1", "--wave-timeout", "120s"]);
    ota(dir, &args).await;
    ota(dir, &["campaign", "start", "fw-2"]).await;
}

/// Puts every campaign off while `hold` is set, looking again every
/// 200 ms: the test decides when the canary goes ahead.
struct Hold(Arc<AtomicBool>);

impl DeferPolicy for Hold {
    fn defer(&mut self, _now_ms: u64, _c: &CampaignId, _m: &Manifest) -> Option<u64> {
        self.0.load(Ordering::SeqCst).then_some(200)
    }
}

/// What a watcher saw, kept: `find` looks at it all, waiting for more.
struct Eyes {
    client: RawClient,
    seen: Vec<(String, Vec<u8>)>,
}

impl Eyes {
    async fn open(port: u16, name: &str, filters: &[&str]) -> Eyes {
        let mut client = RawClient::login(port, name, SHARED).await.expect("login");
        let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        let (_, before) = client.subscribe(&filters).await.expect("subscribe");
        let mut eyes = Eyes {
            client,
            seen: Vec::new(),
        };
        eyes.keep(before);
        eyes
    }

    fn keep(&mut self, got: Vec<Got>) {
        for g in got {
            if let Got::Publish { topic, payload } = g {
                self.seen.push((topic, payload));
            }
        }
    }

    /// The first publish `pick` takes (old or new).
    async fn find<T>(&mut self, what: &str, pick: impl Fn(&str, &[u8]) -> Option<T>) -> T {
        self.find_from(what, 0, pick).await.1
    }

    /// The first publish from the `from`-th seen on that `pick` takes, and
    /// its index.
    async fn find_from<T>(
        &mut self,
        what: &str,
        from: usize,
        pick: impl Fn(&str, &[u8]) -> Option<T>,
    ) -> (usize, T) {
        let mut at = from;
        within(what, async {
            loop {
                while at < self.seen.len() {
                    let (t, p) = &self.seen[at];
                    at += 1;
                    if let Some(v) = pick(t, p) {
                        return (at - 1, v);
                    }
                }
                match self.client.next().await {
                    Ok(Got::Publish { topic, payload }) => self.seen.push((topic, payload)),
                    Ok(Got::Closed(why)) => panic!("the watcher's connection ended: {why}"),
                    Ok(_) => {}
                    Err(e) => {
                        let topics: Vec<&str> = self.seen.iter().map(|(t, _)| t.as_str()).collect();
                        panic!("waiting for {what}: {e}; seen: {topics:?}")
                    }
                }
            }
        })
        .await
    }

    /// Every Status seen so far (what came is read first), by device.
    fn statuses(&mut self) -> Vec<(String, Status)> {
        let got = self.client.drain();
        self.keep(got);
        self.seen
            .iter()
            .filter_map(|(t, p)| {
                let dev = t.strip_prefix("ota/v1/devices/")?.strip_suffix("/status")?;
                Some((dev.to_string(), Status::decode(p).ok()?))
            })
            .collect()
    }
}

fn status_of<'a>(
    statuses: &'a [(String, Status)],
    device: &'a str,
) -> impl Iterator<Item = &'a Status> + 'a {
    statuses
        .iter()
        .filter(move |(d, _)| d == device)
        .map(|(_, s)| s)
}

async fn campaign(client: &bridge::client::OpsClient, id: &str) -> CampaignStatus {
    client
        .call_ok(Op::CampaignStatus {
            id: CampaignId::new(id).expect("an id"),
        })
        .await
        .expect("campaign status")
}

async fn wait_campaign(
    client: &bridge::client::OpsClient,
    id: &str,
    what: &str,
    done: impl Fn(&CampaignStatus) -> bool,
) -> CampaignStatus {
    within(what, async {
        loop {
            let s = campaign(client, id).await;
            if done(&s) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// True when `payload` on `topic` is the director's own (E2 checks pass).
fn directors(topic: &str, payload: &[u8]) -> bool {
    let keys = DirectorKeys::new([director().verifying_key()]);
    let expect = Expect {
        topic,
        last_counter: None,
        now: None,
    };
    control::verify::<Announcement>(payload, expect, &keys).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_pause_cohort_and_emergency_on_a_live_campaign_change_nothing() {
    let served = Served::start().await;
    let Served {
        port,
        client,
        release,
        ..
    } = &served;
    let (port, d) = (*port, served.dir.path());

    let canary_topic = "ota/v1/groups/canary/campaign";
    let acme_topic = "ota/v1/groups/acme/campaign";
    let mut eyes = Eyes::open(
        port,
        "eyes",
        &["ota/v1/groups/+/campaign", "ota/v1/devices/+/status"],
    )
    .await;
    let evil = RawClient::login(port, "evil", SHARED).await.expect("login");

    // Three devices provisioned with the director key; the canary puts
    // the campaign off until the test lets it go.
    let hold = Arc::new(AtomicBool::new(true));
    let drops = Drops::default();
    let images = SharedImages::new();
    let opts = |policy: Option<Box<dyn DeferPolicy>>| AgentOpts {
        login: Some((SHARED.into(), SHARED.into())),
        directors: vec![director().verifying_key()],
        policy,
        drops: drops.clone(),
    };
    let mut devices = vec![agent_with(
        "canary-1",
        port,
        release,
        images.clone(),
        ("customer", "canary"),
        opts(Some(Box::new(Hold(hold.clone())))),
    )];
    for id in ["acme-1", "acme-2"] {
        devices.push(agent_with(
            id,
            port,
            release,
            images.clone(),
            ("customer", "acme"),
            opts(None),
        ));
    }
    wait_registered(client, 3).await;
    for g in ["canary", "acme"] {
        let selector = format!("customer={g}");
        ota(d, &["group", "put", g, "--selector", &selector]).await;
    }
    create_and_start(d, &["canary=100%", "acme=100%"]).await;

    // Wave 1 is live: the canary's announcement is active at 10000, acme
    // has none yet, and the canary has put it off.
    let genuine = |topic: &'static str, cohort: u16| {
        move |t: &str, p: &[u8]| {
            let a = Announcement::decode(p).ok()?;
            (t == topic && a.state == CampaignState::Active && a.cohort == cohort)
                .then(|| (p.to_vec(), a))
        }
    };
    let (canary_signed, canary_ann) = eyes
        .find("canary's active announcement", genuine(canary_topic, 10000))
        .await;
    eyes.find("the canary to put it off", |t, p| {
        let s = Status::decode(p).ok()?;
        (t == "ota/v1/devices/canary-1/status" && s.state == StatusState::Deferred).then_some(())
    })
    .await;

    // 1. A forged `paused` for the canary's live campaign (no auth).
    let mut paused = canary_ann.clone();
    paused.state = CampaignState::Paused;
    evil.publish(canary_topic, true, paused.encode())
        .await
        .unwrap();
    // 2. acme's cohort raised from 0 (no announcement) to 10000, signed
    //    by a key of the attacker's.
    let stranger = schemas::keys::SigningKey::from_bytes(&[0xee; 32]);
    let raised = canary_ann.clone();
    let stamp = Stamp {
        counter: u64::MAX,
        issued: 0,
        expires: u64::MAX,
    };
    let raised = control::sign(&raised, acme_topic, stamp, &stranger);
    evil.publish(acme_topic, true, raised).await.unwrap();
    // 3. A forged emergency of the genuine signed release on acme's
    //    emergency topic, for a campaign the bridge never heard of.
    let mut emergency = canary_ann.clone();
    emergency.campaign = CampaignId::new("evil-1").unwrap();
    emergency.emergency = true;
    evil.publish("ota/v1/groups/acme/emergency", true, emergency.encode())
        .await
        .unwrap();
    // 4. The canary's genuine signed announcement replayed as the
    //    fleet-wide emergency.
    evil.publish("ota/v1/emergency", true, canary_signed.clone())
        .await
        .unwrap();

    within("every forgery refused for its E2 reason", async {
        loop {
            let c = |dev: &str, why: &str| drops.count(dev, why) >= 1;
            let acme = ["acme-1", "acme-2"]
                .iter()
                .all(|a| c(a, "unknown_key") && c(a, "missing_auth") && c(a, "wrong_topic"));
            if acme && c("canary-1", "missing_auth") && c("canary-1", "wrong_topic") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    // Nothing changed: wave 1 runs, no acme device took part, nothing ran
    // the forged emergency, the canary only accepted it and put it off.
    let s = campaign(client, "fw-2").await;
    assert!(
        matches!(s.phase, Phase::Running { wave: 0, .. }),
        "{:?}",
        s.phase
    );
    let statuses = eyes.statuses();
    for a in ["acme-1", "acme-2"] {
        assert_eq!(status_of(&statuses, a).count(), 0, "{a} reported");
    }
    let canary: Vec<StatusState> = status_of(&statuses, "canary-1").map(|s| s.state).collect();
    assert_eq!(
        canary,
        [StatusState::Accepted, StatusState::Deferred],
        "the canary only put it off"
    );

    // The bridge overwrote its retained topics within seconds: after each
    // forgery, the director's own announcement again on the canary's
    // topic, and acme's (where it announced nothing yet) withdrawn.
    let forged_at = |topic: &'static str| {
        move |t: &str, p: &[u8]| (t == topic && !p.is_empty() && !directors(t, p)).then_some(())
    };
    tokio::time::timeout(Duration::from_secs(5), async {
        let (i, ()) = eyes
            .find_from("the forged pause", 0, forged_at(canary_topic))
            .await;
        eyes.find_from("the canary's topic repaired", i + 1, |t, p| {
            (t == canary_topic && directors(t, p)).then_some(())
        })
        .await;
        let (i, ()) = eyes
            .find_from("the forged raise", 0, forged_at(acme_topic))
            .await;
        eyes.find_from("acme's topic withdrawn", i + 1, |t, p| {
            (t == acme_topic && p.is_empty()).then_some(())
        })
        .await;
    })
    .await
    .expect("the bridge repairs its retained announcements within 5 s");

    // The real campaign goes on: the canary, then acme, all installed.
    hold.store(false, Ordering::SeqCst);
    let done = wait_campaign(client, "fw-2", "fw-2 to complete", |s| {
        s.summary.state == "completed"
    })
    .await;
    assert_eq!(done.current.as_ref().map(|c| c.counts.success), Some(3));
    let statuses = eyes.statuses();
    assert!(
        statuses
            .iter()
            .all(|(_, s)| s.campaign.as_ref().map(|c| c.as_str()) != Some("evil-1")),
        "a device ran the forged emergency: {statuses:?}"
    );
    assert!(drops.all().iter().all(|(_, why)| *why != "bad_signature"));
    for t in devices {
        t.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_abort_believed_by_a_v1_device_halts_the_campaign_as_an_anomaly() {
    let served = Served::start().await;
    let Served {
        port,
        client,
        release,
        ..
    } = &served;
    let (port, d) = (*port, served.dir.path());
    let topic = "ota/v1/groups/legacy/campaign";
    let mut eyes = Eyes::open(port, "eyes", &[topic, "ota/v1/devices/+/status"]).await;
    let evil = RawClient::login(port, "evil", SHARED).await.expect("login");

    // A device of protocol v1: no director key, it believes the broker.
    let hold = Arc::new(AtomicBool::new(true));
    let device = agent_with(
        "legacy-1",
        port,
        release,
        SharedImages::new(),
        ("customer", "legacy"),
        AgentOpts {
            login: Some((SHARED.into(), SHARED.into())),
            policy: Some(Box::new(Hold(hold.clone()))),
            ..AgentOpts::default()
        },
    );
    wait_registered(client, 1).await;
    ota(
        d,
        &["group", "put", "legacy", "--selector", "customer=legacy"],
    )
    .await;
    create_and_start(d, &["legacy=100%"]).await;
    let active = eyes
        .find("the active announcement", |t, p| {
            let a = Announcement::decode(p).ok()?;
            (t == topic && a.state == CampaignState::Active).then_some(a)
        })
        .await;
    eyes.find("the device to put it off", |t, p| {
        let s = Status::decode(p).ok()?;
        (t == "ota/v1/devices/legacy-1/status" && s.state == StatusState::Deferred).then_some(())
    })
    .await;

    // The forged abort: the device believes it and cancels.
    let mut aborted = active;
    aborted.state = CampaignState::Aborted;
    evil.publish(topic, true, aborted.encode()).await.unwrap();
    eyes.find("the device to cancel", |t, p| {
        let s = Status::decode(p).ok()?;
        (t == "ota/v1/devices/legacy-1/status" && s.state == StatusState::Cancelled).then_some(())
    })
    .await;

    // The bridge never aborted: an anomaly, a failure, a halt that says so.
    let s = wait_campaign(client, "fw-2", "fw-2 to halt", |s| {
        matches!(s.phase, Phase::Halted { .. })
    })
    .await;
    let Phase::Halted { reason, .. } = s.phase else {
        unreachable!()
    };
    assert!(
        matches!(
            reason,
            HaltReason::FailureRate { anomaly: 1, .. } | HaltReason::NoSuccess { anomaly: 1, .. }
        ),
        "{reason:?}"
    );
    let counts = s.current.as_ref().expect("counts").counts;
    assert_eq!(
        (counts.anomaly, counts.failure, counts.not_applicable),
        (1, 1, 0)
    );
    // What the operator reads: the text and the JSON.
    let text = ota(d, &["campaign", "status", "fw-2"]).await.stdout;
    assert!(text.contains("HALTED"), "{text}");
    assert!(text.contains("abort this bridge never announced"), "{text}");
    assert!(text.contains("ANOMALY"), "{text}");
    let json = ota(d, &["campaign", "status", "fw-2", "--json"])
        .await
        .stdout;
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(v["state"], "halted", "{json}");
    assert_eq!(v["current"]["counts"]["anomaly"], 1, "{json}");
    device.abort();
}
