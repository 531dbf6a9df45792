use super::*;
use crate::api::guard::LastRollback;
use crate::triggers::Series;

fn spec(extra: serde_json::Value) -> RolloutGuardSpec {
    let mut s = serde_json::json!({
        "flags": {"configMapRef": {"name": "ff"}, "guarded": ["a"]},
        "triggers": [{"name": "errors", "query": "q", "above": 0.01, "for": "5m"}],
    });
    for (k, v) in extra.as_object().unwrap() {
        s[k] = v.clone();
    }
    serde_json::from_value(s).unwrap()
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn reading(value: f64, trigger: &Trigger) -> Outcome {
    Ok(crate::triggers::evaluate(
        trigger,
        &[Series::new(value)],
        &[],
    ))
}

/// Runs evaluations at the given (seconds, value) points, carrying status between them.
fn run(spec: &RolloutGuardSpec, points: &[(i64, Result<f64, &str>)]) -> Vec<Assessment> {
    let mut status = RolloutGuardStatus::default();
    let mut out = Vec::new();
    for (secs, value) in points {
        let outcomes: Vec<Outcome> = spec
            .triggers
            .iter()
            .map(|t| match value {
                Ok(v) => reading(*v, t),
                Err(e) => Err(e.to_string()),
            })
            .collect();
        let a = assess_quietly(spec, &status, &outcomes, at(*secs));
        status = a.status.clone();
        out.push(a);
    }
    out
}

/// One assessment of a valid spec, without drift.
fn assess_quietly(
    spec: &RolloutGuardSpec,
    previous: &RolloutGuardStatus,
    outcomes: &[Outcome],
    now: Timestamp,
) -> Assessment {
    assess_with_in_flight(spec, previous, None, outcomes, now)
}

fn assess_with_in_flight(
    spec: &RolloutGuardSpec,
    previous: &RolloutGuardStatus,
    request_in_flight: Option<String>,
    outcomes: &[Outcome],
    now: Timestamp,
) -> Assessment {
    assess(
        &Context {
            spec,
            generation: Some(1),
            previous,
            invalid: None,
            request_in_flight,
            active_dry_run: false,
            drift: None,
            late: None,
            now,
        },
        outcomes,
    )
}

#[test]
fn a_breach_shorter_than_for_does_not_fire() {
    let s = spec(serde_json::json!({}));
    let runs = run(
        &s,
        &[
            (0, Ok(0.05)),
            (120, Ok(0.05)),
            (240, Ok(0.05)),
            (260, Ok(0.001)),
            (400, Ok(0.05)),
        ],
    );
    assert!(runs.iter().all(|a| a.rollback.is_none()));
    assert_eq!(runs[1].status.phase, Some(GuardPhase::Breaching));
    assert_eq!(runs[3].status.phase, Some(GuardPhase::Monitoring));
    // The window restarted at 400, not at 0.
    assert_eq!(
        runs[4].status.triggers[0].breaching_since,
        Some(Time(at(400)))
    );
}

#[test]
fn a_breach_held_for_the_whole_window_fires_once() {
    let s = spec(serde_json::json!({}));
    let runs = run(
        &s,
        &[
            (0, Ok(0.05)),
            (299, Ok(0.05)),
            (300, Ok(0.05)),
            (315, Ok(0.05)),
        ],
    );
    assert_eq!(runs[1].rollback, None);
    assert_eq!(
        runs[2].rollback,
        Some(AutoRollback {
            trigger: "errors".into(),
            value: Some(0.05),
            alert: None,
        })
    );
    assert!(
        runs[2]
            .notices
            .iter()
            .any(|n| matches!(n, Notice::TriggerFiring { .. }))
    );
    assert!(
        !runs[3]
            .notices
            .iter()
            .any(|n| matches!(n, Notice::TriggerFiring { .. })),
        "firing is announced once"
    );
}

#[test]
fn for_zero_fires_at_once() {
    let s = spec(
        serde_json::json!({"triggers": [{"name": "errors", "query": "q", "above": 0.01, "for": "0s"}]}),
    );
    assert!(run(&s, &[(0, Ok(0.05))])[0].rollback.is_some());
}

#[test]
fn the_window_is_measured_from_the_persisted_breach_start() {
    // As after an operator restart: the previous status says the breach began at 0.
    let s = spec(serde_json::json!({}));
    let previous = RolloutGuardStatus {
        triggers: vec![TriggerStatus {
            name: "errors".into(),
            breaching: true,
            breaching_since: Some(Time(at(0))),
            value: Some(0.05),
            ..Default::default()
        }],
        last_evaluation_time: Some(Time(at(200))),
        ..Default::default()
    };
    let outcomes = vec![reading(0.05, &s.triggers[0])];
    let ctx = |now| Context {
        spec: &s,
        generation: Some(1),
        previous: &previous,
        invalid: None,
        request_in_flight: None,
        active_dry_run: false,
        drift: None,
        late: None,
        now,
    };
    assert!(
        assess(&ctx(at(290)), &outcomes).rollback.is_none(),
        "not early"
    );
    assert!(
        assess(&ctx(at(300)), &outcomes).rollback.is_some(),
        "not reset"
    );
}

#[test]
fn query_errors_never_fire_and_keep_the_last_good_values() {
    let s = spec(
        serde_json::json!({"triggers": [{"name": "errors", "query": "q", "above": 0.01, "for": "0s", "noData": "breach"}]}),
    );
    let runs = run(
        &s,
        &[
            (0, Ok(0.001)),
            (15, Err("connection refused")),
            (30, Err("connection refused")),
        ],
    );
    for a in &runs[1..] {
        assert_eq!(a.rollback, None);
        assert_eq!(a.status.phase, Some(GuardPhase::Degraded));
        assert_eq!(
            a.status.triggers[0].value,
            Some(0.001),
            "last good value kept"
        );
        assert_eq!(
            a.status.triggers[0].last_error.as_deref(),
            Some("connection refused")
        );
        assert_eq!(
            conditions::status_of(&a.status.conditions, condition::PROMETHEUS_REACHABLE),
            Some(FALSE)
        );
    }
    let unreachable = |a: &Assessment| {
        a.notices
            .iter()
            .filter(|n| matches!(n, Notice::PrometheusUnreachable { .. }))
            .count()
    };
    assert_eq!(
        (unreachable(&runs[1]), unreachable(&runs[2])),
        (1, 0),
        "one Event per transition"
    );
}

#[test]
fn errors_during_a_breach_neither_fire_nor_reset_the_window() {
    let s = spec(serde_json::json!({}));
    let runs = run(
        &s,
        &[
            (0, Ok(0.05)),
            (290, Err("timeout")),
            (310, Err("timeout")),
            (320, Ok(0.05)),
        ],
    );
    assert!(runs[..3].iter().all(|a| a.rollback.is_none()));
    assert!(runs[3].rollback.is_some());
}

#[test]
fn manual_mode_alert_action_cooldown_in_flight_and_rolled_back_prevent_the_automatic_request() {
    let now_firing =
        |spec: &RolloutGuardSpec, previous: &RolloutGuardStatus, in_flight: Option<String>| {
            let outcomes: Vec<Outcome> = spec.triggers.iter().map(|t| reading(0.05, t)).collect();
            assess_with_in_flight(spec, previous, in_flight, &outcomes, at(1000))
        };
    let zero = serde_json::json!([{"name": "errors", "query": "q", "above": 0.01, "for": "0s"}]);
    let base = spec(serde_json::json!({"triggers": zero}));
    assert!(
        now_firing(&base, &RolloutGuardStatus::default(), None)
            .rollback
            .is_some()
    );

    let manual = spec(serde_json::json!({"triggers": zero, "rollback": {"mode": "manual"}}));
    let a = now_firing(&manual, &RolloutGuardStatus::default(), None);
    assert!(
        a.rollback.is_none()
            && a.notices
                .iter()
                .any(|n| matches!(n, Notice::TriggerFiring { .. }))
    );

    let alert = spec(
        serde_json::json!({"triggers": [{"name": "errors", "query": "q", "above": 0.01, "action": "alert"}]}),
    );
    let a = now_firing(&alert, &RolloutGuardStatus::default(), None);
    assert!(
        a.rollback.is_none()
            && a.notices
                .iter()
                .any(|n| matches!(n, Notice::TriggerFiring { .. }))
    );

    assert!(
        now_firing(
            &base,
            &RolloutGuardStatus::default(),
            Some("incident-1".into())
        )
        .rollback
        .is_none()
    );

    let failed_recently = RolloutGuardStatus {
        last_rollback: Some(LastRollback {
            name: "r".into(),
            time: Some(Time(at(1000 - 60))),
            outcome: Some("Failed".into()),
            flags_disabled: None,
        }),
        ..Default::default()
    };
    assert!(
        now_firing(&base, &failed_recently, None).rollback.is_none(),
        "cooldown (30m default)"
    );
    let failed_long_ago = RolloutGuardStatus {
        last_rollback: Some(LastRollback {
            name: "r".into(),
            time: Some(Time(at(1000 - 3600))),
            outcome: Some("Failed".into()),
            flags_disabled: None,
        }),
        ..Default::default()
    };
    assert!(now_firing(&base, &failed_long_ago, None).rollback.is_some());
    let rolled_back = RolloutGuardStatus {
        last_rollback: Some(LastRollback {
            name: "r".into(),
            time: Some(Time(at(1000 - 3600))),
            outcome: Some("Succeeded".into()),
            flags_disabled: None,
        }),
        ..Default::default()
    };
    let a = now_firing(&base, &rolled_back, None);
    assert!(a.rollback.is_none(), "flags are already off");
    assert_eq!(a.status.phase, Some(GuardPhase::RolledBack));
}

#[test]
fn stable_after_the_stability_window_of_quiet() {
    let s = spec(serde_json::json!({"health": {"stabilityWindow": "10m"}}));
    let mut status = RolloutGuardStatus {
        last_rollback: Some(LastRollback {
            name: "r".into(),
            time: Some(Time(at(0))),
            outcome: Some("Succeeded".into()),
            flags_disabled: None,
        }),
        ..Default::default()
    };
    let mut stable = Vec::new();
    for (secs, value) in [(10, 0.05), (100, 0.001), (650, 0.001), (700, 0.001)] {
        let outcomes = vec![reading(value, &s.triggers[0])];
        let a = assess_quietly(&s, &status, &outcomes, at(secs));
        stable.push(conditions::is_true(&a.status.conditions, condition::STABLE));
        assert_eq!(a.status.phase, Some(GuardPhase::RolledBack));
        status = a.status;
    }
    // Quiet since 100: stable from 700 on, not at 650.
    assert_eq!(stable, [false, false, false, true]);
}

#[test]
fn invalid_and_suspended_guards_do_not_evaluate() {
    let s = spec(serde_json::json!({}));
    let previous = RolloutGuardStatus::default();
    let a = assess(
        &Context {
            spec: &s,
            generation: Some(2),
            previous: &previous,
            invalid: Some("spec.triggers[errors].query: bad".into()),
            request_in_flight: None,
            active_dry_run: false,
            drift: None,
            late: None,
            now: at(0),
        },
        &[],
    );
    assert_eq!(a.status.phase, Some(GuardPhase::Invalid));
    assert_eq!(
        a.notices,
        vec![Notice::InvalidSpec {
            message: "spec.triggers[errors].query: bad".into()
        }]
    );
    let ready = conditions::get(&a.status.conditions, condition::READY).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.observed_generation),
        (FALSE, Some(2))
    );

    let suspended = spec(serde_json::json!({"suspend": true}));
    let a = assess(
        &Context {
            spec: &suspended,
            generation: Some(1),
            previous: &previous,
            invalid: None,
            request_in_flight: None,
            active_dry_run: false,
            drift: None,
            late: None,
            now: at(0),
        },
        &[],
    );
    assert_eq!(a.status.phase, Some(GuardPhase::Suspended));
    assert!(a.rollback.is_none());
}

#[test]
fn drift_after_a_rollback_names_the_manager_once() {
    let s = spec(serde_json::json!({}));
    let previous = RolloutGuardStatus {
        last_rollback: Some(LastRollback {
            name: "r".into(),
            time: Some(Time(at(0))),
            outcome: Some("Succeeded".into()),
            flags_disabled: None,
        }),
        ..Default::default()
    };
    let outcomes = vec![reading(0.001, &s.triggers[0])];
    let drift = Some(Drift {
        flags: vec!["a".into()],
        manager: Some("argocd-controller".into()),
    });
    let a = assess(
        &Context {
            spec: &s,
            generation: Some(1),
            previous: &previous,
            invalid: None,
            request_in_flight: None,
            active_dry_run: false,
            drift: drift.clone(),
            late: None,
            now: at(10),
        },
        &outcomes,
    );
    let c = conditions::get(&a.status.conditions, condition::FLAGS_DRIFTED).unwrap();
    assert_eq!(c.status, TRUE);
    assert!(
        c.message.contains("turned back on by argocd-controller"),
        "{}",
        c.message
    );
    assert_eq!(
        a.notices
            .iter()
            .filter(|n| matches!(n, Notice::FlagsDrifted { .. }))
            .count(),
        1
    );
    let again = assess(
        &Context {
            spec: &s,
            generation: Some(1),
            previous: &a.status,
            invalid: None,
            request_in_flight: None,
            active_dry_run: false,
            drift,
            late: None,
            now: at(20),
        },
        &outcomes,
    );
    assert!(
        !again
            .notices
            .iter()
            .any(|n| matches!(n, Notice::FlagsDrifted { .. })),
        "one Event per transition"
    );
    // Not judged (a request in flight): the condition stands; judged clean: it clears.
    let unjudged = assess(
        &Context {
            spec: &s,
            generation: Some(1),
            previous: &again.status,
            invalid: None,
            request_in_flight: Some("restore-1".into()),
            active_dry_run: false,
            drift: None,
            late: None,
            now: at(30),
        },
        &outcomes,
    );
    let c = conditions::get(&unjudged.status.conditions, condition::FLAGS_DRIFTED).unwrap();
    assert_eq!(c.status, TRUE);
    let clean = assess(
        &Context {
            spec: &s,
            generation: Some(1),
            previous: &unjudged.status,
            invalid: None,
            request_in_flight: None,
            active_dry_run: false,
            drift: Some(Drift {
                flags: vec![],
                manager: None,
            }),
            late: None,
            now: at(40),
        },
        &outcomes,
    );
    let c = conditions::get(&clean.status.conditions, condition::FLAGS_DRIFTED).unwrap();
    assert_eq!((c.status.as_str(), c.reason.as_str()), (FALSE, "NoDrift"));
}

#[test]
fn a_trigger_still_firing_after_a_restore_rolls_back_again_once_the_cooldown_is_over() {
    let s = spec(serde_json::json!({
        "triggers": [{"name": "errors", "query": "q", "above": 0.01, "for": "0s"}],
    }));
    let firing = run(&s, &[(0, Ok(0.05))]).pop().unwrap().status;
    let again = |rolled_back_ago: i64| {
        let previous = RolloutGuardStatus {
            last_rollback: Some(LastRollback {
                name: "first".into(),
                time: Some(Time(at(10 - rolled_back_ago))),
                outcome: Some("Succeeded".into()),
                flags_disabled: None,
            }),
            // Restored (flags back on) while the metric is still bad.
            last_restore: Some(LastRollback {
                name: "restore".into(),
                time: Some(Time(at(5))),
                outcome: Some("Succeeded".into()),
                flags_disabled: None,
            }),
            ..firing.clone()
        };
        let outcomes: Vec<Outcome> = s.triggers.iter().map(|t| reading(0.05, t)).collect();
        assess_quietly(&s, &previous, &outcomes, at(10))
    };
    let within_cooldown = again(600);
    assert_eq!(within_cooldown.rollback, None, "cooldown (30m default)");
    let after_cooldown = again(3600);
    assert_eq!(
        after_cooldown.rollback,
        Some(AutoRollback {
            trigger: "errors".into(),
            value: Some(0.05),
            alert: None,
        })
    );
    assert!(
        !after_cooldown
            .notices
            .iter()
            .any(|n| matches!(n, Notice::TriggerFiring { .. })),
        "still the same firing: not announced again"
    );
}

#[test]
fn a_rollback_that_turned_the_flags_off_but_failed_verification_still_counts_as_rolled_back() {
    let failed = |flags_disabled| RolloutGuardStatus {
        last_rollback: Some(LastRollback {
            name: "unverified".into(),
            time: Some(Time(at(0))),
            outcome: Some("Failed".into()),
            flags_disabled,
        }),
        ..Default::default()
    };
    assert!(rolled_back(&failed(Some(true))));
    assert!(
        !rolled_back(&failed(Some(false))),
        "failed before the flags"
    );
    assert!(!rolled_back(&failed(None)));
    let s = spec(serde_json::json!({
        "triggers": [{"name": "errors", "query": "q", "above": 0.01, "for": "0s"}],
    }));
    let outcomes: Vec<Outcome> = s.triggers.iter().map(|t| reading(0.05, t)).collect();
    let a = assess_quietly(&s, &failed(Some(true)), &outcomes, at(7200));
    assert_eq!(a.status.phase, Some(GuardPhase::RolledBack));
    let c = conditions::get(&a.status.conditions, condition::ROLLED_BACK).unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", "VerificationFailed")
    );
    assert_eq!(a.rollback, None, "the flags are off already");
}

/// After an edit (a new generation), no condition of the old generation stands beside the
/// new ones: what the spec change left unjudged reads Unknown, what is still known (the
/// rollback) is restated; `Reconciling` and `Stalled` follow the phase (kstatus).
#[test]
fn an_edit_leaves_no_condition_of_the_old_generation() {
    let s = spec(serde_json::json!({}));
    let rolled = RolloutGuardStatus {
        last_rollback: Some(LastRollback {
            name: "r".into(),
            time: Some(Time(at(0))),
            outcome: Some("Succeeded".into()),
            flags_disabled: None,
        }),
        ..Default::default()
    };
    let healthy = assess_quietly(&s, &rolled, &[reading(0.001, &s.triggers[0])], at(10));
    assert!(conditions::is_true(
        &healthy.status.conditions,
        condition::HEALTHY
    ));
    assert_eq!(kstatus(&healthy.status), (Some(FALSE), Some(FALSE)));

    let with = |generation, invalid: Option<&str>, spec: &RolloutGuardSpec| {
        assess(
            &Context {
                spec,
                generation: Some(generation),
                previous: &healthy.status,
                invalid: invalid.map(Into::into),
                request_in_flight: None,
                active_dry_run: false,
                drift: None,
                late: None,
                now: at(20),
            },
            &[],
        )
    };
    let invalid = with(2, Some("spec.triggers[errors].query: bad"), &s);
    assert_eq!(invalid.status.phase, Some(GuardPhase::Invalid));
    for c in &invalid.status.conditions {
        assert_eq!(c.observed_generation, Some(2), "{c:?}");
    }
    let healthy_now = conditions::get(&invalid.status.conditions, condition::HEALTHY).unwrap();
    assert_eq!(
        (healthy_now.status.as_str(), healthy_now.reason.as_str()),
        (UNKNOWN, "InvalidSpec")
    );
    assert!(conditions::is_true(
        &invalid.status.conditions,
        condition::ROLLED_BACK
    ));
    assert_eq!(kstatus(&invalid.status), (Some(FALSE), Some(TRUE)));
    let stalled = conditions::get(&invalid.status.conditions, crate::kstatus::STALLED).unwrap();
    assert_eq!(stalled.message, "spec.triggers[errors].query: bad");

    let suspended = with(3, None, &spec(serde_json::json!({"suspend": true})));
    assert_eq!(suspended.status.phase, Some(GuardPhase::Suspended));
    for c in &suspended.status.conditions {
        assert_eq!(c.observed_generation, Some(3), "{c:?}");
    }
    assert_eq!(
        conditions::status_of(&suspended.status.conditions, condition::HEALTHY),
        Some(UNKNOWN)
    );
    assert_eq!(kstatus(&suspended.status), (Some(FALSE), Some(FALSE)));
}

#[test]
fn a_degraded_guard_is_reconciling() {
    let s = spec(serde_json::json!({}));
    let a = run(&s, &[(0, Err("connection refused"))]).remove(0);
    assert_eq!(a.status.phase, Some(GuardPhase::Degraded));
    let reconciling = conditions::get(&a.status.conditions, crate::kstatus::RECONCILING).unwrap();
    assert_eq!(
        (reconciling.status.as_str(), reconciling.reason.as_str()),
        (TRUE, "PrometheusUnreachable")
    );
    assert_eq!(
        conditions::status_of(&a.status.conditions, crate::kstatus::STALLED),
        Some(FALSE)
    );
}

fn kstatus(status: &RolloutGuardStatus) -> (Option<&str>, Option<&str>) {
    (
        conditions::status_of(&status.conditions, crate::kstatus::RECONCILING),
        conditions::status_of(&status.conditions, crate::kstatus::STALLED),
    )
}

#[test]
fn a_health_timeout_shorter_than_verification_needs_is_said_once_and_cleared_when_fixed() {
    let windowed = |timeout: &str| {
        spec(serde_json::json!({
            "interval": "1m",
            "health": {"timeout": timeout},
            "triggers": [{"name": "errors", "query": "rate(errors_total[5m])", "above": 1, "for": "0s"}],
        }))
    };
    let too_short = windowed("90s");
    let runs = run(&too_short, &[(0, Ok(0.0)), (60, Ok(0.0))]);
    let condition = conditions::get(&runs[0].status.conditions, condition::VERIFICATION_IN_TIME)
        .expect("the condition");
    assert_eq!(condition.status, FALSE);
    assert!(
        condition.message.contains("spec.health.timeout (90s)")
            && condition.message.contains("\"errors\"")
            && condition.message.contains("120s"),
        "{}",
        condition.message
    );
    let told = |a: &Assessment| {
        a.notices
            .iter()
            .filter(|n| matches!(n, Notice::HealthTimeoutTooShort { .. }))
            .count()
    };
    assert_eq!((told(&runs[0]), told(&runs[1])), (1, 0));

    // Raised: True from then on. A query without ranges is judged at once: never too short.
    let fixed = assess_quietly(
        &windowed("3m"),
        &runs[1].status,
        &[reading(0.0, &too_short.triggers[0])],
        at(120),
    );
    assert_eq!(
        conditions::status_of(&fixed.status.conditions, condition::VERIFICATION_IN_TIME),
        Some(TRUE)
    );
    let plain = run(
        &spec(serde_json::json!({"health": {"timeout": "1s"}})),
        &[(0, Ok(0.0))],
    );
    assert!(
        conditions::get(&plain[0].status.conditions, condition::VERIFICATION_IN_TIME).is_none()
    );
}

/// The propagation check can pass no sooner than three intervals after the change for an
/// application that served the on-variant (its window, then one interval to confirm): a
/// shorter health.timeout fails every rollback, and the guard says so.
#[test]
fn a_health_timeout_shorter_than_the_propagation_check_needs_is_said() {
    let with = |timeout: &str| {
        spec(serde_json::json!({
            "interval": "15s",
            "health": {"timeout": timeout, "propagation": {"query": "sum(rate(feature_flag_evaluations_total{feature_flag_key=~\"$FLAGS\"}[30s]))"}},
        }))
    };
    let runs = run(&with("40s"), &[(0, Ok(0.0))]);
    let condition = conditions::get(&runs[0].status.conditions, condition::VERIFICATION_IN_TIME)
        .expect("the condition");
    assert_eq!(condition.status, FALSE);
    assert!(
        condition.message.contains("spec.health.timeout (40s)")
            && condition.message.contains("spec.health.propagation")
            && condition.message.contains("45s after the change"),
        "{}",
        condition.message
    );
    let fits = run(&with("1m"), &[(0, Ok(0.0))]);
    assert!(conditions::get(&fits[0].status.conditions, condition::VERIFICATION_IN_TIME).is_none());
}

/// An alert trigger goes through the same window as a query trigger: it breaches while a
/// matching alert fires, fires after `for` with the alert it saw, and an error (the source
/// silent or unreachable) keeps its breach window without firing from it.
#[test]
fn an_alert_trigger_fires_after_its_for_with_the_alert_and_never_from_an_error() {
    let spec = spec(serde_json::json!({"triggers": [
        {"name": "high-errors", "alert": {"matchers": {"alertname": "HighErrorRate"}}, "for": "2m"}
    ]}));
    let firing = [crate::alerts::Alert {
        labels: [("alertname".to_string(), "HighErrorRate".to_string())].into(),
        fingerprint: "f00d".into(),
        starts_at: "2027-01-15T08:00:00Z".into(),
        generator_url: "http://prom/graph".into(),
    }];
    let matchers = &spec.triggers[0].alert.as_ref().unwrap().matchers;
    let on: Outcome = Ok(crate::alerts::reading(matchers, &firing));
    let off: Outcome = Ok(crate::alerts::reading(matchers, &[]));
    let silent: Outcome = Err("Alertmanager at http://am/ is unreachable".into());
    let mut status = RolloutGuardStatus::default();
    let mut step = |secs: i64, outcome: &Outcome| {
        let a = assess_quietly(&spec, &status, std::slice::from_ref(outcome), at(secs));
        status = a.status.clone();
        a
    };
    assert_eq!(step(0, &off).status.phase, Some(GuardPhase::Monitoring));
    let breaching = step(10, &on);
    assert_eq!(breaching.status.phase, Some(GuardPhase::Breaching));
    assert_eq!(breaching.status.triggers[0].value, Some(1.0));
    assert_eq!(breaching.rollback, None);
    let degraded = step(100, &silent);
    assert_eq!(degraded.status.phase, Some(GuardPhase::Degraded));
    assert!(
        degraded.status.triggers[0].breaching,
        "last good values kept"
    );
    let still_silent = step(200, &silent);
    assert_eq!(still_silent.rollback, None, "never fires from an error");
    let fired = step(210, &on);
    assert_eq!(
        fired.rollback,
        Some(AutoRollback {
            trigger: "high-errors".into(),
            value: Some(1.0),
            alert: Some(firing[0].triggering()),
        }),
        "the breach held since 10s: 200s >= for (2m)"
    );
    let resolved = step(220, &off);
    assert!(!resolved.status.triggers[0].breaching);
    assert_eq!(resolved.rollback, None);
}
