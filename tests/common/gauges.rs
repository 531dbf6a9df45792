//! Gauges a test serves on loopback for the real Prometheus to scrape (registered through
//! PROM_SD_DIR), so a trigger's value changes without its spec changing.

use super::{Cluster, unique_suffix, wait_until};
use axum::{Router, routing::get};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Gauges served on loopback for Prometheus to scrape: series name → value (None: absent).
#[derive(Clone)]
pub struct Gauges {
    pub id: String,
    values: Arc<Mutex<BTreeMap<String, f64>>>,
}

impl Gauges {
    pub async fn serve(cluster: &Cluster) -> Gauges {
        let id = format!("m{}", unique_suffix());
        let values: Arc<Mutex<BTreeMap<String, f64>>> = Arc::default();
        let served = values.clone();
        let app = Router::new().route(
            "/metrics",
            get(move || {
                let text: String = served
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(series, v)| format!("rollguard_test_value{{series=\"{series}\"}} {v}\n"))
                    .collect();
                async move { text }
            }),
        );
        let addr = super::serve(app).await;
        let targets = serde_json::json!([{"targets": [addr.to_string()], "labels": {"test": id}}]);
        std::fs::write(
            cluster.prom_sd_dir.join(format!("{id}.json")),
            targets.to_string(),
        )
        .unwrap();
        Gauges { id, values }
    }

    pub fn set(&self, series: &str, value: f64) {
        self.values
            .lock()
            .unwrap()
            .insert(series.to_string(), value);
    }

    /// PromQL for one series of this test's endpoint.
    pub fn query(&self, series: &str) -> String {
        format!(
            "rollguard_test_value{{test=\\\"{}\\\",series=\\\"{series}\\\"}}",
            self.id
        )
    }

    /// Waits until Prometheus returns `value` for the series.
    pub async fn scraped(&self, cluster: &Cluster, series: &str, value: f64) {
        let client =
            prometheus_http_query::Client::try_from(cluster.prometheus_url.as_str()).unwrap();
        let q = format!(
            "rollguard_test_value{{test=\"{}\",series=\"{series}\"}}",
            self.id
        );
        wait_until(
            Duration::from_secs(20),
            &format!("Prometheus to scrape {series}={value}"),
            || {
                let (client, q) = (client.clone(), q.clone());
                async move {
                    let r = client.query(q).get().await.ok()?;
                    (r.data().as_vector()?.first()?.sample().value() == value).then_some(())
                }
            },
        )
        .await;
    }
}
