//! The JSON shapes of campaign replies (`campaign create/start/.../status`
//! return a [`CampaignStatus`], `campaign list` a [`CampaignList`]), which
//! the CLI reads back through the operator client (`OpsClient::call_ok`).

use std::collections::BTreeMap;

use schemas::{ArtifactId, CampaignId, ComponentName, DeviceId, GroupName};
use serde::{Deserialize, Serialize};

use super::gate::{DecisionKind, Phase, WaveCounts};
use super::line::{self, LineView};
use super::members::Admission;
use super::preflight::Preflight;
use super::record::{CampaignRecord, Release, WaveEnd};
use super::spec::{Gates, Kind};
use super::tally::{Breakdown, Tally};
use super::window::{WindowOutlook, Windows};
use crate::fleet::Fleet;

/// One line of `campaign list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CampaignSummary {
    pub id: CampaignId,
    pub kind: Kind,
    pub emergency: bool,
    /// draft, running, soaking, paused, halted, completed, aborted or expired.
    pub state: String,
    /// The current wave (0-based), once started.
    pub wave: Option<usize>,
    pub waves: usize,
    pub component: ComponentName,
    pub version: String,
    pub created: u64,
    /// The current wave's live tally: what its devices reported so far.
    pub counts: Option<WaveCounts>,
    /// The tally the gate last judged (its verdict's counts): behind
    /// `counts` until the next decision, frozen once the wave ended.
    pub verdict_counts: Option<WaveCounts>,
    /// The campaign this one follows up (`campaign retry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<CampaignId>,
    /// When a scheduled draft starts by itself (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<u64>,
    /// The campaign that rolls this one back, once started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<CampaignId>,
    /// The version its rollback release (`--rollback-release`) goes back
    /// to; absent when it has none, and `ota campaign rollback` refuses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolls_back_to: Option<String>,
    /// When the campaign expires (Unix seconds), until it has ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_at: Option<u64>,
    /// A standing campaign (a factory line's): never completes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub standing: bool,
    /// The groups its waves name.
    #[serde(default)]
    pub target_groups: Vec<GroupName>,
}

/// `campaign list`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CampaignList {
    pub campaigns: Vec<CampaignSummary>,
}

/// One artifact of the release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ArtifactLine {
    pub artifact: ArtifactId,
    pub arch: String,
    pub size: u64,
    pub blocks: u32,
}

/// E3: one path through the release, and the current wave's members
/// whose latest report names it (what they took, whatever its outcome).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PathLine {
    /// The full image, or a delta of it.
    pub artifact: ArtifactId,
    pub arch: String,
    /// The delta's from_version; absent for a full image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_version: Option<String>,
    pub devices: u32,
}

/// One wave of the plan and how it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WaveView {
    /// 0-based.
    pub wave: usize,
    /// Cumulative cohorts once this wave started, basis points.
    pub cohorts: BTreeMap<GroupName, u16>,
    /// pending, running, soaking, paused, halted, passed, aborted or expired.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<WaveEnd>,
}

/// The current wave's members in one target group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupProgress {
    pub group: GroupName,
    /// The group's cohort at the current wave, basis points.
    pub cohort: u16,
    /// Registered devices in the group.
    pub devices: u32,
    /// Its members of the current wave, by state and error.
    pub members: Breakdown,
}

/// `campaign status` (and the reply of every campaign command).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CampaignStatus {
    #[serde(flatten)]
    pub summary: CampaignSummary,
    pub phase: Phase,
    pub gates: Gates,
    /// When the gate next looks at the clock (wave timeout or soak end).
    pub next_timer: Option<u64>,
    pub release: Vec<ArtifactLine>,
    pub plan: Vec<WaveView>,
    /// Per target group (empty for an emergency to every device).
    pub groups: Vec<GroupProgress>,
    /// Every member of the current wave, by state and error.
    pub current: Option<Breakdown>,
    pub preflight: Preflight,
    pub history: Vec<DecisionLine>,
    /// The maintenance window of each group that has one: open now or
    /// not, and when that changes next.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<WindowOutlook>,
    /// E3, when the release has deltas and a wave has started: how many
    /// of the current wave's members took each artifact, the full images
    /// first, then the deltas.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathLine>,
    /// A standing campaign's line: today, in total, over its window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<LineView>,
    /// The bridge's clock when this was made (Unix seconds).
    pub now: u64,
}

/// One decision of the campaign's log, as the status reply shows it: the
/// data and its English.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DecisionLine {
    pub at: u64,
    pub wave: Option<usize>,
    pub text: String,
    pub decision: DecisionKind,
}

/// The summary of a record; `live` is its tally's counts when loaded.
pub fn summary(r: &CampaignRecord, live: Option<WaveCounts>) -> CampaignSummary {
    CampaignSummary {
        id: r.id().clone(),
        kind: r.release.kind,
        emergency: r.is_emergency(),
        state: r.state_word().to_string(),
        wave: r.gate.current_wave(),
        waves: r.gate.wave_count(),
        component: r.release.component.clone(),
        version: r.release.version.clone(),
        created: r.created,
        counts: live.or_else(|| r.gate.counts().copied()),
        verdict_counts: r.gate.counts().copied(),
        parent: r.spec.parent.clone(),
        rollback: r.rollback_child.clone(),
        rolls_back_to: r.rollback.as_ref().map(|rb| rb.version.clone()),
        start_at: r
            .spec
            .start_at
            .filter(|_| matches!(r.gate.phase(), super::gate::Phase::Draft)),
        stop_at: r.gate.stop_at().filter(|_| !r.gate.is_finished()),
        standing: r.gate.is_standing(),
        target_groups: r.spec.target_groups().into_iter().collect(),
    }
}

/// The full status of a record, with `tally` for the live breakdowns.
pub fn status(
    r: &CampaignRecord,
    tally: &Tally,
    fleet: &Fleet,
    windows: &Windows,
    now: u64,
) -> CampaignStatus {
    let gate = &r.gate;
    let current = gate.current_wave();
    let plan = (0..gate.wave_count())
        .map(|w| WaveView {
            wave: w,
            cohorts: gate.cohorts(w).clone(),
            state: wave_state(gate.phase(), w, current, r.waves.get(&w)).to_string(),
            end: r.waves.get(&w).cloned(),
        })
        .collect();
    let mut groups = Vec::new();
    let mut current_breakdown = None;
    if let Some(w) = current {
        let cohorts = gate.cohorts(w);
        let admission = Admission {
            campaign: r.id(),
            cohorts,
            emergency: r.is_emergency(),
        };
        if !admission.everyone() {
            for (g, cohort, members) in group_members(cohorts, tally, fleet) {
                groups.push(GroupProgress {
                    group: g.clone(),
                    cohort,
                    devices: u32::try_from(fleet.count_in(g)).unwrap_or(u32::MAX),
                    members: tally.breakdown(members),
                });
            }
        }
        current_breakdown = Some(tally.members_breakdown());
    }
    CampaignStatus {
        summary: summary(r, current_breakdown.as_ref().map(|b: &Breakdown| b.counts)),
        phase: gate.phase().clone(),
        gates: *gate.gates(),
        next_timer: gate.next_timer(),
        release: r
            .release
            .entries
            .iter()
            .map(|e| ArtifactLine {
                artifact: e.artifact.clone(),
                arch: e.arch.clone(),
                size: e.size,
                blocks: e.blocks,
            })
            .collect(),
        plan,
        groups,
        current: current_breakdown,
        preflight: r.preflight.clone(),
        history: gate
            .history()
            .iter()
            .map(|d| DecisionLine {
                at: d.at,
                wave: d.wave,
                text: gate.scope().text(d),
                decision: d.kind.clone(),
            })
            .collect(),
        windows: windows.outlook(now),
        paths: if current.is_some() {
            paths(&r.release, tally)
        } else {
            Vec::new()
        },
        line: r.spec.standing.map(|st| {
            line::view(
                tally,
                st.halt_window,
                |d| fleet.device(d).map(|r| r.first_seen),
                now,
            )
        }),
        now,
    }
}

/// The current wave's members in each cohort group, from the smaller
/// side (issue 19): visiting every device of the groups costs a first wave
/// of 1 % of 1,000,000 devices a million lookups, so when the members are
/// fewer they are visited instead, each by the groups it was last sent
/// (its published membership, which is behind the index only while a
/// group put's memberships are still going out).
fn group_members<'a>(
    cohorts: &'a BTreeMap<GroupName, u16>,
    tally: &'a Tally,
    fleet: &'a Fleet,
) -> Vec<(&'a GroupName, u16, Vec<&'a DeviceId>)> {
    let in_groups: usize = cohorts.keys().map(|g| fleet.count_in(g)).sum();
    if tally.members().len() >= in_groups {
        return cohorts
            .iter()
            .map(|(g, &c)| {
                (
                    g,
                    c,
                    fleet.ids_in(g).filter(|id| tally.is_member(id)).collect(),
                )
            })
            .collect();
    }
    let mut by_group: BTreeMap<&GroupName, Vec<&DeviceId>> =
        cohorts.keys().map(|g| (g, Vec::new())).collect();
    for d in tally.members() {
        for g in fleet.published(d).unwrap_or(&[]) {
            if let Some(list) = by_group.get_mut(g) {
                list.push(d);
            }
        }
    }
    by_group
        .into_iter()
        .map(|(g, list)| (g, cohorts[g], list))
        .collect()
}

/// The paths of `release` with the members of `tally` on each; none when
/// the release has no delta (every device takes the full image).
pub fn paths(release: &Release, tally: &Tally) -> Vec<PathLine> {
    if release.deltas.is_empty() {
        return Vec::new();
    }
    let full = release.entries.iter().map(|e| (&e.artifact, &e.arch, None));
    let deltas = release
        .deltas
        .iter()
        .map(|x| (&x.artifact, &x.arch, Some(&x.from_version)));
    full.chain(deltas)
        .map(|(artifact, arch, from)| PathLine {
            artifact: artifact.clone(),
            arch: arch.clone(),
            from_version: from.cloned(),
            devices: tally.took(artifact),
        })
        .collect()
}

fn wave_state(
    phase: &Phase,
    wave: usize,
    current: Option<usize>,
    end: Option<&WaveEnd>,
) -> &'static str {
    let Some(cur) = current else {
        return "pending";
    };
    if wave > cur {
        return match phase {
            Phase::Aborted { .. } => "aborted",
            _ => "pending",
        };
    }
    if wave < cur {
        return "passed";
    }
    match phase {
        Phase::Draft => "pending",
        Phase::Running { .. } => "running",
        Phase::Soaking { .. } => "soaking",
        Phase::Standing { .. } => "standing",
        Phase::Paused { .. } => "paused",
        Phase::Halted { .. } => "halted",
        Phase::Completed { .. } => "passed",
        Phase::Expired { .. } => "expired",
        Phase::Aborted { .. } => match end {
            Some(WaveEnd::Passed { .. }) => "passed",
            _ => "aborted",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::record::{DeltaEntry, ReleaseEntry};
    use crate::campaign::spec::Kind;
    use crate::campaign::tally::Report;
    use crate::testutil::artifact as a;
    use schemas::msg::StatusState;
    use schemas::ComponentName;

    #[test]
    fn paths_count_members_by_the_artifact_they_took() {
        let delta = |from: &str| DeltaEntry {
            artifact: a(&format!("fw-2.0.0-from-{from}")),
            arch: "esp32".into(),
            from_version: from.into(),
            size: 700,
            blocks: 1,
            target: a("fw-2.0.0"),
            manifest: vec![],
        };
        let mut release = Release {
            kind: Kind::Firmware,
            component: ComponentName::new("main").unwrap(),
            version: "2.0.0".into(),
            entries: vec![ReleaseEntry {
                artifact: a("fw-2.0.0"),
                arch: "esp32".into(),
                size: 10_000,
                blocks: 10,
                manifest: vec![],
            }],
            deltas: Vec::new(),
        };
        let mut t = Tally::new();
        let ids: Vec<DeviceId> = (0..6)
            .map(|i| DeviceId::new(format!("dev-{i}")).unwrap())
            .collect();
        t.set_members(ids.iter().cloned().collect());
        let took = [
            "fw-2.0.0",
            "fw-2.0.0",
            "fw-2.0.0-from-1.0.0",
            "fw-2.0.0-from-1.1.0",
        ];
        for (d, artifact) in ids.iter().zip(took) {
            t.report(
                d,
                Report::new(StatusState::Success, None, None, 0).with_artifact(Some(a(artifact))),
            );
        }
        // Without deltas there is one path: none is shown.
        assert!(paths(&release, &t).is_empty());
        release.deltas = vec![delta("1.0.0"), delta("1.1.0"), delta("0.9.0")];
        let got: Vec<(String, Option<String>, u32)> = paths(&release, &t)
            .into_iter()
            .map(|p| (p.artifact.to_string(), p.from_version, p.devices))
            .collect();
        let line = |s: &str, from: Option<&str>, n| (s.to_string(), from.map(str::to_string), n);
        assert_eq!(
            got,
            vec![
                line("fw-2.0.0", None, 2),
                line("fw-2.0.0-from-1.0.0", Some("1.0.0"), 1),
                line("fw-2.0.0-from-1.1.0", Some("1.1.0"), 1),
                line("fw-2.0.0-from-0.9.0", Some("0.9.0"), 0),
            ]
        );
        // Older replies, without the field, still read.
        let json = serde_json::json!({"artifact": "fw-2.0.0", "arch": "esp32", "devices": 3});
        let p: PathLine = serde_json::from_value(json).unwrap();
        assert_eq!(p.from_version, None);
    }

    /// The members of each cohort group are the same found from either
    /// side: by visiting the groups, or the (fewer) members.
    #[test]
    fn group_members_from_either_side_agree() {
        use crate::campaign::members::tests::fleet;
        let mut f = fleet(&[("acme", 40), ("globex", 30)]);
        f.put_group(
            crate::fleet::Group::new(GroupName::new("all").unwrap(), Some("customer"), None, 1)
                .unwrap(),
        );
        f.membership_changes(None);
        let cohorts = crate::testutil::cohorts(&[("acme", 5000), ("all", 1000)]);
        let mut t = Tally::new();
        let few: crate::sharded::ShardedSet<DeviceId> = f
            .devices()
            .map(|d| d.id.clone())
            .filter(|id| id.as_str().ends_with('3') || id.as_str().ends_with('7'))
            .collect();
        t.set_members(few);
        let sorted =
            |v: Vec<(&GroupName, u16, Vec<&DeviceId>)>| -> Vec<(String, u16, Vec<String>)> {
                v.into_iter()
                    .map(|(g, c, mut m)| {
                        m.sort();
                        (g.to_string(), c, m.iter().map(|d| d.to_string()).collect())
                    })
                    .collect()
            };
        let got = sorted(group_members(&cohorts, &t, &f));
        let want: Vec<(String, u16, Vec<String>)> = cohorts
            .iter()
            .map(|(g, &c)| {
                let m = f
                    .ids_in(g)
                    .filter(|id| t.is_member(id))
                    .map(|d| d.to_string())
                    .collect();
                (g.to_string(), c, m)
            })
            .collect();
        assert!(t.members().len() < 70);
        assert_eq!(got, want);
        assert_eq!(got[1].2.len(), t.members().len(), "every member is in all");
    }
}
