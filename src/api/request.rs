//! `RollbackRequest`: one rollback or restore, and its incident record (SPEC §1).

use super::LocalObjectReference;
use super::guard::{NotifierType, NotifyEvent};
use super::schema::dns_subdomain_or_empty;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// One rollback or restore of a guard's flags. Its spec is the request (immutable, an
/// audit record); its status is the incident record.
// kube-derive takes one `printcolumn(...)` per column, which clippy reads as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "rollguard.dev",
    version = "v1alpha1",
    kind = "RollbackRequest",
    namespaced,
    status = "RollbackRequestStatus",
    shortname = "rbr",
    category = "rollguard",
    doc = "RollbackRequest is one rollback or restore of a RolloutGuard's flags; its status is the incident record.",
    printcolumn(name = "Guard", type_ = "string", json_path = ".spec.guardRef.name"),
    printcolumn(name = "Action", type_ = "string", json_path = ".spec.action"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Requested By",
        type_ = "string",
        json_path = ".spec.requestedBy"
    ),
    printcolumn(
        name = "Duration",
        type_ = "string",
        json_path = ".status.duration",
        description = "Time from creation to the end (Succeeded, Failed or Superseded), e.g. 640ms, 38.9s, 2m3s"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = super::schema::kubernetes_formats)]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable: a RollbackRequest is an audit record; create a new request instead"))]
#[x_kube(validation = Rule::new("self.action == 'restore' || self.snapshotName == ''").message("spec.snapshotName is only allowed with action: restore"))]
#[x_kube(validation = Rule::new("self.action == 'rollback' || !self.forceDisableAll").message("spec.forceDisableAll is only allowed with action: rollback"))]
pub struct RollbackRequestSpec {
    /// The RolloutGuard, in the same namespace.
    pub guard_ref: LocalObjectReference,

    /// `rollback` (flags off) or `restore` (flags back from a snapshot).
    #[serde(default)]
    pub action: RequestAction,

    /// Who asks. An admission policy checks it against the authenticated user.
    #[schemars(length(min = 1, max = 253))]
    pub requested_by: String,

    /// Why; shown in notifications and the incident report.
    #[serde(default)]
    #[schemars(length(max = 1024))]
    pub reason: String,

    /// `graceful` (drain hooks, then flags) or `immediate` (no hooks, no waiting).
    #[serde(default)]
    pub mode: RequestMode,

    /// Subset of the guard's guarded flags; empty = all of them.
    #[serde(default)]
    #[schemars(length(max = 100))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    #[x_kube(validation = Rule::new("self.all(f, size(f) > 0 && size(f) <= 253)").message("spec.flags: every flag name must be 1 to 253 characters"))]
    pub flags: Vec<String>,

    /// Also turn off every other boolean flag in the ConfigMap.
    #[serde(default)]
    pub force_disable_all: bool,

    /// restore only: the snapshot Secret to restore from; empty = the guard's latest rollback snapshot.
    #[serde(default)]
    #[schemars(length(max = 253))]
    #[x_kube(validation = dns_subdomain_or_empty("spec.snapshotName"))]
    pub snapshot_name: String,

    /// Compute and record the change; touch nothing.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum RequestAction {
    #[default]
    Rollback,
    Restore,
}

#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum RequestMode {
    /// Drain hooks, then flags, then verification and post hooks.
    #[default]
    Graceful,
    /// Emergency: no hooks, no waiting.
    Immediate,
}

#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum RequestPhase {
    #[default]
    Pending,
    Snapshotting,
    Draining,
    DisablingFlags,
    Verifying,
    Succeeded,
    Failed,
    Superseded,
}

/// The incident record, written only by the operator: the phase, each step's completion
/// (conditions and timeline), the snapshot taken, the flags changed, hook calls and
/// notifications, durations and the SLO outcome.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = super::schema::kubernetes_formats)]
#[schemars(transform = super::schema::unobserved_by_default)]
pub struct RollbackRequestStatus {
    /// The spec generation this status was written for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Pending, Snapshotting, Draining, DisablingFlags, Verifying, Succeeded, Failed or Superseded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RequestPhase>,

    /// SnapshotTaken, FlagsDisabled, Notified, HealthVerified, Complete, Failed; Reconciling
    /// and Stalled as kstatus (Flux) reads them.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The snapshot this request took before changing anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_ref: Option<LocalObjectReference>,

    /// restore: the rollback snapshot the flags were restored from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<LocalObjectReference>,

    /// Hook calls, recorded before each call and after it. A call interrupted by an operator restart is made again with the same `Idempotency-Key` (at least once).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<HookCall>,

    /// Notifications of this request, one per receiver and moment: recorded as `Sending`
    /// before the first attempt and again with the outcome, so none is sent twice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["receiver".into(), "event".into()]))]
    pub notifications: Vec<NotificationRecord>,

    /// Each flag changed: its value before and after (empty: nothing needed changing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags_changed: Option<Vec<FlagChange>>,

    /// restore: keys edited since the rollback, left alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<FlagConflict>,

    /// Automatic rollbacks: the trigger that fired and its value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggered_by: Option<TriggeredBy>,

    /// When the operator accepted the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<MicroTime>,

    /// An emergency: the restores of its guard that were waiting when it took the guard and
    /// were asked for no later than it. They end `Superseded` instead of undoing it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overtook: Vec<String>,

    /// When the flags ConfigMap was changed (or found already changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags_changed_at: Option<MicroTime>,

    /// When the request Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<MicroTime>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durations: Option<Durations>,

    /// From creation to `completedAt`, for people (the DURATION column): `640ms`, `38.9s`,
    /// `2m3s`. Set for every ending (Succeeded, Failed, Superseded); `durations` has the seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,

    /// The SLO outcome, judged from `durations` against the guard's `spec.slo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<SloOutcome>,

    /// Every step, in order, with its time.
    #[serde(default)]
    pub timeline: Vec<TimelineEntry>,

    /// Human-readable summary of the outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl RollbackRequestStatus {
    /// Sets `duration` from `completedAt` and the request's creation time (unset while the
    /// request is under way).
    pub fn fill_duration(&mut self, created: jiff::Timestamp) {
        self.duration = self
            .completed_at
            .as_ref()
            .map(|done| super::human::duration_between(created, done.0));
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum HookStage {
    PreRollback,
    PostRollback,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum HookOutcome {
    /// Recorded before the call; still there after a restart means the outcome is unknown.
    Calling,
    Succeeded,
    Failed,
    /// The operator restarted during the call and did not repeat it (written by operators
    /// before hooks were repeated; no longer written).
    Unknown,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub struct HookCall {
    /// `preRollback` (drain) or `postRollback` (resume).
    pub stage: HookStage,
    /// Position in the stage's list.
    pub index: u32,
    /// The URL called.
    pub url: String,
    /// Calling (recorded before the call, and repeated after a restart), Succeeded, Failed, or Unknown (an older operator restarted during the call).
    pub outcome: HookOutcome,
    /// What went wrong, for a failed call.
    #[serde(default)]
    pub message: String,
}

/// One notification of a request to one receiver (`spec.notify[].name` of the guard).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationRecord {
    /// The receiver (`spec.notify[].name` of the guard).
    pub receiver: String,
    /// Its channel.
    #[serde(rename = "type")]
    pub type_: NotifierType,
    /// The moment told.
    pub event: NotifyEvent,
    /// Sending (recorded before the first attempt), Delivered or Failed.
    pub state: DeliveryState,
    /// Attempts made (retries included).
    #[serde(default)]
    pub attempts: u32,
    /// When the outcome was known (delivered or finally failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<MicroTime>,
    /// The last error, for a failed delivery.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum DeliveryState {
    /// Recorded before the first attempt; after a restart it is sent again with the same
    /// delivery id (receivers can drop the duplicate), never recorded twice.
    Sending,
    Delivered,
    /// Every attempt failed; a `NotificationFailed` Event says why.
    Failed,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub struct FlagChange {
    /// The flag.
    pub name: String,
    /// Its value before.
    pub from: String,
    /// Its value after.
    pub to: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlagConflict {
    /// The flag left alone.
    pub name: String,
    /// The value the rollback wrote.
    pub expected: String,
    /// The value found at restore time.
    pub found: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
pub struct TriggeredBy {
    /// The trigger that fired (`spec.triggers[].name`).
    pub trigger: String,
    /// Its value when it fired (alert triggers: the number of matching firing alerts).
    pub value: Option<f64>,
    /// Alert triggers: the alert that fired it (the oldest matching one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<TriggeringAlert>,
}

/// The alert behind an alert-triggered rollback, as Alertmanager described it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggeringAlert {
    /// Its `alertname` label.
    pub name: String,
    /// All its labels.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Alertmanager's fingerprint of its labels.
    pub fingerprint: String,
    /// When it started firing (RFC 3339, as Alertmanager sent it).
    pub starts_at: String,
    /// The link to the rule that raised it.
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
}

/// Seconds, measured from the request's creationTimestamp.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Durations {
    /// Until the flags ConfigMap was changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag_disable: Option<f64>,
    /// Until no instance served the flags' on-variant any more, as `spec.health.propagation`
    /// of the guard tells it (an upper bound; only with a propagation check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag_effective: Option<f64>,
    /// Until the first successful "started" notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<f64>,
    /// Until health was verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_verification: Option<f64>,
    /// Until the request Succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<f64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub struct SloOutcome {
    /// Every measured SLO target was met.
    pub met: bool,
    /// Names of the SLO targets missed (flagDisable, flagEffective, notification, healthVerification, total).
    #[serde(default)]
    pub missed: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
pub struct TimelineEntry {
    /// When.
    pub time: MicroTime,
    /// The step: Queued, Accepted, SnapshotTaken, PreRollbackHook, FlagsDisabled (AlreadyOff, FlagsRestored), PodsRefreshed, FlagsEffective, HealthVerified, PostRollbackHook, Succeeded, Failed, NotificationFailed, DryRun.
    pub step: String,
    /// What happened, for humans.
    #[serde(default)]
    pub message: String,
}

/// Succeeded, Failed or Superseded: the request has finished.
pub fn is_terminal(phase: Option<RequestPhase>) -> bool {
    matches!(
        phase,
        Some(RequestPhase::Succeeded | RequestPhase::Failed | RequestPhase::Superseded)
    )
}
