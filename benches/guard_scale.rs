//! `make bench` (guards), one operator process (release build) per scale:
//! - a scaling table for 100, 1,000 and 10,000 guards × 5 triggers at 15 s: peak RSS, CPU,
//!   API writes per minute at steady state (the API server's own `apiserver_request_total`),
//!   GETs of ConfigMaps and Secrets per minute, Prometheus queries per interval and the
//!   evaluation delay p99 (the operator's `rollguard_guard_evaluation_delay_seconds`);
//! - detection latency (a metric endpoint flips, Prometheus scrapes it, the operator creates
//!   the RollbackRequest), alone and beside the largest scale's guards, served by the same
//!   operator;
//! - the operator's RSS before and after 2,000 unrelated 100 KiB ConfigMaps appear.
//!
//! ROLLGUARD_BENCH_SCALES (default "100,1000,10000"), ROLLGUARD_BENCH_MINUTES (default 2),
//! ROLLGUARD_BENCH_DETECTIONS (default 10) and ROLLGUARD_BENCH_UNRELATED (default 2000) size
//! the run.

#[path = "../tests/common/mod.rs"]
mod common;

use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use rollguard::api::{RollbackRequest, RolloutGuard};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (resident set high-water mark in KiB, resident set now in KiB, user+system CPU seconds).
fn usage(pid: u32) -> (u64, u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        kib("VmHWM:"),
        kib("VmRSS:"),
        (ticks(11) + ticks(12)) / 100.0,
    )
}

/// Sample lines of a Prometheus text exposition: (series name, labels, value).
fn samples(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter_map(|kv| {
                    let (k, v) = kv.split_once("=\"")?;
                    Some((
                        k.trim_start_matches(',').to_string(),
                        v.trim_end_matches('"').to_string(),
                    ))
                })
                .collect();
            Some((name.to_string(), labels, value))
        })
        .collect()
}

/// What the API server and the operator count, at one moment.
#[derive(Default)]
struct Counts {
    /// Writes (POST/PUT/PATCH/APPLY/DELETE) of anything but Leases.
    writes: f64,
    /// Of those, writes of RolloutGuard status.
    guard_status_writes: f64,
    /// Of those, refused for a stale resourceVersion (409).
    guard_status_conflicts: f64,
    /// The operator's own count of its guard status writes: (transition, refresh).
    transitions: f64,
    refreshes: f64,
    /// Lease writes (leader election, the API server's own identity Lease).
    lease_writes: f64,
    /// GETs and LISTs of ConfigMaps and Secrets.
    config_reads: f64,
    /// Queries the operator sent to Prometheus.
    queries: f64,
    /// The operator's evaluation-delay histogram: (upper bound, cumulative count).
    delay: Vec<(f64, f64)>,
}

async fn counts(cluster: &common::Cluster, operator: &common::Operator) -> Counts {
    let request = axum::http::Request::get("/metrics")
        .body(Vec::new())
        .unwrap();
    let api = cluster.client.request_text(request).await.unwrap();
    let mut c = Counts::default();
    for (name, labels, value) in samples(&api) {
        if name != "apiserver_request_total" {
            continue;
        }
        let label = |k: &str| labels.get(k).map(String::as_str).unwrap_or_default();
        match (label("verb"), label("resource")) {
            ("POST" | "PUT" | "PATCH" | "APPLY" | "DELETE", "leases") => c.lease_writes += value,
            ("POST" | "PUT" | "PATCH" | "APPLY" | "DELETE", resource) => {
                c.writes += value;
                if resource == "rolloutguards" && label("subresource") == "status" {
                    c.guard_status_writes += value;
                    if label("code") == "409" {
                        c.guard_status_conflicts += value;
                    }
                }
            }
            ("GET" | "LIST", "configmaps" | "secrets") => c.config_reads += value,
            _ => {}
        }
    }
    let own = reqwest::get(format!("{}/metrics", operator.metrics_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (name, labels, value) in samples(&own) {
        match name.as_str() {
            "rollguard_prometheus_queries_total" => c.queries += value,
            "rollguard_guard_status_writes_total" => match labels.get("reason").map(String::as_str)
            {
                Some("transition") => c.transitions += value,
                Some("refresh") => c.refreshes += value,
                _ => {}
            },
            "rollguard_guard_evaluation_delay_seconds_bucket" => {
                let le = labels.get("le").map(String::as_str).unwrap_or("+Inf");
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::INFINITY)
                };
                c.delay.push((bound, value));
            }
            _ => {}
        }
    }
    c
}

/// The upper bound of the bucket that holds quantile `q` of the observations between two
/// readings of a histogram.
fn quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> (f64, f64) {
    let diff: Vec<(f64, f64)> = after
        .iter()
        .map(|(bound, n)| {
            let was = before
                .iter()
                .find(|(b, _)| b == bound)
                .map_or(0.0, |(_, n)| *n);
            (*bound, n - was)
        })
        .collect();
    let total = diff.last().map_or(0.0, |(_, n)| *n);
    let bound = diff
        .iter()
        .find(|(_, n)| *n >= q * total)
        .map_or(f64::INFINITY, |(b, _)| *b);
    (bound, total)
}

fn guard(ns: &str, name: &str, spec: serde_json::Value) -> RolloutGuard {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "rollguard.dev/v1alpha1", "kind": "RolloutGuard",
        "metadata": {"name": name, "namespace": ns}, "spec": spec
    }))
    .unwrap()
}

/// Detection latency of `samples` guards in `ns`, which an operator serves already.
async fn detection(cluster: &common::Cluster, ns: &str, samples: usize, beside: &str) {
    let gauges = common::gauges::Gauges::serve(cluster).await;
    let data: BTreeMap<String, String> = (0..samples)
        .map(|i| (format!("f{i}"), "true".to_string()))
        .collect();
    cluster.apply(&serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ff", "namespace": ns, "labels": {"rollguard.dev/flags": "true"}}, "data": data}).to_string());
    let guards: Api<RolloutGuard> = Api::namespaced(cluster.client.clone(), ns);
    let requests: Api<RollbackRequest> = Api::namespaced(cluster.client.clone(), ns);
    let mut latencies = Vec::new();
    for i in 0..samples {
        gauges.set(&i.to_string(), 0.0);
        let spec = serde_json::json!({
            "interval": "1s",
            "flags": {"configMapRef": {"name": "ff"}, "guarded": [format!("f{i}")]},
            "triggers": [{"name": "errors", "query": format!("rollguard_test_value{{test=\"{}\",series=\"{i}\"}}", gauges.id), "above": 0.5, "for": "0s"}]
        });
        guards
            .create(&PostParams::default(), &guard(ns, &format!("g{i}"), spec))
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
        let mut stream = common::watch_from_now(
            &requests,
            &WatchParams::default().labels(&format!("rollguard.dev/guard=g{i}")),
        )
        .await;
        let flipped = Instant::now();
        gauges.set(&i.to_string(), 1.0);
        loop {
            match tokio::time::timeout(Duration::from_secs(30), stream.try_next()).await {
                Ok(Ok(Some(WatchEvent::Added(_)))) => break,
                Ok(Ok(Some(_))) => continue,
                other => panic!("no RollbackRequest for g{i}: {other:?}"),
            }
        }
        latencies.push(flipped.elapsed().as_secs_f64());
        gauges.set(&i.to_string(), 0.0);
    }
    latencies.sort_by(f64::total_cmp);
    let p = |q: f64| {
        latencies[((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    println!(
        "detection {beside} (endpoint flips -> RollbackRequest created; for: 0s, interval 1s, scrape 1s): n={} p50={:.2}s p99={:.2}s max={:.2}s (target: for + interval + 2s = 3s)",
        latencies.len(),
        p(0.5),
        p(0.99),
        latencies[latencies.len() - 1]
    );
}

/// Creates `n` guards × 5 triggers at 15 s in `ns` (200 distinct queries overall, as
/// guards of one service share some) and waits until each has been evaluated.
async fn create_guards(cluster: &common::Cluster, ns: &str, n: usize) -> f64 {
    cluster.apply(&format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ff, namespace: {ns}, labels: {{rollguard.dev/flags: \"true\"}}}}\ndata: {{a: \"true\"}}\n"));
    let guards: Api<RolloutGuard> = Api::namespaced(cluster.client.clone(), ns);
    let created = Instant::now();
    futures::stream::iter(0..n)
        .map(|g| {
            let guards = guards.clone();
            async move {
                let triggers: Vec<_> = (0..5)
                    .map(|t| serde_json::json!({"name": format!("t{t}"), "query": format!("vector({})", (g * 5 + t) % 200), "above": 1_000_000, "for": "5m"}))
                    .collect();
                let spec = serde_json::json!({"interval": "15s", "flags": {"configMapRef": {"name": "ff"}, "guarded": ["a"]}, "triggers": triggers});
                guards.create(&PostParams::default(), &guard(ns, &format!("g{g}"), spec)).await.unwrap();
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let secs = created.elapsed().as_secs_f64();
    loop {
        let list = guards.list(&Default::default()).await.unwrap().items;
        let evaluated = list
            .iter()
            .filter(|g| {
                g.status
                    .as_ref()
                    .is_some_and(|s| s.last_evaluation_time.is_some())
            })
            .count();
        if evaluated == n {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    secs
}

async fn scale(cluster: &common::Cluster, guards_n: usize, minutes: u64, detections: usize) {
    let ns = cluster.namespace(&format!("bench-scale-{guards_n}")).await;
    let detect = cluster.namespace("bench-detect").await;
    let operator = cluster.start_operator(&format!("{ns},{detect}"), &[("RUST_LOG", "warn")]);
    let pid = operator.pid();
    let create_secs = create_guards(cluster, &ns, guards_n).await;
    // Settled: one more interval after every guard's first evaluation.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let before = counts(cluster, &operator).await;
    let (_, _, cpu_start) = usage(pid);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(60 * minutes)).await;
    let after = counts(cluster, &operator).await;
    let (hwm_kib, _, cpu_end) = usage(pid);
    let elapsed = start.elapsed().as_secs_f64();
    let per_minute = |a: f64, b: f64| (b - a) / elapsed * 60.0;
    let (delay_p99, evaluations) = quantile(&before.delay, &after.delay, 0.99);
    println!(
        "scale {guards_n} guards x 5 triggers @15s over {minutes} min: peak RSS {:.1} MiB | CPU {:.3} cores | writes/min {:.1} (guard status {:.1}: {:.1} transitions, {:.1} refreshes, {:.1} refused as conflicts; leases {:.1} besides) | ConfigMap+Secret reads/min {:.1} | Prometheus queries/interval {:.1} | evaluations/min {:.0} | evaluation delay p99 <= {delay_p99}s | guards created in {create_secs:.0}s",
        hwm_kib as f64 / 1024.0,
        (cpu_end - cpu_start) / elapsed,
        per_minute(before.writes, after.writes),
        per_minute(before.guard_status_writes, after.guard_status_writes),
        per_minute(before.transitions, after.transitions),
        per_minute(before.refreshes, after.refreshes),
        per_minute(before.guard_status_conflicts, after.guard_status_conflicts),
        per_minute(before.lease_writes, after.lease_writes),
        per_minute(before.config_reads, after.config_reads),
        (after.queries - before.queries) / (elapsed / 15.0),
        evaluations / elapsed * 60.0,
    );
    if detections > 0 {
        detection(
            cluster,
            &detect,
            detections,
            &format!("beside {guards_n} guards"),
        )
        .await;
    }
    drop(operator);
    let (ok, _, err) = cluster.kubectl(&["delete", "namespace", &ns, &detect, "--wait=false"]);
    assert!(ok, "{err}");
}

/// The operator's RSS with 100 guards, then after `n` unrelated 100 KiB ConfigMaps (no
/// rollguard label) appear in another namespace: the operator watches only labelled ones.
async fn unrelated_config_maps(cluster: &common::Cluster, n: usize) {
    let ns = cluster.namespace("bench-unrelated-guards").await;
    let other = cluster.namespace("bench-unrelated").await;
    let operator = cluster.start_operator(&format!("{ns},{other}"), &[("RUST_LOG", "warn")]);
    create_guards(cluster, &ns, 100).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let (_, rss_before, _) = usage(operator.pid());
    tokio::time::sleep(Duration::from_secs(30)).await;
    let (_, rss_before_2, _) = usage(operator.pid());
    let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(cluster.client.clone(), &other);
    let payload = "x".repeat(100 * 1024);
    futures::stream::iter(0..n)
        .map(|i| {
            let config_maps = config_maps.clone();
            let payload = payload.clone();
            async move {
                let cm = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("unrelated-{i}")},
                    "data": {"payload": payload}
                }))
                .unwrap();
                config_maps
                    .create(&PostParams::default(), &cm)
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    // Four intervals with them in the cluster.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let (hwm, rss_after, _) = usage(operator.pid());
    println!(
        "unrelated ConfigMaps: RSS with 100 guards {:.1} / {:.1} MiB (30 s apart), after {n} unrelated 100 KiB ConfigMaps {:.1} MiB (ratio {:.2} to the first; peak {:.1} MiB)",
        rss_before as f64 / 1024.0,
        rss_before_2 as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        rss_after as f64 / rss_before as f64,
        hwm as f64 / 1024.0,
    );
    drop(operator);
    let (ok, _, err) = cluster.kubectl(&["delete", "namespace", &ns, &other, "--wait=false"]);
    assert!(ok, "{err}");
}

#[tokio::main]
async fn main() {
    let cluster = common::cluster("guard_scale bench")
        .await
        .expect("the benchmark needs the local control plane: make cluster-up");
    cluster.install_crds().await;
    let detections = env_or("ROLLGUARD_BENCH_DETECTIONS", 10);
    if detections > 0 {
        let ns = cluster.namespace("bench-detect").await;
        let _operator = cluster.start_operator(&ns, &[("RUST_LOG", "warn")]);
        detection(&cluster, &ns, detections, "alone").await;
    }
    let minutes = env_or("ROLLGUARD_BENCH_MINUTES", 2);
    let scales: String = env_or("ROLLGUARD_BENCH_SCALES", "100,1000,10000".to_string());
    let scales: Vec<usize> = scales
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let largest = scales.iter().copied().max().unwrap_or(0);
    for &n in &scales {
        scale(
            &cluster,
            n,
            minutes,
            if n == largest { detections } else { 0 },
        )
        .await;
    }
    unrelated_config_maps(&cluster, env_or("ROLLGUARD_BENCH_UNRELATED", 2000)).await;
}
