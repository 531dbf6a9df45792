//! The operator's own metrics on `/metrics` and its probes (`/healthz`: the process is
//! alive; `/readyz`: the leader's caches have synced, or the process stands by for the Lease).
//!
//! `/metrics` speaks the format the scraper asks for in `Accept`: OpenMetrics 1.0.0 for
//! `application/openmetrics-text` (what Prometheus prefers), else the classic Prometheus text
//! format 0.0.4 (`curl`, `promtool check metrics`, older scrapers). Both encodings are
//! prometheus-client's own.

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
pub struct GuardLabels {
    pub namespace: String,
    pub guard: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub reason: String,
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
    pub guard_evaluations: Family<GuardLabels, Counter>,
    pub guard_status_writes: Family<WriteLabels, Counter>,
    pub prometheus_queries: Family<OutcomeLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub notifications: Family<NotificationLabels, Counter>,
    pub evaluation_delay: Histogram,
    /// Posts to `/v1/alertmanager`, by outcome (accepted, unauthorized, malformed, tooLarge, notLeader).
    pub alert_webhook_requests: Family<OutcomeLabels, Counter>,
    /// Alerts of accepted posts, by outcome (routed, unrouted, ignored).
    pub alerts_received: Family<OutcomeLabels, Counter>,
    /// Reads of `GET /api/v2/alerts` actually sent (pull mode), by outcome.
    pub alertmanager_reads: Family<OutcomeLabels, Counter>,
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
        let guard_evaluations = Family::<GuardLabels, Counter>::default();
        registry.register(
            "guard_evaluations",
            "Evaluations of each guard that ran to their judgement, whether or not they wrote its status",
            guard_evaluations.clone(),
        );
        let guard_status_writes = Family::<WriteLabels, Counter>::default();
        registry.register(
            "guard_status_writes",
            "Guard status writes by reason: transition (at once) or refresh (values, at most once a minute)",
            guard_status_writes.clone(),
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
        // Seconds from the interval boundary an evaluation belongs to until it starts (slot
        // waits included); evaluations are due just past each boundary.
        let evaluation_delay = Histogram::new([
            0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 15.0, 60.0,
        ]);
        registry.register(
            "guard_evaluation_delay_seconds",
            "Guard evaluations by how long after their interval boundary they started",
            evaluation_delay.clone(),
        );
        let alert_webhook_requests = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "alert_webhook_requests",
            "Posts to the Alertmanager webhook (/v1/alertmanager), by outcome: accepted, unauthorized, malformed, tooLarge, notLeader",
            alert_webhook_requests.clone(),
        );
        let alerts_received = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "alerts_received",
            "Alerts of accepted webhook posts: routed (reached a guard), unrouted (no namespace label), ignored (no guard of the namespace takes it)",
            alerts_received.clone(),
        );
        let alertmanager_reads = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "alertmanager_reads",
            "Reads of an Alertmanager's active alerts (pull mode), by outcome",
            alertmanager_reads.clone(),
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
            guard_evaluations,
            guard_status_writes,
            prometheus_queries,
            reconcile_errors,
            notifications,
            evaluation_delay,
            alert_webhook_requests,
            alerts_received,
            alertmanager_reads,
            leader,
            ready: AtomicBool::new(false),
            standing_by: AtomicBool::new(false),
            trigger_series: Mutex::default(),
        }
    }

    /// The registry in OpenMetrics 1.0.0 text (ends with `# EOF`).
    pub fn encode(&self) -> String {
        self.encode_as(Format::OpenMetrics)
    }

    /// The registry in `format`.
    pub fn encode_as(&self, format: Format) -> String {
        let mut out = String::new();
        match format {
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut out, &self.registry)
            }
            Format::Text => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            }
        }
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

    /// One evaluation of a guard judged, and whether (and why) it wrote its status (None: it
    /// did not, or the write failed).
    pub fn guard_evaluated(
        &self,
        namespace: &str,
        guard: &str,
        write: Option<crate::guard::writes::Write>,
    ) {
        self.guard_evaluations
            .get_or_create(&GuardLabels {
                namespace: namespace.to_string(),
                guard: guard.to_string(),
            })
            .inc();
        if let Some(write) = write {
            self.guard_status_writes
                .get_or_create(&WriteLabels {
                    reason: write.as_str().to_string(),
                })
                .inc();
        }
    }

    /// Drops every trigger series of the guards for which `exists` says false.
    pub fn forget_deleted_guards(&self, exists: impl Fn(&str, &str) -> bool) {
        let mut series = self.trigger_series.lock().expect("not poisoned");
        series.retain(|(namespace, guard), triggers| {
            if exists(namespace, guard) {
                return true;
            }
            self.guard_evaluations.remove(&GuardLabels {
                namespace: namespace.clone(),
                guard: guard.clone(),
            });
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

    /// This process leads and its caches hold the cluster's state (a standby is not).
    pub fn caches_synced(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
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

    /// Counts one event of `family` with label `outcome`.
    pub fn count(family: &Family<OutcomeLabels, Counter>, outcome: &str) {
        family
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn step(&self, step: &str, seconds: f64) {
        self.step_duration
            .get_or_create(&StepLabels { step: step.into() })
            .observe(seconds);
    }
}

/// An exposition format of `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0.0 text.
    OpenMetrics,
    /// The classic Prometheus text format, version 0.0.4.
    Text,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }

    /// The format for a request's `Accept` header, as Prometheus' own Go client
    /// (`expfmt.NegotiateIncludingOpenMetrics`) decides: media ranges by falling quality,
    /// the first `application/openmetrics-text` or `text/plain` wins; anything else, no
    /// header or one that does not parse means the classic text format.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Text;
        };
        let mut ranges: Vec<(f64, &str)> = accept
            .split(',')
            .filter_map(|range| {
                let mut parts = range.split(';').map(str::trim);
                let media = parts.next().filter(|m| !m.is_empty())?;
                let q = parts
                    .filter_map(|p| p.split_once('='))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                    .map_or(Some(1.0), |(_, v)| v.trim().parse::<f64>().ok())?;
                Some((q, media))
            })
            .filter(|(q, _)| *q > 0.0)
            .collect();
        // Stable: among equal qualities the order of the header decides.
        ranges.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (_, media) in ranges {
            if media.eq_ignore_ascii_case("application/openmetrics-text") {
                return Format::OpenMetrics;
            }
            if media.eq_ignore_ascii_case("text/plain") {
                return Format::Text;
            }
        }
        Format::Text
    }
}

/// `/metrics` (in the format the scraper asks for), `/healthz` and `/readyz`.
pub fn router(metrics: Arc<Metrics>) -> axum::Router {
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::routing::get;
    let for_metrics = metrics.clone();
    axum::Router::new()
        .route(
            "/metrics",
            get(move |headers: HeaderMap| {
                let accept = headers
                    .get_all(header::ACCEPT)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect::<Vec<_>>()
                    .join(",");
                let format = Format::negotiate((!accept.is_empty()).then_some(accept.as_str()));
                let body = for_metrics.encode_as(format);
                async move { ([(header::CONTENT_TYPE, format.content_type())], body) }
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
        )
}

/// Serves [`router`] on `addr` until the process ends.
pub async fn serve(addr: std::net::SocketAddr, metrics: Arc<Metrics>) -> anyhow::Result<()> {
    let app = router(metrics);
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
    fn classic_text_names_counter_families_with_their_total_suffix() {
        let m = Metrics::new();
        m.prometheus_queries
            .get_or_create(&OutcomeLabels {
                outcome: "success".into(),
            })
            .inc();
        let text = m.encode_as(Format::Text);
        // The classic format has no `_total`-less family name and no `# EOF`.
        assert!(
            text.contains("# HELP rollguard_prometheus_queries_total Queries sent"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE rollguard_prometheus_queries_total counter\n"),
            "{text}"
        );
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn the_format_follows_the_accept_header() {
        use Format::{OpenMetrics, Text};
        let cases = [
            (None, Text),
            (Some(""), Text),
            (Some("*/*"), Text),
            (Some("text/plain; version=0.0.4"), Text),
            (Some("text/plain;version=0.0.4;q=1,*/*;q=0.1"), Text),
            (Some("application/openmetrics-text"), OpenMetrics),
            (
                Some("Application/OpenMetrics-Text; version=1.0.0"),
                OpenMetrics,
            ),
            // Prometheus 2.x's scrape header.
            (
                Some(
                    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
                ),
                OpenMetrics,
            ),
            // Prometheus 3.x's default scrape_protocols.
            (
                Some(
                    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8,application/openmetrics-text;version=0.0.1;q=0.9,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.8,text/plain;version=0.0.4;q=0.7,*/*;q=0.6",
                ),
                OpenMetrics,
            ),
            // Quality, not order, decides; q=0 means "not this".
            (
                Some("text/plain;q=0.5, application/openmetrics-text"),
                OpenMetrics,
            ),
            (
                Some("application/openmetrics-text;q=0.2, text/plain;q=0.9"),
                Text,
            ),
            (Some("application/openmetrics-text;q=0, */*"), Text),
            (Some("application/json"), Text),
            (Some("application/openmetrics-text;q=x"), Text),
        ];
        for (accept, want) in cases {
            assert_eq!(Format::negotiate(accept), want, "{accept:?}");
        }
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
