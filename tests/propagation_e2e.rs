//! The propagation check end to end (SPEC §6, `spec.health.propagation`): the real
//! Prometheus of the test cluster scrapes a loopback application that evaluates flag `a`,
//! reading it from a file as an application reading a mounted ConfigMap volume does, and
//! exports its evaluations as OpenFeature's OpenTelemetry hook names them
//! (`feature_flag_evaluations_total{feature_flag_key,feature_flag_result_variant}`). A
//! stand-in kubelet copies the ConfigMap into that file some seconds after it changed, or
//! never. The operator runs as its own process.

mod common;

use axum::{Router, routing::get};
use common::{Cluster, Env, unique_suffix, wait_until};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use rollguard::api::RollbackRequest;
use rollguard::api::request::RequestPhase;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Evaluation counts over time: (when, [on, off]).
type History = Vec<(std::time::Instant, [u64; 2])>;

/// The application: ten evaluations of flag `a` every 100 ms, variant `on` while its file
/// says `true`, `off` otherwise.
struct App {
    /// The value of this test's `test` label in Prometheus.
    id: String,
    /// The file it reads the flag from.
    file: PathBuf,
    /// When the stand-in kubelet last rewrote the file.
    synced_at: Arc<Mutex<Option<jiff::Timestamp>>>,
}

impl App {
    /// Serves the application, registers it with Prometheus and starts the stand-in kubelet:
    /// `sync_after` after the ConfigMap `ff` of `ns` changes, the file follows (None: never).
    async fn start(cluster: &Cluster, ns: &str, sync_after: Option<Duration>) -> App {
        Self::start_exporting_late(cluster, ns, sync_after, Duration::ZERO).await
    }

    /// As [`App::start`], its metrics exported `lag` late (as an OpenTelemetry SDK's periodic
    /// reader or a collector in between delays them).
    async fn start_exporting_late(
        cluster: &Cluster,
        ns: &str,
        sync_after: Option<Duration>,
        lag: Duration,
    ) -> App {
        let id = format!("p{}", unique_suffix());
        let file: PathBuf = std::env::temp_dir().join(format!("rollguard-flag-{id}"));
        std::fs::write(&file, "true").unwrap();
        let counts: Arc<Mutex<History>> = Arc::default();
        let (read, evaluated) = (file.clone(), counts.clone());
        tokio::spawn(async move {
            let mut total = [0u64; 2];
            loop {
                let on = std::fs::read_to_string(&read).is_ok_and(|v| v.trim() == "true");
                total[usize::from(!on)] += 10;
                {
                    let mut history = evaluated.lock().unwrap();
                    history.push((std::time::Instant::now(), total));
                    let keep = history.len().saturating_sub(100);
                    history.drain(..keep);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let served = counts.clone();
        let app = Router::new().route(
            "/metrics",
            get(move || {
                let [on, off] = served
                    .lock()
                    .unwrap()
                    .iter()
                    .rev()
                    .find(|(at, _)| at.elapsed() >= lag)
                    .map_or([0, 0], |(_, c)| *c);
                async move {
                    format!(
                        "# TYPE feature_flag_evaluations_total counter\n\
                         feature_flag_evaluations_total{{feature_flag_key=\"a\",feature_flag_result_variant=\"on\"}} {on}\n\
                         feature_flag_evaluations_total{{feature_flag_key=\"a\",feature_flag_result_variant=\"off\"}} {off}\n"
                    )
                }
            }),
        );
        let addr = common::serve(app).await;
        let targets = serde_json::json!([{"targets": [addr.to_string()], "labels": {"test": id}}]);
        std::fs::write(
            cluster.prom_sd_dir.join(format!("{id}.json")),
            targets.to_string(),
        )
        .unwrap();
        let synced_at: Arc<Mutex<Option<jiff::Timestamp>>> = Arc::default();
        if let Some(delay) = sync_after {
            let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), ns);
            let (synced, file) = (synced_at.clone(), file.clone());
            tokio::spawn(async move {
                let mut written = "true".to_string();
                loop {
                    let value = config_maps
                        .get_opt("ff")
                        .await
                        .ok()
                        .flatten()
                        .and_then(|cm| cm.data?.get("a").cloned());
                    if let Some(value) = value.filter(|v| *v != written) {
                        tokio::time::sleep(delay).await;
                        std::fs::write(&file, &value).unwrap();
                        *synced.lock().unwrap() = Some(jiff::Timestamp::now());
                        written = value;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        }
        App {
            id,
            file,
            synced_at,
        }
    }

    /// The guard's propagation query, over this application's series only.
    fn query(&self) -> String {
        format!(
            r#"sum(rate(feature_flag_evaluations_total{{test="{}",feature_flag_key=~"$FLAGS",feature_flag_result_variant!="off"}}[30s]))"#,
            self.id
        )
    }

    /// Waits until Prometheus sees the application serve the on-variant, so the check has
    /// something to wait for.
    async fn serving_on(&self, cluster: &Cluster) {
        self.serving(cluster, "on").await
    }

    /// Waits until Prometheus sees the application serve `variant`.
    async fn serving(&self, cluster: &Cluster, variant: &str) {
        let client =
            prometheus_http_query::Client::try_from(cluster.prometheus_url.as_str()).unwrap();
        let q = format!(
            r#"sum(rate(feature_flag_evaluations_total{{test="{}",feature_flag_result_variant="{variant}"}}[5s]))"#,
            self.id
        );
        wait_until(
            Duration::from_secs(30),
            &format!("Prometheus to see the {variant} variant served"),
            || {
                let (client, q) = (client.clone(), q.clone());
                async move {
                    let r = client.query(q).get().await.ok()?;
                    (r.data().as_vector()?.first()?.sample().value() > 0.0).then_some(())
                }
            },
        )
        .await;
    }
}

/// ConfigMap `ff` with `a: "true"` and guard `g` over it, checking propagation with `query`
/// within `timeout`; `extra`: more lines under `spec:`.
fn flags_and_guard(env: &Env, query: &str, timeout: &str, extra: &str) {
    env.cluster.apply(&common::flags_and_guard(
        &env.ns,
        r#"{a: "true"}"#,
        &format!(
            "  interval: 1s\n  health:\n    timeout: {timeout}\n    propagation: {{query: '{query}'}}\n{extra}"
        ),
    ));
}

fn rollback(env: &Env, name: &str) {
    env.cluster.apply(&format!(
        "apiVersion: rollguard.dev/v1alpha1\nkind: RollbackRequest\nmetadata: {{name: {name}, namespace: {}}}\nspec: {{guardRef: {{name: g}}, requestedBy: ops, mode: immediate}}\n",
        env.ns
    ));
}

fn steps(r: &RollbackRequest) -> Vec<String> {
    r.status
        .iter()
        .flat_map(|s| &s.timeline)
        .map(|t| t.step.clone())
        .collect()
}

fn position(steps: &[String], step: &str) -> usize {
    steps
        .iter()
        .position(|s| s == step)
        .unwrap_or_else(|| panic!("no {step} in the timeline {steps:?}"))
}

#[tokio::test]
async fn flag_effective_is_when_the_application_stopped_serving_the_on_variant_not_when_the_config_map_changed()
 {
    let Some(env) = Env::start("propagation_late", &[]).await else {
        return;
    };
    let delay = Duration::from_secs(4);
    let app = App::start(&env.cluster, &env.ns, Some(delay)).await;
    flags_and_guard(&env, &app.query(), "30s", "");
    app.serving_on(&env.cluster).await;

    rollback(&env, "late");
    let done = common::finished(&env.requests(), "late").await;
    let status = done.status.clone().unwrap();
    assert_eq!(status.phase, Some(RequestPhase::Succeeded), "{status:#?}");
    let durations = status.durations.clone().unwrap();
    let (disable, effective) = (
        durations.flag_disable.unwrap(),
        durations.flag_effective.expect("flagEffective recorded"),
    );
    // The file changed `delay` after the ConfigMap did, and the application served the
    // on-variant until then: effective no earlier than that, and after the write.
    assert!(
        effective - disable >= delay.as_secs_f64(),
        "flagDisable {disable}, flagEffective {effective}: less than {delay:?} apart"
    );
    let synced = app.synced_at.lock().unwrap().expect("the file was synced");
    let timeline = &status.timeline;
    let effective_entry = timeline
        .iter()
        .find(|t| t.step == "FlagsEffective")
        .unwrap();
    assert!(
        effective_entry.time.0 >= synced,
        "FlagsEffective at {} before the application read the change at {synced}",
        effective_entry.time.0
    );
    assert!(
        effective_entry.message.contains("on-variant of a"),
        "{effective_entry:?}"
    );
    let steps = steps(&done);
    assert!(
        position(&steps, "FlagsDisabled") < position(&steps, "FlagsEffective")
            && position(&steps, "FlagsEffective") < position(&steps, "HealthVerified"),
        "{steps:?}"
    );
    assert_eq!(
        steps.iter().filter(|s| *s == "FlagsEffective").count(),
        1,
        "{steps:?}"
    );

    // The report, as a user runs it, shows both side by side.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-rollguard"))
        .arg("--kubeconfig")
        .arg(&env.cluster.kubeconfig)
        .args(["report", "late", "-n", &env.ns])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<&str> = report.lines().collect();
    let disable_row = rows
        .iter()
        .position(|l| l.starts_with("| flagDisable |"))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(
        rows[disable_row + 1].starts_with(&format!("| flagEffective | {effective:.3}s | 10s |")),
        "{report}"
    );
    assert!(report.contains("| Flags effective at |"), "{report}");

    // The operator's step-duration histogram counts it.
    let metrics_url = format!("{}/metrics", env.operator.as_ref().unwrap().metrics_url);
    let metrics = reqwest::get(&metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with(
            "rollguard_rollback_step_duration_seconds_count{step=\"flagEffective\"} 1"
        )),
        "{metrics}"
    );
}

/// Prometheus only knows what it has scraped: an on-variant served since the last scrape (here
/// too, in an export that runs late) is not in the first answers after the change. A "none"
/// counts only once it still holds an interval later, so flagEffective is never before the
/// application stopped.
#[tokio::test]
async fn a_none_before_the_on_variant_reached_prometheus_is_not_believed() {
    let Some(env) = Env::start("propagation_unscraped", &[]).await else {
        return;
    };
    let delay = Duration::from_secs(3);
    let lag = Duration::from_secs(1);
    let app = App::start_exporting_late(&env.cluster, &env.ns, Some(delay), lag).await;
    // Interval 3s: no shorter than the export lag plus the 1s scrape interval.
    env.cluster.apply(&common::flags_and_guard(
        &env.ns,
        r#"{a: "true"}"#,
        &format!(
            "  interval: 3s\n  health:\n    timeout: 30s\n    propagation: {{query: '{}'}}\n",
            app.query()
        ),
    ));
    // The application served the off-variant so far; it turns to the on-variant just before
    // the rollback, and off again `delay` after the ConfigMap changed.
    std::fs::write(&app.file, "false").unwrap();
    app.serving(&env.cluster, "off").await;
    tokio::time::sleep(Duration::from_secs(6)).await; // every on-variant evaluation out of range
    std::fs::write(&app.file, "true").unwrap();
    rollback(&env, "unscraped");
    let done = common::finished(&env.requests(), "unscraped").await;
    let status = done.status.clone().unwrap();
    assert_eq!(status.phase, Some(RequestPhase::Succeeded), "{status:#?}");
    let synced = app.synced_at.lock().unwrap().expect("the file was synced");
    let effective = status
        .timeline
        .iter()
        .find(|t| t.step == "FlagsEffective")
        .unwrap();
    let created = done.metadata.creation_timestamp.clone().unwrap().0;
    let effective_at = created
        + jiff::SignedDuration::from_secs_f64(status.durations.unwrap().flag_effective.unwrap());
    assert!(
        effective_at >= synced,
        "flagEffective says {effective_at}, but the application served the on-variant until {synced}: {effective:?}"
    );
}

#[tokio::test]
async fn an_on_variant_served_past_the_health_timeout_fails_verification_naming_propagation() {
    let Some(env) = Env::start("propagation_never", &[]).await else {
        return;
    };
    let app = App::start(&env.cluster, &env.ns, None).await;
    flags_and_guard(&env, &app.query(), "5s", "");
    app.serving_on(&env.cluster).await;

    rollback(&env, "never");
    let done = common::finished(&env.requests(), "never").await;
    let status = done.status.clone().unwrap();
    assert_eq!(status.phase, Some(RequestPhase::Failed), "{status:#?}");
    let message = status.message.clone().unwrap_or_default();
    assert!(
        message.contains("spec.health.timeout")
            && message
                .contains("spec.health.propagation: instances still serve the on-variant of a"),
        "{message}"
    );
    let verified = rollguard::conditions::get(&status.conditions, "HealthVerified").unwrap();
    assert_eq!(verified.status, "False");
    assert!(status.durations.unwrap().flag_effective.is_none());
    assert!(!steps(&done).contains(&"FlagsEffective".to_string()));
}

/// An empty answer is "no instance serves it"; a query that cannot be answered never is.
#[tokio::test]
async fn a_propagation_query_that_fails_never_passes_and_an_empty_answer_does() {
    let Some(env) = Env::start("propagation_fail_closed", &[]).await else {
        return;
    };
    // Nothing exports these series: the answer is empty.
    let query = format!(
        r#"sum(rate(feature_flag_evaluations_total{{test="none-{}",feature_flag_key=~"$FLAGS"}}[30s]))"#,
        unique_suffix()
    );
    flags_and_guard(&env, &query, "4s", "");
    rollback(&env, "empty");
    let empty = common::finished(&env.requests(), "empty").await;
    let status = empty.status.clone().unwrap();
    assert_eq!(status.phase, Some(RequestPhase::Succeeded), "{status:#?}");
    assert!(status.durations.unwrap().flag_effective.is_some());

    // The same check against a Prometheus that does not answer (a closed loopback port).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    // The flag on again (applying `ff` as before), and the guard's own Prometheus.
    flags_and_guard(
        &env,
        &query,
        "4s",
        &format!("  prometheus: {{address: \"http://127.0.0.1:{port}\"}}\n"),
    );
    rollback(&env, "unanswered");
    let failed = common::finished(&env.requests(), "unanswered").await;
    let status = failed.status.clone().unwrap();
    assert_eq!(status.phase, Some(RequestPhase::Failed), "{status:#?}");
    let message = status.message.clone().unwrap_or_default();
    assert!(
        message.contains("spec.health.propagation.query could not be evaluated"),
        "{message}"
    );
    assert!(status.durations.unwrap().flag_effective.is_none());
}

/// A propagation query that does not parse once `$FLAGS` is expanded, or matches the
/// alternation with `=`, makes the guard Invalid with a message naming the field.
#[tokio::test]
async fn a_propagation_query_that_cannot_work_makes_the_guard_invalid_naming_the_field() {
    let Some(env) = Env::start("propagation_invalid", &[]).await else {
        return;
    };
    let guards: Api<rollguard::api::RolloutGuard> = env.api();
    for (query, says) in [
        (
            r#"sum(rate(x{feature_flag_key=~"$FLAGS"}[30s])"#,
            "spec.health.propagation.query: ",
        ),
        (
            r#"sum(x{feature_flag_key="$FLAGS"})"#,
            "match it with =~ or !~",
        ),
    ] {
        flags_and_guard(&env, query, "30s", "");
        let message = wait_until(
            Duration::from_secs(20),
            &format!("guard g Invalid for {query}"),
            || {
                let guards = guards.clone();
                async move {
                    let g = guards.get("g").await.ok()?;
                    let status = g.status?;
                    let ready = rollguard::conditions::get(&status.conditions, "Ready")?;
                    (status.phase == Some(rollguard::api::guard::GuardPhase::Invalid)
                        && status.observed_generation == g.metadata.generation
                        && ready.message.contains(says))
                    .then(|| ready.message.clone())
                }
            },
        )
        .await;
        assert!(
            message.contains("spec.health.propagation.query"),
            "{message}"
        );
    }
}

/// Crash safety: an operator killed while the request waits for propagation, and another
/// killed right after recording `FlagsEffective`: the third finishes with one
/// `FlagsEffective`, measured once.
#[cfg(feature = "fault-injection")]
#[tokio::test]
async fn a_restart_during_the_wait_resumes_it_and_a_recorded_flag_effective_is_not_measured_again()
{
    let Some(mut env) = Env::start("propagation_crash", &[]).await else {
        return;
    };
    let app = App::start(&env.cluster, &env.ns, Some(Duration::from_secs(5))).await;
    flags_and_guard(&env, &app.query(), "60s", "");
    app.serving_on(&env.cluster).await;
    rollback(&env, "crash");
    let requests = env.requests();
    wait_until(
        Duration::from_secs(20),
        "the request to wait in Verifying",
        || {
            let requests = requests.clone();
            async move {
                let r = requests.get("crash").await.ok()?;
                (r.status?.phase == Some(RequestPhase::Verifying)).then_some(())
            }
        },
    )
    .await;
    env.operator.take().unwrap().kill();
    assert!(
        app.synced_at.lock().unwrap().is_none(),
        "the file changed before the first operator was killed: the test proves nothing"
    );

    let second = env.cluster.start_operator(
        &env.ns,
        &[
            ("ROLLGUARD_FAULT_POINT", "flags-effective"),
            ("ROLLGUARD_FAULT_REQUEST", "crash"),
        ],
    );
    wait_until(
        Duration::from_secs(40),
        "the second operator to record FlagsEffective",
        || {
            let hit = second.log_contains("FAULT-POINT flags-effective crash");
            async move { hit.then_some(()) }
        },
    )
    .await;
    let recorded = requests.get("crash").await.unwrap().status.unwrap();
    let measured = recorded.durations.unwrap().flag_effective.unwrap();
    second.kill();

    let _third = env.cluster.start_operator(&env.ns, &[]);
    let done = common::finished(&requests, "crash").await;
    let status = done.status.clone().unwrap();
    assert_eq!(status.phase, Some(RequestPhase::Succeeded), "{status:#?}");
    assert_eq!(status.durations.unwrap().flag_effective, Some(measured));
    let steps = steps(&done);
    assert_eq!(
        steps.iter().filter(|s| *s == "FlagsEffective").count(),
        1,
        "{steps:?}"
    );
    assert!(
        position(&steps, "FlagsEffective") < position(&steps, "HealthVerified"),
        "{steps:?}"
    );
}
