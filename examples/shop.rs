//! The demo's simulated "shop" (`make demo`), and a webhook receiver for rollguard's
//! notifications, in one process on two loopback ports.
//!
//! The shop serves no real customers: a load loop simulates 200 requests a second and
//! exports what a real service would, on `GET /metrics`:
//!
//! | metric | what |
//! |---|---|
//! | `http_requests_total{code}` | requests by status code (about 0.2 % are 500s when healthy) |
//! | `http_request_duration_seconds` | latency histogram |
//! | `user_satisfaction_score` | gauge, 1 to 5 (4.3 when healthy) |
//! | `consensus_rounds_total`, `consensus_rounds_failed_total` | validation consensus rounds (1 % fail) |
//! | `support_tickets_created_total` | support tickets (one a second) |
//! | `process_start_time_seconds` | when the shop started (the tickets' baseline is the rate since then) |
//! | `feature_flag_evaluations_total{feature_flag_key,feature_flag_result_variant}` | the new feature's flag evaluated for each request, by the variant served (`on`/`off`), as OpenFeature's OpenTelemetry hook would count them |
//!
//! The new feature is flag `completion_validation_system` in ConfigMap `feature-flags`;
//! the shop watches that ConfigMap through the Kubernetes API (so a flag change reaches
//! it within a second, as flagd's Kubernetes sync would). `POST /control?error_rate=0.25`
//! makes the new feature's code path fail for that share of requests — while the flag is
//! on. With the flag off (a rollback), requests take the old path and the errors stop.
//! `POST /drain` and `/resume` are the rollback hooks; `GET /healthz` the health check.
//!
//! `POST /control?flags_from=volume` makes the shop read the flag from a file instead, as an
//! application reading a ConfigMap mounted as a volume does (`flags_from=api` goes back): the
//! file is kept by a stand-in kubelet (shop/kubelet.rs), late, or at once when rollguard's
//! `refreshPods` annotates the pod.
//!
//! The receiver (`POST /hook` on the second port) checks each notification's Standard
//! Webhooks signature (`webhook-signature`: `v1,<base64 HMAC-SHA256>` over
//! `<webhook-id>.<webhook-timestamp>.<body>` with the Secret's `signingKey`, timestamps
//! within five minutes), answers 401 to a bad one, and prints each one it receives;
//! `GET /hook` lists them as JSON. A real receiver would use a `standardwebhooks` library.
//!
//! Configuration (environment): `SHOP_ADDR` (127.0.0.1:18081), `HOOK_ADDR`
//! (127.0.0.1:18082), `HOOK_SIGNING_KEY`, `SHOP_NAMESPACE` (shop), `SHOP_FLAGS`
//! (feature-flags), `SHOP_FEATURE_FLAG` (completion_validation_system), `KUBECONFIG`;
//! the volume: `SHOP_VOLUME_DIR` (target/demo/volume), `SHOP_POD` (shop-0),
//! `SHOP_KUBELET_DELAY` (20 seconds).

#[path = "shop/kubelet.rs"]
mod kubelet;
#[path = "shop/receiver.rs"]
mod receiver;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::runtime::watcher;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Requests simulated per 100 ms tick.
const PER_TICK: u64 = 20;
/// Latencies of one tick's requests, in seconds: the same mix every tick, so the p95
/// does not wobble and a baseline comparison stays quiet while nothing changes.
const LATENCIES: [f64; PER_TICK as usize] = [
    0.021, 0.024, 0.028, 0.031, 0.035, 0.038, 0.042, 0.045, 0.05, 0.055, 0.061, 0.068, 0.075,
    0.083, 0.092, 0.11, 0.13, 0.16, 0.21, 0.32,
];
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Share of requests that fail whatever the flags say.
const BASE_ERROR_RATE: f64 = 0.002;

#[derive(Default)]
struct Shop {
    /// The new feature's flag.
    flag: String,
    /// Unix seconds when the shop started (`process_start_time_seconds`).
    started: f64,
    /// Whether the new feature's flag is on, as the shop serves it.
    feature_on: bool,
    /// The flag as last seen through the API.
    api_on: bool,
    /// Read the flag from the volume's file instead of the API.
    from_volume: bool,
    /// Evaluations of the flag: variant on, variant off.
    evaluations: [u64; 2],
    /// Share of new-feature requests that fail (the injected bug).
    fault: f64,
    ok: u64,
    errors: u64,
    /// Accumulates fractional errors so the error share is exact, not random.
    error_debt: f64,
    buckets: [u64; BUCKETS.len()],
    latency_sum: f64,
    latency_count: u64,
    consensus_rounds: u64,
    consensus_failed: u64,
    tickets: u64,
    ticks: u64,
}

impl Shop {
    fn tick(&mut self) {
        self.ticks += 1;
        self.evaluations[usize::from(!self.feature_on)] += PER_TICK;
        let failing_share = BASE_ERROR_RATE + if self.feature_on { self.fault } else { 0.0 };
        self.error_debt += failing_share * PER_TICK as f64;
        let errors = (self.error_debt.floor() as u64).min(PER_TICK);
        self.error_debt -= errors as f64;
        self.errors += errors;
        self.ok += PER_TICK - errors;
        for latency in LATENCIES {
            for (i, le) in BUCKETS.iter().enumerate() {
                if latency <= *le {
                    self.buckets[i] += 1;
                }
            }
            self.latency_sum += latency;
            self.latency_count += 1;
        }
        self.consensus_rounds += 10;
        if self.ticks.is_multiple_of(10) {
            self.consensus_failed += 1; // 1 of 100 rounds
            self.tickets += 1; // one a second
        }
    }

    /// Users notice the errors a little; not enough to breach 4.0 on its own.
    /// Serves `on` from now on, saying so when it changes.
    fn serve(&mut self, on: bool, source: &str) {
        if self.feature_on != on {
            self.feature_on = on;
            say(&format!(
                "[shop] flag {} is now {} ({source}): requests take the {} path",
                self.flag,
                if on { "on" } else { "off" },
                if on { "new" } else { "old" }
            ));
        }
    }

    fn satisfaction(&self) -> f64 {
        if self.feature_on && self.fault > 0.0 {
            4.1
        } else {
            4.3
        }
    }

    fn exposition(&self) -> String {
        let mut m = String::new();
        m += "# HELP http_requests_total Requests served, by status code.\n";
        m += "# TYPE http_requests_total counter\n";
        m += &format!("http_requests_total{{code=\"200\"}} {}\n", self.ok);
        m += &format!("http_requests_total{{code=\"500\"}} {}\n", self.errors);
        m += "# HELP http_request_duration_seconds Request latency.\n";
        m += "# TYPE http_request_duration_seconds histogram\n";
        for (i, le) in BUCKETS.iter().enumerate() {
            m += &format!(
                "http_request_duration_seconds_bucket{{le=\"{le}\"}} {}\n",
                self.buckets[i]
            );
        }
        m += &format!(
            "http_request_duration_seconds_bucket{{le=\"+Inf\"}} {}\n",
            self.latency_count
        );
        m += &format!("http_request_duration_seconds_sum {}\n", self.latency_sum);
        m += &format!(
            "http_request_duration_seconds_count {}\n",
            self.latency_count
        );
        m += "# HELP user_satisfaction_score Average rating of the last sessions, 1 to 5.\n";
        m += "# TYPE user_satisfaction_score gauge\n";
        m += &format!("user_satisfaction_score {}\n", self.satisfaction());
        m += "# TYPE consensus_rounds_total counter\n";
        m += &format!("consensus_rounds_total {}\n", self.consensus_rounds);
        m += "# TYPE consensus_rounds_failed_total counter\n";
        m += &format!("consensus_rounds_failed_total {}\n", self.consensus_failed);
        m += "# TYPE support_tickets_created_total counter\n";
        m += &format!("support_tickets_created_total {}\n", self.tickets);
        m += "# TYPE process_start_time_seconds gauge\n";
        m += &format!("process_start_time_seconds {}\n", self.started);
        m += "# HELP shop_feature_enabled Whether the new feature's flag is on, as the shop sees it.\n";
        m += "# TYPE shop_feature_enabled gauge\n";
        m += &format!("shop_feature_enabled {}\n", u8::from(self.feature_on));
        m += "# HELP feature_flag_evaluations_total Flag evaluations by flag and variant served.\n";
        m += "# TYPE feature_flag_evaluations_total counter\n";
        for (variant, n) in ["on", "off"].iter().zip(self.evaluations) {
            m += &format!(
                "feature_flag_evaluations_total{{feature_flag_key=\"{}\",feature_flag_result_variant=\"{variant}\"}} {n}\n",
                self.flag
            );
        }
        m
    }
}

type Shared = Arc<Mutex<Shop>>;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn say(what: &str) {
    let now = jiff::Zoned::now().strftime("%H:%M:%S%.3f");
    println!("{now} {what}");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let shop_addr = env("SHOP_ADDR", "127.0.0.1:18081");
    let hook_addr = env("HOOK_ADDR", "127.0.0.1:18082");
    let namespace = env("SHOP_NAMESPACE", "shop");
    let flags = env("SHOP_FLAGS", "feature-flags");
    let flag = env("SHOP_FEATURE_FLAG", "completion_validation_system");
    let key = std::env::var("HOOK_SIGNING_KEY")
        .map_err(|_| anyhow::anyhow!("HOOK_SIGNING_KEY is not set"))?;

    let volume = std::path::PathBuf::from(env("SHOP_VOLUME_DIR", "target/demo/volume"));
    let shop: Shared = Arc::new(Mutex::new(Shop {
        started: jiff::Timestamp::now().as_millisecond() as f64 / 1000.0,
        flag: flag.clone(),
        ..Shop::default()
    }));
    let client = rollguard::controller::client(None).await?;
    tokio::spawn(watch_flag(
        Api::namespaced(client.clone(), &namespace),
        flags.clone(),
        flag.clone(),
        shop.clone(),
    ));
    tokio::spawn(kubelet::run(client, namespace, flags, volume.clone()));
    let load = shop.clone();
    let file = volume.join(&flag);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(100));
        loop {
            every.tick().await;
            let mut s = load.lock().unwrap();
            if s.from_volume
                && let Ok(value) = std::fs::read_to_string(&file)
            {
                s.serve(value.trim() == "true", "read from the volume");
            }
            s.tick();
        }
    });

    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/control", get(control_get).post(control_post))
        .route("/drain", post(|| hook_called("drain")))
        .route("/resume", post(|| hook_called("resume")))
        .with_state(shop);
    let receiver = receiver::Receiver {
        // As rollguard reads `signingKey`: `whsec_<base64>`, or a raw key used as its bytes.
        key: match key.trim().strip_prefix("whsec_") {
            Some(encoded) => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|_| anyhow::anyhow!("HOOK_SIGNING_KEY: whsec_ without base64"))?,
            None => key.trim().as_bytes().to_vec(),
        },
        received: Arc::default(),
    };
    let hooks = Router::new()
        .route(
            "/hook",
            post(receiver::receive).get(receiver::list_received),
        )
        .with_state(receiver);

    let shop_listener = tokio::net::TcpListener::bind(&shop_addr).await?;
    let hook_listener = tokio::net::TcpListener::bind(&hook_addr).await?;
    say(&format!(
        "[shop] serving http://{shop_addr}/metrics; webhook receiver at http://{hook_addr}/hook"
    ));
    tokio::try_join!(async { axum::serve(shop_listener, app).await }, async {
        axum::serve(hook_listener, hooks).await
    },)?;
    Ok(())
}

/// Follows the flags ConfigMap through the API, as an application using the API (or
/// flagd's Kubernetes sync) does: a change arrives within a second.
async fn watch_flag(api: Api<ConfigMap>, name: String, flag: String, shop: Shared) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(api, config).boxed();
    loop {
        match events.try_next().await {
            Ok(Some(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm))) => {
                let on = cm
                    .data
                    .as_ref()
                    .and_then(|d| d.get(&flag))
                    .is_some_and(|v| v == "true");
                let mut s = shop.lock().unwrap();
                s.api_on = on;
                if !s.from_volume {
                    s.serve(on, "seen through the API");
                }
            }
            Ok(Some(watcher::Event::Delete(_))) => shop.lock().unwrap().api_on = false,
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(e) => {
                say(&format!("[shop] watching ConfigMap {name}: {e}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn metrics(State(shop): State<Shared>) -> String {
    shop.lock().unwrap().exposition()
}

fn state_json(s: &Shop) -> serde_json::Value {
    let total = s.ok + s.errors;
    serde_json::json!({
        "featureOn": s.feature_on,
        "injectedErrorRate": s.fault,
        "flagsFrom": if s.from_volume { "volume" } else { "api" },
        "requests": total,
        "errors": s.errors,
    })
}

async fn control_get(State(shop): State<Shared>) -> Json<serde_json::Value> {
    Json(state_json(&shop.lock().unwrap()))
}

/// `POST /control?error_rate=0.25`: the share of new-feature requests that fail;
/// `POST /control?flags_from=volume` (or `api`): where the shop reads its flag.
async fn control_post(
    State(shop): State<Shared>,
    RawQuery(query): RawQuery,
) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
    let query = query.unwrap_or_default();
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
    };
    let bad = |what: &str| (StatusCode::BAD_REQUEST, format!("{what}\n"));
    let mut s = shop.lock().unwrap();
    match param("error_rate") {
        Some(rate) => {
            let rate: f64 = rate
                .parse()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or(bad("error_rate must be a number from 0 to 1"))?;
            s.fault = rate;
            say(&format!(
                "[shop] new feature now fails {:.0} % of its requests",
                rate * 100.0
            ));
        }
        None if param("flags_from").is_none() => {
            return Err(bad("give error_rate=0..1 or flags_from=volume|api"));
        }
        None => {}
    }
    match param("flags_from") {
        Some("volume") => {
            s.from_volume = true;
            say("[shop] reading flags from the mounted volume from now on");
        }
        Some("api") => {
            s.from_volume = false;
            let on = s.api_on;
            s.serve(on, "seen through the API");
            say("[shop] reading flags through the API from now on");
        }
        Some(_) => return Err(bad("flags_from must be volume or api")),
        None => {}
    }
    Ok(Json(state_json(&s)))
}

async fn hook_called(which: &str) -> &'static str {
    match which {
        "drain" => say("[shop] preRollback hook: draining in-flight validations"),
        _ => say("[shop] postRollback hook: resuming"),
    }
    "ok\n"
}
