//! The RollbackRequest reconciler: fetch, ask [`step::next_step`], execute that one step,
//! record it in status, repeat. Every external side effect is followed by a status write
//! before the next step starts, so a restart resumes exactly where the request was.

use super::history;
use super::hooks::{self, HookPayload};
use super::snapshot::{self, Included, SnapshotInput};
use super::step::{self, Observed, Step, condition};
use crate::Error;
use crate::api::guard::NotifyEvent;
use crate::api::guard::{LastRollback, RolloutGuard, TriggerAction, WorkloadKind};
use crate::api::request::DeliveryState;
use crate::api::request::{
    Durations, FlagChange, HookCall, HookOutcome, HookStage, RequestAction, RequestMode,
    RequestPhase, RollbackRequest, RollbackRequestStatus, TimelineEntry,
};
use crate::api::{GUARD_LABEL, LocalObjectReference, SNAPSHOT_SECRET_TYPE, SnapshotKind};
use crate::conditions::{self, FALSE, TRUE, UNKNOWN};
use crate::flags::{self, Plan, Selection};
use crate::is_conflict;
use crate::notify::outbox::{Job, Outbox};
use crate::notify::{self, Ending};
use crate::prometheus::{Prometheus, Target};
use crate::triggers::{self, window::Verification};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

mod capture;
mod drain;
mod finish;
mod notifications;
mod propagation;
mod slot;
mod take_snapshot;
mod verify;
mod write_flags;

pub use crate::api::names::{FIELD_MANAGER, FLAGS_REVISION_ANNOTATION, LAST_CHANGE_ANNOTATION};

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub prometheus: Prometheus,
    /// Bounds hooks and health checks (SPEC §5).
    pub egress: crate::egress::Egress,
    pub default_prometheus_url: Option<String>,
    /// Every RollbackRequest the controller watches (the queue of each guard).
    pub requests: crate::requests::Requests,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Notifications in flight beside the rollback.
    pub outbox: Arc<Outbox>,
    /// Wakes the guard controller when this reconciler changed a guard's rollback slot, so
    /// the guard's one status writer re-decides its phase and conditions at once.
    pub guard_changed: tokio::sync::mpsc::UnboundedSender<ObjectRef<RolloutGuard>>,
    /// Requests (by uid) whose propagation query has said "none" since then, not yet
    /// confirmed (see `propagation::settle`). Lost with the process: a restart measures again.
    pub effective_since: std::sync::Mutex<std::collections::HashMap<String, jiff::Timestamp>>,
    /// The guards as the guard controller's watch has them.
    pub guards: kube::runtime::reflector::Store<RolloutGuard>,
    /// The flags ConfigMaps, kept ready for a snapshot.
    pub flags: super::ready::FlagsCache,
    /// Requests created while this process watched, not reconciled yet.
    pub arrivals: super::ready::Arrivals,
    /// One reconcile of a request at a time (the controller's and a new request's start).
    pub turns: super::ready::Turns,
    /// Slot mirror writes a run left in flight, by request uid (see `Drop for Run`).
    pub mirrors: std::sync::Mutex<
        std::collections::HashMap<
            String,
            tokio::task::JoinHandle<Result<RolloutGuard, kube::Error>>,
        >,
    >,
}

/// How a step left the request.
enum Flow {
    /// Decide again right away.
    Next,
    /// Come back later (waiting in the queue, or for health).
    Requeue(Duration),
    /// Nothing more to do.
    Stop,
}

/// The controller's reconcile: in the request's turn (see `ready::Turns`).
pub async fn reconcile_in_turn(
    request: Arc<RollbackRequest>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let _turn = ctx.turns.take(&request.uid().unwrap_or_default()).await;
    reconcile(request, ctx).await
}

/// A newly arrived request's first reconcile, started from the watch in the turn taken
/// there. What comes after it (a requeue, a retry after an error) is the controller's: it
/// reconciles the request too, once this turn ends.
pub async fn start_arrived(
    request: Arc<RollbackRequest>,
    turn: super::ready::Turn,
    ctx: Arc<Context>,
) {
    let span = tracing::info_span!(
        "reconciling object",
        "object.ref" = %ObjectRef::from_obj(request.as_ref()),
        object.reason = "arrived"
    );
    let name = request.name_any();
    if let Err(e) = tracing::Instrument::instrument(reconcile(request, ctx), span).await {
        tracing::warn!(request = %name, error = %e, "rollback reconcile error (at arrival); the controller retries");
    }
    drop(turn);
}

pub async fn reconcile(request: Arc<RollbackRequest>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = request
        .namespace()
        .ok_or(Error::NoNamespace("RollbackRequest"))?;
    let requests: Api<RollbackRequest> = Api::namespaced(ctx.client.clone(), &namespace);
    // The watch may not have delivered this reconciler's own last write yet: deciding on
    // that older view re-plans steps already done (a Succeeded request ends Superseded by
    // itself, a hook is called twice). Decide on the request as the API server has it; every
    // status write then carries its resourceVersion. A request created while this process
    // watched, at its first reconcile, is the exception: nothing has written it, so the
    // watched copy is the request (ready::Arrivals).
    let pending = ctx
        .mirrors
        .lock()
        .unwrap()
        .remove(&request.uid().unwrap_or_default());
    if let Some(mirror) = pending {
        let _ = mirror.await;
    }
    let new = ctx.arrivals.take(&request);
    let request = if new {
        (*request).clone()
    } else {
        match requests.get_opt(&request.name_any()).await? {
            Some(request) => request,
            None => return Ok(Action::await_change()),
        }
    };
    let guard_name = request.spec.guard_ref.name.clone();
    let mut run = Run {
        requests,
        guards: Api::namespaced(ctx.client.clone(), &namespace),
        config_maps: Api::namespaced(ctx.client.clone(), &namespace),
        secrets: Api::namespaced(ctx.client.clone(), &namespace),
        leases: Api::namespaced(ctx.client.clone(), &namespace),
        status: request.status.clone().unwrap_or_default(),
        request,
        namespace,
        guard: None,
        ctx: ctx.clone(),
        events: tokio::task::JoinSet::new(),
        after_save: Vec::new(),
        flags_seen: None,
        snapshot: None,
        snapshot_early: false,
        wake_guard: false,
        slot_holder: None,
        mirror: None,
        guard_from_cache: false,
    };
    // A new request starts from the cached guard: the only step it can take on it is the
    // claim, beside which the guard is read to prove the cache current (the claim's next
    // steps are decided on the guard as read). Any other decision is taken again on the
    // guard as it is now.
    if new {
        let cached = ctx
            .guards
            .get(&ObjectRef::new(&guard_name).within(&run.namespace));
        run.guard_from_cache = cached.is_some();
        run.guard = cached.map(|g| (*g).clone());
    }
    if !run.guard_from_cache {
        run.guard = run.guards.get_opt(&guard_name).await?;
    }
    run.settle_notifications().await?;
    run.take_triggered_by();
    // After a restart: what was recorded as Sending goes out (again) now.
    run.send_notifications();
    // Bounded: a request takes at most a dozen steps; the bound only guards against a bug.
    for _ in 0..64 {
        let observed = run.observe();
        let step = step::next_step(&run.request.spec, &run.status, &observed);
        tracing::debug!(request = %run.request.name_any(), ?step, "next step");
        // The claim reads the guard beside it (and clears the flag); any other step first.
        if run.guard_from_cache && !matches!(step, Step::Claim { .. }) {
            run.guard_from_cache = false;
            run.guard = run.guards.get_opt(&guard_name).await?;
            continue;
        }
        // Drain hooks take time, and an emergency may take the slot meanwhile: look again.
        let after_hook =
            matches!(step, Step::CallHook { .. }) && !step::is_emergency(&run.request.spec);
        let flow = run.execute(step).await;
        if after_hook && matches!(flow, Ok(Flow::Next)) {
            run.guard = run.guards.get_opt(&guard_name).await?;
            run.read_slot_holder().await?;
        }
        if !matches!(flow, Ok(Flow::Next)) {
            run.flush_events().await;
        }
        match flow? {
            Flow::Next => continue,
            Flow::Requeue(after) => return Ok(Action::requeue(after)),
            Flow::Stop => return Ok(Action::await_change()),
        }
    }
    tracing::error!(request = %run.request.name_any(), "rollback state machine did not settle");
    Ok(Action::requeue(Duration::from_secs(5)))
}

pub fn error_policy(request: Arc<RollbackRequest>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_error("RollbackRequest", error);
    tracing::warn!(request = %request.name_any(), %error, "reconcile failed; retrying");
    let retry_in = Duration::from_secs(2);
    crate::report_reconcile_error(&ctx.recorder, request.as_ref(), error, retry_in);
    Action::requeue(retry_in)
}

struct Run {
    ctx: Arc<Context>,
    namespace: String,
    request: RollbackRequest,
    status: RollbackRequestStatus,
    guard: Option<RolloutGuard>,
    requests: Api<RollbackRequest>,
    guards: Api<RolloutGuard>,
    config_maps: Api<ConfigMap>,
    secrets: Api<Secret>,
    /// Events being published.
    events: tokio::task::JoinSet<()>,
    /// Events of steps not yet recorded in status: published once they are.
    after_save: Vec<(EventType, String, String)>,
    /// The flags ConfigMap as the snapshot step read it: the first write attempt uses it.
    flags_seen: Option<ConfigMap>,
    /// This request's snapshot Secret, as created or found.
    snapshot: Option<Secret>,
    /// `snapshot` was created beside the claim, and the snapshot step has not recorded it.
    snapshot_early: bool,
    /// This run changed the guard's rollback slot: the guard controller is told after the
    /// next status write (or as the run ends), not in front of the flags write.
    wake_guard: bool,
    /// The guards' rollback-slot Leases (`slot_lease`).
    leases: Api<k8s_openapi::api::coordination::v1::Lease>,
    /// Who holds the guard's slot, as its Lease said during this run (it goes before the
    /// guard's `activeRollback`, which mirrors it a moment later).
    slot_holder: Option<String>,
    /// The guard's `activeRollback` being written after this run took the slot: awaited
    /// before the next status write of the request.
    mirror: Option<tokio::task::JoinHandle<Result<RolloutGuard, kube::Error>>>,
    /// `guard` is the watch's copy, not yet proven current (see `claim`).
    guard_from_cache: bool,
}

impl Drop for Run {
    fn drop(&mut self) {
        self.wake_guard();
        // A run that ended (an error) before its next status write awaited the slot's mirror
        // write: the request's next run awaits it first, so it can never land after that
        // run has freed the slot.
        if let Some(mirror) = self.mirror.take()
            && !mirror.is_finished()
        {
            let uid = self.request.uid().unwrap_or_default();
            self.ctx.mirrors.lock().unwrap().insert(uid, mirror);
        }
    }
}

/// The API server's answer when it refused a write for good: forbidden, invalid, not
/// found. Conflicts, throttling, timeouts and authentication (a token being rotated) are
/// worth another attempt and give None.
fn refused(e: &kube::Error) -> Option<String> {
    match e {
        kube::Error::Api(s)
            if (400..500).contains(&s.code) && ![401, 408, 409, 429].contains(&s.code) =>
        {
            Some(format!(
                "the API server refused it ({} {}): {}",
                s.code, s.reason, s.message
            ))
        }
        _ => None,
    }
}

/// The merge patch that makes `before` into `after`: `after`, with null for every field
/// of `before` that `after` no longer has (serde omits None fields, and a merge patch
/// leaves an omitted field as it was).
fn status_patch(
    before: Option<&RollbackRequestStatus>,
    after: &RollbackRequestStatus,
) -> serde_json::Value {
    fn clear(before: &serde_json::Value, after: &mut serde_json::Value) {
        let (Some(before), Some(after)) = (before.as_object(), after.as_object_mut()) else {
            return;
        };
        for (key, old) in before {
            match after.get_mut(key) {
                Some(new) => clear(old, new),
                None => {
                    after.insert(key.clone(), serde_json::Value::Null);
                }
            }
        }
    }
    let mut patch = serde_json::to_value(after).expect("status serialises");
    if let Some(before) = before {
        clear(
            &serde_json::to_value(before).expect("status serialises"),
            &mut patch,
        );
    }
    patch
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

fn seconds_between(from: jiff::Timestamp, to: jiff::Timestamp) -> f64 {
    let secs = to.duration_since(from).as_secs_f64();
    (secs * 1000.0).round() / 1000.0
}

impl Run {
    fn name(&self) -> String {
        self.request.name_any()
    }

    fn guard(&self) -> &RolloutGuard {
        self.guard
            .as_ref()
            .expect("steps past Claim run with a guard")
    }

    /// An automatic request carries its `triggeredBy` in an annotation from its creation;
    /// it goes into status with the next write. Only the operator may ask as
    /// `system:rollguard` (the admission policy), so only then is the annotation believed.
    fn take_triggered_by(&mut self) {
        if self.status.triggered_by.is_none()
            && self.request.spec.requested_by == crate::api::SYSTEM_REQUESTER
        {
            self.status.triggered_by = self
                .request
                .annotations()
                .get(crate::api::TRIGGERED_BY_ANNOTATION)
                .and_then(|json| serde_json::from_str(json).ok());
        }
    }

    fn created(&self) -> jiff::Timestamp {
        self.request
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0)
            .unwrap_or_else(now)
    }

    async fn execute(&mut self, step: Step) -> Result<Flow, Error> {
        match step {
            Step::Done => Ok(Flow::Stop),
            Step::Release => self.release().await,
            Step::Fail { reason, message } => self.fail(reason, message).await,
            Step::Wait { behind } => self.wait(behind).await,
            Step::Claim { supersedes } => self.claim(supersedes).await,
            Step::Superseded { by } => self.superseded(by).await,
            Step::Snapshot => self.snapshot().await,
            Step::CallHook { stage, index } => self.call_hook(stage, index).await,
            Step::DryRun => self.dry_run().await,
            Step::WriteFlags => self.write_flags().await,
            Step::Verify => self.verify().await,
            Step::Succeed => self.succeed().await,
        }
    }

    fn record(&mut self, step: &str, message: impl Into<String>) {
        self.status.timeline.push(TimelineEntry {
            time: MicroTime(now()),
            step: step.to_string(),
            message: message.into(),
        });
    }

    fn set_condition(
        &mut self,
        type_: &str,
        status: &str,
        reason: &str,
        message: impl Into<String>,
    ) {
        let generation = self.request.metadata.generation;
        conditions::set(
            &mut self.status.conditions,
            type_,
            status,
            reason,
            message,
            generation,
            Time(now()),
        );
    }

    /// Persists status; the step it records is then done. The request's resourceVersion is
    /// the precondition: a write based on an older view fails (409) and the reconcile starts
    /// again from the request as it is. Fields cleared since the last write are written as
    /// null, so a merge patch removes them.
    async fn save(&mut self) -> Result<(), Error> {
        self.mirrored().await?;
        self.status.observed_generation = self.request.metadata.generation;
        self.status.fill_duration(self.created());
        crate::kstatus::request(&mut self.status, Time(now()));
        let patch = json!({
            "metadata": { "resourceVersion": self.request.resource_version() },
            "status": status_patch(self.request.status.as_ref(), &self.status),
        });
        self.request = self
            .requests
            .patch_status(&self.name(), &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        // Notifications recorded as Sending go out once the record exists.
        self.send_notifications();
        for (type_, reason, note) in std::mem::take(&mut self.after_save) {
            self.event(type_, &reason, note);
        }
        self.wake_guard();
        Ok(())
    }

    /// An Event of a step that is recorded with the next status write.
    fn event_after_save(&mut self, type_: EventType, reason: &str, note: String) {
        self.after_save.push((type_, reason.to_string(), note));
    }

    /// Tells the guard controller that this run changed the guard's slot.
    fn wake_guard(&mut self) {
        if std::mem::take(&mut self.wake_guard)
            && let Some(guard) = &self.guard
        {
            let _ = self.ctx.guard_changed.send(ObjectRef::from_obj(guard));
        }
    }

    /// Publishes an Event without holding up the rollback; [`Run::flush_events`] waits
    /// for them, before a terminal status is written and before the reconcile returns.
    fn event(&mut self, type_: EventType, reason: &str, note: String) {
        let regarding = self.request.object_ref(&());
        let related = self.guard.as_ref().map(|g| g.object_ref(&()));
        self.publish(type_, reason, note, regarding, related);
    }

    fn guard_event(&mut self, type_: EventType, reason: &str, note: String) {
        let Some(guard) = &self.guard else { return };
        let regarding = guard.object_ref(&());
        let related = Some(self.request.object_ref(&()));
        self.publish(type_, reason, note, regarding, related);
    }

    fn publish(
        &mut self,
        type_: EventType,
        reason: &str,
        note: String,
        regarding: ObjectReference,
        related: Option<ObjectReference>,
    ) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note.chars().take(1000).collect()),
            action: "Rollback".into(),
            secondary: related,
        };
        let recorder = self.ctx.recorder.clone();
        let reason = reason.to_string();
        self.events.spawn(async move {
            if let Err(e) = recorder.publish(&event, &regarding).await {
                tracing::warn!(error = %e, reason, "could not publish Event");
            }
        });
    }

    async fn flush_events(&mut self) {
        while self.events.join_next().await.is_some() {}
    }
}

fn hook_stage_word(stage: HookStage) -> &'static str {
    match stage {
        HookStage::PreRollback => "preRollback",
        HookStage::PostRollback => "postRollback",
    }
}

fn action_word(action: RequestAction) -> &'static str {
    match action {
        RequestAction::Rollback => "rollback",
        RequestAction::Restore => "restore",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A field set to none since the last write goes out as null, so the merge patch clears
    /// it ("waiting for …" does not stay beside a rollback under way); set fields go as set.
    #[test]
    fn a_status_write_clears_what_was_set_to_none() {
        let before: RollbackRequestStatus = serde_json::from_value(json!({
            "phase": "Pending",
            "message": "waiting for RollbackRequest \"rb-0\" of guard \"g\" to finish",
            "conflicts": [{"name": "a", "expected": "true", "found": "false"}],
            "durations": {"flagDisable": 0.1, "total": 2.0},
        }))
        .unwrap();
        let mut after = before.clone();
        after.phase = Some(RequestPhase::Snapshotting);
        after.message = None;
        after.conflicts.clear();
        after.durations.as_mut().unwrap().total = None;
        let patch = status_patch(Some(&before), &after);
        assert_eq!(patch["phase"], "Snapshotting");
        assert_eq!(patch["message"], serde_json::Value::Null);
        assert!(patch.as_object().unwrap().contains_key("message"));
        assert_eq!(patch["conflicts"], serde_json::Value::Null);
        assert_eq!(
            patch["durations"],
            json!({"flagDisable": 0.1, "total": null})
        );
        // Nothing written before: nothing to clear.
        let first = status_patch(None, &after);
        assert!(
            !first.as_object().unwrap().contains_key("message"),
            "{first}"
        );
    }
}
