use super::*;
use crate::api::guard::{GuardPhase, PendingNotice, Trigger};
use crate::guard::assess::{Assessment, Context, Notice, Outcome, assess};
use crate::triggers::Series;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

fn spec(for_: &str, mode: &str) -> RolloutGuardSpec {
    serde_json::from_value(serde_json::json!({
        "flags": {"configMapRef": {"name": "ff"}, "guarded": ["a"]},
        "triggers": [{"name": "errors", "query": "q", "above": 0.01, "for": for_}],
        "interval": "15s",
        "rollback": {"mode": mode},
    }))
    .unwrap()
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn outcome(trigger: &Trigger, value: Result<f64, &str>) -> Outcome {
    match value {
        Ok(v) => Ok(crate::triggers::evaluate(trigger, &[Series::new(v)], &[])),
        Err(e) => Err(e.to_string()),
    }
}

fn evaluate(
    spec: &RolloutGuardSpec,
    written: &RolloutGuardStatus,
    value: Result<f64, &str>,
    now: Timestamp,
) -> Assessment {
    let outcomes: Vec<Outcome> = spec.triggers.iter().map(|t| outcome(t, value)).collect();
    assess(
        &Context {
            spec,
            generation: Some(1),
            previous: written,
            invalid: None,
            request_in_flight: None,
            active_dry_run: false,
            drift: None,
            late: None,
            now,
        },
        &outcomes,
    )
}

/// The decision as the reconciler asks it.
fn decide(
    spec: &RolloutGuardSpec,
    written: &RolloutGuardStatus,
    a: &Assessment,
    now: Timestamp,
) -> Option<Write> {
    let announces = !a.notices.is_empty() || a.rollback.is_some();
    due(spec, written, &a.status, now, announces, Duration::ZERO)
}

/// A guard monitoring quietly, as written at `at(0)`.
fn quiet(spec: &RolloutGuardSpec) -> RolloutGuardStatus {
    let first = evaluate(spec, &RolloutGuardStatus::default(), Ok(0.001), at(0));
    assert_eq!(first.status.phase, Some(GuardPhase::Monitoring));
    first.status
}

#[test]
fn the_first_evaluation_writes() {
    let s = spec("1m", "automatic");
    let first = evaluate(&s, &RolloutGuardStatus::default(), Ok(0.001), at(0));
    assert_eq!(
        decide(&s, &RolloutGuardStatus::default(), &first, at(0)),
        Some(Write::Transition)
    );
}

#[test]
fn new_values_alone_wait_for_the_refresh() {
    let s = spec("1m", "automatic");
    let written = quiet(&s);
    for secs in [15, 30, 45, 59] {
        let a = evaluate(&s, &written, Ok(0.002 + secs as f64 / 1e5), at(secs));
        assert_eq!(decide(&s, &written, &a, at(secs)), None, "at {secs}s");
    }
    let a = evaluate(&s, &written, Ok(0.003), at(60));
    assert_eq!(decide(&s, &written, &a, at(60)), Some(Write::Refresh));
    // The same value, a minute later: lastEvaluationTime is a value too.
    let a = evaluate(&s, &written, Ok(0.001), at(75));
    assert_eq!(decide(&s, &written, &a, at(75)), Some(Write::Refresh));
}

#[test]
fn a_breach_starting_is_written_at_once_with_its_start() {
    let s = spec("1m", "automatic");
    let written = quiet(&s);
    let a = evaluate(&s, &written, Ok(0.5), at(15));
    assert_eq!(
        a.status.triggers[0].breaching_since,
        Some(Time(at(15))),
        "the breach start is in the status written"
    );
    assert_eq!(decide(&s, &written, &a, at(15)), Some(Write::Transition));
    // Even without an Event to emit (none is, on the first breach of this state).
    assert_eq!(
        due(&s, &written, &a.status, at(15), false, Duration::ZERO),
        Some(Write::Transition)
    );
}

#[test]
fn a_breach_ending_is_written_at_once() {
    let s = spec("1m", "automatic");
    let breaching = evaluate(&s, &quiet(&s), Ok(0.5), at(15)).status;
    let a = evaluate(&s, &breaching, Ok(0.001), at(30));
    assert_eq!(a.status.phase, Some(GuardPhase::Monitoring));
    assert_eq!(
        due(&s, &breaching, &a.status, at(30), false, Duration::ZERO),
        Some(Write::Transition)
    );
}

#[test]
fn firing_is_a_transition_though_no_field_but_time_changed() {
    let s = spec("1m", "manual");
    let breaching = evaluate(&s, &quiet(&s), Ok(0.5), at(15)).status;
    let held = evaluate(&s, &breaching, Ok(0.6), at(45));
    assert_eq!(decide(&s, &breaching, &held, at(45)), None);
    let fired = evaluate(&s, &breaching, Ok(0.6), at(75));
    assert_eq!(
        due(&s, &breaching, &fired.status, at(75), false, Duration::ZERO),
        Some(Write::Transition),
        "the breach held its `for` window"
    );
}

#[test]
fn an_error_appearing_or_changing_is_written_at_once() {
    let s = spec("1m", "automatic");
    let written = quiet(&s);
    let failed = evaluate(&s, &written, Err("connection refused"), at(15));
    assert_eq!(
        due(&s, &written, &failed.status, at(15), false, Duration::ZERO),
        Some(Write::Transition)
    );
    let other = evaluate(&s, &failed.status, Err("timed out"), at(30));
    assert_eq!(
        due(
            &s,
            &failed.status,
            &other.status,
            at(30),
            false,
            Duration::ZERO
        ),
        Some(Write::Transition)
    );
    let same = evaluate(&s, &failed.status, Err("connection refused"), at(30));
    assert_eq!(decide(&s, &failed.status, &same, at(30)), None);
}

#[test]
fn data_appearing_or_going_is_a_transition() {
    let s = spec("1m", "automatic");
    let written = quiet(&s);
    let mut gone = evaluate(&s, &written, Ok(0.001), at(15)).status;
    gone.triggers[0].value = None;
    assert_eq!(
        due(&s, &written, &gone, at(15), false, Duration::ZERO),
        Some(Write::Transition)
    );
}

#[test]
fn a_condition_message_alone_is_a_value() {
    let s = spec("1m", "automatic");
    let written = quiet(&s);
    let mut next = evaluate(&s, &written, Ok(0.001), at(15)).status;
    next.conditions[0].message.push_str(" (reworded)");
    assert_eq!(
        due(&s, &written, &next, at(15), false, Duration::ZERO),
        None
    );
    next.conditions[0].reason = "Other".into();
    assert_eq!(
        due(&s, &written, &next, at(15), false, Duration::ZERO),
        Some(Write::Transition)
    );
}

#[test]
fn slot_generation_notices_and_announcements_are_transitions() {
    let s = spec("1m", "automatic");
    let written = quiet(&s);
    let steady = evaluate(&s, &written, Ok(0.001), at(15)).status;
    assert_eq!(
        due(&s, &written, &steady, at(15), false, Duration::ZERO),
        None
    );
    let changed = |f: &dyn Fn(&mut RolloutGuardStatus)| {
        let mut next = steady.clone();
        f(&mut next);
        due(&s, &written, &next, at(15), false, Duration::ZERO)
    };
    assert_eq!(
        changed(&|n| n.observed_generation = Some(2)),
        Some(Write::Transition)
    );
    assert_eq!(
        changed(&|n| n.active_rollback = Some("rb".into())),
        Some(Write::Transition)
    );
    assert_eq!(
        changed(&|n| n.pending_notices.push(PendingNotice {
            receiver: "ops".into(),
            event: crate::api::guard::NotifyEvent::TriggerFiring,
            id: "msg_1".into(),
            time: at(15).to_string(),
            message: "fired".into(),
            trigger: None,
            rollback: None,
        })),
        Some(Write::Transition)
    );
    assert_eq!(
        changed(&|n| n.stable_notified = Some("rb".into())),
        Some(Write::Transition)
    );
    assert_eq!(
        due(&s, &written, &steady, at(15), true, Duration::ZERO),
        Some(Write::Transition)
    );
}

/// Skipping writes changes no judgement: over a run of breaches, errors, firings and quiet
/// spells, a guard whose status is written only when [`due`] says so emits the same Events,
/// asks for the same rollbacks and shows the same phases as one written every evaluation —
/// with far fewer writes.
#[test]
fn judgements_are_the_same_whether_every_evaluation_writes_or_only_those_due() {
    let s = spec("1m", "automatic");
    let mut values: Vec<Result<f64, &str>> = Vec::new();
    values.extend(std::iter::repeat_n(Ok(0.001), 12));
    values.extend([Ok(0.002), Ok(0.0015)]);
    values.extend(std::iter::repeat_n(Ok(0.5), 8));
    values.extend([Err("refused"), Err("refused"), Ok(0.4)]);
    values.extend(std::iter::repeat_n(Ok(0.001), 10));
    values.extend(std::iter::repeat_n(Ok(0.3), 3));
    values.extend(std::iter::repeat_n(Ok(0.001), 20));
    let (mut always, mut written) = (RolloutGuardStatus::default(), RolloutGuardStatus::default());
    let (mut writes, mut announced) = (0, Vec::new());
    let mut refreshed = std::collections::BTreeSet::new();
    for (i, value) in values.iter().enumerate() {
        let now = at(15 * i as i64);
        let every = evaluate(&s, &always, *value, now);
        let due_only = evaluate(&s, &written, *value, now);
        assert_eq!(every.notices, due_only.notices, "evaluation {i}");
        assert_eq!(every.rollback, due_only.rollback, "evaluation {i}");
        assert_eq!(every.status.phase, due_only.status.phase, "evaluation {i}");
        assert_eq!(
            every.status.conditions, due_only.status.conditions,
            "evaluation {i}"
        );
        announced.extend(every.notices);
        always = every.status;
        let since = written
            .last_evaluation_time
            .as_ref()
            .map(|t| now.duration_since(t.0).unsigned_abs());
        // The values a reader sees are never older than a minute and one interval.
        assert!(
            since.is_none_or(|d| d <= REFRESH + Duration::from_secs(15)),
            "evaluation {i}: values {since:?} old"
        );
        if let Some(why) = decide(&s, &written, &due_only, now) {
            if why == Write::Refresh {
                let minute = now.as_second().div_euclid(60);
                assert!(
                    refreshed.insert(minute),
                    "evaluation {i}: a second refresh in one minute"
                );
            }
            writes += 1;
            written = due_only.status;
        }
    }
    // The run did breach, fire and lose Prometheus on the way.
    let said = |f: fn(&Notice) -> bool| announced.iter().any(f);
    assert!(said(|n| matches!(n, Notice::TriggerBreaching { .. })));
    assert!(said(|n| matches!(n, Notice::TriggerFiring { .. })));
    assert!(said(|n| matches!(n, Notice::PrometheusUnreachable { .. })));
    assert!(
        writes <= values.len() / 2,
        "{writes} writes for {} evaluations",
        values.len()
    );
}

/// Guards created together refresh in different intervals of the minute, each once a minute:
/// a fleet's refresh writes are spread, not one burst at one boundary.
#[test]
fn a_fleet_refreshes_spread_over_the_minute_each_guard_once_a_minute() {
    let s = spec("1m", "automatic");
    let written_at = |secs: i64| {
        let mut status = quiet(&s);
        status.last_evaluation_time = Some(Time(at(secs)));
        status
    };
    let mut per_boundary = std::collections::BTreeMap::<i64, usize>::new();
    for g in 0..1000 {
        let phase = refresh_phase("shop", &format!("guard-{g}"));
        assert!(phase < REFRESH);
        // Evaluated every 15 s for ten minutes; written when due.
        let mut last = 0;
        let mut writes = 0;
        for secs in (15..=600).step_by(15) {
            let a = evaluate(&s, &written_at(last), Ok(0.002), at(secs));
            if due(&s, &written_at(last), &a.status, at(secs), false, phase).is_some() {
                assert!(
                    secs - last <= 75,
                    "values of guard-{g} went {}s unwritten",
                    secs - last
                );
                writes += 1;
                last = secs;
                *per_boundary.entry(secs % 60).or_default() += 1;
            }
        }
        assert!(
            (9..=10).contains(&writes),
            "guard-{g} refreshed {writes} times in 10 minutes"
        );
    }
    // Each of the minute's four boundaries carries about a quarter of the refreshes.
    let total: usize = per_boundary.values().sum();
    for (boundary, n) in &per_boundary {
        let share = *n as f64 / total as f64;
        assert!(
            (0.2..0.3).contains(&share),
            "boundary :{boundary:02} has {share:.2} of the refreshes"
        );
    }
    assert_eq!(per_boundary.len(), 4);
}

#[test]
fn the_refresh_phase_is_stable_and_differs_between_guards() {
    assert_eq!(
        refresh_phase("shop", "checkout"),
        refresh_phase("shop", "checkout")
    );
    assert_ne!(
        refresh_phase("shop", "checkout"),
        refresh_phase("shop", "search")
    );
    assert_ne!(
        refresh_phase("shop", "checkout"),
        refresh_phase("shopc", "heckout")
    );
}

/// The written `lastEvaluationTime` has whole seconds: a guard evaluated a little past each
/// boundary (as under load) still refreshes once a minute, whatever its phase.
#[test]
fn evaluations_past_the_boundary_refresh_once_a_minute() {
    let s = spec("1m", "automatic");
    for g in 0..300 {
        let phase = refresh_phase("shop", &format!("guard-{g}"));
        let mut written = quiet(&s);
        let mut writes = 0;
        for secs in (15..=600).step_by(15) {
            let now = at(secs)
                .checked_add(jiff::SignedDuration::from_millis(700))
                .unwrap();
            let a = evaluate(&s, &written, Ok(0.002), now);
            if due(&s, &written, &a.status, now, false, phase).is_some() {
                writes += 1;
                // As read back from the API server: whole seconds.
                written = a.status;
                written.last_evaluation_time = Some(Time(at(secs)));
            }
        }
        assert!(
            (9..=10).contains(&writes),
            "guard-{g}, phase {phase:?}: {writes} refreshes in 10 minutes"
        );
    }
}
