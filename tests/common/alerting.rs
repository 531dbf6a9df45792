//! A real alerting pipeline on loopback for one test: a target whose `shop_errors` gauge the
//! test sets, a Prometheus 3 (the pinned build) scraping it every second with an alerting
//! rule, and an Alertmanager 0.35 (the pinned build) that Prometheus sends its alerts to and
//! that routes them to rollguard's webhook (or nowhere, for pull mode).
//!
//! Both binaries come from `tests/cluster/build-tools.sh` (`$TOOLS_BIN`); without them a test
//! skips with a message, and under `CI=true` fails.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The alert the rule raises while `shop_errors > 0`; it carries the metric's `namespace`
/// label and `service: shop`.
pub const ALERT: &str = "HighErrorRate";

/// `$TOOLS_BIN/<name>`, or None (with a message) when it was not built; a failure under CI.
pub fn tool(name: &str) -> Option<PathBuf> {
    let path = PathBuf::from(super::receivers::tools_var("TOOLS_BIN")).join(name);
    if path.is_file() {
        return Some(path);
    }
    let msg = format!(
        "no {name} at {}: run `tests/cluster/build-tools.sh {name}` (make tools and make cluster-up do)",
        path.display()
    );
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
    eprintln!("SKIPPED: {msg}");
    None
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Process(std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Where Alertmanager sends its notifications: rollguard's webhook and the token file.
pub struct Webhook {
    pub url: String,
    pub token_file: PathBuf,
}

pub struct Alerting {
    pub prometheus_url: String,
    pub alertmanager_url: String,
    /// Whether the target's `shop_errors` is 1 (the rule fires) or 0.
    pub errors: Arc<AtomicBool>,
    pub dir: PathBuf,
    _processes: Vec<Process>,
}

impl Alerting {
    /// Starts the target, Alertmanager and Prometheus for namespace `ns`; None when the tools
    /// are missing outside CI.
    /// Alertmanager sends each notification to every one of `webhooks` (none: pull mode).
    pub async fn start(ns: &str, webhooks: &[&Webhook]) -> Option<Alerting> {
        let (prometheus, alertmanager) = (tool("prometheus")?, tool("alertmanager")?);
        let errors = Arc::new(AtomicBool::new(false));
        let target = target(ns, errors.clone()).await;
        let dir = super::repo()
            .join("target/test-logs")
            .join(format!("alerting-{ns}"));
        std::fs::create_dir_all(&dir).unwrap();
        let (am_port, prom_port) = (free_port(), free_port());
        std::fs::write(dir.join("alertmanager.yml"), alertmanager_config(webhooks)).unwrap();
        std::fs::write(dir.join("rules.yml"), RULES).unwrap();
        std::fs::write(
            dir.join("prometheus.yml"),
            prometheus_config(am_port, &target.to_string()),
        )
        .unwrap();
        let am = spawn(
            &alertmanager,
            &dir,
            "alertmanager",
            &[
                &format!("--config.file={}", dir.join("alertmanager.yml").display()),
                &format!("--storage.path={}", dir.join("am-data").display()),
                &format!("--web.listen-address=127.0.0.1:{am_port}"),
                // No gossip: a single Alertmanager, nothing on other ports.
                "--cluster.listen-address=",
            ],
        );
        let prom = spawn(
            &prometheus,
            &dir,
            "prometheus",
            &[
                &format!("--config.file={}", dir.join("prometheus.yml").display()),
                &format!("--storage.tsdb.path={}", dir.join("prom-data").display()),
                &format!("--web.listen-address=127.0.0.1:{prom_port}"),
                // Firing alerts are sent again every second (default: every minute).
                "--rules.alert.resend-delay=1s",
            ],
        );
        let alerting = Alerting {
            prometheus_url: format!("http://127.0.0.1:{prom_port}"),
            alertmanager_url: format!("http://127.0.0.1:{am_port}"),
            errors,
            dir,
            _processes: vec![am, prom],
        };
        for url in [&alerting.alertmanager_url, &alerting.prometheus_url] {
            ready(url).await;
        }
        Some(alerting)
    }

    pub fn set_errors(&self, on: bool) {
        self.errors.store(on, Ordering::SeqCst);
    }

    /// When Prometheus says the rule's alert became active (`activeAt` of /api/v1/alerts), if
    /// it is firing.
    pub async fn firing_since(&self) -> Option<jiff::Timestamp> {
        let body: serde_json::Value =
            reqwest::get(format!("{}/api/v1/alerts", self.prometheus_url))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
        body["data"]["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["labels"]["alertname"] == ALERT && a["state"] == "firing")
            .and_then(|a| a["activeAt"].as_str()?.parse().ok())
    }
}

impl Alerting {
    /// How many alerts Alertmanager's API lists as active (what pull mode reads).
    pub async fn alertmanager_active(&self) -> Option<usize> {
        let url = format!("{}/api/v2/alerts?active=true", self.alertmanager_url);
        let alerts: Vec<serde_json::Value> = reqwest::get(url).await.ok()?.json().await.ok()?;
        Some(alerts.len())
    }
}

fn spawn(binary: &Path, dir: &Path, name: &str, args: &[&str]) -> Process {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    Process(
        std::process::Command::new(binary)
            .args(args)
            .current_dir(dir)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display())),
    )
}

async fn ready(url: &str) {
    super::wait_until(
        Duration::from_secs(30),
        &format!("{url}/-/ready"),
        || async {
            let r = reqwest::get(format!("{url}/-/ready")).await.ok()?;
            r.status().is_success().then_some(())
        },
    )
    .await;
}

/// A loopback target exposing `shop_errors{namespace="<ns>"}` (0 or 1).
async fn target(ns: &str, errors: Arc<AtomicBool>) -> std::net::SocketAddr {
    let ns = ns.to_string();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let value = u8::from(errors.load(Ordering::SeqCst));
            let ns = ns.clone();
            async move {
                format!("# TYPE shop_errors gauge\nshop_errors{{namespace=\"{ns}\"}} {value}\n")
            }
        }),
    );
    super::serve(app).await
}

const RULES: &str = r#"groups:
  - name: shop
    interval: 1s
    rules:
      - alert: HighErrorRate
        expr: shop_errors > 0
        labels: {service: shop}
        annotations: {summary: "the shop is failing"}
"#;

fn prometheus_config(alertmanager_port: u16, target: &str) -> String {
    format!(
        r#"global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: [rules.yml]
alerting:
  alertmanagers:
    - static_configs: [{{targets: ["127.0.0.1:{alertmanager_port}"]}}]
scrape_configs:
  - job_name: shop
    static_configs: [{{targets: ["{target}"]}}]
"#
    )
}

/// The route a README tells users to add, with test-sized timings.
fn alertmanager_config(webhooks: &[&Webhook]) -> String {
    let configs: String = webhooks
        .iter()
        .map(|w| {
            format!(
                r#"      - url: "{}"
        send_resolved: true
        http_config:
          authorization: {{type: Bearer, credentials_file: "{}"}}
"#,
                w.url,
                w.token_file.display()
            )
        })
        .collect();
    let receiver = match configs.is_empty() {
        true => "  - name: rollguard\n".to_string(),
        false => format!("  - name: rollguard\n    webhook_configs:\n{configs}"),
    };
    format!(
        r#"route:
  receiver: rollguard
  group_by: [alertname, namespace]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1m
receivers:
{receiver}"#
    )
}
