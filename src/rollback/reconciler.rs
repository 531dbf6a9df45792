//! The RollbackRequest reconciler: fetch, ask [`step::next_step`], execute that one step,
//! record it in status, repeat. Every external side effect is followed by a status write
//! before the next step starts, so a restart resumes exactly where the request was.

use super::history;
use super::hooks::{self, HookPayload};
use super::snapshot::{self, Included, SnapshotInput};
use super::step::{self, Observed, Slot, Step, condition};
use crate::Error;
use crate::api::guard::NotifyEvent;
use crate::api::guard::{LastRollback, RolloutGuard, TriggerAction, WorkloadKind};
use crate::api::request::DeliveryState;
use crate::api::request::{
    Durations, FlagChange, HookCall, HookOutcome, HookStage, RequestAction, RequestMode,
    RequestPhase, RollbackRequest, RollbackRequestStatus, SloOutcome, TimelineEntry,
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
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Annotation on the flags ConfigMap: the uid of the request that last wrote it. Lets a
/// restarted operator see that its write already happened.
pub const LAST_CHANGE_ANNOTATION: &str = "rollguard.dev/last-change";
/// The field manager of the operator's ConfigMap writes (drift detection leaves it out).
pub const FIELD_MANAGER: &str = "rollguard";
/// Annotation on pods refreshed after a change (`refreshPods`).
pub const FLAGS_REVISION_ANNOTATION: &str = "rollguard.dev/flags-revision";

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub prometheus: Prometheus,
    /// Bounds hooks and health checks (SPEC §5).
    pub egress: crate::egress::Egress,
    pub default_prometheus_url: Option<String>,
    /// Every RollbackRequest the controller watches (the queue of each guard).
    pub requests: Store<RollbackRequest>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Notifications in flight beside the rollback.
    pub outbox: Arc<Outbox>,
    /// Wakes the guard controller when this reconciler changed a guard's rollback slot, so
    /// the guard's one status writer re-decides its phase and conditions at once.
    pub guard_changed: tokio::sync::mpsc::UnboundedSender<ObjectRef<RolloutGuard>>,
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

pub async fn reconcile(request: Arc<RollbackRequest>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = request
        .namespace()
        .ok_or(Error::NoNamespace("RollbackRequest"))?;
    let requests: Api<RollbackRequest> = Api::namespaced(ctx.client.clone(), &namespace);
    // The watch may not have delivered this reconciler's own last write yet: deciding on
    // that older view re-plans steps already done (a Succeeded request ends Superseded by
    // itself, a hook is called twice). Decide on the request as the API server has it; every
    // status write then carries its resourceVersion.
    let Some(request) = requests.get_opt(&request.name_any()).await? else {
        return Ok(Action::await_change());
    };
    let mut run = Run {
        requests,
        guards: Api::namespaced(ctx.client.clone(), &namespace),
        config_maps: Api::namespaced(ctx.client.clone(), &namespace),
        secrets: Api::namespaced(ctx.client.clone(), &namespace),
        status: request.status.clone().unwrap_or_default(),
        request,
        namespace,
        guard: None,
        ctx: ctx.clone(),
        events: tokio::task::JoinSet::new(),
        flags_seen: None,
    };
    run.guard = run.guards.get_opt(&run.request.spec.guard_ref.name).await?;
    run.settle_notifications().await?;
    // After a restart: what was recorded as Sending goes out (again) now.
    run.send_notifications();
    // Bounded: a request takes at most a dozen steps; the bound only guards against a bug.
    for _ in 0..64 {
        let observed = run.observe();
        let step = step::next_step(&run.request.spec, &run.status, &observed);
        tracing::debug!(request = %run.request.name_any(), ?step, "next step");
        // Drain hooks take time, and an emergency may take the slot meanwhile: look again.
        let after_hook =
            matches!(step, Step::CallHook { .. }) && !step::is_emergency(&run.request.spec);
        let flow = run.execute(step).await;
        if after_hook && matches!(flow, Ok(Flow::Next)) {
            run.guard = run.guards.get_opt(&run.request.spec.guard_ref.name).await?;
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
    /// The flags ConfigMap as the snapshot step read it: the first write attempt uses it.
    flags_seen: Option<ConfigMap>,
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

    fn created(&self) -> jiff::Timestamp {
        self.request
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0)
            .unwrap_or_else(now)
    }

    fn observe(&self) -> Observed {
        let me = self.name();
        let guard_name = &self.request.spec.guard_ref.name;
        let active = self
            .guard
            .as_ref()
            .and_then(|g| g.status.as_ref())
            .and_then(|s| s.active_rollback.clone());
        let hooks = self.guard.as_ref().map(|g| &g.spec.rollback.hooks);
        let observed = |slot| Observed {
            guard_exists: self.guard.is_some(),
            slot,
            pre_hooks: hooks.map_or(0, |h| h.pre_rollback.len()),
            post_hooks: hooks.map_or(0, |h| h.post_rollback.len()),
        };
        if active.as_deref() == Some(me.as_str()) {
            return observed(Slot::Held);
        }
        if self.status.started_at.is_some() {
            // Accepted, and the slot is someone else's: an emergency took it. Name it, also
            // when it has finished already (then it is the guard's last rollback).
            let by = active.or_else(|| {
                let status = self.guard.as_ref()?.status.as_ref()?;
                Some(status.last_rollback.as_ref()?.name.clone())
            });
            return observed(by.map_or(Slot::Free, Slot::Behind));
        }
        let in_flight = |r: &RollbackRequest| {
            r.namespace().as_deref() == Some(self.namespace.as_str())
                && r.spec.guard_ref.name == *guard_name
                && !step::is_terminal(r.status.as_ref().and_then(|s| s.phase))
        };
        let queue = self.ctx.requests.state();
        // An emergency neither waits for nor queues behind anything but another emergency.
        let emergency = step::is_emergency(&self.request.spec);
        if let Some(other) = active
            && let Some(holder) = queue.iter().find(|r| r.name_any() == other && in_flight(r))
        {
            return observed(if emergency && !step::is_emergency(&holder.spec) {
                Slot::Takeover(other)
            } else {
                Slot::Behind(other)
            });
        }
        let key = |r: &RollbackRequest| (r.metadata.creation_timestamp.clone(), r.name_any());
        let mine = key(&self.request);
        let older = queue
            .iter()
            .filter(|r| r.name_any() != me && in_flight(r) && key(r) < mine)
            .filter(|r| !emergency || step::is_emergency(&r.spec))
            .min_by_key(|r| key(r));
        match older {
            Some(r) => observed(Slot::Behind(r.name_any())),
            None => observed(Slot::Free),
        }
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

    // ---- recording -------------------------------------------------------------------

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
        Ok(())
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

    // ---- queue -----------------------------------------------------------------------

    async fn wait(&mut self, behind: String) -> Result<Flow, Error> {
        let message = format!(
            "waiting for RollbackRequest {behind:?} of guard {:?} to finish",
            self.request.spec.guard_ref.name
        );
        if self.status.phase != Some(RequestPhase::Pending)
            || self.status.message.as_deref() != Some(message.as_str())
        {
            self.status.phase = Some(RequestPhase::Pending);
            self.status.message = Some(message.clone());
            self.record("Queued", message);
            self.save().await?;
        }
        Ok(Flow::Requeue(Duration::from_secs(2)))
    }

    /// Takes the guard's rollback slot; the guard's resourceVersion makes two requests
    /// racing for it see a conflict, and the loser queues.
    async fn claim(&mut self, supersedes: Option<String>) -> Result<Flow, Error> {
        // A dry run holds the slot for a moment too, so nothing runs beside it. The guard's
        // phase and conditions follow from the slot in the guard's own evaluation.
        let status = json!({ "activeRollback": self.name() });
        if !self.patch_guard_status(status).await? {
            return Ok(Flow::Next);
        }
        // Recorded together with the first step's status write, one round trip fewer on
        // the way to the flags; a restart before it finds the slot held and starts there.
        self.accept();
        if let Some(other) = supersedes {
            self.record(
                "Superseding",
                format!(
                    "emergency: took the guard's rollback slot from RollbackRequest {other:?}, which ends Superseded"
                ),
            );
        }
        Ok(Flow::Next)
    }

    /// An emergency took the slot while this request was under way: it ends here. What it
    /// did so far (snapshot, hooks, flags) stays recorded; it calls nothing more.
    async fn superseded(&mut self, by: Option<String>) -> Result<Flow, Error> {
        let message = match &by {
            Some(other) => format!(
                "superseded by the immediate rollback RollbackRequest {other:?}, which took over the guard; the steps done before are in the timeline"
            ),
            None => "superseded by an immediate rollback, which took over the guard and has finished; the steps done before are in the timeline".to_string(),
        };
        self.status.phase = Some(RequestPhase::Superseded);
        self.status.message = Some(message.clone());
        self.status.completed_at = Some(MicroTime(now()));
        self.set_condition(condition::COMPLETE, FALSE, "Superseded", message.clone());
        self.record("Superseded", message.clone());
        self.event(EventType::Normal, "RollbackSuperseded", message);
        self.flush_events().await;
        self.save().await?;
        self.count_outcome("Superseded");
        Ok(Flow::Next)
    }

    /// Marks the request accepted (once): phase, start time, the first timeline line.
    fn accept(&mut self) {
        if self.status.started_at.is_some() {
            return;
        }
        self.status.phase = Some(RequestPhase::Snapshotting);
        self.status.started_at = Some(MicroTime(now()));
        if self.status.triggered_by.is_none()
            && self.request.spec.requested_by == crate::api::SYSTEM_REQUESTER
        {
            // Only the operator may ask as system:rollguard (the admission policy).
            self.status.triggered_by = self
                .request
                .annotations()
                .get(crate::api::TRIGGERED_BY_ANNOTATION)
                .and_then(|json| serde_json::from_str(json).ok());
        }
        self.status.message = None;
        let who = &self.request.spec.requested_by;
        let reason = &self.request.spec.reason;
        let message = format!(
            "{:?} {} requested by {who}{}{reason}",
            self.request.spec.mode,
            action_word(self.request.spec.action),
            if reason.is_empty() { "" } else { ": " },
        );
        self.record("Accepted", message);
        self.announce_started();
    }

    async fn release(&mut self) -> Result<Flow, Error> {
        let succeeded = self.status.phase == Some(RequestPhase::Succeeded);
        let rollback =
            self.request.spec.action == RequestAction::Rollback && !self.request.spec.dry_run;
        let flags_disabled =
            conditions::is_true(&self.status.conditions, condition::FLAGS_DISABLED);
        let record = LastRollback {
            name: self.name(),
            time: Some(Time(now())),
            outcome: Some(if succeeded { "Succeeded" } else { "Failed" }.into()),
            flags_disabled: rollback.then_some(flags_disabled),
        };
        // A dry run or a failed restore leaves the guard's rollback state as it was. The
        // guard's phase and conditions are its own evaluation's to decide, at once.
        let mut status = json!({ "activeRollback": null });
        if rollback {
            status["lastRollback"] = serde_json::to_value(record).expect("serialises");
        } else if succeeded
            && self.request.spec.action == RequestAction::Restore
            && !self.request.spec.dry_run
        {
            status["lastRestore"] = serde_json::to_value(record).expect("serialises");
        }
        if self.patch_guard_status(status).await? {
            self.prune_history().await;
        }
        Ok(Flow::Next)
    }

    /// Patches the guard's rollback fields with its resourceVersion as a precondition, so
    /// two requests cannot both take the slot. On a conflict the guard is re-read and
    /// false returned: the state machine then decides again on the fresh guard.
    async fn patch_guard_status(&mut self, status: serde_json::Value) -> Result<bool, Error> {
        let guard = self.guard();
        let patch = json!({ "metadata": { "resourceVersion": guard.resource_version() }, "status": status });
        let guard_name = guard.name_any();
        match self
            .guards
            .patch_status(&guard_name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(updated) => {
                self.guard = Some(updated);
                // The slot changed: the guard's evaluation decides its phase and conditions now.
                let _ = self
                    .ctx
                    .guard_changed
                    .send(ObjectRef::new(&guard_name).within(&self.namespace));
                Ok(true)
            }
            Err(e) if is_conflict(&e) => {
                self.guard = self.guards.get_opt(&guard_name).await?;
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Counts the finished request and its step durations.
    fn count_outcome(&self, outcome: &str) {
        if self.request.spec.dry_run {
            return;
        }
        let m = &self.ctx.metrics;
        let cause = if self.request.spec.requested_by == crate::api::SYSTEM_REQUESTER {
            "automatic"
        } else {
            "manual"
        };
        let cause = if self.request.spec.action == RequestAction::Restore {
            "restore"
        } else {
            cause
        };
        m.rollbacks
            .get_or_create(&crate::metrics::RollbackLabels {
                namespace: self.namespace.clone(),
                guard: self.request.spec.guard_ref.name.clone(),
                outcome: outcome.into(),
                cause: cause.into(),
            })
            .inc();
        if let Some(d) = &self.status.durations {
            // `notification` is counted when the delivery is recorded (it may come later).
            for (step, took) in [
                ("flagDisable", d.flag_disable),
                ("healthVerification", d.health_verification),
                ("total", d.total),
            ] {
                if let Some(took) = took {
                    m.step(step, took);
                }
            }
        }
    }

    // ---- notifications ---------------------------------------------------------------

    /// Whether this request tells anyone: not a dry run, and past the guard lookup.
    fn notifies(&self) -> bool {
        !self.request.spec.dry_run && self.guard.is_some()
    }

    /// Records "started" as Sending for its receivers; it goes out after the next save,
    /// beside the rest of the rollback.
    fn announce_started(&mut self) {
        if !self.notifies() {
            return;
        }
        let receivers = self.guard().spec.notify.clone();
        let wanted: Vec<_> = notify::receivers(&receivers, NotifyEvent::Started)
            .into_iter()
            .map(|n| (n, NotifyEvent::Started))
            .collect();
        notify::record_sending(&mut self.status.notifications, &wanted);
        self.update_notified();
    }

    fn announce_ending(&mut self, ending: Ending) {
        if !self.notifies() {
            return;
        }
        let receivers = self.guard().spec.notify.clone();
        let wanted = notify::ending_events(&receivers, ending);
        notify::record_sending(&mut self.status.notifications, &wanted);
    }

    fn update_notified(&mut self) {
        let receivers = self.guard().spec.notify.clone();
        let count = notify::receivers(&receivers, NotifyEvent::Started).len();
        let (status, reason, message) =
            notify::notified_condition(&self.status.notifications, count);
        self.set_condition(condition::NOTIFIED, status, reason, message);
    }

    fn job(&self, receiver: &str, event: NotifyEvent) -> Job {
        Job {
            request: self.request.uid().unwrap_or_default(),
            receiver: receiver.to_string(),
            event,
        }
    }

    /// Hands every recorded-but-unsent notification to the outbox (once per process; a
    /// restart sends what was still Sending again, with the same delivery id).
    fn send_notifications(&mut self) {
        // Called after every save: return before copying the request when nothing waits.
        if !self.notifies()
            || !self
                .status
                .notifications
                .iter()
                .any(|r| r.state == DeliveryState::Sending)
        {
            return;
        }
        let mut request = self.request.clone();
        request.status = Some(self.status.clone());
        for record in &self.status.notifications {
            if record.state != DeliveryState::Sending {
                continue;
            }
            let job = self.job(&record.receiver, record.event);
            if self.ctx.outbox.knows(&job) {
                continue;
            }
            let notifier = self
                .guard()
                .spec
                .notify
                .iter()
                .find(|n| n.name == record.receiver)
                .cloned();
            match notifier {
                Some(notifier) => {
                    let notice = notify::request_notice(&request, record.event, now());
                    self.ctx.outbox.send(&request, job, notifier, notice);
                }
                None => tracing::warn!(
                    request = %self.name(),
                    receiver = %record.receiver,
                    "receiver no longer in the guard's spec.notify; not sent"
                ),
            }
        }
    }

    /// Records the outcomes of finished deliveries. Woken by the outbox, possibly before
    /// the controller's cache holds this reconciler's last write: so it reads the request
    /// afresh and writes with its resourceVersion.
    async fn settle_notifications(&mut self) -> Result<(), Error> {
        let uid = self.request.uid().unwrap_or_default();
        let finished = self.ctx.outbox.finished(&uid);
        if finished.is_empty() {
            return Ok(());
        }
        let pending = |status: &RollbackRequestStatus| {
            finished.iter().any(|(job, _, _)| {
                status.notifications.iter().any(|r| {
                    r.receiver == job.receiver
                        && r.event == job.event
                        && r.state == DeliveryState::Sending
                })
            })
        };
        let jobs: Vec<Job> = finished.iter().map(|(job, _, _)| job.clone()).collect();
        let mut fresh_read = false;
        for _ in 0..5 {
            if !pending(&self.status) {
                if fresh_read {
                    self.ctx.outbox.recorded(&jobs);
                    return Ok(());
                }
                // The cache may lag: look at the request itself before concluding.
                if finished.iter().all(|(_, _, recorded)| *recorded) {
                    return Ok(());
                }
            }
            let Some(fresh) = self.requests.get_opt(&self.name()).await? else {
                return Ok(());
            };
            if fresh.uid().as_deref() != Some(uid.as_str()) {
                return Ok(());
            }
            fresh_read = true;
            self.status = fresh.status.clone().unwrap_or_default();
            self.request = fresh;
            if !pending(&self.status) {
                self.ctx.outbox.recorded(&jobs);
                return Ok(());
            }
            let mut failures = Vec::new();
            let mut first_started = None;
            for (job, delivery, _) in &finished {
                let Some(record) = self
                    .status
                    .notifications
                    .iter_mut()
                    .find(|r| r.receiver == job.receiver && r.event == job.event)
                else {
                    continue;
                };
                if record.state != DeliveryState::Sending {
                    continue;
                }
                record.attempts = delivery.attempts;
                record.time = Some(MicroTime(delivery.finished));
                match &delivery.result {
                    Ok(()) => {
                        record.state = DeliveryState::Delivered;
                        record.message.clear();
                        if job.event == NotifyEvent::Started {
                            first_started = Some(
                                first_started.map_or(delivery.finished, |f: jiff::Timestamp| {
                                    f.min(delivery.finished)
                                }),
                            );
                        }
                    }
                    Err(e) => {
                        record.state = DeliveryState::Failed;
                        record.message = e.clone();
                        failures.push((
                            job.receiver.clone(),
                            format!(
                                "{} notification to {:?} ({}) failed after {} attempt(s): {e}",
                                notify::event_word(job.event),
                                job.receiver,
                                notify::channel_word(record.type_),
                                delivery.attempts
                            ),
                        ));
                    }
                }
            }
            let mut notification_took = None;
            if let Some(at) = first_started {
                let took = seconds_between(self.created(), at);
                let durations = self.status.durations.get_or_insert_with(Durations::default);
                if durations.notification.is_none() {
                    durations.notification = Some(took);
                    notification_took = Some(took);
                }
            }
            for (_, failure) in &failures {
                self.record("NotificationFailed", failure.clone());
            }
            if self.guard.is_some() {
                self.update_notified();
                if self.status.phase == Some(RequestPhase::Succeeded) {
                    self.judge_slo();
                }
            }
            self.status.observed_generation = self.request.metadata.generation;
            let patch = json!({
                "metadata": { "resourceVersion": self.request.resource_version() },
                "status": self.status,
            });
            match self
                .requests
                .patch_status(&self.name(), &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(updated) => {
                    self.request = updated;
                    self.ctx.outbox.recorded(&jobs);
                    if let Some(took) = notification_took {
                        self.ctx.metrics.step("notification", took);
                    }
                    for (receiver, failure) in failures {
                        // Related to the receiver's Secret (or ConfigMap): one Event per
                        // receiver, not one series that keeps only the first note.
                        let receiver = self.guard.as_ref().and_then(|g| {
                            g.spec.notify.iter().find(|n| n.name == receiver).cloned()
                        });
                        let related =
                            receiver.map(|n| notify::receiver_reference(&n, &self.namespace));
                        let regarding = self.request.object_ref(&());
                        self.publish(
                            EventType::Warning,
                            "NotificationFailed",
                            failure,
                            regarding,
                            related,
                        );
                    }
                    return Ok(());
                }
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    // ---- failure ---------------------------------------------------------------------

    async fn fail(&mut self, reason: &str, message: String) -> Result<Flow, Error> {
        self.announce_ending(if reason == "HealthCheckFailed" {
            Ending::Unhealthy
        } else {
            Ending::Failed
        });
        self.status.phase = Some(RequestPhase::Failed);
        self.status.message = Some(message.clone());
        self.status.completed_at = Some(MicroTime(now()));
        self.set_condition(condition::FAILED, TRUE, reason, message.clone());
        self.set_condition(condition::COMPLETE, FALSE, reason, message.clone());
        self.record("Failed", message.clone());
        self.event(EventType::Warning, "RollbackFailed", message.clone());
        self.guard_event(
            EventType::Warning,
            "RollbackFailed",
            format!("{}: {message}", self.name()),
        );
        // Every Event exists before the status says the request is over.
        self.flush_events().await;
        self.save().await?;
        self.count_outcome("Failed");
        Ok(Flow::Next)
    }

    // ---- snapshot --------------------------------------------------------------------

    fn flags_config_map(&self) -> String {
        self.guard().spec.flags.config_map_ref.name.clone()
    }

    /// The flags ConfigMap, or why it may not be written: gone, or its owner has not
    /// allowed rollguard to write it (SPEC §5), judged at every read before a write.
    /// Err carries the failure's reason and message.
    async fn get_flags(&self) -> Result<Result<ConfigMap, (&'static str, String)>, Error> {
        let name = self.flags_config_map();
        let guard = self.guard().name_any();
        Ok(match self.config_maps.get_opt(&name).await? {
            None => Err((
                "ConfigMapNotFound",
                format!(
                    "RolloutGuard {guard:?}: spec.flags.configMapRef.name: ConfigMap {name:?} does not exist"
                ),
            )),
            Some(cm) => crate::trust::writable_flags(&cm, "spec.flags.configMapRef.name")
                .map(|()| cm)
                .map_err(|message| {
                    (
                        "ConfigMapNotAllowed",
                        format!("RolloutGuard {guard:?}: {message}; nothing was changed"),
                    )
                }),
        })
    }

    fn selection(&self) -> Selection {
        Selection {
            flags: self.request.spec.flags.clone(),
            force_disable_all: self.request.spec.force_disable_all,
        }
    }

    fn flag_error(&self, e: flags::FlagError) -> String {
        match e {
            flags::FlagError::NotGuarded { .. } => e.to_string(),
            _ => format!("RolloutGuard {:?}: {e}", self.guard().name_any()),
        }
    }

    /// The rollback plan for the current ConfigMap, or why the request cannot run.
    fn plan_rollback(&self, cm: &ConfigMap) -> Result<Plan, String> {
        let data = cm.data.clone().unwrap_or_default();
        flags::plan_disable(
            &self.guard().spec.flags,
            &cm.name_any(),
            &data,
            &self.selection(),
        )
        .map_err(|e| self.flag_error(e))
    }

    /// What this request would write to the ConfigMap now, or why it cannot run.
    async fn plan(&self, cm: &ConfigMap) -> Result<Result<Plan, String>, Error> {
        Ok(match self.request.spec.action {
            RequestAction::Rollback => self.plan_rollback(cm),
            RequestAction::Restore => match self.restore_source().await? {
                Ok((source, changes)) => {
                    let snapshot_data = snapshot::flags_data(&source).unwrap_or_default();
                    let data = cm.data.clone().unwrap_or_default();
                    let spec = &self.guard().spec.flags;
                    flags::plan_restore(spec, &cm.name_any(), &data, &changes, &snapshot_data)
                        .map_err(|e| self.flag_error(e))
                }
                Err(message) => Err(message),
            },
        })
    }

    /// restore: the snapshot to restore from and the changes its rollback made.
    async fn restore_source(&self) -> Result<Result<(Secret, Vec<FlagChange>), String>, Error> {
        let guard = self.guard().name_any();
        let secret = match self
            .status
            .restored_from
            .as_ref()
            .map(|r| r.name.clone())
            .or_else(|| {
                let named = &self.request.spec.snapshot_name;
                (!named.is_empty()).then(|| named.clone())
            }) {
            Some(name) => match self.secrets.get_opt(&name).await? {
                Some(s)
                    if s.type_.as_deref() == Some(SNAPSHOT_SECRET_TYPE)
                        && s.annotations().get(GUARD_LABEL) == Some(&guard) =>
                {
                    s
                }
                Some(_) => {
                    return Ok(Err(format!(
                        "spec.snapshotName: Secret {name:?} is not a snapshot of guard {guard:?}"
                    )));
                }
                None => {
                    return Ok(Err(format!(
                        "spec.snapshotName: snapshot {name:?} does not exist"
                    )));
                }
            },
            None => {
                // The newest rollback that changed a flag: one that found the flags off
                // already (after an earlier rollback) has nothing to give back. Snapshots are
                // found through the requests that took them: the operator may not list Secrets.
                let mut rollbacks: Vec<RollbackRequest> = self
                    .snapshots_taken()
                    .await?
                    .into_iter()
                    .filter(|r| r.spec.action == RequestAction::Rollback)
                    .collect();
                if rollbacks.is_empty() {
                    return Ok(Err(format!(
                        "spec.snapshotName: no rollback of guard {guard:?} that took a snapshot is left (rollguard finds the latest through its RollbackRequest and never lists Secrets); name a snapshot from `kubectl get secrets -n {} -l {GUARD_LABEL}={}`",
                        self.namespace,
                        snapshot::label_value(&guard)
                    )));
                }
                rollbacks.sort_by_key(|r| (r.metadata.creation_timestamp.clone(), r.name_any()));
                for rollback in rollbacks.into_iter().rev() {
                    let status = rollback.status.unwrap_or_default();
                    let changes = status.flags_changed.unwrap_or_default();
                    let Some(taken) = status.snapshot_ref.filter(|_| !changes.is_empty()) else {
                        continue;
                    };
                    match self.secrets.get_opt(&taken.name).await? {
                        Some(secret)
                            if secret.type_.as_deref() == Some(SNAPSHOT_SECRET_TYPE)
                                && secret.annotations().get(GUARD_LABEL) == Some(&guard) =>
                        {
                            return Ok(Ok((secret, changes)));
                        }
                        // Pruned beyond snapshot.retain, or deleted by hand: an older one.
                        _ => continue,
                    }
                }
                return Ok(Err(format!(
                    "spec.snapshotName: no rollback of guard {guard:?} with a snapshot changed a flag, so there is nothing to restore (name one with spec.snapshotName)"
                )));
            }
        };
        let changes = self.changes_of(&secret).await?;
        Ok(Ok((secret, changes)))
    }

    /// What the rollback that took `snapshot` changed: as its request recorded it, or, when
    /// that request is gone (an automatic one is deleted with its guard), what turning every
    /// guarded flag off would have changed in the snapshot. The restore still gives back
    /// only keys whose current value is the one a rollback writes.
    async fn changes_of(&self, snapshot: &Secret) -> Result<Vec<FlagChange>, Error> {
        let taken_by = snapshot.annotations().get(crate::api::REQUEST_LABEL);
        let request = match taken_by {
            Some(name) => self.requests.get_opt(name).await?,
            None => None,
        };
        if let Some(request) = request {
            return Ok(request
                .status
                .and_then(|s| s.flags_changed)
                .unwrap_or_default());
        }
        let data = snapshot::flags_data(snapshot).unwrap_or_default();
        let every_guarded = Selection {
            flags: Vec::new(),
            force_disable_all: false,
        };
        let flags = &self.guard().spec.flags;
        Ok(
            flags::plan_disable(flags, &flags.config_map_ref.name, &data, &every_guarded)
                .map(|plan| plan.changes)
                .unwrap_or_default(),
        )
    }

    async fn snapshot(&mut self) -> Result<Flow, Error> {
        self.accept();
        let cm = match self.get_flags().await? {
            Ok(cm) => cm,
            Err((reason, message)) => return self.fail(reason, message).await,
        };
        // Judge the input before anything is written.
        match self.request.spec.action {
            RequestAction::Rollback => {
                if let Err(message) = self.plan_rollback(&cm) {
                    return self.fail("InvalidFlags", message).await;
                }
            }
            RequestAction::Restore => match self.restore_source().await? {
                Ok((source, _)) => {
                    self.status.restored_from = Some(LocalObjectReference {
                        name: source.name_any(),
                    })
                }
                Err(message) => return self.fail("SnapshotNotFound", message).await,
            },
        }
        let mut included = Vec::new();
        for item in &self.guard().spec.rollback.snapshot.include {
            let found = match item.kind {
                SnapshotKind::ConfigMap => self
                    .config_maps
                    .get_opt(&item.name)
                    .await?
                    .map(Included::ConfigMap),
                SnapshotKind::Secret => {
                    match crate::trust::read_credentials(
                        &self.secrets,
                        &item.name,
                        "spec.rollback.snapshot.include",
                    )
                    .await?
                    {
                        Some(Ok(secret)) => Some(Included::Secret(secret)),
                        Some(Err(message)) => {
                            let message = format!(
                                "RolloutGuard {:?}: {message}; nothing was changed",
                                self.guard().name_any()
                            );
                            return self.fail("SnapshotIncludeRefused", message).await;
                        }
                        None => None,
                    }
                }
            };
            match found {
                Some(object) => included.push(object),
                None => {
                    let message = format!(
                        "RolloutGuard {:?}: spec.rollback.snapshot.include: {:?} {:?} does not exist",
                        self.guard().name_any(),
                        item.kind,
                        item.name
                    );
                    return self.fail("SnapshotIncludeNotFound", message).await;
                }
            }
        }
        let guard_name = self.guard().name_any();
        let name = self.name();
        let secret = snapshot::build(&SnapshotInput {
            namespace: &self.namespace,
            guard: &guard_name,
            request: &name,
            action: action_word(self.request.spec.action),
            flags: &cm,
            included: &included,
        });
        let secret_name = secret.name_any();
        match self.secrets.create(&PostParams::default(), &secret).await {
            Ok(_) => {}
            // Taken before a restart: the same request's snapshot is kept, never retaken.
            Err(e) if is_conflict(&e) => {
                let existing = self.secrets.get(&secret_name).await?;
                if existing.annotations().get(crate::api::REQUEST_LABEL) != Some(&name) {
                    let message = format!(
                        "snapshot Secret {secret_name:?} already exists and belongs to another request"
                    );
                    return self.fail("SnapshotConflict", message).await;
                }
            }
            Err(e) => {
                let Some(answer) = refused(&e) else {
                    return Err(e.into());
                };
                let message = format!(
                    "creating snapshot Secret {secret_name:?}: {answer}; nothing was changed"
                );
                self.set_condition(
                    condition::SNAPSHOT_TAKEN,
                    FALSE,
                    "SnapshotRefused",
                    message.clone(),
                );
                return self.fail("SnapshotRefused", message).await;
            }
        }
        crate::fault::point("snapshot-created", &name).await;

        self.status.snapshot_ref = Some(LocalObjectReference {
            name: secret_name.clone(),
        });
        let message = format!(
            "ConfigMap {:?} (resourceVersion {}) and {} more object(s) saved in Secret {secret_name:?}",
            cm.name_any(),
            cm.resource_version().unwrap_or_default(),
            included.len()
        );
        self.set_condition(
            condition::SNAPSHOT_TAKEN,
            TRUE,
            "SnapshotTaken",
            message.clone(),
        );
        let draining = self.request.spec.action == RequestAction::Rollback
            && self.request.spec.mode == RequestMode::Graceful
            && !self.guard().spec.rollback.hooks.pre_rollback.is_empty();
        self.status.phase = Some(if draining {
            RequestPhase::Draining
        } else {
            RequestPhase::DisablingFlags
        });
        self.record("SnapshotTaken", message.clone());
        self.save().await?;
        self.event(EventType::Normal, "SnapshotTaken", message);
        self.flags_seen = Some(cm);
        Ok(Flow::Next)
    }

    /// The guard's requests that took a snapshot, as the API server has them now.
    async fn snapshots_taken(&self) -> Result<Vec<RollbackRequest>, Error> {
        let guard = self.request.spec.guard_ref.name.clone();
        Ok(self
            .requests
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|r| {
                r.spec.guard_ref.name == guard
                    && r.status.as_ref().is_some_and(|s| s.snapshot_ref.is_some())
            })
            .collect())
    }

    /// Deletes the guard's finished requests that `spec.rollback.history` no longer keeps,
    /// each with its snapshot Secret (by the name the operator gives it). Runs as a request
    /// finishes, so the history stays bounded. Best effort: a failure never fails a rollback.
    async fn prune_history(&self) {
        let guard = self.guard();
        let policy = &guard.spec.rollback.history;
        let Ok(all) = self.requests.list(&ListParams::default()).await else {
            return;
        };
        let mine: Vec<_> = all
            .items
            .into_iter()
            .filter(|r| r.spec.guard_ref.name == guard.name_any())
            .collect();
        let records = mine
            .iter()
            .map(|r| history::Record {
                name: r.name_any(),
                created: r.metadata.creation_timestamp.as_ref().map(|t| t.0),
                finished: step::is_terminal(r.status.as_ref().and_then(|s| s.phase)),
            })
            .collect();
        let status = guard.status.clone().unwrap_or_default();
        let protected: std::collections::BTreeSet<&str> = [
            status.active_rollback.as_deref(),
            status.last_rollback.as_ref().map(|r| r.name.as_str()),
            status.last_restore.as_ref().map(|r| r.name.as_str()),
        ]
        .into_iter()
        .flatten()
        .collect();
        let expired = history::expired(
            records,
            usize::try_from(policy.keep).unwrap_or(1).max(1),
            policy.keep_for.to_std().unwrap_or(Duration::MAX),
            now(),
            &protected,
        );
        for name in expired {
            let snapshot = mine
                .iter()
                .find(|r| r.name_any() == name)
                .and_then(|r| r.status.as_ref()?.snapshot_ref.as_ref())
                .map(|s| s.name.clone())
                .filter(|s| *s == snapshot::secret_name(&guard.name_any(), &name));
            if let Err(e) = self.requests.delete(&name, &Default::default()).await {
                tracing::warn!(request = %name, error = %e, "could not delete an expired RollbackRequest");
                continue;
            }
            tracing::info!(request = %name, guard = %guard.name_any(), "deleted a RollbackRequest past spec.rollback.history");
            if let Some(secret) = snapshot {
                match self.secrets.delete(&secret, &Default::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => {
                        tracing::warn!(snapshot = %secret, error = %e, "could not delete an expired request's snapshot")
                    }
                }
            }
        }
    }

    /// Keeps the snapshots of the newest `snapshot.retain` requests of the guard that took
    /// one, deleting the others by name (the operator may not list Secrets). A snapshot
    /// whose request was deleted is the user's to delete. Best effort: a failure here never
    /// fails a rollback.
    async fn prune_snapshots(&self) {
        let guard = self.guard();
        let Ok(taken) = self.snapshots_taken().await else {
            return;
        };
        let mine: Vec<_> = taken
            .into_iter()
            .filter_map(|r| {
                // Only the name this operator gives a request's snapshot: a status edited by
                // hand never makes it delete another Secret.
                let expected = snapshot::secret_name(&guard.name_any(), &r.name_any());
                let created = r.metadata.creation_timestamp.map(|t| t.0);
                let name = r.status?.snapshot_ref?.name;
                (name == expected).then_some((name, created))
            })
            .collect();
        let retain = usize::try_from(guard.spec.rollback.snapshot.retain)
            .unwrap_or(1)
            .max(1);
        for name in snapshot::to_prune(mine, retain) {
            match self.secrets.delete(&name, &Default::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => tracing::warn!(snapshot = %name, error = %e, "could not prune snapshot"),
            }
        }
    }

    // ---- hooks -----------------------------------------------------------------------

    async fn call_hook(&mut self, stage: HookStage, index: usize) -> Result<Flow, Error> {
        let hooks = &self.guard().spec.rollback.hooks;
        let hook = match stage {
            HookStage::PreRollback => hooks.pre_rollback[index].clone(),
            HookStage::PostRollback => hooks.post_rollback[index].clone(),
        };
        // A call recorded as under way by an operator that then stopped is made again, with
        // the same Idempotency-Key: the receiver can tell a repeat from a new call.
        let again = self
            .status
            .hooks
            .iter()
            .position(|h| h.stage == stage && h.index as usize == index);
        let slot = match again {
            Some(slot) => {
                self.record(
                    &format!("{stage:?}Hook"),
                    format!(
                        "calling {} again: the operator stopped during the last call (same Idempotency-Key)",
                        hook.url
                    ),
                );
                slot
            }
            None => {
                self.status.hooks.push(HookCall {
                    stage,
                    index: index as u32,
                    url: hook.url.clone(),
                    outcome: HookOutcome::Calling,
                    message: String::new(),
                });
                self.status.hooks.len() - 1
            }
        };
        self.save().await?;
        crate::fault::point(
            &format!("{}-hook-recorded", hook_stage_word(stage)),
            &self.name(),
        )
        .await;

        let flags = self
            .status
            .flags_changed
            .iter()
            .flatten()
            .map(|c| c.name.clone())
            .collect::<Vec<_>>();
        let flags = if flags.is_empty() && stage == HookStage::PreRollback {
            flags::selected_flags(&self.guard().spec.flags, &self.selection())
                .map(|f| f.into_iter().map(String::from).collect())
                .unwrap_or_default()
        } else {
            flags
        };
        let name = self.name();
        let guard_name = self.guard().name_any();
        let payload = HookPayload {
            stage,
            namespace: &self.namespace,
            guard: &guard_name,
            request: &name,
            requested_by: &self.request.spec.requested_by,
            reason: &self.request.spec.reason,
            flags: &flags,
        };
        let key = format!(
            "{}-{stage:?}-{index}",
            self.request.uid().unwrap_or_default()
        );
        let result = hooks::call(&self.ctx.egress, &hook, &key, &payload).await;
        crate::fault::point(&format!("{}-hook-called", hook_stage_word(stage)), &name).await;

        let record = &mut self.status.hooks[slot];
        let (outcome, message) = match &result {
            Ok(()) => (
                HookOutcome::Succeeded,
                format!("POST {} succeeded", hook.url),
            ),
            Err(e) => (HookOutcome::Failed, e.clone()),
        };
        record.outcome = outcome;
        record.message = message.clone();
        self.record(&format!("{stage:?}Hook"), message.clone());
        self.save().await?;
        if result.is_err() {
            self.event(
                EventType::Warning,
                "HookFailed",
                format!("{message}; the rollback goes on"),
            );
        }
        Ok(Flow::Next)
    }

    // ---- flags -----------------------------------------------------------------------

    async fn dry_run(&mut self) -> Result<Flow, Error> {
        self.accept();
        let cm = match self.get_flags().await? {
            Ok(cm) => cm,
            Err((reason, message)) => return self.fail(reason, message).await,
        };
        let plan = match self.plan(&cm).await? {
            Ok(plan) => plan,
            Err(message) => return self.fail("InvalidFlags", message).await,
        };
        let names: Vec<_> = plan.changes.iter().map(|c| c.name.as_str()).collect();
        let message = format!(
            "dry run: would change {} flag(s){}{}; nothing was changed",
            names.len(),
            if names.is_empty() { "" } else { ": " },
            names.join(", ")
        );
        self.status.flags_changed = Some(plan.changes);
        self.status.conflicts = plan.conflicts;
        self.status.phase = Some(RequestPhase::Succeeded);
        self.status.message = Some(message.clone());
        self.status.completed_at = Some(MicroTime(now()));
        self.set_condition(condition::COMPLETE, TRUE, "DryRun", message.clone());
        self.record("DryRun", message.clone());
        self.event(EventType::Normal, "RollbackSucceeded", message);
        self.flush_events().await;
        self.save().await?;
        Ok(Flow::Next)
    }

    async fn write_flags(&mut self) -> Result<Flow, Error> {
        let uid = self.request.uid().unwrap_or_default();
        let name = self.name();
        // A write retried against the fresh object on conflict, so concurrent edits of other
        // keys are never lost.
        let (plan_changes, conflicts, written, cm) = loop {
            let cm = match self.flags_seen.take() {
                Some(cm) => cm,
                None => match self.get_flags().await? {
                    Ok(cm) => cm,
                    Err((reason, message)) => return self.fail(reason, message).await,
                },
            };
            let writing = conditions::status_of(&self.status.conditions, condition::FLAGS_DISABLED)
                == Some(UNKNOWN);
            if writing && cm.annotations().get(LAST_CHANGE_ANNOTATION) == Some(&uid) {
                // Written before a restart: record it, do not write again.
                let changes = self.status.flags_changed.clone().unwrap_or_default();
                break (changes, self.status.conflicts.clone(), true, cm);
            }
            if self.request.spec.action == RequestAction::Restore
                && !self.still_holds_slot().await?
            {
                // An emergency took the guard after this restore began: writing the flags
                // back on now would undo it. The next step ends this request Superseded.
                return Ok(Flow::Next);
            }
            let plan = match self.plan(&cm).await? {
                Ok(plan) => plan,
                Err(message) => return self.fail("InvalidFlags", message).await,
            };
            // An emergency that took the slot from another request writes even when every
            // flag is already off (the annotation alone): a superseded restore about to
            // write then meets a conflict, looks at the slot again and stops.
            if plan.is_empty() && !self.took_over() {
                break (plan.changes, plan.conflicts, false, cm);
            }
            // The plan is recorded before the write, so a restart after the write still
            // knows what changed.
            self.status.flags_changed = Some(plan.changes.clone());
            self.status.conflicts = plan.conflicts.clone();
            self.set_condition(
                condition::FLAGS_DISABLED,
                UNKNOWN,
                "Writing",
                format!("writing {} flag(s)", plan.changes.len()),
            );
            self.save().await?;
            crate::fault::pause("before-flags-write", &name).await;
            let patch = json!({
                "metadata": {
                    "resourceVersion": cm.resource_version(),
                    "annotations": { LAST_CHANGE_ANNOTATION: uid },
                },
                "data": plan.writes,
            });
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            match self
                .config_maps
                .patch(&cm.name_any(), &params, &Patch::Merge(&patch))
                .await
            {
                Ok(updated) => {
                    crate::fault::point("flags-written", &name).await;
                    let written = !plan.is_empty();
                    break (plan.changes, plan.conflicts, written, updated);
                }
                Err(e) if is_conflict(&e) => continue,
                // Forbidden (RBAC, an admission policy), invalid, immutable or gone: asking
                // again changes nothing. Nothing was written.
                Err(e) => {
                    let Some(answer) = refused(&e) else {
                        return Err(e.into());
                    };
                    let message = format!(
                        "writing ConfigMap {:?}: {answer}; no flag was changed",
                        cm.name_any()
                    );
                    self.status.flags_changed = Some(Vec::new());
                    self.status.conflicts = Vec::new();
                    self.set_condition(
                        condition::FLAGS_DISABLED,
                        FALSE,
                        "WriteRefused",
                        message.clone(),
                    );
                    return self.fail("WriteRefused", message).await;
                }
            }
        };

        let at = now();
        self.status.flags_changed = Some(plan_changes.clone());
        self.status.conflicts = conflicts.clone();
        self.status.flags_changed_at = Some(MicroTime(at));
        let since_created = seconds_between(self.created(), at);
        self.status
            .durations
            .get_or_insert_with(Durations::default)
            .flag_disable = Some(since_created);
        let names: Vec<_> = plan_changes.iter().map(|c| c.name.as_str()).collect();
        let restore = self.request.spec.action == RequestAction::Restore;
        let (reason, message) = match (restore, names.is_empty()) {
            (false, true) => (
                "AlreadyOff",
                "every selected flag was already off; nothing to change".to_string(),
            ),
            (false, false) => (
                "FlagsDisabled",
                format!(
                    "turned off {} flag(s) in ConfigMap {:?}: {}",
                    names.len(),
                    cm.name_any(),
                    names.join(", ")
                ),
            ),
            (true, _) => (
                "FlagsRestored",
                format!(
                    "restored {} flag(s) in ConfigMap {:?}{}{}",
                    names.len(),
                    cm.name_any(),
                    if names.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", names.join(", "))
                    },
                    if conflicts.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; left alone, edited since the rollback: {}",
                            conflicts
                                .iter()
                                .map(|c| c.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                ),
            ),
        };
        self.set_condition(condition::FLAGS_DISABLED, TRUE, reason, message.clone());
        if !restore {
            self.status.phase = Some(RequestPhase::Verifying);
        }
        self.record(reason, message.clone());
        let by_state = self.disabled_by_state(&plan_changes);
        if !restore && let Some(note) = &by_state {
            self.record("FlagsDisabledByState", note.clone());
        }
        self.save().await?;
        if !restore {
            self.event(EventType::Normal, "FlagsDisabled", message);
            if let Some(note) = by_state {
                self.event(EventType::Warning, "FlagsDisabledByState", note);
            }
        }
        if written && self.guard().spec.flags.refresh_pods {
            // Recorded with the next step's status write; a refresh is best effort and
            // harmless to repeat.
            match self.refresh_pods(&cm).await {
                Ok(refreshed) => self.record(
                    "PodsRefreshed",
                    format!(
                        "annotated {refreshed} pod(s) that mount ConfigMap {:?}",
                        cm.name_any()
                    ),
                ),
                Err(problem) => {
                    let message = format!(
                        "spec.flags.refreshPods: {problem}; pods that mount ConfigMap {:?} see the change only after the kubelet's sync (about a minute). The operator needs list and patch on pods (chart value rbac.refreshPods=true)",
                        cm.name_any()
                    );
                    self.record("PodRefreshFailed", message.clone());
                    self.event(EventType::Warning, "PodRefreshFailed", message);
                }
            }
        }
        Ok(Flow::Next)
    }

    /// forceDisableAll on flagd boolean flags with no `false` variant turns them off with
    /// `state: DISABLED`, which flagd answers with the application's code default: said in
    /// the timeline and a Warning Event, naming them. From the record, so it holds after a
    /// restart too.
    fn disabled_by_state(&self, changes: &[FlagChange]) -> Option<String> {
        if self.guard().spec.flags.format != crate::api::guard::FlagFormat::Flagd {
            return None;
        }
        let names = flags::disabled_by_state(changes);
        (!names.is_empty()).then(|| {
            format!(
                "forceDisableAll: {} ha{} no false variant; set state: DISABLED, so flagd answers the application's code default (which may be true)",
                names.join(", "),
                if names.len() == 1 { "s" } else { "ve" }
            )
        })
    }

    /// Whether this request still holds the guard's slot, asked of the API server (after
    /// the flags ConfigMap was read, so an emergency that took the slot since is seen).
    async fn still_holds_slot(&mut self) -> Result<bool, Error> {
        self.guard = self
            .guards
            .get_opt(&self.request.spec.guard_ref.name)
            .await?;
        Ok(self
            .guard
            .as_ref()
            .and_then(|g| g.status.as_ref())
            .and_then(|s| s.active_rollback.as_deref())
            == Some(self.name().as_str()))
    }

    /// This request is an emergency that took the slot from another request.
    fn took_over(&self) -> bool {
        step::is_emergency(&self.request.spec)
            && self.status.timeline.iter().any(|t| t.step == "Superseding")
    }

    /// Annotates pods that mount the flags ConfigMap as a volume, so the kubelet refreshes
    /// the projected file now rather than after its sync period. Best effort.
    async fn refresh_pods(&self, cm: &ConfigMap) -> Result<usize, String> {
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let list = pods
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("listing pods: {e}"))?;
        let mut refreshed = 0;
        let mut failed = Vec::new();
        let cm_name = cm.name_any();
        let revision = cm.resource_version().unwrap_or_default();
        for pod in list.items {
            let mounts = pod
                .spec
                .as_ref()
                .and_then(|s| s.volumes.as_ref())
                .is_some_and(|vs| {
                    vs.iter()
                        .any(|v| v.config_map.as_ref().is_some_and(|c| c.name == cm_name))
                });
            if mounts {
                let patch =
                    json!({"metadata": {"annotations": {FLAGS_REVISION_ANNOTATION: revision}}});
                if let Err(e) = pods
                    .patch(
                        &pod.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                {
                    tracing::warn!(pod = %pod.name_any(), error = %e, "could not refresh pod");
                    failed.push(format!("annotating pod {:?}: {e}", pod.name_any()));
                } else {
                    refreshed += 1;
                }
            }
        }
        if failed.is_empty() {
            Ok(refreshed)
        } else {
            Err(failed.join("; "))
        }
    }

    // ---- verification ----------------------------------------------------------------

    async fn verify(&mut self) -> Result<Flow, Error> {
        let health = self.guard().spec.health.clone();
        let timeout = health.timeout.to_std().unwrap_or(Duration::from_secs(120));
        let started = self
            .status
            .flags_changed_at
            .as_ref()
            .map(|t| t.0)
            .unwrap_or_else(now);
        let problems = self.health_problems().await?;
        let at = now();
        if problems.is_empty() {
            let since_created = seconds_between(self.created(), at);
            self.status
                .durations
                .get_or_insert_with(Durations::default)
                .health_verification = Some(since_created);
            let message = format!(
                "healthy {:.1}s after the flags changed",
                seconds_between(started, at)
            );
            self.set_condition(condition::HEALTH_VERIFIED, TRUE, "Healthy", message.clone());
            self.record("HealthVerified", message.clone());
            self.save().await?;
            self.event(EventType::Normal, "HealthVerified", message);
            crate::fault::point("verified", &self.name()).await;
            return Ok(Flow::Next);
        }
        let summary = problems.join("; ");
        if at.duration_since(started).unsigned_abs() >= timeout {
            let message = format!(
                "not healthy within spec.health.timeout ({}): {summary}",
                health.timeout
            );
            self.set_condition(
                condition::HEALTH_VERIFIED,
                FALSE,
                "Unhealthy",
                message.clone(),
            );
            self.event(EventType::Warning, "HealthCheckFailed", message.clone());
            return self.fail("HealthCheckFailed", message).await;
        }
        let before = conditions::get(&self.status.conditions, condition::HEALTH_VERIFIED)
            .map(|c| c.message.clone());
        if before.as_deref() != Some(summary.as_str()) {
            self.set_condition(condition::HEALTH_VERIFIED, UNKNOWN, "Verifying", summary);
            self.save().await?;
        }
        Ok(Flow::Requeue(Duration::from_millis(500)))
    }

    /// What still stands between the guard and healthy (empty: healthy).
    async fn health_problems(&self) -> Result<Vec<String>, Error> {
        let guard = self.guard().clone();
        let mut problems = Vec::new();
        for w in &guard.spec.health.workloads {
            let verdict = match w.kind {
                WorkloadKind::Deployment => {
                    match Api::<Deployment>::namespaced(self.ctx.client.clone(), &self.namespace)
                        .get_opt(&w.name)
                        .await?
                    {
                        Some(d) => crate::health::deployment_ready(&d),
                        None => Err(format!("Deployment {:?} does not exist", w.name)),
                    }
                }
                WorkloadKind::StatefulSet => {
                    match Api::<StatefulSet>::namespaced(self.ctx.client.clone(), &self.namespace)
                        .get_opt(&w.name)
                        .await?
                    {
                        Some(s) => crate::health::statefulset_ready(&s),
                        None => Err(format!("StatefulSet {:?} does not exist", w.name)),
                    }
                }
            };
            problems.extend(verdict.err());
        }
        for check in &guard.spec.health.http {
            problems.extend(
                crate::health::check_http(
                    &self.ctx.egress,
                    &check.url,
                    check.expect_status,
                    Duration::from_secs(5),
                )
                .await
                .err(),
            );
        }
        let rollback_triggers: Vec<_> = guard
            .spec
            .triggers
            .iter()
            .filter(|t| t.action == TriggerAction::Rollback)
            .collect();
        if rollback_triggers.is_empty() {
            return Ok(problems);
        }
        let target = match Target::of(
            &guard,
            self.ctx.default_prometheus_url.as_deref(),
            &self.secrets,
            self.ctx.prometheus.egress(),
        )
        .await?
        {
            Ok(target) => target,
            Err(problem) => {
                problems.push(problem);
                return Ok(problems);
            }
        };
        let Target {
            address,
            timeout,
            auth,
        } = target;
        // Judged on the time since the flags changed (see `triggers::window`); a range holds
        // two samples when it spans two guard intervals (an interval no shorter than the
        // scrape interval).
        let since = self
            .status
            .flags_changed_at
            .as_ref()
            .map_or(Duration::ZERO, |t| now().duration_since(t.0).unsigned_abs());
        let floor = 2 * guard
            .spec
            .interval
            .to_std()
            .unwrap_or(Duration::from_secs(15));
        for trigger in rollback_triggers {
            let query = match triggers::window::verification_query(&trigger.query, since, floor) {
                Ok(Verification::Query(query)) => query,
                Ok(Verification::WaitFor(_)) => {
                    problems.push(format!(
                        "trigger {:?} is judged once its ranges hold only samples taken after the flags changed ({}s after the change: two intervals, or its range if shorter)",
                        trigger.name,
                        floor.as_secs()
                    ));
                    continue;
                }
                Err(e) => {
                    problems.push(format!(
                        "spec.triggers[{:?}].query: does not parse: {e}",
                        trigger.name
                    ));
                    continue;
                }
            };
            let current = self
                .ctx
                .prometheus
                .instant(&address, &query, timeout, auth.as_ref())
                .await;
            let baseline = match &trigger.baseline {
                Some(b) => self
                    .ctx
                    .prometheus
                    .instant(&address, &b.query, timeout, auth.as_ref())
                    .await
                    .map(Some),
                None => Ok(None),
            };
            match (current, baseline) {
                (Ok(current), Ok(baseline)) => {
                    let reading =
                        triggers::evaluate(trigger, &current, baseline.as_deref().unwrap_or(&[]));
                    if reading.breaching {
                        let value = reading
                            .value
                            .map_or("no data".to_string(), |v| v.to_string());
                        problems.push(format!(
                            "trigger {:?} still breaching (value {value})",
                            trigger.name
                        ));
                    }
                }
                (Err(e), _) | (_, Err(e)) => problems.push(format!(
                    "trigger {:?} could not be evaluated: {e}",
                    trigger.name
                )),
            }
        }
        Ok(problems)
    }

    // ---- completion ------------------------------------------------------------------

    /// The SLO outcome from the durations so far. A "started" notification still out when
    /// its target has passed (or finally failed) misses `notification` already.
    fn judge_slo(&mut self) {
        let slo = self.guard().spec.slo.clone();
        let durations = self.status.durations.clone().unwrap_or_default();
        let mut missed: Vec<String> = slo
            .judge(&durations)
            .into_iter()
            .filter(|v| v.met == Some(false))
            .map(|v| v.name.to_string())
            .collect();
        let started: Vec<_> = self
            .status
            .notifications
            .iter()
            .filter(|r| r.event == NotifyEvent::Started)
            .collect();
        let target = slo.notification.to_std().ok();
        let late = durations.notification.is_none()
            && !started.is_empty()
            && (started.iter().all(|r| r.state == DeliveryState::Failed)
                || target.is_some_and(|t| now().duration_since(self.created()).unsigned_abs() > t));
        if late && !missed.iter().any(|m| m == "notification") {
            missed.push("notification".into());
        }
        self.status.slo = Some(SloOutcome {
            met: missed.is_empty(),
            missed,
        });
    }

    async fn succeed(&mut self) -> Result<Flow, Error> {
        let at = now();
        let since_created = seconds_between(self.created(), at);
        let durations = self.status.durations.get_or_insert_with(Durations::default);
        durations.total = Some(since_created);
        self.judge_slo();
        self.status.phase = Some(RequestPhase::Succeeded);
        self.status.completed_at = Some(MicroTime(at));
        self.announce_ending(Ending::Succeeded);
        let changed = self.status.flags_changed.as_ref().map_or(0, Vec::len);
        let restore = self.request.spec.action == RequestAction::Restore;
        let message = if restore {
            format!(
                "restored {changed} flag(s) from snapshot {:?}; {} conflict(s)",
                self.status
                    .restored_from
                    .as_ref()
                    .map(|r| r.name.as_str())
                    .unwrap_or_default(),
                self.status.conflicts.len()
            )
        } else {
            format!(
                "rolled back {changed} flag(s) in {:.3}s (flags off after {:.3}s)",
                self.status
                    .durations
                    .as_ref()
                    .and_then(|d| d.total)
                    .unwrap_or_default(),
                self.status
                    .durations
                    .as_ref()
                    .and_then(|d| d.flag_disable)
                    .unwrap_or_default()
            )
        };
        self.status.message = Some(message.clone());
        self.set_condition(condition::COMPLETE, TRUE, "Succeeded", message.clone());
        self.record("Succeeded", message.clone());
        let reason = if restore {
            "RestoreSucceeded"
        } else {
            "RollbackSucceeded"
        };
        self.event(EventType::Normal, reason, message.clone());
        self.guard_event(
            EventType::Normal,
            reason,
            format!("{}: {message}", self.name()),
        );
        self.flush_events().await;
        self.save().await?;
        self.count_outcome("Succeeded");
        // Off the flag path: old snapshots go once this one has done its job.
        self.prune_snapshots().await;
        Ok(Flow::Next)
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
