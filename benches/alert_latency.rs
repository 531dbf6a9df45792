//! `make bench`: detection latency of alert triggers — from the moment a real Prometheus 3
//! rule starts firing (its `activeAt`, evaluation every second, `for: 0s`) to the automatic
//! RollbackRequest seen by an independent watch — through a real Alertmanager 0.35 (group
//! wait and interval 1s) in push mode (its webhook to rollguard) and in pull mode (the guard
//! reads `/api/v2/alerts` every `interval`, 1s). The baseline, measured in the same run: the
//! same Alertmanager notification reaching a bare loopback receiver (Alertmanager's own
//! delivery, what any webhook consumer sees); push's ratio against it is rollguard's share.
//!
//! ROLLGUARD_BENCH_ITERATIONS (default 10) sets the samples per mode.

#[path = "../tests/common/mod.rs"]
mod common;

use common::alerting::{Alerting, Webhook, free_port};
use futures::StreamExt;
use kube::api::{Api, WatchEvent, WatchParams};
use rollguard::api::RollbackRequest;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

const TOKEN: &str = "bench-alertmanager-token-7c1d";

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(name: &str, mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&ms, 50.0), percentile(&ms, 99.0));
    println!(
        "{name:<52} n={:<3} p50={p50:>8.0} ms  p99={p99:>8.0} ms  max={:>8.0} ms",
        ms.len(),
        ms[ms.len() - 1]
    );
    (p50, p99)
}

fn millis_between(from: SystemTime, to: SystemTime) -> f64 {
    to.duration_since(from).unwrap_or_default().as_secs_f64() * 1000.0
}

/// One guard per sample (`g<i>` over its own ConfigMap), with an alert trigger on the rule.
fn guard(ns: &str, i: usize, alertmanager: Option<&str>) -> String {
    let pull = alertmanager
        .map(|url| format!("  alertmanager: {{address: \"{url}\"}}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ff{i}, namespace: {ns}, labels: {{rollguard.dev/flags: \"true\"}}}}\ndata: {{a: \"true\"}}\n---\n\
         apiVersion: rollguard.dev/v1alpha1\nkind: RolloutGuard\nmetadata: {{name: g{i}, namespace: {ns}}}\nspec:\n  flags: {{configMapRef: {{name: ff{i}}}, guarded: [a]}}\n{pull}  interval: 1s\n  triggers:\n    - name: high-errors\n      alert: {{matchers: {{alertname: {alert}}}}}\n",
        alert = common::alerting::ALERT
    )
}

/// Samples of one mode: (activeAt → request seen, activeAt → bare receiver reached).
async fn run(cluster: &common::Cluster, pull: bool, iterations: usize) -> (Vec<f64>, Vec<f64>) {
    let ns = cluster
        .namespace(if pull {
            "bench-alerts-pull"
        } else {
            "bench-alerts-push"
        })
        .await;
    let dir = common::repo().join("target/test-logs");
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join(format!("bench-token-{ns}"));
    std::fs::write(&token_file, TOKEN).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let rollguard = Webhook {
        url: format!("http://{addr}/v1/alertmanager"),
        token_file: token_file.clone(),
    };
    let bare = common::receivers::HttpReceiver::start(common::receivers::Behaviour::Accept).await;
    let bare_hook = Webhook {
        url: bare.url.clone(),
        token_file: token_file.clone(),
    };
    let webhooks: Vec<&Webhook> = if pull {
        vec![&bare_hook]
    } else {
        vec![&rollguard, &bare_hook]
    };
    let alerting = Alerting::start(&ns, &webhooks).await.expect(
        "the benchmark needs prometheus and alertmanager: tests/cluster/build-tools.sh all",
    );
    let mut args = vec!["--leader-elect=false"];
    if !pull {
        args.extend([
            "--webhook-addr",
            &addr,
            "--webhook-token-file",
            token_file.to_str().unwrap(),
        ]);
    }
    let _operator = cluster.start_operator_with(&ns, &[("RUST_LOG", "warn")], &args);

    // The independent observer of request creations: a plain watch on its own connection.
    let watcher_client = common::client_for(&cluster.kubeconfig).await;
    let watched: Api<RollbackRequest> = Api::namespaced(watcher_client, &ns);
    let mut stream = watched
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    let (tx, mut created) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(event)) = stream.next().await {
            if let WatchEvent::Added(r) = event {
                let _ = tx.send((SystemTime::now(), r.spec.guard_ref.name));
            }
        }
    });
    let clock = (Instant::now(), SystemTime::now());
    let wall = |at: Instant| clock.1 + at.duration_since(clock.0);

    let (mut detected, mut delivered) = (Vec::new(), Vec::new());
    // Sample 0 warms connections and caches up and is not counted.
    for i in 0..=iterations {
        cluster.apply(&guard(
            &ns,
            i,
            pull.then_some(alerting.alertmanager_url.as_str()),
        ));
        let guards: Api<rollguard::api::RolloutGuard> =
            Api::namespaced(cluster.client.clone(), &ns);
        common::wait_until(
            Duration::from_secs(30),
            "the guard's first evaluation",
            || async {
                guards
                    .get(&format!("g{i}"))
                    .await
                    .ok()?
                    .status?
                    .last_evaluation_time
                    .map(|_| ())
            },
        )
        .await;
        let posts_before = bare.received().len();
        alerting.set_errors(true);
        let fired_at = common::wait_until(Duration::from_secs(30), "the rule firing", || {
            alerting.firing_since()
        })
        .await;
        let fired_at =
            SystemTime::UNIX_EPOCH + Duration::from_nanos(fired_at.as_nanosecond() as u64);
        let seen_at = loop {
            let (at, guard) = tokio::time::timeout(Duration::from_secs(60), created.recv())
                .await
                .expect("no request within 60s")
                .expect("watch ended");
            if guard == format!("g{i}") {
                break at;
            }
        };
        let reached = common::wait_until(
            Duration::from_secs(30),
            "the bare receiver reached",
            || async {
                bare.received()
                    .into_iter()
                    .skip(posts_before)
                    .find(|r| r.json()["status"] == "firing")
                    .map(|r| r.at)
            },
        )
        .await;
        if i > 0 {
            detected.push(millis_between(fired_at, seen_at));
            delivered.push(millis_between(fired_at, wall(reached)));
        }
        // Resolved everywhere before the next sample: Prometheus, and Alertmanager's notice.
        let posts_before = bare.received().len();
        alerting.set_errors(false);
        common::wait_until(Duration::from_secs(60), "the alert resolved", || async {
            let resolved = bare
                .received()
                .into_iter()
                .skip(posts_before)
                .any(|r| r.json()["status"] == "resolved");
            let quiet = alerting.firing_since().await.is_none()
                && alerting.alertmanager_active().await == Some(0);
            (resolved && quiet).then_some(())
        })
        .await;
        // A guard's reads of one Alertmanager are shared per interval (1s): the next guard
        // must not be handed a read from before the resolution.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    (detected, delivered)
}

#[tokio::main]
async fn main() {
    let iterations: usize = std::env::var("ROLLGUARD_BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let cluster = common::cluster("alert_latency bench")
        .await
        .expect("the benchmark needs the local control plane: make cluster-up");
    cluster.install_crds().await;
    let (push, push_baseline) = run(&cluster, false, iterations).await;
    let (pull, pull_baseline) = run(&cluster, true, iterations).await;
    println!(
        "alert detection latency, {iterations} samples per mode (rule evaluation 1s, group_wait/group_interval 1s, guard interval 1s):"
    );
    let (b50, b99) = summary(
        "rule firing -> Alertmanager webhook at a bare receiver",
        push_baseline,
    );
    let (p50, p99) = summary("rule firing -> request created (push)", push);
    summary(
        "rule firing -> Alertmanager webhook at a bare receiver (pull run)",
        pull_baseline,
    );
    summary("rule firing -> request created (pull)", pull);
    println!(
        "ratio (push / bare receiver): p50 {:.2}x, p99 {:.2}x",
        p50 / b50,
        p99 / b99
    );
}
