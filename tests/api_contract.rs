//! The API contract of SPEC §1 against the real kube-apiserver: the CRDs install, the
//! samples apply, bad manifests are rejected with messages that name the field, a
//! RollbackRequest's spec cannot change, and authorization is real (RBAC).

mod common;

use common::{Cluster, cluster, wait_until};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use rollguard::api::{RollbackRequest, RolloutGuard};
use serde_json::{Value, json};
use std::time::Duration;

fn guard_manifest(ns: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "rollguard.dev/v1alpha1", "kind": "RolloutGuard",
           "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

fn request_manifest(ns: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "rollguard.dev/v1alpha1", "kind": "RollbackRequest",
           "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

fn valid_guard_spec() -> Value {
    json!({
        "flags": {"configMapRef": {"name": "feature-flags"}, "guarded": ["completion_validation_system"]},
        "triggers": [{"name": "critical-error-rate", "query": "up", "above": 0.01, "for": "5m"}]
    })
}

/// Applies `patch` (a JSON merge patch) to a valid guard spec.
fn guard_spec_with(patch: Value) -> Value {
    let mut spec = valid_guard_spec();
    merge(&mut spec, patch);
    spec
}

fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(&k);
                } else {
                    merge(t.entry(k).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p,
    }
}

async fn create(
    cluster: &Cluster,
    ns: &str,
    manifest: Value,
) -> Result<DynamicObject, kube::Error> {
    let ar = match manifest["kind"].as_str() {
        Some("RolloutGuard") => ApiResource::erase::<RolloutGuard>(&()),
        _ => ApiResource::erase::<RollbackRequest>(&()),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(cluster.client.clone(), ns, &ar);
    let obj: DynamicObject = serde_json::from_value(manifest).unwrap();
    api.create(&PostParams::default(), &obj).await
}

fn api_message(err: kube::Error) -> String {
    match err {
        kube::Error::Api(status) => status.message.clone(),
        other => panic!("expected a rejection by the API server, got {other}"),
    }
}

#[tokio::test]
async fn crds_install_and_samples_apply_cleanly() {
    let Some(cluster) = cluster("crds_install_and_samples_apply_cleanly").await else {
        return;
    };
    cluster.install_crds().await;

    let (ok, _, err) = cluster.kubectl(&["create", "namespace", "shop"]);
    assert!(ok || err.contains("AlreadyExists"), "{err}");
    let samples = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/samples");
    let (ok, out, err) = cluster.kubectl(&["apply", "-f", samples]);
    assert!(ok, "samples did not apply:\n{out}\n{err}");
    // Applying the same manifests again changes nothing: each object's generation, labels,
    // annotations, spec and status stay as they were. (kubectl may still print "configured"
    // for guards: JSON merge patches resend lists whose items the API server defaulted, and
    // the server finds no change.) The first update of an object no operator has written yet
    // may store the status the CRD defaults (`{observedGeneration: 0}`, which kstatus reads
    // as "not observed yet"): the API server drops status on create and defaults it on read,
    // so that one write changes no content. From then on a re-apply writes nothing at all:
    // no object gets a new resourceVersion.
    let read = |cluster: &Cluster, field: &str| {
        let jsonpath =
            format!("{{range .items[*]}}{{.kind}}/{{.metadata.name}} {field}{{\"\\n\"}}{{end}}");
        let (ok, out, err) =
            cluster.kubectl(&["get", "-f", samples, "-o", &format!("jsonpath={jsonpath}")]);
        assert!(ok, "{err}");
        out
    };
    let content = "gen={.metadata.generation} labels={.metadata.labels} annotations={.metadata.annotations} spec={.spec} status={.status}";
    let before = read(&cluster, content);
    assert_eq!(before.lines().count(), 7, "{before}");
    let (ok, _, err) = cluster.kubectl(&["apply", "-f", samples]);
    assert!(ok, "{err}");
    assert_eq!(
        read(&cluster, content),
        before,
        "re-applying the samples changed an object"
    );
    let versions = read(&cluster, "{.metadata.resourceVersion}");
    let (ok, _, err) = cluster.kubectl(&["apply", "-f", samples]);
    assert!(ok, "{err}");
    assert_eq!(
        read(&cluster, "{.metadata.resourceVersion}"),
        versions,
        "re-applying the samples wrote an object"
    );

    // The unquoted `on:` key of the flagd sample reaches the API as `true:` (YAML 1.1) and
    // still means `on`.
    let guards: Api<RolloutGuard> = Api::namespaced(cluster.client.clone(), "shop");
    let flagd = guards.get("phase4-flagd").await.unwrap();
    assert_eq!(flagd.spec.triggers.len(), 6);
    let ops = flagd.spec.notify.iter().find(|n| n.name == "ops").unwrap();
    assert_eq!(ops.events().len(), 6);
    assert_eq!(flagd.spec.flags.off_variant, "off");

    let (ok, out, err) = cluster.kubectl(&["get", "rg", "-n", "shop"]);
    assert!(ok, "{err}");
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "READY",
            "PHASE",
            "HEALTHY",
            "BREACHING",
            "LAST",
            "ROLLBACK",
            "AGE"
        ]
    );
    let (ok, out, err) = cluster.kubectl(&["get", "rbr", "-n", "shop"]);
    assert!(ok, "{err}");
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "GUARD",
            "ACTION",
            "PHASE",
            "REQUESTED",
            "BY",
            "DURATION",
            "AGE"
        ]
    );
    assert!(
        out.contains("incident-42 ") && out.contains("ops_team"),
        "{out}"
    );
    let (ok, out, _) = cluster.kubectl(&["get", "rollguard", "-n", "shop", "-o", "name"]);
    assert!(
        ok && out.contains("rolloutguard.rollguard.dev/phase4") && out.contains("rollbackrequest"),
        "category: {out}"
    );
}

#[tokio::test]
async fn defaults_from_the_spec_are_applied_by_the_api_server() {
    let Some(cluster) = cluster("defaults_from_the_spec_are_applied_by_the_api_server").await
    else {
        return;
    };
    cluster.install_crds().await;
    let ns = cluster.namespace("defaults").await;
    let spec = json!({"flags": {"configMapRef": {"name": "ff"}, "guarded": ["a"]},
                      "triggers": [{"name": "t", "query": "up", "below": 1}]});
    create(&cluster, &ns, guard_manifest(&ns, "g", spec))
        .await
        .unwrap();
    let guard = Api::<RolloutGuard>::namespaced(cluster.client.clone(), &ns)
        .get("g")
        .await
        .unwrap();
    let s = guard.spec;
    assert_eq!(s.interval.0, "15s");
    assert_eq!(s.flags.off_value, "false");
    assert_eq!(s.flags.off_variant, "off");
    assert_eq!(s.triggers[0].for_.0, "0s");
    assert_eq!(s.rollback.cooldown.0, "30m");
    assert_eq!(s.rollback.snapshot.retain, 10);
    assert_eq!(s.health.timeout.0, "2m");
    assert_eq!(s.health.stability_window.0, "10m");
    assert_eq!(
        (
            s.slo.flag_disable.0.as_str(),
            s.slo.notification.0.as_str(),
            s.slo.health_verification.0.as_str(),
            s.slo.total.0.as_str(),
            s.slo.stability.0.as_str()
        ),
        ("10s", "10s", "2m", "5m", "15m")
    );

    create(
        &cluster,
        &ns,
        request_manifest(
            &ns,
            "r",
            json!({"guardRef": {"name": "g"}, "requestedBy": "alice"}),
        ),
    )
    .await
    .unwrap();
    let req = Api::<RollbackRequest>::namespaced(cluster.client.clone(), &ns)
        .get("r")
        .await
        .unwrap();
    assert_eq!(
        req.spec.action,
        rollguard::api::request::RequestAction::Rollback
    );
    assert_eq!(
        req.spec.mode,
        rollguard::api::request::RequestMode::Graceful
    );
    assert!(!req.spec.dry_run && !req.spec.force_disable_all && req.spec.flags.is_empty());
}

/// (what is wrong, manifest, words the API server's message must contain)
fn invalid_manifests(ns: &str) -> Vec<(&'static str, Value, Vec<&'static str>)> {
    let g = |spec| guard_manifest(ns, "bad-guard", spec);
    let r = |spec| request_manifest(ns, "bad-request", spec);
    let trigger = |t: Value| guard_spec_with(json!({"triggers": [t]}));
    vec![
        (
            "two comparisons",
            g(trigger(
                json!({"name": "t", "query": "up", "above": 1, "below": 0}),
            )),
            vec![
                "spec.triggers[0]",
                "set exactly one of above, below, increaseAbove, decreaseBelow",
            ],
        ),
        (
            "no comparison",
            g(trigger(json!({"name": "t", "query": "up"}))),
            vec!["spec.triggers[0]", "spec.triggers[t]: set exactly one of"],
        ),
        (
            "relative comparison without baseline",
            g(trigger(
                json!({"name": "lat", "query": "up", "increaseAbove": 0.05}),
            )),
            vec!["spec.triggers[lat].baseline: required with increaseAbove or decreaseBelow"],
        ),
        (
            "baseline with an absolute comparison",
            g(trigger(
                json!({"name": "t", "query": "up", "above": 1, "baseline": {"query": "up"}}),
            )),
            vec!["baseline: required with increaseAbove or decreaseBelow, and only with them"],
        ),
        (
            "interval not a duration",
            g(guard_spec_with(json!({"interval": "5 minutes"}))),
            vec![
                "spec.interval",
                "\"5 minutes\" is not a duration",
                "30s, 5m or 1h30m",
            ],
        ),
        (
            "interval below 1s",
            g(guard_spec_with(json!({"interval": "500ms"}))),
            vec!["spec.interval \"500ms\" is too short: the minimum is 1s"],
        ),
        (
            "negative for",
            g(trigger(
                json!({"name": "t", "query": "up", "above": 1, "for": "-5m"}),
            )),
            vec!["spec.triggers[0].for", "\"-5m\" is not a duration"],
        ),
        (
            "cooldown in days",
            g(guard_spec_with(json!({"rollback": {"cooldown": "1d"}}))),
            vec!["spec.rollback.cooldown", "\"1d\" is not a duration"],
        ),
        (
            "flagd without key",
            g(guard_spec_with(json!({"flags": {"format": "flagd"}}))),
            vec!["spec.flags.key is required when spec.flags.format is flagd"],
        ),
        (
            "no guarded flag",
            g(guard_spec_with(json!({"flags": {"guarded": []}}))),
            vec!["spec.flags.guarded", "at least 1 items"],
        ),
        (
            "trigger name not DNS",
            g(trigger(
                json!({"name": "Critical_Rate", "query": "up", "above": 1}),
            )),
            vec![
                "spec.triggers[0].name",
                "\"Critical_Rate\" is not a DNS-1123 label",
            ],
        ),
        (
            "ConfigMap name not DNS",
            g(guard_spec_with(
                json!({"flags": {"configMapRef": {"name": "Feature Flags"}}}),
            )),
            vec![
                "spec.flags.configMapRef.name",
                "\"Feature Flags\" is not a valid object name",
            ],
        ),
        (
            "duplicate trigger names",
            g(guard_spec_with(json!({"triggers": [
                {"name": "t", "query": "up", "above": 1}, {"name": "t", "query": "up", "below": 0}]}))),
            vec!["spec.triggers[1]", "Duplicate value"],
        ),
        (
            "unknown flag format",
            g(guard_spec_with(json!({"flags": {"format": "yaml"}}))),
            vec![
                "spec.flags.format",
                "Unsupported value: \"yaml\"",
                "\"plain\", \"flagd\"",
            ],
        ),
        (
            "slack without secret",
            g(guard_spec_with(
                json!({"notify": [{"name": "ops", "type": "slack"}]}),
            )),
            vec!["spec.notify[ops].secretRef: required for type slack"],
        ),
        (
            "pagerduty told about a moment that neither triggers nor resolves",
            g(guard_spec_with(json!({"notify": [
                {"name": "oncall", "type": "pagerduty", "secretRef": {"name": "pd"}, "on": ["started", "drift"]}]}))),
            vec![
                "spec.notify[oncall].on: a pagerduty receiver takes started, failed, unhealthy (they trigger the alert) and stable (it resolves it)",
            ],
        ),
        (
            "Prometheus address not a URL",
            g(guard_spec_with(
                json!({"prometheus": {"address": "prometheus:9090"}}),
            )),
            vec![
                "spec.prometheus.address",
                "\"prometheus:9090\" is not an http:// or https:// URL",
            ],
        ),
        (
            "no snapshots kept",
            g(guard_spec_with(
                json!({"rollback": {"snapshot": {"retain": 0}}}),
            )),
            vec![
                "spec.rollback.snapshot.retain",
                "greater than or equal to 1",
            ],
        ),
        (
            "unknown workload kind",
            g(guard_spec_with(
                json!({"health": {"workloads": [{"kind": "Pod", "name": "api"}]}}),
            )),
            vec![
                "spec.health.workloads[0].kind",
                "Unsupported value: \"Pod\"",
            ],
        ),
        (
            "unknown noData policy",
            g(trigger(
                json!({"name": "t", "query": "up", "above": 1, "noData": "zero"}),
            )),
            vec!["spec.triggers[0].noData", "Unsupported value: \"zero\""],
        ),
        (
            "query and alert on one trigger",
            g(trigger(
                json!({"name": "t", "query": "up", "above": 1, "alert": {"matchers": {"alertname": "X"}}}),
            )),
            vec!["spec.triggers[t]: set exactly one of query (with a comparison) and alert"],
        ),
        (
            "neither query nor alert",
            g(trigger(json!({"name": "t", "for": "1m"}))),
            vec!["spec.triggers[t]: set exactly one of query (with a comparison) and alert"],
        ),
        (
            "an alert trigger with a comparison",
            g(trigger(
                json!({"name": "t", "alert": {"matchers": {"alertname": "X"}}, "above": 1}),
            )),
            vec![
                "spec.triggers[t]: an alert trigger breaches while a matching alert fires; above, below, increaseAbove, decreaseBelow, baseline and noData belong to query triggers",
            ],
        ),
        (
            "an alert trigger with noData",
            g(trigger(
                json!({"name": "t", "alert": {"matchers": {"alertname": "X"}}, "noData": "breach"}),
            )),
            vec![
                "spec.triggers[t]: an alert trigger",
                "noData belong to query triggers",
            ],
        ),
        (
            "an alert trigger without matchers",
            g(trigger(json!({"name": "t", "alert": {"matchers": {}}}))),
            vec!["spec.triggers[0].alert.matchers", "at least 1 properties"],
        ),
        (
            "an alert matcher on a reserved label name",
            g(trigger(
                json!({"name": "t", "alert": {"matchers": {"__name__": "up"}}}),
            )),
            vec![
                "spec.triggers[0].alert.matchers",
                "must not start with \"__\" (reserved)",
            ],
        ),
        (
            "Alertmanager address not a URL",
            g(guard_spec_with(
                json!({"alertmanager": {"address": "alertmanager:9093"}}),
            )),
            vec![
                "spec.alertmanager.address",
                "\"alertmanager:9093\" is not an http:// or https:// URL",
            ],
        ),
        (
            "snapshotName on a rollback",
            r(json!({"guardRef": {"name": "g"}, "requestedBy": "a", "snapshotName": "g-snap-x"})),
            vec!["spec.snapshotName is only allowed with action: restore"],
        ),
        (
            "forceDisableAll on a restore",
            r(
                json!({"guardRef": {"name": "g"}, "requestedBy": "a", "action": "restore", "forceDisableAll": true}),
            ),
            vec!["spec.forceDisableAll is only allowed with action: rollback"],
        ),
        (
            "no requester",
            r(json!({"guardRef": {"name": "g"}})),
            vec!["spec.requestedBy", "Required value"],
        ),
        (
            "unknown mode",
            r(json!({"guardRef": {"name": "g"}, "requestedBy": "a", "mode": "fast"})),
            vec![
                "spec.mode",
                "Unsupported value: \"fast\"",
                "\"graceful\", \"immediate\"",
            ],
        ),
        (
            "guard name not DNS",
            r(json!({"guardRef": {"name": "Phase 4"}, "requestedBy": "a"})),
            vec![
                "spec.guardRef.name",
                "\"Phase 4\" is not a valid object name",
            ],
        ),
    ]
}

#[tokio::test]
async fn invalid_manifests_are_rejected_with_messages_naming_the_field() {
    let Some(cluster) =
        cluster("invalid_manifests_are_rejected_with_messages_naming_the_field").await
    else {
        return;
    };
    cluster.install_crds().await;
    let ns = cluster.namespace("invalid").await;
    let cases = invalid_manifests(&ns);
    assert!(cases.len() >= 15);
    let mut failures = Vec::new();
    for (what, manifest, words) in cases {
        match create(&cluster, &ns, manifest).await {
            Ok(_) => failures.push(format!("{what}: accepted")),
            Err(err) => {
                let message = api_message(err);
                if let Some(missing) = words.iter().find(|w| !message.contains(*w)) {
                    failures.push(format!("{what}: message lacks {missing:?}: {message}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn rollback_request_spec_is_immutable() {
    let Some(cluster) = cluster("rollback_request_spec_is_immutable").await else {
        return;
    };
    cluster.install_crds().await;
    let ns = cluster.namespace("immutable").await;
    let spec = json!({"guardRef": {"name": "g"}, "requestedBy": "alice", "reason": "incident"});
    create(&cluster, &ns, request_manifest(&ns, "r", spec))
        .await
        .unwrap();
    let api: Api<RollbackRequest> = Api::namespaced(cluster.client.clone(), &ns);
    let patch = json!({"spec": {"reason": "something else"}});
    let err = api
        .patch("r", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_err();
    assert!(api_message(err).contains("spec is immutable"));
    // Status stays writable: it is the operator's incident record.
    let status = json!({"status": {"message": "recorded"}});
    api.patch_status("r", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    assert_eq!(api.get("r").await.unwrap().spec.reason, "incident");
}

#[tokio::test]
async fn authorization_is_real_rbac() {
    let Some(cluster) = cluster("authorization_is_real_rbac").await else {
        return;
    };
    cluster.install_crds().await;
    let ns = cluster.namespace("rbac").await;
    let alice = cluster.user_client("alice").await;
    let ar = ApiResource::erase::<RollbackRequest>(&());
    let as_alice: Api<DynamicObject> = Api::namespaced_with(alice, &ns, &ar);
    let request: DynamicObject = serde_json::from_value(request_manifest(
        &ns,
        "by-alice",
        json!({"guardRef": {"name": "g"}, "requestedBy": "alice"}),
    ))
    .unwrap();

    match as_alice.create(&PostParams::default(), &request).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{}", status.message);
            assert!(
                status
                    .message
                    .contains("User \"alice\" cannot create resource \"rollbackrequests\""),
                "{}",
                status.message
            );
        }
        other => panic!("alice without RBAC must get 403, got {other:?}"),
    }

    let grant = format!(
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: request-rollbacks, namespace: {ns}}}
rules:
- apiGroups: [rollguard.dev]
  resources: [rollbackrequests]
  verbs: [create, get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: alice-requests-rollbacks, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: request-rollbacks}}
subjects: [{{kind: User, name: alice, apiGroup: rbac.authorization.k8s.io}}]
"#
    );
    let file = std::env::temp_dir().join(format!("rollguard-grant-{ns}.yaml"));
    std::fs::write(&file, grant).unwrap();
    let (ok, _, err) = cluster.kubectl(&["apply", "-f", file.to_str().unwrap()]);
    assert!(ok, "{err}");

    // RBAC is served from the API server's informer cache: allow it a moment to see the grant.
    wait_until(
        Duration::from_secs(10),
        "alice allowed after the grant",
        || {
            let as_alice = as_alice.clone();
            let request = request.clone();
            async move { as_alice.create(&PostParams::default(), &request).await.ok() }
        },
    )
    .await;
    // The grant is exactly create+get on RollbackRequests: guards stay out of reach.
    let guards: Api<DynamicObject> = Api::namespaced_with(
        cluster.user_client("alice").await,
        &ns,
        &ApiResource::erase::<RolloutGuard>(&()),
    );
    match guards.list(&Default::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403),
        other => panic!("alice may not list guards, got {other:?}"),
    }
}
