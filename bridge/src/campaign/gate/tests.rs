//! The gate's tests: every rule, every phase, and the decisions' texts.

use super::super::spec::{Kind, WaveSpec};
use super::narrate::Pct;
use super::*;
use crate::testutil::group as g;
use schemas::ids::ArtifactId;

const T0: u64 = 1_000_000;

fn spec(gates: Gates) -> CampaignSpec {
    let wave = WaveSpec::of;
    CampaignSpec {
        gates,
        ..CampaignSpec::new(
            CampaignId::new("camp-1").unwrap(),
            Kind::Firmware,
            vec![ArtifactId::new("fw-esp32").unwrap()],
            vec![
                wave(&[("canary", 10000)]),
                wave(&[("acme", 1000)]),
                wave(&[("acme", 10000), ("globex", 10000)]),
            ],
        )
    }
}

/// Defaults: bar 95 %, halt 5 %, sample 10, timeout 600 s, no soak.
fn started(gates: Gates) -> Gate {
    let mut gate = Gate::new(&spec(gates)).unwrap();
    gate.step(T0, Input::Start).unwrap();
    gate
}

fn tally(members: u32, success: u32, failure: u32, not_applicable: u32) -> WaveCounts {
    WaveCounts {
        members,
        success,
        failure,
        not_applicable,
        pending: members - success - failure - not_applicable,
        ..WaveCounts::default()
    }
}

fn count(gate: &mut Gate, now: u64, wave: usize, c: WaveCounts) -> Vec<Effect> {
    gate.step(now, Input::Counts { wave, counts: c }).unwrap()
}

fn started_waves(fx: &[Effect]) -> Vec<usize> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::WaveStarted { wave, .. } => Some(*wave),
            _ => None,
        })
        .collect()
}

fn halt_of(fx: &[Effect]) -> Option<HaltReason> {
    fx.iter().find_map(|e| match e {
        Effect::Halted { reason, .. } => Some(*reason),
        _ => None,
    })
}

fn announced(fx: &[Effect]) -> Vec<(AnnounceState, Vec<(String, u16)>)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Announce(a) => Some((
                a.state,
                a.cohorts.iter().map(|(g, &c)| (g.to_string(), c)).collect(),
            )),
            _ => None,
        })
        .collect()
}

fn running(gate: &Gate) -> Option<usize> {
    match gate.phase() {
        Phase::Running { wave, .. } => Some(*wave),
        _ => None,
    }
}

#[test]
fn start_announces_wave_one() {
    let mut gate = Gate::new(&spec(Gates::default())).unwrap();
    assert_eq!(gate.announcement(), None);
    assert_eq!(gate.next_timer(), None);
    let fx = gate.step(T0, Input::Start).unwrap();
    assert_eq!(started_waves(&fx), vec![0]);
    assert_eq!(
        announced(&fx),
        vec![(
            AnnounceState::Active,
            vec![
                ("acme".into(), 0),
                ("canary".into(), 10000),
                ("globex".into(), 0)
            ]
        )]
    );
    assert_eq!(
        gate.phase(),
        &Phase::Running {
            wave: 0,
            started_at: T0,
            deadline: T0 + 600,
            held_since: None,
        }
    );
    assert_eq!(gate.next_timer(), Some(T0 + 600));
    assert_eq!(gate.announcement().unwrap().deadline, Some(T0 + 600));
    assert_eq!(
        gate.scope().text(&gate.history()[0]),
        "wave 1 of 3 started: raises canary 100.00%; waits until 13:56:40 UTC (600 s)"
    );
}

#[test]
fn wave_two_waits_for_wave_one_bar() {
    let mut gate = started(Gates::default());
    // 18 of 20 succeeded, 2 still pending: 90 % < 95 %.
    assert!(started_waves(&count(&mut gate, T0 + 10, 0, tally(20, 18, 0, 0))).is_empty());
    assert!(gate.step(T0 + 99, Input::Tick).unwrap().is_empty());
    assert_eq!(running(&gate), Some(0));
    let fx = count(&mut gate, T0 + 100, 0, tally(20, 19, 0, 0));
    assert!(fx.contains(&Effect::WavePassed {
        wave: 0,
        rule: PassRule::SuccessBar,
        counts: tally(20, 19, 0, 0)
    }));
    assert_eq!(started_waves(&fx), vec![1]);
    assert_eq!(
        announced(&fx),
        vec![(
            AnnounceState::Active,
            vec![
                ("acme".into(), 1000),
                ("canary".into(), 10000),
                ("globex".into(), 0)
            ]
        )]
    );
    // The new wave waits for its own counts: wave 0's are gone.
    assert_eq!(gate.counts(), None);
    assert_eq!(gate.next_timer(), Some(T0 + 100 + 600));
}

#[test]
fn three_waves_to_completion() {
    let mut gate = started(Gates::default());
    count(&mut gate, T0 + 1, 0, tally(5, 5, 0, 0));
    count(&mut gate, T0 + 2, 1, tally(105, 105, 0, 0));
    let fx = count(&mut gate, T0 + 3, 2, tally(2000, 1950, 10, 20));
    assert_eq!(gate.phase(), &Phase::Completed { at: T0 + 3 });
    assert!(fx.contains(&Effect::Completed {
        counts: tally(2000, 1950, 10, 20)
    }));
    assert!(
        announced(&fx).is_empty(),
        "completion keeps the announcement"
    );
    let a = gate.announcement().unwrap();
    assert_eq!(
        (a.wave, a.state, a.deadline),
        (2, AnnounceState::Active, None)
    );
    assert!(gate.is_finished());
    assert_eq!(gate.next_timer(), None);
    // Late counts of the last wave are kept for reports.
    assert!(count(&mut gate, T0 + 9, 2, tally(2000, 1960, 10, 20)).is_empty());
    assert_eq!(gate.counts(), Some(&tally(2000, 1960, 10, 20)));
}

#[test]
fn failure_halt_waits_for_the_sample() {
    let mut gate = started(Gates::default());
    // 4 failures of 9 decided: a 44 % failure rate, but 9 < min_sample.
    let fx = count(&mut gate, T0 + 5, 0, tally(100, 5, 4, 0));
    assert_eq!(halt_of(&fx), None);
    assert_eq!(running(&gate), Some(0));
    // The 10th decision makes the sample.
    let fx = count(&mut gate, T0 + 6, 0, tally(100, 6, 4, 0));
    assert_eq!(
        halt_of(&fx),
        Some(HaltReason::FailureRate {
            failure: 4,
            decided: 10,
            failure_bp: 4000,
            halt_bp: 500,
            rebooting: 0,
            bound_bp: Some(1942),
            anomaly: 0,
        })
    );
    assert_eq!(announced(&fx)[0].0, AnnounceState::Paused);
    assert!(matches!(gate.phase(), Phase::Halted { wave: 0, .. }));
    assert_eq!(gate.next_timer(), None);
    assert_eq!(
        gate.scope().text(gate.history().last().unwrap()),
        "wave 1 of 3 halted: failure rate 40.00% (4 of 10 decided, 0 rebooting counted as not failed) is above the halt bar 5.00% with 95% confidence (lower bound 19.42%); announced paused, resume or abort"
    );
    // A halted campaign does not move on its own.
    assert!(gate.step(T0 + 10_000, Input::Tick).unwrap().is_empty());
    assert!(count(&mut gate, T0 + 10_001, 0, tally(100, 100, 0, 0)).is_empty());
}

#[test]
fn failure_rate_at_the_bar_does_not_halt() {
    let mut gate = started(Gates::default());
    // 1 of 20 = exactly 5 %: not above.
    let fx = count(&mut gate, T0 + 1, 0, tally(100, 19, 1, 0));
    assert_eq!(halt_of(&fx), None);
    // 2 of 21 = 9.5 %, but its lower bound (3.20 %) is under the bar:
    // 21 devices do not show the rate is above 5 %.
    let fx = count(&mut gate, T0 + 2, 0, tally(100, 19, 2, 0));
    assert_eq!(halt_of(&fx), None);
    // 3 of 22: lower bound 5.58 %.
    let fx = count(&mut gate, T0 + 3, 0, tally(100, 19, 3, 0));
    assert!(matches!(
        halt_of(&fx),
        Some(HaltReason::FailureRate {
            bound_bp: Some(558),
            ..
        })
    ));
}

/// One simulated wave of 200 devices with a true failure rate of
/// `fail_bp`: each finishes its download at a random second; a failing
/// one reports `failed` a second later, a succeeding one reboots then
/// and reports `success` 29 s after that, so failures come first.
/// Returns how many had decided when the gate halted, if it did.
fn simulated_wave(seed: u64, fail_bp: u64, halt_bp: u16) -> Option<u32> {
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).max(1);
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    // (time, event): 0 failed, 1 rebooting, 2 success
    let mut events = Vec::new();
    for _ in 0..200 {
        let done = next() % 100;
        if next() % 10_000 < fail_bp {
            events.push((done + 1, 0));
        } else {
            events.push((done + 1, 1));
            events.push((done + 30, 2));
        }
    }
    events.sort_unstable();
    let mut gate = started(Gates {
        failure_halt_bp: halt_bp,
        success_bar_bp: 9000,
        ..Gates::default()
    });
    let mut c = tally(200, 0, 0, 0);
    for (t, e) in events {
        match e {
            0 => c.failure += 1,
            1 => c.rebooting += 1,
            _ => {
                c.rebooting -= 1;
                c.success += 1;
            }
        }
        c.pending = 200 - c.success - c.failure;
        let fx = count(&mut gate, T0 + t, 0, c);
        if halt_of(&fx).is_some() {
            return Some(c.decided());
        }
        if !started_waves(&fx).is_empty() {
            return None;
        }
    }
    None
}

#[test]
fn injected_faults_below_the_bar_do_not_halt_and_above_it_halt_early() {
    for seed in 1..=40 {
        // 3 % true failure rate, 10 % bar: failures reported first must
        // not halt the wave.
        assert_eq!(simulated_wave(seed, 300, 1000), None, "seed {seed}");
        // 40 %: halts as soon as the sample allows (min_sample 10).
        let at = simulated_wave(seed, 4000, 1000);
        assert!(at.is_some_and(|n| n <= 12), "seed {seed}: {at:?}");
    }
}

#[test]
fn rebooting_devices_count_as_not_failed_until_they_report() {
    let mut gate = started(Gates::default());
    // 3 install failures of 10 decided, while 40 are rebooting into the
    // new image: 3 of 50, lower bound 2.42 %, under the 5 % bar.
    let mut c = tally(100, 7, 3, 0);
    c.rebooting = 40;
    assert_eq!(halt_of(&count(&mut gate, T0 + 1, 0, c)), None);
    // Without them the same 3 of 10 halt.
    c.rebooting = 0;
    assert!(halt_of(&count(&mut gate, T0 + 2, 0, c)).is_some());
}

#[test]
fn small_wave_judged_once_all_decided() {
    let mut gate = started(Gates::default());
    // 3 members, under min_sample: the failure rate waits for all three.
    assert_eq!(
        halt_of(&count(&mut gate, T0 + 1, 0, tally(3, 1, 1, 0))),
        None
    );
    assert!(matches!(
        halt_of(&count(&mut gate, T0 + 2, 0, tally(3, 2, 1, 0))),
        Some(HaltReason::FailureRate { decided: 3, .. })
    ));
}

#[test]
fn timeout_passes_on_enough_terminal_reports() {
    let mut gate = started(Gates::default());
    // 20 of 100 reported, all success; 80 offline.
    count(&mut gate, T0 + 5, 0, tally(100, 20, 0, 0));
    assert!(gate.step(T0 + 599, Input::Tick).unwrap().is_empty());
    let fx = gate.step(T0 + 600, Input::Tick).unwrap();
    assert!(fx.contains(&Effect::WavePassed {
        wave: 0,
        rule: PassRule::AtTimeout,
        counts: tally(100, 20, 0, 0)
    }));
    assert_eq!(started_waves(&fx), vec![1]);
}

#[test]
fn timeout_halts_on_too_few_reports() {
    let mut gate = started(Gates::default());
    count(&mut gate, T0 + 5, 0, tally(100, 9, 0, 0));
    let fx = gate.step(T0 + 700, Input::Tick).unwrap();
    assert_eq!(
        halt_of(&fx),
        Some(HaltReason::TooFewReports {
            terminal: 9,
            min_sample: 10
        })
    );
    assert!(started_waves(&fx).is_empty());
}

#[test]
fn timeout_without_any_counts_halts() {
    let mut gate = started(Gates::default());
    let fx = gate.step(T0 + 600, Input::Tick).unwrap();
    assert_eq!(
        halt_of(&fx),
        Some(HaltReason::TooFewReports {
            terminal: 0,
            min_sample: 10
        })
    );
}

#[test]
fn timeout_halts_under_the_bar() {
    // Halt bar 10 % so that 2 failures of 20 do not halt on their own.
    let mut gate = started(Gates {
        failure_halt_bp: 1000,
        ..Gates::default()
    });
    count(&mut gate, T0 + 5, 0, tally(100, 18, 2, 0));
    assert_eq!(running(&gate), Some(0));
    let fx = gate.step(T0 + 600, Input::Tick).unwrap();
    assert_eq!(
        halt_of(&fx),
        Some(HaltReason::UnderBar {
            success: 18,
            terminal: 20,
            success_bp: 9000,
            bar_bp: 9500
        })
    );
}

#[test]
fn counts_after_the_deadline_are_judged_at_once() {
    // A restarted bridge sends counts first: the timeout rule applies.
    let mut gate = started(Gates::default());
    let fx = count(&mut gate, T0 + 5000, 0, tally(100, 30, 0, 0));
    assert_eq!(started_waves(&fx), vec![1]);
}

#[test]
fn not_applicable_excluded_from_both_rates() {
    // Success: 10 of 20 members, the other 10 not applicable: 100 %.
    let mut gate = started(Gates::default());
    let fx = count(&mut gate, T0 + 1, 0, tally(20, 10, 0, 10));
    assert_eq!(started_waves(&fx), vec![1]);

    // Failure: 3 of 10 decided = 30 % despite 15 not applicable.
    let mut gate = started(Gates::default());
    let fx = count(&mut gate, T0 + 1, 0, tally(30, 7, 3, 15));
    assert!(matches!(
        halt_of(&fx),
        Some(HaltReason::FailureRate {
            decided: 10,
            failure_bp: 3000,
            ..
        })
    ));

    // Sample: not applicable reports are not terminal ones.
    let mut gate = started(Gates::default());
    count(&mut gate, T0 + 1, 0, tally(100, 9, 0, 50));
    let fx = gate.step(T0 + 600, Input::Tick).unwrap();
    assert!(matches!(
        halt_of(&fx),
        Some(HaltReason::TooFewReports { terminal: 9, .. })
    ));
}

#[test]
fn wave_without_applicable_members_passes_at_once() {
    let mut gate = started(Gates::default());
    let fx = count(&mut gate, T0 + 1, 0, tally(0, 0, 0, 0));
    assert!(fx.contains(&Effect::WavePassed {
        wave: 0,
        rule: PassRule::NoApplicableMembers,
        counts: tally(0, 0, 0, 0)
    }));
    let fx = count(&mut gate, T0 + 2, 1, tally(7, 0, 0, 7));
    assert_eq!(started_waves(&fx), vec![2]);
}

#[test]
fn pause_keeps_the_remaining_timeout() {
    let mut gate = started(Gates::default());
    count(&mut gate, T0 + 1, 0, tally(100, 20, 0, 0));
    let fx = gate.step(T0 + 100, Input::Pause).unwrap();
    assert!(fx.contains(&Effect::Paused { wave: 0 }));
    assert_eq!(announced(&fx)[0].0, AnnounceState::Paused);
    assert_eq!(
        gate.phase(),
        &Phase::Paused {
            at: T0 + 100,
            from: PausedFrom::Running {
                wave: 0,
                started_at: T0,
                remaining: 500
            }
        }
    );
    assert_eq!(gate.next_timer(), None);
    // Long past the old deadline: nothing happens while paused, and
    // counts are stored, not judged.
    assert!(gate.step(T0 + 5000, Input::Tick).unwrap().is_empty());
    assert!(count(&mut gate, T0 + 5001, 0, tally(100, 25, 0, 0)).is_empty());
    let fx = gate.step(T0 + 10_000, Input::Resume).unwrap();
    assert!(fx.contains(&Effect::Resumed { wave: 0 }));
    assert_eq!(announced(&fx)[0].0, AnnounceState::Active);
    assert_eq!(gate.next_timer(), Some(T0 + 10_500));
    assert!(gate.step(T0 + 10_499, Input::Tick).unwrap().is_empty());
    let fx = gate.step(T0 + 10_500, Input::Tick).unwrap();
    assert_eq!(
        started_waves(&fx),
        vec![1],
        "25 of 25 terminal pass at the timeout"
    );
}

#[test]
fn resume_judges_counts_that_came_while_paused() {
    let mut gate = started(Gates::default());
    gate.step(T0 + 1, Input::Pause).unwrap();
    count(&mut gate, T0 + 2, 0, tally(10, 10, 0, 0));
    assert!(matches!(gate.phase(), Phase::Paused { .. }));
    let fx = gate.step(T0 + 3, Input::Resume).unwrap();
    assert_eq!(started_waves(&fx), vec![1]);
}

#[test]
fn soak_delays_the_next_wave() {
    let mut gate = started(Gates {
        soak_secs: 300,
        ..Gates::default()
    });
    let fx = count(&mut gate, T0 + 50, 0, tally(10, 10, 0, 0));
    assert!(fx.contains(&Effect::Soaking {
        wave: 0,
        until: T0 + 350
    }));
    assert!(started_waves(&fx).is_empty());
    assert!(announced(&fx).is_empty(), "soaking keeps wave 1's cohorts");
    assert_eq!(gate.next_timer(), Some(T0 + 350));
    assert!(gate.step(T0 + 349, Input::Tick).unwrap().is_empty());
    let fx = gate.step(T0 + 350, Input::Tick).unwrap();
    assert_eq!(started_waves(&fx), vec![1]);
    assert_eq!(
        gate.phase(),
        &Phase::Running {
            wave: 1,
            started_at: T0 + 350,
            deadline: T0 + 950,
            held_since: None,
        }
    );
}

#[test]
fn soak_halts_on_late_failures() {
    let mut gate = started(Gates {
        soak_secs: 300,
        ..Gates::default()
    });
    count(&mut gate, T0 + 50, 0, tally(10, 10, 0, 0));
    // Two devices roll back after the pass.
    let fx = count(&mut gate, T0 + 100, 0, tally(10, 8, 2, 0));
    assert!(matches!(
        halt_of(&fx),
        Some(HaltReason::FailureRate { failure: 2, .. })
    ));
    assert!(matches!(gate.phase(), Phase::Halted { wave: 0, .. }));
    assert!(gate.step(T0 + 1000, Input::Tick).unwrap().is_empty());
}

#[test]
fn pause_during_soak_keeps_the_remaining_soak() {
    let mut gate = started(Gates {
        soak_secs: 300,
        ..Gates::default()
    });
    count(&mut gate, T0 + 50, 0, tally(10, 10, 0, 0));
    gate.step(T0 + 150, Input::Pause).unwrap();
    assert!(gate.step(T0 + 900, Input::Tick).unwrap().is_empty());
    gate.step(T0 + 1000, Input::Resume).unwrap();
    assert_eq!(
        gate.phase(),
        &Phase::Soaking {
            wave: 0,
            until: T0 + 1200
        }
    );
    assert_eq!(
        started_waves(&gate.step(T0 + 1200, Input::Tick).unwrap()),
        vec![1]
    );
}

#[test]
fn resume_after_a_timeout_halt_gets_a_fresh_timeout() {
    let mut gate = started(Gates::default());
    count(&mut gate, T0 + 5, 0, tally(100, 5, 0, 0));
    gate.step(T0 + 600, Input::Tick).unwrap();
    assert!(matches!(gate.phase(), Phase::Halted { .. }));
    let fx = gate.step(T0 + 2000, Input::Resume).unwrap();
    assert_eq!(announced(&fx)[0].0, AnnounceState::Active);
    assert_eq!(
        gate.phase(),
        &Phase::Running {
            wave: 0,
            started_at: T0 + 2000,
            deadline: T0 + 2600,
            held_since: None,
        }
    );
    let fx = count(&mut gate, T0 + 2100, 0, tally(100, 12, 0, 0));
    assert!(fx.is_empty());
    let fx = gate.step(T0 + 2600, Input::Tick).unwrap();
    assert_eq!(started_waves(&fx), vec![1]);
}

#[test]
fn resume_after_a_failure_halt_needs_new_gates() {
    let mut gate = started(Gates::default());
    // 3 of 20: lower bound 6.16 %, above the 5 % bar.
    count(&mut gate, T0 + 5, 0, tally(40, 17, 3, 0));
    assert!(matches!(gate.phase(), Phase::Halted { .. }));
    // Same counts, same bars: halts again at once.
    let fx = gate.step(T0 + 100, Input::Resume).unwrap();
    assert!(halt_of(&fx).is_some());
    assert_eq!(announced(&fx).last().unwrap().0, AnnounceState::Paused);
    // The operator accepts 10 % failures and a 90 % bar.
    let relaxed = Gates {
        success_bar_bp: 9000,
        failure_halt_bp: 1000,
        ..Gates::default()
    };
    let fx = gate.step(T0 + 200, Input::SetGates(relaxed)).unwrap();
    let scope = gate.scope();
    assert!(
        matches!(&fx[..], [Effect::Decision(d)] if scope.text(d).starts_with("gates set by the operator: success bar 90.00%, failure halt 10.00%"))
    );
    assert!(matches!(gate.phase(), Phase::Halted { .. }));
    gate.step(T0 + 300, Input::Resume).unwrap();
    assert_eq!(running(&gate), Some(0));
    let fx = count(&mut gate, T0 + 400, 0, tally(40, 36, 4, 0));
    assert_eq!(started_waves(&fx), vec![1]);
}

#[test]
fn set_gates_refuses_bad_values() {
    let mut gate = started(Gates::default());
    let before = gate.clone();
    let err = gate
        .step(
            T0,
            Input::SetGates(Gates {
                min_sample: 0,
                ..Gates::default()
            }),
        )
        .unwrap_err();
    assert!(matches!(err, StepError::BadGates(_)));
    assert_eq!(gate, before);
}

#[test]
fn abort_from_each_phase() {
    // Running: announce aborted at the current cohorts.
    let mut gate = started(Gates::default());
    count(&mut gate, T0 + 1, 0, tally(5, 5, 0, 0));
    let fx = gate.step(T0 + 2, Input::Abort).unwrap();
    assert!(fx.contains(&Effect::Aborted));
    let a = announced(&fx);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].0, AnnounceState::Aborted);
    assert!(a[0].1.contains(&("acme".to_string(), 1000)));
    assert_eq!(
        gate.phase(),
        &Phase::Aborted {
            at: T0 + 2,
            announced: Some(1)
        }
    );
    assert!(gate.is_finished());
    assert!(gate.step(T0 + 3, Input::Abort).is_err());
    assert!(gate.step(T0 + 3, Input::Resume).is_err());
    assert!(gate.step(T0 + 9999, Input::Tick).unwrap().is_empty());

    // Draft: nothing was announced, nothing to withdraw.
    let mut gate = Gate::new(&spec(Gates::default())).unwrap();
    let fx = gate.step(T0, Input::Abort).unwrap();
    assert!(announced(&fx).is_empty());
    assert_eq!(gate.announcement(), None);
    assert!(gate.step(T0, Input::Start).is_err());

    // Paused and halted.
    for prep in [Input::Pause, Input::Tick] {
        let mut gate = started(Gates::default());
        let now = if prep == Input::Tick {
            T0 + 600
        } else {
            T0 + 1
        };
        gate.step(now, prep).unwrap();
        let fx = gate.step(now + 1, Input::Abort).unwrap();
        assert_eq!(announced(&fx)[0].0, AnnounceState::Aborted);
    }

    // Completed is final.
    let mut gate = started(Gates::default());
    for w in 0..3 {
        count(&mut gate, T0 + 1, w, tally(1, 1, 0, 0));
    }
    assert!(matches!(gate.phase(), Phase::Completed { .. }));
    let err = gate.step(T0 + 2, Input::Abort).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot abort campaign camp-1: it is completed; it has already ended"
    );
}

#[test]
fn illegal_inputs_are_errors_and_change_nothing() {
    let draft = &Gate::new(&spec(Gates::default())).unwrap();
    let gate = &started(Gates::default());
    let paused = &mut started(Gates::default());
    paused.step(T0 + 1, Input::Pause).unwrap();
    let paused = &*paused;
    let cases: Vec<(&Gate, Input, &str)> = vec![
        (gate, Input::Start, "cannot start campaign camp-1: it is running wave 1 of 3; a campaign starts once; resume continues a paused or halted one"),
        (gate, Input::Resume, "cannot resume campaign camp-1: it is running wave 1 of 3; only a paused or halted campaign can be resumed"),
        (draft, Input::Pause, "cannot pause campaign camp-1: it is a draft; only a running or soaking campaign can be paused"),
        (draft, Input::Resume, "cannot resume campaign camp-1: it is a draft; only a paused or halted campaign can be resumed"),
        (paused, Input::Pause, "cannot pause campaign camp-1: it is paused at wave 1 of 3; only a running or soaking campaign can be paused"),
        (paused, Input::Start, "cannot start campaign camp-1: it is paused at wave 1 of 3; a campaign starts once; resume continues a paused or halted one"),
        (gate, Input::Counts { wave: 1, counts: tally(1, 1, 0, 0) }, "counts for wave 2 arrived while campaign camp-1 is running wave 1 of 3: send the tally of the current wave"),
        (draft, Input::Counts { wave: 0, counts: tally(1, 1, 0, 0) }, "counts for wave 1 arrived while campaign camp-1 is a draft: send the tally of the current wave"),
    ];
    for (before, input, want) in cases {
        let mut gate = before.clone();
        let err = gate.step(T0 + 5, input).unwrap_err();
        assert_eq!(err.to_string(), want);
        assert_eq!(&gate, before);
    }
}

#[test]
fn clock_going_backwards_is_harmless() {
    let mut gate = started(Gates::default());
    assert!(gate.step(T0 - 500, Input::Tick).unwrap().is_empty());
    gate.step(T0 + 700, Input::Pause).unwrap();
    assert!(matches!(
        gate.phase(),
        Phase::Paused {
            from: PausedFrom::Running { remaining: 0, .. },
            ..
        }
    ));
    // Resumed with no time left: judged at once (no counts: halt).
    let fx = gate.step(T0 + 800, Input::Resume).unwrap();
    assert!(halt_of(&fx).is_some());
    let mut gate = started(Gates {
        wave_timeout_secs: u64::MAX,
        ..Gates::default()
    });
    assert_eq!(gate.next_timer(), Some(u64::MAX));
    assert!(gate.step(u64::MAX - 1, Input::Tick).unwrap().is_empty());
}

fn emergency(groups: &[&str]) -> Gate {
    let mut s = spec(Gates::default());
    s.emergency = true;
    s.waves = if groups.is_empty() {
        vec![]
    } else {
        vec![WaveSpec {
            cohorts: groups.iter().map(|&n| (g(n), 10000)).collect(),
        }]
    };
    let mut gate = Gate::new(&s).unwrap();
    gate.step(T0, Input::Start).unwrap();
    gate
}

#[test]
fn emergency_for_every_device_completes_when_all_decided() {
    let mut gate = emergency(&[]);
    assert_eq!(gate.wave_count(), 1);
    let a = gate.announcement().unwrap();
    assert!(a.cohorts.is_empty(), "every device: P/emergency");
    assert_eq!(a.state, AnnounceState::Active);
    // 30 % failures: logged once, no halt.
    let fx = count(&mut gate, T0 + 1, 0, tally(100, 7, 3, 0));
    assert_eq!(halt_of(&fx), None);
    let scope = gate.scope();
    assert!(
        matches!(&fx[..], [Effect::Decision(d)] if scope.text(d).contains("an emergency does not halt by itself"))
    );
    assert!(count(&mut gate, T0 + 2, 0, tally(100, 8, 4, 0)).is_empty());
    let fx = count(&mut gate, T0 + 3, 0, tally(100, 80, 15, 5));
    assert!(fx.contains(&Effect::Completed {
        counts: tally(100, 80, 15, 5)
    }));
    assert!(gate.is_finished());
}

#[test]
fn emergency_completes_at_the_timeout_and_can_be_paused() {
    let mut gate = emergency(&["acme", "globex"]);
    assert_eq!(
        gate.announcement()
            .unwrap()
            .cohorts
            .values()
            .collect::<Vec<_>>(),
        vec![&10000, &10000]
    );
    count(&mut gate, T0 + 1, 0, tally(100, 10, 0, 0));
    gate.step(T0 + 100, Input::Pause).unwrap();
    gate.step(T0 + 200, Input::Resume).unwrap();
    assert!(gate.step(T0 + 699, Input::Tick).unwrap().is_empty());
    let fx = gate.step(T0 + 700, Input::Tick).unwrap();
    assert!(fx.contains(&Effect::Completed {
        counts: tally(100, 10, 0, 0)
    }));
    assert!(gate.history().iter().any(|d| gate
        .scope()
        .text(d)
        .contains("timeout with 90 members still pending")));
}

/// Drives `gate` through its three waves to the last, every wave passing
/// on the success bar.
fn to_last_wave(gate: &mut Gate) {
    count(gate, T0 + 1, 0, tally(10, 10, 0, 0));
    count(gate, T0 + 2, 1, tally(20, 20, 0, 0));
    assert_eq!(running(gate), Some(2));
}

#[test]
fn anomalies_count_against_the_failure_bar_and_the_halt_names_them() {
    // A forged `aborted`: 8 of 20 cancel without the bridge's abort. They
    // are failures (not "not applicable", which would leave 12 of 12).
    let mut gate = started(Gates::default());
    let c = WaveCounts {
        anomaly: 8,
        ..tally(20, 12, 8, 0)
    };
    let fx = count(&mut gate, T0 + 1, 0, c);
    let reason = halt_of(&fx).expect("the wave halts");
    assert!(
        matches!(
            reason,
            HaltReason::FailureRate {
                failure: 8,
                anomaly: 8,
                ..
            }
        ),
        "{reason:?}"
    );
    let text = reason.to_string();
    assert!(text.contains("8 of the failures are anomalies"), "{text}");
    assert!(text.contains("abort this bridge never announced"), "{text}");
    assert_eq!(gate.announcement().unwrap().state, AnnounceState::Paused);
    // Every member cancelled so: never a pass for want of applicable ones.
    let mut gate = started(Gates::default());
    let all = WaveCounts {
        anomaly: 10,
        ..tally(10, 0, 10, 0)
    };
    let fx = count(&mut gate, T0 + 1, 0, all);
    assert!(matches!(
        halt_of(&fx),
        Some(HaltReason::FailureRate { anomaly: 10, .. })
    ));
    assert!(started_waves(&fx).is_empty());
}

#[test]
fn a_campaign_never_completes_with_zero_successes() {
    // The last wave passes with no applicable member: halted, not completed.
    let mut gate = started(Gates::default());
    to_last_wave(&mut gate);
    let mut gate_na = gate.clone();
    let fx = count(&mut gate_na, T0 + 3, 2, tally(30, 0, 0, 30));
    assert!(!fx.iter().any(|f| matches!(f, Effect::Completed { .. })));
    let reason = halt_of(&fx).expect("halted");
    assert_eq!(
        reason,
        HaltReason::NoSuccess {
            members: 30,
            failure: 0,
            not_applicable: 30,
            anomaly: 0
        }
    );
    assert!(matches!(gate_na.phase(), Phase::Halted { wave: 2, .. }));
    assert!(reason
        .to_string()
        .contains("never completes with no success"));
    // Resume re-runs the gate: the same counts halt it again.
    let fx = gate_na.step(T0 + 10, Input::Resume).unwrap();
    assert!(halt_of(&fx).is_some(), "{fx:?}");

    // No member at all (an empty campaign): nothing was asked of anyone,
    // it completes, active for devices that join later.
    let mut empty = gate.clone();
    let fx = count(&mut empty, T0 + 3, 2, tally(0, 0, 0, 0));
    assert!(fx.iter().any(|f| matches!(f, Effect::Completed { .. })));

    // Earlier waves' successes count (the counts are cumulative): with
    // one, the campaign completes.
    let fx = count(&mut gate, T0 + 3, 2, tally(30, 1, 0, 29));
    assert!(fx.iter().any(|f| matches!(f, Effect::Completed { .. })));

    // An emergency that ends with no success halts too, naming it.
    let mut gate = emergency(&[]);
    let fx = count(&mut gate, T0 + 1, 0, tally(4, 0, 0, 4));
    assert!(matches!(
        halt_of(&fx),
        Some(HaltReason::NoSuccess { members: 4, .. })
    ));
    assert!(!gate.is_finished());
    // ... at its timeout with no report at all as well.
    let mut gate = emergency(&["acme"]);
    count(&mut gate, T0 + 1, 0, tally(5, 0, 0, 0));
    let fx = gate.step(T0 + 600, Input::Tick).unwrap();
    assert!(matches!(
        halt_of(&fx),
        Some(HaltReason::NoSuccess { members: 5, .. })
    ));
    // Anomalies are named in the reason.
    let mut gate = emergency(&[]);
    let fx = count(
        &mut gate,
        T0 + 1,
        0,
        WaveCounts {
            anomaly: 3,
            ..tally(3, 0, 3, 0)
        },
    );
    let reason = halt_of(&fx).expect("halted");
    assert!(
        reason
            .to_string()
            .contains("3 of the failures are anomalies"),
        "{reason}"
    );
}

/// A whole campaign as (now, input); counts that do not apply to the
/// wave of the moment are skipped by `drive`.
fn script() -> Vec<(u64, Input)> {
    let c = |wave, counts| Input::Counts { wave, counts };
    let relaxed = Gates {
        success_bar_bp: 9000,
        failure_halt_bp: 1000,
        soak_secs: 200,
        ..Gates::default()
    };
    vec![
        (T0, Input::Start),
        (T0 + 10, c(0, tally(10, 4, 0, 0))),
        // Passes, soaks until T0 + 220.
        (T0 + 20, c(0, tally(10, 10, 0, 0))),
        (T0 + 100, Input::Tick),
        // 70 s of soak left.
        (T0 + 150, Input::Pause),
        (T0 + 400, Input::Resume),
        (T0 + 410, Input::Tick),
        // Stale: wave 1 has not started (an error, skipped).
        (T0 + 420, c(1, tally(110, 60, 1, 3))),
        // Soak over: wave 2 of 3 until T0 + 1070.
        (T0 + 470, Input::Tick),
        (T0 + 600, c(1, tally(110, 60, 1, 3))),
        // 10 of 67 = 14.9 %, lower bound 9.14 % > 8 %: halt.
        (T0 + 700, c(1, tally(110, 57, 10, 3))),
        (T0 + 800, Input::Tick),
        (T0 + 850, Input::SetGates(relaxed)),
        // Fresh timeout: until T0 + 1500.
        (T0 + 900, Input::Resume),
        (T0 + 1000, c(1, tally(110, 90, 10, 3))),
        (T0 + 1100, Input::Tick),
        // 90 of 100 terminal = 90 % >= 90 %: passes at the timeout.
        (T0 + 1500, Input::Tick),
        (T0 + 1600, c(1, tally(110, 95, 10, 3))),
        // Soak over: wave 3 of 3.
        (T0 + 1700, Input::Tick),
        (T0 + 1800, c(2, tally(2000, 1990, 5, 5))),
        (T0 + 1900, Input::Tick),
    ]
}

fn drive(gate: &mut Gate, steps: &[(u64, Input)]) -> Vec<Vec<Effect>> {
    steps
        .iter()
        .map(|(now, input)| gate.step(*now, input.clone()).unwrap_or_default())
        .collect()
}

#[test]
fn serde_round_trip_mid_campaign_resumes_exactly() {
    let gates = Gates {
        soak_secs: 200,
        failure_halt_bp: 800,
        ..Gates::default()
    };
    let steps = script();
    let mut straight = Gate::new(&spec(gates)).unwrap();
    let all = drive(&mut straight, &steps);
    assert!(matches!(straight.phase(), Phase::Completed { .. }));
    assert!(all
        .iter()
        .flatten()
        .any(|e| matches!(e, Effect::Halted { .. })));
    assert!(all
        .iter()
        .flatten()
        .any(|e| matches!(e, Effect::Soaking { .. })));

    for cut in 1..steps.len() {
        let mut gate = Gate::new(&spec(gates)).unwrap();
        drive(&mut gate, &steps[..cut]);
        // JSON, as a human may read it from the store.
        let json = serde_json::to_string(&gate).unwrap();
        let mut from_json: Gate = serde_json::from_str(&json).unwrap();
        assert_eq!(from_json, gate, "json, cut {cut}");
        // CBOR, as the bridge may store it.
        let mut bytes = Vec::new();
        ciborium::into_writer(&gate, &mut bytes).unwrap();
        let mut from_cbor: Gate = ciborium::from_reader(&bytes[..]).unwrap();
        assert_eq!(from_cbor, gate, "cbor, cut {cut}");

        let rest = drive(&mut from_json, &steps[cut..]);
        assert_eq!(rest, all[cut..], "effects after cut {cut}");
        assert_eq!(from_json, straight, "end state after cut {cut}");
        drive(&mut from_cbor, &steps[cut..]);
        assert_eq!(from_cbor, straight);
    }
}

#[test]
fn phase_json_is_readable() {
    let p = Phase::Paused {
        at: 5,
        from: PausedFrom::Soaking {
            wave: 1,
            remaining: 30,
        },
    };
    assert_eq!(
        serde_json::to_string(&p).unwrap(),
        r#"{"phase":"paused","at":5,"from":{"phase":"soaking","wave":1,"remaining":30}}"#
    );
}

#[test]
fn inputs_and_effects_round_trip() {
    let inputs = [
        Input::Start,
        Input::SetGates(Gates::default()),
        Input::Counts {
            wave: 2,
            counts: tally(5, 1, 1, 1),
        },
    ];
    for i in inputs {
        let json = serde_json::to_string(&i).unwrap();
        assert_eq!(serde_json::from_str::<Input>(&json).unwrap(), i, "{json}");
    }
    let mut gate = started(Gates::default());
    let mut fx = count(&mut gate, T0 + 1, 0, tally(10, 5, 5, 0));
    fx.extend(gate.step(T0 + 2, Input::Abort).unwrap());
    for e in fx {
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<Effect>(&json).unwrap(), e, "{json}");
    }
}

/// The judgement of one running wave (bar 95 %, halt 10 %, sample 10)
/// for a tally, before and at the timeout.
#[test]
fn judgement_table() {
    #[derive(Debug, PartialEq)]
    enum Out {
        Wait,
        Pass(PassRule),
        Fail,
        Few,
        Under,
    }
    use Out::*;
    use PassRule::*;
    // (members, success, failure, not_applicable, before timeout, at timeout)
    let rows: &[(u32, u32, u32, u32, Out, Out)] = &[
        (
            0,
            0,
            0,
            0,
            Pass(NoApplicableMembers),
            Pass(NoApplicableMembers),
        ),
        (
            4,
            0,
            0,
            4,
            Pass(NoApplicableMembers),
            Pass(NoApplicableMembers),
        ),
        (
            100,
            0,
            0,
            100,
            Pass(NoApplicableMembers),
            Pass(NoApplicableMembers),
        ),
        (100, 0, 0, 0, Wait, Few),
        (100, 95, 0, 0, Pass(SuccessBar), Pass(SuccessBar)),
        (100, 94, 0, 0, Wait, Pass(AtTimeout)),
        (100, 94, 4, 0, Wait, Pass(AtTimeout)),
        (100, 94, 5, 0, Wait, Under),
        // 10 of 90 is 11 %, but its lower bound (6.7 %) is under 10 %.
        (100, 80, 10, 0, Wait, Under),
        (100, 80, 20, 0, Fail, Fail),
        (100, 9, 0, 0, Wait, Few),
        (100, 10, 0, 0, Wait, Pass(AtTimeout)),
        (100, 5, 4, 0, Wait, Few),
        (100, 6, 4, 0, Fail, Fail),
        (100, 50, 0, 50, Pass(SuccessBar), Pass(SuccessBar)),
        (20, 19, 0, 1, Pass(SuccessBar), Pass(SuccessBar)),
        (20, 19, 1, 0, Pass(SuccessBar), Pass(SuccessBar)),
        (20, 18, 1, 0, Wait, Under),
        // Everyone applicable decided, under the bar: nothing left to
        // wait for, so no wait for the timeout either.
        (100, 47, 3, 50, Under, Under),
        (3, 3, 0, 0, Pass(SuccessBar), Pass(SuccessBar)),
        (3, 2, 0, 0, Wait, Few),
        // 1 of 3 is no evidence of a rate above 10 %: under the bar.
        (3, 2, 1, 0, Under, Under),
        (3, 1, 2, 0, Fail, Fail),
        (1, 0, 1, 0, Fail, Fail),
        // An inconsistent tally (more decided than members) is not a panic.
        (5, 8, 2, 0, Under, Under),
        (5, 6, 4, 0, Fail, Fail),
    ];
    for (i, &(m, s, f, na, ref before, ref at)) in rows.iter().enumerate() {
        for (now, want) in [(T0 + 1, before), (T0 + 600, at)] {
            let mut gate = started(Gates {
                failure_halt_bp: 1000,
                ..Gates::default()
            });
            let counts = WaveCounts {
                members: m,
                success: s,
                failure: f,
                not_applicable: na,
                pending: m.saturating_sub(s + f + na),
                ..WaveCounts::default()
            };
            let fx = count(&mut gate, now, 0, counts);
            let got = match (
                halt_of(&fx),
                fx.iter().find_map(|e| match e {
                    Effect::WavePassed { rule, .. } => Some(*rule),
                    _ => None,
                }),
            ) {
                (Some(HaltReason::FailureRate { .. }), _) => Fail,
                (Some(HaltReason::TooFewReports { .. }), _) => Few,
                (Some(HaltReason::UnderBar { .. }), _) => Under,
                (Some(HaltReason::NoSuccess { .. }), _) => panic!("wave 1 of 3 never completes"),
                (None, Some(rule)) => Pass(rule),
                (None, None) => Wait,
            };
            assert_eq!(&got, want, "row {i} at {}", now - T0);
        }
    }
}

#[test]
fn rates_in_basis_points() {
    let c = tally(30, 9, 1, 15);
    assert_eq!(c.applicable(), 15);
    assert_eq!(c.success_bp(), Some(6000));
    assert_eq!(c.failure_bp(), Some(1000));
    assert_eq!(tally(0, 0, 0, 0).success_bp(), None);
    assert_eq!(tally(3, 0, 0, 0).failure_bp(), None);
    assert_eq!(Pct(9500).to_string(), "95.00%");
    assert_eq!(Pct(5).to_string(), "0.05%");
}

#[test]
fn decisions_are_data_and_keep_their_english() {
    let mut gate = started(Gates::default());
    count(&mut gate, T0 + 10, 0, tally(10, 6, 4, 0));
    let halted = gate.history().last().unwrap().clone();
    assert_eq!(
        halted.kind,
        DecisionKind::Halted {
            reason: HaltReason::FailureRate {
                failure: 4,
                decided: 10,
                failure_bp: 4000,
                halt_bp: 500,
                rebooting: 0,
                bound_bp: Some(1942),
                anomaly: 0,
            }
        }
    );
    // Stored as data: the JSON holds the numbers, not the sentence.
    let json = serde_json::to_value(&halted).unwrap();
    assert_eq!(json["kind"]["decision"], "halted");
    assert_eq!(json["kind"]["reason"]["failure"], 4);
    assert!(!json.to_string().contains("halted:"), "{json}");
    let back: Decision = serde_json::from_value(json).unwrap();
    assert_eq!(back, halted);
}

#[test]
fn old_text_decisions_still_load() {
    // A gate persisted by a bridge whose decisions were text only.
    let mut gate = started(Gates::default());
    let mut json = serde_json::to_value(&gate).unwrap();
    json["history"] = serde_json::json!([
        {"at": T0, "wave": 0, "text": "wave 1 of 3 started: raises canary 100.00%; waits until 13:56:40 UTC (600 s)"},
        {"at": T0 + 5, "wave": null, "text": "gates set by the operator: ..."},
    ]);
    let old: Gate = serde_json::from_value(json).unwrap();
    let h = old.history();
    assert_eq!(h.len(), 2);
    assert_eq!(
        h[0].kind,
        DecisionKind::Note {
            text: "wave 1 of 3 started: raises canary 100.00%; waits until 13:56:40 UTC (600 s)"
                .into()
        }
    );
    assert_eq!(h[1].wave, None);
    // Rendered as they were written; saved again, they keep loading.
    assert_eq!(
        old.scope().text(&h[0]),
        gate.scope().text(&gate.history()[0])
    );
    let again: Gate = serde_json::from_value(serde_json::to_value(&old).unwrap()).unwrap();
    assert_eq!(again.history(), old.history());
    // The migrated gate steps on as before.
    gate = old;
    assert!(gate.step(T0 + 10, Input::Pause).is_ok());
}

#[test]
fn a_standing_campaign_stands_after_its_last_wave_and_halts_on_its_window() {
    let mut s = spec(Gates {
        min_sample: 2,
        failure_halt_bp: 1000,
        ..Gates::default()
    });
    s.waves.truncate(1);
    s.standing = Some(crate::campaign::spec::StandingSpec { halt_window: 10 });
    let mut gate = Gate::new(&s).unwrap();
    gate.step(T0, Input::Start).unwrap();
    let fx = count(&mut gate, T0 + 5, 0, tally(4, 4, 0, 0));
    assert!(
        !fx.iter().any(|f| matches!(f, Effect::Completed { .. })),
        "{fx:?}"
    );
    assert_eq!(
        gate.phase(),
        &Phase::Standing {
            wave: 0,
            since: T0 + 5
        }
    );
    assert!(!gate.is_finished());
    assert_eq!(gate.next_timer(), None, "no timeout while standing");
    assert_eq!(gate.announcement().unwrap().state, AnnounceState::Active);
    // New devices join; pause and resume keep it standing.
    count(&mut gate, T0 + 6, 0, tally(9, 4, 0, 0));
    gate.step(T0 + 7, Input::Pause).unwrap();
    gate.step(T0 + 8, Input::Resume).unwrap();
    assert!(matches!(gate.phase(), Phase::Standing { .. }));
    // The window's failures halt it.
    let fx = count(&mut gate, T0 + 9, 0, tally(10, 4, 6, 0));
    assert!(halt_of(&fx).is_some(), "{fx:?}");
    assert!(matches!(gate.phase(), Phase::Halted { wave: 0, .. }));
}
