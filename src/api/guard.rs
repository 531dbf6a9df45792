//! `RolloutGuard`: the policy of one guarded rollout (SPEC §1).

use super::schema::{GoDuration, dns_label, dns_subdomain, duration_at_least, duration_at_most};
use super::{LocalObjectReference, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// The policy of one guarded rollout: the feature flags it controls, the Prometheus
/// queries that are its rollback triggers, how health is verified and who is told.
// kube-derive takes one `printcolumn(...)` per column, which clippy reads as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "rollguard.dev",
    version = "v1alpha1",
    kind = "RolloutGuard",
    namespaced,
    status = "RolloutGuardStatus",
    shortname = "rg",
    category = "rollguard",
    doc = "RolloutGuard guards a feature rollout: the flags it controls, the Prometheus triggers that roll it back, health checks and notifications.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Healthy",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Healthy\")].status"
    ),
    printcolumn(
        name = "Breaching",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"TriggersBreaching\")].status"
    ),
    printcolumn(
        name = "Last Rollback",
        type_ = "string",
        json_path = ".status.lastRollback.name"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = super::schema::kubernetes_formats)]
pub struct RolloutGuardSpec {
    /// true: no evaluation and no automatic rollback; manual RollbackRequests still run.
    #[serde(default)]
    pub suspend: bool,

    /// The feature-flag ConfigMap this guard controls.
    pub flags: FlagsSpec,

    /// Where the trigger queries go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusSpec>,

    /// Pull mode of alert triggers: the Alertmanager whose active alerts are read each
    /// interval. Without it, alert triggers take the alerts Alertmanager pushes to
    /// `rollguard run --webhook-addr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alertmanager: Option<AlertmanagerSpec>,

    /// Evaluation period of the triggers (Go duration, at least 1s).
    #[serde(default = "defaults::interval")]
    #[x_kube(validation = duration_at_least("spec.interval", "1s"))]
    #[x_kube(validation = duration_at_most("spec.interval", "1h"))]
    pub interval: GoDuration,

    /// The Prometheus queries that are this guard's rollback triggers.
    #[serde(default)]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub triggers: Vec<Trigger>,

    /// What a firing trigger does, and how a rollback runs.
    #[serde(default)]
    pub rollback: RollbackPolicy,

    /// How a rollback is verified.
    #[serde(default)]
    pub health: HealthSpec,

    /// Who is told. Kubernetes Events are always written.
    #[serde(default)]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub notify: Vec<Notifier>,

    /// Targets each rollback is measured against.
    #[serde(default)]
    pub slo: SloSpec,
}

impl RolloutGuardSpec {
    /// Every duration of the spec with the path a user would look for. The CRD schema
    /// rejects malformed durations; a guard that bypassed it (an older CRD, a direct etcd
    /// write) must not have an unparsable `for` or `cooldown` read as 0.
    pub fn durations(&self) -> Vec<(String, &GoDuration)> {
        let mut all = vec![("spec.interval".to_string(), &self.interval)];
        if let Some(p) = &self.prometheus {
            all.push(("spec.prometheus.timeout".into(), &p.timeout));
        }
        if let Some(a) = &self.alertmanager {
            all.push(("spec.alertmanager.timeout".into(), &a.timeout));
        }
        for t in &self.triggers {
            all.push((format!("spec.triggers[{}].for", t.name), &t.for_));
        }
        all.push(("spec.rollback.cooldown".into(), &self.rollback.cooldown));
        all.push((
            "spec.rollback.history.keepFor".into(),
            &self.rollback.history.keep_for,
        ));
        let hooks = &self.rollback.hooks;
        for (list, hooks) in [
            ("preRollback", &hooks.pre_rollback),
            ("postRollback", &hooks.post_rollback),
        ] {
            for (i, h) in hooks.iter().enumerate() {
                all.push((
                    format!("spec.rollback.hooks.{list}[{i}].timeout"),
                    &h.timeout,
                ));
            }
        }
        all.push(("spec.health.timeout".into(), &self.health.timeout));
        all.push((
            "spec.health.stabilityWindow".into(),
            &self.health.stability_window,
        ));
        let slo = &self.slo;
        for (name, d) in [
            ("flagDisable", &slo.flag_disable),
            ("flagEffective", &slo.flag_effective),
            ("notification", &slo.notification),
            ("healthVerification", &slo.health_verification),
            ("total", &slo.total),
            ("stability", &slo.stability),
        ] {
            all.push((format!("spec.slo.{name}"), d));
        }
        all
    }

    /// The first duration that does not parse, as a message naming the field and the value.
    pub fn duration_problem(&self) -> Option<String> {
        self.durations()
            .into_iter()
            .find_map(|(field, d)| d.to_std().err().map(|e| format!("{field}: {e}")))
    }
}

mod defaults {
    use super::GoDuration;
    pub fn interval() -> GoDuration {
        GoDuration::new("15s")
    }
    pub fn off_value() -> String {
        "false".into()
    }
    pub fn off_variant() -> String {
        "off".into()
    }
    pub fn prometheus_timeout() -> GoDuration {
        GoDuration::new("5s")
    }
    pub fn zero() -> GoDuration {
        GoDuration::new("0s")
    }
    pub fn cooldown() -> GoDuration {
        GoDuration::new("30m")
    }
    pub fn retain() -> i32 {
        10
    }
    pub fn history_keep() -> i32 {
        50
    }
    pub fn history_keep_for() -> GoDuration {
        GoDuration::new("720h")
    }
    pub fn hook_timeout() -> GoDuration {
        GoDuration::new("30s")
    }
    pub fn health_timeout() -> GoDuration {
        GoDuration::new("2m")
    }
    pub fn stability_window() -> GoDuration {
        GoDuration::new("10m")
    }
    pub fn expect_status() -> i32 {
        200
    }
    pub fn ten_seconds() -> GoDuration {
        GoDuration::new("10s")
    }
    pub fn five_minutes() -> GoDuration {
        GoDuration::new("5m")
    }
    pub fn fifteen_minutes() -> GoDuration {
        GoDuration::new("15m")
    }
}

/// How the flags are stored in the ConfigMap.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum FlagFormat {
    /// One data key per flag, its value the flag's state (`"true"` / `"false"`).
    #[default]
    Plain,
    /// One data key holds a flagd flag-definition JSON document.
    Flagd,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.format != 'flagd' || has(self.key)").message("spec.flags.key is required when spec.flags.format is flagd: name the ConfigMap data key that holds the flagd JSON document"))]
#[x_kube(validation = Rule::new("self.format == 'flagd' || !has(self.key)").message("spec.flags.key is only used with spec.flags.format: flagd; remove it for plain flags"))]
pub struct FlagsSpec {
    /// The ConfigMap that holds the flags, in the guard's namespace.
    pub config_map_ref: LocalObjectReference,

    /// `plain` (one key per flag) or `flagd` (a flagd JSON document under `key`).
    #[serde(default)]
    pub format: FlagFormat,

    /// flagd only: the data key that holds the flagd JSON document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub key: Option<String>,

    /// The flags this guard controls (ConfigMap keys for plain, flag keys for flagd).
    #[schemars(length(min = 1, max = 100))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    #[x_kube(validation = Rule::new("self.all(f, size(f) > 0 && size(f) <= 253)").message("spec.flags.guarded: every flag name must be 1 to 253 characters"))]
    pub guarded: Vec<String>,

    /// plain: the value written on rollback.
    #[serde(default = "defaults::off_value")]
    #[schemars(length(max = 1024))]
    pub off_value: String,

    /// flagd: the variant made `defaultVariant` on rollback.
    #[serde(default = "defaults::off_variant")]
    #[schemars(length(min = 1, max = 253))]
    pub off_variant: String,

    /// After a change, annotate the pods that mount this ConfigMap as a volume so the
    /// kubelet refreshes the file now instead of after its sync period (~2 minutes).
    #[serde(default)]
    pub refresh_pods: bool,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusSpec {
    /// Base URL of the Prometheus HTTP API; default: the operator's `--prometheus-url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#\\\\s]+(/[^?#\\\\s]*)?$')").message(Message::Expression("'spec.prometheus.address \"' + self + '\" is not an http:// or https:// URL'".into())))]
    pub address: Option<String>,

    /// A Secret in the guard's namespace with key `token` (bearer) or `username` and `password` (basic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret_ref: Option<LocalObjectReference>,

    /// Timeout of each query.
    #[serde(default = "defaults::prometheus_timeout")]
    #[x_kube(validation = duration_at_least("spec.prometheus.timeout", "100ms"))]
    #[x_kube(validation = duration_at_most("spec.prometheus.timeout", "5m"))]
    pub timeout: GoDuration,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerSpec {
    /// Base URL of the Alertmanager API (`GET <address>/api/v2/alerts` is read each interval).
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#\\\\s]+(/[^?#\\\\s]*)?$')").message(Message::Expression("'spec.alertmanager.address \"' + self + '\" is not an http:// or https:// URL'".into())))]
    pub address: String,

    /// A Secret in the guard's namespace with key `token` (bearer) or `username` and `password` (basic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret_ref: Option<LocalObjectReference>,

    /// Timeout of each read (never longer than the guard's interval).
    #[serde(default = "defaults::prometheus_timeout")]
    #[x_kube(validation = duration_at_least("spec.alertmanager.timeout", "100ms"))]
    #[x_kube(validation = duration_at_most("spec.alertmanager.timeout", "5m"))]
    pub timeout: GoDuration,
}

/// How a trigger treats an empty query result.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum NoDataPolicy {
    /// An empty result is not a breach.
    #[default]
    Ignore,
    /// An empty result is a breach (the metric disappearing is itself a symptom).
    Breach,
}

/// What a firing trigger does.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum TriggerAction {
    /// Roll back (when `spec.rollback.mode` is automatic).
    #[default]
    Rollback,
    /// Only notify and write Events.
    Alert,
}

/// One rollback trigger: a PromQL instant query and exactly one comparison, or an alert
/// (from Alertmanager) that breaches while it fires.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.query) != has(self.alert)").message(Message::Expression("'spec.triggers[' + self.name + ']: set exactly one of query (with a comparison) and alert'".into())))]
#[x_kube(validation = Rule::new("!has(self.alert) || [has(self.above), has(self.below), has(self.increaseAbove), has(self.decreaseBelow), has(self.baseline), has(self.noData)].all(c, !c)").message(Message::Expression("'spec.triggers[' + self.name + ']: an alert trigger breaches while a matching alert fires; above, below, increaseAbove, decreaseBelow, baseline and noData belong to query triggers'".into())))]
#[x_kube(validation = Rule::new("!has(self.query) || [has(self.above), has(self.below), has(self.increaseAbove), has(self.decreaseBelow)].filter(c, c).size() == 1").message(Message::Expression("'spec.triggers[' + self.name + ']: set exactly one of above, below, increaseAbove, decreaseBelow'".into())))]
#[x_kube(validation = Rule::new("has(self.baseline) == (has(self.increaseAbove) || has(self.decreaseBelow))").message(Message::Expression("'spec.triggers[' + self.name + '].baseline: required with increaseAbove or decreaseBelow, and only with them'".into())))]
pub struct Trigger {
    /// Unique within the guard (DNS-1123 label).
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = dns_label("spec.triggers[].name"))]
    pub name: String,

    /// PromQL instant query; a vector with several series breaches if any series does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub query: Option<String>,

    /// Instead of `query`: breaches while an alert whose labels equal every matcher is firing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<AlertMatch>,

    /// Breach when the value is greater than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,

    /// Breach when the value is less than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,

    /// Breach when (value - baseline) / baseline is greater than this (0.05 = 5 % worse).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub increase_above: Option<f64>,

    /// Breach when (baseline - value) / baseline is greater than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decrease_below: Option<f64>,

    /// The query the relative comparisons are measured against, evaluated at the same time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Baseline>,

    /// The breach must hold continuously this long before the trigger fires (0s = at once).
    #[serde(default = "defaults::zero", rename = "for")]
    #[x_kube(validation = duration_at_most("spec.triggers[].for", "24h"))]
    pub for_: GoDuration,

    /// Query triggers: `ignore` (default) or `breach`, what an empty result means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_data: Option<NoDataPolicy>,

    /// `rollback` or `alert`.
    #[serde(default)]
    pub action: TriggerAction,
}

/// Which alerts an alert trigger watches.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AlertMatch {
    /// Label name → value; an alert matches when each of its labels named here equals the
    /// value (e.g. `alertname: HighErrorRate`).
    #[schemars(extend("minProperties" = 1, "maxProperties" = 16, "additionalProperties" = {"type": "string", "maxLength": 1024}))]
    #[x_kube(validation = Rule::new("self.all(k, size(k) > 0 && size(k) <= 256 && !k.startsWith('__'))").message("spec.triggers[].alert.matchers: a label name must be 1 to 256 characters and must not start with \"__\" (reserved)"))]
    pub matchers: std::collections::BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Baseline {
    /// PromQL instant query for the baseline, e.g. the same metric `offset 1d`.
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,
}

/// What a firing rollback trigger does.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum RollbackMode {
    /// A firing trigger creates a RollbackRequest.
    #[default]
    Automatic,
    /// A firing trigger only alerts; people decide.
    Manual,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RollbackPolicy {
    /// `automatic` or `manual`.
    #[serde(default)]
    pub mode: RollbackMode,

    /// No automatic rollback within this time after the last one.
    #[serde(default = "defaults::cooldown")]
    #[x_kube(validation = duration_at_most("spec.rollback.cooldown", "168h"))]
    pub cooldown: GoDuration,

    /// Called in graceful mode: before the flags change, and after verification.
    #[serde(default)]
    pub hooks: Hooks,

    /// What is captured before anything changes, and how many snapshots are kept.
    #[serde(default)]
    pub snapshot: SnapshotPolicy,

    /// How long finished RollbackRequests of this guard (the incident records) are kept.
    #[serde(default)]
    pub history: HistoryPolicy,
}

impl Default for RollbackPolicy {
    fn default() -> Self {
        Self {
            mode: RollbackMode::default(),
            cooldown: defaults::cooldown(),
            hooks: Hooks::default(),
            snapshot: SnapshotPolicy::default(),
            history: HistoryPolicy::default(),
        }
    }
}

/// Finished RollbackRequests of a guard are deleted (with their snapshot Secrets) once they
/// are neither among the newest `keep` nor younger than `keepFor`. Requests in flight, and
/// the guard's last rollback and last restore, are always kept.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HistoryPolicy {
    /// The newest finished requests kept whatever their age.
    #[serde(default = "defaults::history_keep")]
    #[schemars(range(min = 1, max = 10000))]
    pub keep: i32,

    /// Finished requests younger than this are kept whatever their number (0s: by number only).
    #[serde(default = "defaults::history_keep_for")]
    #[x_kube(validation = duration_at_most("spec.rollback.history.keepFor", "87600h"))]
    pub keep_for: GoDuration,
}

impl Default for HistoryPolicy {
    fn default() -> Self {
        Self {
            keep: defaults::history_keep(),
            keep_for: defaults::history_keep_for(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Hooks {
    /// Called before the flags change (drain in-flight work).
    #[serde(default)]
    #[schemars(length(max = 8))]
    pub pre_rollback: Vec<Hook>,
    /// Called after health verification (resume).
    #[serde(default)]
    #[schemars(length(max = 8))]
    pub post_rollback: Vec<Hook>,
}

/// An HTTP endpoint called with a POST and a JSON body naming the guard, request and flags.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Hook {
    /// `http://` or `https://` URL called with a POST.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#\\\\s]+(/[^\\\\s]*)?$')").message(Message::Expression("'hook url \"' + self + '\" is not an http:// or https:// URL'".into())))]
    pub url: String,

    /// The call counts as failed after this long; the rollback goes on.
    #[serde(default = "defaults::hook_timeout")]
    #[x_kube(validation = duration_at_least("spec.rollback.hooks[].timeout", "100ms"))]
    #[x_kube(validation = duration_at_most("spec.rollback.hooks[].timeout", "10m"))]
    pub timeout: GoDuration,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotPolicy {
    /// Extra objects captured with the flags ConfigMap, in the guard's namespace.
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub include: Vec<ObjectReference>,

    /// Snapshots kept per guard; older ones are deleted.
    #[serde(default = "defaults::retain")]
    #[schemars(range(min = 1, max = 1000))]
    pub retain: i32,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        Self {
            include: Vec::new(),
            retain: defaults::retain(),
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HealthSpec {
    /// Verification must pass within this.
    #[serde(default = "defaults::health_timeout")]
    #[x_kube(validation = duration_at_least("spec.health.timeout", "1s"))]
    #[x_kube(validation = duration_at_most("spec.health.timeout", "1h"))]
    pub timeout: GoDuration,

    /// Must be Available with all replicas ready.
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub workloads: Vec<WorkloadReference>,

    /// HTTP GETs that must answer with `expectStatus`.
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub http: Vec<HttpCheck>,

    /// After verification, triggers must stay quiet this long for the guard to be Stable.
    #[serde(default = "defaults::stability_window")]
    #[x_kube(validation = duration_at_most("spec.health.stabilityWindow", "24h"))]
    pub stability_window: GoDuration,

    /// When the applications stopped serving the rolled-back flags' on-variant: verification
    /// waits until this query says no instance serves it (`flagEffective`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation: Option<Propagation>,
}

/// The propagation check: a PromQL query over the applications' flag-evaluation telemetry
/// (OpenTelemetry feature-flag semantic conventions, as OpenFeature SDK hooks export them).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
pub struct Propagation {
    /// PromQL instant query that is empty or 0 once no instance serves the on-variant of the
    /// request's flags. `$FLAGS` in its strings stands for the flags the request changed, as
    /// a regex alternation (each name regex-escaped), e.g.
    /// `sum(rate(feature_flag_evaluations_total{feature_flag_key=~"$FLAGS",feature_flag_result_variant!="off"}[30s]))`.
    /// Its ranges are shortened to two guard intervals (README: "Checking that a rollback
    /// took effect").
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,
}

impl Default for HealthSpec {
    fn default() -> Self {
        Self {
            timeout: defaults::health_timeout(),
            workloads: Vec::new(),
            http: Vec::new(),
            stability_window: defaults::stability_window(),
            propagation: None,
        }
    }
}

/// Kinds of workload the health check understands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadReference {
    /// `Deployment` or `StatefulSet`.
    pub kind: WorkloadKind,
    /// In the guard's namespace.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = dns_subdomain("spec.health.workloads[].name"))]
    pub name: String,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpCheck {
    /// `http://` or `https://` URL checked with a GET.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#\\\\s]+(/[^\\\\s]*)?$')").message(Message::Expression("'spec.health.http[].url \"' + self + '\" is not an http:// or https:// URL'".into())))]
    pub url: String,
    /// The HTTP status that counts as healthy.
    #[serde(default = "defaults::expect_status")]
    #[schemars(range(min = 100, max = 599))]
    pub expect_status: i32,
}

/// Notification channels.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum NotifierType {
    /// Slack incoming webhook; Secret key `url`.
    Slack,
    /// JSON webhook signed per Standard Webhooks; Secret keys `url`, `signingKey` (keys of at
    /// least 32 bytes, `whsec_<base64>` or raw; several for rotation).
    Webhook,
    /// SMTP; Secret keys `smtpUrl`, `from`, `to` (comma-separated).
    Email,
    /// The ConfigMap `rollguard-status` in the guard's namespace; no Secret.
    InApp,
    /// PagerDuty Events API v2; Secret key `routingKey` (the integration key), optional
    /// `url` (default `https://events.pagerduty.com/v2/enqueue`) and `reportUrl`. A
    /// rollback's `started`, `failed` and `unhealthy` trigger one alert per request, its
    /// `stable` resolves it.
    #[serde(rename = "pagerduty")]
    PagerDuty,
    /// Microsoft Teams Workflows webhook posting an Adaptive Card; Secret key `url`,
    /// optional `reportUrl`.
    Teams,
}

/// The moments a notifier can be told about.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum NotifyEvent {
    Started,
    Completed,
    Failed,
    Unhealthy,
    Drift,
    TriggerFiring,
    /// The guard is `Stable` after a rollback (its triggers stayed quiet for
    /// `health.stabilityWindow`); told once per rollback.
    Stable,
}

impl NotifyEvent {
    pub const ALL: [NotifyEvent; 7] = [
        NotifyEvent::Started,
        NotifyEvent::Completed,
        NotifyEvent::Failed,
        NotifyEvent::Unhealthy,
        NotifyEvent::Drift,
        NotifyEvent::TriggerFiring,
        NotifyEvent::Stable,
    ];
    /// The default `on` of every receiver but PagerDuty: every moment but `stable`, which
    /// came later and is told only to receivers that list it.
    pub const DEFAULT: [NotifyEvent; 6] = [
        NotifyEvent::Started,
        NotifyEvent::Completed,
        NotifyEvent::Failed,
        NotifyEvent::Unhealthy,
        NotifyEvent::Drift,
        NotifyEvent::TriggerFiring,
    ];
    /// What a PagerDuty receiver takes, and its default: the moments that trigger a
    /// rollback's alert and the one that resolves it.
    pub const PAGERDUTY: [NotifyEvent; 4] = [
        NotifyEvent::Started,
        NotifyEvent::Failed,
        NotifyEvent::Unhealthy,
        NotifyEvent::Stable,
    ];
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.on) && has(self.__true__))").message(Message::Expression("'spec.notify[' + self.name + ']: on is set twice (an unquoted on: key reaches the API as true:); keep one'".into())))]
#[x_kube(validation = Rule::new("self.type == 'inApp' || has(self.secretRef)").message(Message::Expression("'spec.notify[' + self.name + '].secretRef: required for type ' + self.type".into())))]
#[x_kube(validation = Rule::new("self.type != 'pagerduty' || ((!has(self.on) || self.on.all(e, e in ['started', 'failed', 'unhealthy', 'stable'])) && (!has(self.__true__) || self.__true__.all(e, e in ['started', 'failed', 'unhealthy', 'stable'])))").message(Message::Expression("'spec.notify[' + self.name + '].on: a pagerduty receiver takes started, failed, unhealthy (they trigger the alert) and stable (it resolves it)'".into())))]
pub struct Notifier {
    /// Unique within the guard (DNS-1123 label).
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = dns_label("spec.notify[].name"))]
    pub name: String,

    /// `slack`, `webhook`, `email`, `inApp`, `pagerduty` or `teams`.
    #[serde(rename = "type")]
    pub type_: NotifierType,

    /// Secret in the guard's namespace with the channel's keys (not for `inApp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,

    /// Which moments to send; default: all of them but `stable` (`pagerduty`: started,
    /// failed, unhealthy and stable, the only ones it takes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 7))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub on: Option<Vec<NotifyEvent>>,

    /// `on` as YAML 1.1 parsers (kubectl, Argo CD, Flux) read an unquoted `on:` key: they
    /// turn it into `true:`. Accepted so the natural manifest works; prefer `on`.
    #[serde(default, rename = "true", skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 7))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub on_yaml11: Option<Vec<NotifyEvent>>,
}

impl Notifier {
    /// The moments this notifier is told about.
    pub fn events(&self) -> Vec<NotifyEvent> {
        self.on
            .clone()
            .or_else(|| self.on_yaml11.clone())
            .unwrap_or_else(|| match self.type_ {
                NotifierType::PagerDuty => NotifyEvent::PAGERDUTY.to_vec(),
                _ => NotifyEvent::DEFAULT.to_vec(),
            })
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SloSpec {
    /// Request created → flags ConfigMap changed.
    #[serde(default = "defaults::ten_seconds")]
    #[x_kube(validation = duration_at_least("spec.slo.flagDisable", "1ms"))]
    pub flag_disable: GoDuration,
    /// Request created → no instance serves the on-variant any more (measured only with
    /// `spec.health.propagation`).
    #[serde(default = "defaults::ten_seconds")]
    #[x_kube(validation = duration_at_least("spec.slo.flagEffective", "1ms"))]
    pub flag_effective: GoDuration,
    /// Request created → first "started" notification delivered.
    #[serde(default = "defaults::ten_seconds")]
    #[x_kube(validation = duration_at_least("spec.slo.notification", "1ms"))]
    pub notification: GoDuration,
    /// Flags changed → health verified.
    #[serde(default = "defaults::health_timeout")]
    #[x_kube(validation = duration_at_least("spec.slo.healthVerification", "1ms"))]
    pub health_verification: GoDuration,
    /// Request created → rollback complete.
    #[serde(default = "defaults::five_minutes")]
    #[x_kube(validation = duration_at_least("spec.slo.total", "1ms"))]
    pub total: GoDuration,
    /// Request created → guard Stable.
    #[serde(default = "defaults::fifteen_minutes")]
    #[x_kube(validation = duration_at_least("spec.slo.stability", "1ms"))]
    pub stability: GoDuration,
}

impl Default for SloSpec {
    fn default() -> Self {
        Self {
            flag_disable: defaults::ten_seconds(),
            flag_effective: defaults::ten_seconds(),
            notification: defaults::ten_seconds(),
            health_verification: defaults::health_timeout(),
            total: defaults::five_minutes(),
            stability: defaults::fifteen_minutes(),
        }
    }
}

/// The guard's lifecycle as `kubectl get rg` shows it.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum GuardPhase {
    #[default]
    Monitoring,
    Breaching,
    RollingBack,
    RolledBack,
    Suspended,
    Degraded,
    Invalid,
}

/// What the operator observed, written only by the operator: the phase, the conditions
/// (Ready, Healthy, TriggersBreaching, …), each trigger's last value against its threshold,
/// and the rollback in flight and the last one.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = super::schema::kubernetes_formats)]
#[schemars(transform = super::schema::unobserved_by_default)]
pub struct RolloutGuardStatus {
    /// The spec generation this status was judged for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Monitoring, Breaching, RollingBack, RolledBack, Suspended, Degraded or Invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<GuardPhase>,

    /// Ready, Healthy, TriggersBreaching, RolledBack, FlagsDrifted, PrometheusReachable, Stable;
    /// Reconciling and Stalled as kstatus (Flux) reads them.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The evaluation this status was written by: the time its values (trigger values,
    /// baselines) were read. Written at once on a transition, otherwise at most once a minute;
    /// the operator's metrics carry the live values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_evaluation_time: Option<Time>,

    /// Each trigger's last evaluation.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub triggers: Vec<TriggerStatus>,

    /// Name of the RollbackRequest in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_rollback: Option<String>,

    /// The last rollback that finished, and how.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rollback: Option<LastRollback>,

    /// The last successful restore; a restore after the last rollback ends `RolledBack`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restore: Option<LastRollback>,

    /// Since when no trigger has been breaching (for `Stable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_since: Option<Time>,

    /// Notices of the guard's own moments (`triggerFiring`, `drift`, `stable`), recorded
    /// before they are sent; each stays until its delivery has finished, so an operator
    /// restart sends it again with the same id (receivers drop the duplicate).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_notices: Vec<PendingNotice>,

    /// The rollback whose `stable` moment has been recorded for the receivers: each
    /// rollback's stability is told once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_notified: Option<String>,
}

/// A notice of a guard's moment on its way to one receiver.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingNotice {
    /// The receiver (`spec.notify[].name`).
    pub receiver: String,
    /// `triggerFiring`, `drift` or `stable`.
    pub event: NotifyEvent,
    /// The delivery id: the same on every attempt and after a restart.
    pub id: String,
    /// When the moment was noticed (RFC 3339).
    pub time: String,
    /// One line: what happened.
    pub message: String,
    /// The trigger, for `triggerFiring`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<FiringTrigger>,
    /// The rollback (RollbackRequest) the guard is stable after, for `stable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<String>,
}

/// The trigger of a `triggerFiring` notice, as it stood when it fired.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
pub struct FiringTrigger {
    pub name: String,
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    /// `rollback` or `alert`.
    pub action: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerStatus {
    /// The trigger (`spec.triggers[].name`).
    pub name: String,
    /// The worst series' value at the last good evaluation.
    #[serde(default)]
    pub value: Option<f64>,
    /// The threshold compared against: the value itself for `above`/`below`; for
    /// `increaseAbove`/`decreaseBelow` the relative change from the baseline (0.5 = 50 %).
    #[serde(default)]
    pub threshold: Option<f64>,
    /// The baseline query's value (relative triggers).
    #[serde(default)]
    pub baseline: Option<f64>,
    /// Labels of the worst series.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Whether the last good evaluation breached.
    #[serde(default)]
    pub breaching: bool,
    /// Start of the current continuous breach; persisted so a restart keeps the `for` window.
    #[serde(default)]
    pub breaching_since: Option<Time>,
    /// Why the last evaluation failed (query error, timeout, unreachable); cleared by a good one.
    #[serde(default)]
    pub last_error: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastRollback {
    /// The RollbackRequest.
    pub name: String,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    /// Outcome of the request: Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Rollbacks: whether it turned the guarded flags off, also when it then Failed its
    /// health verification (the flags stay off then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags_disabled: Option<bool>,
}
