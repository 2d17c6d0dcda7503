//! What a command over the whole fleet waits for before it runs (issue
//! 19): a group put's selector scan, a create's pre-flight, the first
//! wave's members of a start (and an emergency's both). [`begin`] sets it
//! going on an accepted command; core runs it a slice at a time between
//! its other messages (`state::slices`) until [`ready`], then runs
//! the command, which takes the prepared result instead of scanning.
//! Commands that arrive meanwhile wait their turn (the core actor), so
//! commands still run one after another, in order.
//!
//! A command that cannot be prepared (a spec that does not parse, an
//! unknown release) is not: it runs at once, and its handler refuses it
//! with the usual reply. Only accepted commands get here: a forged one
//! never costs a scan.

use schemas::ops::Command;
use schemas::CampaignId;

use crate::campaign::spec::CampaignSpec;
use crate::campaign::Campaigns;
use crate::fleet::Group;
use crate::state::CoreState;

use super::campaign_cmds::resolve;

/// What an accepted command waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prep {
    /// The selector scan of a group put.
    Group,
    /// A create's pre-flight.
    Create,
    /// A start's first wave members (of an emergency: and its pre-flight).
    Start(CampaignId),
}

/// Sets going what `cmd` needs prepared; `None` when it needs nothing.
pub fn begin(state: &mut CoreState, cmd: &Command) -> Option<Prep> {
    match cmd {
        Command::GroupPut {
            name,
            selector: Some(selector),
            members: None,
        } => {
            let g = Group::new(name.clone(), Some(selector), None, 0).ok()?;
            state.fleet_mut().prepare_group(&g);
            Some(Prep::Group)
        }
        Command::CampaignCreate { spec } => {
            let spec: CampaignSpec = serde_json::from_value(spec.clone()).ok()?;
            spec.validate().ok()?;
            let release = resolve(state.artifacts(), &spec.release, Some(spec.kind)).ok()?;
            state.campaigns_mut().1.prepare_create(&spec, &release);
            Some(Prep::Create)
        }
        Command::Emergency {
            id,
            release,
            groups,
            all,
        } => {
            let release = resolve(state.artifacts(), release, None).ok()?;
            let spec =
                Campaigns::emergency_spec(id.clone(), &release, groups.clone(), *all).ok()?;
            let c = state.campaigns_mut().1;
            c.prepare_create(&spec, &release);
            c.prepare_spec_start(&spec);
            Some(Prep::Start(id.clone()))
        }
        Command::CampaignStart { id } => {
            state.campaigns_mut().1.prepare_start(id);
            Some(Prep::Start(id.clone()))
        }
        _ => None,
    }
}

/// True once what `p` waits for is prepared.
pub fn ready(state: &CoreState, p: &Prep) -> bool {
    match p {
        Prep::Group => !state.fleet().preparing(),
        Prep::Create => !state.campaigns().preparing(None),
        Prep::Start(id) => !state.campaigns().preparing(Some(id)),
    }
}

/// The campaign whose members to find first while `p` waits.
pub fn focus(p: &Prep) -> Option<&CampaignId> {
    match p {
        Prep::Start(id) => Some(id),
        _ => None,
    }
}
