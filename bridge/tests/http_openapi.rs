//! The API's map and its members route, on a real bridge running a
//! campaign to its halt: `/api/v1/openapi.json` parses as OpenAPI 3.1
//! (oas3), every `$ref` in it resolves, it documents exactly the routes
//! that answer, each a read; `/api/v1/campaigns/{id}/members` lists each
//! member with the state, error and detail the status store holds, by
//! outcome and page; bad parameters are named.

mod blocks_common;
mod campaign_common;
mod common;
mod http_common;

use std::collections::BTreeSet;

use campaign_common::*;
use http_common::{get, Rollout};
use serde_json::{json, Value};

/// Every `$ref` in `v`.
fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => refs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_and_the_members_of_a_halted_campaign() {
    let devices = vec![
        DeviceOpts::new("canary-1", "canary"),
        DeviceOpts::new("canary-2", "canary"),
        DeviceOpts::new("acme-1", "acme"),
        DeviceOpts::new("acme-2", "acme").failing(),
        DeviceOpts::new("acme-3", "acme").always_deferring(),
    ];
    let Rollout {
        stack,
        ops,
        addr,
        mut devices,
    } = Rollout::start("4.0.0", devices).await;
    http_common::two_waves(&ops, "fw-4", "4.0.0", 600).await;
    wait_state(&ops, "fw-4", "halted", LONG).await;

    // The document: OpenAPI 3.1 that oas3 reads whole.
    let doc = get(addr, "/api/v1/openapi.json", &[]).await;
    assert_eq!(doc.status, 200, "{}", doc.text());
    let spec = oas3::from_json(doc.text())
        .unwrap_or_else(|e| panic!("/api/v1/openapi.json is not OpenAPI ({e}):\n{}", doc.text()));
    let version = spec
        .validate_version()
        .expect("a supported OpenAPI version");
    assert_eq!((version.major, version.minor), (3, 1));
    // Every reference points at a schema it defines.
    let raw = doc.json();
    let schemas = &spec.components.as_ref().expect("components").schemas;
    let mut all = Vec::new();
    refs(&raw, &mut all);
    assert!(all.len() > 20, "few references: {all:?}");
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("a reference outside the schemas: {r}"));
        assert!(schemas.contains_key(name), "{r} does not resolve");
    }
    for name in [
        "CampaignStatus",
        "CampaignList",
        "DeviceList",
        "GroupList",
        "ArtifactList",
        "FleetView",
        "MemberPage",
        "ErrorBody",
    ] {
        assert!(schemas.contains_key(name), "no schema {name}");
    }
    assert!(
        spec.components
            .as_ref()
            .is_some_and(|c| c.security_schemes.contains_key("bearer")),
        "no bearer scheme"
    );
    // Exactly the routes, each a GET, each answering.
    let ops_: Vec<(String, String)> = spec
        .operations()
        .map(|(path, method, _)| (path, method.to_string()))
        .collect();
    assert!(ops_.iter().all(|(_, m)| m == "GET"), "{ops_:?}");
    let paths: BTreeSet<&str> = ops_.iter().map(|(p, _)| p.as_str()).collect();
    let want: BTreeSet<&str> = [
        "/metrics",
        "/api/v1/fleet",
        "/api/v1/devices",
        "/api/v1/groups",
        "/api/v1/artifacts",
        "/api/v1/campaigns",
        "/api/v1/campaigns/{id}",
        "/api/v1/campaigns/{id}/members",
        "/api/v1/events",
        "/api/v1/openapi.json",
    ]
    .into();
    assert_eq!(paths, want);
    for p in paths.iter().filter(|p| !p.ends_with("/events")) {
        let path = p.replace("{id}", "fw-4");
        let r = get(addr, &path, &[]).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let op = spec
            .operation(&axum::http::Method::GET, p)
            .expect("the operation");
        let ok = op.responses.as_ref().and_then(|r| r.get("200"));
        assert!(ok.is_some(), "{p} documents no 200");
    }

    // Members: each with what the status store holds.
    let page = get(addr, "/api/v1/campaigns/fw-4/members", &[])
        .await
        .json();
    assert_eq!(page["total"], json!(5), "{page}");
    let outcomes: Vec<(&str, &str)> = page["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap_or_default(),
                m["outcome"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("acme-1", "success"),
            ("acme-2", "failure"),
            ("acme-3", "pending"),
            ("canary-1", "success"),
            ("canary-2", "success"),
        ]
    );
    let failed = get(addr, "/api/v1/campaigns/fw-4/members?outcome=failure", &[])
        .await
        .json();
    assert_eq!(failed["total"], json!(1), "{failed}");
    let m = &failed["members"][0];
    let stored =
        current(&stack, &"acme-2".parse().expect("an id"), "fw-4").expect("acme-2's state");
    assert_eq!(m["state"], json!(stored.state.as_str()));
    assert_eq!(
        m["error"],
        json!(stored.error.map(|e| e.as_str().to_string()))
    );
    assert!(stored.detail.is_some(), "the failing device sent no detail");
    assert_eq!(m["detail"], json!(stored.detail));
    assert_eq!(m["at"], json!(stored.at));
    assert_eq!(m["arch"], json!("esp32"));
    assert_eq!(m["online"], json!(true));
    assert_eq!(m["installed"], json!("1.0.0"), "{m}");
    let pending = get(addr, "/api/v1/campaigns/fw-4/members?outcome=pending", &[])
        .await
        .json();
    assert_eq!(pending["members"][0]["id"], json!("acme-3"));
    // Pages by id.
    let p1 = get(addr, "/api/v1/campaigns/fw-4/members?limit=2", &[])
        .await
        .json();
    assert_eq!(p1["next"], json!("acme-2"), "{p1}");
    let p3 = get(
        addr,
        "/api/v1/campaigns/fw-4/members?limit=2&after=acme-3",
        &[],
    )
    .await
    .json();
    assert_eq!(p3["members"].as_array().map(Vec::len), Some(2));
    assert!(p3.get("next").is_none(), "{p3}");
    // Bad parameters and unknown campaigns say what is wrong.
    let bad = get(addr, "/api/v1/campaigns/fw-4/members?outcome=broken", &[]).await;
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("outcome"), "{}", bad.text());
    let bad = get(addr, "/api/v1/campaigns/fw-4/members?after=%2F", &[]).await;
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("after"), "{}", bad.text());
    let bad = get(addr, "/api/v1/campaigns/fw-4/members?sort=id", &[]).await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert_eq!(
        get(addr, "/api/v1/campaigns/nope/members", &[])
            .await
            .status,
        404
    );
    // The old unversioned paths are gone.
    assert_eq!(get(addr, "/api/campaigns", &[]).await.status, 404);
    devices.stop_all().await;
}
