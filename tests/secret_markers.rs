//! The marker test of SPEC §5: a unique marker in every Secret value the operator reads (a
//! Prometheus token, receiver URLs, a signing key, an SMTP password, a PagerDuty routing
//! key, report links, a Secret copied into a snapshot). After failing and succeeding deliveries, a rollback, a restore and the
//! plugin's reports, no marker appears in any status, Event, operator log line or
//! `kubectl rollguard` output — while the deliveries prove the operator did read and use
//! each Secret.

mod common;

use common::receivers::{Behaviour, Form, HttpReceiver, library_verify};
use common::{Env, wait_until};
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::ListParams;
use rollguard::api::RolloutGuard;
use rollguard::api::request::{DeliveryState, RequestPhase};
use std::time::Duration;

const PROM_TOKEN: &str = "mkPromToken7c1e9";
const SLACK_DOWN: &str = "mkSlackDown44af0";
const SLACK_OK: &str = "mkSlackOk90b1d";
const HOOK_URL: &str = "mkHookUrl3e5a7";
/// The base64 of 32 bytes ("rollguard marker signing key 32b"): the key itself.
const HOOK_KEY_B64: &str = "cm9sbGd1YXJkIG1hcmtlciBzaWduaW5nIGtleSAzMmI=";
const SMTP_PASSWORD: &str = "mkSmtpPass21d8c";
const INCLUDED: &str = "mkIncludedSecret5b30";
const PD_KEY: &str = "mkPdRoutingKey6f2a";
const TEAMS_URL: &str = "mkTeamsSig8d41c";
const REPORT_URL: &str = "mkReportUrl0c7e";

fn plugin(env: &Env, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-rollguard"))
        .arg("--kubeconfig")
        .arg(&env.cluster.kubeconfig)
        .args(["-n", &env.ns])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "kubectl rollguard {args:?}: {out:?}");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn no_value_of_a_secret_the_operator_reads_appears_in_any_record() {
    let Some(env) = Env::start(
        "secret_markers",
        &[
            ("ROLLGUARD_NOTIFY_ATTEMPTS", "2"),
            ("ROLLGUARD_NOTIFY_ATTEMPT_TIMEOUT", "1s"),
        ],
    )
    .await
    else {
        return;
    };
    let down = HttpReceiver::start(Behaviour::Fail).await;
    let ok = HttpReceiver::start(Behaviour::Accept).await;
    let hook = HttpReceiver::start(Behaviour::Accept).await;
    // Nothing listens here: the SMTP delivery fails to connect.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hook_key = format!("whsec_{HOOK_KEY_B64}");
    let ns = &env.ns;
    let secret = |name: &str, data: serde_json::Value| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}, labels: {{rollguard.dev/credentials: \"true\"}}}}\nstringData: {data}\n---\n"
        )
    };
    let mut manifests = String::new();
    manifests += &secret("prom-auth", serde_json::json!({"token": PROM_TOKEN}));
    manifests += &secret(
        "slack-down",
        serde_json::json!({"url": format!("{}?token={SLACK_DOWN}", down.url)}),
    );
    manifests += &secret(
        "slack-ok",
        serde_json::json!({"url": format!("{}?token={SLACK_OK}", ok.url)}),
    );
    manifests += &secret(
        "hook",
        serde_json::json!({"url": format!("{}?sig={HOOK_URL}", hook.url), "signingKey": hook_key}),
    );
    manifests += &secret(
        "mail",
        serde_json::json!({"smtpUrl": format!("smtp://rollguard:{SMTP_PASSWORD}@127.0.0.1:{closed}"),
            "from": "rollguard@example.test", "to": "oncall@example.test"}),
    );
    let report_url = format!("https://reports.example/{{request}}?k={REPORT_URL}");
    manifests += &secret(
        "pd",
        serde_json::json!({"routingKey": PD_KEY, "url": down.url, "reportUrl": report_url}),
    );
    manifests += &secret(
        "teams",
        serde_json::json!({"url": format!("{}?sig={TEAMS_URL}", ok.url), "reportUrl": report_url}),
    );
    manifests += &secret("app-secret", serde_json::json!({"password": INCLUDED}));
    manifests += &format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: ff, namespace: {ns}, labels: {{rollguard.dev/flags: "true"}}}}
data: {{a: "true"}}
---
apiVersion: rollguard.dev/v1alpha1
kind: RolloutGuard
metadata: {{name: g, namespace: {ns}}}
spec:
  interval: 1s
  flags: {{configMapRef: {{name: ff}}, guarded: [a]}}
  prometheus: {{address: "{prometheus}", authSecretRef: {{name: prom-auth}}}}
  triggers: [{{name: t, query: "vector(0)", above: 1}}]
  rollback: {{snapshot: {{include: [{{kind: Secret, name: app-secret}}]}}}}
  notify:
    - {{name: slack-down, type: slack, secretRef: {{name: slack-down}}}}
    - {{name: slack-ok, type: slack, secretRef: {{name: slack-ok}}}}
    - {{name: hook, type: webhook, secretRef: {{name: hook}}}}
    - {{name: mail, type: email, secretRef: {{name: mail}}}}
    - {{name: pd-down, type: pagerduty, secretRef: {{name: pd}}}}
    - {{name: teams-ok, type: teams, secretRef: {{name: teams}}}}
"#,
        prometheus = env.cluster.prometheus_url
    );
    env.cluster.apply(&manifests);
    // The guard queried Prometheus with its token (a value recorded) before anything else.
    let guards = env.api::<RolloutGuard>();
    wait_until(Duration::from_secs(20), "the guard evaluated", || {
        let guards = guards.clone();
        async move {
            let g = guards.get("g").await.ok()?;
            let s = g.status?;
            s.triggers.iter().any(|t| t.value.is_some()).then_some(())
        }
    })
    .await;

    env.cluster.apply(&format!(
        "apiVersion: rollguard.dev/v1alpha1\nkind: RollbackRequest\nmetadata: {{name: rb, namespace: {ns}}}\nspec: {{guardRef: {{name: g}}, requestedBy: ops, reason: marker test, mode: immediate}}\n"
    ));
    let rb = env.settled("rb").await;
    assert_eq!(
        rb.status.as_ref().unwrap().phase,
        Some(RequestPhase::Succeeded)
    );
    env.cluster.apply(&format!(
        "apiVersion: rollguard.dev/v1alpha1\nkind: RollbackRequest\nmetadata: {{name: rs, namespace: {ns}}}\nspec: {{guardRef: {{name: g}}, requestedBy: ops, action: restore}}\n"
    ));
    let rs = env.settled("rs").await;
    assert_eq!(
        rs.status.as_ref().unwrap().phase,
        Some(RequestPhase::Succeeded)
    );

    // Each Secret was read and used: deliveries failed and succeeded, the webhook verifies
    // with the marker key, the snapshot holds the included Secret.
    let states: Vec<_> = rb
        .status
        .as_ref()
        .unwrap()
        .notifications
        .iter()
        .map(|n| (n.receiver.clone(), n.state))
        .collect();
    for (receiver, state) in [
        ("slack-down", DeliveryState::Failed),
        ("slack-ok", DeliveryState::Delivered),
        ("hook", DeliveryState::Delivered),
        ("mail", DeliveryState::Failed),
        ("pd-down", DeliveryState::Failed),
        ("teams-ok", DeliveryState::Delivered),
    ] {
        assert!(
            states.contains(&(receiver.to_string(), state)),
            "{receiver} {state:?}: {states:?}"
        );
    }
    assert!(!down.received().is_empty() && !ok.accepted().is_empty());
    // PagerDuty got the routing key and the report link; Teams the report link.
    let sent = |r: &HttpReceiver| {
        r.received()
            .iter()
            .map(|d| String::from_utf8_lossy(&d.body).into_owned())
            .collect::<String>()
    };
    assert!(sent(&down).contains(PD_KEY) && sent(&down).contains(REPORT_URL));
    assert!(sent(&ok).contains("AdaptiveCard") && sent(&ok).contains(REPORT_URL));
    let delivery = &hook.accepted()[0];
    if let Some(verdict) = library_verify(&hook_key, Form::Str, &delivery.headers, &delivery.body) {
        verdict.expect("the webhook verifies with the marker key");
    }
    let snapshot = env
        .api::<Secret>()
        .get(
            &rb.status
                .as_ref()
                .unwrap()
                .snapshot_ref
                .as_ref()
                .unwrap()
                .name,
        )
        .await
        .unwrap();
    let copied =
        String::from_utf8(snapshot.data.unwrap()["secret-app-secret.json"].0.clone()).unwrap();
    let included_b64 = "bWtJbmNsdWRlZFNlY3JldDViMzA="; // base64 of INCLUDED, as the copy has it
    assert!(copied.contains(included_b64), "{copied}");

    // Every record a person or a pipeline reads.
    let mut records: Vec<(String, String)> = Vec::new();
    for r in env.requests().list(&ListParams::default()).await.unwrap() {
        records.push((
            format!("status of request {}", r.metadata.name.clone().unwrap()),
            serde_json::to_string(&r.status).unwrap(),
        ));
    }
    records.push((
        "status of guard g".into(),
        serde_json::to_string(&guards.get("g").await.unwrap().status).unwrap(),
    ));
    let events = env
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(!events.items.is_empty());
    records.push((
        "Events".into(),
        serde_json::to_string(&events.items).unwrap(),
    ));
    for args in [
        &["status", "-o", "wide"][..],
        &["status", "-o", "json"],
        &["report", "rb"],
        &["report", "rb", "-o", "json"],
        &["report", "rs"],
    ] {
        records.push((format!("kubectl rollguard {args:?}"), plugin(&env, args)));
    }
    let log = env.operator.as_ref().unwrap().log_text();
    assert!(log.contains("notification"), "the log has the deliveries");
    records.push(("operator log".into(), log));

    let markers = [
        PROM_TOKEN,
        SLACK_DOWN,
        SLACK_OK,
        HOOK_URL,
        HOOK_KEY_B64,
        SMTP_PASSWORD,
        PD_KEY,
        TEAMS_URL,
        REPORT_URL,
        INCLUDED,
        included_b64,
    ];
    let leaks: Vec<String> = records
        .iter()
        .flat_map(|(place, text)| {
            markers
                .iter()
                .filter(|m| text.contains(**m))
                .map(move |m| format!("{m} in {place}"))
        })
        .collect();
    assert!(leaks.is_empty(), "markers leaked: {leaks:#?}");
}
