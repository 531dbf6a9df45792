//! What a guard's evaluation costs the API server, counted by the API server itself
//! (`apiserver_request_total` on its /metrics): a steady guard writes no status and reads no
//! ConfigMap or Secret; a transition is written once; the caches follow the labels. The
//! counts are cluster-wide, so the tests of this file run one at a time and nothing else runs
//! in the window they count.

mod common;

use common::gauges::Gauges;
use common::{Env, api_requests, wait_until};
use kube::ResourceExt;
use kube::api::Api;
use rollguard::api::RolloutGuard;
use rollguard::api::guard::GuardPhase;
use std::time::Duration;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Guard `g` evaluated every second: trigger `clock` reads a value that changes at every
/// evaluation and never breaches; `errors` reads a gauge the test serves (0: quiet). Its
/// queries carry credentials from Secret `prom-auth`. Returns once it has settled (three
/// evaluations after both triggers have values).
async fn steady_guard(test: &str) -> Option<(Env, Gauges, u64)> {
    let env = Env::start(test, &[]).await?;
    let gauges = Gauges::serve(&env.cluster).await;
    gauges.set("errors", 0.0);
    gauges.scraped(&env.cluster, "errors", 0.0).await;
    let ns = &env.ns;
    env.cluster.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: prom-auth, namespace: {ns}, labels: {{rollguard.dev/credentials: \"true\"}}}}\nstringData: {{token: s3cret}}\n---\n{}",
        common::flags_and_guard(
            ns,
            "{a: \"true\"}",
            &format!(
                "  interval: 1s\n  prometheus: {{authSecretRef: {{name: prom-auth}}}}\n  triggers:\n  - {{name: clock, query: \"vector(time())\", above: 1e12}}\n  - {{name: errors, query: \"{}\", above: 1, for: 0s, action: alert}}",
                gauges.query("errors")
            )
        )
    ));
    let guards: Api<RolloutGuard> = env.api();
    wait_until(
        Duration::from_secs(30),
        "guard g monitoring with values",
        || {
            let guards = guards.clone();
            async move {
                let status = guards.get("g").await.ok()?.status?;
                (status.phase == Some(GuardPhase::Monitoring)
                    && status.triggers.len() == 2
                    && status.triggers.iter().all(|t| t.value.is_some()))
                .then_some(())
            }
        },
    )
    .await;
    let operator = env.operator.as_ref().unwrap();
    let settled = operator.evaluated(ns, "g", 0, 0).await;
    let mut settled = operator.evaluated(ns, "g", settled, 3).await;
    // The guard refreshes its values once a minute, at a phase of its own: when that falls
    // within the next 40 s, let the refresh happen first, so the windows the tests measure
    // hold none.
    let phase = rollguard::guard::writes::refresh_phase(ns, "g").as_secs();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let until_refresh = (phase + 60 - now % 60) % 60;
    if until_refresh < 40 {
        tokio::time::sleep(Duration::from_secs(until_refresh + 2)).await;
        let since = operator.evaluated(ns, "g", 0, 0).await;
        settled = operator.evaluated(ns, "g", since, 2).await;
    }
    Some((env, gauges, settled))
}

async fn status_writes(client: &kube::Client) -> f64 {
    api_requests(
        client,
        &["PATCH", "UPDATE", "APPLY"],
        "rolloutguards",
        "status",
    )
    .await
}

/// The `clock` trigger's live value on the operator's /metrics.
async fn live_clock(env: &Env) -> Option<f64> {
    let operator = env.operator.as_ref().unwrap();
    operator
        .metric(&format!(
            "rollguard_trigger_value{{namespace=\"{}\",guard=\"g\",trigger=\"clock\"}}",
            env.ns
        ))
        .await
}

#[tokio::test]
async fn a_steady_guard_writes_no_status_and_a_transition_writes_once() {
    let _serial = SERIAL.lock().await;
    let Some((env, gauges, settled)) = steady_guard("api_calls_steady").await else {
        return;
    };
    let (client, ns) = (env.cluster.client.clone(), env.ns.clone());
    let operator = env.operator.as_ref().unwrap();
    let guards: Api<RolloutGuard> = env.api();
    let version = |g: RolloutGuard| g.resource_version();

    let refresh_count =
        || operator.metric("rollguard_guard_status_writes_total{reason=\"refresh\"}");
    let refreshes_before = refresh_count().await;
    let (before, version_before) = (
        status_writes(&client).await,
        version(guards.get("g").await.unwrap()),
    );
    let clock_before = live_clock(&env).await.expect("the clock trigger's gauge");
    let evaluated = operator.evaluated(&ns, "g", settled, 5).await;
    let (after, version_after) = (
        status_writes(&client).await,
        version(guards.get("g").await.unwrap()),
    );
    let clock_after = live_clock(&env).await.expect("the clock trigger's gauge");
    assert!(
        clock_after > clock_before,
        "the values moved on the operator's metrics ({clock_before} → {clock_after})"
    );
    assert_eq!(
        after - before,
        0.0,
        "{} steady evaluations wrote the guard's status",
        evaluated - settled
    );
    assert_eq!(version_before, version_after, "the guard was not changed");

    // A transition: the breach starts (and, for 0s, fires) in one evaluation.
    gauges.set("errors", 5.0);
    wait_until(Duration::from_secs(30), "the breach written", || {
        let guards = guards.clone();
        async move {
            let status = guards.get("g").await.ok()?.status?;
            (status.phase == Some(GuardPhase::Breaching)).then_some(())
        }
    })
    .await;
    let since = operator.evaluations(&ns, "g").await;
    operator.evaluated(&ns, "g", since, 3).await;
    let breached = status_writes(&client).await;
    assert_eq!(
        breached - after,
        1.0,
        "the breach is one write, and the steady breach after it none"
    );
    assert_eq!(
        refresh_count().await,
        refreshes_before,
        "a value refresh fell within the measured windows"
    );
}

#[tokio::test]
async fn a_steady_guard_reads_no_config_map_or_secret() {
    let _serial = SERIAL.lock().await;
    let Some((env, _gauges, settled)) = steady_guard("api_calls_reads").await else {
        return;
    };
    let client = env.cluster.client.clone();
    let operator = env.operator.as_ref().unwrap();
    let reads = || async {
        (
            api_requests(&client, &["GET"], "configmaps", "").await,
            api_requests(&client, &["GET"], "secrets", "").await,
        )
    };
    let before = reads().await;
    let evaluated = operator.evaluated(&env.ns, "g", settled, 5).await;
    let after = reads().await;
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (0.0, 0.0),
        "GETs of (ConfigMaps, Secrets) during {} steady evaluations",
        evaluated - settled
    );
}

/// The caches follow the labels: a flags ConfigMap or credential Secret whose owner takes the
/// label off is refused at the next evaluation with the message a direct read gives, and
/// used again once labelled again.
#[tokio::test]
async fn an_object_whose_label_is_taken_off_is_refused_and_used_again_once_relabelled() {
    let _serial = SERIAL.lock().await;
    let Some((env, _gauges, _)) = steady_guard("api_calls_labels").await else {
        return;
    };
    let guards: Api<RolloutGuard> = env.api();
    let ns = env.ns.clone();
    let phase_and_message = |condition: &'static str| {
        let guards = guards.clone();
        async move {
            let status = guards.get("g").await.ok()?.status?;
            let message = rollguard::conditions::get(&status.conditions, condition)?
                .message
                .clone();
            Some((status.phase?, message))
        }
    };
    let label = |kind: &str, name: &str, label: &str| {
        let (ok, out, err) = env
            .cluster
            .kubectl(&["label", "-n", &ns, kind, name, label]);
        assert!(ok, "kubectl label {kind} {name} {label}: {out}{err}");
    };

    let cases = [
        (
            "configmap",
            "ff",
            "rollguard.dev/flags",
            "Ready",
            GuardPhase::Invalid,
            "spec.flags.configMapRef.name: ConfigMap \"ff\" is not labelled rollguard.dev/flags: \"true\"",
        ),
        (
            "secret",
            "prom-auth",
            "rollguard.dev/credentials",
            "PrometheusReachable",
            GuardPhase::Degraded,
            "spec.prometheus.authSecretRef.name: Secret \"prom-auth\" is not labelled rollguard.dev/credentials: \"true\"",
        ),
    ];
    for (kind, name, key, condition, refused, says) in cases {
        label(kind, name, &format!("{key}-"));
        let (_, message) = wait_until(Duration::from_secs(20), &format!("{refused:?}"), || {
            let says = phase_and_message(condition);
            async move { says.await.filter(|(phase, _)| *phase == refused) }
        })
        .await;
        assert!(message.contains(says), "{message}");
        label(kind, name, &format!("{key}=true"));
        wait_until(Duration::from_secs(20), "Monitoring again", || {
            let says = phase_and_message("Ready");
            async move {
                says.await
                    .filter(|(phase, _)| *phase == GuardPhase::Monitoring)
            }
        })
        .await;
    }
}
