//! The dashboard and the incident report, rendered from realistic objects with a fixed
//! "now", checked line by line against golden files in `tests/golden/` (regenerate with
//! `UPDATE_GOLDEN=1`), plus the properties the goldens cannot show.

use super::*;

#[path = "../tests/golden/check.rs"]
mod golden;

fn now() -> Timestamp {
    "2026-11-27T10:16:30Z".parse().unwrap()
}

fn opts(format: StatusFormat, all_namespaces: bool) -> StatusOptions {
    StatusOptions {
        format,
        colour: Colour::Off,
        namespace: (!all_namespaces).then(|| "shop".to_string()),
        now: now(),
    }
}

/// phase4: breaching on its error rate (above), quiet on latency (increaseAbove), a rollback
/// in flight and one waiting; search: Prometheus down (a trigger erroring with its last
/// good breach kept), drifted flags; checkout in staging: invalid, never evaluated.
fn guards() -> Vec<RolloutGuard> {
    let phase4 = serde_json::json!({
        "apiVersion": "rollguard.dev/v1alpha1", "kind": "RolloutGuard",
        "metadata": {"name": "phase4", "namespace": "shop"},
        "spec": {
            "flags": {"configMapRef": {"name": "feature-flags"},
                      "guarded": ["completion_validation_system", "completion_validation_ui"]},
            "triggers": [
                {"name": "critical-error-rate", "query": "sum(rate(errors[1m]))", "above": 0.01, "for": "5m"},
                {"name": "latency-degradation", "query": "p95", "increaseAbove": 0.05,
                 "baseline": {"query": "p95 offset 1d"}, "for": "10m"},
                {"name": "checkout-volume", "query": "sum(rate(orders[5m]))", "below": 5, "for": "2m", "action": "alert"}
            ],
            "slo": {"flagDisable": "1s", "total": "1m"}
        },
        "status": {
            "phase": "RollingBack",
            "lastEvaluationTime": "2026-11-27T10:16:15Z",
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "Evaluating", "message": "", "lastTransitionTime": "2026-11-27T09:00:00Z"},
                {"type": "Healthy", "status": "False", "reason": "TriggersBreaching", "message": "critical-error-rate is breaching", "lastTransitionTime": "2026-11-27T10:14:00Z"},
                {"type": "PrometheusReachable", "status": "True", "reason": "QueriesSucceeded", "message": "", "lastTransitionTime": "2026-11-27T09:00:00Z"},
                {"type": "Stable", "status": "False", "reason": "Breaching", "message": "", "lastTransitionTime": "2026-11-27T10:14:00Z"}
            ],
            "triggers": [
                {"name": "critical-error-rate", "value": 0.0234, "threshold": 0.01, "breaching": true,
                 "breachingSince": "2026-11-27T10:14:00Z"},
                {"name": "latency-degradation", "value": 0.32, "baseline": 0.3125, "threshold": 0.05, "breaching": false},
                {"name": "checkout-volume", "value": 12.5, "threshold": 5.0, "breaching": false}
            ],
            "activeRollback": "phase4-auto-20261127-101500",
            "lastRollback": {"name": "phase4-manual-20261126-221000", "time": "2026-11-26T22:11:02Z", "outcome": "Succeeded"},
            "lastRestore": {"name": "phase4-restore-20261127-083000", "time": "2026-11-27T08:30:04Z", "outcome": "Succeeded"}
        }
    });
    let search = serde_json::json!({
        "apiVersion": "rollguard.dev/v1alpha1", "kind": "RolloutGuard",
        "metadata": {"name": "search", "namespace": "shop"},
        "spec": {
            "flags": {"configMapRef": {"name": "search-flags"}, "format": "flagd", "key": "flags.flagd.json",
                      "guarded": ["semantic-ranking"]},
            "triggers": [
                {"name": "zero-results", "query": "rate(zero_results[5m])", "above": 0.2, "for": "1m"},
                {"name": "clicks", "query": "rate(clicks[5m])", "decreaseBelow": 0.1,
                 "baseline": {"query": "rate(clicks[5m] offset 1w)"}, "for": "15m", "noData": "breach"}
            ]
        },
        "status": {
            "phase": "Degraded",
            "lastEvaluationTime": "2026-11-27T10:16:00Z",
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "Evaluating", "message": "", "lastTransitionTime": "2026-11-27T09:00:00Z"},
                {"type": "Healthy", "status": "True", "reason": "Quiet", "message": "", "lastTransitionTime": "2026-11-27T09:00:00Z"},
                {"type": "PrometheusReachable", "status": "False", "reason": "QueryFailed",
                 "message": "zero-results: GET http://prometheus.monitoring:9090/api/v1/query: connection refused",
                 "lastTransitionTime": "2026-11-27T10:15:00Z"},
                {"type": "FlagsDrifted", "status": "True", "reason": "FlagTurnedOn",
                 "message": "semantic-ranking was turned on again by field manager \"kubectl-edit\"",
                 "lastTransitionTime": "2026-11-27T10:10:00Z"}
            ],
            "triggers": [
                {"name": "zero-results", "value": 0.31, "threshold": 0.2, "breaching": true,
                 "breachingSince": "2026-11-27T10:14:45Z",
                 "lastError": "GET http://prometheus.monitoring:9090/api/v1/query: connection refused"},
                {"name": "clicks", "value": null, "threshold": 0.1, "breaching": true,
                 "breachingSince": "2026-11-27T10:01:00Z"}
            ],
            "lastRollback": {"name": "search-auto-20261127-094500", "time": "2026-11-27T09:45:09Z", "outcome": "Failed"}
        }
    });
    let checkout = serde_json::json!({
        "apiVersion": "rollguard.dev/v1alpha1", "kind": "RolloutGuard",
        "metadata": {"name": "checkout", "namespace": "staging"},
        "spec": {
            "suspend": true,
            "flags": {"configMapRef": {"name": "ff"}, "guarded": ["one-click"]}
        },
        "status": {
            "phase": "Invalid",
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "InvalidSpec",
                 "message": "spec.flags.guarded: flag \"one-click\" is not in ConfigMap \"ff\"",
                 "lastTransitionTime": "2026-11-27T10:00:00Z"}
            ]
        }
    });
    [phase4, search, checkout]
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect()
}

fn requests() -> Vec<RollbackRequest> {
    let active = serde_json::json!({
        "apiVersion": "rollguard.dev/v1alpha1", "kind": "RollbackRequest",
        "metadata": {"name": "phase4-auto-20261127-101500", "namespace": "shop", "creationTimestamp": "2026-11-27T10:15:00Z"},
        "spec": {"guardRef": {"name": "phase4"}, "requestedBy": "system:rollguard", "reason": "trigger critical-error-rate fired"},
        "status": {"phase": "Verifying"}
    });
    let waiting = serde_json::json!({
        "apiVersion": "rollguard.dev/v1alpha1", "kind": "RollbackRequest",
        "metadata": {"name": "phase4-manual-20261127-101600", "namespace": "shop", "creationTimestamp": "2026-11-27T10:16:00Z"},
        "spec": {"guardRef": {"name": "phase4"}, "requestedBy": "alice", "reason": "belt and braces"},
        "status": {"phase": "Pending"}
    });
    let done = serde_json::json!({
        "apiVersion": "rollguard.dev/v1alpha1", "kind": "RollbackRequest",
        "metadata": {"name": "search-auto-20261127-094500", "namespace": "shop", "creationTimestamp": "2026-11-27T09:45:00Z"},
        "spec": {"guardRef": {"name": "search"}, "requestedBy": "system:rollguard"},
        "status": {"phase": "Failed"}
    });
    // Same guard name in another namespace: never counted for shop/phase4.
    let elsewhere = serde_json::json!({
        "apiVersion": "rollguard.dev/v1alpha1", "kind": "RollbackRequest",
        "metadata": {"name": "phase4-manual-x", "namespace": "staging", "creationTimestamp": "2026-11-27T10:16:00Z"},
        "spec": {"guardRef": {"name": "phase4"}, "requestedBy": "bob"}
    });
    [active, waiting, done, elsewhere]
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect()
}

fn shop_guards() -> Vec<RolloutGuard> {
    guards()
        .into_iter()
        .filter(|g| g.namespace().as_deref() == Some("shop"))
        .collect()
}

#[test]
fn status_default_matches_its_golden_file() {
    let text = render_status(
        &shop_guards(),
        &requests(),
        &opts(StatusFormat::Default, false),
    );
    golden::check("status-default.txt", &text);
}

#[test]
fn status_all_namespaces_matches_its_golden_file() {
    let text = render_status(&guards(), &requests(), &opts(StatusFormat::Default, true));
    golden::check("status-all-namespaces.txt", &text);
}

#[test]
fn status_wide_matches_its_golden_file() {
    let text = render_status(&guards(), &requests(), &opts(StatusFormat::Wide, true));
    golden::check("status-wide.txt", &text);
}

#[test]
fn status_json_matches_its_golden_file() {
    let text = render_status(&guards(), &requests(), &opts(StatusFormat::Json, true));
    golden::check("status.json", &text);
}

#[test]
fn default_status_is_one_line_per_guard_and_wide_adds_trigger_lines() {
    let default = render_status(&guards(), &requests(), &opts(StatusFormat::Default, true));
    assert_eq!(default.lines().count(), 1 + 3, "{default}");
    assert!(!default.contains("critical-error-rate"), "{default}");
    let wide = render_status(&guards(), &requests(), &opts(StatusFormat::Wide, true));
    let line = wide
        .lines()
        .find(|l| l.trim_start().starts_with("critical-error-rate"))
        .unwrap_or_else(|| panic!("no trigger line in\n{wide}"));
    for part in [
        "0.0234",
        "above 0.01",
        "BREACHING",
        "2026-11-27T10:14:00Z (for 2m30s of 5m)",
    ] {
        assert!(line.contains(part), "{part:?} missing in {line:?}");
    }
    assert!(
        wide.contains("0.32 (+2.4% vs baseline 0.3125)") && wide.contains("increaseAbove 5%"),
        "{wide}"
    );
}

#[test]
fn the_default_line_counts_breaching_triggers_and_names_active_and_last_rollbacks() {
    let text = render_status(
        &shop_guards(),
        &requests(),
        &opts(StatusFormat::Default, false),
    );
    let phase4: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("phase4 "))
        .unwrap()
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        phase4,
        [
            "phase4",
            "RollingBack",
            "False",
            "1/3",
            "phase4-auto-20261127-101500 (Verifying) +1 waiting",
            "phase4-manual-20261126-221000 Succeeded 12h5m ago",
        ]
    );
}

#[test]
fn colour_only_adds_escape_codes_and_never_moves_columns() {
    for format in [StatusFormat::Default, StatusFormat::Wide] {
        let mut coloured = opts(format, true);
        coloured.colour = Colour::On;
        let on = render_status(&guards(), &requests(), &coloured);
        let off = render_status(&guards(), &requests(), &opts(format, true));
        assert!(on.contains("\x1b[31m1/3\x1b[0m"), "{on}");
        if format == StatusFormat::Wide {
            assert!(on.contains("\x1b[31mBREACHING\x1b[0m"), "{on}");
        }
        assert!(!off.contains('\x1b'));
        assert_eq!(strip_ansi(&on), off);
    }
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn colour_is_for_terminals_and_off_with_no_color() {
    assert_eq!(Colour::detect(true, None), Colour::On);
    assert_eq!(Colour::detect(true, Some("")), Colour::On);
    assert_eq!(Colour::detect(true, Some("1")), Colour::Off);
    assert_eq!(Colour::detect(false, None), Colour::Off);
}

#[test]
fn status_json_is_an_array_with_stable_field_names() {
    let text = render_status(&guards(), &requests(), &opts(StatusFormat::Json, false));
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let first = &value.as_array().unwrap()[0];
    assert_eq!(first["name"], "phase4");
    assert_eq!(first["triggersBreaching"], 1);
    assert_eq!(first["activeRollback"]["phase"], "Verifying");
    assert_eq!(
        first["triggers"][0]["breachingSince"],
        "2026-11-27T10:14:00Z"
    );
    assert_eq!(first["triggers"][0]["comparison"], "above");
    assert_eq!(first["triggers"][1]["for"], "10m");
    assert_eq!(first["lastRollback"]["outcome"], "Succeeded");
    assert_eq!(
        render_status(&[], &[], &opts(StatusFormat::Json, false)),
        "[]\n"
    );
    assert_eq!(
        render_status(&[], &[], &opts(StatusFormat::Default, false)),
        "No RolloutGuards found in namespace \"shop\".\n"
    );
    assert_eq!(
        render_status(&[], &[], &opts(StatusFormat::Wide, true)),
        "No RolloutGuards found in any namespace.\n"
    );
}

#[test]
fn ages_read_like_kubectl() {
    let at = |s: &str| -> Timestamp { s.parse().unwrap() };
    let now = at("2026-11-27T10:00:00Z");
    for (then, want) in [
        ("2026-11-27T09:59:15Z", "45s"),
        ("2026-11-27T09:57:00Z", "3m"),
        ("2026-11-27T09:56:40Z", "3m20s"),
        ("2026-11-27T07:55:00Z", "2h5m"),
        ("2026-11-24T06:00:00Z", "3d4h"),
        ("2026-11-27T10:00:05Z", "0s"),
    ] {
        assert_eq!(age(now, at(then)), want, "{then}");
    }
}

// ---- the incident report --------------------------------------------------------------

/// An automatic graceful rollback that ran: hooks, flags, health verification, a slack
/// message delivered, a webhook that failed for good, and a missed total SLO.
fn automatic_request() -> RollbackRequest {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "rollguard.dev/v1alpha1", "kind": "RollbackRequest",
        "metadata": {"name": "phase4-auto-20261127-101500", "namespace": "shop",
                     "creationTimestamp": "2026-11-27T10:15:00Z"},
        "spec": {"guardRef": {"name": "phase4"}, "requestedBy": "system:rollguard",
                 "reason": "trigger critical-error-rate breached above 0.01 for 5m", "mode": "graceful"},
        "status": {
            "phase": "Succeeded",
            "message": "rolled back 2 flag(s); health verified in 61.2s",
            "snapshotRef": {"name": "phase4-snap-phase4-auto-20261127-101500"},
            "triggeredBy": {"trigger": "critical-error-rate", "value": 0.0234},
            "startedAt": "2026-11-27T10:15:00.012000Z",
            "flagsChangedAt": "2026-11-27T10:15:00.630000Z",
            "completedAt": "2026-11-27T10:16:02.100000Z",
            "flagsChanged": [
                {"name": "completion_validation_system", "from": "true", "to": "false"},
                {"name": "completion_validation_ui", "from": "true", "to": "false"}
            ],
            "durations": {"flagDisable": 0.63, "notification": 0.214, "healthVerification": 61.2, "total": 62.1},
            "slo": {"met": false, "missed": ["total"]},
            "hooks": [
                {"stage": "preRollback", "index": 0, "url": "http://app.shop/drain", "outcome": "Succeeded", "message": "HTTP 200"},
                {"stage": "postRollback", "index": 0, "url": "http://app.shop/resume", "outcome": "Succeeded", "message": "HTTP 204"}
            ],
            "notifications": [
                {"receiver": "ops", "type": "slack", "event": "started", "state": "Delivered", "attempts": 1,
                 "time": "2026-11-27T10:15:00.214000Z"},
                {"receiver": "audit", "type": "webhook", "event": "started", "state": "Failed", "attempts": 3,
                 "time": "2026-11-27T10:15:07.500000Z", "message": "HTTP 503 | Service Unavailable"},
                {"receiver": "ops", "type": "slack", "event": "completed", "state": "Sending", "attempts": 0}
            ],
            "timeline": [
                {"time": "2026-11-27T10:15:00.012000Z", "step": "Accepted", "message": "Graceful rollback requested by system:rollguard: trigger critical-error-rate breached above 0.01 for 5m"},
                {"time": "2026-11-27T10:15:00.040000Z", "step": "SnapshotTaken", "message": "Secret phase4-snap-phase4-auto-20261127-101500"},
                {"time": "2026-11-27T10:15:00.600000Z", "step": "PreRollbackHook", "message": "http://app.shop/drain: HTTP 200"},
                {"time": "2026-11-27T10:15:00.630000Z", "step": "FlagsDisabled", "message": "turned off 2 flag(s)"},
                {"time": "2026-11-27T10:15:07.500000Z", "step": "NotificationFailed", "message": "audit (webhook): HTTP 503 after 3 attempts"},
                {"time": "2026-11-27T10:16:01.830000Z", "step": "HealthVerified", "message": "Deployment api Available"},
                {"time": "2026-11-27T10:16:02.100000Z", "step": "Succeeded", "message": "rolled back 2 flag(s); health verified in 61.2s"}
            ]
        }
    }))
    .unwrap()
}

/// The guard after the rollback: the same request is its last rollback and it turned
/// Stable at 10:25:00 (10 min after creation).
fn guard_after_rollback() -> RolloutGuard {
    let mut guard = guards().remove(0);
    let status = guard.status.as_mut().unwrap();
    status.phase = Some(GuardPhase::RolledBack);
    status.active_rollback = None;
    status.last_rollback = Some(crate::api::guard::LastRollback {
        name: "phase4-auto-20261127-101500".into(),
        time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-11-27T10:16:02Z".parse().unwrap(),
        )),
        outcome: Some("Succeeded".into()),
        flags_disabled: None,
    });
    let stable = status
        .conditions
        .iter_mut()
        .find(|c| c.type_ == "Stable")
        .unwrap();
    stable.status = "True".into();
    stable.last_transition_time = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-11-27T10:25:00Z".parse().unwrap(),
    );
    guard
}

/// A restore that found one flag edited since the rollback and left it alone.
fn restore_request() -> RollbackRequest {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "rollguard.dev/v1alpha1", "kind": "RollbackRequest",
        "metadata": {"name": "phase4-restore-20261127-113000", "namespace": "shop",
                     "creationTimestamp": "2026-11-27T11:30:00Z"},
        "spec": {"guardRef": {"name": "phase4"}, "action": "restore", "requestedBy": "alice",
                 "reason": "fix deployed", "snapshotName": "phase4-snap-phase4-auto-20261127-101500"},
        "status": {
            "phase": "Succeeded",
            "message": "restored 1 flag(s); 1 left alone (edited since the rollback)",
            "snapshotRef": {"name": "phase4-snap-phase4-restore-20261127-113000"},
            "restoredFrom": {"name": "phase4-snap-phase4-auto-20261127-101500"},
            "flagsChanged": [{"name": "completion_validation_system", "from": "false", "to": "true"}],
            "conflicts": [{"name": "completion_validation_ui", "expected": "false", "found": "beta"}],
            "durations": {"flagDisable": 0.081, "total": 0.5},
            "slo": {"met": true, "missed": []},
            "timeline": [
                {"time": "2026-11-27T11:30:00.020000Z", "step": "Accepted", "message": "Graceful restore requested by alice: fix deployed"},
                {"time": "2026-11-27T11:30:00.081000Z", "step": "FlagsRestored", "message": "restored 1 flag(s)"},
                {"time": "2026-11-27T11:30:00.500000Z", "step": "Succeeded", "message": "restored 1 flag(s); 1 left alone (edited since the rollback)"}
            ]
        }
    }))
    .unwrap()
}

#[test]
fn report_of_an_automatic_rollback_matches_its_golden_file() {
    let text = incident_report(&automatic_request(), Some(&guard_after_rollback()));
    golden::check("report-automatic.md", &text);
}

#[test]
fn report_of_a_restore_matches_its_golden_file() {
    let text = incident_report(&restore_request(), Some(&guard_after_rollback()));
    golden::check("report-restore.md", &text);
}

#[test]
fn report_json_matches_its_golden_file() {
    let record = incident_record(&automatic_request(), Some(&guard_after_rollback()));
    let text = serde_json::to_string_pretty(&record).unwrap() + "\n";
    golden::check("report-automatic.json", &text);
}

#[test]
fn the_report_has_every_section_a_post_mortem_needs() {
    let report = incident_report(&automatic_request(), Some(&guard_after_rollback()));
    for line in [
        "# Incident report: phase4-auto-20261127-101500",
        "## Summary",
        "| Snapshot | Secret `phase4-snap-phase4-auto-20261127-101500` |",
        "## Who and why",
        "| Requested by | `system:rollguard` (automatic: a trigger fired) |",
        "| Reason | trigger critical-error-rate breached above 0.01 for 5m |",
        "## Trigger values",
        "Triggered by `critical-error-rate` at value 0.0234 (above 0.01).",
        "| `critical-error-rate` | 0.0234 | above 0.01 | 5m | breaching | 2026-11-27 10:14:00.000Z | - |",
        "## Flags changed",
        "| `completion_validation_system` | `true` | `false` |",
        "## Durations against the SLO",
        "| flagDisable | 0.630s | 1s | yes |",
        "| total | 62.100s | 1m | **no** |",
        "| stability | 600.000s | 15m | yes |",
        "Recorded at completion: SLO missed (total).",
        "## Notifications sent",
        "| `ops` | slack | started | Delivered | 1 | 2026-11-27 10:15:00.214Z | - |",
        "| `audit` | webhook | started | Failed | 3 | 2026-11-27 10:15:07.500Z | HTTP 503 \\| Service Unavailable |",
        "| `ops` | slack | completed | Sending | 0 | - | - |",
        "## Timeline",
        "| 10:15:00.630 | +0.630s | FlagsDisabled | turned off 2 flag(s) |",
        "## Snapshot",
        "kubectl rollguard -n shop restore phase4 --snapshot phase4-snap-phase4-auto-20261127-101500",
    ] {
        assert!(report.contains(line), "missing {line:?} in\n{report}");
    }
}

#[test]
fn the_report_of_a_restore_lists_conflicts_and_has_no_stability_target() {
    let report = incident_report(&restore_request(), Some(&guard_after_rollback()));
    assert!(
        report.contains("Restore conflicts")
            && report.contains("| `completion_validation_ui` | `false` | `beta` |")
            && report
                .contains("| Restored from | Secret `phase4-snap-phase4-auto-20261127-101500` |")
            && report.contains("Not triggered automatically"),
        "{report}"
    );
    assert!(!report.contains("| stability |"), "{report}");
}

#[test]
fn without_its_guard_the_report_says_so_and_judges_against_default_targets() {
    let report = incident_report(&automatic_request(), None);
    assert!(
        report.contains("Guard `phase4` was not found or not readable"),
        "{report}"
    );
    assert!(
        report.contains("| flagDisable | 0.630s | 10s | yes |"),
        "{report}"
    );
    assert!(
        report.contains("| stability | - | 15m | not measured |"),
        "{report}"
    );
}

#[test]
fn a_rollback_that_is_not_the_guards_last_has_no_stability_measure() {
    let mut guard = guard_after_rollback();
    guard
        .status
        .as_mut()
        .unwrap()
        .last_rollback
        .as_mut()
        .unwrap()
        .name = "later".into();
    let record = incident_record(&automatic_request(), Some(&guard));
    let stability = record.slo.iter().find(|s| s.name == "stability").unwrap();
    assert_eq!((stability.seconds, stability.met), (None, None));
}

// ---- the golden-file machinery itself ------------------------------------------------

#[test]
fn a_golden_comparison_fails_on_any_difference() {
    let text = render_status(
        &shop_guards(),
        &requests(),
        &opts(StatusFormat::Default, false),
    );
    assert!(golden::compare("status-default.txt", &text, false).is_ok());
    let changed = text.replacen("RollingBack", "RolledBack", 1);
    let err = golden::compare("status-default.txt", &changed, false).unwrap_err();
    assert!(err.contains("at line 2"), "{err}");
    assert!(golden::compare("status-default.txt", &format!("{text}\n"), false).is_err());
    assert!(golden::compare("no-such-golden.txt", &text, false).is_err());
}

#[test]
fn normalising_replaces_times_ages_and_measured_seconds_only() {
    let text = "at 2026-11-27T10:15:00.041Z and 2026-11-27 10:15:00.041Z, 10:15:00.041 | +0.041s | g-snap-x Succeeded 3m20s ago   x\n    ConfigMap (resourceVersion 355), healthy 0.0s after\n";
    assert_eq!(
        golden::normalise(text),
        "at <time> and <time>, <time> | +<secs> | g-snap-x Succeeded <age> ago x\n    ConfigMap (resourceVersion <rv>), healthy <secs> after\n"
    );
    assert_eq!(
        golden::normalise("above 0.01 for 5m, 1/2\n"),
        "above 0.01 for 5m, 1/2\n"
    );
}

/// With a propagation check, the report puts flagEffective beside flagDisable: in the
/// summary, in the SLO table and in a sentence that says how much later users were safe.
#[test]
fn the_report_shows_flag_disable_and_flag_effective_side_by_side() {
    let mut request = automatic_request();
    let status = request.status.as_mut().unwrap();
    status.durations.as_mut().unwrap().flag_effective = Some(7.25);
    status.timeline.push(crate::api::request::TimelineEntry {
        time: k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            "2026-11-27T10:15:07.250Z".parse().unwrap(),
        ),
        step: "FlagsEffective".into(),
        message: "no instance serves the on-variant any more".into(),
    });
    let mut guard = guard_after_rollback();
    guard.spec.health.propagation = Some(crate::api::guard::Propagation {
        query: "sum(rate(feature_flag_evaluations_total[30s]))".into(),
    });
    let report = incident_report(&request, Some(&guard));
    assert!(
        report.contains("| Flags changed at | 2026-11-27 10:15:00.630Z |\n| Flags effective at | 2026-11-27 10:15:07.250Z |"),
        "{report}"
    );
    assert!(
        report.contains(
            "| flagDisable | 0.630s | 1s | yes |\n| flagEffective | 7.250s | 10s | yes |"
        ),
        "{report}"
    );
    assert!(
        report.contains("Flags off in the ConfigMap after 0.630s; effective (no instance served their on-variant, as `spec.health.propagation` read it) after 7.250s: 6.620s later."),
        "{report}"
    );
    // Measured or not, a guard with the check shows the row; one without it does not.
    let unmeasured = incident_report(&automatic_request(), Some(&guard));
    assert!(
        unmeasured.contains("| flagEffective | - | 10s | not measured |"),
        "{unmeasured}"
    );
    let without = incident_report(&automatic_request(), Some(&guard_after_rollback()));
    assert!(!without.contains("flagEffective"), "{without}");
}

#[test]
fn the_report_of_an_alert_triggered_rollback_names_the_alert_and_its_rule() {
    let mut request = automatic_request();
    request.status.as_mut().unwrap().triggered_by = serde_json::from_value(serde_json::json!({
        "trigger": "high-errors", "value": 2.0,
        "alert": {"name": "HighErrorRate", "labels": {"alertname": "HighErrorRate", "namespace": "shop"},
                  "fingerprint": "4fbe7b2c1a9d0e33", "startsAt": "2026-11-27T10:09:58.2Z",
                  "generatorURL": "http://prometheus:9090/graph?g0.expr=errors"}
    }))
    .unwrap();
    let report = incident_report(&request, Some(&guard_after_rollback()));
    assert!(
        report.contains("Triggered by `high-errors`: alert `HighErrorRate` (fingerprint `4fbe7b2c1a9d0e33`) firing since 2026-11-27T10:09:58.2Z, 2 matching alert(s)."),
        "{report}"
    );
    assert!(
        report.contains("The rule behind it: <http://prometheus:9090/graph?g0.expr=errors>"),
        "{report}"
    );
    let record =
        serde_json::to_value(incident_record(&request, Some(&guard_after_rollback()))).unwrap();
    assert_eq!(
        record["triggeredBy"]["alert"]["fingerprint"],
        "4fbe7b2c1a9d0e33"
    );
}
