//! The real Prometheus of the local control plane scrapes an HTTP endpoint that a test
//! serves on loopback, registered through `PROM_SD_DIR`, and the value is read back with
//! prometheus-http-query — the path every trigger test builds on.

mod common;

use axum::{Router, routing::get};
use common::{cluster, unique_suffix, wait_until};
use prometheus_http_query::Client;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[tokio::test]
async fn prometheus_scrapes_a_test_endpoint_registered_through_file_sd() {
    let Some(cluster) =
        cluster("prometheus_scrapes_a_test_endpoint_registered_through_file_sd").await
    else {
        return;
    };

    let value = Arc::new(Mutex::new(42.5_f64));
    let served = value.clone();
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let v = *served.lock().unwrap();
            async move { format!("# TYPE rollguard_test_probe gauge\nrollguard_test_probe {v}\n") }
        }),
    );
    let addr = common::serve(app).await;

    let id = format!("scrape-{}", unique_suffix());
    let sd_file = cluster.prom_sd_dir.join(format!("{id}.json"));
    let targets = serde_json::json!([{"targets": [addr.to_string()], "labels": {"test": id}}]);
    std::fs::write(&sd_file, targets.to_string()).unwrap();

    let prometheus = Client::try_from(cluster.prometheus_url.as_str()).unwrap();
    let query = format!("rollguard_test_probe{{test=\"{id}\"}}");
    let read = |want: f64| {
        let prometheus = prometheus.clone();
        let query = query.clone();
        async move {
            let result = prometheus.query(query).get().await.ok()?;
            let sample = result.data().as_vector()?.first()?.sample().value();
            (sample == want).then_some(sample)
        }
    };
    wait_until(Duration::from_secs(30), "Prometheus to scrape 42.5", || {
        read(42.5)
    })
    .await;

    // A change at the endpoint shows up within a few scrape intervals (1s here).
    *value.lock().unwrap() = 7.0;
    wait_until(Duration::from_secs(15), "Prometheus to scrape 7", || {
        read(7.0)
    })
    .await;

    std::fs::remove_file(sd_file).unwrap();
}
