//! What the bridge keeps about one campaign: the operator's spec, the
//! release as it was resolved at create (each manifest's exact signed
//! bytes, so announcements never depend on the artifact store again), the
//! pre-flight, the gate, and the result of every wave that ended. One JSON
//! record per campaign in the `campaigns` tree ([`super::store`]).

use std::collections::BTreeMap;

use schemas::ids::{ArtifactId, CampaignId, ComponentName};
use schemas::keys::Kid;
use schemas::msg::manifest::ANY_ARCH;
use serde::{Deserialize, Serialize};

use super::gate::{Gate, HaltReason, PassRule, Phase, WaveCounts};
use super::preflight::Preflight;
use super::spec::{CampaignSpec, Kind};

/// One manifest of the release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseEntry {
    pub artifact: ArtifactId,
    pub arch: String,
    pub size: u64,
    pub blocks: u32,
    /// The COSE_Sign1 manifest exactly as signed (hex in the JSON record).
    #[serde(with = "schemas::hex_bytes")]
    pub manifest: Vec<u8>,
}

/// One delta manifest (E3) of a release entry: devices on `from_version`
/// may download it instead of the full image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaEntry {
    pub artifact: ArtifactId,
    pub arch: String,
    pub from_version: String,
    /// The payload's bytes and blocks.
    pub size: u64,
    pub blocks: u32,
    /// The full image's artifact it rebuilds.
    pub target: ArtifactId,
    #[serde(with = "schemas::hex_bytes")]
    pub manifest: Vec<u8>,
}

/// The release a campaign rolls out: one manifest per arch, one kind,
/// component and version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub kind: Kind,
    pub component: ComponentName,
    pub version: String,
    /// In the order the spec lists them (the order of `release` on the wire).
    pub entries: Vec<ReleaseEntry>,
    /// E3: the pushed deltas of the entries, found at create (the order of
    /// `deltas` on the wire). Absent in records written before E3.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deltas: Vec<DeltaEntry>,
}

impl Release {
    /// The architectures it covers (`any` included when present).
    pub fn arches(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.arch.as_str())
    }

    /// The kid that signed the manifest a device of `arch` would take (its
    /// arch's, else `any`), read from the stored manifest (verified when it
    /// was uploaded).
    pub fn signer_of(&self, arch: &str) -> Option<Kid> {
        let entry = self
            .entries
            .iter()
            .find(|e| e.arch == arch)
            .or_else(|| self.entries.iter().find(|e| e.arch == ANY_ARCH))?;
        schemas::release::read_unverified(&entry.manifest)?.kid
    }

    /// Every kid that signed one of its manifests, hex, sorted, once each.
    pub fn signers(&self) -> Vec<String> {
        let kids: std::collections::BTreeSet<String> = self
            .entries
            .iter()
            .filter_map(|e| schemas::release::read_unverified(&e.manifest)?.kid)
            .map(|k| schemas::keys::kid_to_hex(&k))
            .collect();
        kids.into_iter().collect()
    }

    /// The release entries as an announcement carries them.
    pub fn manifests(&self) -> Vec<Vec<u8>> {
        self.entries.iter().map(|e| e.manifest.clone()).collect()
    }

    /// The delta manifests as an announcement carries them.
    pub fn delta_manifests(&self) -> Vec<Vec<u8>> {
        self.deltas.iter().map(|e| e.manifest.clone()).collect()
    }

    /// Every artifact devices may download: full images, then deltas.
    pub fn artifacts(&self) -> impl Iterator<Item = &ArtifactId> {
        self.entries
            .iter()
            .map(|e| &e.artifact)
            .chain(self.deltas.iter().map(|d| &d.artifact))
    }
}

/// How a wave ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum WaveEnd {
    Passed {
        at: u64,
        rule: PassRule,
        counts: WaveCounts,
    },
    Halted {
        at: u64,
        reason: HaltReason,
        counts: WaveCounts,
    },
}

/// One campaign as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignRecord {
    pub spec: CampaignSpec,
    pub release: Release,
    /// Unix seconds of the create.
    pub created: u64,
    /// Who it targeted at create, by arch.
    pub preflight: Preflight,
    pub gate: Gate,
    /// Each wave's latest ending (a halted wave that was resumed and passed
    /// shows as passed), by 0-based wave index.
    #[serde(default)]
    pub waves: BTreeMap<usize, WaveEnd>,
    /// The release that rolls back the devices that installed this one
    /// (`--rollback-release`), resolved at create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Release>,
    /// The rollback campaign, once started (at most one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_child: Option<CampaignId>,
}

impl CampaignRecord {
    pub fn id(&self) -> &CampaignId {
        &self.spec.id
    }

    /// True for the emergency lane.
    pub fn is_emergency(&self) -> bool {
        self.spec.emergency
    }

    /// Started and not yet completed or aborted: it owns its announcement
    /// topics and its counts are live.
    pub fn is_live(&self) -> bool {
        !matches!(self.gate.phase(), Phase::Draft) && !self.gate.is_finished()
    }

    /// A word for the phase: draft, running, soaking, paused, halted,
    /// completed, aborted or expired.
    pub fn state_word(&self) -> &'static str {
        phase_word(self.gate.phase())
    }

    /// Whether the campaign uses `artifact` in its release.
    pub fn uses(&self, artifact: &ArtifactId) -> bool {
        self.release.artifacts().any(|a| a == artifact)
    }
}

/// A word for a phase.
pub fn phase_word(p: &Phase) -> &'static str {
    match p {
        Phase::Draft => "draft",
        Phase::Running { .. } => "running",
        Phase::Soaking { .. } => "soaking",
        Phase::Standing { .. } => "standing",
        Phase::Paused { .. } => "paused",
        Phase::Halted { .. } => "halted",
        Phase::Completed { .. } => "completed",
        Phase::Aborted { .. } => "aborted",
        Phase::Expired { .. } => "expired",
    }
}

/// The wire kind of a spec kind.
pub fn wire_kind(k: Kind) -> schemas::msg::Kind {
    match k {
        Kind::Firmware => schemas::msg::Kind::Firmware,
        Kind::App => schemas::msg::Kind::App,
        Kind::Config => schemas::msg::Kind::Config,
    }
}

/// The spec kind of a wire kind.
pub fn spec_kind(k: schemas::msg::Kind) -> Kind {
    match k {
        schemas::msg::Kind::Firmware => Kind::Firmware,
        schemas::msg::Kind::App => Kind::App,
        schemas::msg::Kind::Config => Kind::Config,
    }
}
