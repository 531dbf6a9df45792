//! The operator's own /metrics, /healthz and /readyz: Prometheus (the real one) scrapes
//! /metrics and the counters move after a rollback; /readyz is not ready while the caches
//! cannot sync.

mod common;

use common::{cluster, unique_suffix, wait_until};
use std::time::Duration;

async fn get(url: &str) -> Option<(u16, String)> {
    let response = reqwest::get(url).await.ok()?;
    Some((response.status().as_u16(), response.text().await.ok()?))
}

#[tokio::test]
async fn metrics_are_scraped_by_prometheus_and_move_after_a_rollback() {
    let Some(cluster) =
        cluster("metrics_are_scraped_by_prometheus_and_move_after_a_rollback").await
    else {
        return;
    };
    rollguard::install_crypto_provider();
    cluster.install_crds().await;
    let ns = cluster.namespace("metrics").await;
    cluster.apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ff, namespace: {ns}, labels: {{rollguard.dev/flags: \"true\"}}}}\ndata: {{a: \"true\"}}\n---\n\
         apiVersion: rollguard.dev/v1alpha1\nkind: RolloutGuard\nmetadata: {{name: g, namespace: {ns}}}\nspec:\n  interval: 1s\n  flags: {{configMapRef: {{name: ff}}, guarded: [a]}}\n  triggers: [{{name: t, query: \"vector(0.25)\", above: 1}}]\n"
    ));
    let operator = cluster.start_operator(&ns, &[]);
    let base = operator.metrics_url.clone();
    wait_until(Duration::from_secs(20), "/readyz to answer 200", || {
        let url = format!("{base}/readyz");
        async move { get(&url).await.filter(|(code, _)| *code == 200) }
    })
    .await;
    assert_eq!(get(&format!("{base}/healthz")).await.unwrap().0, 200);

    cluster.apply(&format!(
        "apiVersion: rollguard.dev/v1alpha1\nkind: RollbackRequest\nmetadata: {{name: incident, namespace: {ns}}}\nspec: {{guardRef: {{name: g}}, requestedBy: ops, mode: immediate}}\n"
    ));

    // Prometheus scrapes the operator and can query what it exports.
    let id = format!("operator-{}", unique_suffix());
    let target = base.trim_start_matches("http://").to_string();
    std::fs::write(
        cluster.prom_sd_dir.join(format!("{id}.json")),
        serde_json::json!([{"targets": [target], "labels": {"test": id}}]).to_string(),
    )
    .unwrap();
    let prometheus =
        prometheus_http_query::Client::try_from(cluster.prometheus_url.as_str()).unwrap();
    let value = |query: String| {
        let prometheus = prometheus.clone();
        async move {
            prometheus
                .query(query)
                .get()
                .await
                .ok()?
                .data()
                .as_vector()?
                .first()
                .map(|v| v.sample().value())
        }
    };
    let rollbacks = format!(
        "rollguard_rollbacks_total{{test=\"{id}\",namespace=\"{ns}\",guard=\"g\",outcome=\"Succeeded\",cause=\"manual\"}}"
    );
    wait_until(
        Duration::from_secs(30),
        "Prometheus to see the rollback counted",
        || {
            let v = value(rollbacks.clone());
            async move { v.await.filter(|v| *v == 1.0) }
        },
    )
    .await;
    let trigger = format!("rollguard_trigger_value{{test=\"{id}\",guard=\"g\",trigger=\"t\"}}");
    assert_eq!(value(trigger).await, Some(0.25));
    let steps = format!(
        "rollguard_rollback_step_duration_seconds_count{{test=\"{id}\",step=\"flagDisable\"}}"
    );
    assert_eq!(value(steps).await, Some(1.0));
    let queries =
        format!("rollguard_prometheus_queries_total{{test=\"{id}\",outcome=\"success\"}}");
    assert!(value(queries).await.is_some_and(|v| v >= 1.0));
    assert_eq!(
        value(format!("rollguard_leader{{test=\"{id}\"}}")).await,
        Some(1.0)
    );
    std::fs::remove_file(cluster.prom_sd_dir.join(format!("{id}.json"))).unwrap();

    // Series of a renamed trigger and of a deleted guard go, rather than reporting their
    // last value (a breach, say) for ever.
    let series = |trigger: &str| {
        format!("rollguard_trigger_value{{namespace=\"{ns}\",guard=\"g\",trigger=\"{trigger}\"}}")
    };
    let exported = |present: Vec<String>, absent: Vec<String>, what: &'static str| {
        let url = format!("{base}/metrics");
        async move {
            wait_until(Duration::from_secs(20), what, || {
                let (url, present, absent) = (url.clone(), present.clone(), absent.clone());
                async move {
                    let (_, text) = get(&url).await?;
                    (present.iter().all(|s| text.contains(s.as_str()))
                        && !absent.iter().any(|s| text.contains(s.as_str())))
                    .then_some(())
                }
            })
            .await
        }
    };
    cluster.apply(&format!(
        "apiVersion: rollguard.dev/v1alpha1\nkind: RolloutGuard\nmetadata: {{name: g, namespace: {ns}}}\nspec:\n  interval: 1s\n  flags: {{configMapRef: {{name: ff}}, guarded: [a]}}\n  triggers: [{{name: renamed, query: \"vector(0.25)\", above: 1}}]\n"
    ));
    exported(
        vec![series("renamed")],
        vec![series("t")],
        "the renamed trigger's series to replace the old one",
    )
    .await;
    let (ok, _, err) = cluster.kubectl(&["delete", "rolloutguard", "g", "-n", &ns]);
    assert!(ok, "{err}");
    exported(
        vec![],
        vec![format!("guard=\"g\",trigger=")],
        "the deleted guard's series to go",
    )
    .await;
}

#[tokio::test]
async fn readyz_is_not_ready_while_the_caches_cannot_sync() {
    let Some(cluster) = cluster("readyz_is_not_ready_while_the_caches_cannot_sync").await else {
        return;
    };
    // The admin kubeconfig, pointed at a port where no API server listens.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let text = std::fs::read_to_string(&cluster.kubeconfig).unwrap();
    let server = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap()
        .to_string();
    let broken =
        std::env::temp_dir().join(format!("rollguard-broken-{}.kubeconfig", unique_suffix()));
    std::fs::write(&broken, text.replace(&server, &format!("https://{closed}"))).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rollguard"))
        .args([
            "run",
            "--namespace",
            "nowhere",
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("--kubeconfig")
        .arg(&broken)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_until(Duration::from_secs(10), "/healthz to answer", || {
        let url = format!("{base}/healthz");
        async move { get(&url).await.filter(|(code, _)| *code == 200) }
    })
    .await;
    for _ in 0..10 {
        let (code, body) = get(&format!("{base}/readyz")).await.unwrap();
        assert_eq!((code, body.as_str()), (503, "caches not synced yet"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
}
