//! The JSON API (`/api/v1/...`) and `/metrics`, every handler a read:
//! `fleet` (counts), `devices` (a page, by group, label selector, arch,
//! state and installed version), `groups`, `artifacts`, `campaigns`
//! (`ota campaign list --json`), `campaigns/{id}` (`ota campaign status ID
//! --json`: waves, counts, verdicts, halt reason, parent and rollback
//! links) and `campaigns/{id}/members` (each member's latest state, error
//! and detail). The shapes are the CLI's own types; each handler's
//! `#[utoipa::path]` puts it in the OpenAPI document ([`super::openapi`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use schemas::{CampaignId, DeviceId, GroupName};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ErrorBody};
use super::scrape::{Scrape, CONTENT_TYPE};
use super::Shared;
use crate::campaign::roster::{MemberFilter, MemberOutcome, MemberPage};
use crate::campaign::view::{CampaignList, CampaignStatus};
use crate::fleet::selector::Selector;
use crate::ops::artifact_cmds::ArtifactList;
use crate::ops::fleet_cmds::{DeviceList, GroupList};
use crate::ops::queries::{Answer, Ask, DeviceFilter, FleetCounts};

/// The registry's counts and the credentials by standing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FleetView {
    #[serde(flatten)]
    pub counts: FleetCounts,
    /// Provisioned credentials: active, pending, revoked.
    pub credentials: BTreeMap<String, usize>,
}

/// The fleet in numbers: registered, online, by arch, by installed
/// version, groups, and the credentials by standing.
#[utoipa::path(get, path = "/api/v1/fleet", tag = "fleet",
    responses((status = 200, body = FleetView), Failures))]
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

/// The devices' filters and page.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
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

/// A page of devices by id (`ota devices list --json`), narrowed by
/// group, labels, arch, presence and installed version.
#[utoipa::path(get, path = "/api/v1/devices", tag = "fleet", params(DevicesParams),
    responses((status = 200, body = DeviceList), Failures))]
pub async fn devices(
    State(s): State<Arc<Shared>>,
    Query(p): Query<DevicesParams>,
) -> Result<Response, ApiError> {
    match s.core.ask(Ask::Devices(p.filter()?)).await? {
        Answer::Devices(d) => Ok(Json(d).into_response()),
        _ => Err(ApiError::Failed("core answered another question".into())),
    }
}

/// Every group (`ota group list --json`).
#[utoipa::path(get, path = "/api/v1/groups", tag = "fleet",
    responses((status = 200, body = GroupList), Failures))]
pub async fn groups(State(s): State<Arc<Shared>>) -> Result<Response, ApiError> {
    match s.core.ask(Ask::Groups).await? {
        Answer::Groups(g) => Ok(Json(g).into_response()),
        _ => Err(ApiError::Failed("core answered another question".into())),
    }
}

/// Every stored artifact and the pushes under way (`ota artifact list
/// --json`), read from the artifact store on the blocking pool (core is
/// not asked).
#[utoipa::path(get, path = "/api/v1/artifacts", tag = "artifacts",
    responses((status = 200, body = ArtifactList), Failures))]
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

/// Every campaign with its state and current wave's counts (`ota
/// campaign list --json`).
#[utoipa::path(get, path = "/api/v1/campaigns", tag = "campaigns",
    responses((status = 200, body = CampaignList), Failures))]
pub async fn campaigns(State(s): State<Arc<Shared>>) -> Result<Response, ApiError> {
    Ok(Json(s.core.campaigns().await?).into_response())
}

/// One campaign (`ota campaign status ID --json`): its waves and how
/// each ended, the current wave's counts by group, state and error, the
/// gate's decisions, the pre-flight, parent and rollback links.
#[utoipa::path(get, path = "/api/v1/campaigns/{id}", tag = "campaigns",
    params(("id" = CampaignId, Path, description = "The campaign's id")),
    responses((status = 200, body = CampaignStatus), Failures))]
pub async fn campaign(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    match s.core.ask(Ask::Campaign(campaign_id(id)?)).await? {
        Answer::Campaign(c) => Ok(Json(c).into_response()),
        _ => Err(ApiError::Failed("core answered another question".into())),
    }
}

fn campaign_id(id: String) -> Result<CampaignId, ApiError> {
    CampaignId::new(id).map_err(|e| ApiError::Invalid(format!("campaign id: {e}")))
}

/// A campaign's members' filter and page.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MembersParams {
    /// Only the members with this outcome: `success`, `failure`,
    /// `not_applicable` or `pending`.
    pub outcome: Option<String>,
    /// The `next` of the previous page.
    pub after: Option<String>,
    /// At most this many (at most `schemas::ops::MAX_PAGE`).
    pub limit: Option<u32>,
}

/// A page of the current wave's members by id, each with its latest
/// state, error code and the device's detail text: which devices failed,
/// and why.
#[utoipa::path(get, path = "/api/v1/campaigns/{id}/members", tag = "campaigns",
    params(("id" = CampaignId, Path, description = "The campaign's id"), MembersParams),
    responses((status = 200, body = MemberPage), Failures))]
pub async fn members(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(p): Query<MembersParams>,
) -> Result<Response, ApiError> {
    let bad = |key: &str, e: String| ApiError::Invalid(format!("parameter {key}: {e}"));
    let filter = MemberFilter {
        outcome: p
            .outcome
            .map(|o| MemberOutcome::parse(&o).map_err(|e| bad("outcome", e)))
            .transpose()?,
        after: p
            .after
            .map(|a| DeviceId::new(a).map_err(|e| bad("after", e.to_string())))
            .transpose()?,
        limit: p.limit,
    };
    match s.core.ask(Ask::Members(campaign_id(id)?, filter)).await? {
        Answer::Members(m) => Ok(Json(m).into_response()),
        _ => Err(ApiError::Failed("core answered another question".into())),
    }
}

/// The answers every JSON route may give instead of its data.
#[derive(utoipa::IntoResponses)]
pub enum Failures {
    /// No token, or a wrong one (`WWW-Authenticate: Bearer`).
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// A bad parameter: the message names it.
    #[response(status = 400)]
    Invalid(ErrorBody),
    /// No such group or campaign.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// The bridge's core is busy or stopping: ask again.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// The bridge's counters in Prometheus text: whatever core cannot answer
/// now is left out, the rest is shown (and `ota_core_answering` is 0).
#[utoipa::path(get, path = "/metrics", tag = "metrics",
    responses((status = 200, content_type = "text/plain; version=0.0.4", body = String,
        description = "Prometheus text format"), Failures))]
pub async fn metrics(State(s): State<Arc<Shared>>) -> Result<Response, ApiError> {
    let (fleet, campaigns) = tokio::join!(s.core.fleet(), s.core.campaigns());
    let scrape = Scrape {
        bridge: s.metrics.snapshot(),
        commit_latency: s.metrics.commit_latency.snapshot(),
        core_handle: s.metrics.core_handle.snapshot(),
        core_wait: s.metrics.core_wait.snapshot(),
        blocks: s.blocks.snapshot(),
        identity_refused: s.identity.refusals().snapshot(),
        standings: s.identity.standings(),
        http_refused: Scrape::http_refusals(&s.refusals),
        tls_handshakes_failed: s
            .handshakes
            .failed
            .load(std::sync::atomic::Ordering::Relaxed),
        broker_logins: s
            .broker
            .as_ref()
            .map(|b| b.logins_by_kind())
            .unwrap_or_default(),
        broker_handshakes_failed: s
            .broker
            .as_ref()
            .map(|b| b.handshake_failures_by_kind())
            .unwrap_or_default(),
        inboxes: s.core.depths(),
        fleet: fleet.ok(),
        campaigns: campaigns.ok(),
    };
    let text = scrape
        .render()
        .map_err(|e| ApiError::Failed(format!("encoding the metrics failed: {e}")))?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}
