//! `make bench` (guards): detection latency — a metric endpoint flips, Prometheus scrapes it,
//! the operator creates the RollbackRequest — and the operator's peak RSS and CPU seconds per
//! minute with 100 and 1,000 guards × 5 triggers evaluated every 15 s, and what they cost
//! the API server per minute (guard status writes, ConfigMap and Secret GETs) against the
//! evaluations of the same minute.
//!
//! ROLLGUARD_BENCH_SCALES (default "100,1000"), ROLLGUARD_BENCH_MINUTES (default 1) and
//! ROLLGUARD_BENCH_DETECTIONS (default 10) size the run.

#[path = "../tests/common/mod.rs"]
mod common;

use axum::{Router, routing::get};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use rollguard::api::{RollbackRequest, RolloutGuard};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (resident set high-water mark in KiB, user+system CPU seconds) of a process.
fn usage(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields
        .get(11)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    (hwm, ticks / 100.0)
}

fn guard(ns: &str, name: &str, spec: serde_json::Value) -> RolloutGuard {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "rollguard.dev/v1alpha1", "kind": "RolloutGuard",
        "metadata": {"name": name, "namespace": ns}, "spec": spec
    }))
    .unwrap()
}

async fn detection(cluster: &common::Cluster, samples: usize) {
    let ns = cluster.namespace("bench-detect").await;
    let values: Arc<Mutex<BTreeMap<usize, f64>>> = Arc::default();
    let served = values.clone();
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let text: String = served
                .lock()
                .unwrap()
                .iter()
                .map(|(i, v)| format!("rollguard_bench_errors{{guard=\"{i}\"}} {v}\n"))
                .collect();
            async move { text }
        }),
    );
    let addr = common::serve(app).await;
    let id = format!("detect-{}", common::unique_suffix());
    std::fs::write(
        cluster.prom_sd_dir.join(format!("{id}.json")),
        serde_json::json!([{"targets": [addr.to_string()], "labels": {"bench": id}}]).to_string(),
    )
    .unwrap();
    let data: BTreeMap<String, String> = (0..samples)
        .map(|i| (format!("f{i}"), "true".to_string()))
        .collect();
    cluster.apply(&serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ff", "namespace": ns, "labels": {"rollguard.dev/flags": "true"}}, "data": data}).to_string());
    let _operator = cluster.start_operator(&ns, &[("RUST_LOG", "warn")]);
    let guards: Api<RolloutGuard> = Api::namespaced(cluster.client.clone(), &ns);
    let requests: Api<RollbackRequest> = Api::namespaced(cluster.client.clone(), &ns);
    let mut latencies = Vec::new();
    for i in 0..samples {
        values.lock().unwrap().insert(i, 0.0);
        let spec = serde_json::json!({
            "interval": "1s",
            "flags": {"configMapRef": {"name": "ff"}, "guarded": [format!("f{i}")]},
            "triggers": [{"name": "errors", "query": format!("rollguard_bench_errors{{bench=\"{id}\",guard=\"{i}\"}}"), "above": 0.5, "for": "0s"}]
        });
        guards
            .create(&PostParams::default(), &guard(&ns, &format!("g{i}"), spec))
            .await
            .unwrap();
        // Monitoring with a real value: the series is scraped and the guard evaluates it.
        loop {
            let g = guards.get(&format!("g{i}")).await.unwrap();
            let evaluated = g
                .status
                .as_ref()
                .is_some_and(|s| s.triggers.first().is_some_and(|t| t.value == Some(0.0)));
            if evaluated {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let version = requests
            .list(&Default::default())
            .await
            .unwrap()
            .metadata
            .resource_version
            .unwrap();
        let mut stream = requests
            .watch(
                &WatchParams::default().labels(&format!("rollguard.dev/guard=g{i}")),
                &version,
            )
            .await
            .unwrap()
            .boxed();
        let flipped = Instant::now();
        values.lock().unwrap().insert(i, 1.0);
        loop {
            match tokio::time::timeout(Duration::from_secs(30), stream.try_next()).await {
                Ok(Ok(Some(WatchEvent::Added(_)))) => break,
                Ok(Ok(Some(_))) => continue,
                other => panic!("no RollbackRequest for g{i}: {other:?}"),
            }
        }
        latencies.push(flipped.elapsed().as_secs_f64());
        values.lock().unwrap().insert(i, 0.0);
    }
    latencies.sort_by(f64::total_cmp);
    let p = |q: f64| {
        latencies[((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    println!(
        "detection (endpoint flips -> RollbackRequest created; for: 0s, interval 1s, scrape 1s): n={} p50={:.2}s p99={:.2}s max={:.2}s (target: for + interval + 2s = 3s)",
        latencies.len(),
        p(0.5),
        p(0.99),
        latencies[latencies.len() - 1]
    );
}

async fn scale(cluster: &common::Cluster, guards_n: usize, minutes: u64) {
    let ns = cluster.namespace(&format!("bench-scale-{guards_n}")).await;
    cluster.apply(&format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ff, namespace: {ns}, labels: {{rollguard.dev/flags: \"true\"}}}}\ndata: {{a: \"true\"}}\n"));
    let operator = cluster.start_operator(&ns, &[("RUST_LOG", "warn")]);
    let pid = operator.pid();
    let guards: Api<RolloutGuard> = Api::namespaced(cluster.client.clone(), &ns);
    let created = Instant::now();
    futures::stream::iter(0..guards_n)
        .map(|g| {
            let guards = guards.clone();
            let ns = ns.clone();
            async move {
                // 5 triggers; 200 distinct queries overall, as guards of one service share some.
                let triggers: Vec<_> = (0..5)
                    .map(|t| serde_json::json!({"name": format!("t{t}"), "query": format!("vector({})", (g * 5 + t) % 200), "above": 1_000_000, "for": "5m"}))
                    .collect();
                let spec = serde_json::json!({"interval": "15s", "flags": {"configMapRef": {"name": "ff"}, "guarded": ["a"]}, "triggers": triggers});
                guards.create(&PostParams::default(), &guard(&ns, &format!("g{g}"), spec)).await.unwrap();
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let create_secs = created.elapsed().as_secs_f64();
    // Warm-up: one full interval so every guard has been evaluated at least once.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let (_, cpu_start) = usage(pid);
    let calls_start = api_calls(cluster, &operator, &ns).await;
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(60 * minutes)).await;
    let (hwm_kib, cpu_end) = usage(pid);
    let calls_end = api_calls(cluster, &operator, &ns).await;
    let minutes_measured = start.elapsed().as_secs_f64() / 60.0;
    let per_minute = (cpu_end - cpu_start) / minutes_measured;
    let rate = |i: usize| (calls_end[i] - calls_start[i]) / minutes_measured;
    let (evaluations, writes, config_map_gets, secret_gets) = (rate(0), rate(1), rate(2), rate(3));
    let evaluated = guards
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|g| {
            g.status
                .as_ref()
                .is_some_and(|s| s.last_evaluation_time.is_some())
        })
        .count();
    println!(
        "scale {guards_n} guards x 5 triggers @15s: peak RSS {:.1} MiB, CPU {per_minute:.2} s/min, {evaluated}/{guards_n} guards evaluated (created in {create_secs:.1}s)",
        hwm_kib as f64 / 1024.0
    );
    println!(
        "scale {guards_n}: per minute {evaluations:.0} evaluations, {writes:.0} guard status writes ({:.3} per evaluation, {:.2} per guard), {config_map_gets:.0} ConfigMap GETs, {secret_gets:.0} Secret GETs (API server's apiserver_request_total)",
        writes / evaluations.max(1.0),
        writes / guards_n as f64
    );
    drop(operator);
}

/// [evaluations (the operator's counters, this namespace), guard status writes, ConfigMap
/// GETs, Secret GETs (the API server's counts: nothing else runs during the bench)].
async fn api_calls(cluster: &common::Cluster, operator: &common::Operator, ns: &str) -> [f64; 4] {
    let text = reqwest::get(format!("{}/metrics", operator.metrics_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("rollguard_guard_evaluations_total{{namespace=\"{ns}\",");
    let evaluations = text
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let client = &cluster.client;
    [
        evaluations,
        common::api_requests(
            client,
            &["PATCH", "UPDATE", "APPLY"],
            "rolloutguards",
            "status",
        )
        .await,
        common::api_requests(client, &["GET"], "configmaps", "").await,
        common::api_requests(client, &["GET"], "secrets", "").await,
    ]
}

#[tokio::main]
async fn main() {
    let cluster = common::cluster("guard_scale bench")
        .await
        .expect("the benchmark needs the local control plane: make cluster-up");
    cluster.install_crds().await;
    detection(&cluster, env_or("ROLLGUARD_BENCH_DETECTIONS", 10)).await;
    let minutes = env_or("ROLLGUARD_BENCH_MINUTES", 1);
    let scales: String = env_or("ROLLGUARD_BENCH_SCALES", "100,1000".to_string());
    for n in scales.split(',').filter_map(|n| n.trim().parse().ok()) {
        scale(&cluster, n, minutes).await;
    }
}
