//! "Any Prometheus-compatible backend", tested with a second one users run: VictoriaMetrics
//! (Debian's `victoria-metrics`, single-node), started by this test on loopback and scraping
//! an endpoint the test serves. A guard whose `spec.prometheus.address` names it fires an
//! automatic rollback on a `rate()` error-ratio trigger, and the rollback verifies (the
//! shortened-range verification of the same query) once the errors stop — all through
//! VictoriaMetrics' own PromQL (MetricsQL) engine. The rest of the suite runs against
//! Prometheus 3 (tests/cluster/up.sh).
//!
//! `VICTORIA_METRICS` overrides the binary (default: `victoria-metrics` on PATH). Without one
//! the test says why and returns; under `CI=true` that is a failure.

mod common;

use axum::{Router, routing::get};
use common::{Env, wait_until};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use rollguard::api::RollbackRequest;
use rollguard::api::guard::GuardPhase;
use rollguard::api::request::RequestPhase;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// victoria-metrics from `VICTORIA_METRICS` or PATH, or None (with a message) outside CI.
fn victoria_metrics() -> Option<PathBuf> {
    let found = std::env::var_os("VICTORIA_METRICS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .map(|dir| dir.join("victoria-metrics"))
                .find(|p| p.is_file())
        });
    if let Some(path) = found.filter(|p| p.is_file()) {
        return Some(path);
    }
    let msg = "no victoria-metrics: install Debian's `victoria-metrics` package (make test does, as root) or set VICTORIA_METRICS";
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
    eprintln!("SKIPPED: {msg}");
    None
}

/// A single-node VictoriaMetrics on a free loopback port, scraping `target` every second;
/// stopped (and its data removed) on drop.
struct VictoriaMetrics {
    child: Child,
    dir: PathBuf,
    url: String,
}

impl VictoriaMetrics {
    async fn start(binary: &PathBuf, target: &str) -> VictoriaMetrics {
        let dir = std::env::temp_dir().join(format!("rollguard-vm-{}", common::unique_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("scrape.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: shop\n    static_configs: [{{targets: ['{target}']}}]\n"
            ),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.join("victoria-metrics.log")).unwrap();
        let child = Command::new(binary)
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!("-storageDataPath={}", dir.join("data").display()))
            .arg(format!("-promscrape.config={}", config.display()))
            .args([
                "-retentionPeriod=1d",
                // By default queries ignore the newest 30 s (samples still arriving) and cache
                // results; with a 1 s scrape interval a test wants what was just scraped.
                "-search.latencyOffset=0s",
                "-search.disableCache",
                "-loggerLevel=WARN",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start victoria-metrics");
        let vm = VictoriaMetrics {
            child,
            dir,
            url: format!("http://127.0.0.1:{port}"),
        };
        let health = format!("{}/health", vm.url);
        wait_until(Duration::from_secs(30), "victoria-metrics ready", || {
            let health = health.clone();
            async move {
                let r = reqwest::get(&health).await.ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await;
        vm
    }

    /// The value of an instant query, through the Prometheus HTTP API VictoriaMetrics serves.
    async fn value(&self, query: &str) -> Option<f64> {
        let client = prometheus_http_query::Client::try_from(self.url.as_str()).ok()?;
        let result = client.query(query).get().await.ok()?;
        result
            .data()
            .as_vector()?
            .first()
            .map(|s| s.sample().value())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("victoria-metrics.log")).unwrap_or_default()
    }
}

impl Drop for VictoriaMetrics {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn a_rate_trigger_on_victoria_metrics_fires_a_rollback_that_verifies_once_the_errors_stop() {
    let Some(binary) = victoria_metrics() else {
        return;
    };
    let Some(env) = Env::start("victoria_metrics", &[]).await else {
        return;
    };
    env.cluster.apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ff, namespace: {}, labels: {{rollguard.dev/flags: \"true\"}}}}\ndata: {{a: \"true\", b: \"true\"}}\n",
        env.ns
    ));

    // A shop: 50 requests a second, of which half fail while the error switch is on and flag
    // `a` (the buggy feature) is on. The rollback turning `a` off is what stops the errors.
    let failing = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(std::sync::Mutex::new((0u64, 0u64)));
    {
        let (failing, counters, config_maps) =
            (failing.clone(), counters.clone(), env.config_maps());
        tokio::spawn(async move {
            loop {
                let a_on = config_maps
                    .get("ff")
                    .await
                    .ok()
                    .and_then(|cm| cm.data)
                    .is_some_and(|d| d.get("a").map(String::as_str) == Some("true"));
                {
                    let mut c = counters.lock().unwrap();
                    c.0 += 10;
                    if a_on && failing.load(Ordering::SeqCst) {
                        c.1 += 5;
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }
    let served = counters.clone();
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let (requests, errors) = *served.lock().unwrap();
            async move {
                format!(
                    "# TYPE shop_requests_total counter\nshop_requests_total {requests}\n# TYPE shop_errors_total counter\nshop_errors_total {errors}\n"
                )
            }
        }),
    );
    let addr = common::serve(app).await;
    let vm = VictoriaMetrics::start(&binary, &addr.to_string()).await;
    let ratio = "sum(rate(shop_errors_total[10s])) / sum(rate(shop_requests_total[10s]))";
    wait_until(
        Duration::from_secs(30),
        "victoria-metrics to answer the error ratio (0) from its scrapes",
        || async { vm.value(ratio).await.filter(|v| *v == 0.0) },
    )
    .await;

    env.cluster.apply(&format!(
        "apiVersion: rollguard.dev/v1alpha1\nkind: RolloutGuard\nmetadata: {{name: g, namespace: {ns}}}\nspec:\n  interval: 1s\n  prometheus: {{address: \"{url}\"}}\n  flags: {{configMapRef: {{name: ff}}, guarded: [a, b]}}\n  triggers: [{{name: error-ratio, query: \"{ratio}\", above: 0.1, for: 3s}}]\n  health: {{timeout: 60s}}\n  rollback: {{cooldown: 1h}}\n",
        ns = env.ns,
        url = vm.url,
    ));
    let guards: Api<rollguard::api::RolloutGuard> = env.api();
    let value_of = |g: &rollguard::api::RolloutGuard| {
        g.status
            .as_ref()?
            .triggers
            .iter()
            .find(|t| t.name == "error-ratio" && t.last_error.is_none())?
            .value
    };
    wait_until(
        Duration::from_secs(30),
        "the guard Monitoring with the ratio read from victoria-metrics",
        || {
            let guards = guards.clone();
            async move {
                let g = guards.get("g").await.ok()?;
                (g.status.as_ref()?.phase == Some(GuardPhase::Monitoring)
                    && value_of(&g) == Some(0.0))
                .then_some(())
            }
        },
    )
    .await;

    // The bug: half the requests fail. The trigger breaches, holds for 3 s and fires.
    failing.store(true, Ordering::SeqCst);
    let requests = env.requests();
    let request = common::automatic_request(&requests, "g", Duration::from_secs(60)).await;
    let name = request.metadata.name.clone().unwrap();
    assert_eq!(request.spec.requested_by, "system:rollguard");

    // Flag `a` off stops the errors; verification judges the trigger on the time since.
    let api: Api<RollbackRequest> = env.api();
    let done = wait_until(
        Duration::from_secs(90),
        &format!("request {name} to finish"),
        || {
            let api = api.clone();
            let name = name.clone();
            async move {
                let r = api.get(&name).await.ok()?;
                let phase = r.status.as_ref()?.phase?;
                matches!(phase, RequestPhase::Succeeded | RequestPhase::Failed).then_some(r)
            }
        },
    )
    .await;
    let status = done.status.unwrap();
    assert_eq!(
        status.phase,
        Some(RequestPhase::Succeeded),
        "{status:#?}\n--- victoria-metrics log ---\n{}",
        vm.log()
    );
    let triggered = status.triggered_by.unwrap();
    assert_eq!(triggered.trigger, "error-ratio");
    assert!(
        triggered.value.is_some_and(|v| v > 0.1 && v <= 0.5),
        "the breaching ratio as victoria-metrics computed it: {:?}",
        triggered.value
    );
    let data = Api::<ConfigMap>::namespaced(env.cluster.client.clone(), &env.ns)
        .get("ff")
        .await
        .unwrap()
        .data
        .unwrap();
    assert_eq!((data["a"].as_str(), data["b"].as_str()), ("false", "false"));
}
