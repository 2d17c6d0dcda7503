//! Follow-ups: which devices a `campaign retry` takes from a campaign that
//! ended, and the spec of the new draft; and the rollback campaign a halt
//! starts (`--rollback-release`), with its pre-flight. Pure: the ops and
//! state layers put the explicit group and create the campaign.
//!
//! A leftover is a member of the campaign's last wave that did not
//! succeed and was not counted apart as not applicable:
//!
//! | `--only` | the members… |
//! |---|---|
//! | `timed-out` | with no terminal state (pending when the campaign ended, offline or not) |
//! | `offline` | with no terminal state and offline now |
//! | `failed` | that failed or rolled back, any error |
//! | `failed:{error}` | that failed with that error code, e.g. `failed:timeout` |
//!
//! Nothing given means `timed-out` and `failed`. Devices counted apart
//! (wrong arch, unknown component, version rules, cancelled) are never
//! leftovers: retrying would refuse the same way.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::fmt;

use schemas::msg::common::Outcome;
use schemas::msg::{ErrorCode, StatusState};
use schemas::version::cmp_precedence;
use schemas::{ArtifactId, CampaignId, DeviceId, GroupName};

use super::record::Release;
use super::spec::{CampaignSpec, RollbackSpec, WaveSpec, FULL_COHORT};
use super::tally::Tally;

/// One `--only` class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leftover {
    TimedOut,
    Offline,
    Failed(Option<ErrorCode>),
}

impl fmt::Display for Leftover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Leftover::TimedOut => f.write_str("timed-out"),
            Leftover::Offline => f.write_str("offline"),
            Leftover::Failed(None) => f.write_str("failed"),
            Leftover::Failed(Some(e)) => write!(f, "failed:{}", e.as_str()),
        }
    }
}

/// Why a retry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FollowUpError {
    #[error("--only {0:?} is not a leftover class: use timed-out, offline, failed or failed:ERROR (e.g. failed:timeout)")]
    UnknownClass(String),
    #[error("--only failed:{0}: no such error code; the codes are those of PROTOCOL.md's Status (timeout, install_failed, boot_failed, hash_mismatch, ...)")]
    UnknownError(String),
    #[error(
        "campaign {0} is still {1}: retry the leftovers once it completed, halted or was aborted"
    )]
    NotEnded(CampaignId, &'static str),
    #[error("campaign {id} has no leftovers of {only}: nothing to retry")]
    Nothing { id: CampaignId, only: String },
    #[error("{0} is already a group or a campaign: give the follow-up another id with --id")]
    Taken(String),
    #[error("the rollback release is for component {component}, the campaign's for {main}: roll back the same component")]
    RollbackComponent { component: String, main: String },
    #[error("the rollback release is version {version}, not below the campaign's {main}: a rollback goes back to an earlier version")]
    NotADowngrade { version: String, main: String },
    #[error("rollback artifact {0} was not signed with allow_downgrade, so devices would refuse it: sign the earlier image again with `ota artifact sign --allow-downgrade` and push it")]
    NoAllowDowngrade(ArtifactId),
    #[error("campaign {0} has no rollback release: create it with --rollback-release")]
    NoRollback(CampaignId),
    #[error("campaign {0} was already rolled back by {1}")]
    RolledBack(CampaignId, CampaignId),
    #[error("campaign {0} is a draft: nothing was installed, nothing to roll back")]
    RollbackDraft(CampaignId),
    #[error("no device installed campaign {0}'s release (none reported success or rebooting): nothing to roll back")]
    NothingInstalled(CampaignId),
}

impl Leftover {
    /// Parses the `only` list of a retry; empty means the default.
    pub fn parse_all(only: &[String]) -> Result<Vec<Leftover>, FollowUpError> {
        if only.is_empty() {
            return Ok(vec![Leftover::TimedOut, Leftover::Failed(None)]);
        }
        only.iter().map(|s| Leftover::parse(s.trim())).collect()
    }

    fn parse(s: &str) -> Result<Leftover, FollowUpError> {
        match s {
            "timed-out" | "timed_out" | "timeout" => Ok(Leftover::TimedOut),
            "offline" => Ok(Leftover::Offline),
            "failed" => Ok(Leftover::Failed(None)),
            _ => match s.strip_prefix("failed:") {
                Some(code) => ErrorCode::parse(code)
                    .map(|e| Leftover::Failed(Some(e)))
                    .ok_or_else(|| FollowUpError::UnknownError(code.to_string())),
                None => Err(FollowUpError::UnknownClass(s.to_string())),
            },
        }
    }
}

/// The members of `tally` in any of the `only` classes, by id.
pub fn leftovers(
    tally: &Tally,
    only: &[Leftover],
    online: impl Fn(&DeviceId) -> bool,
) -> BTreeSet<DeviceId> {
    tally
        .members()
        .iter()
        .filter(|d| {
            let report = tally.get(d);
            let outcome = report.and_then(|r| r.outcome());
            only.iter().any(|class| match class {
                Leftover::TimedOut => outcome.is_none(),
                Leftover::Offline => outcome.is_none() && !online(d),
                Leftover::Failed(code) => {
                    outcome == Some(Outcome::Failure)
                        && code.is_none_or(|c| {
                            report.is_some_and(|r| {
                                r.error == Some(c) && r.state == StatusState::Failed
                            })
                        })
                }
            })
        })
        .cloned()
        .collect()
}

/// The id a follow-up of `id` takes when none is given.
pub fn default_id(id: &CampaignId) -> Option<CampaignId> {
    let base = id.as_str();
    // Ids are at most 64 characters: keep room for the suffix.
    let cut = base.len().min(64 - "-retry".len());
    CampaignId::new(format!("{}-retry", &base[..cut])).ok()
}

/// The draft of a follow-up: `parent`'s release, kind and gates, one wave
/// taking the whole explicit `group`.
pub fn retry_spec(parent: &CampaignSpec, id: CampaignId, group: GroupName) -> CampaignSpec {
    let waves = vec![WaveSpec {
        cohorts: [(group, FULL_COHORT)].into(),
    }];
    CampaignSpec {
        gates: parent.gates,
        parent: Some(parent.id.clone()),
        ..CampaignSpec::new(id, parent.kind, parent.release.clone(), waves)
    }
}

/// The id a retarget of standing campaign `id` takes when none is given:
/// `{id}-r2`, then `-r3` for a `-r2`, and so on.
pub fn retarget_id(id: &CampaignId) -> Option<CampaignId> {
    let s = id.as_str();
    let (base, n) = match s.rsplit_once("-r") {
        Some((b, n)) if !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()) => {
            (b, n.parse::<u32>().ok()?)
        }
        _ => (s, 1),
    };
    let suffix = format!("-r{}", n + 1);
    let cut = base.len().min(64 - suffix.len());
    CampaignId::new(format!("{}{suffix}", &base[..cut])).ok()
}

/// The standing campaign that takes over from `old` with `release`.
pub fn retarget_spec(old: &CampaignSpec, id: CampaignId, release: Vec<ArtifactId>) -> CampaignSpec {
    CampaignSpec {
        id,
        release,
        parent: Some(old.id.clone()),
        start_at: None,
        ..old.clone()
    }
}

/// The id of `id`'s rollback campaign (and of its group).
pub fn rollback_id(id: &CampaignId) -> Option<CampaignId> {
    let base = id.as_str();
    let cut = base.len().min(64 - "-rollback".len());
    CampaignId::new(format!("{}-rollback", &base[..cut])).ok()
}

/// The rollback campaign of `parent`: its rollback release, over one
/// explicit `group`, in the rollback's waves, with the parent's gates. It
/// rolls back; it has no rollback of its own.
pub fn rollback_spec(
    parent: &CampaignSpec,
    rb: &RollbackSpec,
    id: CampaignId,
    group: GroupName,
) -> CampaignSpec {
    CampaignSpec {
        gates: parent.gates,
        parent: Some(parent.id.clone()),
        ..CampaignSpec::new(id, parent.kind, rb.release.clone(), rb.wave_specs(&group))
    }
}

/// Pre-flight of a rollback release against the campaign's: the same
/// component, an earlier version, and every manifest signed with
/// `allow_downgrade` (`allows` says so of an artifact). Signing a
/// downgrade is the release key owner's decision, made offline: the
/// bridge only checks it was made.
pub fn check_rollback(
    main: &Release,
    rb: &Release,
    allows: impl Fn(&ArtifactId) -> bool,
) -> Result<(), FollowUpError> {
    if rb.component != main.component {
        return Err(FollowUpError::RollbackComponent {
            component: rb.component.to_string(),
            main: main.component.to_string(),
        });
    }
    if cmp_precedence(&rb.version, &main.version) != Ordering::Less {
        return Err(FollowUpError::NotADowngrade {
            version: rb.version.clone(),
            main: main.version.clone(),
        });
    }
    if let Some(e) = rb.entries.iter().find(|e| !allows(&e.artifact)) {
        return Err(FollowUpError::NoAllowDowngrade(e.artifact.clone()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::tally::Report;
    use crate::testutil::device as d;

    fn tally() -> Tally {
        let mut t = Tally::new();
        t.set_members(
            [
                "ok",
                "fail-t",
                "fail-i",
                "arch",
                "quiet-on",
                "quiet-off",
                "none",
            ]
            .into_iter()
            .map(d)
            .collect(),
        );
        let put = |t: &mut Tally, id, state, error| {
            t.report(&d(id), Report::new(state, error, None, 0));
        };
        put(&mut t, "ok", StatusState::Success, None);
        put(
            &mut t,
            "fail-t",
            StatusState::Failed,
            Some(ErrorCode::Timeout),
        );
        put(
            &mut t,
            "fail-i",
            StatusState::Failed,
            Some(ErrorCode::InstallFailed),
        );
        put(
            &mut t,
            "arch",
            StatusState::Failed,
            Some(ErrorCode::IncompatibleArch),
        );
        put(&mut t, "quiet-on", StatusState::Downloading, None);
        put(&mut t, "quiet-off", StatusState::Accepted, None);
        // A non-member's report is never a leftover.
        put(&mut t, "stranger", StatusState::Failed, None);
        t
    }

    fn pick(only: &[&str]) -> Vec<String> {
        let only: Vec<String> = only.iter().map(|s| s.to_string()).collect();
        let classes = Leftover::parse_all(&only).unwrap();
        leftovers(&tally(), &classes, |id| id.as_str() != "quiet-off")
            .into_iter()
            .map(|d| d.to_string())
            .collect()
    }

    #[test]
    fn each_class_takes_exactly_its_devices() {
        assert_eq!(
            pick(&[]),
            ["fail-i", "fail-t", "none", "quiet-off", "quiet-on"]
        );
        assert_eq!(pick(&["timed-out"]), ["none", "quiet-off", "quiet-on"]);
        assert_eq!(pick(&["offline"]), ["quiet-off"]);
        assert_eq!(pick(&["failed"]), ["fail-i", "fail-t"]);
        assert_eq!(pick(&["failed:timeout"]), ["fail-t"]);
        assert_eq!(
            pick(&["failed:timeout", "offline"]),
            ["fail-t", "quiet-off"]
        );
    }

    #[test]
    fn unknown_classes_say_what_is_accepted() {
        let e = Leftover::parse_all(&["crashed".into()]).unwrap_err();
        assert!(e.to_string().contains("timed-out, offline, failed"), "{e}");
        let e = Leftover::parse_all(&["failed:gremlins".into()]).unwrap_err();
        assert!(matches!(e, FollowUpError::UnknownError(_)), "{e}");
    }

    #[test]
    fn the_default_id_fits() {
        let id = CampaignId::new("fw-2").unwrap();
        assert_eq!(default_id(&id).unwrap().as_str(), "fw-2-retry");
        let long = CampaignId::new("x".repeat(64)).unwrap();
        assert_eq!(default_id(&long).unwrap().as_str().len(), 64);
    }

    #[test]
    fn retarget_ids_count_up() {
        let next = |s: &str| {
            retarget_id(&CampaignId::new(s).unwrap())
                .unwrap()
                .to_string()
        };
        assert_eq!(next("line-3"), "line-3-r2");
        assert_eq!(next("line-3-r2"), "line-3-r3");
        assert_eq!(next("line-3-r9"), "line-3-r10");
        assert_eq!(next("fw-r"), "fw-r-r2");
        assert_eq!(next(&"x".repeat(64)).len(), 64);
    }
}
