//! The campaign operator commands (`campaign_*` and `emergency`), as the
//! ops dispatch calls them: each borrows the campaigns and their context
//! from core's state and returns the reply's JSON (`campaign::view`
//! shapes). The errors are the campaign's; `ops` maps them into replies.

use schemas::ops::Command;
use schemas::{CampaignId, GroupName};
use serde::Serialize;
use serde_json::Value;

use crate::artifacts::ArtifactStore;
use crate::campaign::followup::{self, FollowUpError, Leftover};
use crate::campaign::gate::{Input, Phase};
use crate::campaign::manager::send_event;
use crate::campaign::plan;
use crate::campaign::record::Release;
use crate::campaign::spec::{self, CampaignSpec};
use crate::campaign::window::Windows;
use crate::campaign::{release, CampaignError, Campaigns, Ctx};
use crate::state::CoreState;

use super::{fleet_cmds, OpsError};

/// Runs one campaign command. Other commands are refused.
pub async fn handle(state: &mut CoreState, cmd: Command, now: u64) -> Result<Value, CampaignError> {
    let artifacts = state.artifacts().clone();
    let (ctx, c) = state.campaigns_mut();
    run(c, &ctx, &artifacts, cmd, now).await
}

async fn run(
    c: &mut Campaigns,
    ctx: &Ctx<'_>,
    artifacts: &ArtifactStore,
    cmd: Command,
    now: u64,
) -> Result<Value, CampaignError> {
    match cmd {
        Command::CampaignCreate { spec } => {
            let spec: CampaignSpec =
                serde_json::from_value(spec).map_err(|e| CampaignError::SpecJson(e.to_string()))?;
            spec.validate()?;
            let release = resolve(artifacts, &spec.release, Some(spec.kind))?;
            let rollback = resolve_rollback(artifacts, &spec, &release)?;
            let id = spec.id.clone();
            let status = c.create(ctx, spec, release, rollback, now)?;
            if let Some(ev) = c.created_event(&id, now) {
                send_event(ctx, &ev).await?;
            }
            Ok(json(&status))
        }
        Command::CampaignPlan { spec } => {
            let spec: CampaignSpec =
                serde_json::from_value(spec).map_err(|e| CampaignError::SpecJson(e.to_string()))?;
            spec.validate()?;
            if let Some(g) = spec
                .target_groups()
                .into_iter()
                .find(|g| ctx.fleet.groups().get(g).is_none())
            {
                return Err(CampaignError::NoGroup(g));
            }
            let release = resolve(artifacts, &spec.release, Some(spec.kind))?;
            resolve_rollback(artifacts, &spec, &release)?;
            let rules = release
                .entries
                .iter()
                .filter_map(|e| {
                    let r = artifacts.get(&e.artifact).ok().flatten()?;
                    let rules = plan::ArchRules {
                        min_version: r.min_version,
                        allow_downgrade: r.allow_downgrade,
                    };
                    Some((e.artifact.clone(), rules))
                })
                .collect();
            let rate = ctx.blocks.map_or(0, |b| {
                b.metrics()
                    .pace_rate
                    .load(std::sync::atomic::Ordering::Relaxed)
            });
            let mut p = plan::compute(ctx.fleet, &spec, &release, &rules, rate);
            p.windows = Windows::of(&spec.id, &spec.windows).outlook(now);
            Ok(json(&p))
        }
        Command::CampaignStart { id } => Ok(json(&c.start(ctx, &id, now).await?)),
        Command::CampaignPause { id } => Ok(json(&c.operator(ctx, &id, Input::Pause, now).await?)),
        Command::CampaignResume { id } => {
            Ok(json(&c.operator(ctx, &id, Input::Resume, now).await?))
        }
        Command::CampaignAbort { id } => Ok(json(&c.operator(ctx, &id, Input::Abort, now).await?)),
        Command::CampaignSetGates { id, gates } => {
            // Only the keys given change: overlay them on the current gates.
            let current = c.gates_of(&id)?;
            let mut merged = serde_json::to_value(current).unwrap_or(Value::Null);
            match (&mut merged, gates) {
                (Value::Object(m), Value::Object(changes)) => m.extend(changes),
                _ => {
                    return Err(CampaignError::SpecJson(
                        "gates must be a JSON object, e.g. {\"failure_halt_bp\": 1000}".into(),
                    ))
                }
            }
            let gates: spec::Gates = serde_json::from_value(merged)
                .map_err(|e| CampaignError::SpecJson(e.to_string()))?;
            Ok(json(
                &c.operator(ctx, &id, Input::SetGates(gates), now).await?,
            ))
        }
        Command::CampaignStatus { id } => Ok(json(&c.status(ctx, &id, now).await?)),
        Command::CampaignList => Ok(json(&c.list())),
        Command::Emergency {
            id,
            release: ids,
            groups,
            all,
        } => {
            let release = resolve(artifacts, &ids, None)?;
            let spec = Campaigns::emergency_spec(id.clone(), &release, groups, all)?;
            // Checked before the create, so a refused emergency leaves no draft.
            c.check_topics(ctx, &spec)?;
            c.create(ctx, spec, release, None, now)?;
            if let Some(ev) = c.created_event(&id, now) {
                send_event(ctx, &ev).await?;
            }
            Ok(json(&c.start(ctx, &id, now).await?))
        }
        other => Err(CampaignError::SpecJson(format!(
            "{} is not a campaign command",
            other.name()
        ))),
    }
}

/// `campaign retry`: the leftovers of an ended campaign become the
/// explicit members of a group named after the follow-up, and the
/// follow-up a draft with the parent's release and gates targeting that
/// group (`campaign::followup`). Nothing is put when anything is refused.
/// `campaign retarget`: a standing campaign moves to `release` (see
/// [`Command::CampaignRetarget`]): the new one is created and checked
/// before the old one is aborted, so a refusal changes nothing.
pub async fn retarget(
    state: &mut CoreState,
    id: CampaignId,
    release: Vec<schemas::ArtifactId>,
    new_id: Option<CampaignId>,
    now: u64,
) -> Result<Value, CampaignError> {
    let artifacts = state.artifacts().clone();
    let (ctx, c) = state.campaigns_mut();
    let old = c
        .get(&id)
        .ok_or_else(|| CampaignError::NotFound(id.clone()))?;
    if !old.gate.is_standing() {
        return Err(CampaignError::NotStanding(id));
    }
    if old.gate.is_finished() || matches!(old.gate.phase(), Phase::Draft) {
        return Err(CampaignError::RetargetEnded {
            id,
            state: old.state_word(),
        });
    }
    let new_id = new_id
        .or_else(|| followup::retarget_id(&id))
        .ok_or_else(|| FollowUpError::Taken(format!("{id}-r2")))?;
    if c.exists(&new_id)? {
        return Err(FollowUpError::Taken(new_id.to_string()).into());
    }
    let spec = followup::retarget_spec(&old.spec, new_id.clone(), release);
    let old_component = old.release.component.clone();
    spec.validate()?;
    let release = resolve(&artifacts, &spec.release, Some(spec.kind))?;
    if release.component != old_component {
        return Err(CampaignError::RetargetComponent {
            id,
            old: old_component.to_string(),
            new: release.component.to_string(),
        });
    }
    let rollback = resolve_rollback(&artifacts, &spec, &release)?;
    c.create(&ctx, spec, release, rollback, now)?;
    if let Some(ev) = c.created_event(&new_id, now) {
        send_event(&ctx, &ev).await?;
    }
    c.operator(&ctx, &id, Input::Abort, now).await?;
    Ok(json(&c.start(&ctx, &new_id, now).await?))
}

pub async fn retry(
    state: &mut CoreState,
    id: CampaignId,
    new_id: Option<CampaignId>,
    only: Vec<String>,
    now: u64,
) -> Result<Value, OpsError> {
    let classes = Leftover::parse_all(&only).map_err(CampaignError::from)?;
    let new_id = match new_id.or_else(|| followup::default_id(&id)) {
        Some(n) => n,
        None => {
            return Err(OpsError::Invalid(format!(
                "{id}-retry is not a campaign id: give the follow-up one with --id"
            )))
        }
    };
    let group = GroupName::new(new_id.as_str()).map_err(|_| {
        OpsError::Invalid(format!(
            "{new_id} is not a group name: give the follow-up another id with --id"
        ))
    })?;
    let artifacts = state.artifacts().clone();
    let (parent, picked) = {
        let (ctx, c) = state.campaigns_mut();
        if c.exists(&new_id)? || ctx.fleet.groups().get(&group).is_some() {
            return Err(CampaignError::from(FollowUpError::Taken(new_id.to_string())).into());
        }
        c.leftovers(&ctx, &id, &classes, now).await?
    };
    if picked.is_empty() {
        let only = classes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        return Err(CampaignError::from(FollowUpError::Nothing { id, only }).into());
    }
    let spec = followup::retry_spec(&parent, new_id.clone(), group.clone());
    spec.validate().map_err(CampaignError::from)?;
    let release = resolve(&artifacts, &spec.release, Some(spec.kind))?;
    let members = picked.len();
    fleet_cmds::group_put(state, group, None, Some(picked.into_iter().collect()), now).await?;
    let (ctx, c) = state.campaigns_mut();
    let status = c.create(&ctx, spec, release, None, now)?;
    if let Some(ev) = c.created_event(&new_id, now) {
        send_event(&ctx, &ev).await?;
    }
    tracing::info!(campaign = %new_id, parent = %id, members, "follow-up created");
    Ok(json(&status))
}

/// `campaign rollback`: a campaign still running, soaking or paused is
/// aborted first (no new device takes it), then its rollback starts
/// (`state::rollback`).
pub async fn rollback(state: &mut CoreState, id: CampaignId, now: u64) -> Result<Value, OpsError> {
    let (ctx, c) = state.campaigns_mut();
    let record = c
        .get(&id)
        .ok_or_else(|| CampaignError::NotFound(id.clone()))?;
    if record.rollback.is_none() {
        return Err(CampaignError::from(FollowUpError::NoRollback(id.clone())).into());
    }
    if record.is_live() && !matches!(record.gate.phase(), Phase::Halted { .. }) {
        c.operator(&ctx, &id, Input::Abort, now).await?;
    }
    let status = crate::state::rollback::start(state, &id, now).await?;
    Ok(json(&status))
}

/// The rollback release of `spec`, resolved and checked to be a signed
/// downgrade of `release` (`followup::check_rollback`).
fn resolve_rollback(
    artifacts: &ArtifactStore,
    spec: &CampaignSpec,
    release: &Release,
) -> Result<Option<Release>, CampaignError> {
    let Some(rb) = &spec.rollback else {
        return Ok(None);
    };
    let rb = resolve(artifacts, &rb.release, Some(spec.kind))?;
    let allows = |a: &schemas::ArtifactId| {
        artifacts
            .get(a)
            .ok()
            .flatten()
            .is_some_and(|r| r.allow_downgrade)
    };
    followup::check_rollback(release, &rb, allows)?;
    Ok(Some(rb))
}

pub(crate) fn resolve(
    artifacts: &ArtifactStore,
    ids: &[schemas::ArtifactId],
    kind: Option<spec::Kind>,
) -> Result<Release, CampaignError> {
    let mut release = release::resolve(ids, kind, |id| artifacts.get(id))?;
    release::attach_deltas(
        &mut release,
        artifacts.list().map_err(CampaignError::ArtifactStore)?,
    );
    Ok(release)
}

fn json<T: Serialize>(v: &T) -> Value {
    // Invariant: the view types hold names, numbers, maps and lists.
    serde_json::to_value(v).unwrap_or(Value::Null)
}
