use super::*;
use crate::api::LocalObjectReference;
use crate::api::request::{RequestPhase, RollbackRequestSpec, RollbackRequestStatus};

pub(super) fn notifier(name: &str, type_: NotifierType, on: Option<Vec<NotifyEvent>>) -> Notifier {
    Notifier {
        name: name.into(),
        type_,
        secret_ref: Some(LocalObjectReference {
            name: format!("{name}-secret"),
        }),
        on,
        on_yaml11: None,
    }
}

pub(super) fn request() -> RollbackRequest {
    let mut r = RollbackRequest::new(
        "incident-42",
        RollbackRequestSpec {
            guard_ref: LocalObjectReference {
                name: "phase4".into(),
            },
            action: RequestAction::Rollback,
            requested_by: "alice".into(),
            reason: "Critical issue detected in Phase 4 features".into(),
            mode: RequestMode::Graceful,
            flags: vec![],
            force_disable_all: false,
            snapshot_name: String::new(),
            dry_run: false,
        },
    );
    r.metadata.namespace = Some("shop".into());
    r.metadata.uid = Some("0f1e2d3c".into());
    r.status = Some(RollbackRequestStatus {
        phase: Some(RequestPhase::Succeeded),
        flags_changed: Some(vec![FlagChange {
            name: "completion_validation_system".into(),
            from: "true".into(),
            to: "false".into(),
        }]),
        triggered_by: Some(TriggeredBy {
            trigger: "critical-error-rate".into(),
            value: Some(0.023),
            alert: None,
        }),
        durations: Some(Durations {
            flag_disable: Some(0.041),
            flag_effective: None,
            notification: Some(0.12),
            health_verification: Some(38.2),
            total: Some(38.9),
        }),
        snapshot_ref: Some(LocalObjectReference {
            name: "phase4-snap-incident-42".into(),
        }),
        message: Some("rolled back 1 flag(s) in 38.900s".into()),
        ..Default::default()
    });
    r
}

pub(super) fn at() -> jiff::Timestamp {
    "2026-11-27T10:15:00Z".parse().unwrap()
}

#[test]
fn receivers_are_routed_by_their_on_list_and_all_moments_but_stable_by_default() {
    let notify = vec![
        notifier("ops", NotifierType::Slack, Some(vec![NotifyEvent::Started])),
        notifier("audit", NotifierType::Webhook, None),
        notifier(
            "oncall",
            NotifierType::Email,
            Some(vec![NotifyEvent::Failed]),
        ),
    ];
    let names = |event| {
        receivers(&notify, event)
            .iter()
            .map(|n| n.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(NotifyEvent::Started), ["ops", "audit"]);
    assert_eq!(names(NotifyEvent::Failed), ["audit", "oncall"]);
    assert_eq!(names(NotifyEvent::Drift), ["audit"]);
    assert!(
        names(NotifyEvent::Stable).is_empty(),
        "stable is told only when listed"
    );
}

#[test]
fn a_pagerduty_receiver_takes_the_moments_that_trigger_and_resolve_by_default_and_only_rollbacks() {
    let notify = vec![
        notifier("oncall", NotifierType::PagerDuty, None),
        notifier("chat", NotifierType::Teams, None),
    ];
    assert_eq!(notify[0].events(), NotifyEvent::PAGERDUTY);
    assert_eq!(notify[1].events(), NotifyEvent::DEFAULT);
    let names = |v: Vec<&Notifier>| v.iter().map(|n| n.name.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(request_receivers(
            &notify,
            NotifyEvent::Started,
            RequestAction::Rollback
        )),
        ["oncall", "chat"]
    );
    assert_eq!(
        names(request_receivers(
            &notify,
            NotifyEvent::Started,
            RequestAction::Restore
        )),
        ["chat"]
    );
    assert_eq!(names(receivers(&notify, NotifyEvent::Completed)), ["chat"]);
    assert_eq!(names(receivers(&notify, NotifyEvent::Drift)), ["chat"]);
    assert_eq!(names(receivers(&notify, NotifyEvent::Stable)), ["oncall"]);
    let ending = |ending, action| {
        ending_events(&notify, ending, action)
            .into_iter()
            .map(|(n, e)| (n.name.clone(), e))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ending(Ending::Unhealthy, RequestAction::Rollback),
        [
            ("oncall".to_string(), NotifyEvent::Unhealthy),
            ("chat".to_string(), NotifyEvent::Unhealthy)
        ]
    );
    assert_eq!(
        ending(Ending::Failed, RequestAction::Restore),
        [("chat".to_string(), NotifyEvent::Failed)]
    );
    assert_eq!(
        ending(Ending::Succeeded, RequestAction::Rollback),
        [("chat".to_string(), NotifyEvent::Completed)]
    );
}

#[test]
fn the_yaml11_alias_of_on_routes_like_on() {
    let mut n = notifier("ops", NotifierType::Slack, None);
    n.on_yaml11 = Some(vec![NotifyEvent::Drift]);
    assert_eq!(receivers(&[n.clone()], NotifyEvent::Drift).len(), 1);
    assert!(receivers(&[n], NotifyEvent::Started).is_empty());
}

#[test]
fn an_unhealthy_ending_is_one_message_per_receiver() {
    let notify = vec![
        notifier(
            "both",
            NotifierType::Slack,
            Some(vec![NotifyEvent::Unhealthy, NotifyEvent::Failed]),
        ),
        notifier(
            "failed-only",
            NotifierType::Webhook,
            Some(vec![NotifyEvent::Failed]),
        ),
        notifier(
            "started-only",
            NotifierType::Webhook,
            Some(vec![NotifyEvent::Started]),
        ),
    ];
    let ending = |e| {
        ending_events(&notify, e, RequestAction::Rollback)
            .into_iter()
            .map(|(n, ev)| (n.name.clone(), ev))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ending(Ending::Unhealthy),
        [
            ("both".to_string(), NotifyEvent::Unhealthy),
            ("failed-only".to_string(), NotifyEvent::Failed)
        ]
    );
    assert_eq!(
        ending(Ending::Failed),
        [
            ("both".to_string(), NotifyEvent::Failed),
            ("failed-only".to_string(), NotifyEvent::Failed)
        ]
    );
    assert!(ending(Ending::Succeeded).is_empty());
}

#[test]
fn recording_a_moment_twice_adds_nothing() {
    let ops = notifier("ops", NotifierType::Slack, None);
    let mut records = Vec::new();
    assert_eq!(
        record_sending(&mut records, &[(&ops, NotifyEvent::Started)]),
        1
    );
    records[0].state = DeliveryState::Delivered;
    assert_eq!(
        record_sending(&mut records, &[(&ops, NotifyEvent::Started)]),
        0
    );
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].state, DeliveryState::Delivered);
    assert_eq!(
        record_sending(&mut records, &[(&ops, NotifyEvent::Completed)]),
        1
    );
    assert_eq!(records[1].state, DeliveryState::Sending);
}

#[test]
fn notified_follows_the_started_deliveries() {
    let a = notifier("a", NotifierType::Slack, None);
    let b = notifier("b", NotifierType::Webhook, None);
    let mut records = Vec::new();
    record_sending(
        &mut records,
        &[(&a, NotifyEvent::Started), (&b, NotifyEvent::Started)],
    );
    assert_eq!(notified_condition(&records, 2).0, "Unknown");
    records[0].state = DeliveryState::Delivered;
    assert_eq!(notified_condition(&records, 2).0, "Unknown");
    records[1].state = DeliveryState::Delivered;
    let (status, reason, message) = notified_condition(&records, 2);
    assert_eq!((status, reason), ("True", "Delivered"));
    assert_eq!(message, "started: delivered to a, b");
    records[1].state = DeliveryState::Failed;
    let (status, reason, message) = notified_condition(&records, 2);
    assert_eq!((status, reason), ("False", "NotificationFailed"));
    assert!(message.contains('b'), "{message}");
    assert_eq!(notified_condition(&[], 0).1, "EventsOnly");
}

#[test]
fn a_request_notice_carries_who_why_and_what_changed() {
    let notice = request_notice(&request(), NotifyEvent::Completed, at());
    assert_eq!(notice.id, "0f1e2d3c:completed");
    assert_eq!(notice.namespace, "shop");
    assert_eq!(notice.guard, "phase4");
    assert_eq!(notice.time, "2026-11-27T10:15:00Z");
    let r = notice.request.as_ref().unwrap();
    assert_eq!(r.requested_by, "alice");
    assert_eq!(r.phase.as_deref(), Some("Succeeded"));
    assert_eq!(r.snapshot.as_deref(), Some("phase4-snap-incident-42"));
    assert!(
        notice
            .message
            .contains("completion_validation_system true→false"),
        "{}",
        notice.message
    );
}

#[test]
fn the_slack_payload_has_text_and_blocks_with_every_fact() {
    let notice = request_notice(&request(), NotifyEvent::Started, at());
    let payload = slack_payload(&notice);
    let text = payload["text"].as_str().unwrap();
    assert!(text.starts_with("Rollback started: shop/phase4"), "{text}");
    let blocks = payload["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    let fields: Vec<&str> = blocks
        .iter()
        .filter_map(|b| b["fields"].as_array())
        .flatten()
        .map(|f| f["text"].as_str().unwrap())
        .collect();
    for label in [
        "*Guard*\nshop/phase4",
        "*Request*\nincident-42",
        "*Reason*\nCritical issue detected in Phase 4 features",
        "*Requested by*\nalice",
        "*Triggered by*\ncritical-error-rate = 0.023",
        "*Flags changed*\ncompletion_validation_system: true → false",
        "*Durations*\nflags off 0.041s, notified 0.120s, healthy 38.200s, total 38.900s",
        "*Outcome*\nSucceeded",
    ] {
        assert!(fields.contains(&label), "{label:?} not in {fields:#?}");
    }
}

#[test]
fn slack_text_is_escaped() {
    let mut r = request();
    r.spec.reason = "errors > 5% & rising <fast>".into();
    let payload = slack_payload(&request_notice(&r, NotifyEvent::Started, at()));
    let all = payload.to_string();
    assert!(
        all.contains("errors &gt; 5% &amp; rising &lt;fast&gt;"),
        "{all}"
    );
}

#[test]
fn the_webhook_body_is_the_documented_schema() {
    let body = webhook_body(&request_notice(&request(), NotifyEvent::Started, at()));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["apiVersion"], "rollguard.dev/v1alpha1");
    assert_eq!(v["kind"], "RollguardNotification");
    assert_eq!(v["id"], "0f1e2d3c:started");
    assert_eq!(v["event"], "started");
    assert_eq!(v["request"]["requestedBy"], "alice");
    assert_eq!(
        v["request"]["triggeredBy"]["trigger"],
        "critical-error-rate"
    );
    assert_eq!(v["request"]["flagsChanged"][0]["to"], "false");
    assert_eq!(v["request"]["durations"]["flagDisable"], 0.041);
    assert!(v["trigger"].is_null());
    // Absent until judged; `rollback` only for `stable`.
    assert!(v["request"].get("slo").is_none() && v.get("rollback").is_none());
    let mut judged = request();
    judged.status.as_mut().unwrap().slo = Some(crate::api::request::SloOutcome {
        met: true,
        missed: vec![],
    });
    let body = webhook_body(&request_notice(&judged, NotifyEvent::Completed, at()));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v["request"]["slo"],
        serde_json::json!({"met": true, "missed": []})
    );
}

#[test]
fn the_email_names_the_moment_and_the_facts() {
    let (subject, body) = email(&request_notice(&request(), NotifyEvent::Completed, at()));
    assert_eq!(subject, "[rollguard] Rollback completed: shop/phase4");
    assert!(body.contains("Requested by: alice\n"), "{body}");
    assert!(body.contains("Delivery: 0f1e2d3c:completed"), "{body}");
}

#[test]
fn in_app_data_says_state_message_and_since() {
    let data = in_app_data(&request_notice(&request(), NotifyEvent::Started, at()));
    assert_eq!(data["state"], "RollingBack");
    assert_eq!(data["since"], "2026-11-27T10:15:00Z");
    assert_eq!(data["guard"], "phase4");
    assert_eq!(data["request"], "incident-42");
    let per_guard: serde_json::Value = serde_json::from_str(&data["phase4.json"]).unwrap();
    assert_eq!(per_guard["state"], "RollingBack");
    let done = in_app_data(&request_notice(&request(), NotifyEvent::Completed, at()));
    assert_eq!(done["state"], "RolledBack");
}

#[test]
fn recorded_guard_notices_are_dropped_when_delivered_kept_in_flight_and_sent_again_after_a_restart()
{
    use crate::api::guard::{NotifyEvent, PendingNotice};
    use crate::notify::{Delivering, settle_pending};
    let notice = |id: &str| PendingNotice {
        receiver: "ops".into(),
        event: NotifyEvent::TriggerFiring,
        id: id.into(),
        time: "2026-12-07T10:00:00Z".into(),
        message: "fired".into(),
        trigger: None,
        rollback: None,
    };
    let (kept, again, finished) = settle_pending(
        vec![notice("done"), notice("flying"), notice("lost")],
        |n| match n.id.as_str() {
            "done" => Delivering::Finished,
            "flying" => Delivering::InFlight,
            _ => Delivering::Unknown,
        },
    );
    let ids = |v: &[PendingNotice]| v.iter().map(|n| n.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&kept), ["flying", "lost"]);
    assert_eq!(ids(&again), ["lost"]);
    assert_eq!(ids(&finished), ["done"]);
}

#[test]
fn an_in_app_notice_older_than_the_one_shown_is_outdated() {
    use crate::notify::{Notice, in_app_data, in_app_outdated};
    let notice = |event, time: &str| Notice {
        id: "x".into(),
        event,
        time: time.into(),
        namespace: "shop".into(),
        guard: "g".into(),
        request: None,
        trigger: None,
        rollback: None,
        message: "m".into(),
    };
    let started = notice(NotifyEvent::Started, "2026-12-07T10:00:00.100Z");
    let completed = notice(NotifyEvent::Completed, "2026-12-07T10:00:00.900Z");
    let shown = in_app_data(&completed);
    assert!(in_app_outdated(&shown, &started));
    assert!(!in_app_outdated(&shown, &completed));
    assert!(!in_app_outdated(&in_app_data(&started), &completed));
    // Another guard's notice is not this guard's.
    let other = Notice {
        guard: "h".into(),
        ..started.clone()
    };
    assert!(!in_app_outdated(&shown, &other));
}
