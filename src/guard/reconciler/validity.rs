//! What makes a guard `Invalid`: what only the operator can judge (durations past the
//! schema, PromQL, the flags ConfigMap and its opt-in label, the Secrets it names).

use super::*;

/// What makes the guard Invalid: a duration or PromQL (triggers, `health.propagation`) that does not parse (judged when its spec changed,
/// or while it is Invalid), a missing flags ConfigMap, a guarded flag absent from it.
pub(super) fn problems(
    guard: &RolloutGuard,
    flags_config_map: Option<&ConfigMap>,
) -> Option<String> {
    let judged = spec_judged(guard);
    if let Some(message) = guard.spec.duration_problem() {
        return Some(message);
    }
    // The queries only change with the spec; the flags ConfigMap can change (or go) at any
    // time, and a guard that can no longer roll back must say so before it has to.
    for trigger in guard.spec.triggers.iter().filter(|_| !judged) {
        // The CRD schema says so too; a guard that bypassed it must not be half a trigger.
        let query = match (&trigger.query, &trigger.alert) {
            (Some(query), None) => query,
            (None, Some(_)) => continue,
            _ => {
                return Some(format!(
                    "spec.triggers[{}]: set exactly one of query (with a comparison) and alert",
                    trigger.name
                ));
            }
        };
        if let Err(e) = promql_parser::parser::parse(query) {
            return Some(format!(
                "spec.triggers[{}].query does not parse as PromQL: {}",
                trigger.name,
                e.trim()
            ));
        }
        if let Some(baseline) = &trigger.baseline
            && let Err(e) = promql_parser::parser::parse(&baseline.query)
        {
            return Some(format!(
                "spec.triggers[{}].baseline.query does not parse as PromQL: {}",
                trigger.name,
                e.trim()
            ));
        }
    }
    if let Some(propagation) = guard.spec.health.propagation.as_ref().filter(|_| !judged)
        && let Err(message) = crate::propagation::validate(&propagation.query)
    {
        return Some(message);
    }
    let flags = &guard.spec.flags;
    let Some(cm) = flags_config_map else {
        return Some(format!(
            "spec.flags.configMapRef.name: ConfigMap {:?} does not exist",
            flags.config_map_ref.name
        ));
    };
    if let Err(message) = crate::trust::writable_flags(cm, "spec.flags.configMapRef.name") {
        return Some(message);
    }
    let data = cm.data.clone().unwrap_or_default();
    crate::flags::validate(flags, &flags.config_map_ref.name, &data)
        .err()
        .map(|e| e.to_string())
}

/// Whether the current spec was judged valid already: its generation observed, and the
/// guard not Invalid since. Judged again while Invalid, also when a finished rollback has
/// since set the phase back (its Ready condition still says InvalidSpec).
pub(super) fn spec_judged(guard: &RolloutGuard) -> bool {
    let previous = guard.status.as_ref();
    let still_invalid = previous.is_some_and(|s| {
        crate::conditions::get(&s.conditions, "Ready")
            .is_some_and(|c| c.status == crate::conditions::FALSE && c.reason == "InvalidSpec")
    });
    previous.and_then(|s| s.observed_generation) == guard.metadata.generation
        && previous.and_then(|s| s.phase) != Some(crate::api::guard::GuardPhase::Invalid)
        && !still_invalid
        && previous.is_some_and(|s| s.phase.is_some())
}

/// The Secrets a guard names whose owners have not allowed rollguard to read them (SPEC
/// §5), judged when the spec changes (or while Invalid). A Secret that does not exist yet
/// is not a spec problem: its reader says so when it needs it.
pub(super) async fn credential_problems(
    guard: &RolloutGuard,
    opted_in: &crate::opted_in::OptedIn,
    namespace: &str,
) -> Result<Option<String>, Error> {
    for (field, name) in crate::trust::referenced_secrets(&guard.spec) {
        if let (Some(Err(message)), _) = opted_in.credentials(namespace, &name, &field).await? {
            return Ok(Some(message));
        }
    }
    Ok(None)
}
