//! The gate and the clock of the calendar: `stop_at` and maintenance
//! windows ([`Input::Windows`]).

use super::super::spec::{Kind, WaveSpec};
use super::*;
use crate::testutil::group as g;
use schemas::ids::ArtifactId;

const T0: u64 = 1_000_000;

/// Two waves: line-3 at 10 %, then line-3 and line-4 at 100 %. Sample 1,
/// timeout 600 s.
fn spec(stop_at: Option<u64>) -> CampaignSpec {
    let wave = WaveSpec::of;
    CampaignSpec {
        gates: Gates {
            min_sample: 1,
            ..Gates::default()
        },
        stop_at,
        ..CampaignSpec::new(
            CampaignId::new("line-fw").unwrap(),
            Kind::Firmware,
            vec![ArtifactId::new("fw-esp32").unwrap()],
            vec![
                wave(&[("line-3", 1000)]),
                wave(&[("line-3", 10000), ("line-4", 10000)]),
            ],
        )
    }
}

fn started(stop_at: Option<u64>) -> Gate {
    let mut gate = Gate::new(&spec(stop_at)).unwrap();
    gate.step(T0, Input::Start).unwrap();
    gate
}

fn closed(groups: &[&str]) -> Input {
    Input::Windows {
        closed: groups.iter().map(|s| g(s)).collect(),
    }
}

fn counts(members: u32, success: u32, failure: u32) -> WaveCounts {
    WaveCounts {
        members,
        success,
        failure,
        not_applicable: 0,
        pending: members - success - failure,
        ..WaveCounts::default()
    }
}

fn announcement(fx: &[Effect]) -> Option<&Announcement> {
    fx.iter().find_map(|e| match e {
        Effect::Announce(a) => Some(a),
        _ => None,
    })
}

#[test]
fn stop_at_expires_a_running_campaign_and_keeps_its_announcement() {
    let mut gate = started(Some(T0 + 100));
    gate.step(
        T0 + 10,
        Input::Counts {
            wave: 0,
            counts: counts(4, 1, 0),
        },
    )
    .unwrap();
    assert_eq!(
        gate.next_timer(),
        Some(T0 + 100),
        "stop_at before the timeout"
    );
    assert!(gate.step(T0 + 99, Input::Tick).unwrap().is_empty());
    let fx = gate.step(T0 + 100, Input::Tick).unwrap();
    assert!(
        fx.iter()
            .any(|f| matches!(f, Effect::Expired { wave: 0, counts } if counts.success == 1)),
        "{fx:?}"
    );
    assert!(
        announcement(&fx).is_none(),
        "nothing new announced: downloads finish"
    );
    assert_eq!(
        gate.phase(),
        &Phase::Expired {
            at: T0 + 100,
            wave: 0,
            announced: AnnounceState::Active
        }
    );
    assert!(gate.is_finished());
    assert_eq!(gate.next_timer(), None);
    let a = gate.announcement().unwrap();
    assert_eq!(
        (a.state, a.cohorts[&g("line-3")]),
        (AnnounceState::Active, 1000)
    );
    // Nothing widens after it: a pass that comes later starts no wave.
    let fx = gate
        .step(
            T0 + 200,
            Input::Counts {
                wave: 0,
                counts: counts(4, 4, 0),
            },
        )
        .unwrap();
    assert!(fx.is_empty(), "{fx:?}");
    assert!(gate.step(T0 + 300, Input::Resume).is_err());
    let text = gate.scope().text(gate.history().last().unwrap());
    assert!(text.starts_with("campaign expired at"), "{text}");
}

#[test]
fn stop_at_keeps_a_halted_campaign_paused_and_refuses_a_late_start() {
    let mut gate = started(Some(T0 + 100));
    gate.step(
        T0 + 10,
        Input::Counts {
            wave: 0,
            counts: counts(4, 0, 4),
        },
    )
    .unwrap();
    assert!(matches!(gate.phase(), Phase::Halted { .. }));
    gate.step(T0 + 100, Input::Tick).unwrap();
    assert!(matches!(
        gate.phase(),
        Phase::Expired {
            announced: AnnounceState::Paused,
            ..
        }
    ));
    assert_eq!(gate.announcement().unwrap().state, AnnounceState::Paused);

    let mut draft = Gate::new(&spec(Some(T0 + 100))).unwrap();
    let e = draft.step(T0 + 100, Input::Start).unwrap_err().to_string();
    assert!(e.contains("stop_at has passed"), "{e}");
}

#[test]
fn a_closed_window_pauses_its_group_only() {
    let mut gate = started(None);
    let fx = gate.step(T0 + 5, closed(&["line-4"])).unwrap();
    let a = announcement(&fx).expect("announced");
    assert_eq!(a.state, AnnounceState::Active);
    assert_eq!(a.state_on(&g("line-4")), AnnounceState::Paused);
    assert_eq!(a.state_on(&g("line-3")), AnnounceState::Active);
    // One group of two closed: the wave's clock runs on.
    assert_eq!(gate.next_timer(), Some(T0 + 600));
    // The same windows again change nothing.
    assert!(gate.step(T0 + 6, closed(&["line-4"])).unwrap().is_empty());
}

#[test]
fn the_wave_timeout_stands_still_while_every_window_is_closed() {
    let mut gate = started(None);
    gate.step(T0 + 100, closed(&["line-3", "line-4"])).unwrap();
    assert!(matches!(
        gate.phase(),
        Phase::Running {
            held_since: Some(t),
            ..
        } if *t == T0 + 100
    ));
    assert_eq!(gate.next_timer(), None, "no timeout while held");
    // Far past the original deadline: still running, not judged.
    assert!(gate.step(T0 + 5000, Input::Tick).unwrap().is_empty());
    let text = gate.scope().text(gate.history().last().unwrap());
    assert!(text.contains("the wave timeout stands still"), "{text}");
    // It opens 5000 s later: the 500 s left still apply.
    let fx = gate.step(T0 + 5100, closed(&[])).unwrap();
    assert_eq!(
        announcement(&fx).map(|a| a.state_on(&g("line-3"))),
        Some(AnnounceState::Active)
    );
    assert_eq!(gate.next_timer(), Some(T0 + 600 + 5000));
    // A pause while held keeps what was left at the close.
    let mut held = started(None);
    held.step(T0 + 100, closed(&["line-3", "line-4"])).unwrap();
    held.step(T0 + 400, Input::Pause).unwrap();
    assert!(matches!(
        held.phase(),
        Phase::Paused {
            from: PausedFrom::Running { remaining: 500, .. },
            ..
        }
    ));
}

#[test]
fn a_wave_that_starts_in_a_closed_window_is_held_from_its_start() {
    let mut gate = started(None);
    gate.step(T0 + 1, closed(&["line-3", "line-4"])).unwrap();
    gate.step(
        T0 + 2,
        Input::Counts {
            wave: 0,
            counts: counts(1, 1, 0),
        },
    )
    .unwrap();
    assert!(matches!(
        gate.phase(),
        Phase::Running {
            wave: 1,
            held_since: Some(_),
            ..
        }
    ));
    let a = gate.announcement().unwrap();
    assert_eq!(a.cohorts[&g("line-4")], 10000, "raised, but paused there");
    assert_eq!(a.state_on(&g("line-4")), AnnounceState::Paused);
}

#[test]
fn an_emergency_ignores_windows() {
    let mut s = spec(None);
    s.emergency = true;
    s.waves = vec![WaveSpec {
        cohorts: [(g("line-3"), 10000)].into_iter().collect(),
    }];
    let mut gate = Gate::new(&s).unwrap();
    gate.step(T0, Input::Start).unwrap();
    assert!(gate.step(T0 + 1, closed(&["line-3"])).unwrap().is_empty());
    let a = gate.announcement().unwrap();
    assert_eq!(a.state_on(&g("line-3")), AnnounceState::Active);
}

#[test]
fn an_old_record_without_windows_or_stop_at_still_loads() {
    let gate = started(None);
    let mut v = serde_json::to_value(&gate).unwrap();
    let o = v.as_object_mut().unwrap();
    o.remove("stop_at");
    o.remove("closed");
    let back: Gate = serde_json::from_value(v).unwrap();
    assert_eq!(back, gate);
}
