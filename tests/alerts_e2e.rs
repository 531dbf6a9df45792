//! Alert triggers against the real thing (SPEC §6): a real Prometheus 3 evaluates an
//! alerting rule over a loopback target the test controls, a real Alertmanager 0.35 routes
//! the alert to rollguard's webhook (push) or is read by the guard (pull), and the operator
//! runs as its own process on the local control plane.

mod common;

use common::alerting::{ALERT, Alerting, Webhook, free_port};
use common::{Cluster, Operator, automatic_request, finished, flags_and_guard, wait_until};
use kube::api::{Api, ListParams};
use rollguard::api::RolloutGuard;
use rollguard::api::request::RequestPhase;
use std::time::Duration;

const TOKEN: &str = "alertmanager-to-rollguard-3f9c1e";

/// An operator on `ns` serving the webhook with `TOKEN`, and the webhook as Alertmanager
/// reaches it.
fn operator_with_webhook(cluster: &Cluster, ns: &str, extra: &[&str]) -> (Operator, Webhook) {
    operator_with_webhook_env(
        cluster,
        ns,
        &[],
        &[&["--leader-elect=false"], extra].concat(),
    )
}

/// As [`operator_with_webhook`], with an environment and without `--leader-elect=false`.
fn operator_with_webhook_env(
    cluster: &Cluster,
    ns: &str,
    env: &[(&str, &str)],
    extra: &[&str],
) -> (Operator, Webhook) {
    let dir = common::repo().join("target/test-logs");
    let token_file = dir.join(format!("webhook-token-{ns}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut args = vec![
        "--webhook-addr",
        &addr,
        "--webhook-token-file",
        token_file.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let operator = cluster.start_operator_with(ns, env, &args);
    let url = format!("http://{addr}/v1/alertmanager");
    (operator, Webhook { url, token_file })
}

/// A guard `g` over flag `a` with one alert trigger on the rule's alert, `for: 3s`.
fn alert_guard(ns: &str, alertmanager: Option<&str>) -> String {
    let pull = alertmanager
        .map(|url| format!("  alertmanager: {{address: \"{url}\"}}\n"))
        .unwrap_or_default();
    flags_and_guard(
        ns,
        "{a: \"true\"}",
        &format!(
            "{pull}  interval: 1s
  rollback: {{cooldown: 0s}}
  triggers:
    - name: high-errors
      alert: {{matchers: {{alertname: {ALERT}, service: shop}}}}
      for: 3s"
        ),
    )
}

async fn guard(cluster: &Cluster, ns: &str, name: &str) -> RolloutGuard {
    Api::<RolloutGuard>::namespaced(cluster.client.clone(), ns)
        .get(name)
        .await
        .unwrap()
}

/// Waits until guard `name` has been evaluated twice more than when called, as `operator`
/// counts its evaluations (a steady evaluation writes no status to see it by).
async fn evaluated_twice_more(operator: &Operator, ns: &str, name: &str) {
    let since = operator.evaluations(ns, name).await;
    operator.evaluated(ns, name, since, 2).await;
}

/// The value of a counter sample `name{outcome="<outcome>"}` on the operator's /metrics (0
/// when absent).
async fn counter(operator: &Operator, name: &str, outcome: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", operator.metrics_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("{name}{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// The whole story once the guard is in place: the rule fires → exactly one automatic
/// rollback after the trigger's `for`, recording the alert; the alert resolves → the trigger
/// stops breaching and, after two more evaluations, there is still one request.
async fn fires_once_and_resolves(
    cluster: &Cluster,
    operator: &Operator,
    ns: &str,
    alerting: &Alerting,
) {
    let requests: Api<rollguard::api::RollbackRequest> =
        Api::namespaced(cluster.client.clone(), ns);
    wait_until(
        Duration::from_secs(30),
        "the guard's first evaluation",
        || async {
            guard(cluster, ns, "g")
                .await
                .status?
                .last_evaluation_time
                .map(|_| ())
        },
    )
    .await;
    alerting.set_errors(true);
    let request = automatic_request(&requests, "g", Duration::from_secs(60)).await;
    let breached = guard(cluster, ns, "g").await.status.unwrap().triggers[0].clone();
    let since = breached.breaching_since.expect("breaching since").0;
    let created = request.metadata.creation_timestamp.clone().unwrap().0;
    assert!(
        created.duration_since(since).as_secs() >= 3,
        "created {created}, breaching since {since}: the trigger held for its for (3s)"
    );
    let done = finished(&requests, &request.metadata.name.clone().unwrap()).await;
    let status = done.status.unwrap();
    assert_eq!(
        status.phase,
        Some(RequestPhase::Succeeded),
        "{:?}",
        status.message
    );
    let by = status.triggered_by.expect("triggeredBy");
    assert_eq!(by.trigger, "high-errors");
    assert_eq!(by.value, Some(1.0));
    let alert = by.alert.expect("triggeredBy.alert");
    assert_eq!(alert.name, ALERT);
    assert_eq!(alert.labels["namespace"], ns);
    assert_eq!(alert.labels["service"], "shop");
    assert!(alert.fingerprint.len() >= 8, "{alert:?}");
    assert!(
        alert.starts_at.parse::<jiff::Timestamp>().is_ok(),
        "{alert:?}"
    );
    assert!(alert.generator_url.contains("/graph?g0.expr="), "{alert:?}");
    let config_map =
        Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(cluster.client.clone(), ns)
            .get("ff")
            .await
            .unwrap();
    assert_eq!(config_map.data.unwrap()["a"], "false");

    alerting.set_errors(false);
    wait_until(
        Duration::from_secs(60),
        "the trigger to stop breaching",
        || async {
            let t = guard(cluster, ns, "g")
                .await
                .status?
                .triggers
                .first()?
                .clone();
            (!t.breaching && t.value == Some(0.0) && t.last_error.is_none()).then_some(())
        },
    )
    .await;
    evaluated_twice_more(operator, ns, "g").await;
    let all = requests.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(
        all.len(),
        1,
        "one rollback for one alert: {:?}",
        all.iter()
            .map(|r| r.metadata.name.clone())
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_pushed_alert_rolls_back_once_and_its_resolution_does_not_roll_back_again() {
    let Some(cluster) = common::cluster("alerts_push").await else {
        return;
    };
    cluster.install_crds().await;
    let ns = cluster.namespace("alerts-push").await;
    let (operator, webhook) = operator_with_webhook(&cluster, &ns, &[]);
    let Some(alerting) = Alerting::start(&ns, &[&webhook]).await else {
        return;
    };
    cluster.apply(&alert_guard(&ns, None));
    fires_once_and_resolves(&cluster, &operator, &ns, &alerting).await;
    assert!(
        counter(
            &operator,
            "rollguard_alert_webhook_requests_total",
            "accepted"
        )
        .await
            >= 2.0
    );
    assert!(counter(&operator, "rollguard_alerts_received_total", "routed").await >= 2.0);
    assert_eq!(
        counter(
            &operator,
            "rollguard_alert_webhook_requests_total",
            "unauthorized"
        )
        .await,
        0.0
    );
}

#[tokio::test]
async fn a_pulled_alert_rolls_back_once_and_its_resolution_does_not_roll_back_again() {
    let Some(cluster) = common::cluster("alerts_pull").await else {
        return;
    };
    cluster.install_crds().await;
    let ns = cluster.namespace("alerts-pull").await;
    let operator = cluster.start_operator(&ns, &[]);
    let Some(alerting) = Alerting::start(&ns, &[]).await else {
        return;
    };
    cluster.apply(&alert_guard(&ns, Some(&alerting.alertmanager_url)));
    fires_once_and_resolves(&cluster, &operator, &ns, &alerting).await;
    assert!(counter(&operator, "rollguard_alertmanager_reads_total", "success").await >= 2.0);
}

/// A webhook payload as Alertmanager sends it, with one firing alert labelled `labels`.
fn payload(version: &str, labels: serde_json::Value) -> String {
    serde_json::json!({
        "version": version, "groupKey": "{}:{alertname=\"x\"}", "truncatedAlerts": 0,
        "status": "firing", "receiver": "rollguard", "groupLabels": {},
        "commonLabels": labels, "commonAnnotations": {}, "externalURL": "http://127.0.0.1:9093",
        "alerts": [{
            "status": "firing", "labels": labels, "annotations": {},
            "startsAt": "2026-12-07T12:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=x", "fingerprint": "0123456789abcdef"
        }]
    })
    .to_string()
}

async fn post(url: &str, token: Option<&str>, body: String) -> u16 {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().status().as_u16()
}

/// Posts as Alertmanager does: again while the answer is 503 (a replica that does not lead
/// or has not synced its caches yet); returns the final status.
async fn deliver(url: &str, body: String) -> u16 {
    wait_until(
        Duration::from_secs(30),
        "an answer other than 503",
        || async {
            let status = post(url, Some(TOKEN), body.clone()).await;
            (status != 503).then_some(status)
        },
    )
    .await
}

/// Posts that are not Alertmanager's, or whose alerts no guard takes, change nothing: a
/// wrong or missing token (401), a body that is not a version-4 payload (400), one past the
/// size limit (413), an alert for a namespace without such a guard, one only a guard without
/// alert triggers could be meant for, and one without a namespace label (accepted, counted
/// as ignored or unrouted). The guard that would breach on the alert evaluates twice after
/// them without breaching; then the same alert, posted properly, rolls it back (it could).
#[tokio::test]
async fn refused_and_unroutable_posts_change_nothing_and_are_counted() {
    let Some(cluster) = common::cluster("alerts_refused").await else {
        return;
    };
    cluster.install_crds().await;
    let ns = cluster.namespace("alerts-refused").await;
    let (operator, webhook) =
        operator_with_webhook(&cluster, &ns, &["--webhook-max-body-bytes", "4096"]);
    let guard_yaml = flags_and_guard(
        &ns,
        "{a: \"true\", b: \"true\"}",
        &format!(
            "  interval: 1s
  triggers:
    - name: high-errors
      alert: {{matchers: {{alertname: {ALERT}, service: shop}}}}"
        ),
    );
    let query_only = format!(
        r#"
apiVersion: rollguard.dev/v1alpha1
kind: RolloutGuard
metadata: {{name: queries, namespace: {ns}}}
spec:
  flags: {{configMapRef: {{name: ff}}, guarded: [b]}}
  interval: 1s
  triggers: [{{name: errors, query: "vector(0)", above: 1}}]
"#
    );
    cluster.apply(&format!("{guard_yaml}---{query_only}"));
    wait_until(Duration::from_secs(30), "both guards evaluated", || async {
        guard(&cluster, &ns, "g")
            .await
            .status?
            .last_evaluation_time?;
        guard(&cluster, &ns, "queries")
            .await
            .status?
            .last_evaluation_time
            .map(|_| ())
    })
    .await;
    let matching = serde_json::json!({"alertname": ALERT, "service": "shop", "namespace": ns});
    let url = &webhook.url;
    assert_eq!(post(url, None, payload("4", matching.clone())).await, 401);
    assert_eq!(
        post(url, Some("not-the-token"), payload("4", matching.clone())).await,
        401
    );
    assert_eq!(
        post(
            url,
            Some(TOKEN),
            "{\"version\": \"4\", \"alerts\": [{]".into()
        )
        .await,
        400
    );
    assert_eq!(
        post(url, Some(TOKEN), payload("3", matching.clone())).await,
        400
    );
    let padded = serde_json::json!({"alertname": ALERT, "service": "shop", "namespace": ns, "pad": "x".repeat(5000)});
    assert_eq!(post(url, Some(TOKEN), payload("4", padded)).await, 413);
    let elsewhere = serde_json::json!({"alertname": ALERT, "service": "shop", "namespace": "no-such-namespace"});
    assert_eq!(deliver(url, payload("4", elsewhere)).await, 200);
    let for_queries =
        serde_json::json!({"alertname": "QueriesGuardErrors", "namespace": ns, "guard": "queries"});
    assert_eq!(deliver(url, payload("4", for_queries)).await, 200);
    let no_namespace = serde_json::json!({"alertname": ALERT, "service": "shop"});
    assert_eq!(deliver(url, payload("4", no_namespace)).await, 200);

    evaluated_twice_more(&operator, &ns, "g").await;
    let trigger = guard(&cluster, &ns, "g").await.status.unwrap().triggers[0].clone();
    assert!(
        !trigger.breaching && trigger.value == Some(0.0),
        "{trigger:?}"
    );
    let requests: Api<rollguard::api::RollbackRequest> =
        Api::namespaced(cluster.client.clone(), &ns);
    assert!(
        requests
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let requests_total = "rollguard_alert_webhook_requests_total";
    let received = "rollguard_alerts_received_total";
    for (name, outcome, expected) in [
        (requests_total, "unauthorized", 2.0),
        (requests_total, "malformed", 2.0),
        (requests_total, "tooLarge", 1.0),
        (requests_total, "accepted", 3.0),
        (received, "ignored", 2.0),
        (received, "unrouted", 1.0),
        (received, "routed", 0.0),
    ] {
        assert_eq!(
            counter(&operator, name, outcome).await,
            expected,
            "{name}{{outcome={outcome:?}}}"
        );
    }
    for needle in [
        "missing or wrong bearer token",
        "payload version \"3\" is not supported",
        "body larger than 4096 bytes",
        "no guard of its namespace",
        "has no namespace label",
    ] {
        assert!(operator.log_contains(needle), "the log says {needle:?}");
    }
    assert!(!operator.log_contains(TOKEN), "the token is never logged");

    // The same alert, posted as Alertmanager does, reaches the guard and rolls it back.
    assert_eq!(deliver(url, payload("4", matching)).await, 200);
    let request = automatic_request(&requests, "g", Duration::from_secs(30)).await;
    assert_eq!(request.spec.guard_ref.name, "g");
    assert_eq!(counter(&operator, received, "routed").await, 1.0);
}

/// An Alertmanager that does not answer never fires a trigger: the guard is Degraded, its
/// condition names Alertmanager, and no request is created.
#[tokio::test]
async fn an_unreachable_alertmanager_degrades_the_guard_and_fires_nothing() {
    let Some(cluster) = common::cluster("alerts_unreachable").await else {
        return;
    };
    cluster.install_crds().await;
    let ns = cluster.namespace("alerts-unreachable").await;
    let operator = cluster.start_operator(&ns, &[]);
    let closed = format!("http://127.0.0.1:{}", free_port());
    cluster.apply(&alert_guard(&ns, Some(&closed)));
    let message = wait_until(Duration::from_secs(30), "the guard Degraded", || async {
        let status = guard(&cluster, &ns, "g").await.status?;
        (status.phase == Some(rollguard::api::guard::GuardPhase::Degraded)).then_some(())?;
        let reachable = status
            .conditions
            .iter()
            .find(|c| c.type_ == "PrometheusReachable")?;
        (reachable.status == "False").then(|| reachable.message.clone())
    })
    .await;
    assert!(
        message.contains(&format!("Alertmanager at {closed}/")),
        "{message}"
    );
    evaluated_twice_more(&operator, &ns, "g").await;
    let requests: Api<rollguard::api::RollbackRequest> =
        Api::namespaced(cluster.client.clone(), &ns);
    assert!(
        requests
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

/// Pushed alerts live in memory: after a restart a trigger that was breaching keeps its
/// persisted breach window and is Degraded (it can neither fire from nor forget a breach it
/// cannot see) until Alertmanager sends the alert again; then it breaches on, from the same
/// `breachingSince`. Posted by the test, so the moment of the re-send is the test's.
#[tokio::test]
async fn after_a_restart_a_breach_is_kept_until_alertmanager_sends_again() {
    let Some(cluster) = common::cluster("alerts_restart").await else {
        return;
    };
    cluster.install_crds().await;
    let ns = cluster.namespace("alerts-restart").await;
    let (operator, webhook) = operator_with_webhook(&cluster, &ns, &[]);
    let guard_yaml = flags_and_guard(
        &ns,
        "{a: \"true\"}",
        &format!(
            "  interval: 1s
  triggers:
    - name: high-errors
      alert: {{matchers: {{alertname: {ALERT}}}}}
      for: 1h"
        ),
    );
    cluster.apply(&guard_yaml);
    let matching = serde_json::json!({"alertname": ALERT, "namespace": ns});
    let breach = || async {
        let t = guard(&cluster, &ns, "g")
            .await
            .status?
            .triggers
            .first()?
            .clone();
        (t.breaching && t.last_error.is_none()).then_some(t.breaching_since?)
    };
    let since = wait_until(
        Duration::from_secs(30),
        "the pushed alert breaching",
        || async {
            // Until the operator's caches synced it answers 503; Alertmanager would retry too.
            post(&webhook.url, Some(TOKEN), payload("4", matching.clone())).await;
            breach().await
        },
    )
    .await;

    operator.kill();
    let addr = webhook
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/v1/alertmanager");
    let token_file = webhook.token_file.to_str().unwrap();
    let _restarted = cluster.start_operator_with(
        &ns,
        &[],
        &[
            "--leader-elect=false",
            "--webhook-addr",
            addr,
            "--webhook-token-file",
            token_file,
        ],
    );
    let waiting = wait_until(
        Duration::from_secs(30),
        "the guard Degraded after the restart",
        || async {
            let status = guard(&cluster, &ns, "g").await.status?;
            (status.phase == Some(rollguard::api::guard::GuardPhase::Degraded)).then_some(())?;
            let t = status.triggers.first()?.clone();
            t.last_error.clone().map(|e| (e, t))
        },
    )
    .await;
    assert!(waiting.0.contains("--alert-resend-window"), "{}", waiting.0);
    assert!(waiting.1.breaching, "the last good reading is kept");
    assert_eq!(
        waiting.1.breaching_since.as_ref(),
        Some(&since),
        "the window is kept"
    );

    assert_eq!(deliver(&webhook.url, payload("4", matching)).await, 200);
    let again = wait_until(Duration::from_secs(30), "breaching again", breach).await;
    assert_eq!(again, since, "the breach goes on from where it was");
    let requests: Api<rollguard::api::RollbackRequest> =
        Api::namespaced(cluster.client.clone(), &ns);
    assert!(
        requests
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

/// Only the leader takes alerts: a standby answers 503 (Alertmanager retries, and reaches
/// the leader through the Service), counts `notLeader` and keeps nothing; the leader takes
/// the same post.
#[tokio::test]
async fn a_standby_answers_503_and_only_the_leader_takes_alerts() {
    let Some(cluster) = common::cluster("alerts_standby").await else {
        return;
    };
    cluster.install_crds().await;
    let ns = cluster.namespace("alerts-standby").await;
    cluster.apply(&flags_and_guard(
        &ns,
        "{a: \"true\"}",
        &format!(
            "  interval: 1s
  triggers:
    - name: high-errors
      alert: {{matchers: {{alertname: {ALERT}}}}}
      for: 1h"
        ),
    ));
    let lease = ["--lease-name", "rollguard", "--lease-duration", "4s"];
    let (leader, leader_hook) = operator_with_webhook_env(
        &cluster,
        &ns,
        &[("POD_NAME", "op-a"), ("POD_NAMESPACE", &ns)],
        &lease,
    );
    wait_until(
        Duration::from_secs(30),
        "op-a leading and evaluating",
        || async {
            guard(&cluster, &ns, "g")
                .await
                .status?
                .last_evaluation_time
                .map(|_| ())
        },
    )
    .await;
    let (standby, standby_hook) = operator_with_webhook_env(
        &cluster,
        &ns,
        &[("POD_NAME", "op-b"), ("POD_NAMESPACE", &ns)],
        &lease,
    );
    wait_until(Duration::from_secs(30), "op-b standing by", || async {
        let text = reqwest::get(format!("{}/metrics", standby.metrics_url))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .any(|l| l == "rollguard_leader 0")
            .then_some(())
    })
    .await;
    let matching = serde_json::json!({"alertname": ALERT, "namespace": ns});
    assert_eq!(
        post(
            &standby_hook.url,
            Some(TOKEN),
            payload("4", matching.clone())
        )
        .await,
        503
    );
    assert_eq!(
        counter(
            &standby,
            "rollguard_alert_webhook_requests_total",
            "notLeader"
        )
        .await,
        1.0
    );
    evaluated_twice_more(&leader, &ns, "g").await;
    let trigger = guard(&cluster, &ns, "g").await.status.unwrap().triggers[0].clone();
    assert!(!trigger.breaching, "{trigger:?}");

    assert_eq!(deliver(&leader_hook.url, payload("4", matching)).await, 200);
    wait_until(
        Duration::from_secs(30),
        "the leader's guard breaching",
        || async {
            let t = guard(&cluster, &ns, "g")
                .await
                .status?
                .triggers
                .first()?
                .clone();
            t.breaching.then_some(())
        },
    )
    .await;
    assert_eq!(
        counter(&leader, "rollguard_alerts_received_total", "routed").await,
        1.0
    );
}

/// Pull mode shares reads as queries are shared: twenty guards reading one Alertmanager
/// every 2 s send it at most one read per 2 s interval. The endpoint is a loopback one that
/// counts reads and answers an empty alert list (what is counted is rollguard's calls).
#[tokio::test]
async fn twenty_guards_reading_one_alertmanager_read_it_once_per_interval() {
    let Some(cluster) = common::cluster("alerts_shared_reads").await else {
        return;
    };
    cluster.install_crds().await;
    let ns = cluster.namespace("alerts-shared").await;
    let reads = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u128>::new()));
    let counted = reads.clone();
    let app = axum::Router::new().route(
        "/api/v2/alerts",
        axum::routing::get(move || {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis();
            counted.lock().unwrap().push(now);
            async { ([("content-type", "application/json")], "[]") }
        }),
    );
    let address = format!("http://{}", common::serve(app).await);
    let _operator = cluster.start_operator(&ns, &[]);
    let mut manifest = String::from(&flags_and_guard(&ns, "{a: \"true\"}", "")[..]);
    for g in 0..20 {
        manifest.push_str(&format!(
            "---\napiVersion: rollguard.dev/v1alpha1\nkind: RolloutGuard\nmetadata: {{name: p{g}, namespace: {ns}}}\nspec:\n  interval: 2s\n  alertmanager: {{address: \"{address}\"}}\n  flags: {{configMapRef: {{name: ff}}, guarded: [a]}}\n  triggers: [{{name: t, alert: {{matchers: {{alertname: A{g}}}}}}}]\n"
        ));
    }
    cluster.apply(&manifest);
    wait_until(Duration::from_secs(60), "every guard evaluated", || async {
        for g in 0..20 {
            guard(&cluster, &ns, &format!("p{g}"))
                .await
                .status?
                .last_evaluation_time?;
        }
        Some(())
    })
    .await;
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let end = start + 10_000;
    let mut per_interval = std::collections::BTreeMap::<u128, usize>::new();
    for t in reads
        .lock()
        .unwrap()
        .iter()
        .filter(|t| **t >= start && **t < end)
    {
        *per_interval.entry(t / 2000).or_default() += 1;
    }
    let full: Vec<_> = per_interval
        .iter()
        .filter(|(b, _)| **b * 2000 >= start && (**b + 1) * 2000 <= end)
        .collect();
    assert!(full.len() >= 3, "{per_interval:?}");
    assert!(
        full.iter().all(|(_, n)| **n == 1),
        "one read per interval for twenty guards: {per_interval:?}"
    );
}
