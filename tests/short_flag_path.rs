//! The short flag path (issue 15): a rollback without drain hooks writes nothing to its
//! request's status before the flags write; the snapshot Secret (by its name) and the
//! write's uid stamp on the ConfigMap are the records. The operator is SIGKILLed after each
//! of those side effects, with nothing yet in the request's status, and a new process must
//! finish the request with each side effect done once; a concurrent edit just before the
//! write makes the operator take the snapshot again, so the snapshot always holds the state
//! the write was made on.
//!
//! Needs the `fault-injection` feature (make test enables it); never in release builds.

#[cfg(not(feature = "fault-injection"))]
#[test]
fn short_flag_path_tests_need_the_fault_injection_feature() {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI must run the short flag path tests: cargo test --features fault-injection"
    );
    eprintln!("SKIPPED short flag path tests: build with --features fault-injection");
}

#[cfg(feature = "fault-injection")]
mod common;

#[cfg(feature = "fault-injection")]
mod short {
    use super::common::{Cluster, cluster, count_config_map_writes, finished, wait_until};
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    use kube::api::{Api, ListParams, Patch, PatchParams};
    use rollguard::api::RollbackRequest;
    use rollguard::api::request::RequestPhase;
    use rollguard::rollback::snapshot;
    use std::collections::BTreeMap;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    async fn setup(cluster: &Cluster, test: &str) -> String {
        cluster.install_crds().await;
        let ns = cluster.namespace(test).await;
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
"#
        ));
        ns
    }

    fn request(ns: &str, mode: &str) -> String {
        format!(
            "apiVersion: rollguard.dev/v1alpha1\nkind: RollbackRequest\nmetadata: {{name: incident, namespace: {ns}}}\nspec: {{guardRef: {{name: g}}, requestedBy: ops, reason: short path, mode: {mode}}}\n"
        )
    }

    /// The guard's snapshot Secrets.
    async fn snapshots(cluster: &Cluster, ns: &str) -> Vec<Secret> {
        let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), ns);
        secrets
            .list(&ListParams::default().labels("rollguard.dev/guard=g"))
            .await
            .unwrap()
            .items
    }

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn changed(request: &RollbackRequest) -> Vec<(String, String, String)> {
        let status = request.status.clone().unwrap_or_default();
        status
            .flags_changed
            .unwrap_or_default()
            .into_iter()
            .map(|c| (c.name, c.from, c.to))
            .collect()
    }

    async fn crash_on_the_short_path(point: &str, mode: &str) {
        let Some(cluster) = cluster(&format!("short path crash at {point}, {mode}")).await else {
            return;
        };
        let ns = setup(&cluster, &format!("short-{mode}-{point}")).await;
        let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &ns);
        let requests: Api<RollbackRequest> = Api::namespaced(cluster.client.clone(), &ns);
        let writes = count_config_map_writes(&config_maps, "ff").await;
        let first = cluster.start_operator(
            &ns,
            &[
                ("ROLLGUARD_FAULT_POINT", point),
                ("ROLLGUARD_FAULT_REQUEST", "incident"),
            ],
        );
        cluster.apply(&request(&ns, mode));
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
        // Nothing of the rollback is in the request's status yet: the restart has only the
        // snapshot Secret and the ConfigMap's stamp to go by.
        let held = requests.get("incident").await.unwrap();
        let status = held.status.clone().unwrap_or_default();
        assert_eq!(status.phase, None, "{point}: {status:#?}");
        assert_eq!(status.flags_changed, None, "{point}: {status:#?}");
        assert_eq!(snapshots(&cluster, &ns).await.len(), 1, "{point}");
        let flags_now = config_maps.get("ff").await.unwrap().data.unwrap();
        let written = point == "flags-written";
        assert_eq!(
            flags_now["a"],
            if written { "false" } else { "true" },
            "{point}"
        );
        first.kill();

        let _second = cluster.start_operator(&ns, &[]);
        let done = finished(&requests, "incident").await;
        tokio::time::sleep(Duration::from_millis(500)).await; // let any stray duplicate show
        let status = done.status.clone().unwrap();
        assert_eq!(
            status.phase,
            Some(RequestPhase::Succeeded),
            "{point}: {status:#?}"
        );
        assert_eq!(
            config_maps.get("ff").await.unwrap().data.unwrap(),
            data(&[("a", "false"), ("b", "false"), ("keep", "me")]),
            "{point}"
        );
        assert_eq!(
            changed(&done),
            [
                ("a".into(), "true".into(), "false".into()),
                ("b".into(), "true".into(), "false".into())
            ],
            "{point}: what the write changed, known after the restart"
        );
        assert_eq!(writes.load(Ordering::SeqCst), 1, "{point}: flags writes");
        let taken = snapshots(&cluster, &ns).await;
        assert_eq!(taken.len(), 1, "{point}: snapshots");
        assert_eq!(
            snapshot::flags_data(&taken[0]).unwrap(),
            data(&[("a", "true"), ("b", "true"), ("keep", "me")]),
            "{point}: the snapshot holds the state before the rollback"
        );
        assert_eq!(
            status.snapshot_ref.map(|s| s.name),
            Some(taken[0].metadata.name.clone().unwrap()),
            "{point}"
        );
    }

    #[tokio::test]
    async fn an_emergency_killed_after_its_snapshot_resumes_once() {
        crash_on_the_short_path("snapshot-created", "immediate").await;
    }

    #[tokio::test]
    async fn an_emergency_killed_after_its_flags_write_resumes_once() {
        crash_on_the_short_path("flags-written", "immediate").await;
    }

    #[tokio::test]
    async fn a_graceful_rollback_without_hooks_killed_after_its_flags_write_resumes_once() {
        crash_on_the_short_path("flags-written", "graceful").await;
    }

    /// Another writer edits a flag the rollback turns off, between the snapshot and the flags
    /// write: the write meets a conflict, the snapshot is taken again from the edited state,
    /// and the write is made on that state — the edit kept, the snapshot the state just
    /// before the rollback's write.
    #[tokio::test]
    async fn an_edit_of_a_written_flag_before_the_flags_write_is_in_the_snapshot_taken_again() {
        edit_before_the_flags_write(
            "short-retake",
            serde_json::json!({"data": {"b": "TRUE", "keep": "edited"}}),
            true,
        )
        .await;
    }

    /// Another writer edits only a key the rollback does not write: the write meets a
    /// conflict and is made again on the edited state, keeping the edit; the snapshot taken
    /// before stands for that state (the same plan on both) and is kept.
    #[tokio::test]
    async fn an_edit_of_another_key_before_the_flags_write_keeps_the_snapshot() {
        edit_before_the_flags_write(
            "short-keep",
            serde_json::json!({"data": {"keep": "edited"}}),
            false,
        )
        .await;
    }

    async fn edit_before_the_flags_write(test: &str, edit: serde_json::Value, retaken: bool) {
        let Some(cluster) = cluster(test).await else {
            return;
        };
        let ns = setup(&cluster, test).await;
        let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &ns);
        let requests: Api<RollbackRequest> = Api::namespaced(cluster.client.clone(), &ns);
        let operator = cluster.start_operator(
            &ns,
            &[
                ("ROLLGUARD_FAULT_PAUSE", "before-flags-write"),
                ("ROLLGUARD_FAULT_REQUEST", "incident"),
                ("ROLLGUARD_FAULT_PAUSE_MS", "2000"),
            ],
        );
        cluster.apply(&request(&ns, "immediate"));
        wait_until(
            Duration::from_secs(20),
            "the pause before the write",
            || {
                let paused = operator.log_contains("FAULT-PAUSE before-flags-write incident");
                async move { paused.then_some(()) }
            },
        )
        .await;
        let first = snapshots(&cluster, &ns).await;
        assert_eq!(first.len(), 1);
        assert_eq!(snapshot::flags_data(&first[0]).unwrap()["keep"], "me");
        config_maps
            .patch("ff", &PatchParams::default(), &Patch::Merge(&edit))
            .await
            .unwrap();
        let b_before = if retaken { "TRUE" } else { "true" };

        let done = finished(&requests, "incident").await;
        let status = done.status.clone().unwrap();
        assert_eq!(status.phase, Some(RequestPhase::Succeeded), "{status:#?}");
        assert_eq!(
            config_maps.get("ff").await.unwrap().data.unwrap(),
            data(&[("a", "false"), ("b", "false"), ("keep", "edited")]),
            "the rollback's write, and the edit kept"
        );
        let taken = snapshots(&cluster, &ns).await;
        assert_eq!(taken.len(), 1, "one snapshot per request");
        let retook = status.timeline.iter().any(|t| t.step == "SnapshotRetaken");
        if retaken {
            assert_ne!(taken[0].metadata.uid, first[0].metadata.uid, "taken again");
            assert!(retook, "{:#?}", status.timeline);
            assert_eq!(
                snapshot::flags_data(&taken[0]).unwrap(),
                data(&[("a", "true"), ("b", "TRUE"), ("keep", "edited")]),
                "the snapshot holds the state the write was made on"
            );
        } else {
            assert_eq!(taken[0].metadata.uid, first[0].metadata.uid, "kept");
            assert!(!retook, "{:#?}", status.timeline);
            assert_eq!(
                snapshot::flags_data(&taken[0]).unwrap(),
                data(&[("a", "true"), ("b", "true"), ("keep", "me")]),
                "the snapshot as taken: the flags the write changed as they were before it"
            );
        }
        assert_eq!(
            changed(&done),
            [
                ("a".into(), "true".into(), "false".into()),
                ("b".into(), b_before.into(), "false".into())
            ]
        );
    }

    /// The operator's API calls made while reconciling `request`, in order, as "METHOD
    /// path" (query strings dropped), read from its kube-client debug log, whose lines carry
    /// the `reconciling object` span (the controller's, or the one of a request started at its
    /// arrival, `reconciler::start_arrived`).
    fn calls_of(log: &str, ns: &str, request: &str) -> Vec<String> {
        let span = format!("object.ref=RollbackRequest.v1alpha1.rollguard.dev/{request}.{ns} ");
        log.lines()
            .map(crate::common::strip_ansi)
            .filter(|l| l.contains(&span) && l.ends_with("requesting"))
            .filter_map(|l| {
                let method = l.split("http.method=").nth(1)?.split(' ').next()?;
                let url = l.split("http.url=").nth(1)?.split(' ').next()?;
                let path = url
                    .split("://")
                    .nth(1)?
                    .split_once('/')?
                    .1
                    .split('?')
                    .next()?;
                Some(format!("{method} /{path}"))
            })
            .collect()
    }

    /// Before its flags write, a new request without drain hooks makes three API calls, side
    /// by side: the claim of the guard's slot Lease (serialisation), the snapshot Secret (no
    /// flag changes before the snapshot exists) and a read of the guard (the watched copy it
    /// started from is current). The request and the flags ConfigMap come from the
    /// operator's watches. Immediate and graceful alike.
    #[tokio::test]
    async fn a_rollback_without_hooks_writes_the_flags_after_three_api_calls_sent_together() {
        let Some(cluster) = cluster("short path calls").await else {
            return;
        };
        let ns = setup(&cluster, "short-calls").await;
        // A guard and a ConfigMap of its own for the graceful request, so that neither
        // request finds the other's traces in a cache.
        cluster.apply(&format!(
            r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: ff2, namespace: {ns}, labels: {{rollguard.dev/flags: "true"}}}}
data: {{a: "true", b: "true"}}
---
apiVersion: rollguard.dev/v1alpha1
kind: RolloutGuard
metadata: {{name: g2, namespace: {ns}}}
spec:
  flags: {{configMapRef: {{name: ff2}}, guarded: [a, b]}}
"#
        ));
        let requests: Api<RollbackRequest> = Api::namespaced(cluster.client.clone(), &ns);
        let operator = cluster.start_operator(
            &ns,
            &[(
                "RUST_LOG",
                "warn,kube_runtime=info,rollguard::rollback::reconciler=info,kube_client=debug",
            )],
        );
        // The operator's caches hold the guard and the ConfigMap once it is ready.
        wait_until(Duration::from_secs(30), "the operator to be ready", || {
            let url = format!("{}/readyz", operator.metrics_url);
            async move {
                let ok = reqwest::get(&url).await.ok()?.status().is_success();
                ok.then_some(())
            }
        })
        .await;
        for (mode, guard, cm) in [("immediate", "g", "ff"), ("graceful", "g2", "ff2")] {
            let name = format!("calls-{mode}");
            cluster.apply(&format!(
                "apiVersion: rollguard.dev/v1alpha1\nkind: RollbackRequest\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{guardRef: {{name: {guard}}}, requestedBy: ops, mode: {mode}}}\n"
            ));
            let done = finished(&requests, &name).await;
            assert_eq!(
                done.status.as_ref().and_then(|s| s.phase),
                Some(RequestPhase::Succeeded),
                "{mode}"
            );
            let calls = calls_of(&operator.log_text(), &ns, &name);
            let write = format!("PATCH /api/v1/namespaces/{ns}/configmaps/{cm}");
            let until = calls
                .iter()
                .position(|c| *c == write)
                .unwrap_or_else(|| panic!("{mode}: no flags write among {calls:#?}"));
            // The claim (the slot's Lease), the snapshot and the read that proves the cached
            // guard current go out together; the write waits for the three. The guard's
            // activeRollback (the slot's mirror) is written beside the flags write, not in
            // front of it: it may be sent just before.
            let mirror = format!(
                "PATCH /apis/rollguard.dev/v1alpha1/namespaces/{ns}/rolloutguards/{guard}/status"
            );
            assert!(calls.contains(&mirror), "{mode}: {calls:#?}");
            let mut before: Vec<_> = calls[..until]
                .iter()
                .filter(|c| **c != mirror)
                .cloned()
                .collect();
            before.sort();
            assert_eq!(
                before,
                [
                    format!(
                        "GET /apis/rollguard.dev/v1alpha1/namespaces/{ns}/rolloutguards/{guard}"
                    ),
                    format!("POST /api/v1/namespaces/{ns}/secrets"),
                    format!("POST /apis/coordination.k8s.io/v1/namespaces/{ns}/leases"),
                ],
                "{mode}: every call of the reconcile: {calls:#?}"
            );
        }
    }
}
