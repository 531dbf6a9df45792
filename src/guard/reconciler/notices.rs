//! What a guard's evaluation tells: Events, and the notices its receivers subscribe to.

use super::*;
use crate::api::guard::{FiringTrigger, PendingNotice};

/// The guard's moments its receivers subscribe to (a trigger firing, flags drifting), one
/// record per receiver, to be written in status before they are sent.
pub(super) fn notices_to_send(
    guard: &RolloutGuard,
    status: &crate::api::RolloutGuardStatus,
    notices: &[Notice],
    now: jiff::Timestamp,
) -> Vec<PendingNotice> {
    use crate::api::guard::NotifyEvent;
    let mut out = Vec::new();
    for notice in notices {
        let (event, trigger, transition, message) = match notice {
            Notice::TriggerFiring { trigger, message } => {
                let current = status.triggers.iter().find(|t| &t.name == trigger);
                let action = guard
                    .spec
                    .triggers
                    .iter()
                    .find(|t| &t.name == trigger)
                    .map(|t| format!("{:?}", t.action).to_lowercase())
                    .unwrap_or_default();
                let summary = FiringTrigger {
                    name: trigger.clone(),
                    value: current.and_then(|t| t.value),
                    threshold: current.and_then(|t| t.threshold),
                    action,
                };
                let since = current
                    .and_then(|t| t.breaching_since.as_ref())
                    .map(|t| t.0.to_string())
                    .unwrap_or_else(|| now.to_string());
                (
                    NotifyEvent::TriggerFiring,
                    Some(summary),
                    format!("{trigger}:{since}"),
                    message,
                )
            }
            Notice::FlagsDrifted { message } => {
                let since = crate::conditions::get(&status.conditions, "FlagsDrifted")
                    .map(|c| c.last_transition_time.0.to_string())
                    .unwrap_or_else(|| now.to_string());
                (NotifyEvent::Drift, None, since, message)
            }
            _ => continue,
        };
        for notifier in crate::notify::receivers(&guard.spec.notify, event) {
            let notice = crate::notify::guard_notice(
                guard,
                event,
                trigger.clone(),
                &transition,
                message.clone(),
                now,
            );
            out.push(PendingNotice {
                receiver: notifier.name.clone(),
                event,
                id: notice.id,
                time: notice.time,
                message: notice.message,
                trigger: notice.trigger,
            });
        }
    }
    out
}

pub(super) async fn publish(
    recorder: &Recorder,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Evaluate".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, reference).await {
        tracing::warn!(error = %e, reason, "could not publish Event");
    }
}
