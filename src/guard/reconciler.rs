//! The RolloutGuard reconciler: every `interval` (a requeue, not a sleep), judge what only
//! the operator can judge (PromQL, the flags ConfigMap), query the triggers, ask
//! [`assess::assess`], create the automatic RollbackRequest it asks for, emit Events on
//! transitions, and patch status when [`super::writes::due`] says so (a transition at once,
//! values at most once a minute).

use super::assess::{self, Assessment, Context as AssessContext, Notice, Outcome};
use crate::Error;
use crate::api::guard::RolloutGuard;
use crate::api::request::is_terminal;
use crate::api::request::{RequestAction, RequestMode, RollbackRequestSpec, TriggeredBy};
use crate::api::{GUARD_LABEL, LocalObjectReference, RollbackRequest, SYSTEM_REQUESTER};
use crate::prometheus::{Prometheus, SharedQueries, Target};
use crate::triggers;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

mod automatic;
mod drift;
mod evaluate;
mod notices;
mod validity;

use automatic::in_flight_now;
use drift::drift;
use evaluate::evaluate_triggers;
use notices::{notices_to_send, publish, stable_notices};
use validity::{credential_problems, problems, spec_judged};

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub prometheus: Prometheus,
    pub queries: SharedQueries,
    pub default_prometheus_url: Option<String>,
    pub requests: crate::requests::Requests,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Receivers of `triggerFiring` and `drift` are told through it.
    pub outbox: Arc<crate::notify::outbox::Outbox>,
    /// Who may evaluate now: a bounded number of guards, a bounded share per source.
    pub fairness: Arc<super::fairness::Fairness>,
    /// Alerts pushed to the webhook (alert triggers of guards without `spec.alertmanager`).
    pub alerts: Arc<crate::alerts::store::Store>,
    /// Reads of the guards' own Alertmanagers (pull mode).
    pub alertmanagers: crate::alerts::alertmanager::Alertmanagers,
    /// Flags ConfigMaps and credential Secrets, from the operator's watches.
    pub opted_in: crate::opted_in::OptedIn,
}

pub fn error_policy(guard: Arc<RolloutGuard>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_error("RolloutGuard", error);
    tracing::warn!(guard = %guard.name_any(), %error, "guard evaluation failed; retrying");
    let retry_in = Duration::from_secs(5);
    crate::report_reconcile_error(&ctx.recorder, guard.as_ref(), error, retry_in);
    Action::requeue(retry_in)
}

pub async fn reconcile(guard: Arc<RolloutGuard>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = guard
        .namespace()
        .ok_or(Error::NoNamespace("RolloutGuard"))?;
    let interval = guard
        .spec
        .interval
        .to_std()
        .unwrap_or(Duration::from_secs(15));
    let address = guard
        .spec
        .prometheus
        .as_ref()
        .and_then(|p| p.address.as_deref())
        .or(ctx.default_prometheus_url.as_deref());
    let waiting = std::time::Instant::now();
    let arrived = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let admission = ctx
        .fairness
        .admit(&super::fairness::source(&namespace, address))
        .await;
    let late = super::fairness::lateness(waiting.elapsed(), interval);
    ctx.metrics
        .evaluation_delay
        .observe(super::fairness::start_delay(arrived, waiting.elapsed(), interval).as_secs_f64());
    // Ten thousand guards due at one boundary wait here together: the waiting future stays
    // small, and the evaluation (its answers, its status, its write) exists only for the
    // admitted few, on any of the runtime's threads.
    let evaluation = tokio::spawn({
        let (guard, ctx) = (guard.clone(), ctx.clone());
        async move { decide(guard, ctx, admission, interval, late).await }
    });
    let decision = match evaluation.await {
        Ok(decision) => decision?,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only a runtime shutting down cancels it.
        Err(_) => return Ok(Action::await_change()),
    };
    record(&guard, &ctx, decision, interval).await
}

/// What an evaluation decided and has yet to record: the status patch when one is due, and
/// what is announced once it is written. Small, for the writes that wait their turn.
struct Decision {
    write: Option<(super::writes::Write, Box<serde_json::value::RawValue>)>,
    events: Vec<(EventType, &'static str, String)>,
    /// Notices delivered before (forgotten once written), to send again, and new.
    delivered: Vec<crate::api::guard::PendingNotice>,
    again: Vec<crate::api::guard::PendingNotice>,
    fresh: Vec<crate::api::guard::PendingNotice>,
}

/// Writes the status if due (its evaluation slots already given back), then announces.
async fn record(
    guard: &RolloutGuard,
    ctx: &Context,
    decision: Decision,
    interval: Duration,
) -> Result<Action, Error> {
    let (namespace, name) = (guard.namespace().unwrap_or_default(), guard.name_any());
    let Decision {
        write,
        events,
        delivered,
        again,
        fresh,
    } = decision;
    let result = match &write {
        // Nothing a reader or a restart relies on changed: the values wait for the refresh.
        None => Ok(()),
        Some((why, patch)) => {
            let _slot = ctx.fairness.write(*why).await;
            Box::pin(write_status(&ctx.client, guard, patch)).await
        }
    };
    ctx.metrics.guard_evaluated(
        &namespace,
        &name,
        write.map(|(why, _)| why).filter(|_| result.is_ok()),
    );
    match result {
        Ok(()) => {
            let reference = guard.object_ref(&());
            for (type_, reason, note) in events {
                Box::pin(publish(&ctx.recorder, &reference, type_, reason, note)).await;
            }
            // Sent once the transition is recorded: a later evaluation does not repeat it.
            for notice in &delivered {
                ctx.outbox.forget_guard_delivery(guard, notice);
            }
            if !fresh.is_empty() {
                crate::fault::point("guard-notice-recorded", &name).await;
            }
            for notice in again.iter().chain(&fresh) {
                let Some(notifier) = guard.spec.notify.iter().find(|n| n.name == notice.receiver)
                else {
                    continue;
                };
                ctx.outbox.send_for_guard(guard, notifier.clone(), notice);
            }
            Ok(Action::requeue(until_next_evaluation(
                interval,
                std::time::SystemTime::now(),
            )))
        }
        Err(e) if crate::is_conflict(&e) => Ok(Action::requeue(Duration::from_millis(200))),
        Err(e) => Err(e.into()),
    }
}

/// One admitted evaluation: read, judge, ask for a rollback; what to write and announce.
async fn decide(
    guard: Arc<RolloutGuard>,
    ctx: Arc<Context>,
    admission: super::fairness::Admission,
    interval: Duration,
    late: Option<Duration>,
) -> Result<Decision, Error> {
    let namespace = guard.namespace().unwrap_or_default();
    let name = guard.name_any();
    let mut previous = guard.status.clone().unwrap_or_default();
    let requests: Api<RollbackRequest> = Api::namespaced(ctx.client.clone(), &namespace);

    // Read once per evaluation, from the flags ConfigMaps' watch (the API server only on a
    // miss): judged for validity, and for drift.
    let (flags_config_map, _) = ctx
        .opted_in
        .config_map(&namespace, &guard.spec.flags.config_map_ref.name)
        .await?;
    let invalid = match problems(&guard, flags_config_map.as_ref()) {
        Some(problem) => Some(problem),
        None if !spec_judged(&guard) => {
            credential_problems(&guard, &ctx.opted_in, &namespace).await?
        }
        None => None,
    };
    let evaluate = invalid.is_none() && !guard.spec.suspend;
    let outcomes = if evaluate {
        evaluate_triggers(&guard, &ctx, &namespace, interval).await?
    } else {
        Vec::new()
    };
    let mine = ctx.requests.of_guard(&namespace, &name);
    let in_flight = mine
        .iter()
        .find(|r| !is_terminal(r.status.as_ref().and_then(|s| s.phase)))
        .map(|r| r.name_any());
    let active_dry_run = previous.active_rollback.as_ref().is_some_and(|active| {
        mine.iter()
            .any(|r| r.name_any() == *active && r.spec.dry_run)
    });
    // The slot names a request that was deleted before it finished: nobody will release it.
    let orphaned = match &previous.active_rollback {
        Some(active) if in_flight.as_deref() != Some(active.as_str()) => {
            requests.get_opt(active).await?.is_none()
        }
        _ => false,
    };
    if orphaned {
        tracing::warn!(
            guard = %name,
            request = previous.active_rollback.as_deref().unwrap_or_default(),
            "the rollback in flight was deleted before it finished; its slot is freed"
        );
        previous.active_rollback = None;
    }
    // A request in flight (a restore, or another rollback) is changing the flags itself.
    let drift = if assess::rolled_back(&previous) && in_flight.is_none() {
        match drift(&guard, &mine, &previous, flags_config_map.as_ref()) {
            // Drift is confirmed on the API server's copy: a watch that lags behind the
            // rollback's own write (or a restore's) never reports it. Rare, so one GET.
            Some(seen) if !seen.flags.is_empty() => {
                let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
                let fresh = config_maps
                    .get_opt(&guard.spec.flags.config_map_ref.name)
                    .await?;
                drift(&guard, &mine, &previous, fresh.as_ref())
            }
            other => other,
        }
    } else {
        None
    };
    let now = jiff::Timestamp::now();
    let Assessment {
        status,
        notices,
        rollback,
    } = assess::assess(
        &AssessContext {
            spec: &guard.spec,
            generation: guard.metadata.generation,
            previous: &previous,
            invalid,
            request_in_flight: in_flight,
            active_dry_run,
            drift,
            late,
            now,
        },
        &outcomes,
    );

    ctx.metrics
        .set_triggers(&namespace, &name, &status.triggers);
    let recorder = &ctx.recorder;
    let reference = guard.object_ref(&());
    // Notices recorded before: drop those delivered, send again those a restart interrupted.
    let (mut pending, again, delivered) =
        crate::notify::settle_pending(previous.pending_notices.clone(), |n| {
            ctx.outbox.guard_delivery(&guard, n)
        });
    let (stable_notified, stable) = stable_notices(&guard, &previous, &status, now);
    let fresh: Vec<_> = notices_to_send(&guard, &status, &notices, now)
        .into_iter()
        .chain(stable)
        .filter(|n| {
            !pending
                .iter()
                .any(|p| p.receiver == n.receiver && p.id == n.id)
        })
        .collect();
    pending.extend(fresh.iter().cloned());
    // Published once the status that records them is written: an evaluation on a stale view
    // (its write conflicts) announces nothing, and the next one decides again.
    let events: Vec<(EventType, &'static str, String)> = notices
        .into_iter()
        .map(|notice| {
            let (reason, note) = match notice {
                Notice::EvaluationLate { message } => ("EvaluationLate", message),
                Notice::TriggerBreaching { message, .. } => ("TriggerBreaching", message),
                Notice::TriggerFiring { message, .. } => ("TriggerFiring", message),
                Notice::PrometheusUnreachable { message } => ("PrometheusUnreachable", message),
                Notice::HealthTimeoutTooShort { message } => ("HealthTimeoutTooShort", message),
                Notice::InvalidSpec { message } => ("InvalidSpec", message),
                Notice::FlagsDrifted { message } => ("FlagsDrifted", message),
            };
            (EventType::Warning, reason, note)
        })
        .collect();

    // The store can lag behind (or not have synced yet after a start): before creating a
    // request, ask the API server whether one of this guard's is in flight.
    let rollback = match rollback {
        Some(auto) => match in_flight_now(&requests, &name).await? {
            Some(other) => {
                tracing::info!(guard = %name, request = %other, "trigger firing; a rollback is already in flight");
                None
            }
            None => Some(auto),
        },
        None => None,
    };
    let created = rollback.is_some();
    if let Some(auto) = rollback {
        automatic::create(&guard, &auto, now, &requests, recorder, &reference).await?;
    }

    let mut next = status;
    next.pending_notices = pending;
    next.stable_notified = stable_notified;
    if orphaned {
        next.active_rollback = None;
    }
    let announces = !events.is_empty() || created;
    // The status as last written (no copy: this runs for every guard every interval).
    let never_written = crate::api::RolloutGuardStatus::default();
    let written = guard.status.as_ref().unwrap_or(&never_written);
    let phase = super::writes::refresh_phase(&namespace, &name);
    let write = super::writes::due(&guard.spec, written, &next, now, announces, phase)
        .map(|why| (why, status_patch(&guard, &next, orphaned)));
    drop(admission);
    Ok(Decision {
        write,
        events,
        delivered,
        again,
        fresh,
    })
}

/// The patch of the fields of the guard's status this reconciler owns, serialised once; the
/// resourceVersion keeps it from overwriting the rollback slot with a stale view.
fn status_patch(
    guard: &RolloutGuard,
    status: &crate::api::RolloutGuardStatus,
    orphaned: bool,
) -> Box<serde_json::value::RawValue> {
    let mut patch = json!({
        "metadata": { "resourceVersion": guard.resource_version() },
        "status": {
            "observedGeneration": status.observed_generation,
            "phase": status.phase,
            "conditions": status.conditions,
            "lastEvaluationTime": status.last_evaluation_time,
            "triggers": status.triggers,
            "quietSince": status.quiet_since,
            "pendingNotices": status.pending_notices,
            "stableNotified": status.stable_notified,
        }
    });
    if orphaned {
        patch["status"]["activeRollback"] = serde_json::Value::Null;
    }
    serde_json::value::to_raw_value(&patch).expect("a JSON value serialises")
}

/// Writes the guard's status patch, in one request.
async fn write_status(
    client: &Client,
    guard: &RolloutGuard,
    patch: &serde_json::value::RawValue,
) -> Result<(), kube::Error> {
    let guards: Api<RolloutGuard> =
        Api::namespaced(client.clone(), &guard.namespace().unwrap_or_default());
    guards
        .patch_status(
            &guard.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
        .map(|_| ())
}

/// Guards evaluate at the start of each wall-clock `interval` (the buckets in which
/// [`SharedQueries`] shares identical queries), so the first guard of a bucket asks
/// Prometheus and the others reuse that fresh answer. Evaluating at random points of the
/// bucket instead could judge a result almost an interval old, doubling the time to detect
/// a breach.
fn until_next_evaluation(interval: Duration, now: std::time::SystemTime) -> Duration {
    let interval_ms = interval.as_millis().max(1);
    let since_epoch = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let left = interval_ms - since_epoch % interval_ms;
    // A little past the boundary, so the clock has surely moved into the next bucket.
    Duration::from_millis(u64::try_from(left).unwrap_or(u64::MAX)) + Duration::from_millis(5)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard_with(spec: serde_json::Value) -> RolloutGuard {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "rollguard.dev/v1alpha1", "kind": "RolloutGuard",
            "metadata": {"name": "g", "namespace": "ns", "generation": 1}, "spec": spec
        }))
        .unwrap()
    }

    fn flags_config_map() -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "ff", "namespace": "ns", "labels": {"rollguard.dev/flags": "true"}},
            "data": {"a": "true"}
        }))
        .unwrap()
    }

    /// A `for` or `cooldown` that does not parse (past Go's range: it got past the schema,
    /// e.g. through an older CRD) makes the guard Invalid, naming the field and the value;
    /// it is never read as 0 (fire at once, no cooldown).
    #[test]
    fn durations_that_do_not_parse_make_the_guard_invalid() {
        let flags = serde_json::json!({"configMapRef": {"name": "ff"}, "guarded": ["a"]});
        let trigger = |for_: &str| serde_json::json!([{"name": "errors", "query": "up", "above": 1, "for": for_}]);
        let cm = flags_config_map();
        let ok = guard_with(serde_json::json!({"flags": flags, "triggers": trigger("1m")}));
        assert_eq!(problems(&ok, Some(&cm)), None);

        let for_ =
            guard_with(serde_json::json!({"flags": flags, "triggers": trigger("9999999999h")}));
        let message = problems(&for_, Some(&cm)).expect("an unparsable for is a problem");
        assert!(
            message.starts_with("spec.triggers[errors].for: \"9999999999h\""),
            "{message}"
        );

        let cooldown = guard_with(serde_json::json!({
            "flags": flags, "triggers": trigger("1m"), "rollback": {"cooldown": "5 minutes"}
        }));
        let message = problems(&cooldown, Some(&cm)).expect("an unparsable cooldown is a problem");
        assert!(
            message.starts_with("spec.rollback.cooldown: \"5 minutes\""),
            "{message}"
        );
    }

    /// `spec.health.propagation.query` is judged with `$FLAGS` expanded: a query that does
    /// not parse makes the guard Invalid, naming the field.
    #[test]
    fn a_propagation_query_that_does_not_parse_makes_the_guard_invalid() {
        let flags = serde_json::json!({"configMapRef": {"name": "ff"}, "guarded": ["a"]});
        let cm = flags_config_map();
        let with = |query: &str| {
            guard_with(
                serde_json::json!({"flags": flags, "health": {"propagation": {"query": query}}}),
            )
        };
        let good = r#"sum(rate(feature_flag_evaluations_total{feature_flag_key=~"$FLAGS",feature_flag_result_variant!="off"}[30s]))"#;
        assert_eq!(problems(&with(good), Some(&cm)), None);
        let message = problems(&with("sum(rate(x{k=~\"$FLAGS\"}[30s])"), Some(&cm))
            .expect("an unparsable propagation query is a problem");
        assert!(
            message.starts_with("spec.health.propagation.query: "),
            "{message}"
        );
    }

    /// Ten thousand guards due at one boundary each wait in a reconcile future, for an
    /// evaluation slot or a write slot: it stays under 2 KiB (the evaluation itself, about
    /// 8 KiB, exists only while admitted).
    #[test]
    fn the_future_a_guard_waits_in_is_small() {
        fn size_of_future<A, B, F: std::future::Future>(_: fn(A, B) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        let waiting = size_of_future(reconcile);
        assert!(
            waiting < 2048,
            "the guard's reconcile future is {waiting} bytes"
        );
    }

    #[test]
    fn guards_evaluate_just_past_each_interval_boundary() {
        let at = |ms: u64| std::time::UNIX_EPOCH + Duration::from_millis(ms);
        let fifteen = Duration::from_secs(15);
        assert_eq!(
            until_next_evaluation(fifteen, at(1_800_000_000_000)),
            Duration::from_millis(15_005)
        );
        assert_eq!(
            until_next_evaluation(fifteen, at(1_800_000_000_000 + 14_000)),
            Duration::from_millis(1_005)
        );
        assert_eq!(
            until_next_evaluation(Duration::from_secs(1), at(1_800_000_000_999)),
            Duration::from_millis(6)
        );
    }
}
