//! Bounded history (`spec.rollback.history`): finished RollbackRequests past the newest
//! `keep` and older than `keepFor` are deleted with their snapshot Secrets as the next one
//! finishes; the guard's last rollback and last restore stay.

mod common;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::ListParams;
use std::time::Duration;

#[tokio::test]
async fn finished_requests_past_the_history_go_with_their_snapshots() {
    let Some(env) = common::Env::start("history_retention", &[]).await else {
        return;
    };
    let ns = env.ns.clone();
    env.cluster.apply(&common::flags_and_guard(
        &ns,
        r#"{a: "true"}"#,
        "  rollback: {history: {keep: 2, keepFor: 0s}}",
    ));
    let requests = env.requests();
    for (name, action) in [
        ("r1", "rollback"),
        ("r2", "restore"),
        ("r3", "rollback"),
        ("r4", "restore"),
    ] {
        env.cluster.apply(&format!(
            "apiVersion: rollguard.dev/v1alpha1\nkind: RollbackRequest\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{guardRef: {{name: g}}, requestedBy: ops, reason: history, mode: immediate, action: {action}}}\n"
        ));
        let done = common::finished(&requests, name).await;
        assert_eq!(
            done.status.as_ref().and_then(|s| s.phase),
            Some(rollguard::api::request::RequestPhase::Succeeded),
            "{name}: {:#?}",
            done.status
        );
    }
    let names = common::wait_until(
        Duration::from_secs(20),
        "the two oldest requests to be deleted",
        || {
            let requests = requests.clone();
            async move {
                let mut names: Vec<_> = requests
                    .list(&ListParams::default())
                    .await
                    .ok()?
                    .items
                    .into_iter()
                    .filter_map(|r| r.metadata.name)
                    .collect();
                names.sort();
                (names.len() <= 2).then_some(names)
            }
        },
    )
    .await;
    assert_eq!(names, ["r3", "r4"]);
    let secrets: Api<Secret> = env.api();
    let mut snapshots: Vec<_> = secrets
        .list(&ListParams::default().labels("rollguard.dev/guard=g"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .collect();
    snapshots.sort();
    // Restores take a snapshot too; those of r1 and r2 went with them.
    assert_eq!(snapshots, ["g-snap-r3", "g-snap-r4"]);
}
