//! `campaign plan`: what a campaign would do, computed from the fleet as
//! it is now and changing nothing. Per wave: the devices it admits, by
//! group and arch; which of them will download, which will not (no
//! manifest for their arch, already on the version, below `min_version`,
//! above it without `allow_downgrade`); the bytes the block server sends;
//! and an estimate of the download time from the pacer's measured rate.
//!
//! The byte figures assume one broadcast pass of each artifact per wave
//! (every downloader of a wave shares it, PROTOCOL.md "Blocks") and count
//! no unicast repairs, so they are a lower bound; `delivered_bytes` is what
//! the broker hands out (one image per downloading device). The duration
//! is that of the downloads of the devices online now, at the measured
//! delivery rate: it leaves out installs, reboots and devices coming
//! online later, and the docs state its error.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};

use schemas::msg::delta::FEATURE_DELTA_ZSTD;
use schemas::msg::manifest::ANY_ARCH;
use schemas::msg::WireMessage as _;
use schemas::version::cmp_precedence;
use schemas::{ArtifactId, DeviceId, GroupName};
use serde::{Deserialize, Serialize};

use super::members::Admission;
use super::record::Release;
use super::spec::CampaignSpec;
use super::window::WindowOutlook;
use crate::fleet::Fleet;

/// The deliveries per second assumed when the pacer has not measured a
/// rate yet (nothing downloaded since the bridge started).
pub const DEFAULT_RATE: u64 = 15_000;

/// What a manifest says about who may install it.
#[derive(Debug, Clone, Default)]
pub struct ArchRules {
    pub min_version: Option<String>,
    pub allow_downgrade: bool,
}

/// Why an admitted device will not download.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// No manifest for its arch: reports `incompatible_arch`.
    pub uncovered: u32,
    /// Already runs the version: reports `success` (already installed).
    pub on_target: u32,
    /// Runs less than the manifest's `min_version`: reports `min_version`.
    pub below_min_version: u32,
    /// Runs a higher version and the manifest has no `allow_downgrade`:
    /// reports `version_rejected`.
    pub would_downgrade: u32,
}

impl Skipped {
    fn add(&mut self, o: &Skipped) {
        self.uncovered += o.uncovered;
        self.on_target += o.on_target;
        self.below_min_version += o.below_min_version;
        self.would_downgrade += o.would_downgrade;
    }
}

/// One wave of the plan: the devices it admits beyond the waves before.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WavePlan {
    /// 0-based.
    pub wave: usize,
    pub cohorts: BTreeMap<GroupName, u16>,
    /// Devices admitted by the end of this wave (its members).
    pub members: u32,
    /// Devices this wave adds.
    pub new: u32,
    /// Of the new ones, by group (a device in two target groups counts in
    /// each) and by arch.
    pub by_group: BTreeMap<GroupName, u32>,
    pub by_arch: BTreeMap<String, u32>,
    /// New devices that will download, and those online now.
    pub downloads: u32,
    pub online: u32,
    pub skipped: Skipped,
    /// One broadcast pass of each artifact a new device downloads.
    pub broadcast_bytes: u64,
    /// One image to each downloading device.
    pub delivered_bytes: u64,
    /// E3: of the downloads, those that take a delta (the device lists
    /// `delta-zstd` and runs a delta's from_version), and the bytes they
    /// spare against the full image (delivered; broadcast in
    /// `broadcast_bytes` already counts one pass of each delta).
    #[serde(default)]
    pub delta_downloads: u32,
    #[serde(default)]
    pub delta_saved_bytes: u64,
    /// The online downloaders' blocks at the pacing rate, in seconds.
    pub download_secs: u64,
}

/// E3: one delta of the release over every wave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeltaPlan {
    pub artifact: ArtifactId,
    pub arch: String,
    pub from_version: String,
    /// Downloads that take it (devices listing `delta-zstd` on its
    /// from_version), and the bytes they spare against the full image.
    pub downloads: u32,
    pub saved_bytes: u64,
}

/// The whole plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub waves: Vec<WavePlan>,
    /// Devices the last wave admits (`create`'s pre-flight `targeted`).
    pub targeted: u32,
    pub downloads: u32,
    pub skipped: Skipped,
    pub broadcast_bytes: u64,
    pub delivered_bytes: u64,
    /// E3: each delta of the release (in its order), over every wave.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deltas: Vec<DeltaPlan>,
    /// Deliveries per second the estimate used, and whether the pacer
    /// measured it (false: [`DEFAULT_RATE`], nothing measured yet).
    pub rate: u64,
    pub rate_measured: bool,
    /// The wave timeout: a wave never waits longer for its devices.
    pub wave_timeout_secs: u64,
    /// When it starts by itself and when it expires (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_at: Option<u64>,
    /// The groups' maintenance windows as they stand now: the waves of a
    /// group run only inside its window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<WindowOutlook>,
}

/// Each release entry's rules, read from its stored manifest (verified
/// when it was uploaded); an entry that does not read has none.
pub fn rules_of(release: &Release) -> BTreeMap<ArtifactId, ArchRules> {
    release
        .entries
        .iter()
        .filter_map(|e| {
            let payload = schemas::cose::peek_payload(&e.manifest)?;
            let m = schemas::msg::Manifest::decode(&payload).ok()?;
            let rules = ArchRules {
                min_version: m.min_version,
                allow_downgrade: m.allow_downgrade,
            };
            Some((e.artifact.clone(), rules))
        })
        .collect()
}

/// Computes the plan of `spec` with `release` over `fleet`. `rules` holds
/// each artifact's `min_version` and `allow_downgrade`; `rate` is the
/// pacer's measured deliveries per second (0: not measured).
pub fn compute(
    fleet: &Fleet,
    spec: &CampaignSpec,
    release: &Release,
    rules: &BTreeMap<ArtifactId, ArchRules>,
    rate: u64,
) -> Plan {
    let (rate, rate_measured) = if rate > 0 {
        (rate, true)
    } else {
        (DEFAULT_RATE, false)
    };
    let mut plan = Plan {
        rate,
        rate_measured,
        wave_timeout_secs: spec.gates.wave_timeout_secs,
        start_at: spec.start_at,
        stop_at: spec.stop_at,
        deltas: release
            .deltas
            .iter()
            .map(|x| DeltaPlan {
                artifact: x.artifact.clone(),
                arch: x.arch.clone(),
                from_version: x.from_version.clone(),
                downloads: 0,
                saved_bytes: 0,
            })
            .collect(),
        ..Plan::default()
    };
    let waves = spec.waves.len().max(1);
    let mut before: crate::sharded::ShardedSet<DeviceId> = Default::default();
    for w in 0..waves {
        let cohorts = spec.cohorts_at(w);
        let members = Admission {
            campaign: &spec.id,
            cohorts: &cohorts,
            emergency: spec.emergency,
        }
        .members(fleet);
        let mut wp = WavePlan {
            wave: w,
            members: count(members.len()),
            ..WavePlan::default()
        };
        let mut deliveries: u64 = 0;
        let mut broadcast: HashSet<&ArtifactId> = HashSet::new();
        let mut new: Vec<&DeviceId> = members.iter().filter(|d| !before.contains(*d)).collect();
        new.sort();
        for id in new {
            let Some(d) = fleet.device(id) else { continue };
            wp.new += 1;
            for g in fleet.groups_of(id) {
                if cohorts.contains_key(&g) {
                    *wp.by_group.entry(g).or_default() += 1;
                }
            }
            *wp.by_arch.entry(d.arch.clone()).or_default() += 1;
            let entry = release
                .entries
                .iter()
                .find(|e| e.arch == d.arch)
                .or_else(|| release.entries.iter().find(|e| e.arch == ANY_ARCH));
            let Some(entry) = entry else {
                wp.skipped.uncovered += 1;
                continue;
            };
            let r = rules.get(&entry.artifact).cloned().unwrap_or_default();
            let installed = d.versions.get(release.component.as_str());
            let order = installed.map(|v| cmp_precedence(v, &release.version));
            if order == Some(Ordering::Equal) {
                wp.skipped.on_target += 1;
                continue;
            }
            if order == Some(Ordering::Greater) && !r.allow_downgrade {
                wp.skipped.would_downgrade += 1;
                continue;
            }
            if let (Some(min), Some(v)) = (&r.min_version, installed) {
                if cmp_precedence(v, min) == Ordering::Less {
                    wp.skipped.below_min_version += 1;
                    continue;
                }
            }
            wp.downloads += 1;
            // E3: the delta a device with the feature on its from_version
            // takes (the bridge cannot see its image's hash: counted as
            // fitting).
            let delta = installed
                .filter(|_| d.features.iter().any(|f| f == FEATURE_DELTA_ZSTD))
                .and_then(|v| {
                    release
                        .deltas
                        .iter()
                        .position(|x| x.target == entry.artifact && x.from_version == v)
                });
            let (artifact, size, blocks) = match delta {
                Some(i) => {
                    let x = &release.deltas[i];
                    let saved = entry.size.saturating_sub(x.size);
                    wp.delta_downloads += 1;
                    wp.delta_saved_bytes += saved;
                    if let Some(dp) = plan.deltas.get_mut(i) {
                        dp.downloads += 1;
                        dp.saved_bytes += saved;
                    }
                    (&x.artifact, x.size, x.blocks)
                }
                None => (&entry.artifact, entry.size, entry.blocks),
            };
            wp.delivered_bytes += size;
            if broadcast.insert(artifact) {
                wp.broadcast_bytes += size;
            }
            if d.online {
                wp.online += 1;
                deliveries += u64::from(blocks);
            }
        }
        wp.cohorts = cohorts;
        wp.download_secs = deliveries.div_ceil(rate);
        plan.downloads += wp.downloads;
        plan.skipped.add(&wp.skipped);
        plan.broadcast_bytes += wp.broadcast_bytes;
        plan.delivered_bytes += wp.delivered_bytes;
        plan.targeted = wp.members;
        before = members;
        plan.waves.push(wp);
    }
    plan
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::members::tests::fleet;
    use crate::campaign::record::ReleaseEntry;
    use crate::campaign::spec::{Kind, WaveSpec};
    use schemas::{CampaignId, ComponentName};

    fn release(arches: &[&str]) -> Release {
        Release {
            kind: Kind::Firmware,
            component: ComponentName::new("main").unwrap(),
            version: "2.0.0".into(),
            entries: arches
                .iter()
                .map(|a| ReleaseEntry {
                    artifact: ArtifactId::new(format!("fw-{a}")).unwrap(),
                    arch: a.to_string(),
                    size: 10_000,
                    blocks: 10,
                    manifest: vec![],
                })
                .collect(),
            deltas: Vec::new(),
        }
    }

    fn spec(waves: &[&[(&str, u16)]]) -> CampaignSpec {
        CampaignSpec::new(
            CampaignId::new("camp-1").unwrap(),
            Kind::Firmware,
            vec![ArtifactId::new("fw-esp32").unwrap()],
            waves.iter().map(|w| WaveSpec::of(w)).collect(),
        )
    }

    #[test]
    fn waves_add_devices_and_bytes_once() {
        // acme: 10 devices, globex: 4; half esp32, half armv7 (the test
        // fleet alternates), main 1.0.0; online but for acme-000.
        let mut f = fleet(&[("acme", 10), ("globex", 4)]);
        let ids: Vec<DeviceId> = f.devices().map(|d| d.id.clone()).collect();
        for id in ids.iter().filter(|id| id.as_str() != "acme-000") {
            f.presence(id, true, 2);
        }
        let s = spec(&[&[("acme", 10000)], &[("acme", 10000), ("globex", 10000)]]);
        let p = compute(&f, &s, &release(&["esp32"]), &BTreeMap::new(), 100);
        assert_eq!(p.waves.len(), 2);
        assert_eq!((p.waves[0].members, p.waves[0].new), (10, 10));
        assert_eq!((p.waves[1].members, p.waves[1].new), (14, 4));
        assert_eq!(p.targeted, 14);
        // armv7 is not in the release.
        assert_eq!(p.skipped.uncovered, 7);
        assert_eq!(p.downloads, 7);
        assert_eq!(p.waves[0].broadcast_bytes, 10_000, "one pass a wave");
        assert_eq!(p.waves[0].delivered_bytes, 5 * 10_000);
        // 4 online downloaders x 10 blocks at 100 a second.
        assert_eq!(p.waves[0].online, 4);
        assert_eq!(p.waves[0].download_secs, 1);
        let p = compute(&f, &s, &release(&["esp32"]), &BTreeMap::new(), 10);
        assert_eq!(p.waves[0].download_secs, 4);
        assert!(p.rate_measured);
        assert_eq!(p.waves[1].by_group[&GroupName::new("globex").unwrap()], 4);
    }

    #[test]
    fn deltas_count_where_they_apply() {
        // acme: 8 devices on main 1.0.0, half esp32; esp32 devices 0 and 2
        // list delta-zstd, 4 and 6 do not; armv7 ones are not covered.
        let mut f = fleet(&[("acme", 8)]);
        for i in [0, 2] {
            let id = DeviceId::new(format!("acme-{i:03}")).unwrap();
            let mut h = crate::campaign::members::tests::hello("esp32", "acme");
            h.features = vec![FEATURE_DELTA_ZSTD.into()];
            f.hello(&id, &h, 2);
        }
        let mut r = release(&["esp32"]);
        let delta = |from: &str| crate::campaign::record::DeltaEntry {
            artifact: ArtifactId::new(format!("fw-esp32.from-{from}")).unwrap(),
            arch: "esp32".into(),
            from_version: from.into(),
            size: 700,
            blocks: 1,
            target: ArtifactId::new("fw-esp32").unwrap(),
            manifest: vec![],
        };
        r.deltas = vec![delta("0.9.0"), delta("1.0.0")];
        let s = spec(&[&[("acme", 10000)]]);
        let p = compute(&f, &s, &r, &BTreeMap::new(), 100);
        let w = &p.waves[0];
        assert_eq!((w.downloads, w.delta_downloads), (4, 2));
        assert_eq!(w.delta_saved_bytes, 2 * (10_000 - 700));
        assert_eq!(w.delivered_bytes, 2 * 10_000 + 2 * 700);
        // One pass of the full image and one of the 1.0.0 delta.
        assert_eq!(w.broadcast_bytes, 10_000 + 700);
        // Per delta, over the waves: none takes the one from 0.9.0.
        let per: Vec<(&str, u32, u64)> = p
            .deltas
            .iter()
            .map(|x| (x.from_version.as_str(), x.downloads, x.saved_bytes))
            .collect();
        assert_eq!(per, [("0.9.0", 0, 0), ("1.0.0", 2, 2 * (10_000 - 700))]);
    }

    #[test]
    fn devices_that_cannot_take_it_are_named() {
        let f = fleet(&[("acme", 4)]);
        let s = spec(&[&[("acme", 10000)]]);
        let mut rules = BTreeMap::new();
        rules.insert(
            ArtifactId::new("fw-any").unwrap(),
            ArchRules {
                min_version: Some("1.5.0".into()),
                allow_downgrade: false,
            },
        );
        let p = compute(&f, &s, &release(&["any"]), &rules, 0);
        assert_eq!(p.skipped.below_min_version, 4);
        assert_eq!(p.downloads, 0);
        assert!(!p.rate_measured);
        assert_eq!(p.rate, DEFAULT_RATE);
        // Already on 2.0.0 / above it.
        let mut r = release(&["any"]);
        r.version = "1.0.0".into();
        let p = compute(&f, &s, &r, &BTreeMap::new(), 0);
        assert_eq!(p.skipped.on_target, 4);
        r.version = "0.9.0".into();
        let p = compute(&f, &s, &r, &BTreeMap::new(), 0);
        assert_eq!(p.skipped.would_downgrade, 4);
    }
}
