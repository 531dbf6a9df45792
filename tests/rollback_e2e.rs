//! RollbackRequests end to end: the operator runs as its own process against the real
//! kube-apiserver; the tests act as users (kubectl apply, API clients) and assert on the
//! ConfigMap, the snapshot Secret, the request's status and Events.

mod common;

use axum::{Json, Router, extract::State, routing::post};
use common::{Env, wait_until};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};
use rollguard::api::request::{HookOutcome, RequestPhase};
use rollguard::api::{RollbackRequest, RolloutGuard};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const FLAGD_DOC: &str = r#"{
  "$schema": "https://flagd.dev/schema/v0/flags.json",
  "flags": {
    "completion_validation_system": {
      "state": "ENABLED",
      "variants": {"on": true, "off": false},
      "defaultVariant": "on",
      "targeting": {"if": [{"in": ["@example.com", {"var": "email"}]}, "on", "off"]}
    },
    "completion_validation_ui": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
    "unrelated": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on", "metadata": {"owner": "team-b"}}
  },
  "metadata": {"version": "3"}
}
"#;

async fn setup(test: &str) -> Option<Env> {
    Env::start(test, &[]).await
}

impl Env {
    fn secrets(&self) -> Api<Secret> {
        self.api()
    }

    fn plain_flags(&self, name: &str, data: &[(&str, &str)]) {
        let data: BTreeMap<_, _> = data.iter().cloned().collect();
        self.cluster.apply(&format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {}, labels: {{rollguard.dev/flags: \"true\"}}}}\ndata: {}\n",
            self.ns,
            serde_json::to_string(&data).unwrap()
        ));
    }

    /// A guard; `spec` is YAML (flow style) merged under `spec:`.
    fn guard(&self, name: &str, spec: &str) {
        self.cluster.apply(&format!(
            "apiVersion: rollguard.dev/v1alpha1\nkind: RolloutGuard\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}\n",
            ns = self.ns
        ));
    }

    fn request(&self, name: &str, spec: &str) {
        self.cluster.apply(&format!(
            "apiVersion: rollguard.dev/v1alpha1\nkind: RollbackRequest\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}\n",
            ns = self.ns
        ));
    }

    /// Waits until the request is Succeeded or Failed and returns it.
    async fn finished(&self, name: &str) -> RollbackRequest {
        common::finished(&self.requests(), name).await
    }

    /// Waits until guard `g` is in `phase` with no rollback in flight; returns its status.
    async fn guard_settles(
        &self,
        phase: rollguard::api::guard::GuardPhase,
    ) -> rollguard::api::RolloutGuardStatus {
        let api: Api<RolloutGuard> = Api::namespaced(self.cluster.client.clone(), &self.ns);
        wait_until(
            Duration::from_secs(10),
            &format!("guard g to be {phase:?}"),
            || {
                let api = api.clone();
                async move {
                    let status = api.get("g").await.ok()?.status?;
                    (status.phase == Some(phase) && status.active_rollback.is_none())
                        .then_some(status)
                }
            },
        )
        .await
    }

    async fn data(&self, cm: &str) -> BTreeMap<String, String> {
        self.config_maps()
            .get(cm)
            .await
            .unwrap()
            .data
            .unwrap_or_default()
    }

    /// `kubectl wait --for=FOR OBJECT` as a user would run it; panics with kubectl's words
    /// if it does not come true.
    fn kubectl_wait(&self, object: &str, wait_for: &str) {
        let (ok, out, err) = self.cluster.kubectl(&[
            "wait",
            "-n",
            &self.ns,
            &format!("--for={wait_for}"),
            "--timeout=20s",
            object,
        ]);
        assert!(ok, "kubectl wait --for={wait_for} {object}: {out}{err}");
    }

    /// Whether an Event with `reason` regards object `name`.
    async fn has_event(&self, name: &str, reason: &str) -> bool {
        self.events_for(name)
            .await
            .iter()
            .any(|e| e.reason.as_deref() == Some(reason))
    }

    async fn events_for(&self, name: &str) -> Vec<Event> {
        self.events_where(|e| e.involved_object.name.as_deref() == Some(name))
            .await
    }
}

fn phase(r: &RollbackRequest) -> Option<RequestPhase> {
    r.status.as_ref().and_then(|s| s.phase)
}

fn assert_succeeded(r: &RollbackRequest) {
    let status = r.status.as_ref().unwrap();
    assert_eq!(status.phase, Some(RequestPhase::Succeeded), "{:#?}", status);
    assert!(rollguard::conditions::is_true(
        &status.conditions,
        "Complete"
    ));
}

#[tokio::test]
async fn plain_rollback_changes_exactly_the_selected_keys_and_snapshots_the_state_before() {
    let Some(env) = setup("plain_rollback").await else {
        return;
    };
    env.plain_flags(
        "ff",
        &[
            ("a", "true"),
            ("b", "true"),
            ("c", "true"),
            ("colour", "red"),
        ],
    );
    env.guard(
        "g",
        "  flags: {configMapRef: {name: ff}, guarded: [a, b, c]}",
    );
    let before = env.config_maps().get("ff").await.unwrap();

    env.request(
        "only-a",
        "  guardRef: {name: g}\n  requestedBy: ops_team\n  reason: incident 42\n  flags: [a]",
    );
    let r = env.finished("only-a").await;
    assert_succeeded(&r);
    // SPEC §1: `kubectl wait` on the conditions, as scripts and GitOps tools use them.
    env.kubectl_wait("rollbackrequest/only-a", "condition=Complete");
    env.kubectl_wait("rolloutguard/g", "condition=Ready");
    let after = env.data("ff").await;
    assert_eq!(after["a"], "false");
    assert_eq!(
        (
            after["b"].as_str(),
            after["c"].as_str(),
            after["colour"].as_str()
        ),
        ("true", "true", "red")
    );
    let status = r.status.clone().unwrap();
    let changed = status.flags_changed.unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(
        (
            changed[0].name.as_str(),
            changed[0].from.as_str(),
            changed[0].to.as_str()
        ),
        ("a", "true", "false")
    );
    let durations = status.durations.unwrap();
    assert!(durations.flag_disable.unwrap() <= durations.total.unwrap());
    assert!(status.slo.unwrap().met);
    let steps: Vec<_> = status.timeline.iter().map(|t| t.step.as_str()).collect();
    assert_eq!(
        steps,
        [
            "Accepted",
            "SnapshotTaken",
            "FlagsDisabled",
            "HealthVerified",
            "Succeeded"
        ]
    );

    // The snapshot holds the ConfigMap as it was before: data, uid and resourceVersion.
    let snap = env.secrets().get("g-snap-only-a").await.unwrap();
    assert_eq!(snap.type_.as_deref(), Some("rollguard.dev/snapshot"));
    let labels = snap.metadata.labels.clone().unwrap();
    assert_eq!(
        (
            labels["rollguard.dev/guard"].as_str(),
            labels["rollguard.dev/request"].as_str()
        ),
        ("g", "only-a")
    );
    let captured: serde_json::Value =
        serde_json::from_slice(&snap.data.unwrap()["flags-configmap.json"].0).unwrap();
    assert_eq!(captured["uid"].as_str(), before.metadata.uid.as_deref());
    assert_eq!(
        captured["resourceVersion"].as_str(),
        before.metadata.resource_version.as_deref()
    );
    assert_eq!(
        captured["data"],
        serde_json::to_value(before.data.unwrap()).unwrap()
    );

    let reasons: Vec<_> = env
        .events_for("only-a")
        .await
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    for reason in [
        "SnapshotTaken",
        "FlagsDisabled",
        "HealthVerified",
        "RollbackSucceeded",
    ] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "no {reason} Event in {reasons:?}"
        );
    }
    // The request is recorded as done first; the guard's slot is released right after.
    let gs = env
        .guard_settles(rollguard::api::guard::GuardPhase::RolledBack)
        .await;
    assert_eq!(gs.active_rollback, None);
    assert_eq!(gs.last_rollback.unwrap().name, "only-a");

    // A request whose flags are already off succeeds with an empty flagsChanged.
    env.request(
        "again-a",
        "  guardRef: {name: g}\n  requestedBy: ops_team\n  flags: [a]",
    );
    let r = env.finished("again-a").await;
    assert_succeeded(&r);
    assert_eq!(r.status.unwrap().flags_changed, Some(vec![]));
}

#[tokio::test]
async fn flagd_rollback_switches_variants_and_keeps_the_rest_of_the_document() {
    let Some(env) = setup("flagd_rollback").await else {
        return;
    };
    let cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "flagd", "namespace": env.ns, "labels": {"rollguard.dev/flags": "true"}}, "data": {"flags.flagd.json": FLAGD_DOC, "other": "x"}});
    env.cluster.apply(&cm.to_string());
    env.guard(
        "g",
        "  flags: {configMapRef: {name: flagd}, format: flagd, key: flags.flagd.json, guarded: [completion_validation_system, completion_validation_ui]}",
    );
    env.request(
        "disable",
        "  guardRef: {name: g}\n  requestedBy: ops_team\n  mode: immediate",
    );
    assert_succeeded(&env.finished("disable").await);

    let data = env.data("flagd").await;
    assert_eq!(data["other"], "x");
    let got: serde_json::Value = serde_json::from_str(&data["flags.flagd.json"]).unwrap();
    let mut want: serde_json::Value = serde_json::from_str(FLAGD_DOC).unwrap();
    want["flags"]["completion_validation_system"]["defaultVariant"] = "off".into();
    want["flags"]["completion_validation_system"]
        .as_object_mut()
        .unwrap()
        .remove("targeting");
    want["flags"]["completion_validation_ui"]["defaultVariant"] = "off".into();
    assert_eq!(got, want);
}

/// forceDisableAll turns off every boolean flag of the document: by its `false` variant where
/// it has one, otherwise with `state: DISABLED` — said in the timeline and a Warning Event.
#[tokio::test]
async fn force_disable_all_turns_off_every_boolean_flag_and_names_those_disabled_by_state() {
    let Some(env) = setup("force_disable_all").await else {
        return;
    };
    let doc = r#"{
  "flags": {
    "guarded": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
    "beta": {"state": "ENABLED", "variants": {"yes": true, "no": false}, "defaultVariant": "yes"},
    "legacy": {"state": "ENABLED", "variants": {"enabled": true}, "defaultVariant": "enabled"},
    "color": {"state": "ENABLED", "variants": {"red": "red", "blue": "blue"}, "defaultVariant": "red"}
  }
}"#;
    let cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "flagd", "namespace": env.ns, "labels": {"rollguard.dev/flags": "true"}}, "data": {"flags.json": doc}});
    env.cluster.apply(&cm.to_string());
    env.guard(
        "g",
        "  flags: {configMapRef: {name: flagd}, format: flagd, key: flags.json, guarded: [guarded]}",
    );
    env.request(
        "everything",
        "  guardRef: {name: g}\n  requestedBy: ops\n  mode: immediate\n  forceDisableAll: true",
    );
    let done = env.finished("everything").await;
    assert_succeeded(&done);
    let got: serde_json::Value =
        serde_json::from_str(&env.data("flagd").await["flags.json"]).unwrap();
    let flags = &got["flags"];
    assert_eq!(flags["guarded"]["defaultVariant"], "off");
    assert_eq!(flags["beta"]["defaultVariant"], "no");
    assert_eq!(flags["legacy"]["state"], "DISABLED", "{got:#}");
    assert_eq!(
        flags["color"],
        serde_json::json!({"state": "ENABLED", "variants": {"red": "red", "blue": "blue"}, "defaultVariant": "red"})
    );
    let status = done.status.unwrap();
    let line = status
        .timeline
        .iter()
        .find(|t| t.step == "FlagsDisabledByState")
        .unwrap_or_else(|| panic!("{:#?}", status.timeline));
    assert!(
        line.message.contains("legacy") && !line.message.contains("beta"),
        "{}",
        line.message
    );
    let warning = env
        .events_for("everything")
        .await
        .into_iter()
        .find(|e| e.reason.as_deref() == Some("FlagsDisabledByState"))
        .expect("a FlagsDisabledByState Event");
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    assert!(warning.message.unwrap_or_default().contains("legacy"));
}

#[tokio::test]
async fn a_concurrent_writer_loses_none_of_its_writes_during_twenty_rollbacks() {
    let Some(env) = setup("concurrent_writer").await else {
        return;
    };
    // A busy writer, pausing 10 ms between writes.
    rollbacks_beside_a_writer(&env, 20, Some(Duration::from_millis(10))).await;
}

/// A writer in a tight loop (read, write, again, no pause) wins most races for the
/// ConfigMap; a rollback's retry must not need more calls than the writer's loop, or it
/// could lose every time.
#[tokio::test]
async fn a_tight_loop_writer_does_not_starve_a_rollback() {
    let Some(env) = setup("tight_loop_writer").await else {
        return;
    };
    rollbacks_beside_a_writer(&env, 20, None).await;
}

/// `rollbacks` immediate requests, each of one flag, while a writer edits another flag
/// inside the same flagd document (and keys of its own), pausing `pause` between writes:
/// every rollback succeeds, and none of the writer's acknowledged edits is lost.
async fn rollbacks_beside_a_writer(env: &Env, rollbacks: usize, pause: Option<Duration>) {
    // 20 guarded flagd flags plus one the writer edits inside the same document, so every
    // rollback rewrites the key the writer is editing.
    let mut flags = serde_json::Map::new();
    for i in 0..20 {
        flags.insert(format!("f{i}"), serde_json::json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}));
    }
    flags.insert("counter".into(), serde_json::json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on", "metadata": {"n": 0}}));
    let doc = serde_json::to_string_pretty(&serde_json::json!({"flags": flags})).unwrap();
    let cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "flagd", "namespace": env.ns, "labels": {"rollguard.dev/flags": "true"}}, "data": {"flags.json": doc}});
    env.cluster.apply(&cm.to_string());
    let guarded: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
    env.guard("g", &format!("  flags: {{configMapRef: {{name: flagd}}, format: flagd, key: flags.json, guarded: [{}]}}", guarded.join(", ")));

    // The writer: read-modify-write with resourceVersion (as a careful tool does), plus
    // plain keys of its own; it counts only writes the API server acknowledged.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let api = env.config_maps();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut acknowledged = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let cm = api.get("flagd").await.unwrap();
                let mut doc: serde_json::Value =
                    serde_json::from_str(&cm.data.as_ref().unwrap()["flags.json"]).unwrap();
                // Increment what was read: an edit lost to a stale overwrite shows as a count
                // below the number of acknowledged writes.
                let n = doc["flags"]["counter"]["metadata"]["n"].as_u64().unwrap();
                doc["flags"]["counter"]["metadata"]["n"] = (n + 1).into();
                let patch = serde_json::json!({
                    "metadata": {"resourceVersion": cm.metadata.resource_version},
                    "data": {"flags.json": serde_json::to_string_pretty(&doc).unwrap(), format!("w{}", acknowledged + 1): "written"}
                });
                match api
                    .patch("flagd", &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => acknowledged += 1,
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => panic!("writer: {e}"),
                }
                if let Some(pause) = pause {
                    tokio::time::sleep(pause).await;
                }
            }
            acknowledged
        })
    };
    for i in 0..rollbacks {
        env.request(
            &format!("r{i}"),
            &format!(
                "  guardRef: {{name: g}}\n  requestedBy: ops\n  mode: immediate\n  flags: [f{i}]"
            ),
        );
    }
    for i in 0..rollbacks {
        assert_succeeded(&env.finished(&format!("r{i}")).await);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acknowledged = writer.await.unwrap();
    assert!(
        acknowledged > rollbacks as u64,
        "the writer should have raced the rollbacks ({acknowledged} writes)"
    );

    let data = env.data("flagd").await;
    let doc: serde_json::Value = serde_json::from_str(&data["flags.json"]).unwrap();
    assert_eq!(
        doc["flags"]["counter"]["metadata"]["n"], acknowledged,
        "a writer edit inside the document was lost"
    );
    for n in 1..=acknowledged {
        assert_eq!(
            data.get(&format!("w{n}")).map(String::as_str),
            Some("written"),
            "writer key w{n} lost"
        );
    }
    for i in 0..20 {
        let expected = if i < rollbacks { "off" } else { "on" };
        assert_eq!(
            doc["flags"][format!("f{i}")]["defaultVariant"],
            expected,
            "f{i}"
        );
    }
}

type Calls = Arc<Mutex<Vec<serde_json::Value>>>;

/// A hook receiver on loopback that records calls and answers after `delay`, with `status`.
async fn hook_receiver(delay: Duration, status: u16) -> (String, Calls) {
    let calls: Calls = Arc::default();
    let app = Router::new()
        .route(
            "/hook",
            post(
                |State((calls, delay, status)): State<(Calls, Duration, u16)>,
                 Json(body): Json<serde_json::Value>| async move {
                    calls.lock().unwrap().push(body);
                    tokio::time::sleep(delay).await;
                    axum::http::StatusCode::from_u16(status).unwrap()
                },
            ),
        )
        .with_state((calls.clone(), delay, status));
    let url = format!("http://{}/hook", common::serve(app).await);
    (url, calls)
}

/// Waits until the hook receiver has been called (its answer may still be pending).
async fn hook_called(calls: &Calls) {
    wait_until(
        Duration::from_secs(10),
        "the drain hook to be called",
        || {
            let called = !calls.lock().unwrap().is_empty();
            async move { called.then_some(()) }
        },
    )
    .await;
}

#[tokio::test]
async fn requests_for_one_guard_run_one_after_the_other_and_reapplying_changes_nothing() {
    let Some(env) = setup("serialised").await else {
        return;
    };
    let (slow, calls) = hook_receiver(Duration::from_millis(1500), 200).await;
    env.plain_flags("ff", &[("a", "true"), ("b", "true")]);
    env.guard("g", &format!("  flags: {{configMapRef: {{name: ff}}, guarded: [a, b]}}\n  rollback: {{hooks: {{preRollback: [{{url: \"{slow}\", timeout: 5s}}]}}}}"));

    let first = "  guardRef: {name: g}\n  requestedBy: ops\n  reason: first\n  flags: [a]";
    env.request("first", first);
    let api = env.requests();
    wait_until(Duration::from_secs(10), "first to be draining", || {
        let api = api.clone();
        async move {
            (phase(&api.get("first").await.ok()?) == Some(RequestPhase::Draining)).then_some(())
        }
    })
    .await;
    env.request(
        "second",
        "  guardRef: {name: g}\n  requestedBy: ops\n  reason: second\n  flags: [b]",
    );
    let second = wait_until(Duration::from_secs(5), "second to queue", || {
        let api = api.clone();
        async move {
            api.get("second")
                .await
                .ok()
                .filter(|r| phase(r) == Some(RequestPhase::Pending))
        }
    })
    .await;
    assert!(
        second
            .status
            .unwrap()
            .message
            .unwrap()
            .contains("waiting for RollbackRequest \"first\"")
    );
    let first_done = env.finished("first").await;
    let second_done = env.finished("second").await;
    assert_succeeded(&first_done);
    assert_succeeded(&second_done);
    let first_end = first_done.status.unwrap().completed_at.unwrap().0;
    let second_start = second_done.status.unwrap().started_at.unwrap().0;
    assert!(
        second_start >= first_end,
        "second started at {second_start} before first ended at {first_end}"
    );
    assert_eq!(calls.lock().unwrap().len(), 2, "one drain call per request");
    let payload = calls.lock().unwrap()[0].clone();
    assert_eq!(
        (
            payload["guard"].as_str(),
            payload["request"].as_str(),
            payload["stage"].as_str()
        ),
        (Some("g"), Some("first"), Some("preRollback"))
    );
    assert_eq!(payload["flags"], serde_json::json!(["a"]));

    // Re-applying the same manifest changes nothing: no new write anywhere.
    let cm_version = env
        .config_maps()
        .get("ff")
        .await
        .unwrap()
        .metadata
        .resource_version;
    let request_version = api.get("first").await.unwrap().metadata.resource_version;
    env.request("first", first);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        env.config_maps()
            .get("ff")
            .await
            .unwrap()
            .metadata
            .resource_version,
        cm_version
    );
    assert_eq!(
        api.get("first").await.unwrap().metadata.resource_version,
        request_version
    );
    assert_eq!(calls.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn hooks_graceful_calls_them_immediate_skips_them_and_a_failing_hook_does_not_stop_the_rollback()
 {
    let Some(env) = setup("hooks").await else {
        return;
    };
    let (ok_url, ok_calls) = hook_receiver(Duration::ZERO, 200).await;
    let (bad_url, bad_calls) = hook_receiver(Duration::ZERO, 500).await;
    env.plain_flags("ff", &[("a", "true")]);
    env.guard(
        "g",
        &format!("  flags: {{configMapRef: {{name: ff}}, guarded: [a]}}\n  rollback: {{hooks: {{preRollback: [{{url: \"{bad_url}\"}}], postRollback: [{{url: \"{ok_url}\"}}]}}}}"),
    );
    env.request("graceful", "  guardRef: {name: g}\n  requestedBy: ops");
    let r = env.finished("graceful").await;
    assert_succeeded(&r);
    assert_eq!(env.data("ff").await["a"], "false");
    let hooks = r.status.unwrap().hooks;
    assert_eq!(
        hooks.iter().map(|h| h.outcome).collect::<Vec<_>>(),
        [HookOutcome::Failed, HookOutcome::Succeeded]
    );
    assert!(
        hooks[0].message.contains("answered 500"),
        "{}",
        hooks[0].message
    );
    assert!(env.has_event("graceful", "HookFailed").await);
    assert_eq!(
        (
            bad_calls.lock().unwrap().len(),
            ok_calls.lock().unwrap().len()
        ),
        (1, 1)
    );
    assert_eq!(ok_calls.lock().unwrap()[0]["stage"], "postRollback");

    env.plain_flags("ff", &[("a", "true")]);
    env.request(
        "emergency",
        "  guardRef: {name: g}\n  requestedBy: ops\n  mode: immediate",
    );
    let r = env.finished("emergency").await;
    assert_succeeded(&r);
    assert!(r.status.unwrap().hooks.is_empty());
    assert_eq!(
        (
            bad_calls.lock().unwrap().len(),
            ok_calls.lock().unwrap().len()
        ),
        (1, 1),
        "immediate mode calls no hook"
    );
}

#[tokio::test]
async fn restore_puts_back_what_the_rollback_changed_except_keys_edited_since() {
    let Some(env) = setup("restore").await else {
        return;
    };
    env.plain_flags("ff", &[("a", "true"), ("b", "true"), ("c", "on-purpose")]);
    env.guard("g", "  flags: {configMapRef: {name: ff}, guarded: [a, b]}");
    env.request(
        "rb",
        "  guardRef: {name: g}\n  requestedBy: ops\n  mode: immediate",
    );
    assert_succeeded(&env.finished("rb").await);
    // A second rollback finds the flags off already: its snapshot is newer, but it changed
    // nothing, so the restore still gives back what "rb" changed.
    env.request(
        "rb-again",
        "  guardRef: {name: g}\n  requestedBy: ops\n  mode: immediate",
    );
    let again = env.finished("rb-again").await;
    assert_succeeded(&again);
    assert_eq!(again.status.unwrap().flags_changed, Some(vec![]));
    // Someone sets b by hand after the rollback.
    let patch = serde_json::json!({"data": {"b": "maybe"}});
    env.config_maps()
        .patch("ff", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();

    env.request(
        "rs",
        "  guardRef: {name: g}\n  requestedBy: ops\n  action: restore",
    );
    let r = env.finished("rs").await;
    assert_succeeded(&r);
    let data = env.data("ff").await;
    assert_eq!(
        (data["a"].as_str(), data["b"].as_str(), data["c"].as_str()),
        ("true", "maybe", "on-purpose")
    );
    let status = r.status.unwrap();
    assert_eq!(status.conflicts.len(), 1);
    assert_eq!(
        (
            status.conflicts[0].name.as_str(),
            status.conflicts[0].expected.as_str(),
            status.conflicts[0].found.as_str()
        ),
        ("b", "false", "maybe")
    );
    assert_eq!(status.restored_from.unwrap().name, "g-snap-rb");
    env.guard_settles(rollguard::api::guard::GuardPhase::Monitoring)
        .await;
    assert!(env.has_event("rs", "RestoreSucceeded").await);
}

#[tokio::test]
async fn dry_run_records_the_change_and_touches_nothing() {
    let Some(env) = setup("dry_run").await else {
        return;
    };
    env.plain_flags("ff", &[("a", "true"), ("b", "false")]);
    env.guard("g", "  flags: {configMapRef: {name: ff}, guarded: [a, b]}");
    let before = env
        .config_maps()
        .get("ff")
        .await
        .unwrap()
        .metadata
        .resource_version;
    env.request(
        "dry",
        "  guardRef: {name: g}\n  requestedBy: ops\n  dryRun: true",
    );
    let r = env.finished("dry").await;
    assert_succeeded(&r);
    let status = r.status.unwrap();
    assert_eq!(
        status
            .flags_changed
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["a"]
    );
    assert!(status.message.unwrap().contains("nothing was changed"));
    assert_eq!(
        env.config_maps()
            .get("ff")
            .await
            .unwrap()
            .metadata
            .resource_version,
        before
    );
    assert!(env.secrets().get_opt("g-snap-dry").await.unwrap().is_none());

    // A dry run leaves the guard's rollback state alone: rolled back stays rolled back.
    env.request(
        "real",
        "  guardRef: {name: g}\n  requestedBy: ops\n  mode: immediate",
    );
    assert_succeeded(&env.finished("real").await);
    env.guard_settles(rollguard::api::guard::GuardPhase::RolledBack)
        .await;
    env.request(
        "dry-restore",
        "  guardRef: {name: g}\n  requestedBy: ops\n  action: restore\n  dryRun: true",
    );
    assert_succeeded(&env.finished("dry-restore").await);
    let guards: Api<RolloutGuard> = env.api();
    wait_until(
        Duration::from_secs(10),
        "the dry run to release the guard",
        || {
            let guards = guards.clone();
            async move {
                let status = guards.get("g").await.ok()?.status?;
                status.active_rollback.is_none().then_some(())
            }
        },
    )
    .await;
    let status = guards.get("g").await.unwrap().status.unwrap();
    assert_eq!(
        status.phase,
        Some(rollguard::api::guard::GuardPhase::RolledBack),
        "a dry-run restore set the guard's phase"
    );
    assert_eq!(env.data("ff").await["a"], "false");
}

#[tokio::test]
async fn bad_input_fails_with_a_message_naming_the_field_and_changes_nothing() {
    let Some(env) = setup("bad_input").await else {
        return;
    };
    env.plain_flags("ff", &[("a", "true"), ("b", "true")]);
    let broken = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "broken", "namespace": env.ns, "labels": {"rollguard.dev/flags": "true"}}, "data": {"flags.json": "{\"flags\": {\"x\": "}});
    env.cluster.apply(&broken.to_string());
    env.guard(
        "plain",
        "  flags: {configMapRef: {name: ff}, guarded: [a, b]}",
    );
    env.guard(
        "absent",
        "  flags: {configMapRef: {name: ff}, guarded: [a, gone]}",
    );
    env.guard(
        "no-cm",
        "  flags: {configMapRef: {name: nowhere}, guarded: [a]}",
    );
    env.guard(
        "flagd",
        "  flags: {configMapRef: {name: broken}, format: flagd, key: flags.json, guarded: [x]}",
    );
    let before: Vec<ConfigMap> = vec![
        env.config_maps().get("ff").await.unwrap(),
        env.config_maps().get("broken").await.unwrap(),
    ];

    let cases = [
        (
            "unknown-flag",
            "  guardRef: {name: plain}\n  requestedBy: ops\n  flags: [nope]",
            "spec.flags: \"nope\" is not a guarded flag of this guard (guarded: a, b)",
        ),
        (
            "no-guard",
            "  guardRef: {name: ghost}\n  requestedBy: ops",
            "spec.guardRef.name: RolloutGuard \"ghost\" does not exist",
        ),
        (
            "no-configmap",
            "  guardRef: {name: no-cm}\n  requestedBy: ops",
            "spec.flags.configMapRef.name: ConfigMap \"nowhere\" does not exist",
        ),
        (
            "absent-flag",
            "  guardRef: {name: absent}\n  requestedBy: ops",
            "spec.flags.guarded: flag \"gone\" is not in ConfigMap \"ff\"",
        ),
        (
            "bad-flagd",
            "  guardRef: {name: flagd}\n  requestedBy: ops",
            "spec.flags.key: data key \"flags.json\" of ConfigMap \"broken\" is not a flagd document",
        ),
        (
            "no-snapshot",
            "  guardRef: {name: plain}\n  requestedBy: ops\n  action: restore\n  snapshotName: plain-snap-never",
            "spec.snapshotName: snapshot \"plain-snap-never\" does not exist",
        ),
    ];
    for (name, spec, _) in &cases {
        env.request(name, spec);
    }
    for (name, _, message) in cases {
        let r = env.finished(name).await;
        let status = r.status.unwrap();
        assert_eq!(status.phase, Some(RequestPhase::Failed), "{name}");
        assert!(
            status
                .message
                .as_deref()
                .unwrap_or_default()
                .contains(message),
            "{name}: {:?}",
            status.message
        );
        assert!(
            rollguard::conditions::is_true(&status.conditions, "Failed"),
            "{name}"
        );
        let warning = env.events_for(name).await.into_iter().any(|e| {
            e.type_.as_deref() == Some("Warning") && e.reason.as_deref() == Some("RollbackFailed")
        });
        assert!(warning, "{name}: no Warning Event");
        // As with a Job: Failed=True, Complete=False; completedAt is there to wait for either.
        env.kubectl_wait(&format!("rollbackrequest/{name}"), "condition=Failed");
        env.kubectl_wait(
            &format!("rollbackrequest/{name}"),
            "jsonpath={.status.completedAt}",
        );
        assert!(
            !rollguard::conditions::is_true(&status.conditions, "Complete"),
            "{name}"
        );
        assert!(
            env.secrets()
                .get_opt(&format!("plain-snap-{name}"))
                .await
                .unwrap()
                .is_none(),
            "{name}: snapshot taken"
        );
    }
    for cm in before {
        let now = env
            .config_maps()
            .get(&cm.metadata.name.clone().unwrap())
            .await
            .unwrap();
        assert_eq!(
            (now.metadata.resource_version, now.data),
            (cm.metadata.resource_version, cm.data),
            "ConfigMap changed"
        );
    }
}

#[tokio::test]
async fn verification_waits_for_workloads_and_fails_after_the_health_timeout() {
    let Some(env) = setup("verification").await else {
        return;
    };
    env.plain_flags("ff", &[("a", "true")]);
    let deployment = |name: &str| {
        serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": env.ns},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "example"}]}}}})
        .to_string()
    };
    env.cluster.apply(&deployment("api"));
    env.cluster.apply(&deployment("stuck"));
    // An HTTP health endpoint that answers 503 until the test says the app is healthy.
    let (healthz, healthy) = common::health_server().await;
    env.guard(
        "g",
        &format!("  flags: {{configMapRef: {{name: ff}}, guarded: [a]}}\n  health: {{timeout: 30s, workloads: [{{kind: Deployment, name: api}}], http: [{{url: \"{healthz}\"}}]}}"),
    );
    env.guard("h", "  interval: 1s\n  flags: {configMapRef: {name: ff}, guarded: [a]}\n  health: {timeout: 2s, workloads: [{kind: Deployment, name: stuck}]}");

    env.request(
        "waits",
        "  guardRef: {name: g}\n  requestedBy: ops\n  mode: immediate",
    );
    let api = env.requests();
    let waiting = wait_until(
        Duration::from_secs(10),
        "verification to wait on the Deployment",
        || {
            let api = api.clone();
            async move {
                let r = api.get("waits").await.ok()?;
                let c =
                    rollguard::conditions::get(&r.status.as_ref()?.conditions, "HealthVerified")?
                        .clone();
                (c.status == "Unknown").then_some(c)
            }
        },
    )
    .await;
    assert!(
        waiting
            .message
            .contains("Deployment \"api\": its controller has not observed generation 1 yet"),
        "{}",
        waiting.message
    );
    assert!(
        waiting
            .message
            .contains(&format!("GET {healthz} answered 503, expected 200")),
        "{}",
        waiting.message
    );
    // No controller-manager here: the test plays it and reports the Deployment ready.
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(env.cluster.client.clone(), &env.ns);
    let ready = serde_json::json!({"status": {"observedGeneration": 1, "replicas": 2, "readyReplicas": 2, "updatedReplicas": 2, "availableReplicas": 2,
        "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "ok"}]}});
    deployments
        .patch_status("api", &PatchParams::default(), &Patch::Merge(&ready))
        .await
        .unwrap();
    // Workloads ready but the HTTP check still failing: not verified yet.
    wait_until(
        Duration::from_secs(10),
        "only the HTTP check to stand in the way",
        || {
            let api = api.clone();
            async move {
                let r = api.get("waits").await.ok()?;
                let c =
                    rollguard::conditions::get(&r.status.as_ref()?.conditions, "HealthVerified")?
                        .clone();
                (c.status == "Unknown" && !c.message.contains("Deployment")).then_some(())
            }
        },
    )
    .await;
    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    let r = env.finished("waits").await;
    assert_succeeded(&r);
    assert!(rollguard::conditions::is_true(
        &r.status.unwrap().conditions,
        "HealthVerified"
    ));

    env.plain_flags("ff", &[("a", "true")]);
    env.request(
        "times-out",
        "  guardRef: {name: h}\n  requestedBy: ops\n  mode: immediate",
    );
    let r = env.finished("times-out").await;
    let status = r.status.unwrap();
    assert_eq!(status.phase, Some(RequestPhase::Failed));
    let verified = rollguard::conditions::get(&status.conditions, "HealthVerified").unwrap();
    assert_eq!(verified.status, "False");
    assert!(
        verified.message.contains("spec.health.timeout (2s)")
            && verified.message.contains("\"stuck\""),
        "{}",
        verified.message
    );
    assert!(env.has_event("times-out", "HealthCheckFailed").await);
    assert_eq!(
        env.data("ff").await["a"],
        "false",
        "a failed verification leaves the flags off"
    );
    // ... and the guard says so: rolled back, unverified (drift is watched, no automatic
    // rollback fires again over flags that are off).
    let guards: Api<RolloutGuard> = env.api();
    let rolled_back = wait_until(
        Duration::from_secs(10),
        "guard h to say its flags are off, unverified",
        || {
            let guards = guards.clone();
            async move {
                let status = guards.get("h").await.ok()?.status?;
                let c = rollguard::conditions::get(&status.conditions, "RolledBack")?.clone();
                (status.phase == Some(rollguard::api::guard::GuardPhase::RolledBack)
                    && c.status == "True")
                    .then_some(c)
            }
        },
    )
    .await;
    assert_eq!(rolled_back.reason, "VerificationFailed");
    assert!(
        rolled_back.message.contains("times-out"),
        "{}",
        rolled_back.message
    );
}

#[tokio::test]
async fn refresh_pods_annotates_only_pods_that_mount_the_flags_config_map() {
    let Some(env) = setup("refresh_pods").await else {
        return;
    };
    env.plain_flags("ff", &[("a", "true")]);
    env.guard(
        "g",
        "  flags: {configMapRef: {name: ff}, guarded: [a], refreshPods: true}",
    );
    let pod = |name: &str, volumes: serde_json::Value| {
        serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": env.ns},
            "spec": {"containers": [{"name": "app", "image": "example"}], "volumes": volumes}})
        .to_string()
    };
    env.cluster.apply(&pod(
        "mounts",
        serde_json::json!([{"name": "flags", "configMap": {"name": "ff"}}]),
    ));
    env.cluster.apply(&pod(
        "other",
        serde_json::json!([{"name": "x", "configMap": {"name": "something-else"}}]),
    ));
    env.request(
        "refresh",
        "  guardRef: {name: g}\n  requestedBy: ops\n  mode: immediate",
    );
    let refreshed = env.finished("refresh").await;
    assert_succeeded(&refreshed);
    let timeline = refreshed.status.unwrap().timeline;
    assert!(
        timeline
            .iter()
            .any(|t| t.step == "PodsRefreshed" && t.message.starts_with("annotated 1 pod(s)")),
        "{timeline:#?}"
    );
    let pods: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(env.cluster.client.clone(), &env.ns);
    let revision = env
        .config_maps()
        .get("ff")
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let annotated = wait_until(
        Duration::from_secs(5),
        "the mounting pod to be annotated",
        || {
            let pods = pods.clone();
            async move {
                pods.get("mounts")
                    .await
                    .ok()?
                    .metadata
                    .annotations?
                    .get("rollguard.dev/flags-revision")
                    .cloned()
            }
        },
    )
    .await;
    assert_eq!(annotated, revision);
    let other = pods
        .get("other")
        .await
        .unwrap()
        .metadata
        .annotations
        .unwrap_or_default();
    assert!(!other.contains_key("rollguard.dev/flags-revision"));
}

#[tokio::test]
async fn snapshots_beyond_retain_are_pruned_oldest_first() {
    // The operator's API calls are logged, to see which snapshots it asks to delete.
    let Some(env) = Env::start(
        "retention",
        &[("RUST_LOG", "warn,rollguard=debug,kube_client=debug")],
    )
    .await
    else {
        return;
    };
    env.plain_flags("ff", &[("a", "true")]);
    env.guard(
        "g",
        "  flags: {configMapRef: {name: ff}, guarded: [a]}\n  rollback: {snapshot: {retain: 2}}",
    );
    let snapshots = || async {
        let mut names: Vec<_> = env
            .secrets()
            .list(&ListParams::default().labels("rollguard.dev/guard=g"))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|s| s.metadata.name)
            .collect();
        names.sort();
        names
    };
    // Pruning follows the Succeeded status write (off the flag path): wait for it, then
    // make sure it went no further.
    let rollback_and_prune = |name: &'static str, expected: [&'static str; 2]| {
        let env = &env;
        async move {
            env.request(
                name,
                "  guardRef: {name: g}\n  requestedBy: ops\n  mode: immediate",
            );
            assert_succeeded(&env.finished(name).await);
            wait_until(
                Duration::from_secs(10),
                &format!("the snapshots after {name}'s pruning"),
                || async { (snapshots().await == expected).then_some(()) },
            )
            .await;
        }
    };
    for name in ["r1", "r2"] {
        env.request(
            name,
            "  guardRef: {name: g}\n  requestedBy: ops\n  mode: immediate",
        );
        assert_succeeded(&env.finished(name).await);
    }
    rollback_and_prune("r3", ["g-snap-r2", "g-snap-r3"]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(snapshots().await, ["g-snap-r2", "g-snap-r3"]);
    // r4's pruning deletes r2's snapshot and does not ask for r1's, pruned before, again.
    let operator = env.operator.as_ref().unwrap();
    let before = operator.log_text().lines().count();
    rollback_and_prune("r4", ["g-snap-r3", "g-snap-r4"]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let deletes: Vec<String> = operator
        .log_text()
        .lines()
        .skip(before)
        .map(common::strip_ansi)
        .filter(|l| l.contains("http.method=DELETE") && l.ends_with("requesting"))
        .filter_map(|l| {
            let path = l.split("/secrets/").nth(1)?;
            Some(path.split('?').next()?.to_string())
        })
        .collect();
    assert!(deletes.iter().any(|d| d == "g-snap-r2"), "{deletes:?}");
    assert!(!deletes.iter().any(|d| d == "g-snap-r1"), "{deletes:?}");
}

#[tokio::test]
async fn an_emergency_takes_over_from_a_graceful_rollback_stuck_in_its_drain() {
    let Some(env) = setup("emergency_takeover").await else {
        return;
    };
    // The drain hook answers only after 6 s; a second one is never reached.
    let (slow_url, slow_calls) = hook_receiver(Duration::from_secs(6), 200).await;
    let (next_url, next_calls) = hook_receiver(Duration::ZERO, 200).await;
    env.plain_flags("ff", &[("a", "true"), ("b", "true")]);
    env.guard(
        "g",
        &format!("  flags: {{configMapRef: {{name: ff}}, guarded: [a, b]}}\n  rollback: {{hooks: {{preRollback: [{{url: \"{slow_url}\", timeout: 30s}}, {{url: \"{next_url}\"}}]}}}}"),
    );
    let writes = common::count_config_map_writes(&env.config_maps(), "ff").await;

    env.request("graceful", "  guardRef: {name: g}\n  requestedBy: ops");
    hook_called(&slow_calls).await;
    env.request(
        "emergency",
        "  guardRef: {name: g}\n  requestedBy: ops\n  mode: immediate\n  reason: cannot wait",
    );
    let emergency = env.finished("emergency").await;
    assert_succeeded(&emergency);
    // It did not wait for the drain: done while the hook still had seconds to go.
    assert!(
        slow_calls.lock().unwrap().len() == 1 && next_calls.lock().unwrap().is_empty(),
        "the emergency finished before the drain hook answered"
    );
    let status = emergency.status.unwrap();
    assert_eq!(
        status
            .flags_changed
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert!(
        status
            .timeline
            .iter()
            .any(|t| t.step == "Superseding" && t.message.contains("\"graceful\"")),
        "{:?}",
        status.timeline
    );

    // The graceful one ends Superseded once its hook returns, and does nothing more.
    let graceful = wait_until(
        Duration::from_secs(20),
        "the graceful request to end Superseded",
        || {
            let requests = env.requests();
            async move {
                let r = requests.get("graceful").await.ok()?;
                (phase(&r) == Some(RequestPhase::Superseded)).then_some(r)
            }
        },
    )
    .await;
    let status = graceful.status.unwrap();
    assert!(
        status
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("\"emergency\""),
        "{:?}",
        status.message
    );
    assert_eq!(
        status.flags_changed, None,
        "the superseded request wrote no flags"
    );
    assert!(!rollguard::conditions::is_true(
        &status.conditions,
        "Complete"
    ));
    assert!(env.has_event("graceful", "RollbackSuperseded").await);
    assert!(
        next_calls.lock().unwrap().is_empty(),
        "no hook after being superseded"
    );
    assert_eq!(
        writes.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one flags write"
    );
    let guard = env
        .guard_settles(rollguard::api::guard::GuardPhase::RolledBack)
        .await;
    assert_eq!(guard.last_rollback.unwrap().name, "emergency");
}

#[tokio::test]
async fn deleting_a_request_in_flight_frees_the_guard() {
    let Some(env) = setup("deleted_in_flight").await else {
        return;
    };
    let (hang_url, hang_calls) = hook_receiver(Duration::from_secs(60), 200).await;
    env.plain_flags("ff", &[("a", "true")]);
    env.guard(
        "g",
        &format!("  interval: 1s\n  flags: {{configMapRef: {{name: ff}}, guarded: [a]}}\n  rollback: {{hooks: {{preRollback: [{{url: \"{hang_url}\", timeout: 90s}}]}}}}"),
    );
    env.request("stuck", "  guardRef: {name: g}\n  requestedBy: ops");
    hook_called(&hang_calls).await;
    env.requests()
        .delete("stuck", &Default::default())
        .await
        .unwrap();
    // Nobody is left to release the slot: the guard frees it itself.
    env.guard_settles(rollguard::api::guard::GuardPhase::Monitoring)
        .await;
    // And the guard takes the next request at once.
    env.request(
        "next",
        "  guardRef: {name: g}\n  requestedBy: ops\n  mode: immediate",
    );
    assert_succeeded(&env.finished("next").await);
    assert_eq!(env.data("ff").await["a"], "false");
}

#[tokio::test]
async fn a_flags_write_the_api_server_refuses_fails_the_request_instead_of_retrying_forever() {
    let Some(env) = setup("write_refused").await else {
        return;
    };
    // An immutable ConfigMap: every write is refused (422), however often it is tried.
    env.cluster.apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: frozen, namespace: {}, labels: {{rollguard.dev/flags: \"true\"}}}}\nimmutable: true\ndata: {{a: \"true\"}}\n",
        env.ns
    ));
    env.guard("g", "  flags: {configMapRef: {name: frozen}, guarded: [a]}");
    env.request(
        "refused",
        "  guardRef: {name: g}\n  requestedBy: ops\n  mode: immediate",
    );
    let r = env.finished("refused").await;
    let status = r.status.unwrap();
    assert_eq!(status.phase, Some(RequestPhase::Failed));
    let message = status.message.clone().unwrap_or_default();
    assert!(
        message.contains("writing ConfigMap \"frozen\"") && message.contains("422"),
        "{message}"
    );
    let written = rollguard::conditions::get(&status.conditions, "FlagsDisabled").unwrap();
    assert_eq!(
        (written.status.as_str(), written.reason.as_str()),
        ("False", "WriteRefused")
    );
    assert_eq!(status.flags_changed, Some(vec![]), "nothing was changed");
    assert_eq!(env.data("frozen").await["a"], "true");
    assert!(env.has_event("refused", "RollbackFailed").await);
    // The guard is free again for the next request.
    env.guard_settles(rollguard::api::guard::GuardPhase::Monitoring)
        .await;
}

#[tokio::test]
async fn a_guard_deleted_and_created_again_restores_from_its_named_snapshot_even_without_the_request()
 {
    let Some(env) = setup("recreated_guard").await else {
        return;
    };
    env.plain_flags("ff", &[("a", "true"), ("b", "true"), ("c", "true")]);
    let spec = "  flags: {configMapRef: {name: ff}, guarded: [a, b]}";
    env.guard("g", spec);
    env.request(
        "rb",
        "  guardRef: {name: g}\n  requestedBy: ops\n  mode: immediate",
    );
    assert_succeeded(&env.finished("rb").await);
    // No owner: the garbage collector would not delete the snapshot with the guard.
    let snapshot = env.secrets().get("g-snap-rb").await.unwrap();
    assert_eq!(snapshot.metadata.owner_references, None);

    // GitOps replaces the guard; the request that took the snapshot is gone too (as an
    // automatic one is, with its guard).
    let (ok, _, err) = env
        .cluster
        .kubectl(&["delete", "rolloutguard", "g", "-n", &env.ns]);
    assert!(ok, "{err}");
    env.requests()
        .delete("rb", &Default::default())
        .await
        .unwrap();
    env.guard("g", spec);
    env.plain_flags("ff", &[("a", "false"), ("b", "false"), ("c", "false")]);

    // The operator finds the latest snapshot through the request that took it (it may not
    // list Secrets): with that request gone, the refusal says how to find one by hand.
    env.request(
        "latest",
        "  guardRef: {name: g}\n  requestedBy: ops\n  action: restore",
    );
    let refused = env.finished("latest").await.status.unwrap();
    assert_eq!(refused.phase, Some(RequestPhase::Failed), "{refused:?}");
    let message = refused.message.unwrap_or_default();
    assert!(
        message.contains("spec.snapshotName")
            && message.contains(&format!(
                "kubectl get secrets -n {} -l rollguard.dev/guard=g",
                env.ns
            )),
        "{message}"
    );
    env.request(
        "rs",
        "  guardRef: {name: g}\n  requestedBy: ops\n  action: restore\n  snapshotName: g-snap-rb",
    );
    let r = env.finished("rs").await;
    assert_succeeded(&r);
    assert_eq!(r.status.unwrap().restored_from.unwrap().name, "g-snap-rb");
    let data = env.data("ff").await;
    assert_eq!(
        (data["a"].as_str(), data["b"].as_str(), data["c"].as_str()),
        ("true", "true", "false"),
        "the guarded flags come back; c, never guarded, is left alone"
    );
}

#[tokio::test]
async fn triggered_by_is_recorded_from_the_annotation_when_its_status_write_was_lost() {
    let Some(env) = setup("triggered_by_annotation").await else {
        return;
    };
    env.plain_flags("ff", &[("a", "true")]);
    env.guard("g", "  flags: {configMapRef: {name: ff}, guarded: [a]}");
    // As the guard creates an automatic request, as if it stopped before its status write.
    let annotated = |name: &str, requested_by: &str| {
        format!(
            "apiVersion: rollguard.dev/v1alpha1\nkind: RollbackRequest\nmetadata:\n  name: {name}\n  namespace: {}\n  annotations: {{rollguard.dev/triggered-by: '{{\"trigger\":\"error-rate\",\"value\":0.5}}'}}\nspec: {{guardRef: {{name: g}}, requestedBy: \"{requested_by}\", mode: immediate}}\n",
            env.ns
        )
    };
    env.cluster
        .apply(&annotated("g-auto-20261128-000000", "system:rollguard"));
    let r = env.finished("g-auto-20261128-000000").await;
    assert_succeeded(&r);
    let triggered = r.status.unwrap().triggered_by.unwrap();
    assert_eq!(
        (triggered.trigger.as_str(), triggered.value),
        ("error-rate", Some(0.5))
    );
    // Anyone else's request is not made to look automatic by the annotation.
    env.cluster.apply(&annotated("manual", "ops"));
    let r = env.finished("manual").await;
    assert_succeeded(&r);
    assert_eq!(r.status.unwrap().triggered_by, None);
}
