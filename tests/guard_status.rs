//! One place decides a guard's phase and conditions: every status a watch sees during a
//! rollback and a restore agrees with itself (phase `RolledBack` iff the `RolledBack`
//! condition is True, outside `RollingBack`), and the guard says so as soon as the request
//! frees its slot — not an interval later (the guard here evaluates every 5 minutes).

mod common;

use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};
use rollguard::api::RolloutGuard;
use rollguard::api::guard::GuardPhase;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// (phase, RolledBack condition status, activeRollback) of one status version.
type Seen = (Option<GuardPhase>, Option<String>, Option<String>);

fn contradiction(seen: &Seen) -> Option<String> {
    let (phase, rolled_back, _) = seen;
    let condition_true = rolled_back.as_deref() == Some("True");
    match phase {
        Some(GuardPhase::RollingBack) => None,
        Some(GuardPhase::RolledBack) if !condition_true => {
            Some(format!("phase RolledBack with RolledBack={rolled_back:?}"))
        }
        Some(p) if *p != GuardPhase::RolledBack && condition_true => {
            Some(format!("phase {p:?} with RolledBack=True"))
        }
        _ => None,
    }
}

#[tokio::test]
async fn phase_and_conditions_never_contradict_and_follow_the_slot_at_once() {
    let Some(env) = common::Env::start("guard_status_one_writer", &[]).await else {
        return;
    };
    let ns = env.ns.clone();
    env.cluster.apply(&common::flags_and_guard(
        &ns,
        r#"{a: "true"}"#,
        "  interval: 5m\n  triggers: [{name: t, query: \"vector(0)\", above: 1}]",
    ));
    let guards: kube::Api<RolloutGuard> = env.api();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = seen.clone();
    let stream = watcher(guards.clone(), watcher::Config::default()).applied_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(Ok(g)) = stream.next().await {
            let Some(status) = g.status else { continue };
            let rolled_back = rollguard::conditions::get(&status.conditions, "RolledBack")
                .map(|c| c.status.clone());
            log.lock()
                .unwrap()
                .push((status.phase, rolled_back, status.active_rollback));
        }
    });
    let phase_is = |want: GuardPhase| {
        let guards = guards.clone();
        async move {
            let g = guards.get("g").await.ok()?;
            (g.status?.phase == Some(want)).then_some(())
        }
    };
    common::wait_until(Duration::from_secs(20), "the first evaluation", || {
        phase_is(GuardPhase::Monitoring)
    })
    .await;

    let request = |name: &str, action: &str| {
        format!(
            "apiVersion: rollguard.dev/v1alpha1\nkind: RollbackRequest\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{guardRef: {{name: g}}, requestedBy: ops, reason: test, mode: immediate, action: {action}}}\n"
        )
    };
    env.cluster.apply(&request("rb", "rollback"));
    common::finished(&env.requests(), "rb").await;
    // Well inside the 5-minute interval: the slot's release woke the guard's evaluation.
    common::wait_until(
        Duration::from_secs(10),
        "the guard to say RolledBack",
        || phase_is(GuardPhase::RolledBack),
    )
    .await;

    env.cluster.apply(&request("back", "restore"));
    common::finished(&env.requests(), "back").await;
    common::wait_until(
        Duration::from_secs(10),
        "the guard to say Monitoring after the restore",
        || phase_is(GuardPhase::Monitoring),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await; // let the watch catch up

    let seen = seen.lock().unwrap().clone();
    // The watch saw the rollback's whole arc, so the check below had something to judge.
    let phases: Vec<_> = seen.iter().map(|s| s.0).collect();
    for want in [
        GuardPhase::RollingBack,
        GuardPhase::RolledBack,
        GuardPhase::Monitoring,
    ] {
        assert!(
            phases.contains(&Some(want)),
            "{want:?} never seen: {seen:?}"
        );
    }
    let contradictions: Vec<_> = seen.iter().filter_map(contradiction).collect();
    assert!(
        contradictions.is_empty(),
        "statuses that contradict themselves: {contradictions:?} in {seen:?}"
    );
}
