//! Why a campaign command was refused or failed. The message is what the
//! operator reads in `ota campaign ...`: what was wrong and what to do.

use schemas::{ArtifactId, CampaignId, GroupName};

use super::gate::StepError;
use super::spec::{Kind, SpecError};
use crate::artifacts::ArtifactError;
use crate::mqtt::PublishError;
use crate::store::StoreError;

/// A campaign command that could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    #[error(
        "the campaign spec does not read: {0} (see `ota campaign create --help` for its shape)"
    )]
    SpecJson(String),
    #[error("the campaign spec is refused: {0}")]
    Spec(#[from] SpecError),
    #[error(
        "campaign {0} already exists: pick another id (`ota campaign list` shows the ones taken)"
    )]
    Exists(CampaignId),
    #[error("no campaign {0}: `ota campaign list` shows the campaigns")]
    NotFound(CampaignId),
    #[error("artifact {0} is not stored on the bridge: push it first with `ota artifact push` (`ota artifact list` shows what the bridge holds)")]
    NoArtifact(ArtifactId),
    #[error("artifact {0} is not usable: {1}")]
    BadArtifact(ArtifactId, #[source] ArtifactError),
    #[error(transparent)]
    ArtifactStore(ArtifactError),
    #[error("artifact {0} is a delta (from {1}): name the full images in the release; the bridge adds their pushed deltas to the announcements by itself")]
    DeltaInRelease(ArtifactId, String),
    #[error("artifacts {a} and {b} differ in {what} ({va} vs {vb}): a release holds one kind, one component and one version, with one manifest per arch")]
    MixedRelease {
        a: ArtifactId,
        b: ArtifactId,
        what: &'static str,
        va: String,
        vb: String,
    },
    #[error("artifacts {a} and {b} are both for arch {arch}: a release holds one manifest per arch, drop one of them")]
    SameArch {
        a: ArtifactId,
        b: ArtifactId,
        arch: String,
    },
    #[error("the campaign's kind is {spec} but its artifacts are {artifacts}: set \"kind\" to {artifacts} (or --kind {artifacts})")]
    KindMismatch { spec: Kind, artifacts: Kind },
    #[error("the release names {0} artifacts; an announcement carries at most {max} manifests", max = schemas::msg::limits::MAX_RELEASE)]
    TooManyArtifacts(usize),
    #[error("group {0} does not exist: create it first with `ota group put`, or fix the name (`ota group list`)")]
    NoGroup(GroupName),
    #[error("{topic} is held by campaign {other}, which is {state}: a topic carries one campaign at a time; wait until {other} completes or abort it, then start {id}")]
    TopicBusy {
        id: CampaignId,
        other: CampaignId,
        state: &'static str,
        topic: String,
    },
    #[error("start_at {at} is not in the future (now {now}): give a later --start-at, or leave it out and run `ota campaign start`")]
    StartInThePast { at: u64, now: u64 },
    #[error(
        "stop_at {at} is not in the future (now {now}): give a later --stop-at, or leave it out"
    )]
    StopInThePast { at: u64, now: u64 },
    #[error("campaign {id} would reach no device: {why}. Check the groups (`ota group list`, `ota devices list`) and the release's arches; give --allow-empty to create it anyway (devices that register later take part)")]
    NoDevice { id: CampaignId, why: String },
    #[error("campaign {0} is not standing: retarget moves a factory line's standing campaign to a newer release; for another campaign, create a new one")]
    NotStanding(CampaignId),
    #[error("campaign {id} has ended ({state}): nothing to retarget; create a new standing campaign (or `ota line put`)")]
    RetargetEnded { id: CampaignId, state: &'static str },
    #[error("the new release is {new} where campaign {id} installs {old}: a retarget keeps the component")]
    RetargetComponent {
        id: CampaignId,
        old: String,
        new: String,
    },
    #[error("an emergency needs a target: give --groups G,H or --all, not both and not neither")]
    EmergencyTarget,
    #[error("{0}")]
    Step(#[from] StepError),
    #[error("{0}")]
    FollowUp(#[from] super::followup::FollowUpError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Publish(#[from] PublishError),
}
