//! Notifications (SPEC §2–§3): who is told what, and what the message says. Pure: the
//! routing (`on` filters), the records a request keeps of its deliveries, the `Notified`
//! condition, every channel's payload (Slack blocks, the webhook body, the email, the in-app
//! status ConfigMap, the PagerDuty event ([`pagerduty`]), the Teams card ([`teams`])) and the
//! webhook's Standard Webhooks signature ([`signature`]) are decided here; [`courier`] sends,
//! [`outbox`] runs the
//! deliveries beside the rollback and reports their outcomes back to the reconciler.

pub mod courier;
pub mod outbox;
pub mod pagerduty;
pub mod records;
pub mod report_link;
pub mod signature;
pub mod teams;

pub use records::{Delivering, Merged, merge_deliveries, settle_pending};
pub use report_link::{ReportLink, report_link};

#[cfg(test)]
mod tests;

use crate::api::guard::{
    GuardPhase, Notifier, NotifierType, NotifyEvent, PendingNotice, RolloutGuard,
};
use crate::api::request::{
    DeliveryState, Durations, FlagChange, NotificationRecord, RequestAction, RequestMode,
    RollbackRequest, SloOutcome, TriggeredBy,
};
use kube::ResourceExt;
use serde::Serialize;
use std::collections::BTreeMap;

/// The webhook body's `kind`, and its schema version (README "Webhook payload").
pub const WEBHOOK_KIND: &str = "RollguardNotification";
pub const WEBHOOK_API_VERSION: &str = "rollguard.dev/v1alpha1";
/// Informational headers of a webhook delivery, besides the Standard Webhooks ones
/// ([`signature`]): the delivery id again (the value of `webhook-id`) and the moment.
pub const DELIVERY_HEADER: &str = "X-Rollguard-Delivery";
pub const EVENT_HEADER: &str = "X-Rollguard-Event";
/// The in-app status ConfigMap, one per namespace.
pub const IN_APP_CONFIG_MAP: &str = "rollguard-status";

pub fn event_word(event: NotifyEvent) -> &'static str {
    match event {
        NotifyEvent::Started => "started",
        NotifyEvent::Completed => "completed",
        NotifyEvent::Failed => "failed",
        NotifyEvent::Unhealthy => "unhealthy",
        NotifyEvent::Drift => "drift",
        NotifyEvent::TriggerFiring => "triggerFiring",
        NotifyEvent::Stable => "stable",
    }
}

pub fn channel_word(type_: NotifierType) -> &'static str {
    match type_ {
        NotifierType::Slack => "slack",
        NotifierType::Webhook => "webhook",
        NotifierType::Email => "email",
        NotifierType::InApp => "inApp",
        NotifierType::PagerDuty => "pagerduty",
        NotifierType::Teams => "teams",
    }
}

/// The object a receiver's deliveries go through: its Secret, or for `inApp` the status
/// ConfigMap. Events about a receiver name it as their related object.
pub fn receiver_reference(
    notifier: &Notifier,
    namespace: &str,
) -> k8s_openapi::api::core::v1::ObjectReference {
    let (kind, name) = match &notifier.secret_ref {
        Some(secret) => ("Secret", secret.name.clone()),
        None => ("ConfigMap", IN_APP_CONFIG_MAP.to_string()),
    };
    k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("v1".into()),
        kind: Some(kind.into()),
        name: Some(name),
        namespace: Some(namespace.into()),
        ..Default::default()
    }
}

// ---- routing ---------------------------------------------------------------------------

/// The guard's receivers that subscribe to `event`.
pub fn receivers(notify: &[Notifier], event: NotifyEvent) -> Vec<&Notifier> {
    notify
        .iter()
        .filter(|n| n.events().contains(&event))
        .collect()
}

/// The guard's receivers told about `event` of a request with `action`. PagerDuty pages
/// about rollbacks only: a restore's alert would have nothing to resolve it.
pub fn request_receivers(
    notify: &[Notifier],
    event: NotifyEvent,
    action: RequestAction,
) -> Vec<&Notifier> {
    receivers(notify, event)
        .into_iter()
        .filter(|n| takes_request(n, action))
        .collect()
}

fn takes_request(notifier: &Notifier, action: RequestAction) -> bool {
    notifier.type_ != NotifierType::PagerDuty || action == RequestAction::Rollback
}

/// How a request ended, for routing its final notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    Succeeded,
    /// Failed in health verification: "unhealthy".
    Unhealthy,
    /// Failed for any other reason.
    Failed,
}

/// One message per receiver for a request's ending: `completed` on success; a failed health
/// verification goes as `unhealthy` to receivers that take it and as `failed` to those that
/// only take `failed`; any other failure goes as `failed`. PagerDuty: rollbacks only.
pub fn ending_events(
    notify: &[Notifier],
    ending: Ending,
    action: RequestAction,
) -> Vec<(&Notifier, NotifyEvent)> {
    notify
        .iter()
        .filter(|n| takes_request(n, action))
        .filter_map(|n| {
            let on = n.events();
            let takes = |e| on.contains(&e).then_some((n, e));
            match ending {
                Ending::Succeeded => takes(NotifyEvent::Completed),
                Ending::Failed => takes(NotifyEvent::Failed),
                Ending::Unhealthy => {
                    takes(NotifyEvent::Unhealthy).or_else(|| takes(NotifyEvent::Failed))
                }
            }
        })
        .collect()
}

/// Adds a `Sending` record for each (receiver, event) not recorded yet; returns how many
/// were added. Recording before sending is what keeps a restart from sending twice.
pub fn record_sending(
    records: &mut Vec<NotificationRecord>,
    wanted: &[(&Notifier, NotifyEvent)],
) -> usize {
    let mut added = 0;
    for (notifier, event) in wanted {
        if records
            .iter()
            .any(|r| r.receiver == notifier.name && r.event == *event)
        {
            continue;
        }
        records.push(NotificationRecord {
            receiver: notifier.name.clone(),
            type_: notifier.type_,
            event: *event,
            state: DeliveryState::Sending,
            attempts: 0,
            time: None,
            message: String::new(),
        });
        added += 1;
    }
    added
}

/// The `Notified` condition of a request: (status, reason, message), from its "started"
/// records. None while there is nothing to say yet.
pub fn notified_condition(
    records: &[NotificationRecord],
    receivers_of_started: usize,
) -> (&'static str, &'static str, String) {
    use crate::conditions::{FALSE, TRUE, UNKNOWN};
    if receivers_of_started == 0 {
        return (
            TRUE,
            "EventsOnly",
            "no receiver subscribes to started; Kubernetes Events were written".into(),
        );
    }
    let started: Vec<_> = records
        .iter()
        .filter(|r| r.event == NotifyEvent::Started)
        .collect();
    let names = |state: DeliveryState| {
        started
            .iter()
            .filter(|r| r.state == state)
            .map(|r| r.receiver.as_str())
            .collect::<Vec<_>>()
    };
    let (failed, sending, delivered) = (
        names(DeliveryState::Failed),
        names(DeliveryState::Sending),
        names(DeliveryState::Delivered),
    );
    if !failed.is_empty() {
        (
            FALSE,
            "NotificationFailed",
            format!("started: not delivered to {}", failed.join(", ")),
        )
    } else if !sending.is_empty() || started.is_empty() {
        (
            UNKNOWN,
            "Sending",
            format!("started: sending to {}", sending.join(", ")),
        )
    } else {
        (
            TRUE,
            "Delivered",
            format!("started: delivered to {}", delivered.join(", ")),
        )
    }
}

// ---- the message -----------------------------------------------------------------------

/// What a notification says; every channel renders it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notice {
    /// Stable across retries and restarts: receivers drop a second delivery with the same id.
    pub id: String,
    pub event: NotifyEvent,
    /// RFC 3339, when the notice was composed.
    pub time: String,
    pub namespace: String,
    pub guard: String,
    /// The request, for request moments (started, completed, failed, unhealthy).
    pub request: Option<RequestSummary>,
    /// The trigger, for `triggerFiring`.
    pub trigger: Option<TriggerSummary>,
    /// The rollback the guard is stable after, for `stable`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback: Option<String>,
    /// One line: what happened.
    pub message: String,
}

impl Notice {
    /// The request the notice is about: the request of a request moment, the rollback of
    /// `stable`.
    pub fn request_name(&self) -> Option<&str> {
        self.request
            .as_ref()
            .map(|r| r.name.as_str())
            .or(self.rollback.as_deref())
    }

    /// The command that prints the request's post-mortem report.
    pub fn report_command(&self) -> Option<String> {
        self.request_name()
            .map(|name| format!("kubectl rollguard report {name} -n {}", self.namespace))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestSummary {
    pub name: String,
    pub action: RequestAction,
    pub mode: RequestMode,
    pub requested_by: String,
    pub reason: String,
    pub phase: Option<String>,
    pub triggered_by: Option<TriggeredBy>,
    pub flags_changed: Vec<FlagChange>,
    pub durations: Option<Durations>,
    /// Whether the durations met the guard's SLO, once judged (at the end).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slo: Option<SloOutcome>,
    pub snapshot: Option<String>,
}

/// The trigger of a `triggerFiring` notice (name, value, threshold, action).
pub type TriggerSummary = crate::api::guard::FiringTrigger;

/// The notice of a request's moment.
pub fn request_notice(
    request: &RollbackRequest,
    event: NotifyEvent,
    now: jiff::Timestamp,
) -> Notice {
    let status = request.status.clone().unwrap_or_default();
    let spec = &request.spec;
    let name = request.name_any();
    let action = match spec.action {
        RequestAction::Rollback => "rollback",
        RequestAction::Restore => "restore",
    };
    let changed = status.flags_changed.clone().unwrap_or_default();
    let flags = if changed.is_empty() {
        String::new()
    } else {
        format!(
            " ({})",
            changed
                .iter()
                .map(|c| format!("{} {}→{}", c.name, c.from, c.to))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let message = match event {
        NotifyEvent::Started => format!(
            "{action} {name} of guard {} started, requested by {}: {}",
            spec.guard_ref.name, spec.requested_by, spec.reason
        ),
        NotifyEvent::Completed => format!(
            "{action} {name} of guard {} succeeded{flags}: {}",
            spec.guard_ref.name,
            status.message.as_deref().unwrap_or_default()
        ),
        NotifyEvent::Unhealthy => format!(
            "{action} {name} of guard {}: not healthy after the flags changed{flags}: {}",
            spec.guard_ref.name,
            status.message.as_deref().unwrap_or_default()
        ),
        _ => format!(
            "{action} {name} of guard {} failed: {}",
            spec.guard_ref.name,
            status.message.as_deref().unwrap_or_default()
        ),
    };
    Notice {
        id: format!(
            "{}:{}",
            request.uid().unwrap_or_default(),
            event_word(event)
        ),
        event,
        time: now.to_string(),
        namespace: request.namespace().unwrap_or_default(),
        guard: spec.guard_ref.name.clone(),
        request: Some(RequestSummary {
            name,
            action: spec.action,
            mode: spec.mode,
            requested_by: spec.requested_by.clone(),
            reason: spec.reason.clone(),
            phase: status.phase.map(|p| format!("{p:?}")),
            triggered_by: status.triggered_by.clone(),
            flags_changed: changed,
            durations: status.durations.clone(),
            slo: status.slo.clone(),
            snapshot: status.snapshot_ref.map(|s| s.name),
        }),
        trigger: None,
        rollback: None,
        message,
    }
}

/// The notice of a guard's moment (`drift`, `triggerFiring`, `stable`). `transition` names
/// the transition (e.g. the time the trigger started breaching, the rollback the guard is
/// stable after) so its id is stable.
pub fn guard_notice(
    guard: &RolloutGuard,
    event: NotifyEvent,
    trigger: Option<TriggerSummary>,
    transition: &str,
    message: String,
    now: jiff::Timestamp,
) -> Notice {
    Notice {
        id: format!(
            "{}:{}:{transition}",
            guard.uid().unwrap_or_default(),
            event_word(event)
        ),
        event,
        time: now.to_string(),
        namespace: guard.namespace().unwrap_or_default(),
        guard: guard.name_any(),
        request: None,
        trigger,
        rollback: None,
        message,
    }
}

/// The notice a guard recorded in `status.pendingNotices`, as it is sent.
pub fn pending_guard_notice(guard: &RolloutGuard, pending: &PendingNotice) -> Notice {
    Notice {
        id: pending.id.clone(),
        event: pending.event,
        time: pending.time.clone(),
        namespace: guard.namespace().unwrap_or_default(),
        guard: guard.name_any(),
        request: None,
        trigger: pending.trigger.clone(),
        rollback: pending.rollback.clone(),
        message: pending.message.clone(),
    }
}

pub(crate) fn title(notice: &Notice) -> String {
    let what = match notice.event {
        NotifyEvent::Started => "Rollback started",
        NotifyEvent::Completed => "Rollback completed",
        NotifyEvent::Failed => "Rollback failed",
        NotifyEvent::Unhealthy => "Unhealthy after rollback",
        NotifyEvent::Drift => "Flags drifted",
        NotifyEvent::TriggerFiring => "Trigger firing",
        NotifyEvent::Stable => "Stable after rollback",
    };
    let what = match &notice.request {
        Some(r) if r.action == RequestAction::Restore => what.replace("Rollback", "Restore"),
        _ => what.to_string(),
    };
    format!("{what}: {}/{}", notice.namespace, notice.guard)
}

fn seconds(v: Option<f64>) -> String {
    v.map_or("-".into(), |s| format!("{s:.3}s"))
}

/// Label and value pairs shown by Slack, Teams and email.
pub(crate) fn facts(notice: &Notice) -> Vec<(&'static str, String)> {
    let mut facts = vec![("Guard", format!("{}/{}", notice.namespace, notice.guard))];
    if let Some(r) = &notice.request {
        facts.push(("Request", r.name.clone()));
        facts.push(("Reason", r.reason.clone()));
        facts.push(("Requested by", r.requested_by.clone()));
        if let Some(t) = &r.triggered_by {
            facts.push((
                "Triggered by",
                match &t.alert {
                    Some(alert) => format!(
                        "{}: alert {} firing since {}",
                        t.trigger, alert.name, alert.starts_at
                    ),
                    None => format!(
                        "{} = {}",
                        t.trigger,
                        t.value.map_or("no data".into(), |v| v.to_string())
                    ),
                },
            ));
        }
        facts.push((
            "Flags changed",
            if r.flags_changed.is_empty() {
                "none yet".into()
            } else {
                r.flags_changed
                    .iter()
                    .map(|c| format!("{}: {} → {}", c.name, c.from, c.to))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ));
        let d = r.durations.clone().unwrap_or_default();
        facts.push((
            "Durations",
            format!(
                "flags off {}, notified {}, healthy {}, total {}",
                seconds(d.flag_disable),
                seconds(d.notification),
                seconds(d.health_verification),
                seconds(d.total)
            ),
        ));
        if let Some(slo) = &r.slo {
            facts.push((
                "SLO",
                if slo.met {
                    "met".into()
                } else {
                    format!("missed: {}", slo.missed.join(", "))
                },
            ));
        }
        facts.push((
            "Outcome",
            r.phase.clone().unwrap_or_else(|| "Pending".into()),
        ));
    }
    if let Some(rollback) = &notice.rollback {
        facts.push(("Rollback", rollback.clone()));
    }
    if let Some(t) = &notice.trigger {
        facts.push((
            "Trigger",
            format!(
                "{} = {} (threshold {}, action {})",
                t.name,
                t.value.map_or("no data".into(), |v| v.to_string()),
                t.threshold.map_or("-".into(), |v| v.to_string()),
                t.action
            ),
        ));
    }
    facts
}

/// Slack incoming-webhook JSON: `text` (the fallback and the notification line) plus blocks.
pub fn slack_payload(notice: &Notice) -> serde_json::Value {
    let fields: Vec<_> = facts(notice)
        .into_iter()
        .map(|(label, value)| {
            serde_json::json!({"type": "mrkdwn", "text": format!("*{label}*\n{}", slack_escape(&value))})
        })
        .collect();
    let mut blocks = vec![
        serde_json::json!({"type": "header", "text": {"type": "plain_text", "text": title(notice)}}),
        serde_json::json!({"type": "section", "text": {"type": "mrkdwn", "text": slack_escape(&notice.message)}}),
    ];
    // Slack allows at most 10 fields per section.
    for chunk in fields.chunks(10) {
        blocks.push(serde_json::json!({"type": "section", "fields": chunk}));
    }
    blocks.push(serde_json::json!({"type": "context", "elements": [
        {"type": "mrkdwn", "text": format!("rollguard · {} · {}", event_word(notice.event), notice.time)}
    ]}));
    serde_json::json!({
        "text": format!("{}: {}", title(notice), notice.message),
        "blocks": blocks,
    })
}

/// Slack mrkdwn needs &, < and > escaped.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The webhook body (schema in the README): the notice with `apiVersion` and `kind`.
pub fn webhook_body(notice: &Notice) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Body<'a> {
        api_version: &'static str,
        kind: &'static str,
        #[serde(flatten)]
        notice: &'a Notice,
    }
    serde_json::to_vec(&Body {
        api_version: WEBHOOK_API_VERSION,
        kind: WEBHOOK_KIND,
        notice,
    })
    .expect("a notice serialises")
}

/// The email: subject and plain-text body.
pub fn email(notice: &Notice) -> (String, String) {
    let mut body = format!("{}\n\n", notice.message);
    for (label, value) in facts(notice) {
        body.push_str(&format!("{label}: {value}\n"));
    }
    body.push_str(&format!(
        "\nEvent: {}\nTime: {}\nDelivery: {}\n",
        event_word(notice.event),
        notice.time,
        notice.id
    ));
    (format!("[rollguard] {}", title(notice)), body)
}

/// The in-app state a notice announces (what a banner shows).
pub fn in_app_state(notice: &Notice) -> GuardPhase {
    match notice.event {
        NotifyEvent::Started => GuardPhase::RollingBack,
        NotifyEvent::Completed => match &notice.request {
            Some(r) if r.action == RequestAction::Restore => GuardPhase::Monitoring,
            _ => GuardPhase::RolledBack,
        },
        NotifyEvent::Failed | NotifyEvent::Unhealthy | NotifyEvent::Drift => GuardPhase::Degraded,
        NotifyEvent::Stable => GuardPhase::RolledBack,
        NotifyEvent::TriggerFiring => GuardPhase::Breaching,
    }
}

/// The data of the `rollguard-status` ConfigMap: the namespace's latest notice (`state`,
/// `message`, `since`, `guard`, `event`, `request`) and the same per guard under
/// `<guard>.json`, so an application can show a banner.
/// Whether the in-app ConfigMap already shows a later moment of the notice's guard than
/// `notice` (its deliveries run side by side: "started" may arrive after "completed"), so
/// writing `notice` would show an older state.
pub fn in_app_outdated(current: &BTreeMap<String, String>, notice: &Notice) -> bool {
    let shown = current
        .get(&format!("{}.json", notice.guard))
        .and_then(|json| serde_json::from_str::<serde_json::Value>(json).ok())
        .and_then(|v| v["since"].as_str()?.parse::<jiff::Timestamp>().ok());
    let this = notice.time.parse::<jiff::Timestamp>().ok();
    matches!((shown, this), (Some(shown), Some(this)) if shown > this)
}

pub fn in_app_data(notice: &Notice) -> BTreeMap<String, String> {
    let state = format!("{:?}", in_app_state(notice));
    let request = notice.request_name().unwrap_or_default().to_string();
    let per_guard = serde_json::json!({
        "state": state,
        "message": notice.message,
        "since": notice.time,
        "event": event_word(notice.event),
        "request": request,
    });
    BTreeMap::from([
        ("state".into(), state),
        ("message".into(), notice.message.clone()),
        ("since".into(), notice.time.clone()),
        ("guard".into(), notice.guard.clone()),
        ("event".into(), event_word(notice.event).into()),
        ("request".into(), request),
        (format!("{}.json", notice.guard), per_guard.to_string()),
    ])
}
