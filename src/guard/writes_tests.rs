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
    due(spec, written, &a.status, now, announces)
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
        due(&s, &written, &a.status, at(15), false),
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
        due(&s, &breaching, &a.status, at(30), false),
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
        due(&s, &breaching, &fired.status, at(75), false),
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
        due(&s, &written, &failed.status, at(15), false),
        Some(Write::Transition)
    );
    let other = evaluate(&s, &failed.status, Err("timed out"), at(30));
    assert_eq!(
        due(&s, &failed.status, &other.status, at(30), false),
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
        due(&s, &written, &gone, at(15), false),
        Some(Write::Transition)
    );
}

#[test]
fn a_condition_message_alone_is_a_value() {
    let s = spec("1m", "automatic");
    let written = quiet(&s);
    let mut next = evaluate(&s, &written, Ok(0.001), at(15)).status;
    next.conditions[0].message.push_str(" (reworded)");
    assert_eq!(due(&s, &written, &next, at(15), false), None);
    next.conditions[0].reason = "Other".into();
    assert_eq!(
        due(&s, &written, &next, at(15), false),
        Some(Write::Transition)
    );
}

#[test]
fn slot_generation_notices_and_announcements_are_transitions() {
    let s = spec("1m", "automatic");
    let written = quiet(&s);
    let steady = evaluate(&s, &written, Ok(0.001), at(15)).status;
    assert_eq!(due(&s, &written, &steady, at(15), false), None);
    let changed = |f: &dyn Fn(&mut RolloutGuardStatus)| {
        let mut next = steady.clone();
        f(&mut next);
        due(&s, &written, &next, at(15), false)
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
        due(&s, &written, &steady, at(15), true),
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
        if let Some(why) = decide(&s, &written, &due_only, now) {
            let since = written
                .last_evaluation_time
                .as_ref()
                .map(|t| now.duration_since(t.0));
            assert!(
                why == Write::Transition || since.is_some_and(|d| d.unsigned_abs() >= REFRESH),
                "evaluation {i}: a refresh within a minute of the last write"
            );
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
