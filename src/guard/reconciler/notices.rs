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
                rollback: None,
            });
        }
    }
    out
}

/// The guard's `stable` moment after its last rollback, told once per rollback: when the
/// evaluation found the guard `Stable` and that rollback's stability was not recorded yet.
/// Returns the rollback to record in `status.stableNotified` (the previous one when nothing
/// is new) and one notice per receiver of `stable`, to be written in status before they
/// are sent (as `triggerFiring` and `drift` are).
pub(super) fn stable_notices(
    guard: &RolloutGuard,
    previous: &crate::api::RolloutGuardStatus,
    status: &crate::api::RolloutGuardStatus,
    now: jiff::Timestamp,
) -> (Option<String>, Vec<PendingNotice>) {
    use crate::api::guard::NotifyEvent;
    let already = previous.stable_notified.clone();
    let stable = crate::conditions::get(&status.conditions, assess::condition::STABLE)
        .filter(|c| c.status == crate::conditions::TRUE);
    let (Some(stable), Some(rollback)) = (stable, status.last_rollback.as_ref()) else {
        return (already, Vec::new());
    };
    if already.as_deref() == Some(rollback.name.as_str()) {
        return (already, Vec::new());
    }
    let message = format!(
        "guard {} is stable after rollback {}: {}",
        guard.name_any(),
        rollback.name,
        stable.message
    );
    let notices = crate::notify::receivers(&guard.spec.notify, NotifyEvent::Stable)
        .into_iter()
        .map(|notifier| {
            let notice = crate::notify::guard_notice(
                guard,
                NotifyEvent::Stable,
                None,
                &rollback.name,
                message.clone(),
                now,
            );
            PendingNotice {
                receiver: notifier.name.clone(),
                event: NotifyEvent::Stable,
                id: notice.id,
                time: notice.time,
                message: notice.message,
                trigger: None,
                rollback: Some(rollback.name.clone()),
            }
        })
        .collect();
    (Some(rollback.name.clone()), notices)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RolloutGuardStatus;
    use crate::api::guard::{LastRollback, NotifyEvent};

    fn guard() -> RolloutGuard {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "rollguard.dev/v1alpha1", "kind": "RolloutGuard",
            "metadata": {"name": "g", "namespace": "shop", "uid": "u1"},
            "spec": {
                "flags": {"configMapRef": {"name": "ff"}, "guarded": ["a"]},
                "notify": [
                    {"name": "oncall", "type": "pagerduty", "secretRef": {"name": "pd"}},
                    {"name": "audit", "type": "webhook", "secretRef": {"name": "hook"}, "on": ["drift"]}
                ]
            }
        }))
        .unwrap()
    }

    fn status(stable: &str, rollback: &str, notified: Option<&str>) -> RolloutGuardStatus {
        let mut status = RolloutGuardStatus {
            last_rollback: Some(LastRollback {
                name: rollback.into(),
                time: None,
                outcome: Some("Succeeded".into()),
                flags_disabled: Some(true),
            }),
            stable_notified: notified.map(Into::into),
            ..Default::default()
        };
        crate::conditions::set(
            &mut status.conditions,
            assess::condition::STABLE,
            stable,
            "Quiet",
            "no trigger has breached for spec.health.stabilityWindow (1s)",
            Some(1),
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        status
    }

    #[test]
    fn stable_is_told_once_per_rollback_to_the_receivers_that_take_it() {
        let now = jiff::Timestamp::UNIX_EPOCH;
        let (g, none) = (guard(), RolloutGuardStatus::default());
        // Not stable yet: nothing, and nothing recorded.
        let (noted, notices) = stable_notices(&g, &none, &status("False", "r1", None), now);
        assert_eq!((noted, notices.len()), (None, 0));
        // Stable after r1: one notice for the PagerDuty receiver (the webhook takes drift only).
        let (noted, notices) = stable_notices(&g, &none, &status("True", "r1", None), now);
        assert_eq!(noted.as_deref(), Some("r1"));
        assert_eq!(notices.len(), 1);
        assert_eq!(notices[0].receiver, "oncall");
        assert_eq!(notices[0].event, NotifyEvent::Stable);
        assert_eq!(notices[0].id, "u1:stable:r1");
        assert_eq!(notices[0].rollback.as_deref(), Some("r1"));
        assert!(
            notices[0].message.contains("stable after rollback r1"),
            "{}",
            notices[0].message
        );
        // Recorded: the next evaluations (also after a restart, it is in status) say nothing.
        let told = status("True", "r1", Some("r1"));
        let (noted, notices) = stable_notices(&g, &told, &status("True", "r1", None), now);
        assert_eq!((noted.as_deref(), notices.len()), (Some("r1"), 0));
        // A later rollback r2 while the guard still reads Stable (stabilityWindow 0s) is told.
        let (noted, notices) = stable_notices(&g, &told, &status("True", "r2", None), now);
        assert_eq!(noted.as_deref(), Some("r2"));
        assert_eq!(notices[0].id, "u1:stable:r2");
        // Unstable again after r1 was told: the record stays, nothing is sent.
        let (noted, notices) = stable_notices(&g, &told, &status("False", "r1", None), now);
        assert_eq!((noted.as_deref(), notices.len()), (Some("r1"), 0));
    }
}
