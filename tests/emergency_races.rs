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
    let request = |name: &str, spec: &str| {
        format!(
            "apiVersion: rollguard.dev/v1alpha1\nkind: RollbackRequest\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{guardRef: {{name: g}}, requestedBy: ops, reason: race, {spec}}}\n"
        )
    };
    env.cluster.apply(&common::flags_and_guard(
        ns,
        r#"{a: "true", keep: "me"}"#,
        "",
    ));
    let requests = env.requests();
    env.cluster.apply(&request("rollback", "mode: immediate"));
    let rolled_back = common::finished(&requests, "rollback").await;
    assert_eq!(
        rolled_back.status.unwrap().phase,
        Some(RequestPhase::Succeeded)
    );

    env.cluster.apply(&request("restore", "action: restore"));
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
    env.cluster.apply(&request("emergency", "mode: immediate"));
    let emergency = common::finished(&requests, "emergency").await;
    assert_eq!(
        emergency.status.as_ref().unwrap().phase,
        Some(RequestPhase::Succeeded),
        "{:#?}",
        emergency.status
    );
    let restore = wait_until(Duration::from_secs(30), "the restore to end", || {
        let requests = requests.clone();
        async move {
            let r = requests.get("restore").await.ok()?;
            let phase = r.status.as_ref()?.phase?;
            rollguard::rollback::step::is_terminal(Some(phase)).then_some(r)
        }
    })
    .await;
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
