//! What an operator asks for: the campaign spec sent as JSON in
//! `campaign create`, its validation, and the cohorts each wave admits.
//!
//! ```json
//! {
//!   "id": "camp-2026-001",
//!   "kind": "firmware",
//!   "release": ["fw-2.1.0-esp32", "fw-2.1.0-armv7"],
//!   "waves": [
//!     { "cohorts": { "canary": 10000 } },
//!     { "cohorts": { "acme": 1000 } },
//!     { "cohorts": { "acme": 10000, "globex": 10000 } }
//!   ],
//!   "gates": { "soak_secs": 300 }
//! }
//! ```
//!
//! Cohorts are basis points (0..=10000) of a group admitted so far: a device
//! takes part when `bucket(campaign, device) < cohort` (PROTOCOL.md, "Which
//! devices take part"). A wave names the groups whose cohort it raises;
//! groups it does not name keep the cohort of the wave before. `gates` and
//! each of its fields may be left out and take their defaults.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use schemas::ids::{ArtifactId, CampaignId, GroupName};
use serde::{Deserialize, Serialize};

use super::window::{Window, WindowError};

/// The whole group: 100.00 % in basis points.
pub const FULL_COHORT: u16 = 10_000;

/// What a release replaces on the devices. Serialized lowercase, as on the
/// wire (`"firmware"`, `"app"`, `"config"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = CampaignKind)]
pub enum Kind {
    Firmware,
    App,
    Config,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Firmware => "firmware",
            Kind::App => "app",
            Kind::Config => "config",
        })
    }
}

/// A campaign as an operator creates it. Check it with
/// [`CampaignSpec::validate`] before anything else uses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignSpec {
    pub id: CampaignId,
    pub kind: Kind,
    /// Pushed artifacts, one per architecture, all of the same kind and
    /// component (the bridge checks that against its artifact store).
    pub release: Vec<ArtifactId>,
    /// Empty only for an emergency campaign that targets every device.
    #[serde(default)]
    pub waves: Vec<WaveSpec>,
    #[serde(default)]
    pub gates: Gates,
    /// The emergency lane: no waves, no success gating (see `gate`). Its
    /// target is the groups of its single wave (each at 10000), or every
    /// device (`P/emergency`) when it has no wave.
    #[serde(default)]
    pub emergency: bool,
    /// The campaign this one follows up (`campaign retry`): shown in
    /// `status` and `list`, and nothing else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<CampaignId>,
    /// What to do when the campaign halts: roll back the devices that
    /// installed it (`--rollback-release`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackSpec>,
    /// Unix seconds: the draft starts by itself then (`--start-at`).
    /// `campaign start` before it starts it at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<u64>,
    /// Unix seconds: no wave widens after it; the campaign ends `expired`
    /// (`--stop-at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_at: Option<u64>,
    /// Maintenance windows by target group (`--window 'G=Mon-Fri
    /// 22:00-05:00 Europe/Brussels'`, see `campaign::window`): outside its
    /// window a group is announced `paused`. Not for an emergency.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "unique_keys::deserialize"
    )]
    pub windows: BTreeMap<GroupName, String>,
    /// A standing campaign (a factory line's, `--standing`): it never
    /// completes, keeps admitting devices that join its groups, and halts
    /// on the failure rate of its latest `halt_window` results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standing: Option<StandingSpec>,
    /// Create it even though no registered device would take it (its
    /// groups match no device, or none has an arch the release covers):
    /// refused without it (`--allow-empty`). A standing campaign may
    /// always start empty: a line has no device before production.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_empty: bool,
}

impl CampaignSpec {
    /// A campaign of `release` in `waves`, every option at its default:
    /// the default gates, not an emergency, no parent, rollback, schedule,
    /// windows or standing. Set the others with `..CampaignSpec::new(..)`.
    pub fn new(id: CampaignId, kind: Kind, release: Vec<ArtifactId>, waves: Vec<WaveSpec>) -> Self {
        CampaignSpec {
            id,
            kind,
            release,
            waves,
            gates: Gates::default(),
            emergency: false,
            parent: None,
            rollback: None,
            start_at: None,
            stop_at: None,
            windows: BTreeMap::new(),
            standing: None,
            allow_empty: false,
        }
    }
}

/// What makes a campaign standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StandingSpec {
    /// The failure rate is judged over the latest this many results
    /// (success or failure), 1 to 100000. Default 50.
    #[serde(default = "default_halt_window")]
    pub halt_window: u32,
}

fn default_halt_window() -> u32 {
    50
}

impl Default for StandingSpec {
    fn default() -> Self {
        StandingSpec {
            halt_window: default_halt_window(),
        }
    }
}

/// The automatic rollback of a campaign: a release pushed like any other,
/// whose manifests are an earlier version with `allow_downgrade`, sent to
/// exactly the devices that installed the campaign's release, when it
/// halts (or on `campaign rollback`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackSpec {
    pub release: Vec<ArtifactId>,
    /// The rollback's waves, as rising shares (basis points) of the
    /// devices to roll back, the last 10000; empty: all at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waves: Vec<u16>,
}

/// One wave: the groups whose cohort it raises, and to what.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaveSpec {
    /// Group => cohort in basis points (0..=10000) after this wave.
    #[serde(deserialize_with = "unique_keys::deserialize")]
    pub cohorts: BTreeMap<GroupName, u16>,
}

#[cfg(test)]
impl WaveSpec {
    /// A wave from `(group, cohort)` pairs: the campaign tests' shorthand.
    pub(crate) fn of(cohorts: &[(&str, u16)]) -> WaveSpec {
        WaveSpec {
            cohorts: cohorts
                .iter()
                .map(|&(g, c)| (GroupName::new(g).unwrap(), c))
                .collect(),
        }
    }
}

/// The gates every wave must pass. Missing fields take their defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Gates {
    /// A wave passes when at least this share (basis points) of its
    /// applicable members report success. Default 9500 (95 %).
    pub success_bar_bp: u16,
    /// The campaign halts when more than this share (basis points) of the
    /// decided members failed. Default 500 (5 %). 10000 never halts.
    pub failure_halt_bp: u16,
    /// Decided members needed before the failure rate is judged, and
    /// terminal reports needed for a pass at the wave timeout. Default 10.
    pub min_sample: u32,
    /// How long a wave waits for its members, in seconds. Default 600.
    pub wave_timeout_secs: u64,
    /// How long to watch a passed wave before the next starts. Default 0.
    pub soak_secs: u64,
}

impl Default for Gates {
    fn default() -> Self {
        Gates {
            success_bar_bp: 9500,
            failure_halt_bp: 500,
            min_sample: 10,
            wave_timeout_secs: 600,
            soak_secs: 0,
        }
    }
}

/// Why a spec (or a gates amendment) was refused. Waves are numbered from 1
/// in these messages, as the operator wrote them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("release is empty: name at least one pushed artifact (one per arch)")]
    EmptyRelease,
    #[error("release names artifact {0} twice: list each artifact once")]
    DuplicateArtifact(ArtifactId),
    #[error("no waves: a campaign needs at least one wave, e.g. {{\"cohorts\": {{\"canary\": 10000}}}} (only an emergency campaign has none)")]
    NoWaves,
    #[error("wave {} names no group: give each wave at least one group and its cohort", .wave + 1)]
    EmptyWave { wave: usize },
    #[error("wave {} gives group {group} a cohort of {cohort}: cohorts are basis points, 0 to 10000 (10000 = the whole group)", .wave + 1)]
    CohortOutOfRange {
        wave: usize,
        group: GroupName,
        cohort: u16,
    },
    #[error("wave {} lowers group {group} from {from} to {to}: cohorts only rise from one wave to the next (devices already admitted cannot be taken back)", .wave + 1)]
    CohortLowered {
        wave: usize,
        group: GroupName,
        from: u16,
        to: u16,
    },
    #[error("wave {} raises no group's cohort above wave {}: drop it or raise a cohort", .wave + 1, .wave)]
    WaveRaisesNothing { wave: usize },
    #[error("an emergency campaign has {0} waves: give it none (every device) or one that names its target groups, each at 10000")]
    EmergencyWaves(usize),
    #[error("emergency campaign gives group {group} a cohort of {cohort}: an emergency reaches whole groups, use 10000")]
    EmergencyPartialCohort { group: GroupName, cohort: u16 },
    #[error("rollback.waves {0:?}: give rising shares from 0.01% to 100%, the last 100% (e.g. 10%,100%), or none for all at once")]
    RollbackWaves(Vec<u16>),
    #[error("rollback.release is empty: name the pushed artifacts of the earlier version (one per arch)")]
    EmptyRollback,
    #[error("stop_at {stop_at} is not after start_at {start_at}: give a --stop-at later than the --start-at")]
    StopBeforeStart { start_at: u64, stop_at: u64 },
    #[error("{0}")]
    BadWindow(#[from] WindowError),
    #[error("window for group {0}, which no wave names: give windows to target groups only")]
    WindowNotTarget(GroupName),
    #[error("an emergency campaign has maintenance windows: the emergency lane ignores every window and schedule, drop --window")]
    EmergencyWindows,
    #[error("standing.halt_window is {0}: judge the failure rate over 1 to 100000 latest results (default 50)")]
    HaltWindow(u32),
    #[error("an emergency campaign cannot be standing: a factory line's campaign is a normal one (--standing without --emergency)")]
    EmergencyStanding,
    #[error("gates.{field} is {value}: it must be {expected}")]
    GateOutOfRange {
        field: &'static str,
        value: u64,
        expected: &'static str,
    },
}

impl Gates {
    /// Checks every gate is in range.
    pub fn validate(&self) -> Result<(), SpecError> {
        let out = |field, value: u64, expected| {
            Err(SpecError::GateOutOfRange {
                field,
                value,
                expected,
            })
        };
        if self.success_bar_bp == 0 || self.success_bar_bp > FULL_COHORT {
            return out(
                "success_bar_bp",
                self.success_bar_bp.into(),
                "1 to 10000 basis points (9500 = 95%)",
            );
        }
        if self.failure_halt_bp > FULL_COHORT {
            return out(
                "failure_halt_bp",
                self.failure_halt_bp.into(),
                "0 to 10000 basis points (500 = 5%; 10000 never halts)",
            );
        }
        if self.min_sample == 0 {
            return out("min_sample", 0, "at least 1 device");
        }
        if self.wave_timeout_secs == 0 {
            return out("wave_timeout_secs", 0, "at least 1 second");
        }
        Ok(())
    }
}

impl RollbackSpec {
    /// Checks the release is named and the waves rise to 100 %.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.release.is_empty() {
            return Err(SpecError::EmptyRollback);
        }
        let rising = self.waves.windows(2).all(|w| w[0] < w[1]);
        let ok = self.waves.is_empty()
            || (rising && self.waves[0] > 0 && self.waves.last() == Some(&FULL_COHORT));
        if !ok {
            return Err(SpecError::RollbackWaves(self.waves.clone()));
        }
        Ok(())
    }

    /// The rollback campaign's waves over its one `group`.
    pub fn wave_specs(&self, group: &GroupName) -> Vec<WaveSpec> {
        let steps = if self.waves.is_empty() {
            vec![FULL_COHORT]
        } else {
            self.waves.clone()
        };
        steps
            .into_iter()
            .map(|c| WaveSpec {
                cohorts: [(group.clone(), c)].into(),
            })
            .collect()
    }
}

impl CampaignSpec {
    /// Checks the spec is one the gate can run; the first problem found is
    /// returned.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.release.is_empty() {
            return Err(SpecError::EmptyRelease);
        }
        let mut seen = BTreeSet::new();
        for a in &self.release {
            if !seen.insert(a) {
                return Err(SpecError::DuplicateArtifact(a.clone()));
            }
        }
        self.gates.validate()?;
        if let Some(rb) = &self.rollback {
            rb.validate()?;
        }
        if let (Some(start_at), Some(stop_at)) = (self.start_at, self.stop_at) {
            if stop_at <= start_at {
                return Err(SpecError::StopBeforeStart { start_at, stop_at });
            }
        }
        self.parsed_windows()?;
        if let Some(st) = &self.standing {
            if self.emergency {
                return Err(SpecError::EmergencyStanding);
            }
            if !(1..=100_000).contains(&st.halt_window) {
                return Err(SpecError::HaltWindow(st.halt_window));
            }
        }
        if self.emergency && !self.windows.is_empty() {
            return Err(SpecError::EmergencyWindows);
        }
        if let Some(g) = self
            .windows
            .keys()
            .find(|g| !self.waves.iter().any(|w| w.cohorts.contains_key(*g)))
        {
            return Err(SpecError::WindowNotTarget(g.clone()));
        }
        for (wave, w) in self.waves.iter().enumerate() {
            if w.cohorts.is_empty() {
                return Err(SpecError::EmptyWave { wave });
            }
            for (group, &cohort) in &w.cohorts {
                if cohort > FULL_COHORT {
                    return Err(SpecError::CohortOutOfRange {
                        wave,
                        group: group.clone(),
                        cohort,
                    });
                }
            }
        }
        if self.emergency {
            if self.waves.len() > 1 {
                return Err(SpecError::EmergencyWaves(self.waves.len()));
            }
            for w in &self.waves {
                if let Some((group, &cohort)) = w.cohorts.iter().find(|(_, &c)| c != FULL_COHORT) {
                    return Err(SpecError::EmergencyPartialCohort {
                        group: group.clone(),
                        cohort,
                    });
                }
            }
            return Ok(());
        }
        if self.waves.is_empty() {
            return Err(SpecError::NoWaves);
        }
        let mut before: BTreeMap<&GroupName, u16> = BTreeMap::new();
        for (wave, w) in self.waves.iter().enumerate() {
            let mut raised = false;
            for (group, &to) in &w.cohorts {
                let from = before.get(group).copied().unwrap_or(0);
                if to < from {
                    return Err(SpecError::CohortLowered {
                        wave,
                        group: group.clone(),
                        from,
                        to,
                    });
                }
                raised |= to > from;
                before.insert(group, to);
            }
            if !raised {
                return Err(SpecError::WaveRaisesNothing { wave });
            }
        }
        Ok(())
    }

    /// The maintenance windows, parsed (reads the system's tz database the
    /// first time a zone is named).
    pub fn parsed_windows(&self) -> Result<Vec<(GroupName, Window)>, WindowError> {
        self.windows
            .iter()
            .map(|(g, w)| Ok((g.clone(), w.parse::<Window>()?)))
            .collect()
    }

    /// Every group any wave names.
    pub fn target_groups(&self) -> BTreeSet<GroupName> {
        self.waves
            .iter()
            .flat_map(|w| w.cohorts.keys().cloned())
            .collect()
    }

    /// The cohort of every target group once wave `wave` (0-based) has
    /// started: the value its latest wave up to `wave` gave it, 0 for a
    /// group first named later. An index past the last wave gives the final
    /// cohorts. An emergency campaign with no wave (every device) gives an
    /// empty map.
    pub fn cohorts_at(&self, wave: usize) -> BTreeMap<GroupName, u16> {
        let mut out: BTreeMap<GroupName, u16> =
            self.target_groups().into_iter().map(|g| (g, 0)).collect();
        for w in self.waves.iter().take(wave.saturating_add(1)) {
            for (g, &c) in &w.cohorts {
                out.insert(g.clone(), c);
            }
        }
        out
    }
}

/// Deserializes a map and refuses a key given twice, which a plain
/// `BTreeMap` would silently settle in favour of the last one: a wave with
/// `"acme": 100, "acme": 10000` is a typo the operator should hear about.
mod unique_keys {
    use std::collections::BTreeMap;
    use std::fmt;

    use serde::de::{Deserialize, Deserializer, Error, MapAccess, Visitor};

    pub fn deserialize<'de, D, K, V>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        D: Deserializer<'de>,
        K: Deserialize<'de> + Ord + fmt::Display,
        V: Deserialize<'de>,
    {
        struct Unique<K, V>(std::marker::PhantomData<(K, V)>);

        impl<'de, K, V> Visitor<'de> for Unique<K, V>
        where
            K: Deserialize<'de> + Ord + fmt::Display,
            V: Deserialize<'de>,
        {
            type Value = BTreeMap<K, V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of group name to cohort (basis points)")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, v)) = m.next_entry::<K, V>()? {
                    if out.contains_key(&k) {
                        return Err(A::Error::custom(format_args!(
                            "group {k} is given twice in one wave: give it once"
                        )));
                    }
                    out.insert(k, v);
                }
                Ok(out)
            }
        }

        d.deserialize_map(Unique(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{artifact as a, group as g};

    fn spec() -> CampaignSpec {
        CampaignSpec::new(
            CampaignId::new("camp-1").unwrap(),
            Kind::Firmware,
            vec![a("fw-esp32"), a("fw-armv7")],
            vec![
                WaveSpec::of(&[("canary", 10000)]),
                WaveSpec::of(&[("acme", 1000)]),
                WaveSpec::of(&[("acme", 10000), ("globex", 10000)]),
            ],
        )
    }

    #[test]
    fn json_with_defaults() {
        let s: CampaignSpec = serde_json::from_str(
            r#"{"id":"camp-1","kind":"firmware","release":["fw-esp32","fw-armv7"],
                "waves":[{"cohorts":{"canary":10000}},{"cohorts":{"acme":1000}},
                         {"cohorts":{"acme":10000,"globex":10000}}],
                "gates":{"soak_secs":300}}"#,
        )
        .unwrap();
        assert_eq!(
            s.gates,
            Gates {
                soak_secs: 300,
                ..Gates::default()
            }
        );
        assert_eq!(
            Gates::default(),
            Gates {
                success_bar_bp: 9500,
                failure_halt_bp: 500,
                min_sample: 10,
                wave_timeout_secs: 600,
                soak_secs: 0
            }
        );
        assert!(!s.emergency);
        assert_eq!(s, spec_with_soak(300));
        s.validate().unwrap();
        let back: CampaignSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    fn spec_with_soak(soak: u64) -> CampaignSpec {
        let mut s = spec();
        s.gates.soak_secs = soak;
        s
    }

    #[test]
    fn json_refusals_name_the_problem() {
        let cases = [
            (
                r#"{"id":"c","kind":"firmware","release":["a"],"wavez":[]}"#,
                "unknown field `wavez`",
            ),
            (
                r#"{"id":"c","kind":"firmware","release":["a"],"gates":{"bar":1}}"#,
                "unknown field `bar`",
            ),
            (
                r#"{"id":"c","kind":"blob","release":["a"]}"#,
                "unknown variant `blob`",
            ),
            (
                r#"{"id":"c","kind":"app","release":["a"],"waves":[{"cohorts":{"x":1,"x":2}}]}"#,
                "group x is given twice",
            ),
            (
                r#"{"id":"c","kind":"app","release":["a"],"waves":[{"cohorts":{"a/b":1}}]}"#,
                "group name",
            ),
            (
                r#"{"id":"c","kind":"app","release":["a"],"waves":[{"cohorts":{"x":70000}}]}"#,
                "invalid value",
            ),
        ];
        for (json, want) in cases {
            let err = serde_json::from_str::<CampaignSpec>(json)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{json}: {err}");
        }
    }

    #[test]
    fn validation_table() {
        type Edit = fn(&mut CampaignSpec);
        let cases: &[(Edit, Option<SpecError>)] = &[
            (|_| {}, None),
            (|s| s.release.clear(), Some(SpecError::EmptyRelease)),
            (
                |s| s.release.push(a("fw-esp32")),
                Some(SpecError::DuplicateArtifact(a("fw-esp32"))),
            ),
            (|s| s.waves.clear(), Some(SpecError::NoWaves)),
            (
                |s| s.waves.push(WaveSpec::default()),
                Some(SpecError::EmptyWave { wave: 3 }),
            ),
            (
                |s| s.waves[1] = WaveSpec::of(&[("acme", 10001)]),
                Some(SpecError::CohortOutOfRange {
                    wave: 1,
                    group: g("acme"),
                    cohort: 10001,
                }),
            ),
            (
                |s| s.waves[2] = WaveSpec::of(&[("acme", 500), ("globex", 10000)]),
                Some(SpecError::CohortLowered {
                    wave: 2,
                    group: g("acme"),
                    from: 1000,
                    to: 500,
                }),
            ),
            (
                |s| s.waves.push(WaveSpec::of(&[("canary", 10000)])),
                Some(SpecError::WaveRaisesNothing { wave: 3 }),
            ),
            (
                |s| s.waves[0] = WaveSpec::of(&[("canary", 0)]),
                Some(SpecError::WaveRaisesNothing { wave: 0 }),
            ),
            (
                |s| s.gates.success_bar_bp = 0,
                Some(SpecError::GateOutOfRange {
                    field: "success_bar_bp",
                    value: 0,
                    expected: "1 to 10000 basis points (9500 = 95%)",
                }),
            ),
            (|s| s.gates.success_bar_bp = 10000, None),
            (|s| s.gates.failure_halt_bp = 10000, None),
            (|s| s.gates.failure_halt_bp = 0, None),
        ];
        for (i, (edit, want)) in cases.iter().enumerate() {
            let mut s = spec();
            edit(&mut s);
            assert_eq!(s.validate().err(), *want, "case {i}");
        }
        let out_of_range: &[(Edit, &str)] = &[
            (|s| s.gates.failure_halt_bp = 10001, "failure_halt_bp"),
            (
                |s| {
                    s.gates = Gates {
                        min_sample: 0,
                        ..Gates::default()
                    }
                },
                "min_sample",
            ),
            (
                |s| {
                    s.gates = Gates {
                        wave_timeout_secs: 0,
                        ..Gates::default()
                    }
                },
                "wave_timeout_secs",
            ),
        ];
        for (edit, field) in out_of_range {
            let mut s = spec();
            edit(&mut s);
            assert!(
                matches!(
                    s.validate(),
                    Err(SpecError::GateOutOfRange { field: f, .. }) if f == *field
                ),
                "{field}"
            );
        }
    }

    #[test]
    fn messages_number_waves_from_one() {
        let e = SpecError::CohortLowered {
            wave: 2,
            group: g("acme"),
            from: 1000,
            to: 500,
        };
        assert_eq!(
            e.to_string(),
            "wave 3 lowers group acme from 1000 to 500: cohorts only rise from one wave to the next (devices already admitted cannot be taken back)"
        );
        assert_eq!(
            SpecError::WaveRaisesNothing { wave: 3 }.to_string(),
            "wave 4 raises no group's cohort above wave 3: drop it or raise a cohort"
        );
    }

    #[test]
    fn emergency_rules() {
        let mut s = spec();
        s.emergency = true;
        assert_eq!(s.validate(), Err(SpecError::EmergencyWaves(3)));
        s.waves.clear();
        assert_eq!(s.validate(), Ok(()), "no wave: every device");
        assert!(s.cohorts_at(0).is_empty());
        s.waves = vec![WaveSpec::of(&[("acme", 10000), ("globex", 10000)])];
        assert_eq!(s.validate(), Ok(()));
        s.waves = vec![WaveSpec::of(&[("acme", 10000), ("globex", 5000)])];
        assert_eq!(
            s.validate(),
            Err(SpecError::EmergencyPartialCohort {
                group: g("globex"),
                cohort: 5000
            })
        );
    }

    #[test]
    fn cohorts_accumulate() {
        let s = spec();
        let at = |k| -> Vec<(String, u16)> {
            s.cohorts_at(k)
                .into_iter()
                .map(|(g, c)| (g.into_string(), c))
                .collect()
        };
        let v = |x: &[(&str, u16)]| -> Vec<(String, u16)> {
            x.iter().map(|&(g, c)| (g.to_string(), c)).collect()
        };
        assert_eq!(at(0), v(&[("acme", 0), ("canary", 10000), ("globex", 0)]));
        assert_eq!(
            at(1),
            v(&[("acme", 1000), ("canary", 10000), ("globex", 0)])
        );
        assert_eq!(
            at(2),
            v(&[("acme", 10000), ("canary", 10000), ("globex", 10000)])
        );
        assert_eq!(at(7), at(2));
        assert_eq!(at(usize::MAX), at(2));
    }
}
