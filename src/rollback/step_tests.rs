use super::condition::*;
use super::*;
use crate::api::request::HookCall;
use crate::api::request::RequestPhase;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};

fn spec(action: &str, mode: &str) -> RollbackRequestSpec {
    serde_json::from_value(serde_json::json!({
        "guardRef": {"name": "g"}, "requestedBy": "ops", "action": action, "mode": mode,
    }))
    .unwrap()
}

fn held(pre: usize, post: usize) -> Observed {
    Observed {
        guard_exists: true,
        slot: Slot::Held,
        overtaken_by: None,
        pre_hooks: pre,
        post_hooks: post,
    }
}

fn with(conditions: &[&str]) -> RollbackRequestStatus {
    let mut status = RollbackRequestStatus::default();
    for c in conditions {
        crate::conditions::set(
            &mut status.conditions,
            c,
            "True",
            "Done",
            "",
            None,
            Time(jiff::Timestamp::UNIX_EPOCH),
        );
    }
    status
}

fn hook(stage: HookStage, index: u32, outcome: HookOutcome) -> HookCall {
    HookCall {
        stage,
        index,
        url: "http://h".into(),
        outcome,
        message: String::new(),
    }
}

/// Drives the machine as the reconciler would, marking each step done, and returns the
/// sequence of steps.
fn walk(spec: &RollbackRequestSpec, observed: &Observed) -> Vec<Step> {
    let mut status = RollbackRequestStatus::default();
    let mut steps = Vec::new();
    let mut observed = observed.clone();
    for _ in 0..20 {
        let step = next_step(spec, &status, &observed);
        steps.push(step.clone());
        match step {
            Step::Claim { .. } => {
                observed.slot = Slot::Held;
                status.started_at = Some(MicroTime(jiff::Timestamp::UNIX_EPOCH));
            }
            Step::Snapshot => status = merge(status, SNAPSHOT_TAKEN),
            Step::CallHook { stage, index } => {
                status
                    .hooks
                    .push(hook(stage, index as u32, HookOutcome::Succeeded))
            }
            Step::WriteFlags => status = merge(status, FLAGS_DISABLED),
            Step::Verify => status = merge(status, HEALTH_VERIFIED),
            Step::Succeed | Step::DryRun => status.phase = Some(RequestPhase::Succeeded),
            Step::Release => observed.slot = Slot::Free,
            Step::Done | Step::Wait { .. } | Step::Fail { .. } | Step::Superseded { .. } => break,
        }
    }
    steps
}

fn merge(mut status: RollbackRequestStatus, condition: &str) -> RollbackRequestStatus {
    crate::conditions::set(
        &mut status.conditions,
        condition,
        "True",
        "Done",
        "",
        None,
        Time(jiff::Timestamp::UNIX_EPOCH),
    );
    status
}

#[test]
fn graceful_rollback_snapshots_then_drains_then_flags_then_verifies_then_resumes() {
    let free = Observed {
        slot: Slot::Free,
        ..held(2, 1)
    };
    let pre = |index| Step::CallHook {
        stage: HookStage::PreRollback,
        index,
    };
    let post = |index| Step::CallHook {
        stage: HookStage::PostRollback,
        index,
    };
    assert_eq!(
        walk(&spec("rollback", "graceful"), &free),
        vec![
            Step::Claim { supersedes: None },
            Step::Snapshot,
            pre(0),
            pre(1),
            Step::WriteFlags,
            Step::Verify,
            post(0),
            Step::Succeed,
            Step::Release,
            Step::Done
        ]
    );
}

#[test]
fn immediate_rollback_skips_hooks() {
    assert_eq!(
        walk(&spec("rollback", "immediate"), &held(2, 1)),
        vec![
            Step::Snapshot,
            Step::WriteFlags,
            Step::Verify,
            Step::Succeed,
            Step::Release,
            Step::Done
        ]
    );
}

#[test]
fn restore_snapshots_then_writes_without_hooks_or_verification() {
    assert_eq!(
        walk(&spec("restore", "graceful"), &held(2, 1)),
        vec![
            Step::Snapshot,
            Step::WriteFlags,
            Step::Succeed,
            Step::Release,
            Step::Done
        ]
    );
}

#[test]
fn dry_run_touches_nothing() {
    let mut s = spec("rollback", "graceful");
    s.dry_run = true;
    assert_eq!(
        walk(&s, &held(2, 1)),
        vec![Step::DryRun, Step::Release, Step::Done]
    );
}

#[test]
fn a_second_request_waits_behind_the_one_in_flight() {
    let observed = Observed {
        slot: Slot::Behind("first".into()),
        ..held(0, 0)
    };
    assert_eq!(
        next_step(
            &spec("rollback", "graceful"),
            &RollbackRequestStatus::default(),
            &observed
        ),
        Step::Wait {
            behind: "first".into()
        }
    );
}

#[test]
fn a_missing_guard_fails_naming_the_field_and_value() {
    let observed = Observed {
        guard_exists: false,
        slot: Slot::Free,
        overtaken_by: None,
        pre_hooks: 0,
        post_hooks: 0,
    };
    match next_step(
        &spec("rollback", "graceful"),
        &RollbackRequestStatus::default(),
        &observed,
    ) {
        Step::Fail { message, .. } => assert_eq!(
            message,
            "spec.guardRef.name: RolloutGuard \"g\" does not exist in this namespace"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn resuming_after_each_step_never_repeats_a_finished_step() {
    let s = spec("rollback", "graceful");
    // After the snapshot: next is the first hook, not another snapshot.
    assert_eq!(
        next_step(&s, &with(&[SNAPSHOT_TAKEN]), &held(1, 0)),
        Step::CallHook {
            stage: HookStage::PreRollback,
            index: 0
        }
    );
    // A hook recorded as under way when the operator died is called again (at least once).
    let mut status = with(&[SNAPSHOT_TAKEN]);
    status
        .hooks
        .push(hook(HookStage::PreRollback, 0, HookOutcome::Calling));
    assert_eq!(
        next_step(&s, &status, &held(1, 0)),
        Step::CallHook {
            stage: HookStage::PreRollback,
            index: 0
        }
    );
    // An outcome recorded as unknown by an older operator is not called again.
    status.hooks[0].outcome = HookOutcome::Unknown;
    assert_eq!(next_step(&s, &status, &held(1, 0)), Step::WriteFlags);
    // A failed hook does not stop the rollback.
    status.hooks[0].outcome = HookOutcome::Failed;
    assert_eq!(next_step(&s, &status, &held(1, 0)), Step::WriteFlags);
    // After the flags: verification, not another write.
    assert_eq!(
        next_step(&s, &with(&[SNAPSHOT_TAKEN, FLAGS_DISABLED]), &held(0, 0)),
        Step::Verify
    );
    assert_eq!(
        next_step(
            &s,
            &with(&[SNAPSHOT_TAKEN, FLAGS_DISABLED, HEALTH_VERIFIED]),
            &held(0, 0)
        ),
        Step::Succeed
    );
}

#[test]
fn terminal_requests_release_the_slot_once_and_then_rest() {
    for phase in [
        RequestPhase::Succeeded,
        RequestPhase::Failed,
        RequestPhase::Superseded,
    ] {
        let status = RollbackRequestStatus {
            phase: Some(phase),
            ..Default::default()
        };
        assert_eq!(
            next_step(&spec("rollback", "graceful"), &status, &held(0, 0)),
            Step::Release
        );
        let free = Observed {
            slot: Slot::Free,
            ..held(0, 0)
        };
        assert_eq!(
            next_step(&spec("rollback", "graceful"), &status, &free),
            Step::Done
        );
    }
}

#[test]
fn only_an_immediate_rollback_is_an_emergency() {
    assert!(is_emergency(&spec("rollback", "immediate")));
    assert!(!is_emergency(&spec("rollback", "graceful")));
    assert!(!is_emergency(&spec("restore", "immediate")));
    let mut dry = spec("rollback", "immediate");
    dry.dry_run = true;
    assert!(!is_emergency(&dry));
}

#[test]
fn an_emergency_takes_the_slot_and_the_request_it_took_it_from_ends_superseded() {
    let takeover = Observed {
        slot: Slot::Takeover("slow-drain".into()),
        ..held(2, 0)
    };
    assert_eq!(
        next_step(
            &spec("rollback", "immediate"),
            &RollbackRequestStatus::default(),
            &takeover
        ),
        Step::Claim {
            supersedes: Some("slow-drain".into())
        }
    );
    // The graceful one, accepted and half-way through its drain hooks, finds the slot gone.
    let mut draining = with(&[SNAPSHOT_TAKEN]);
    draining.started_at = Some(MicroTime(jiff::Timestamp::UNIX_EPOCH));
    draining.phase = Some(RequestPhase::Draining);
    draining
        .hooks
        .push(hook(HookStage::PreRollback, 0, HookOutcome::Succeeded));
    let behind = Observed {
        slot: Slot::Behind("emergency".into()),
        ..held(2, 0)
    };
    assert_eq!(
        next_step(&spec("rollback", "graceful"), &draining, &behind),
        Step::Superseded {
            by: Some("emergency".into())
        }
    );
    // The emergency may have finished and freed the slot before the graceful one looks.
    let free = Observed {
        slot: Slot::Free,
        ..held(2, 0)
    };
    assert_eq!(
        next_step(&spec("rollback", "graceful"), &draining, &free),
        Step::Superseded { by: None }
    );
    // Not yet accepted: it only waits.
    assert_eq!(
        next_step(
            &spec("rollback", "graceful"),
            &RollbackRequestStatus::default(),
            &behind
        ),
        Step::Wait {
            behind: "emergency".into()
        }
    );
}

fn queued(name: &str, second: i64, emergency: bool, finished: bool) -> Queued {
    Queued {
        name: name.into(),
        created: Some(jiff::Timestamp::from_second(second).unwrap()),
        emergency,
        finished,
        failed: false,
        restore: false,
        started: false,
        overtook: Vec::new(),
    }
}

#[test]
fn the_slot_goes_in_creation_order_and_an_emergency_overtakes_all_but_emergencies() {
    let first = queued("a-first", 10, false, false);
    let second = queued("b-second", 20, false, false);
    let emergency = queued("c-emergency", 30, true, false);
    let done = queued("old", 5, false, true);
    let queue = [
        done.clone(),
        first.clone(),
        second.clone(),
        emergency.clone(),
    ];
    // Nobody holds it: the oldest request in flight goes first, finished ones do not count.
    assert_eq!(slot(&first, false, None, None, &queue), Slot::Free);
    assert_eq!(
        slot(&second, false, None, None, &queue),
        Slot::Behind("a-first".into())
    );
    // Held by the one the guard names.
    assert_eq!(
        slot(&first, false, Some("a-first"), None, &queue),
        Slot::Held
    );
    assert_eq!(
        slot(&second, false, Some("a-first"), None, &queue),
        Slot::Behind("a-first".into())
    );
    // An emergency takes it from a graceful holder, and queues behind nothing graceful.
    assert_eq!(
        slot(&emergency, false, Some("a-first"), None, &queue),
        Slot::Takeover("a-first".into())
    );
    assert_eq!(slot(&emergency, false, None, None, &queue), Slot::Free);
    // ...but waits for another emergency.
    let earlier = queued("0-emergency", 1, true, false);
    let with_earlier = [earlier.clone(), emergency.clone()];
    assert_eq!(
        slot(&emergency, false, None, None, &with_earlier),
        Slot::Behind("0-emergency".into())
    );
    assert_eq!(
        slot(&emergency, false, Some("0-emergency"), None, &with_earlier),
        Slot::Behind("0-emergency".into())
    );
    // A holder that has finished but not yet freed the slot is still the holder: its
    // release records the guard's last rollback (the fault suite's compaction run).
    let finished_holder = queued("a-first", 10, false, true);
    assert_eq!(
        slot(
            &second,
            false,
            Some("a-first"),
            None,
            &[finished_holder.clone(), second.clone()]
        ),
        Slot::Behind("a-first".into())
    );
    assert_eq!(
        slot(
            &emergency,
            false,
            Some("a-first"),
            None,
            &[finished_holder, emergency.clone()]
        ),
        Slot::Behind("a-first".into())
    );
    // Same second: names break the tie.
    let twin = queued("a-twin", 10, false, false);
    assert_eq!(
        slot(&twin, false, None, None, &[first.clone(), twin.clone()]),
        Slot::Behind("a-first".into())
    );
}

#[test]
fn an_accepted_request_that_lost_the_slot_names_who_took_it() {
    let me = queued("mine", 10, false, false);
    assert_eq!(
        slot(&me, true, Some("emergency"), None, &[]),
        Slot::Behind("emergency".into())
    );
    // The emergency has finished already: it is the guard's last rollback.
    assert_eq!(
        slot(&me, true, None, Some("emergency"), &[]),
        Slot::Behind("emergency".into())
    );
    assert_eq!(slot(&me, true, None, None, &[]), Slot::Free);
}

#[test]
fn an_emergency_overtakes_the_restores_waiting_when_it_takes_the_guard() {
    let waiting = |name: &str, second: i64| Queued {
        restore: true,
        ..queued(name, second, false, false)
    };
    let emergency = queued("emergency", 10, true, false);
    let queue = [
        waiting("restore-before", 5),
        waiting("restore-same-second", 10),
        waiting("restore-after", 11),
        Queued {
            started: true,
            ..waiting("restore-running", 1)
        },
        queued("graceful-rollback", 2, false, false),
    ];
    assert_eq!(
        to_overtake(&emergency, &queue),
        ["restore-before", "restore-same-second"]
    );
    // The overtaken restore ends Superseded, naming the emergency; while it succeeds too.
    let recorded = Queued {
        overtook: to_overtake(&emergency, &queue),
        ..emergency.clone()
    };
    let me = waiting("restore-same-second", 10);
    assert_eq!(
        overtaken(&me, false, std::slice::from_ref(&recorded)),
        Some("emergency".into())
    );
    let succeeded = Queued {
        finished: true,
        ..recorded.clone()
    };
    assert_eq!(
        overtaken(&me, false, std::slice::from_ref(&succeeded)),
        Some("emergency".into())
    );
    // Not once started, not after a failed emergency, not a restore asked for later.
    assert_eq!(overtaken(&me, true, std::slice::from_ref(&recorded)), None);
    let failed = Queued {
        failed: true,
        ..recorded.clone()
    };
    assert_eq!(overtaken(&me, false, &[failed]), None);
    assert_eq!(
        overtaken(&waiting("restore-after", 11), false, &[recorded]),
        None
    );
    let observed = Observed {
        overtaken_by: Some("emergency".into()),
        ..held(0, 0)
    };
    assert_eq!(
        next_step(&spec("restore", "graceful"), &with(&[]), &observed),
        Step::Superseded {
            by: Some("emergency".into())
        }
    );
}
