//! An emergency rollback racing a restore: the restore has planned its write (flags back on)
//! when an immediate rollback takes the guard. Whatever the order of the two writes, the
//! flags end off, the emergency Succeeded and the restore Superseded.
//!
//! Needs the `fault-injection` feature (make test enables it) to hold the restore between
//! its plan and its write.

#[cfg(not(feature = "fault-injection"))]
#[test]
fn emergency_race_tests_need_the_fault_injection_feature() {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI must run the emergency race tests: cargo test --features fault-injection"
    );
    eprintln!(
        "SKIPPED emergency race tests: build with --features fault-injection (make test does)"
    );
}

#[cfg(feature = "fault-injection")]
mod common;

/// A request of guard `g` in `ns`; `spec` adds fields (flow style).
#[cfg(feature = "fault-injection")]
fn request(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: rollguard.dev/v1alpha1\nkind: RollbackRequest\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{guardRef: {{name: g}}, requestedBy: ops, reason: race, {spec}}}\n"
    )
}

/// Flags `a: "true", keep: me` under guard `g`, then an immediate rollback "rollback" that
/// Succeeded: the flag is off, and a restore has something to restore.
#[cfg(feature = "fault-injection")]
async fn rolled_back(env: &common::Env) {
    env.cluster.apply(&common::flags_and_guard(
        &env.ns,
        r#"{a: "true", keep: "me"}"#,
        "",
    ));
    env.cluster
        .apply(&request(&env.ns, "rollback", "mode: immediate"));
    let rolled_back = common::finished(&env.requests(), "rollback").await;
    assert_eq!(
        rolled_back.status.unwrap().phase,
        Some(rollguard::api::request::RequestPhase::Succeeded)
    );
}

#[cfg(feature = "fault-injection")]
#[tokio::test]
async fn an_emergency_during_a_restore_leaves_the_flags_off() {
    use common::{Env, wait_until};
    use rollguard::api::request::RequestPhase;
    use std::time::Duration;

    let Some(env) = Env::start(
        "emergency_during_restore",
        &[
            ("ROLLGUARD_FAULT_PAUSE", "before-flags-write"),
            ("ROLLGUARD_FAULT_REQUEST", "restore"),
            ("ROLLGUARD_FAULT_PAUSE_MS", "4000"),
        ],
    )
    .await
    else {
        return;
    };
    let ns = &env.ns;
    rolled_back(&env).await;
    let requests = env.requests();

    env.cluster
        .apply(&request(ns, "restore", "action: restore"));
    let operator = env.operator.as_ref().unwrap();
    wait_until(
        Duration::from_secs(20),
        "the restore to plan its write and pause",
        || {
            let paused = operator.log_contains("FAULT-PAUSE before-flags-write restore");
            async move { paused.then_some(()) }
        },
    )
    .await;
    env.cluster
        .apply(&request(ns, "emergency", "mode: immediate"));
    let emergency = common::finished(&requests, "emergency").await;
    assert_eq!(
        emergency.status.as_ref().unwrap().phase,
        Some(RequestPhase::Succeeded),
        "{:#?}",
        emergency.status
    );
    let restore = common::ended(&requests, "restore").await;
    let data = env.config_maps().get("ff").await.unwrap().data.unwrap();
    assert_eq!(
        (data["a"].as_str(), data["keep"].as_str()),
        ("false", "me"),
        "the emergency came last: the flag must stay off; restore: {:#?}",
        restore.status
    );
    let status = restore.status.unwrap();
    assert_eq!(status.phase, Some(RequestPhase::Superseded), "{status:#?}");
    assert!(
        status
            .message
            .as_deref()
            .unwrap_or("")
            .contains("emergency"),
        "{status:#?}"
    );
}

/// An emergency killed between taking the guard's slot and its first status write (which
/// records the restores it overtook) overtakes them again when it resumes: a restore asked
/// for in the same second still ends Superseded after it, and the flags stay off. Found by
/// the fault suite (`make faults`, script emergency-races-restore, SIGKILL).
#[cfg(feature = "fault-injection")]
#[tokio::test]
async fn an_emergency_resumed_after_a_crash_still_overtakes_the_waiting_restore() {
    use common::{Env, wait_until};
    use kube::ResourceExt;
    use kube::api::DeleteParams;
    use rollguard::api::request::RequestPhase;
    use std::time::Duration;

    let Some(mut env) = Env::start("emergency_resumed", &[]).await else {
        return;
    };
    let ns = env.ns.clone();
    rolled_back(&env).await;
    let requests = env.requests();
    env.operator.take().unwrap().kill();

    // The restore and the emergency asked for in the same second (the API server keeps
    // creation times to the second), while no operator runs: the restore queues behind the
    // emergency, which overtakes it.
    let mut same_second = false;
    for _ in 0..3 {
        env.cluster.apply(&format!(
            "{}---\n{}",
            request(&ns, "rs", "action: restore"),
            request(&ns, "em", "mode: immediate")
        ));
        let (rs, em) = (
            requests.get("rs").await.unwrap(),
            requests.get("em").await.unwrap(),
        );
        if rs.creation_timestamp() == em.creation_timestamp() {
            same_second = true;
            break;
        }
        for name in ["rs", "em"] {
            requests
                .delete(name, &DeleteParams::default())
                .await
                .unwrap();
        }
        wait_until(Duration::from_secs(10), "rs and em to be gone", || {
            let requests = requests.clone();
            async move {
                let left = requests.list(&Default::default()).await.ok()?;
                (left.items.len() == 1).then_some(())
            }
        })
        .await;
    }
    assert!(same_second, "could not create both in one second");

    // The emergency takes the slot and snapshots (the flag is off already: it will write
    // nothing); killed there, before its first status write.
    let paused = env.cluster.start_operator(
        &ns,
        &[
            ("ROLLGUARD_FAULT_POINT", "snapshot-created"),
            ("ROLLGUARD_FAULT_REQUEST", "em"),
        ],
    );
    wait_until(
        Duration::from_secs(20),
        "the emergency to take the slot and snapshot",
        || {
            let at = paused.log_contains("FAULT-POINT snapshot-created em");
            async move { at.then_some(()) }
        },
    )
    .await;
    paused.kill();
    let em = requests.get("em").await.unwrap();
    assert!(
        em.status
            .as_ref()
            .and_then(|s| s.started_at.as_ref())
            .is_none(),
        "killed before the emergency's first status write: {:#?}",
        em.status
    );

    let _resumed = env.cluster.start_operator(&ns, &[]);
    let em = common::finished(&requests, "em").await;
    assert_eq!(
        em.status.as_ref().unwrap().phase,
        Some(RequestPhase::Succeeded),
        "{:#?}",
        em.status
    );
    let restore = common::ended(&requests, "rs").await;
    let data = env.config_maps().get("ff").await.unwrap().data.unwrap();
    assert_eq!(
        data["a"], "false",
        "the restore undid the emergency: {:#?}",
        restore.status
    );
    assert_eq!(
        restore.status.as_ref().unwrap().phase,
        Some(RequestPhase::Superseded),
        "{:#?}",
        restore.status
    );
}
