//! The operator's own metrics (Prometheus text format on `/metrics`) and its probes
//! (`/healthz`: the process is alive; `/readyz`: the leader's caches have synced, or the
//! process stands by for the Lease).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RollbackLabels {
    pub namespace: String,
    pub guard: String,
    pub outcome: String,
    pub cause: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabels {
    pub namespace: String,
    pub guard: String,
    pub trigger: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    pub channel: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
    pub reason: String,
}

pub struct Metrics {
    registry: Registry,
    pub rollbacks: Family<RollbackLabels, Counter>,
    pub step_duration: Family<StepLabels, Histogram>,
    pub trigger_value: Family<TriggerLabels, Gauge<f64, AtomicU64>>,
    pub trigger_breaching: Family<TriggerLabels, Gauge>,
    pub trigger_threshold: Family<TriggerLabels, Gauge<f64, AtomicU64>>,
    pub prometheus_queries: Family<OutcomeLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub notifications: Family<NotificationLabels, Counter>,
    pub leader: Gauge,
    ready: AtomicBool,
    standing_by: AtomicBool,
    /// The trigger series set, by (namespace, guard): those of removed triggers and
    /// deleted guards are dropped rather than reporting their last value for ever.
    trigger_series: Mutex<HashMap<(String, String), BTreeSet<String>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rollguard");
        let rollbacks = Family::<RollbackLabels, Counter>::default();
        registry.register(
            "rollbacks",
            "RollbackRequests finished, by outcome and cause (manual or automatic)",
            rollbacks.clone(),
        );
        // Seconds from the request's creation; buckets span the SLO defaults (10 s, 2 min, 5 min).
        let step_duration = Family::<StepLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
            ])
        });
        registry.register(
            "rollback_step_duration_seconds",
            "Rollback steps, seconds from the request's creation",
            step_duration.clone(),
        );
        let trigger_value = Family::<TriggerLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "trigger_value",
            "The worst series' value of each trigger at its last good evaluation",
            trigger_value.clone(),
        );
        let trigger_breaching = Family::<TriggerLabels, Gauge>::default();
        registry.register(
            "trigger_breaching",
            "1 while a trigger is breaching",
            trigger_breaching.clone(),
        );
        let trigger_threshold = Family::<TriggerLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "trigger_threshold",
            "The threshold each trigger is compared with: a value for above/below, a relative change from the baseline for increaseAbove/decreaseBelow",
            trigger_threshold.clone(),
        );
        let prometheus_queries = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "prometheus_queries",
            "Queries sent to Prometheus, by outcome",
            prometheus_queries.clone(),
        );
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that failed and were retried",
            reconcile_errors.clone(),
        );
        let notifications = Family::<NotificationLabels, Counter>::default();
        registry.register(
            "notifications",
            "Notification deliveries finished, by channel and outcome (retries included in one)",
            notifications.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this process is the one that acts",
            leader.clone(),
        );
        Self {
            registry,
            rollbacks,
            step_duration,
            trigger_value,
            trigger_breaching,
            trigger_threshold,
            prometheus_queries,
            reconcile_errors,
            notifications,
            leader,
            ready: AtomicBool::new(false),
            standing_by: AtomicBool::new(false),
            trigger_series: Mutex::default(),
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// A guard's trigger gauges from its status; the series of triggers it no longer has go.
    pub fn set_triggers(
        &self,
        namespace: &str,
        guard: &str,
        triggers: &[crate::api::guard::TriggerStatus],
    ) {
        let labels = |trigger: &str| TriggerLabels {
            namespace: namespace.to_string(),
            guard: guard.to_string(),
            trigger: trigger.to_string(),
        };
        for t in triggers {
            let labels = labels(&t.name);
            match t.value {
                Some(v) => {
                    self.trigger_value.get_or_create(&labels).set(v);
                }
                None => {
                    self.trigger_value.remove(&labels);
                }
            }
            match t.threshold {
                Some(v) => {
                    self.trigger_threshold.get_or_create(&labels).set(v);
                }
                None => {
                    self.trigger_threshold.remove(&labels);
                }
            }
            self.trigger_breaching
                .get_or_create(&labels)
                .set(i64::from(t.breaching));
        }
        let now: BTreeSet<String> = triggers.iter().map(|t| t.name.clone()).collect();
        let key = (namespace.to_string(), guard.to_string());
        let mut series = self.trigger_series.lock().expect("not poisoned");
        let before = series.insert(key, now.clone()).unwrap_or_default();
        for gone in before.difference(&now) {
            self.remove_trigger(&labels(gone));
        }
    }

    /// Drops every trigger series of the guards for which `exists` says false.
    pub fn forget_deleted_guards(&self, exists: impl Fn(&str, &str) -> bool) {
        let mut series = self.trigger_series.lock().expect("not poisoned");
        series.retain(|(namespace, guard), triggers| {
            if exists(namespace, guard) {
                return true;
            }
            for trigger in triggers.iter() {
                self.remove_trigger(&TriggerLabels {
                    namespace: namespace.clone(),
                    guard: guard.clone(),
                    trigger: trigger.clone(),
                });
            }
            false
        });
    }

    fn remove_trigger(&self, labels: &TriggerLabels) {
        self.trigger_value.remove(labels);
        self.trigger_threshold.remove(labels);
        self.trigger_breaching.remove(labels);
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// A standby is ready: it is in the election and takes over when the leader goes.
    pub fn set_standing_by(&self, standing_by: bool) {
        self.standing_by.store(standing_by, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) || self.standing_by.load(Ordering::SeqCst)
    }

    /// Counts a failed reconcile of `kind` in `rollguard_reconcile_errors_total`.
    pub fn reconcile_error(&self, kind: &str, error: &crate::Error) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                kind: kind.into(),
                reason: error.reason().into(),
            })
            .inc();
    }

    pub fn step(&self, step: &str, seconds: f64) {
        self.step_duration
            .get_or_create(&StepLabels { step: step.into() })
            .observe(seconds);
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until the process ends.
pub async fn serve(addr: std::net::SocketAddr, metrics: Arc<Metrics>) -> anyhow::Result<()> {
    use axum::http::{StatusCode, header};
    use axum::{Router, routing::get};
    let for_metrics = metrics.clone();
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let body = for_metrics.encode();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = metrics.is_ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet")
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_encode_with_their_names_and_labels() {
        let m = Metrics::new();
        m.rollbacks
            .get_or_create(&RollbackLabels {
                namespace: "shop".into(),
                guard: "phase4".into(),
                outcome: "Succeeded".into(),
                cause: "manual".into(),
            })
            .inc();
        m.step("flagDisable", 0.04);
        let text = m.encode();
        assert!(text.contains(r#"rollguard_rollbacks_total{namespace="shop",guard="phase4",outcome="Succeeded",cause="manual"} 1"#), "{text}");
        assert!(
            text.contains(
                r#"rollguard_rollback_step_duration_seconds_bucket{le="0.05",step="flagDisable"} 1"#
            ),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn series_of_removed_triggers_and_deleted_guards_are_dropped() {
        let metrics = Metrics::new();
        let trigger = |name: &str, value: f64| crate::api::guard::TriggerStatus {
            name: name.into(),
            value: Some(value),
            threshold: Some(1.0),
            breaching: value > 1.0,
            ..Default::default()
        };
        metrics.set_triggers(
            "shop",
            "g",
            &[trigger("errors", 2.0), trigger("latency", 0.5)],
        );
        metrics.set_triggers("shop", "other", &[trigger("errors", 0.1)]);
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"rollguard_trigger_breaching{namespace="shop",guard="g",trigger="errors"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"trigger="latency""#));

        // "latency" is removed from the guard's spec.
        metrics.set_triggers("shop", "g", &[trigger("errors", 2.0)]);
        let text = metrics.encode();
        assert!(!text.contains(r#"trigger="latency""#), "{text}");
        assert!(text.contains(r#"guard="g",trigger="errors""#));

        // Guard "g" is deleted.
        metrics.forget_deleted_guards(|_, guard| guard != "g");
        let text = metrics.encode();
        assert!(!text.contains(r#"guard="g""#), "{text}");
        assert!(text.contains(r#"guard="other",trigger="errors""#));
    }
}
