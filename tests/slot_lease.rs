//! The guard's rollback slot is a Lease `rollguard-slot-<guard>`: held while a request
//! runs, mirrored in the guard's `status.activeRollback`, gone once the request has freed it;
//! a Lease left behind (a release cut short, a holder deleted, a Lease emptied by hand) never
//! blocks the next rollback.

mod common;

use common::{Env, wait_until};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use rollguard::api::request::RequestPhase;
use rollguard::api::{RollbackRequest, RolloutGuard};
use std::time::Duration;

fn request(ns: &str, name: &str) -> String {
    format!(
        "apiVersion: rollguard.dev/v1alpha1\nkind: RollbackRequest\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{guardRef: {{name: g}}, requestedBy: ops, mode: immediate}}\n"
    )
}

fn lease(holder: &str, uid: Option<&str>) -> Lease {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "rollguard-slot-g",
                     "annotations": uid.map(|u| serde_json::json!({"rollguard.dev/request-uid": u}))},
        "spec": {"holderIdentity": holder}
    }))
    .unwrap()
}

#[tokio::test]
async fn the_slot_lease_is_held_while_a_request_runs_and_gone_after() {
    let Some(env) = Env::start("slot_lease_held", &[]).await else {
        return;
    };
    env.cluster
        .apply(&common::flags_and_guard(&env.ns, r#"{a: "true"}"#, ""));
    let leases: Api<Lease> = env.api();
    let requests: Api<RollbackRequest> = env.requests();
    env.cluster.apply(&request(&env.ns, "first"));
    let done = common::finished(&requests, "first").await;
    assert_eq!(done.status.unwrap().phase, Some(RequestPhase::Succeeded));
    let guards: Api<RolloutGuard> = env.api();
    wait_until(Duration::from_secs(10), "the slot to be freed", || {
        let (leases, guards) = (leases.clone(), guards.clone());
        async move {
            let lease = leases.get_opt("rollguard-slot-g").await.ok()?;
            let guard = guards.get("g").await.ok()?;
            let status = guard.status?;
            (lease.is_none()
                && status.active_rollback.is_none()
                && status.last_rollback.is_some_and(|r| r.name == "first"))
            .then_some(())
        }
    })
    .await;
}

/// A Lease naming a request that is gone, or naming nobody rollguard wrote, is taken over.
#[tokio::test]
async fn a_slot_lease_left_behind_does_not_block_the_next_rollback() {
    let Some(env) = Env::start("slot_lease_left", &[]).await else {
        return;
    };
    env.cluster
        .apply(&common::flags_and_guard(&env.ns, r#"{a: "true"}"#, ""));
    let leases: Api<Lease> = env.api();
    let requests: Api<RollbackRequest> = env.requests();
    let config_maps = env.config_maps();
    for (i, left) in [
        lease("deleted-long-ago", Some("0000-gone")),
        lease("", None),
        lease("someone", None),
    ]
    .into_iter()
    .enumerate()
    {
        let _ = leases.delete("rollguard-slot-g", &Default::default()).await;
        leases.create(&PostParams::default(), &left).await.unwrap();
        let on = serde_json::json!({"data": {"a": "true"}});
        config_maps
            .patch("ff", &Default::default(), &kube::api::Patch::Merge(&on))
            .await
            .unwrap();
        let name = format!("next-{i}");
        env.cluster.apply(&request(&env.ns, &name));
        let done = common::finished(&requests, &name).await;
        let status = done.status.unwrap();
        assert_eq!(status.phase, Some(RequestPhase::Succeeded), "{status:#?}");
        assert_eq!(
            config_maps.get("ff").await.unwrap().data.unwrap()["a"],
            "false",
            "{name}"
        );
    }
}
