//! `make bench`: latency from creating a RollbackRequest to the flags ConfigMap change
//! being seen by an independent watch, against a direct ConfigMap patch seen by the same
//! kind of watch — on the local control plane, the operator running as its own (release)
//! process. Immediate and graceful requests (the guard has no hooks) alternate with direct
//! patches in one run, each request on a quiet guard (the one before it finished and freed the
//! guard's slot, and the guard has judged the flag turned back on); prints p50/p99 of each and their ratio to the direct patch, and the
//! latency from creating a request to its signed "started" webhook arriving at a loopback
//! receiver.
//!
//! Beside them, the floor: the same request created in a namespace the operator does not
//! serve, where a bare client reacts to its watch event with one ConfigMap patch.
//!
//! Each measured action waits 150 ms first (`quiet`), so it meets a quiet control plane;
//! ROLLGUARD_BENCH_QUIET_MS=0 runs the rounds back to back.
//!
//! ROLLGUARD_BENCH_ITERATIONS (default 100) sets the sample size;
//! ROLLGUARD_BENCH_RECEIVER=0 runs the guard without its webhook receiver (flags only);
//! ROLLGUARD_BENCH_OPERATOR_LOG sets the operator's RUST_LOG.

#[path = "../tests/common/mod.rs"]
mod common;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use rollguard::api::guard::RolloutGuardStatus;
use rollguard::api::request::RequestPhase;
use rollguard::api::{RollbackRequest, RolloutGuard};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(name: &str, mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&ms, 50.0), percentile(&ms, 99.0));
    println!(
        "{name:<44} n={:<4} p50={p50:>8.2} ms  p99={p99:>8.2} ms  max={:>8.2} ms",
        ms.len(),
        ms[ms.len() - 1]
    );
    (p50, p99)
}

/// Waits until the watch shows flag `f` with `value`; returns when it was seen.
async fn seen(rx: &mut mpsc::UnboundedReceiver<(Instant, String)>, value: &str) -> Instant {
    loop {
        let (at, v) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("watch stalled")
            .expect("watch ended");
        if v == value {
            return at;
        }
    }
}

/// An independent observer of flag `f` of ConfigMap `ff` in `ns`: a plain watch on its own
/// connection, sending (when seen, value) for each change.
async fn observe(
    cluster: &common::Cluster,
    ns: &str,
) -> mpsc::UnboundedReceiver<(Instant, String)> {
    let client = common::client_for(&cluster.kubeconfig).await;
    let watched: Api<ConfigMap> = Api::namespaced(client, ns);
    let mut stream =
        common::watch_from_now(&watched, &WatchParams::default().fields("metadata.name=ff")).await;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(event)) = stream.next().await {
            if let WatchEvent::Modified(cm) = event {
                let value = cm
                    .data
                    .unwrap_or_default()
                    .get("f")
                    .cloned()
                    .unwrap_or_default();
                let _ = tx.send((Instant::now(), value));
            }
        }
    });
    rx
}

/// The floor of any operator's path, measured beside it: a bare client in `ns` (its own
/// connection, no operator) that watches RollbackRequests and, for each one added, patches
/// flag `f` off — one watch hop and one write after the request's creation, with nothing
/// recorded, claimed or snapshotted first.
async fn bare_reactor(cluster: &common::Cluster, ns: &str) {
    let client = common::client_for(&cluster.kubeconfig).await;
    let requests: Api<RollbackRequest> = Api::namespaced(client.clone(), ns);
    let config_maps: Api<ConfigMap> = Api::namespaced(client, ns);
    let mut stream = common::watch_from_now(&requests, &WatchParams::default()).await;
    tokio::spawn(async move {
        while let Some(Ok(event)) = stream.next().await {
            if let WatchEvent::Added(_) = event {
                let patch = serde_json::json!({"data": {"f": "false"}});
                config_maps
                    .patch("ff", &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .unwrap();
            }
        }
    });
}

/// A pause before each measured action (every path alike): what the previous round set
/// off — the last request's closing status writes and notifications, the guard's
/// evaluation of the flag turned back on — has ended, so each measurement meets a quiet
/// control plane, as a request in an incident usually does.
/// `ROLLGUARD_BENCH_QUIET_MS` (default 150) sets it; 0 runs the rounds back to back.
async fn quiet() {
    let ms = std::env::var("ROLLGUARD_BENCH_QUIET_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Waits until guard `g`'s status satisfies `done`.
async fn settled(guards: &Api<RolloutGuard>, done: impl Fn(&RolloutGuardStatus) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = guards.get("g").await.unwrap().status.unwrap_or_default();
        if done(&status) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "guard g never settled: {status:#?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::main]
async fn main() {
    let iterations: usize = std::env::var("ROLLGUARD_BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let cluster = common::cluster("rollback_latency bench")
        .await
        .expect("the benchmark needs the local control plane: make cluster-up");
    cluster.install_crds().await;
    let ns = cluster.namespace("bench").await;
    let with_receiver = std::env::var("ROLLGUARD_BENCH_RECEIVER").as_deref() != Ok("0");
    let notify = if with_receiver {
        "  notify: [{name: audit, type: webhook, secretRef: {name: hook}, \"on\": [started]}]\n"
    } else {
        ""
    };
    let receiver =
        common::receivers::HttpReceiver::start(common::receivers::Behaviour::Accept).await;
    cluster.apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ff, namespace: {ns}, labels: {{rollguard.dev/flags: \"true\"}}}}\ndata: {{f: \"false\", other: x}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: hook, namespace: {ns}, labels: {{rollguard.dev/credentials: \"true\"}}}}\nstringData: {{url: \"{url}\", signingKey: rollguard-bench-signing-key-0123456789}}\n---\n\
         apiVersion: rollguard.dev/v1alpha1\nkind: RolloutGuard\nmetadata: {{name: g, namespace: {ns}}}\nspec:\n  flags: {{configMapRef: {{name: ff}}, guarded: [f]}}\n{notify}",
        url = receiver.url
    ));
    // ROLLGUARD_BENCH_OPERATOR_LOG: the operator's RUST_LOG (e.g. kube_client=debug to see
    // each API call in target/test-logs/operator-bench-*.log).
    let log = std::env::var("ROLLGUARD_BENCH_OPERATOR_LOG").unwrap_or_else(|_| "warn".into());
    let _operator = cluster.start_operator(&ns, &[("RUST_LOG", log.as_str())]);

    let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &ns);
    let requests: Api<RollbackRequest> = Api::namespaced(cluster.client.clone(), &ns);
    let guards: Api<RolloutGuard> = Api::namespaced(cluster.client.clone(), &ns);
    let mut rx = observe(&cluster, &ns).await;
    // The same path without an operator: a bare client reacting to requests in its own
    // namespace (the operator does not serve it).
    let floor_ns = cluster.namespace("bench-floor").await;
    cluster.apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ff, namespace: {floor_ns}}}\ndata: {{f: \"false\", other: x}}\n"
    ));
    let mut floor_rx = observe(&cluster, &floor_ns).await;
    bare_reactor(&cluster, &floor_ns).await;
    let floor_config_maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &floor_ns);
    let floor_requests: Api<RollbackRequest> = Api::namespaced(cluster.client.clone(), &floor_ns);
    let set = |value: &'static str| {
        let config_maps = config_maps.clone();
        async move {
            let patch = serde_json::json!({"data": {"f": value}});
            config_maps
                .patch("ff", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap();
        }
    };

    // Warm-up: one round (i = 0) so connections and caches are established. Each round
    // runs an immediate rollback, a graceful one (the guard has no hooks) and a direct patch.
    let mut through_operator: Vec<(&str, Vec<f64>)> =
        vec![("immediate", Vec::new()), ("graceful", Vec::new())];
    let mut direct = Vec::new();
    let mut floor = Vec::new();
    let mut notified = Vec::new();
    // The creation call alone (part of every request's figure).
    let mut creates = Vec::new();
    for i in 0..=iterations {
        for (mode, samples) in through_operator.iter_mut() {
            set("true").await;
            seen(&mut rx, "true").await;
            // Once the guard has rolled back, turning the flag on is drift: wait until the
            // guard's evaluation has judged it, so the request meets a quiet guard.
            if i > 0 || *mode != "immediate" {
                settled(&guards, |s| {
                    rollguard::conditions::is_true(&s.conditions, "FlagsDrifted")
                })
                .await;
            }
            quiet().await;
            let name = format!("r{i}-{mode}");
            let request: RollbackRequest = serde_json::from_value(serde_json::json!({
                "apiVersion": "rollguard.dev/v1alpha1", "kind": "RollbackRequest",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"guardRef": {"name": "g"}, "requestedBy": "bench", "mode": mode}
            }))
            .unwrap();
            let start = Instant::now();
            requests
                .create(&PostParams::default(), &request)
                .await
                .unwrap();
            let created = Instant::now();
            let at = seen(&mut rx, "false").await;
            if i > 0 {
                samples.push(at.duration_since(start).as_secs_f64() * 1000.0);
                creates.push(created.duration_since(start).as_secs_f64() * 1000.0);
            }
            // Let the request finish and free the guard's slot, so the next one does not
            // queue behind it.
            loop {
                let r = requests.get(&name).await.unwrap();
                if r.status.and_then(|s| s.phase) == Some(RequestPhase::Succeeded) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            settled(&guards, |s| {
                s.active_rollback.is_none()
                    && s.last_rollback.as_ref().is_some_and(|r| r.name == name)
            })
            .await;
            let arrived = if !with_receiver {
                None
            } else {
                Some(loop {
                    let found = receiver.received().into_iter().find(|d| {
                        d.header("X-Rollguard-Event") == "started"
                            && d.json()["request"]["name"] == name
                    });
                    if let Some(d) = found {
                        break d.at;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                })
            };
            if let Some(arrived) = arrived
                && i > 0
            {
                notified.push(arrived.duration_since(start).as_secs_f64() * 1000.0);
            }
        }

        set("true").await;
        seen(&mut rx, "true").await;
        quiet().await;
        let start = Instant::now();
        set("false").await;
        let at = seen(&mut rx, "false").await;
        if i > 0 {
            direct.push(at.duration_since(start).as_secs_f64() * 1000.0);
        }

        let on = serde_json::json!({"data": {"f": "true"}});
        floor_config_maps
            .patch("ff", &PatchParams::default(), &Patch::Merge(&on))
            .await
            .unwrap();
        seen(&mut floor_rx, "true").await;
        quiet().await;
        let request: RollbackRequest = serde_json::from_value(serde_json::json!({
            "apiVersion": "rollguard.dev/v1alpha1", "kind": "RollbackRequest",
            "metadata": {"name": format!("r{i}"), "namespace": floor_ns},
            "spec": {"guardRef": {"name": "g"}, "requestedBy": "bench", "mode": "immediate"}
        }))
        .unwrap();
        let start = Instant::now();
        floor_requests
            .create(&PostParams::default(), &request)
            .await
            .unwrap();
        let at = seen(&mut floor_rx, "false").await;
        if i > 0 {
            floor.push(at.duration_since(start).as_secs_f64() * 1000.0);
        }
    }
    println!("rollback latency, {iterations} samples each, seen by an independent watch:");
    let (d50, d99) = summary("direct ConfigMap patch -> change seen", direct);
    summary("RollbackRequest create call (answered)", creates);
    let (f50, _) = summary("floor: request created -> bare client's patch seen", floor);
    println!(
        "  floor: ratio to direct p50 {:.1}x (one watch hop and one write more than a direct patch)",
        f50 / d50
    );
    for (mode, samples) in through_operator {
        let (op50, op99) = summary(
            &format!("{mode}: RollbackRequest created -> flags changed"),
            samples,
        );
        println!(
            "  {mode}: ratio to direct p50 {:.1}x (goal <= 3x), to the floor's p50 {:.1}x, p99 {:.1}x; p99 {op99:.1} ms (goal < 250 ms)",
            op50 / d50,
            op50 / f50,
            op99 / d99
        );
    }
    if with_receiver {
        summary("RollbackRequest created -> started webhook", notified);
    }
}
