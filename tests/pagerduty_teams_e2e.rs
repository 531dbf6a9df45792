//! PagerDuty and Microsoft Teams receivers end to end: the operator runs as its own process
//! against the real kube-apiserver and delivers to tests/receivers/schema_receiver.py on
//! loopback, which validates every Teams card against the published Adaptive Card schema
//! with PyPI `jsonschema`, and checks every PagerDuty event against what PagerDuty's own
//! client (PyPI `pagerduty`) sends for its fields, answering as the Events API v2 does.

mod common;

use common::receivers::{Checked, SchemaReceiver};
use common::{Env, wait_until};
use rollguard::api::RollbackRequest;
use rollguard::api::guard::{NotifyEvent, RolloutGuard};
use rollguard::api::request::RequestPhase;
use std::time::Duration;

/// A PagerDuty integration key: it must never show in status, Events or logs.
const ROUTING_KEY: &str = "R0UT1NGK3Y0f8a7c1e2d3b4a5c6d7e8f9";
const REPORT_URL: &str = "https://reports.example/{namespace}/{request}";
const FAST_RETRIES: &[(&str, &str)] = &[
    ("ROLLGUARD_NOTIFY_ATTEMPTS", "4"),
    ("ROLLGUARD_NOTIFY_ATTEMPT_TIMEOUT", "1s"),
];

fn secret(env: &Env, name: &str, data: serde_json::Value) {
    env.cluster.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {}, labels: {{rollguard.dev/credentials: \"true\"}}}}\nstringData: {data}\n",
        env.ns
    ));
}

/// ConfigMap `ff` (flags `a`, `b` on), guard `g` over both with a PagerDuty receiver
/// `oncall` (its default `on`) and a Teams receiver `chat` (every request moment and
/// `stable`), and `extra` spec.
fn setup(env: &Env, receiver: &SchemaReceiver, extra: &str) {
    secret(
        env,
        "pd",
        serde_json::json!({"routingKey": ROUTING_KEY, "url": receiver.url("pagerduty"), "reportUrl": REPORT_URL}),
    );
    secret(
        env,
        "teams-hook",
        serde_json::json!({"url": receiver.url("teams"), "reportUrl": REPORT_URL}),
    );
    env.cluster.apply(&format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: ff, namespace: {ns}, labels: {{rollguard.dev/flags: "true"}}}}
data: {{a: "true", b: "true"}}
---
apiVersion: rollguard.dev/v1alpha1
kind: RolloutGuard
metadata: {{name: g, namespace: {ns}}}
spec:
  interval: 1s
  flags: {{configMapRef: {{name: ff}}, guarded: [a, b]}}
  notify:
    - {{name: oncall, type: pagerduty, secretRef: {{name: pd}}}}
    - {{name: chat, type: teams, secretRef: {{name: teams-hook}}, "on": [started, completed, failed, unhealthy, stable]}}
{extra}
"#,
        ns = env.ns
    ));
}

fn request(env: &Env, name: &str, action: &str) {
    env.cluster.apply(&format!(
        "apiVersion: rollguard.dev/v1alpha1\nkind: RollbackRequest\nmetadata: {{name: {name}, namespace: {}}}\nspec: {{guardRef: {{name: g}}, action: {action}, requestedBy: alice, reason: checkout errors after phase 4}}\n",
        env.ns
    ));
}

/// (event_action, dedup_key) of each PagerDuty event, in arrival order; each one as
/// PagerDuty's client sends it.
fn pagerduty_actions(events: &[Checked]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            assert_eq!(
                (e.verdict.as_str(), e.answered),
                ("valid", 202),
                "not what PagerDuty's client sends: {}",
                String::from_utf8_lossy(&e.body)
            );
            let v = e.json();
            (
                v["event_action"].as_str().unwrap_or_default().to_string(),
                v["dedup_key"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Every Teams card the schema accepted, and each one's event word (from its footer).
fn teams_events(cards: &[Checked]) -> Vec<String> {
    cards
        .iter()
        .map(|c| {
            assert_eq!(
                (c.verdict.as_str(), c.answered),
                ("valid", 202),
                "the published Adaptive Card schema refused a card: {}",
                String::from_utf8_lossy(&c.body)
            );
            let card = &c.json()["attachments"][0]["content"];
            let footer = card["body"][3]["text"].as_str().unwrap();
            footer.split(" · ").nth(1).unwrap().to_string()
        })
        .collect()
}

fn guard_api(env: &Env) -> kube::Api<RolloutGuard> {
    env.api()
}

/// Rollback, then the operator is killed right after the guard recorded its `stable`
/// notices (the resolve) and before it sent them; the restarted operator resolves the
/// alert the first one triggered, with the same dedup key, once.
#[tokio::test]
async fn a_rollbacks_alert_is_resolved_by_its_dedup_key_when_stable_across_an_operator_restart() {
    let Some(receiver) = SchemaReceiver::start() else {
        return;
    };
    let mut operator_env = FAST_RETRIES.to_vec();
    operator_env.push(("ROLLGUARD_FAULT_POINT", "guard-notice-recorded"));
    operator_env.push(("ROLLGUARD_FAULT_REQUEST", "g"));
    let Some(mut env) = Env::start("pagerduty_teams_restart", &operator_env).await else {
        return;
    };
    eprintln!("validator: {}", receiver.validator);
    setup(&env, &receiver, "  health: {stabilityWindow: 3s}");
    request(&env, "incident-1", "rollback");
    let r = env.settled("incident-1").await;
    assert_eq!(
        r.status.as_ref().unwrap().phase,
        Some(RequestPhase::Succeeded)
    );

    let first = env.operator.take().unwrap();
    wait_until(
        Duration::from_secs(30),
        "the stable notices to be recorded",
        || {
            let hit = first.log_contains("FAULT-POINT guard-notice-recorded g");
            async move { hit.then_some(()) }
        },
    )
    .await;
    let status = guard_api(&env).get("g").await.unwrap().status.unwrap();
    assert_eq!(status.stable_notified.as_deref(), Some("incident-1"));
    let pending: Vec<_> = status
        .pending_notices
        .iter()
        .map(|n| (n.receiver.as_str(), n.event, n.rollback.as_deref()))
        .collect();
    assert_eq!(
        pending,
        [
            ("oncall", NotifyEvent::Stable, Some("incident-1")),
            ("chat", NotifyEvent::Stable, Some("incident-1"))
        ]
    );
    let dedup_key = format!("rollguard/{}/incident-1", env.ns);
    assert_eq!(
        pagerduty_actions(&receiver.at("pagerduty")),
        [("trigger".to_string(), dedup_key.clone())],
        "triggered by started, not resolved before the crash: the test would prove nothing"
    );
    let mut logs = first.log_text();
    first.kill();

    let second = env.cluster.start_operator(&env.ns, FAST_RETRIES);
    wait_until(Duration::from_secs(30), "the resolve to arrive", || {
        let resolved = pagerduty_actions(&receiver.at("pagerduty"))
            .iter()
            .any(|(action, _)| action == "resolve");
        async move { resolved.then_some(()) }
    })
    .await;
    // Delivered and dropped from status; two evaluations later still one resolve.
    common::guard_notices_delivered(&guard_api(&env), "g", &second, &env.ns).await;

    let events = receiver.at("pagerduty");
    assert_eq!(
        pagerduty_actions(&events),
        [
            ("trigger".to_string(), dedup_key.clone()),
            ("resolve".to_string(), dedup_key.clone())
        ]
    );
    let trigger = events[0].json();
    assert_eq!(trigger["routing_key"], ROUTING_KEY);
    assert_eq!(trigger["payload"]["severity"], "error");
    assert_eq!(trigger["payload"]["source"], format!("{}/g", env.ns));
    assert_eq!(
        trigger["payload"]["custom_details"]["Report"],
        format!("kubectl rollguard report incident-1 -n {}", env.ns)
    );
    let report = format!("https://reports.example/{}/incident-1", env.ns);
    assert_eq!(trigger["links"][0]["href"], report.as_str());
    assert_eq!(
        events[1].json(),
        serde_json::json!({"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": dedup_key})
    );
    assert!(events.iter().all(|e| e.answered == 202));

    let cards = receiver.at("teams");
    assert_eq!(teams_events(&cards), ["started", "completed", "stable"]);
    let stable = &cards[2].json()["attachments"][0]["content"];
    assert_eq!(stable["actions"][0]["url"], report.as_str());

    // The key went to PagerDuty and nowhere else.
    logs.push_str(&second.log_text());
    let (_, requests, _) = env
        .cluster
        .kubectl(&["-n", &env.ns, "get", "rbr,rg", "-o", "json"]);
    let events = env.events_where(|_| true).await;
    for (place, text) in [
        ("the operator's logs", logs),
        ("status", requests),
        ("Events", serde_json::to_string(&events).unwrap()),
    ] {
        assert!(!text.contains(ROUTING_KEY), "the routing key is in {place}");
    }
}

/// A rollback whose health verification fails is `unhealthy`: PagerDuty gets a critical
/// trigger on the same alert; a restore after it is not paged (nothing would resolve it)
/// but is told on Teams. Every card passes the published schema.
#[tokio::test]
async fn an_unhealthy_rollback_escalates_its_alert_and_a_restore_is_not_paged() {
    let Some(receiver) = SchemaReceiver::start() else {
        return;
    };
    let Some(env) = Env::start("pagerduty_teams_unhealthy", FAST_RETRIES).await else {
        return;
    };
    // A health check nobody answers healthily: verification fails at its timeout.
    let (health, _healthy) = common::health_server().await;
    setup(
        &env,
        &receiver,
        &format!("  health: {{timeout: 2s, stabilityWindow: 1h, http: [{{url: \"{health}\"}}]}}"),
    );
    request(&env, "incident-2", "rollback");
    let r = env.settled("incident-2").await;
    assert_eq!(r.status.as_ref().unwrap().phase, Some(RequestPhase::Failed));
    request(&env, "restore-2", "restore");
    let r = env.settled("restore-2").await;
    assert_eq!(
        r.status.as_ref().unwrap().phase,
        Some(RequestPhase::Succeeded)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    let events = receiver.at("pagerduty");
    let dedup_key = format!("rollguard/{}/incident-2", env.ns);
    assert_eq!(
        pagerduty_actions(&events),
        [
            ("trigger".to_string(), dedup_key.clone()),
            ("trigger".to_string(), dedup_key)
        ]
    );
    let severities: Vec<_> = events
        .iter()
        .map(|e| {
            e.json()["payload"]["severity"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(severities, ["error", "critical"]);
    assert_eq!(
        events[1].json()["payload"]["custom_details"]["event"],
        "unhealthy"
    );
    let mut told = teams_events(&receiver.at("teams"));
    // The two moments of a request are sent side by side; their order is not promised.
    told[..2].sort();
    told[2..].sort();
    assert_eq!(told, ["started", "unhealthy", "completed", "started"]);
}

/// Every card rollguard renders — each moment, with and without a report link — passes
/// the published Adaptive Card schema, every PagerDuty event is what PagerDuty's client
/// sends, and the receiver refuses what the schema or the client refuses (so the
/// end-to-end checks above can fail).
#[tokio::test]
async fn the_card_schema_and_pagerdutys_client_take_every_payload_rollguard_renders_and_refuse_broken_ones()
 {
    use rollguard::notify::{ReportLink, guard_notice, pagerduty, request_notice, teams};
    let Some(receiver) = SchemaReceiver::start() else {
        return;
    };
    let request: RollbackRequest = serde_json::from_value(serde_json::json!({
        "apiVersion": "rollguard.dev/v1alpha1", "kind": "RollbackRequest",
        "metadata": {"name": "incident-9", "namespace": "shop", "uid": "u9"},
        "spec": {"guardRef": {"name": "phase4"}, "requestedBy": "alice", "reason": "errors > 5% & *rising* [fast](x)"},
        "status": {
            "phase": "Succeeded",
            "flagsChanged": [{"name": "a", "from": "true", "to": "false"}],
            "triggeredBy": {"trigger": "errors", "value": 0.2},
            "durations": {"flagDisable": 0.04, "notification": 0.1, "healthVerification": 3.2, "total": 3.5},
            "slo": {"met": false, "missed": ["total"]},
            "message": "rolled back 1 flag(s)"
        }
    }))
    .unwrap();
    let guard: RolloutGuard = serde_json::from_value(serde_json::json!({
        "apiVersion": "rollguard.dev/v1alpha1", "kind": "RolloutGuard",
        "metadata": {"name": "phase4", "namespace": "shop", "uid": "g9"},
        "spec": {"flags": {"configMapRef": {"name": "ff"}, "guarded": ["a"]}}
    }))
    .unwrap();
    let now = jiff::Timestamp::now();
    let mut notices: Vec<_> = [
        NotifyEvent::Started,
        NotifyEvent::Completed,
        NotifyEvent::Failed,
        NotifyEvent::Unhealthy,
    ]
    .into_iter()
    .map(|e| request_notice(&request, e, now))
    .collect();
    let firing = rollguard::api::guard::FiringTrigger {
        name: "errors".into(),
        value: Some(0.2),
        threshold: Some(0.01),
        action: "alert".into(),
    };
    notices.push(guard_notice(
        &guard,
        NotifyEvent::TriggerFiring,
        Some(firing),
        "t",
        "fired".into(),
        now,
    ));
    notices.push(guard_notice(
        &guard,
        NotifyEvent::Drift,
        None,
        "t",
        "drifted".into(),
        now,
    ));
    let mut stable = guard_notice(
        &guard,
        NotifyEvent::Stable,
        None,
        "incident-9",
        "stable".into(),
        now,
    );
    stable.rollback = Some("incident-9".into());
    notices.push(stable);
    let link = ReportLink {
        url: "https://reports.example/shop/incident-9".into(),
        text: "Report of incident-9".into(),
    };
    rollguard::install_crypto_provider();
    let client = reqwest::Client::new();
    let post_to = |endpoint: &str, body: serde_json::Value| {
        let request = client.post(receiver.url(endpoint)).json(&body);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let post = |body| post_to("teams", body);
    for notice in &notices {
        for link in [None, Some(&link)] {
            if let Ok(event) = pagerduty::event(notice, "rk", link) {
                let answered = post_to("pagerduty", event).await;
                let last = receiver.received().pop().unwrap();
                assert_eq!(
                    (answered, last.verdict.as_str()),
                    (202, "valid"),
                    "{:?}: {}",
                    notice.event,
                    String::from_utf8_lossy(&last.body)
                );
            }
            let answered = post(teams::message(notice, link)).await;
            let last = receiver.received().pop().unwrap();
            assert_eq!(
                (answered, last.verdict.as_str()),
                (202, "valid"),
                "{:?} with link {}: {}",
                notice.event,
                link.is_some(),
                String::from_utf8_lossy(&last.body)
            );
        }
    }

    let card = teams::message(&notices[0], Some(&link));
    let mut unknown_property = card.clone();
    unknown_property["attachments"][0]["content"]["msteams"] = serde_json::json!({"width": "Full"});
    let mut fact_without_value = card.clone();
    fact_without_value["attachments"][0]["content"]["body"][2]["facts"][0]
        .as_object_mut()
        .unwrap()
        .remove("value");
    let mut not_a_card = card;
    not_a_card["attachments"][0]["content"]["type"] = "HeroCard".into();
    for (what, broken, says) in [
        ("an unknown property", unknown_property, "msteams"),
        ("a fact without a value", fact_without_value, "value"),
        ("not an AdaptiveCard", not_a_card, "AdaptiveCard"),
    ] {
        assert_eq!(post(broken).await, 400, "{what}");
        let verdict = receiver.received().pop().unwrap().verdict;
        assert!(
            verdict.starts_with("invalid: ") && verdict.contains(says),
            "{what}: {verdict}"
        );
    }
    let event = pagerduty::event(&notices[2], "rk", Some(&link)).unwrap();
    let mut no_source = event.clone();
    no_source["payload"]
        .as_object_mut()
        .unwrap()
        .remove("source");
    let mut details_outside = event.clone();
    let details = details_outside["payload"]
        .as_object_mut()
        .unwrap()
        .remove("custom_details")
        .unwrap();
    details_outside["custom_details"] = details;
    let mut resolve_without_key = pagerduty::event(&notices[6], "rk", None).unwrap();
    resolve_without_key
        .as_object_mut()
        .unwrap()
        .remove("dedup_key");
    for (what, broken, says) in [
        ("a trigger without a source", no_source, "source"),
        ("details beside the payload", details_outside, "differs"),
        (
            "a resolve without a dedup key",
            resolve_without_key,
            "dedup_key",
        ),
    ] {
        assert_eq!(post_to("pagerduty", broken).await, 400, "{what}");
        let verdict = receiver.received().pop().unwrap().verdict;
        assert!(
            verdict.starts_with("invalid: ") && verdict.contains(says),
            "{what}: {verdict}"
        );
    }
}
