//! Crash safety (SPEC §2): the operator is SIGKILLed right after each external side effect
//! of a rollback, a new operator process takes over, and the end state equals an
//! uninterrupted run with every side effect done exactly once — one snapshot, one flags
//! write — and every hook called: once, or, when the operator died between the call and
//! recording its outcome, twice with the same `Idempotency-Key` (at least once).
//!
//! Needs the `fault-injection` feature (make test enables it); never in release builds.

#[cfg(not(feature = "fault-injection"))]
#[test]
fn crash_resume_tests_need_the_fault_injection_feature() {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI must run the crash-resume tests: cargo test --features fault-injection"
    );
    eprintln!("SKIPPED crash-resume tests: build with --features fault-injection (make test does)");
}

#[cfg(feature = "fault-injection")]
mod common;

#[cfg(feature = "fault-injection")]
mod crash {
    use super::common::{cluster, count_config_map_writes, wait_until};
    use axum::{Router, extract::State, http::HeaderMap, routing::post};
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    use kube::api::{Api, ListParams};
    use rollguard::api::RollbackRequest;
    use rollguard::api::request::{HookOutcome, RequestPhase};
    use std::sync::atomic::Ordering;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// A hook receiver that records the `Idempotency-Key` of every call.
    async fn counter() -> (String, Arc<Mutex<Vec<String>>>) {
        let calls = Arc::<Mutex<Vec<String>>>::default();
        let app = Router::new()
            .route(
                "/",
                post(
                    |State(calls): State<Arc<Mutex<Vec<String>>>>, headers: HeaderMap| async move {
                        let key = headers
                            .get("idempotency-key")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default();
                        calls.lock().unwrap().push(key.to_string());
                        "ok"
                    },
                ),
            )
            .with_state(calls.clone());
        let url = format!("http://{}/", super::common::serve(app).await);
        (url, calls)
    }

    async fn crash_at(point: &str) {
        let Some(cluster) = cluster(&format!("crash_at {point}")).await else {
            return;
        };
        cluster.install_crds().await;
        let ns = cluster
            .namespace(&format!("crash-{}", point.to_lowercase()))
            .await;
        let (pre, pre_calls) = counter().await;
        let (post_url, post_calls) = counter().await;
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
  rollback: {{hooks: {{preRollback: [{{url: "{pre}"}}], postRollback: [{{url: "{post_url}"}}]}}}}
"#
        ));
        // Count every write to the flags ConfigMap from here on.
        let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &ns);
        let writes = count_config_map_writes(&config_maps, "ff").await;

        let first = cluster.start_operator(
            &ns,
            &[
                ("ROLLGUARD_FAULT_POINT", point),
                ("ROLLGUARD_FAULT_REQUEST", "incident"),
            ],
        );
        cluster.apply(&format!(
            "apiVersion: rollguard.dev/v1alpha1\nkind: RollbackRequest\nmetadata: {{name: incident, namespace: {ns}}}\nspec: {{guardRef: {{name: g}}, requestedBy: ops, reason: crash test}}\n"
        ));
        let marker = format!("FAULT-POINT {point} incident");
        wait_until(
            Duration::from_secs(20),
            &format!("the operator to reach {point}"),
            || {
                let hit = first.log_contains(&marker);
                async move { hit.then_some(()) }
            },
        )
        .await;
        first.kill();

        let _second = cluster.start_operator(&ns, &[]);
        let requests: Api<RollbackRequest> = Api::namespaced(cluster.client.clone(), &ns);
        let done = super::common::finished(&requests, "incident").await;
        tokio::time::sleep(Duration::from_millis(500)).await; // let any stray duplicate show

        let status = done.status.unwrap();
        assert_eq!(
            status.phase,
            Some(RequestPhase::Succeeded),
            "{point}: {status:#?}"
        );
        let data = config_maps.get("ff").await.unwrap().data.unwrap();
        assert_eq!(
            (
                data["a"].as_str(),
                data["b"].as_str(),
                data["keep"].as_str()
            ),
            ("false", "false", "me"),
            "{point}"
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
            ],
            "{point}"
        );
        assert_eq!(
            writes.load(Ordering::SeqCst),
            1,
            "{point}: the flags ConfigMap was written more than once"
        );
        let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &ns);
        let snapshots = secrets
            .list(&ListParams::default().labels("rollguard.dev/guard=g"))
            .await
            .unwrap()
            .items;
        assert_eq!(snapshots.len(), 1, "{point}: snapshots");
        // Killed after the call but before its outcome was recorded: the call is made again,
        // with the same key. Killed after recording the call but before making it: made once.
        for (stage, calls) in [("preRollback", &pre_calls), ("postRollback", &post_calls)] {
            let keys = calls.lock().unwrap().clone();
            let expected = if point == format!("{stage}-hook-called") {
                2
            } else {
                1
            };
            assert_eq!(keys.len(), expected, "{point}: {stage} hook calls {keys:?}");
            assert!(
                !keys[0].is_empty() && keys.iter().all(|k| *k == keys[0]),
                "{point}: {stage} calls carry one Idempotency-Key: {keys:?}"
            );
        }
        let outcomes: Vec<_> = status.hooks.iter().map(|h| h.outcome).collect();
        assert_eq!(
            outcomes,
            [HookOutcome::Succeeded, HookOutcome::Succeeded],
            "{point}"
        );
    }

    #[tokio::test]
    async fn crash_after_the_snapshot_is_created() {
        crash_at("snapshot-created").await;
    }

    #[tokio::test]
    async fn crash_after_the_drain_hook_is_recorded_but_not_called() {
        crash_at("preRollback-hook-recorded").await;
    }

    #[tokio::test]
    async fn crash_after_the_resume_hook_is_recorded_but_not_called() {
        crash_at("postRollback-hook-recorded").await;
    }

    #[tokio::test]
    async fn crash_after_the_drain_hook_is_called() {
        crash_at("preRollback-hook-called").await;
    }

    #[tokio::test]
    async fn crash_after_the_flags_are_written() {
        crash_at("flags-written").await;
    }

    #[tokio::test]
    async fn crash_after_health_is_verified() {
        crash_at("verified").await;
    }

    #[tokio::test]
    async fn crash_after_the_resume_hook_is_called() {
        crash_at("postRollback-hook-called").await;
    }

    /// A `triggerFiring` notice is recorded in the guard's status before it is sent; the
    /// operator killed between the two sends it after its restart, once.
    #[tokio::test]
    async fn a_trigger_firing_notice_recorded_before_a_crash_is_sent_after_it() {
        use super::common::receivers::{Behaviour, HttpReceiver};
        use rollguard::api::RolloutGuard;
        let Some(cluster) = cluster("guard notice crash").await else {
            return;
        };
        cluster.install_crds().await;
        let ns = cluster.namespace("crash-guard-notice").await;
        let receiver = HttpReceiver::start(Behaviour::Accept).await;
        cluster.apply(&format!(
            r#"
apiVersion: v1
kind: Secret
metadata: {{name: hook, namespace: {ns}, labels: {{rollguard.dev/credentials: "true"}}}}
stringData: {{url: "{url}", signingKey: "whsec_kUnq167pPQtnkQdOP557DIR/FBAWiJHiiV6nXhmyUqk="}}
---
{}"#,
            super::common::flags_and_guard(
                &ns,
                r#"{a: "true"}"#,
                "  interval: 1s\n  triggers: [{name: t, query: \"vector(1)\", above: 0, action: alert}]\n  notify: [{name: audit, type: webhook, secretRef: {name: hook}, \"on\": [triggerFiring]}]",
            ),
            url = receiver.url
        ));
        let first = cluster.start_operator(
            &ns,
            &[
                ("ROLLGUARD_FAULT_POINT", "guard-notice-recorded"),
                ("ROLLGUARD_FAULT_REQUEST", "g"),
            ],
        );
        wait_until(Duration::from_secs(20), "the notice to be recorded", || {
            let hit = first.log_contains("FAULT-POINT guard-notice-recorded g");
            async move { hit.then_some(()) }
        })
        .await;
        let guards: Api<RolloutGuard> = Api::namespaced(cluster.client.clone(), &ns);
        let pending = guards
            .get("g")
            .await
            .unwrap()
            .status
            .unwrap()
            .pending_notices;
        assert_eq!(pending.len(), 1, "{pending:?}");
        first.kill();
        assert!(
            receiver.received().is_empty(),
            "sent before the crash: the test would prove nothing"
        );

        let second = cluster.start_operator(&ns, &[]);
        wait_until(Duration::from_secs(20), "the notice to arrive", || {
            let n = receiver.accepted().len();
            async move { (n > 0).then_some(()) }
        })
        .await;
        // Delivered, and dropped from status; two evaluations later still one delivery.
        super::common::guard_notices_delivered(&guards, "g", &second, &ns).await;
        let received = receiver.received();
        assert_eq!(received.len(), 1, "one delivery after the restart");
        let body = received[0].json();
        assert_eq!(body["event"], "triggerFiring");
        assert_eq!(body["id"], pending[0].id);
    }
}
