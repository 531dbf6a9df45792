//! The PagerDuty Events API v2 event of a notice (pure). One alert per rollback: its
//! `started`, `failed` and `unhealthy` moments `trigger` it under the dedup key
//! `rollguard/<namespace>/<request>` (PagerDuty folds a trigger for an open alert into it),
//! and the guard's `stable` after that rollback `resolves` it with the same key.

use super::{Notice, ReportLink, event_word};
use crate::api::guard::NotifyEvent;
use crate::api::request::RequestAction;
use serde_json::{Value, json};

/// Where events go unless the receiver's Secret has a `url`.
pub const DEFAULT_URL: &str = "https://events.pagerduty.com/v2/enqueue";
/// PagerDuty cuts a longer `payload.summary`.
const SUMMARY_LIMIT: usize = 1024;

/// The alert a request's moments belong to.
pub fn dedup_key(namespace: &str, request: &str) -> String {
    format!("rollguard/{namespace}/{request}")
}

/// The event for `notice`, or why PagerDuty takes none for it (a moment other than a
/// rollback's started/failed/unhealthy or a guard's stable; the schema and the routing keep
/// such notices from a PagerDuty receiver).
pub fn event(
    notice: &Notice,
    routing_key: &str,
    link: Option<&ReportLink>,
) -> Result<Value, String> {
    let request = notice
        .request_name()
        .ok_or_else(|| format!("PagerDuty takes no {} notice", event_word(notice.event)))?;
    let dedup_key = dedup_key(&notice.namespace, request);
    let severity = match notice.event {
        NotifyEvent::Stable => {
            return Ok(json!({
                "routing_key": routing_key,
                "event_action": "resolve",
                "dedup_key": dedup_key,
            }));
        }
        NotifyEvent::Started => "error",
        NotifyEvent::Failed | NotifyEvent::Unhealthy => "critical",
        other => return Err(format!("PagerDuty takes no {} notice", event_word(other))),
    };
    if notice
        .request
        .as_ref()
        .is_some_and(|r| r.action != RequestAction::Rollback)
    {
        return Err("PagerDuty pages about rollbacks only, not restores".into());
    }
    let mut details = serde_json::Map::new();
    details.insert("event".into(), event_word(notice.event).into());
    details.insert("message".into(), notice.message.clone().into());
    for (label, value) in super::facts(notice) {
        details.insert(label.into(), value.into());
    }
    if let Some(command) = notice.report_command() {
        details.insert("Report".into(), command.into());
    }
    details.insert("Delivery".into(), notice.id.clone().into());
    let mut event = json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "client": "rollguard",
        "payload": {
            "summary": summary(notice),
            "timestamp": timestamp(&notice.time),
            "severity": severity,
            "source": format!("{}/{}", notice.namespace, notice.guard),
            "component": notice.guard,
            "group": notice.namespace,
            "class": "rollback",
            "custom_details": details,
        },
    });
    if let Some(link) = link {
        event["client_url"] = link.url.clone().into();
        event["links"] = json!([{"href": link.url, "text": link.text}]);
    }
    Ok(event)
}

/// The notice's time in milliseconds (PagerDuty's own examples), not jiff's nanoseconds.
fn timestamp(time: &str) -> String {
    match time.parse::<jiff::Timestamp>() {
        Ok(t) => t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        Err(_) => time.to_string(),
    }
}

/// The alert's title: the notice's title and what happened, within PagerDuty's limit.
fn summary(notice: &Notice) -> String {
    let full = format!("{}: {}", super::title(notice), notice.message);
    if full.chars().count() <= SUMMARY_LIMIT {
        return full;
    }
    let mut cut: String = full.chars().take(SUMMARY_LIMIT - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::tests::{at, request};
    use crate::notify::{guard_notice, request_notice};

    fn stable_notice() -> Notice {
        let guard: crate::api::RolloutGuard = serde_json::from_value(json!({
            "apiVersion": "rollguard.dev/v1alpha1", "kind": "RolloutGuard",
            "metadata": {"name": "phase4", "namespace": "shop", "uid": "9a8b"},
            "spec": {"flags": {"configMapRef": {"name": "ff"}, "guarded": ["a"]}}
        }))
        .unwrap();
        let mut notice = guard_notice(
            &guard,
            NotifyEvent::Stable,
            None,
            "incident-42",
            "guard phase4 is stable after rollback incident-42".into(),
            at(),
        );
        notice.rollback = Some("incident-42".into());
        notice
    }

    #[test]
    fn a_rollback_triggers_one_alert_keyed_by_its_request_and_stable_resolves_it() {
        let started = event(
            &request_notice(&request(), NotifyEvent::Started, at()),
            "rk",
            None,
        )
        .unwrap();
        assert_eq!(started["routing_key"], "rk");
        assert_eq!(started["event_action"], "trigger");
        assert_eq!(started["dedup_key"], "rollguard/shop/incident-42");
        let payload = &started["payload"];
        assert_eq!(payload["severity"], "error");
        assert_eq!(payload["source"], "shop/phase4");
        assert_eq!(payload["component"], "phase4");
        assert_eq!(payload["group"], "shop");
        assert_eq!(payload["class"], "rollback");
        assert_eq!(payload["timestamp"], "2026-11-27T10:15:00.000Z");
        let summary = payload["summary"].as_str().unwrap();
        assert!(
            summary.starts_with("Rollback started: shop/phase4: rollback incident-42"),
            "{summary}"
        );
        let details = &payload["custom_details"];
        assert_eq!(details["event"], "started");
        assert_eq!(
            details["Reason"],
            "Critical issue detected in Phase 4 features"
        );
        assert_eq!(details["Triggered by"], "critical-error-rate = 0.023");
        assert_eq!(
            details["Report"],
            "kubectl rollguard report incident-42 -n shop"
        );
        assert_eq!(details["Delivery"], "0f1e2d3c:started");
        assert!(started.get("links").is_none() && started.get("client_url").is_none());

        for moment in [NotifyEvent::Failed, NotifyEvent::Unhealthy] {
            let e = event(&request_notice(&request(), moment, at()), "rk", None).unwrap();
            assert_eq!(e["event_action"], "trigger");
            assert_eq!(e["dedup_key"], started["dedup_key"]);
            assert_eq!(e["payload"]["severity"], "critical");
        }

        let resolve = event(&stable_notice(), "rk", None).unwrap();
        assert_eq!(
            resolve,
            json!({"routing_key": "rk", "event_action": "resolve", "dedup_key": "rollguard/shop/incident-42"})
        );
    }

    #[test]
    fn a_report_link_is_the_alerts_link_and_client_url() {
        let notice = request_notice(&request(), NotifyEvent::Failed, at());
        let link = crate::notify::report_link(
            "https://grafana.example/d/rg?ns={namespace}&r={request}&g={guard}",
            &notice,
        )
        .unwrap()
        .unwrap();
        let e = event(&notice, "rk", Some(&link)).unwrap();
        assert_eq!(
            e["client_url"],
            "https://grafana.example/d/rg?ns=shop&r=incident-42&g=phase4"
        );
        assert_eq!(e["links"][0]["href"], e["client_url"]);
        assert_eq!(e["links"][0]["text"], "Report of incident-42");
    }

    #[test]
    fn pagerduty_takes_no_other_moment_and_no_restore() {
        for moment in [
            NotifyEvent::Completed,
            NotifyEvent::Drift,
            NotifyEvent::TriggerFiring,
        ] {
            let mut notice = request_notice(&request(), moment, at());
            if moment != NotifyEvent::Completed {
                notice.request = None;
            }
            assert!(event(&notice, "rk", None).is_err(), "{moment:?}");
        }
        let mut restore = request();
        restore.spec.action = RequestAction::Restore;
        let err = event(
            &request_notice(&restore, NotifyEvent::Started, at()),
            "rk",
            None,
        )
        .unwrap_err();
        assert!(err.contains("restores"), "{err}");
    }

    #[test]
    fn the_timestamp_is_in_milliseconds() {
        assert_eq!(
            timestamp("2026-12-07T12:49:23.018888904Z"),
            "2026-12-07T12:49:23.018Z"
        );
    }

    #[test]
    fn the_summary_stays_within_pagerdutys_limit() {
        let mut r = request();
        r.spec.reason = "x".repeat(3000);
        let e = event(&request_notice(&r, NotifyEvent::Started, at()), "rk", None).unwrap();
        let summary = e["payload"]["summary"].as_str().unwrap();
        assert_eq!(summary.chars().count(), SUMMARY_LIMIT);
        assert!(summary.ends_with('…'));
    }
}
