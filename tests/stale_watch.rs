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
    let proxy = Proxy::start(
        cluster.client.clone(),
        Some(Lag {
            seed: 7919,
            min: Duration::from_millis(500),
            max: Duration::from_millis(3000),
            late_percent: 100,
            only: Some("/rollbackrequests"),
        }),
    )
    .await;
    let kubeconfig = proxy.kubeconfig.clone();
    let operator = cluster.start_operator_with(
        &ns,
        &[],
        &[
            "--leader-elect=false",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ],
    );
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
