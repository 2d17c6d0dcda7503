//! The JSON API and `/metrics`, every handler a read: `/api/fleet` (counts),
//! `/api/devices` (a page, by group, label selector, arch, state and
//! installed version), `/api/groups`, `/api/artifacts`, `/api/campaigns`
//! (`ota campaign list --json`), `/api/campaigns/{id}` (`ota campaign
//! status ID --json`: waves, counts, verdicts, halt reason, parent and
//! rollback links). The shapes are the CLI's own types.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use schemas::{CampaignId, DeviceId, GroupName};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::scrape::{Scrape, CONTENT_TYPE};
use super::Shared;
use crate::fleet::selector::Selector;
use crate::ops::queries::{Answer, Ask, DeviceFilter, FleetCounts};

/// `/api/fleet`: the registry's counts and the credentials by standing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetView {
    #[serde(flatten)]
    pub counts: FleetCounts,
    /// Provisioned credentials: active, pending, revoked.
    pub credentials: BTreeMap<String, usize>,
}

pub async fn fleet(State(s): State<Arc<Shared>>) -> Result<Json<FleetView>, ApiError> {
    let counts = s.core.fleet().await?;
    let credentials = s
        .identity
        .standings()
        .iter()
        .map(|(st, n)| (st.as_str().to_string(), *n))
        .collect();
    Ok(Json(FleetView {
        counts,
        credentials,
    }))
}

/// `/api/devices` parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicesParams {
    /// Only the devices in this group.
    pub group: Option<String>,
    /// A label selector (`customer=acme,line in (3,4)`).
    pub label: Option<String>,
    /// Only this arch.
    pub arch: Option<String>,
    /// `online` or `offline`.
    pub state: Option<String>,
    /// `COMPONENT:VERSION` installed.
    pub version: Option<String>,
    /// The `next` of the previous page.
    pub after: Option<String>,
    /// At most this many (at most `schemas::ops::MAX_PAGE`).
    pub limit: Option<u32>,
}

impl DevicesParams {
    fn filter(self) -> Result<DeviceFilter, ApiError> {
        let bad = |key: &str, e: String| ApiError::Invalid(format!("parameter {key}: {e}"));
        Ok(DeviceFilter {
            group: self
                .group
                .map(|g| GroupName::new(g).map_err(|e| bad("group", e.to_string())))
                .transpose()?,
            labels: self
                .label
                .map(|l| Selector::parse(&l).map_err(|e| bad("label", e.to_string())))
                .transpose()?,
            after: self
                .after
                .map(|a| DeviceId::new(a).map_err(|e| bad("after", e.to_string())))
                .transpose()?,
            arch: self.arch,
            online: match self.state.as_deref() {
                None => None,
                Some("online") => Some(true),
                Some("offline") => Some(false),
                Some(other) => {
                    return Err(bad("state", format!("{other:?}: use online or offline")))
                }
            },
            version: self
                .version
                .map(|v| match v.split_once(':') {
                    Some((c, v)) if !c.is_empty() && !v.is_empty() => {
                        Ok((c.to_string(), v.to_string()))
                    }
                    _ => Err(bad(
                        "version",
                        format!("{v:?}: use COMPONENT:VERSION, e.g. main:1.1.0"),
                    )),
                })
                .transpose()?,
            limit: self.limit,
        })
    }
}

pub async fn devices(
    State(s): State<Arc<Shared>>,
    Query(p): Query<DevicesParams>,
) -> Result<Response, ApiError> {
    match s.core.ask(Ask::Devices(p.filter()?)).await? {
        Answer::Devices(d) => Ok(Json(d).into_response()),
        _ => Err(ApiError::Failed("core answered another question".into())),
    }
}

/// `/api/groups`: `ota group list --json`.
pub async fn groups(State(s): State<Arc<Shared>>) -> Result<Response, ApiError> {
    match s.core.ask(Ask::Groups).await? {
        Answer::Groups(g) => Ok(Json(g).into_response()),
        _ => Err(ApiError::Failed("core answered another question".into())),
    }
}

/// `/api/artifacts`: `ota artifact list --json`, read from the artifact
/// store on the blocking pool (core is not asked).
pub async fn artifacts(State(s): State<Arc<Shared>>) -> Result<Response, ApiError> {
    let list = crate::ops::artifact_cmds::handle(
        &s.artifacts,
        None,
        &schemas::ops::Command::ArtifactList,
        &|_| None,
    )
    .await
    .map_err(|e| ApiError::Failed(e.to_string()))?;
    Ok(Json(list).into_response())
}

pub async fn campaigns(State(s): State<Arc<Shared>>) -> Result<Response, ApiError> {
    Ok(Json(s.core.campaigns().await?).into_response())
}

pub async fn campaign(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = CampaignId::new(id).map_err(|e| ApiError::Invalid(format!("campaign id: {e}")))?;
    match s.core.ask(Ask::Campaign(id)).await? {
        Answer::Campaign(c) => Ok(Json(c).into_response()),
        _ => Err(ApiError::Failed("core answered another question".into())),
    }
}

/// `/metrics`: whatever core cannot answer now is left out, the rest is
/// shown (and `ota_core_answering` is 0).
pub async fn metrics(State(s): State<Arc<Shared>>) -> Result<Response, ApiError> {
    let (fleet, campaigns) = tokio::join!(s.core.fleet(), s.core.campaigns());
    let scrape = Scrape {
        bridge: s.metrics.snapshot(),
        commit_latency: s.metrics.commit_latency.snapshot(),
        blocks: s.blocks.snapshot(),
        identity_refused: s.identity.refusals().snapshot(),
        standings: s.identity.standings(),
        http_refused: Scrape::http_refusals(&s.refusals),
        tls_handshakes_failed: s
            .handshakes
            .failed
            .load(std::sync::atomic::Ordering::Relaxed),
        inboxes: s.core.depths(),
        fleet: fleet.ok(),
        campaigns: campaigns.ok(),
    };
    let text = scrape
        .render()
        .map_err(|e| ApiError::Failed(format!("encoding the metrics failed: {e}")))?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}
