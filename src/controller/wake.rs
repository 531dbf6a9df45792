//! When a guard is evaluated before its next interval.

use crate::api::{RollbackRequest, RolloutGuard};
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::Event;

/// Wakes the requests of a guard that changed or went (e.g. its rollback slot was freed, so
/// a request waiting for it may go on) — those not finished, from the requests' index.
pub(super) fn requests_of(
    event: &Event<RolloutGuard>,
    requests: &crate::requests::Requests,
    wake: &tokio::sync::mpsc::UnboundedSender<ObjectRef<RollbackRequest>>,
) {
    let guard = match event {
        Event::Apply(guard) | Event::InitApply(guard) | Event::Delete(guard) => guard,
        Event::Init | Event::InitDone => return,
    };
    let namespace = guard.namespace().unwrap_or_default();
    for request in requests.of_guard(&namespace, &guard.name_any()) {
        if !crate::rollback::step::is_terminal(request.status.as_ref().and_then(|s| s.phase)) {
            // The request controller is gone only when the operator stops.
            let _ = wake.send(ObjectRef::from_obj(&*request));
        }
    }
}

/// What makes a guard's change worth an evaluation now: a new generation, or the rollback
/// slot fields (`activeRollback`, `lastRollback`, `lastRestore`, written by the rollback
/// reconciler) — never what the evaluation itself writes. The rollback reconciler also wakes
/// the guard when it writes the slot; this wakes it again once the guard's cache holds the
/// write, so an evaluation that ran on the older view (and, its judgement unchanged, wrote
/// nothing) is followed by one on the new.
pub(super) fn generation_and_slot(guard: &RolloutGuard) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    guard.metadata.generation.hash(&mut hasher);
    if let Some(status) = &guard.status {
        let slot = (
            &status.active_rollback,
            &status.last_rollback,
            &status.last_restore,
        );
        serde_json::to_string(&slot).ok().hash(&mut hasher);
    }
    Some(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::generation_and_slot;

    #[test]
    fn a_guard_is_evaluated_early_for_a_new_generation_or_slot_never_for_its_own_status() {
        let guard = |generation: i64, status: serde_json::Value| -> crate::api::RolloutGuard {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "rollguard.dev/v1alpha1", "kind": "RolloutGuard",
                "metadata": {"name": "g", "namespace": "ns", "generation": generation},
                "spec": {"flags": {"configMapRef": {"name": "ff"}, "guarded": ["a"]}},
                "status": status,
            }))
            .unwrap()
        };
        let base = generation_and_slot(&guard(1, serde_json::json!({"phase": "Monitoring"})));
        // The evaluation's own fields: no new evaluation.
        let own = guard(
            1,
            serde_json::json!({"phase": "Breaching", "lastEvaluationTime": "2026-11-27T10:00:00Z",
                               "triggers": [{"name": "t", "value": 2.0, "breaching": true}]}),
        );
        assert_eq!(generation_and_slot(&own), base);
        assert_ne!(
            generation_and_slot(&guard(2, serde_json::json!({"phase": "Monitoring"}))),
            base
        );
        for slot in [
            serde_json::json!({"phase": "Monitoring", "activeRollback": "rb"}),
            serde_json::json!({"phase": "Monitoring", "lastRollback": {"name": "rb", "outcome": "Succeeded"}}),
            serde_json::json!({"phase": "Monitoring", "lastRestore": {"name": "back"}}),
        ] {
            assert_ne!(generation_and_slot(&guard(1, slot.clone())), base, "{slot}");
        }
    }
}
