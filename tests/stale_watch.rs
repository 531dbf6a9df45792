//! Stale watches: the operator talks to the real kube-apiserver through a loopback proxy
//! that delivers the RollbackRequest watch 0.5–3 s late and everything else at once — a
//! watch half a second behind is ordinary on a loaded API server. Graceful rollbacks with
//! drain and resume hooks must end Succeeded and stay so, call each hook once, and record
//! the flags they changed.

mod common;

use common::proxy::{Lag, Proxy};
use rollguard::api::RollbackRequest;
use rollguard::api::request::RequestPhase;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// An operator on `ns` whose watches of `only` (a path suffix) reach it through the proxy
/// `millis` late, frame by frame (`seed`: repeatable); every other call at once
/// (tests/common/proxy.rs).
async fn behind(
    cluster: &common::Cluster,
    ns: &str,
    seed: u64,
    millis: std::ops::RangeInclusive<u64>,
    only: &'static str,
) -> (Proxy, common::Operator) {
    let proxy = Proxy::start(
        cluster.client.clone(),
        Some(Lag {
            seed,
            min: Duration::from_millis(*millis.start()),
            max: Duration::from_millis(*millis.end()),
            late_percent: 100,
            only: Some(only),
        }),
    )
    .await;
    let kubeconfig = proxy.kubeconfig.clone();
    let operator = cluster.start_operator_with(
        ns,
        &[],
        &[
            "--leader-elect=false",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ],
    );
    (proxy, operator)
}

#[tokio::test]
async fn graceful_rollbacks_seen_through_a_late_watch_succeed_once_and_stay_succeeded() {
    let Some(cluster) = common::cluster("stale_watch").await else {
        return;
    };
    cluster.install_crds().await;
    let ns = cluster.namespace("stale-watch").await;
    let hooks = common::receivers::HttpReceiver::start(common::receivers::Behaviour::Accept).await;
    const GUARDS: usize = 6;
    for i in 0..GUARDS {
        cluster.apply(&format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ff-{i}, namespace: {ns}, labels: {{rollguard.dev/flags: \"true\"}}}}\ndata: {{checkout: \"true\", search: \"true\"}}\n---\napiVersion: rollguard.dev/v1alpha1\nkind: RolloutGuard\nmetadata: {{name: g-{i}, namespace: {ns}}}\nspec:\n  flags: {{configMapRef: {{name: ff-{i}}}, guarded: [checkout, search]}}\n  rollback: {{hooks: {{preRollback: [{{url: \"{url}\"}}], postRollback: [{{url: \"{url}\"}}]}}}}\n",
            url = hooks.url
        ));
    }
    // The RollbackRequest watch 0.5–3 s late, frame by frame (a fixed seed: repeatable);
    // every other call at once (tests/common/proxy.rs).
    let (proxy, operator) = behind(&cluster, &ns, 7919, 500..=3000, "/rollbackrequests").await;
    let requests: kube::Api<RollbackRequest> = kube::Api::namespaced(cluster.client.clone(), &ns);
    for i in 0..GUARDS {
        cluster.apply(&format!(
            "apiVersion: rollguard.dev/v1alpha1\nkind: RollbackRequest\nmetadata: {{name: rb-{i}, namespace: {ns}}}\nspec: {{guardRef: {{name: g-{i}}}, mode: graceful, requestedBy: alice, reason: checkout errors}}\n"
        ));
    }
    let succeeded = |r: &RollbackRequest| {
        r.status.as_ref().and_then(|s| s.phase) == Some(RequestPhase::Succeeded)
    };
    common::wait_until(Duration::from_secs(90), "every rollback Succeeded", || {
        let requests = requests.clone();
        async move {
            let all = requests.list(&Default::default()).await.ok()?.items;
            (all.len() == GUARDS && all.iter().all(succeeded)).then_some(())
        }
    })
    .await;
    // The late watch had its chance: every frame held back when the last request succeeded
    // has been passed on, and the operator reconciled what it saw (a few seconds more).
    proxy.drained(Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        proxy.stats.delayed.load(Ordering::SeqCst) > 0,
        "the watch of RollbackRequests went through the lagging proxy"
    );

    let calls = hooks.received();
    for i in 0..GUARDS {
        let name = format!("rb-{i}");
        let r = requests.get(&name).await.unwrap();
        let status = r.status.clone().unwrap();
        assert_eq!(
            status.phase,
            Some(RequestPhase::Succeeded),
            "{name} after the late watch caught up: {:?}\n{:#?}",
            status.message,
            status.timeline
        );
        assert!(
            status.timeline.iter().all(|t| t.step != "Superseded"),
            "{name}: {:#?}",
            status.timeline
        );
        let complete = rollguard::conditions::get(&status.conditions, "Complete").unwrap();
        assert_eq!(complete.status, "True", "{complete:?}");
        let mut changed: Vec<_> = status
            .flags_changed
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.name)
            .collect();
        changed.sort();
        assert_eq!(changed, ["checkout", "search"], "{name}: flagsChanged");
        for stage in ["preRollback", "postRollback"] {
            let n = calls
                .iter()
                .filter(|c| {
                    let body = c.json();
                    body["request"] == name.as_str() && body["stage"] == stage
                })
                .count();
            assert_eq!(n, 1, "{name}: {stage} hook calls");
        }
    }
    drop(operator);
}

/// The guard watch 6–8 s late: a request that starts from the guard's cached copy reads the
/// guard beside its claim, so it follows the guard as it is. A guard that guards another
/// flag since a moment ago has that flag turned off; a guard deleted a moment ago fails the
/// request (GuardNotFound) and leaves no slot Lease behind.
#[tokio::test]
async fn a_request_follows_the_guard_as_it_is_while_the_guard_watch_lags() {
    use k8s_openapi::api::coordination::v1::Lease;
    use kube::api::{Patch, PatchParams};
    use rollguard::api::RolloutGuard;

    let Some(cluster) = common::cluster("stale_guard_watch").await else {
        return;
    };
    cluster.install_crds().await;
    let ns = cluster.namespace("stale-guards").await;
    for g in ["moved", "gone"] {
        cluster.apply(&format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ff-{g}, namespace: {ns}, labels: {{rollguard.dev/flags: \"true\"}}}}\ndata: {{a: \"true\", b: \"true\"}}\n---\napiVersion: rollguard.dev/v1alpha1\nkind: RolloutGuard\nmetadata: {{name: {g}, namespace: {ns}}}\nspec:\n  flags: {{configMapRef: {{name: ff-{g}}}, guarded: [a]}}\n"
        ));
    }
    let (proxy, operator) = behind(&cluster, &ns, 17, 6000..=8000, "/rolloutguards").await;
    operator.wait_ready().await;
    let guards: kube::Api<RolloutGuard> = kube::Api::namespaced(cluster.client.clone(), &ns);
    let requests: kube::Api<RollbackRequest> = kube::Api::namespaced(cluster.client.clone(), &ns);
    let request = |name: &str, guard: &str| {
        format!(
            "apiVersion: rollguard.dev/v1alpha1\nkind: RollbackRequest\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{guardRef: {{name: {guard}}}, mode: immediate, requestedBy: alice}}\n"
        )
    };

    // "moved" now guards b, not a; the operator's watch shows that 6–8 s from now.
    guards
        .patch(
            "moved",
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"spec": {"flags": {"guarded": ["b"]}}})),
        )
        .await
        .unwrap();
    cluster.apply(&request("after-move", "moved"));
    let done = common::finished(&requests, "after-move").await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(RequestPhase::Succeeded), "{status:#?}");
    let changed: Vec<_> = status
        .flags_changed
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(changed, ["b"], "the flag the guard guards now");
    let behind = || proxy.stats.held.load(Ordering::SeqCst) > 0;
    assert!(behind(), "the operator's guard watch was still behind");
    let config_maps: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(cluster.client.clone(), &ns);
    let data = config_maps.get("ff-moved").await.unwrap().data.unwrap();
    assert_eq!((data["a"].as_str(), data["b"].as_str()), ("true", "false"));

    // "gone" is deleted; the operator's watch still shows it for 6–8 s.
    guards.delete("gone", &Default::default()).await.unwrap();
    cluster.apply(&request("after-delete", "gone"));
    let done = common::finished(&requests, "after-delete").await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(RequestPhase::Failed), "{status:#?}");
    let failed = rollguard::conditions::get(&status.conditions, "Failed").unwrap();
    assert_eq!(failed.reason, "GuardNotFound", "{failed:?}");
    assert!(behind(), "the operator's guard watch was still behind");
    let leases: kube::Api<Lease> = kube::Api::namespaced(cluster.client.clone(), &ns);
    assert!(
        leases
            .get_opt("rollguard-slot-gone")
            .await
            .unwrap()
            .is_none(),
        "no slot Lease left for a deleted guard"
    );
    let data = config_maps.get("ff-gone").await.unwrap().data.unwrap();
    assert_eq!(data["a"], "true", "nothing changed for a deleted guard");
    drop(operator);
}
