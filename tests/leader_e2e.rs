//! Leader election (SPEC §3): operator processes on one Lease against the real control
//! plane. Only the holder acts; a SIGKILLed leader's rollback is finished by the standby
//! within the lease duration with every side effect done once; a leader that loses its
//! Lease exits at once; a leader stopped by SIGTERM hands the Lease over at once.

mod common;

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use common::{Cluster, Operator, cluster, wait_until};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams};
use rollguard::api::RollbackRequest;
use rollguard::api::request::RequestPhase;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Lease duration of the tests: short, so a takeover is quick.
const LEASE_SECONDS: u64 = 4;

fn start(cluster: &Cluster, ns: &str, pod: &str, lease_seconds: u64) -> Operator {
    let duration = format!("{lease_seconds}s");
    cluster.start_operator_with(
        ns,
        &[("POD_NAME", pod), ("POD_NAMESPACE", ns)],
        &["--lease-name", "rollguard", "--lease-duration", &duration],
    )
}

async fn fetch(url: &str) -> Option<(u16, String)> {
    let response = reqwest::get(url).await.ok()?;
    Some((response.status().as_u16(), response.text().await.ok()?))
}

/// The value of `rollguard_leader` on the operator's /metrics.
async fn leader_gauge(operator: &Operator) -> Option<u8> {
    let (_, text) = fetch(&format!("{}/metrics", operator.metrics_url)).await?;
    text.lines()
        .find_map(|l| l.strip_prefix("rollguard_leader "))
        .and_then(|v| v.trim().parse().ok())
}

async fn wait_gauge(operator: &Operator, want: u8, within: Duration, who: &str) {
    wait_until(
        within,
        &format!("{who}: rollguard_leader {want}"),
        || async { (leader_gauge(operator).await == Some(want)).then_some(()) },
    )
    .await;
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases.get("rollguard").await.ok()?.spec?.holder_identity
}

/// Counts POSTs by path (`/pre`, `/post`).
async fn hook_server() -> (String, Arc<Mutex<HashMap<String, usize>>>) {
    let calls = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let app = Router::new()
        .route(
            "/{hook}",
            post(
                |State(calls): State<Arc<Mutex<HashMap<String, usize>>>>,
                 Path(hook): Path<String>| async move {
                    *calls.lock().unwrap().entry(hook).or_default() += 1;
                    Json(serde_json::json!({"ok": true}))
                },
            ),
        )
        .with_state(calls.clone());
    (format!("http://{}", common::serve(app).await), calls)
}

/// (reason, reportingInstance) of every Event about `name`.
async fn events_about(cluster: &Cluster, ns: &str, name: &str) -> Vec<(String, String)> {
    let events: Api<Event> = Api::namespaced(cluster.client.clone(), ns);
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| {
            (
                e.reason.unwrap_or_default(),
                e.reporting_instance.unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test]
async fn only_the_leader_acts_and_a_standby_finishes_the_rollback_of_a_killed_leader() {
    let Some(cluster) =
        cluster("only_the_leader_acts_and_a_standby_finishes_the_rollback_of_a_killed_leader")
            .await
    else {
        return;
    };
    cluster.install_crds().await;
    let ns = cluster.namespace("leader").await;
    let (hooks, hook_calls) = hook_server().await;
    let (health, healthy) = common::health_server().await;
    cluster.apply(&format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: ff, namespace: {ns}, labels: {{rollguard.dev/flags: "true"}}}}
data: {{a: "true", b: "true", keep: "me"}}
---
apiVersion: rollguard.dev/v1alpha1
kind: RolloutGuard
metadata: {{name: g, namespace: {ns}}}
spec:
  flags: {{configMapRef: {{name: ff}}, guarded: [a, b]}}
  rollback: {{hooks: {{preRollback: [{{url: "{hooks}/pre"}}], postRollback: [{{url: "{hooks}/post"}}]}}}}
  health: {{timeout: 2m, http: [{{url: "{health}", expectStatus: 200}}]}}
"#
    ));
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), &ns);

    let first = start(&cluster, &ns, "op-a", LEASE_SECONDS);
    wait_gauge(&first, 1, Duration::from_secs(20), "op-a").await;
    let second = start(&cluster, &ns, "op-b", LEASE_SECONDS);
    let standby_ready = format!("{}/readyz", second.metrics_url);
    wait_until(
        Duration::from_secs(20),
        "op-b /readyz 200 (standing by)",
        || {
            let url = standby_ready.clone();
            async move { fetch(&url).await.filter(|(code, _)| *code == 200) }
        },
    )
    .await;
    assert_eq!(leader_gauge(&second).await, Some(0), "op-b must stand by");
    assert!(
        holder(&leases).await.unwrap().starts_with("op-a_"),
        "op-a holds the lease"
    );

    // Count every write to the flags ConfigMap from here on.
    let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &ns);
    let writes = common::count_config_map_writes(&config_maps, "ff").await;

    cluster.apply(&format!(
        "apiVersion: rollguard.dev/v1alpha1\nkind: RollbackRequest\nmetadata: {{name: incident, namespace: {ns}}}\nspec: {{guardRef: {{name: g}}, requestedBy: ops, reason: leader test}}\n"
    ));
    let requests: Api<RollbackRequest> = Api::namespaced(cluster.client.clone(), &ns);
    // The health check fails until the test says otherwise: the rollback waits in Verifying.
    wait_until(
        Duration::from_secs(20),
        "the request to reach Verifying",
        || async {
            let r = requests.get("incident").await.ok()?;
            (r.status?.phase? == RequestPhase::Verifying).then_some(())
        },
    )
    .await;
    // Events are written beside the status: wait for the one of the flag change.
    let before = wait_until(
        Duration::from_secs(10),
        "the FlagsDisabled Event",
        || async {
            let events = events_about(&cluster, &ns, "incident").await;
            events
                .iter()
                .any(|(reason, _)| reason == "FlagsDisabled")
                .then_some(events)
        },
    )
    .await;
    assert!(
        before.iter().all(|(_, instance)| instance == "op-a"),
        "only the leader acts: {before:?}"
    );
    assert!(
        !second.log_contains("leading"),
        "op-b must not lead while op-a holds the lease:\n{}",
        second.log_text()
    );

    let killed = Instant::now();
    first.kill();
    let new_holder = wait_until(
        Duration::from_secs(LEASE_SECONDS * 3),
        "op-b to take the lease",
        || async { holder(&leases).await.filter(|h| h.starts_with("op-b_")) },
    )
    .await;
    let takeover = killed.elapsed();
    // The Lease expires at most LEASE_SECONDS after the kill; kube-lease-manager then waits
    // up to 1 s (collision jitter) before it takes a free Lease.
    assert!(
        takeover <= Duration::from_secs(LEASE_SECONDS + 2),
        "takeover by {new_holder} took {takeover:?}"
    );
    wait_gauge(&second, 1, Duration::from_secs(5), "op-b").await;

    healthy.store(true, Ordering::SeqCst);
    let done = common::finished(&requests, "incident").await;
    tokio::time::sleep(Duration::from_millis(500)).await; // let any stray duplicate show
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(RequestPhase::Succeeded), "{status:#?}");

    let data = config_maps.get("ff").await.unwrap().data.unwrap();
    assert_eq!(
        (
            data["a"].as_str(),
            data["b"].as_str(),
            data["keep"].as_str()
        ),
        ("false", "false", "me")
    );
    let changed: Vec<_> = status
        .flags_changed
        .unwrap()
        .into_iter()
        .map(|c| (c.name, c.from, c.to))
        .collect();
    assert_eq!(
        changed,
        [
            ("a".into(), "true".into(), "false".into()),
            ("b".into(), "true".into(), "false".into())
        ]
    );
    assert_eq!(
        writes.load(Ordering::SeqCst),
        1,
        "the flags ConfigMap was written more than once"
    );
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &ns);
    let snapshots = secrets
        .list(&ListParams::default().labels("rollguard.dev/request=incident"))
        .await
        .unwrap()
        .items;
    assert_eq!(snapshots.len(), 1, "snapshot Secrets");
    let calls = hook_calls.lock().unwrap().clone();
    assert_eq!(
        (calls.get("pre").copied(), calls.get("post").copied()),
        (Some(1), Some(1)),
        "hook calls: {calls:?}"
    );
    let after = events_about(&cluster, &ns, "incident").await;
    let finisher: Vec<_> = after
        .iter()
        .filter(|(reason, _)| reason == "RollbackSucceeded")
        .collect();
    assert_eq!(
        finisher,
        [&("RollbackSucceeded".to_string(), "op-b".to_string())],
        "{after:?}"
    );
    for step in ["SnapshotTaken", "FlagsDisabled"] {
        let by: Vec<_> = after.iter().filter(|(r, _)| r == step).collect();
        assert_eq!(
            by,
            [&(step.to_string(), "op-a".to_string())],
            "{step} once, by the first leader: {after:?}"
        );
    }
}

#[tokio::test]
async fn a_leader_that_loses_its_lease_exits_at_once() {
    let Some(cluster) = cluster("a_leader_that_loses_its_lease_exits_at_once").await else {
        return;
    };
    cluster.install_crds().await;
    let ns = cluster.namespace("leader-lost").await;
    let mut leader = start(&cluster, &ns, "op-a", 6);
    wait_gauge(&leader, 1, Duration::from_secs(20), "op-a").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        leader.exited().is_none(),
        "a leader keeps running while it holds the lease:\n{}",
        leader.log_text()
    );

    // Someone else takes the Lease (as a partitioned leader would find after it expired).
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), &ns);
    // MicroTime: the API server wants exactly six fractional digits.
    let now = format!("{:.6}", jiff::Timestamp::now());
    leases
        .patch(
            "rollguard",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "spec": {"holderIdentity": "intruder", "renewTime": now, "acquireTime": now}
            })),
        )
        .await
        .unwrap();
    let taken = Instant::now();
    let status = wait_until(
        Duration::from_secs(6),
        "op-a to exit after losing the lease",
        || {
            let status = leader.exited();
            async move { status }
        },
    )
    .await;
    // The fence reads the Lease every grace/2 = 1 s.
    assert!(
        taken.elapsed() < Duration::from_secs(3),
        "exited after {:?}",
        taken.elapsed()
    );
    assert_eq!(
        status.code(),
        Some(rollguard::leader::LOST_LEASE_EXIT_CODE),
        "{}",
        leader.log_text()
    );
    assert!(leader.log_contains("lost the lease"));
}

#[tokio::test]
async fn a_leader_stopped_by_sigterm_releases_the_lease_and_exits_cleanly() {
    let Some(cluster) =
        cluster("a_leader_stopped_by_sigterm_releases_the_lease_and_exits_cleanly").await
    else {
        return;
    };
    cluster.install_crds().await;
    let ns = cluster.namespace("leader-term").await;
    let mut first = start(&cluster, &ns, "op-a", LEASE_SECONDS);
    wait_gauge(&first, 1, Duration::from_secs(20), "op-a").await;
    // Ready: its controllers run and handle SIGTERM.
    let leader_ready = format!("{}/readyz", first.metrics_url);
    wait_until(Duration::from_secs(20), "op-a ready", || {
        let url = leader_ready.clone();
        async move { fetch(&url).await.filter(|(code, _)| *code == 200) }
    })
    .await;
    let second = start(&cluster, &ns, "op-b", LEASE_SECONDS);
    let ready = format!("{}/readyz", second.metrics_url);
    wait_until(Duration::from_secs(20), "op-b standing by", || {
        let url = ready.clone();
        async move { fetch(&url).await.filter(|(code, _)| *code == 200) }
    })
    .await;
    assert_eq!(leader_gauge(&second).await, Some(0));

    let term = std::process::Command::new("kill")
        .args(["-TERM", &first.pid().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = wait_until(Duration::from_secs(10), "op-a to stop", || {
        let status = first.exited();
        async move { status }
    })
    .await;
    assert!(status.success(), "{status:?}\n{}", first.log_text());
    assert!(first.log_contains("lease released"), "{}", first.log_text());
    // kube-lease-manager's standby looks again when the Lease would have expired.
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), &ns);
    let new_holder = wait_until(
        Duration::from_secs(LEASE_SECONDS + 3),
        "op-b to take the lease",
        || async { holder(&leases).await.filter(|h| h.starts_with("op-b_")) },
    )
    .await;
    wait_gauge(&second, 1, Duration::from_secs(5), &new_holder).await;
}
