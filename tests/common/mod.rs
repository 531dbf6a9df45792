//! Shared harness of the integration tests: the local control plane started by
//! `make cluster-up` (tests/cluster/up.sh), found through target/cluster/env.
//!
//! Without a control plane a test prints why and returns early; under `CI=true` that is a
//! failure instead, so CI can never pass by skipping.
#![allow(dead_code)]

pub mod alerting;
pub mod gauges;
pub mod plane;
pub mod proxy;
pub mod receivers;
pub mod tenancy;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct Cluster {
    pub client: Client,
    pub kubeconfig: PathBuf,
    pub prometheus_url: String,
    pub prom_sd_dir: PathBuf,
    pub user_kubeconfig_dir: PathBuf,
    /// Directory holding kubectl.
    pub tools_path: String,
}

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Variables of target/cluster/env (or `$CLUSTER_STATE/env`, the state directory
/// tests/cluster/up.sh was given), overridden by the process environment.
fn cluster_env() -> Option<HashMap<String, String>> {
    let state = std::env::var_os("CLUSTER_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/cluster"));
    let file = state.join("env");
    let mut vars = HashMap::new();
    if let Ok(text) = std::fs::read_to_string(&file) {
        for line in text.lines() {
            if let Some((k, v)) = line.strip_prefix("export ").and_then(|l| l.split_once('=')) {
                vars.insert(k.to_string(), v.to_string());
            }
        }
    }
    for key in [
        "KUBECONFIG",
        "PROMETHEUS_URL",
        "PROM_SD_DIR",
        "USER_KUBECONFIG_DIR",
    ] {
        if let Ok(v) = std::env::var(key) {
            vars.insert(key.to_string(), v);
        }
    }
    [
        "KUBECONFIG",
        "PROMETHEUS_URL",
        "PROM_SD_DIR",
        "USER_KUBECONFIG_DIR",
    ]
    .iter()
    .all(|k| vars.contains_key(*k))
    .then_some(vars)
}

/// The local control plane, or None (with a message) when it is not up outside CI.
pub async fn cluster(test: &str) -> Option<Cluster> {
    rollguard::install_crypto_provider();
    let Some(vars) = cluster_env() else {
        let msg = "no local control plane: run `make cluster-up` (or `make test`, which starts it)";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test}: {msg}");
        }
        eprintln!("SKIPPED {test}: {msg}");
        return None;
    };
    let kubeconfig = PathBuf::from(&vars["KUBECONFIG"]);
    let client = client_for(&kubeconfig).await;
    let tools_path = vars
        .get("PATH")
        .and_then(|p| p.split(':').next())
        .unwrap_or_default()
        .to_string();
    Some(Cluster {
        client,
        kubeconfig,
        prometheus_url: vars["PROMETHEUS_URL"].clone(),
        prom_sd_dir: PathBuf::from(&vars["PROM_SD_DIR"]),
        user_kubeconfig_dir: PathBuf::from(&vars["USER_KUBECONFIG_DIR"]),
        tools_path,
    })
}

pub async fn client_for(kubeconfig: &Path) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    Client::try_from(config).expect("client")
}

impl Cluster {
    /// A client authenticated as one of the unprivileged test users (`alice`, `bob`).
    pub async fn user_client(&self, user: &str) -> Client {
        client_for(&self.user_kubeconfig_dir.join(format!("{user}.kubeconfig"))).await
    }

    /// Installs both CRDs (server-side apply, as `kubectl apply --server-side` would) and
    /// waits until the API server reports them Established.
    pub async fn install_crds(&self) {
        let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let pp = PatchParams::apply("rollguard-tests").force();
        for crd in rollguard::crd::definitions() {
            let name = crd.metadata.name.clone().unwrap();
            crds.patch(&name, &pp, &Patch::Apply(&crd))
                .await
                .expect("apply CRD");
            wait_until(
                Duration::from_secs(30),
                &format!("CRD {name} Established"),
                || {
                    let crds = crds.clone();
                    let name = name.clone();
                    async move {
                        let crd = crds.get(&name).await.ok()?;
                        let established = crd
                            .status?
                            .conditions?
                            .iter()
                            .any(|c| c.type_ == "Established" && c.status == "True");
                        established.then_some(())
                    }
                },
            )
            .await;
        }
    }

    /// A fresh namespace for one test. It is never deleted: this control plane has no
    /// namespace controller to finish a deletion; `make cluster-down` removes everything.
    pub async fn namespace(&self, prefix: &str) -> String {
        let name = format!("{prefix}-{}", unique_suffix());
        let nss: Api<Namespace> = Api::all(self.client.clone());
        let ns: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
        nss.create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        name
    }

    /// `kubectl` with the admin kubeconfig (or `kubeconfig`), returning (success, stdout, stderr).
    pub fn kubectl(&self, args: &[&str]) -> (bool, String, String) {
        self.kubectl_as(&self.kubeconfig, args)
    }

    pub fn kubectl_as(&self, kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
        let path = format!(
            "{}:{}",
            self.tools_path,
            std::env::var("PATH").unwrap_or_default()
        );
        let out = std::process::Command::new("kubectl")
            .env("PATH", path)
            .env("KUBECONFIG", kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// A short suffix unique across test processes.
pub fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{:x}{n}", std::process::id() % 0xfff, nanos % 0xfffff)
}

/// Polls `probe` until it returns Some, or panics naming `what` after `timeout`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The operator, running as its own process (`rollguard run`) scoped to one namespace.
pub struct Operator {
    child: std::process::Child,
    pub log: PathBuf,
    /// Where its /metrics, /healthz and /readyz are served.
    pub metrics_url: String,
}

impl Operator {
    /// Waits until its /readyz answers 200 (its caches synced; for a standby, standing by).
    pub async fn wait_ready(&self) {
        let ready = format!("{}/readyz", self.metrics_url);
        wait_until(Duration::from_secs(30), "the operator ready", || {
            let url = ready.clone();
            async move {
                let r = reqwest::get(&url).await.ok()?;
                (r.status().as_u16() == 200).then_some(())
            }
        })
        .await;
    }

    /// Whether the log holds `needle` yet.
    pub fn log_contains(&self, needle: &str) -> bool {
        std::fs::read_to_string(&self.log).is_ok_and(|l| l.contains(needle))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The exit status if the process has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("wait for the operator")
    }

    /// SIGKILL: no shutdown code runs, as in a node or OOM kill.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Cluster {
    /// One operator process alone on its namespace: without leader election, so a
    /// restarted operator acts at once (tests/leader_e2e.rs covers the election).
    pub fn start_operator(&self, namespace: &str, env: &[(&str, &str)]) -> Operator {
        self.start_operator_with(namespace, env, &["--leader-elect=false"])
    }

    /// An operator process with extra `rollguard run` arguments.
    pub fn start_operator_with(
        &self,
        namespace: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Operator {
        let dir = repo().join("target/test-logs");
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join(format!("operator-{namespace}-{}.log", unique_suffix()));
        let file = std::fs::File::create(&log).unwrap();
        // A free loopback port for the metrics server, so operators of parallel tests never clash.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let metrics_addr = format!("127.0.0.1:{port}");
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_rollguard"));
        cmd.args([
            "run",
            "--namespace",
            namespace,
            "--prometheus-url",
            &self.prometheus_url,
            "--metrics-addr",
            &metrics_addr,
        ])
        .args(args);
        // The admin's credentials unless the caller brings its own (e.g. a ServiceAccount's).
        if !args.contains(&"--kubeconfig") {
            cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        }
        // The tests' receivers and Prometheus listen on plain http://127.0.0.1; credentials may
        // go there unless a test sets its own policy (tests/tenant_attacks.rs does).
        if !args.contains(&"--egress-allow-plain-http-credentials") {
            cmd.args(["--egress-allow-plain-http-credentials", "127.0.0.1"]);
        }
        cmd.env("RUST_LOG", "info,rollguard=debug,kube=warn")
            .env_remove("ROLLGUARD_FAULT_POINT")
            .env_remove("ROLLGUARD_FAULT_REQUEST")
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Operator {
            child: cmd.spawn().expect("start rollguard run"),
            log,
            metrics_url: format!("http://{metrics_addr}"),
        }
    }

    /// Applies a multi-document YAML manifest with kubectl (as users do).
    pub fn apply(&self, yaml: &str) {
        let file = std::env::temp_dir().join(format!("rollguard-test-{}.yaml", unique_suffix()));
        std::fs::write(&file, yaml).unwrap();
        let (ok, out, err) = self.kubectl(&["apply", "-f", file.to_str().unwrap()]);
        let _ = std::fs::remove_file(&file);
        assert!(ok, "kubectl apply failed:\n{out}\n{err}\n---\n{yaml}");
    }
}

/// Serves `app` on a free loopback port for the rest of the test; returns its address.
pub async fn serve(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// The cached helm binary (tests/cluster/build-tools.sh helm), or None with a message;
/// under `CI=true` a missing helm is a failure.
pub fn helm() -> Option<PathBuf> {
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg("source tests/cluster/versions.sh && echo \"$TOOLS_BIN/helm\"")
        .current_dir(repo())
        .output()
        .unwrap();
    let path = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    if path.is_file() {
        return Some(path);
    }
    let msg = format!(
        "no helm at {}: run `tests/cluster/build-tools.sh helm` (make test does)",
        path.display()
    );
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
    eprintln!("SKIPPED: {msg}");
    None
}

/// A health endpoint on loopback that answers 503 until the returned switch is set.
pub async fn health_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let healthy = std::sync::Arc::new(AtomicBool::new(false));
    let app = axum::Router::new()
        .route(
            "/healthz",
            axum::routing::get(
                |axum::extract::State(healthy): axum::extract::State<
                    std::sync::Arc<AtomicBool>,
                >| async move {
                    if healthy.load(Ordering::SeqCst) {
                        axum::http::StatusCode::OK
                    } else {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                    }
                },
            ),
        )
        .with_state(healthy.clone());
    (format!("http://{}/healthz", serve(app).await), healthy)
}

/// Waits until RollbackRequest `name` is Succeeded or Failed, and returns it.
pub async fn finished(
    api: &Api<rollguard::api::RollbackRequest>,
    name: &str,
) -> rollguard::api::RollbackRequest {
    use rollguard::api::request::RequestPhase;
    in_phase(api, name, "finish", |phase| {
        matches!(phase, RequestPhase::Succeeded | RequestPhase::Failed)
    })
    .await
}

/// Waits until RollbackRequest `name` has ended in any way (Superseded too), and returns it.
pub async fn ended(
    api: &Api<rollguard::api::RollbackRequest>,
    name: &str,
) -> rollguard::api::RollbackRequest {
    in_phase(api, name, "end", |phase| {
        rollguard::rollback::step::is_terminal(Some(phase))
    })
    .await
}

async fn in_phase(
    api: &Api<rollguard::api::RollbackRequest>,
    name: &str,
    what: &str,
    accept: fn(rollguard::api::request::RequestPhase) -> bool,
) -> rollguard::api::RollbackRequest {
    wait_until(
        Duration::from_secs(30),
        &format!("request {name} to {what}"),
        || {
            let api = api.clone();
            let name = name.to_string();
            async move {
                let r = api.get(&name).await.ok()?;
                let phase = r.status.as_ref()?.phase?;
                accept(phase).then_some(r)
            }
        },
    )
    .await
}

/// Counts, from now on, every change the API server reports to the ConfigMap `name`: an
/// observer on its own watch, independent of the operator's caches. Side effects that must
/// happen exactly once are counted with it.
pub async fn count_config_map_writes(
    config_maps: &Api<k8s_openapi::api::core::v1::ConfigMap>,
    name: &str,
) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    use futures::StreamExt;
    use kube::api::{WatchEvent, WatchParams};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let writes = std::sync::Arc::new(AtomicUsize::new(0));
    let mut stream = watch_from_now(
        config_maps,
        &WatchParams::default().fields(&format!("metadata.name={name}")),
    )
    .await;
    let counted = writes.clone();
    tokio::spawn(async move {
        while let Some(Ok(event)) = stream.next().await {
            if matches!(event, WatchEvent::Modified(_)) {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    writes
}

/// The API server's own count, from its /metrics, of the requests with one of `verbs` on
/// `resource` (and `subresource`, "" for none), every response code and scope summed. It counts
/// what reached the API server, whoever sent it: a test reads it while no one else writes.
pub async fn api_requests(
    client: &Client,
    verbs: &[&str],
    resource: &str,
    subresource: &str,
) -> f64 {
    let request = axum::http::Request::get("/metrics")
        .body(Vec::new())
        .unwrap();
    let text = client
        .request_text(request)
        .await
        .expect("the API server's /metrics");
    let (resource, subresource) = (
        format!("resource=\"{resource}\""),
        format!("subresource=\"{subresource}\""),
    );
    text.lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter(|l| l.contains(&resource) && l.contains(&subresource))
        .filter(|l| verbs.iter().any(|v| l.contains(&format!("verb=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

impl Operator {
    /// The value of the sample `series` (name and labels as printed, e.g.
    /// `rollguard_guard_evaluations_total{namespace="a",guard="g"}`) on the operator's /metrics.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = reqwest::get(format!("{}/metrics", self.metrics_url))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    }

    /// How many evaluations of guard `guard` in `namespace` ran to their judgement (0 before the first).
    pub async fn evaluations(&self, namespace: &str, guard: &str) -> u64 {
        self.metric(&format!(
            "rollguard_guard_evaluations_total{{namespace=\"{namespace}\",guard=\"{guard}\"}}"
        ))
        .await
        .map_or(0, |v| v as u64)
    }

    /// Waits until guard `guard` has been evaluated `more` times after `since` evaluations;
    /// returns the count then.
    pub async fn evaluated(&self, namespace: &str, guard: &str, since: u64, more: u64) -> u64 {
        wait_until(
            Duration::from_secs(60),
            &format!("{more} more evaluation(s) of guard {guard} after {since}"),
            || async move {
                let now = self.evaluations(namespace, guard).await;
                (now >= since + more).then_some(now)
            },
        )
        .await
    }
}

/// A test's own namespace with its own operator process on it.
pub struct Env {
    pub cluster: Cluster,
    pub ns: String,
    pub operator: Option<Operator>,
}

impl Env {
    /// The cluster (or None where a test may skip), a namespace named after `test`, and an
    /// operator started with the environment `operator_env`.
    pub async fn start(test: &str, operator_env: &[(&str, &str)]) -> Option<Env> {
        let cluster = cluster(test).await?;
        cluster.install_crds().await;
        let prefix: String = test.replace('_', "-").chars().take(40).collect();
        let ns = cluster.namespace(prefix.trim_end_matches('-')).await;
        let operator = cluster.start_operator(&ns, operator_env);
        Some(Env {
            cluster,
            ns,
            operator: Some(operator),
        })
    }

    /// The API of a namespaced kind in the test's namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.cluster.client.clone(), &self.ns)
    }

    pub fn requests(&self) -> Api<rollguard::api::RollbackRequest> {
        self.api()
    }

    pub fn config_maps(&self) -> Api<k8s_openapi::api::core::v1::ConfigMap> {
        self.api()
    }

    /// Waits until request `name` is over and none of its notifications is still being sent.
    pub async fn settled(&self, name: &str) -> rollguard::api::RollbackRequest {
        use rollguard::api::request::{DeliveryState, RequestPhase};
        let api = self.requests();
        wait_until(Duration::from_secs(60), &format!("{name} settled"), || {
            let api = api.clone();
            async move {
                let r = api.get(name).await.ok()?;
                let s = r.status.as_ref()?;
                let over = matches!(s.phase?, RequestPhase::Succeeded | RequestPhase::Failed);
                let settled = !s.notifications.is_empty()
                    && s.notifications
                        .iter()
                        .all(|n| n.state != DeliveryState::Sending);
                (over && settled).then_some(r)
            }
        })
        .await
    }

    /// The core/v1 Events of the namespace that `keep` keeps.
    pub async fn events_where(
        &self,
        keep: impl Fn(&k8s_openapi::api::core::v1::Event) -> bool,
    ) -> Vec<k8s_openapi::api::core::v1::Event> {
        self.api::<k8s_openapi::api::core::v1::Event>()
            .list(&kube::api::ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| keep(e))
            .collect()
    }
}

/// The manifests many tests start from: ConfigMap `ff` (opted in, `data` in YAML flow style)
/// and guard `g` over its flag `a`, with `spec` (YAML lines indented two spaces, may be
/// empty) beside `flags`.
pub fn flags_and_guard(ns: &str, data: &str, spec: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: ff, namespace: {ns}, labels: {{rollguard.dev/flags: "true"}}}}
data: {data}
---
apiVersion: rollguard.dev/v1alpha1
kind: RolloutGuard
metadata: {{name: g, namespace: {ns}}}
spec:
  flags: {{configMapRef: {{name: ff}}, guarded: [a]}}
{spec}
"#
    )
}

/// Waits up to `timeout` for the first automatic RollbackRequest of guard `guard` (labelled
/// `rollguard.dev/guard`) and returns it.
pub async fn automatic_request(
    requests: &Api<rollguard::api::RollbackRequest>,
    guard: &str,
    timeout: Duration,
) -> rollguard::api::RollbackRequest {
    let selector = format!("rollguard.dev/guard={guard}");
    wait_until(
        timeout,
        &format!("an automatic RollbackRequest of guard {guard}"),
        || {
            let (requests, selector) = (requests.clone(), selector.clone());
            async move {
                requests
                    .list(&kube::api::ListParams::default().labels(&selector))
                    .await
                    .ok()?
                    .items
                    .into_iter()
                    .next()
            }
        },
    )
    .await
}

/// Waits until guard `name`'s recorded notices have all been delivered and dropped from its
/// status, then for two more evaluations by `operator`: time enough for a duplicate
/// delivery to be sent.
pub async fn guard_notices_delivered(
    guards: &Api<rollguard::api::RolloutGuard>,
    name: &str,
    operator: &Operator,
    namespace: &str,
) {
    wait_until(
        Duration::from_secs(20),
        "the delivered notices to leave the guard's status",
        || {
            let guards = guards.clone();
            async move {
                let status = guards.get(name).await.ok()?.status?;
                status.pending_notices.is_empty().then_some(())
            }
        },
    )
    .await;
    // Counted by the operator: a steady evaluation writes no status to see it by.
    let evaluated = operator.evaluations(namespace, name).await;
    operator.evaluated(namespace, name, evaluated, 2).await;
}

/// A watch of `api` (narrowed by `params`) from now on: what changes after the call.
pub async fn watch_from_now<K>(
    api: &Api<K>,
    params: &kube::api::WatchParams,
) -> futures::stream::BoxStream<'static, kube::Result<kube::api::WatchEvent<K>>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    use futures::StreamExt;
    let version = api
        .list_metadata(&kube::api::ListParams::default().limit(1))
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    api.watch(params, &version).await.unwrap().boxed()
}

/// A log line without its ANSI colour codes (the operator's log is coloured).
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
