//! `make bench` (hostile Prometheus): 200 guards querying the real Prometheus every 5 s,
//! first alone (the baseline), then beside a hostile tenant's guards in the same namespace
//! whose Prometheus endpoints hang (70 guards on one endpoint), answer 100 MiB, and answer
//! 10,000 series. Reported for the 200: the gaps between successive evaluations as the
//! operator's per-guard evaluation counters show them, read every 100 ms (p50, p99, max, and how many exceeded two intervals — an evaluation later than
//! one interval), how many say `OnSchedule=False`, and the operator's peak RSS against the
//! chart's 256 MiB memory limit. Figures of the hostile phase are also given as ratios to
//! the baseline phase of the same run.
//!
//! ROLLGUARD_BENCH_GUARDS (default 200) and ROLLGUARD_BENCH_SECONDS (default 60, per phase)
//! size the run.

#[path = "../tests/common/mod.rs"]
mod common;

use axum::Router;
use axum::body::Bytes;
use futures::StreamExt;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use rollguard::api::RolloutGuard;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const INTERVAL_SECS: f64 = 5.0;
const CHART_MEMORY_LIMIT_MIB: f64 = 256.0;

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (peak resident set, current resident set) of a process, in MiB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn guard(ns: &str, name: &str, address: Option<&str>, query: &str) -> RolloutGuard {
    let mut spec = serde_json::json!({
        "interval": "5s",
        "flags": {"configMapRef": {"name": "ff"}, "guarded": ["a"]},
        "triggers": [{"name": "t", "query": query, "above": 1_000_000_000, "for": "5m"}],
    });
    if let Some(address) = address {
        spec["prometheus"] = serde_json::json!({"address": address});
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "rollguard.dev/v1alpha1", "kind": "RolloutGuard",
        "metadata": {"name": name, "namespace": ns}, "spec": spec
    }))
    .unwrap()
}

async fn create_all(api: &Api<RolloutGuard>, guards: Vec<RolloutGuard>) {
    futures::stream::iter(guards)
        .map(|g| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &g).await.unwrap();
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
}

/// Hostile Prometheus endpoints on loopback: one that never answers, one whose answer is
/// 100 MiB (a valid empty vector padded with whitespace), one with 10,000 series.
async fn hostile_endpoints() -> (String, String, String) {
    let hang = Router::new().fallback(|| async {
        futures::future::pending::<()>().await;
        ""
    });
    const EMPTY: &str = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
    let mut padded = EMPTY.as_bytes().to_vec();
    padded.resize(100 << 20, b' ');
    let padded = Bytes::from(padded);
    let huge = Router::new().fallback(move || {
        let body = padded.clone();
        async move { body }
    });
    let series: Vec<String> = (0..10_000)
        .map(|i| format!(r#"{{"metric":{{"pod":"p{i}"}},"value":[1700000000,"1"]}}"#))
        .collect();
    let many_body = Bytes::from(format!(
        r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
        series.join(",")
    ));
    let many = Router::new().fallback(move || {
        let body = many_body.clone();
        async move { body }
    });
    (
        format!("http://{}", common::serve(hang).await),
        format!("http://{}", common::serve(huge).await),
        format!("http://{}", common::serve(many).await),
    )
}

/// What the watch saw of the well-behaved guards in one phase.
#[derive(Default)]
struct Phase {
    /// Seconds between successive evaluations (a step of the guard's evaluation counter).
    gaps: Vec<f64>,
}

#[derive(Default)]
struct Seen {
    /// Per guard: its evaluation count and when it was first seen at that count.
    last: HashMap<String, (u64, Instant)>,
    /// Well-behaved guards whose OnSchedule condition is False now.
    late: HashMap<String, bool>,
    phase: Option<Phase>,
}

fn report(label: &str, gaps: &mut [f64]) -> (f64, f64, f64, usize) {
    gaps.sort_by(f64::total_cmp);
    let p = |q: f64| gaps[((q * gaps.len() as f64).ceil() as usize).clamp(1, gaps.len()) - 1];
    let over = gaps.iter().filter(|g| **g > 2.0 * INTERVAL_SECS).count();
    let (p50, p99, max) = (p(0.5), p(0.99), gaps[gaps.len() - 1]);
    println!(
        "{label}: {} evaluation gaps, p50 {p50:.2}s p99 {p99:.2}s max {max:.2}s; {over} longer than two intervals ({:.0}s)",
        gaps.len(),
        2.0 * INTERVAL_SECS
    );
    (p50, p99, max, over)
}

#[tokio::main]
async fn main() {
    let Some(cluster) = common::cluster("hostile_prometheus").await else {
        return;
    };
    cluster.install_crds().await;
    let n: usize = env_or("ROLLGUARD_BENCH_GUARDS", 200);
    let seconds: u64 = env_or("ROLLGUARD_BENCH_SECONDS", 60);
    let ns = cluster.namespace("bench-hostile").await;
    cluster.apply(&format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ff, namespace: {ns}, labels: {{rollguard.dev/flags: \"true\"}}}}\ndata: {{a: \"true\"}}\n"));
    let operator = cluster.start_operator(&ns, &[("RUST_LOG", "warn")]);
    let pid = operator.pid();
    let api: Api<RolloutGuard> = Api::namespaced(cluster.client.clone(), &ns);

    let seen: Arc<Mutex<Seen>> = Arc::default();
    let watched = seen.clone();
    let stream = watcher(api.clone(), watcher::Config::default()).applied_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(Ok(g)) = stream.next().await {
            let name = g.metadata.name.clone().unwrap_or_default();
            if !name.starts_with("ok-") {
                continue;
            }
            let Some(status) = g.status else { continue };
            let late = rollguard::conditions::get(&status.conditions, "OnSchedule")
                .is_some_and(|c| c.status == "False");
            watched.lock().unwrap().late.insert(name, late);
        }
    });
    // A steady evaluation writes no status (a transition does, values once a minute): the
    // operator's evaluation counters say when each guard was evaluated.
    let counted = seen.clone();
    let (metrics, prefix) = (
        format!("{}/metrics", operator.metrics_url),
        format!("rollguard_guard_evaluations_total{{namespace=\"{ns}\",guard=\""),
    );
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            let Ok(answer) = client.get(&metrics).send().await else {
                continue;
            };
            let text = answer.text().await.unwrap_or_default();
            let now = Instant::now();
            let mut seen = counted.lock().unwrap();
            for line in text.lines() {
                let Some((guard, count)) = line
                    .strip_prefix(&prefix)
                    .and_then(|rest| rest.split_once("\"} "))
                else {
                    continue;
                };
                let Ok(count) = count.trim().parse::<f64>() else {
                    continue;
                };
                let (guard, count) = (guard.to_string(), count as u64);
                if !guard.starts_with("ok-") {
                    continue;
                }
                let previous = seen.last.get(&guard).copied();
                if previous.is_some_and(|(before, _)| before == count) {
                    continue;
                }
                seen.last.insert(guard, (count, now));
                if let Some((before, then)) = previous
                    && let Some(phase) = seen.phase.as_mut()
                {
                    let steps = (count - before) as f64;
                    let gap = now.duration_since(then).as_secs_f64() / steps;
                    phase.gaps.extend(std::iter::repeat_n(gap, steps as usize));
                }
            }
        }
    });

    let well_behaved = (0..n)
        .map(|i| {
            guard(
                &ns,
                &format!("ok-{i}"),
                None,
                &format!("vector({})", i % 50),
            )
        })
        .collect();
    create_all(&api, well_behaved).await;
    tokio::time::sleep(Duration::from_secs(15)).await;

    let measure = |label: &'static str| {
        let seen = seen.clone();
        async move {
            seen.lock().unwrap().phase = Some(Phase::default());
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            let mut s = seen.lock().unwrap();
            let mut phase = s.phase.take().unwrap();
            let late = s.late.values().filter(|l| **l).count();
            let figures = report(label, &mut phase.gaps);
            println!("{label}: {late}/{n} guards OnSchedule=False at the end");
            figures
        }
    };
    let baseline = measure("baseline (200 guards alone)").await;
    let (base_peak, base_rss) = memory(pid);
    println!("baseline: operator RSS {base_rss:.1} MiB, peak {base_peak:.1} MiB");

    let (hang, huge, many) = hostile_endpoints().await;
    let mut hostile: Vec<RolloutGuard> = (0..70)
        .map(|i| guard(&ns, &format!("hang-{i}"), Some(&hang), "up"))
        .collect();
    hostile.push(guard(&ns, "huge", Some(&huge), "up"));
    hostile.push(guard(&ns, "many", Some(&many), "up"));
    create_all(&api, hostile).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let attacked = measure("beside hostile guards (70 hanging, 100 MiB, 10,000 series)").await;
    let (peak, rss) = memory(pid);
    println!(
        "beside hostile guards: operator RSS {rss:.1} MiB, peak {peak:.1} MiB (chart limit {CHART_MEMORY_LIMIT_MIB:.0} MiB: {:.0}% of it)",
        peak / CHART_MEMORY_LIMIT_MIB * 100.0
    );
    println!(
        "ratios hostile/baseline: gap p50 {:.2}, p99 {:.2}, max {:.2}; peak RSS {:.2}",
        attacked.0 / baseline.0,
        attacked.1 / baseline.1,
        attacked.2 / baseline.2,
        peak / base_peak
    );
    for name in ["hang-0", "huge", "many"] {
        let g = api.get(name).await.unwrap();
        let message = g
            .status
            .and_then(|s| {
                rollguard::conditions::get(&s.conditions, "PrometheusReachable")
                    .map(|c| format!("{}: {}", c.status, c.message))
            })
            .unwrap_or_default();
        println!(
            "guard {}: PrometheusReachable {message}",
            g.metadata.name.unwrap()
        );
    }
    drop(operator);
}
