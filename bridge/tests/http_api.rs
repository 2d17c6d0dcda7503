//! The read-only HTTP listener, end to end: a real broker, bridge and
//! device agents run a campaign; the JSON API answers what the CLI's
//! `--json` shows, `/metrics` parses as Prometheus text and holds the
//! bridge's own counters, nothing on the listener changes state, and it
//! stops with the bridge. The attacker's side: reads without the right
//! token are refused (401), counted, and the bridge keeps serving.

mod blocks_common;
mod campaign_common;
mod common;
mod http_common;

use std::net::SocketAddr;

use bridge::config::http::{HttpConfig, TokenHash};
use campaign_common::*;
use common::within;
use http_common::{get, outside_address, request, two_waves, Rollout, Stream};
use prometheus_parse::{Scrape, Value};
use schemas::ops::Command;
use serde_json::{json, Value as Json};

fn parse_metrics(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("/metrics does not parse ({e}):\n{text}"))
}

fn sample(s: &Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
    let found = s
        .samples
        .iter()
        .find(|x| x.metric == name && label.is_none_or(|(k, v)| x.labels.get(k) == Some(v)));
    match found.map(|x| &x.value) {
        Some(Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => *v,
        other => panic!("no sample {name} {label:?}: {other:?}"),
    }
}

fn without_now(mut v: Json) -> Json {
    if let Some(o) = v.as_object_mut() {
        o.remove("now");
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_and_metrics_show_what_the_cli_shows() {
    let devices = (1..=2)
        .map(|i| DeviceOpts::new(format!("canary-{i}"), "canary"))
        .chain((1..=3).map(|i| DeviceOpts::new(format!("acme-{i}"), "acme")))
        .collect();
    let Rollout {
        mut stack,
        ops,
        addr,
        mut devices,
    } = Rollout::start("2.0.0", devices).await;
    // The bridge's events, as they happen.
    let mut events = Stream::open(addr, "/api/v1/events").await;
    events.until("content-type: text/event-stream").await;
    two_waves(&ops, "fw-2", "2.0.0", 30).await;
    wait_state(&ops, "fw-2", "completed", LONG).await;
    let seen = events.until("\"kind\":\"campaign.completed\"").await;
    assert!(seen.contains("event: ota\ndata: {"), "{seen}");
    assert!(seen.contains("\"kind\":\"campaign.wave_passed\""), "{seen}");

    // One campaign: exactly `ota campaign status fw-2 --json` (but the clock).
    let api = get(addr, "/api/v1/campaigns/fw-2", &[]).await;
    assert_eq!(api.status, 200, "{}", api.text());
    assert!(api
        .header("content-type")
        .unwrap_or_default()
        .starts_with("application/json"));
    assert_eq!(api.header("cache-control"), Some("no-store"));
    let cli: Json = ops
        .call_ok(Command::CampaignStatus {
            id: "fw-2".parse().unwrap(),
        })
        .await
        .expect("campaign status");
    assert_eq!(without_now(api.json()), without_now(cli.clone()));
    assert_eq!(api.json()["plan"].as_array().map(Vec::len), Some(2));
    assert_eq!(api.json()["counts"]["success"], json!(5), "{}", api.text());
    // The list: `ota campaign list --json`.
    let list = get(addr, "/api/v1/campaigns", &[]).await;
    let cli_list: Json = ops
        .call_ok(Command::CampaignList)
        .await
        .expect("campaign list");
    assert_eq!(list.json(), cli_list);

    // The fleet's counts.
    let fleet = get(addr, "/api/v1/fleet", &[]).await.json();
    assert_eq!(fleet["registered"], json!(5), "{fleet}");
    assert_eq!(fleet["by_arch"]["esp32"]["devices"], json!(5), "{fleet}");
    let main_versions: u64 = fleet["by_version"]["main"]
        .as_object()
        .expect("main's versions")
        .values()
        .filter_map(Json::as_u64)
        .sum();
    assert_eq!(main_versions, 5, "{fleet}");
    assert_eq!(fleet["groups"], json!(2));

    // Devices: pages, by group and by labels; bad parameters say which.
    let p1 = get(addr, "/api/v1/devices?limit=2", &[]).await.json();
    assert_eq!(p1["total"], json!(5));
    let ids = |p: &Json| -> Vec<String> {
        p["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .map(|d| d["id"].as_str().expect("an id").to_string())
            .collect()
    };
    assert_eq!(ids(&p1), ["acme-1", "acme-2"]);
    assert_eq!(p1["next"], json!("acme-2"));
    let p2 = get(addr, "/api/v1/devices?limit=2&after=acme-2", &[])
        .await
        .json();
    assert_eq!(ids(&p2), ["acme-3", "canary-1"]);
    let canary = get(addr, "/api/v1/devices?label=customer%3Dcanary", &[])
        .await
        .json();
    assert_eq!(ids(&canary), ["canary-1", "canary-2"]);
    let acme = get(addr, "/api/v1/devices?group=acme&limit=500", &[])
        .await
        .json();
    assert_eq!(acme["total"], json!(3));
    assert_eq!(acme["devices"][0]["groups"], json!(["acme"]));
    let bad = get(addr, "/api/v1/devices?label=%28", &[]).await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(
        bad.json()["error"]
            .as_str()
            .unwrap_or_default()
            .contains("label"),
        "{}",
        bad.text()
    );
    assert_eq!(
        get(addr, "/api/v1/devices?group=nope", &[]).await.status,
        404
    );
    let total = |q: &str| {
        let q = q.to_string();
        async move { get(addr, &format!("/api/v1/devices?{q}"), &[]).await.json()["total"].clone() }
    };
    assert_eq!(total("arch=esp32").await, json!(5));
    assert_eq!(total("arch=armv7").await, json!(0));
    assert_eq!(total("state=online").await, json!(5));
    assert_eq!(total("state=offline").await, json!(0));
    assert_eq!(total("version=main:2.0.0&group=canary").await, json!(2));
    assert_eq!(total("version=main:1.0.0").await, json!(0));
    let bad = get(addr, "/api/v1/devices?state=asleep", &[]).await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(bad.text().contains("state"), "{}", bad.text());
    // Groups and artifacts: `group list --json`, `artifact list --json`.
    let cli: Json = ops.call_ok(Command::GroupList).await.expect("group list");
    assert_eq!(get(addr, "/api/v1/groups", &[]).await.json(), cli);
    let cli: Json = ops
        .call_ok(Command::ArtifactList)
        .await
        .expect("artifact list");
    let api = get(addr, "/api/v1/artifacts", &[]).await.json();
    assert_eq!(api, cli);
    assert_eq!(
        api["artifacts"][0]["artifact"],
        json!("fw-2.0.0-esp32"),
        "{api}"
    );
    let missing = get(addr, "/api/v1/campaigns/nope", &[]).await;
    assert_eq!(missing.status, 404, "{}", missing.text());
    assert_eq!(get(addr, "/api/v1/nothing", &[]).await.status, 404);

    // /metrics: the bridge's own counters, read between two snapshots.
    let before = stack.metrics();
    let blocks_before = stack.bridge().blocks().metrics().snapshot();
    let m = get(addr, "/metrics", &[]).await;
    let after = stack.metrics();
    let blocks_after = stack.bridge().blocks().metrics().snapshot();
    assert_eq!(m.status, 200);
    assert_eq!(
        m.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let s = parse_metrics(&m.text());
    let between = |name: &str, v: f64, lo: u64, hi: u64| {
        assert!(
            (lo as f64..=hi as f64).contains(&v),
            "{name} = {v}, the bridge counted {lo}..={hi}"
        )
    };
    let stored = sample(&s, "ota_statuses_stored_total", None);
    between(
        "statuses stored",
        stored,
        before.statuses_stored,
        after.statuses_stored,
    );
    assert!(stored > 0.0);
    between(
        "acks",
        sample(&s, "ota_status_acks_published_total", None),
        before.acks_published,
        after.acks_published,
    );
    between(
        "commands accepted",
        sample(&s, "ota_commands_accepted_total", None),
        before.commands_accepted,
        after.commands_accepted,
    );
    let egress = sample(
        &s,
        "ota_block_egress_bytes_total",
        Some(("delivery", "broadcast")),
    ) + sample(
        &s,
        "ota_block_egress_bytes_total",
        Some(("delivery", "unicast")),
    );
    between(
        "egress",
        egress,
        blocks_before.egress_bytes(),
        blocks_after.egress_bytes(),
    );
    assert!(egress > 0.0);
    assert_eq!(sample(&s, "ota_devices_registered", None), 5.0);
    assert_eq!(
        sample(
            &s,
            "ota_devices_registered_by_arch",
            Some(("arch", "esp32"))
        ),
        5.0
    );
    assert_eq!(
        sample(&s, "ota_campaigns", Some(("state", "completed"))),
        1.0
    );
    assert_eq!(sample(&s, "ota_campaigns", Some(("state", "running"))), 0.0);
    assert_eq!(sample(&s, "ota_core_answering", None), 1.0);
    assert_eq!(
        sample(&s, "ota_queue_capacity", Some(("inbox", "core_mqtt"))),
        1024.0
    );
    let commits = s
        .samples
        .iter()
        .find(|x| x.metric == "ota_status_commit_latency_seconds")
        .map(|x| x.value.clone());
    match commits {
        Some(Value::Histogram(h)) => {
            let inf = h.iter().map(|b| b.count).fold(0.0, f64::max);
            between(
                "commits in the histogram",
                inf,
                before.commits,
                after.commits,
            );
        }
        other => panic!("no commit latency histogram: {other:?}"),
    }

    // Nothing on the listener changes state.
    for (method, path) in [
        ("POST", "/api/v1/campaigns"),
        ("DELETE", "/api/v1/campaigns/fw-2"),
        ("PUT", "/api/v1/campaigns/fw-2"),
        ("POST", "/metrics"),
        ("PATCH", "/api/v1/devices"),
    ] {
        let r = request([127, 0, 0, 1].into(), addr, method, path, &[]).await;
        assert_eq!(r.status, 405, "{method} {path}: {}", r.text());
    }
    let list_after: Json = ops
        .call_ok(Command::CampaignList)
        .await
        .expect("campaign list");
    assert_eq!(list_after, cli_list);

    // It stops with the bridge.
    stack.stop_bridge().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener still accepts after shutdown"
    );
    devices.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_without_the_right_token_are_refused() {
    const TOKEN: &str = "read-token-7f3a9c";
    let stack = stack_with(|c| {
        c.http = Some(HttpConfig {
            listen: "0.0.0.0:0".parse().expect("an address"),
            read_tokens: vec![TokenHash::of(TOKEN.as_bytes())],
            allow_anonymous_loopback: true,
            tls: None,
        })
    })
    .await;
    let port = stack.bridge().http_addr().expect("[http] is on").port();
    let outside = outside_address();
    let far = SocketAddr::new(outside, port);
    let near = SocketAddr::from(([127, 0, 0, 1], port));
    let good = format!("Bearer {TOKEN}");

    // From another address: no token, a wrong one, another scheme.
    let r = request(outside, far, "GET", "/api/v1/fleet", &[]).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"ota\""));
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap_or_default()
            .contains("token is required"),
        "{}",
        r.text()
    );
    let r = request(
        outside,
        far,
        "GET",
        "/metrics",
        &[("Authorization", "Bearer guess")],
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(r.text().contains("not accepted"), "{}", r.text());
    assert!(
        !r.text().contains("ota_"),
        "a refused scrape shows no metric"
    );
    let r = request(
        outside,
        far,
        "GET",
        "/api/v1/campaigns",
        &[("Authorization", "Basic cmVhZDp4")],
    )
    .await;
    assert_eq!(r.status, 401);
    // A wrong token is refused on loopback too.
    let r = request(
        [127, 0, 0, 1].into(),
        near,
        "GET",
        "/api/v1/fleet",
        &[("Authorization", "Bearer guess")],
    )
    .await;
    assert_eq!(r.status, 401);
    // An attacker's flood: each refused, the bridge unmoved.
    for i in 0..100 {
        let wrong = format!("Bearer wrong-{i}");
        let r = request(
            outside,
            far,
            "GET",
            "/api/v1/campaigns/x",
            &[("Authorization", wrong.as_str())],
        )
        .await;
        assert_eq!(r.status, 401);
    }

    // The right token from anywhere; no token from loopback.
    let r = request(
        outside,
        far,
        "GET",
        "/api/v1/fleet",
        &[("Authorization", good.as_str())],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["registered"], json!(0));
    let r = request([127, 0, 0, 1].into(), near, "GET", "/api/v1/fleet", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The page holds no data: it loads without a token and asks for one.
    let page = request(outside, far, "GET", "/", &[]).await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<title>ota dashboard</title>"));
    assert!(page.header("content-security-policy").is_some());

    // Every refusal counted, by reason.
    let m = request(
        outside,
        far,
        "GET",
        "/metrics",
        &[("Authorization", good.as_str())],
    )
    .await;
    assert_eq!(m.status, 200, "{}", m.text());
    let s = parse_metrics(&m.text());
    assert_eq!(
        sample(&s, "ota_http_refused_total", Some(("reason", "no_token"))),
        1.0
    );
    assert_eq!(
        sample(
            &s,
            "ota_http_refused_total",
            Some(("reason", "wrong_token"))
        ),
        102.0
    );
    assert_eq!(
        sample(&s, "ota_http_refused_total", Some(("reason", "not_bearer"))),
        1.0
    );

    // A second listener on a taken port fails the start, naming the key.
    let mut config = stack.config.clone();
    config.bridge.data_dir = stack.dir.path().join("other");
    config.http = Some(HttpConfig::anonymous_loopback(near));
    let e = bridge::Bridge::start(config)
        .await
        .err()
        .expect("a taken port fails the start")
        .to_string();
    assert!(e.contains("[http] listen"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_the_token_holder_and_drops_plain_http() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const TOKEN: &str = "tls-read-token";
    let dir = tempfile::tempdir().expect("a temp dir");
    let ca = tls::pki::FleetCa::generate("http test ca", 1).expect("a CA");
    let server = ca
        .issue_server(&["127.0.0.1".into()], tls::pki::Validity::days(1))
        .expect("a server certificate");
    let (cert, key, ca_file) = (
        dir.path().join("server.crt"),
        dir.path().join("server.key"),
        dir.path().join("ca.crt"),
    );
    std::fs::write(&cert, &server.cert_pem).unwrap();
    std::fs::write(&key, &server.key_pem).unwrap();
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    let (c2, k2) = (cert.clone(), key.clone());
    let mut stack = stack_with(move |c| {
        c.http = Some(HttpConfig {
            listen: "127.0.0.1:0".parse().expect("an address"),
            read_tokens: vec![TokenHash::of(TOKEN.as_bytes())],
            allow_anonymous_loopback: false,
            tls: Some(bridge::config::http::HttpTls { cert: c2, key: k2 }),
        })
    })
    .await;
    let addr = stack.bridge().http_addr().expect("[http] is on");

    let mut roots = tls::rustls::RootCertStore::empty();
    for c in tls::read_certs("ca_file", &ca_file).expect("the CA") {
        roots.add(c).expect("a root");
    }
    let client = tls::client_config(std::sync::Arc::new(roots), None).expect("a client config");
    let https = |path: &'static str, token: Option<&'static str>| {
        let connector = tokio_rustls::TlsConnector::from(client.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let name = tls::rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
            let mut s = within("the TLS handshake", connector.connect(name, tcp))
                .await
                .expect("the handshake with the bridge's certificate");
            let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
            let req =
                format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\r\n");
            s.write_all(req.as_bytes()).await.expect("send");
            let mut raw = Vec::new();
            // A close without TLS close_notify is fine here: the body is in.
            let _ = within("the response", s.read_to_end(&mut raw)).await;
            http_common::parse(&raw)
        }
    };
    let r = https("/api/v1/fleet", Some(TOKEN)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["registered"], json!(0));
    // Over TLS too: no token, no data (loopback is not anonymous here).
    assert_eq!(https("/api/v1/fleet", None).await.status, 401);

    // Plain HTTP on the HTTPS port gets no answer, and is counted.
    let mut plain = tokio::net::TcpStream::connect(addr).await.expect("connect");
    plain
        .write_all(b"GET /api/v1/fleet HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    let mut got = Vec::new();
    let _ = within("the bridge to drop plain HTTP", plain.read_to_end(&mut got)).await;
    assert!(
        !got.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    let m = https("/metrics", Some(TOKEN)).await;
    let s = parse_metrics(&m.text());
    assert_eq!(
        sample(&s, "ota_http_tls_handshake_failures_total", None),
        1.0
    );

    stack.stop_bridge().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
