//! `/metrics` checked by the real `promtool check metrics` (the classic text parser users run
//! as `curl …/metrics | promtool check metrics`), and the format negotiated by `Accept`:
//! classic text 0.0.4 unless OpenMetrics is asked for. That Prometheus itself scrapes the
//! OpenMetrics answer is tests/metrics_e2e.rs.
//!
//! promtool is Prometheus 3's, built beside the `prometheus` the local control plane runs
//! (tests/cluster/build-tools.sh prometheus) and on PATH through the cluster's env file;
//! `PROMTOOL` overrides the path. Without it the test says why and returns; under `CI=true`
//! that is a failure.

mod common;

use rollguard::metrics::{ErrorLabels, Metrics, NotificationLabels, OutcomeLabels, RollbackLabels};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

/// promtool from `PROMTOOL` or `PATH`, or None (with a message) outside CI.
pub fn promtool() -> Option<PathBuf> {
    let found = std::env::var_os("PROMTOOL").map(PathBuf::from).or_else(|| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|dir| dir.join("promtool"))
            .find(|p| p.is_file())
    });
    if let Some(path) = found.filter(|p| p.is_file()) {
        return Some(path);
    }
    let msg = "no promtool on PATH: `source target/cluster/env` (make test does; tests/cluster/build-tools.sh prometheus builds it) or set PROMTOOL";
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
    eprintln!("SKIPPED: {msg}");
    None
}

/// `promtool check metrics` on `text`: (exit success, its output).
fn check_metrics(promtool: &PathBuf, text: &str) -> (bool, String) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A registry with a sample in every family the operator exports.
fn metrics_with_every_family() -> Arc<Metrics> {
    let m = Metrics::new();
    m.rollbacks
        .get_or_create(&RollbackLabels {
            namespace: "shop".into(),
            guard: "phase4".into(),
            outcome: "Succeeded".into(),
            cause: "automatic".into(),
        })
        .inc();
    m.step("flagDisable", 0.041);
    m.step("total", 38.9);
    m.set_triggers(
        "shop",
        "phase4",
        &[rollguard::api::guard::TriggerStatus {
            name: "critical-error-rate".into(),
            value: Some(0.023),
            threshold: Some(0.01),
            breaching: true,
            ..Default::default()
        }],
    );
    m.prometheus_queries
        .get_or_create(&OutcomeLabels {
            outcome: "success".into(),
        })
        .inc();
    m.reconcile_errors
        .get_or_create(&ErrorLabels {
            kind: "RolloutGuard".into(),
            reason: "Kube".into(),
        })
        .inc();
    m.notifications
        .get_or_create(&NotificationLabels {
            channel: "webhook".into(),
            outcome: "delivered".into(),
        })
        .inc();
    m.leader.set(1);
    Arc::new(m)
}

async fn get(url: &str, accept: Option<&str>) -> (String, String) {
    let client = reqwest::Client::new();
    let mut request = client.get(url);
    if let Some(accept) = accept {
        request = request.header(reqwest::header::ACCEPT, accept);
    }
    let response = request.send().await.expect("GET /metrics");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (content_type, response.text().await.unwrap())
}

#[tokio::test]
async fn promtool_check_metrics_passes_on_what_metrics_answers_to_classic_scrapers() {
    let Some(promtool) = promtool() else { return };
    rollguard::install_crypto_provider();
    let addr = common::serve(rollguard::metrics::router(metrics_with_every_family())).await;
    let url = format!("http://{addr}/metrics");

    // What `curl | promtool check metrics` and classic scrapers ask for.
    for accept in [
        Some("text/plain; version=0.0.4"),
        Some("text/plain;version=0.0.4;q=1,*/*;q=0.1"),
        Some("*/*"),
        None,
    ] {
        let (content_type, body) = get(&url, accept).await;
        assert_eq!(
            content_type, "text/plain; version=0.0.4; charset=utf-8",
            "Accept {accept:?}"
        );
        for family in [
            "rollguard_rollbacks_total",
            "rollguard_rollback_step_duration_seconds",
            "rollguard_trigger_value",
            "rollguard_trigger_breaching",
            "rollguard_trigger_threshold",
            "rollguard_prometheus_queries_total",
            "rollguard_reconcile_errors_total",
            "rollguard_notifications_total",
            "rollguard_leader",
        ] {
            assert!(
                body.contains(&format!("# HELP {family} ")),
                "Accept {accept:?}: no help for {family}:\n{body}"
            );
        }
        let (ok, out) = check_metrics(&promtool, &body);
        assert!(
            ok,
            "Accept {accept:?}: promtool check metrics failed:\n{out}\n--- body ---\n{body}"
        );
    }

    // What Prometheus asks for (2.x's header): OpenMetrics.
    let (content_type, body) = get(
        &url,
        Some("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
    )
    .await;
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert!(
        body.contains("# TYPE rollguard_rollbacks counter\n"),
        "{body}"
    );
}

/// The operator process itself, after a rollback (so the counters and the histogram have
/// series): its `/metrics` passes `promtool check metrics` as `curl` fetches it.
#[tokio::test]
async fn promtool_check_metrics_passes_on_the_operators_metrics_after_a_rollback() {
    let Some(cluster) =
        common::cluster("promtool_check_metrics_passes_on_the_operators_metrics_after_a_rollback")
            .await
    else {
        return;
    };
    let Some(promtool) = promtool() else { return };
    cluster.install_crds().await;
    let ns = cluster.namespace("promtool").await;
    cluster.apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ff, namespace: {ns}, labels: {{rollguard.dev/flags: \"true\"}}}}\ndata: {{a: \"true\"}}\n---\n\
         apiVersion: rollguard.dev/v1alpha1\nkind: RolloutGuard\nmetadata: {{name: g, namespace: {ns}}}\nspec:\n  interval: 1s\n  flags: {{configMapRef: {{name: ff}}, guarded: [a]}}\n  triggers: [{{name: t, query: \"vector(0.25)\", above: 1}}]\n---\n\
         apiVersion: rollguard.dev/v1alpha1\nkind: RollbackRequest\nmetadata: {{name: incident, namespace: {ns}}}\nspec: {{guardRef: {{name: g}}, requestedBy: ops, mode: immediate}}\n"
    ));
    let operator = cluster.start_operator(&ns, &[]);
    let requests: kube::Api<rollguard::api::RollbackRequest> =
        kube::Api::namespaced(cluster.client.clone(), &ns);
    common::finished(&requests, "incident").await;
    let url = format!("{}/metrics", operator.metrics_url);
    // The trigger gauges appear after the guard's first evaluation.
    let body = common::wait_until(
        std::time::Duration::from_secs(20),
        "the trigger and rollback series on /metrics",
        || {
            let url = url.clone();
            async move {
                let (_, body) = get(&url, None).await;
                (body.contains("rollguard_trigger_value{")
                    && body.contains("rollguard_rollbacks_total{"))
                .then_some(body)
            }
        },
    )
    .await;
    let (ok, out) = check_metrics(&promtool, &body);
    assert!(
        ok,
        "promtool check metrics failed:\n{out}\n--- body ---\n{body}"
    );
}
