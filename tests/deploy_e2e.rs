//! The Helm chart against the real control plane: `helm lint`; the default manifests
//! (deploy/rollguard.yaml) apply with a server-side dry run and then for real, within the
//! restricted Pod Security profile; the operator authenticated as the chart's
//! ServiceAccount (a TokenRequest token) with only the chart's RBAC completes a manual and
//! an automatic rollback and is refused outside its role; the admission policy holds
//! `requestedBy` to the real user and `mode: immediate` to the `emergency` verb; a tenant
//! with the chart's `-author` and `-requester` roles cannot spend the operator's rights
//! (guards naming Secrets or ConfigMaps she may not use, address changes, restore,
//! emergency, `system:rollguard`, guards she holds no `rollback` on); `scope.mode:
//! namespaces` renders a Role per namespace.
//!
//! Needs helm (tests/cluster/build-tools.sh helm): without it, or without the control
//! plane, a test says so and returns, except under `CI=true`, where that is a failure.

mod common;

use common::tenancy::{
    apply_server_side as apply, forbidden, grant, helm_template as template, install_chart,
    service_account_kubeconfig,
};
use common::{cluster, unique_suffix, wait_until};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use rollguard::api::RollbackRequest;
use rollguard::api::request::RequestPhase;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Runs helm; returns (success, stdout, stderr).
fn run_helm(helm: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(helm)
        .args(args)
        .current_dir(common::repo())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn helm_lint_passes_and_values_shape_the_rbac() {
    let Some(helm) = common::helm() else { return };
    for sets in [
        vec![],
        vec!["scope.mode=namespaced", "scope.watchNamespace=shop"],
        vec![
            "serviceMonitor.enabled=true",
            "networkPolicy.enabled=true",
            "grafanaDashboard.enabled=true",
            "rbac.refreshPods=true",
        ],
    ] {
        let mut args = vec!["lint", "--strict", "charts/rollguard"];
        for set in &sets {
            args.extend(["--set", set]);
        }
        let (ok, out, err) = run_helm(&helm, &args);
        assert!(ok, "helm lint {sets:?}:\n{out}\n{err}");
    }
    // Pods only with refreshPods; ConfigMap create only for inApp receivers.
    let default = template(&helm, "rollguard", "rollguard-system", &[]);
    assert!(!default.contains("resources: [pods]"), "{default}");
    assert!(default.contains("verbs: [create]\n  # Snapshot Secrets"));
    let refresh = template(
        &helm,
        "rollguard",
        "rollguard-system",
        &["rbac.refreshPods=true"],
    );
    assert!(refresh.contains("resources: [pods]\n    verbs: [list, patch]"));
    let no_in_app = template(
        &helm,
        "rollguard",
        "rollguard-system",
        &["rbac.inAppNotifier=false"],
    );
    assert!(!no_in_app.contains("verbs: [create]\n  # Snapshot Secrets"));
    // Namespaced mode: Roles only in the watched namespace, and the operator told so.
    let namespaced = template(
        &helm,
        "rollguard",
        "rollguard-system",
        &["scope.mode=namespaced", "scope.watchNamespace=shop"],
    );
    assert!(
        !namespaced.contains("kind: ClusterRoleBinding\n"),
        "{namespaced}"
    );
    assert!(namespaced.contains("kind: Role\nmetadata:\n  name: rollguard\n  namespace: shop"));
    assert!(namespaced.contains("- --namespace=shop"));
    let (ok, _, err) = run_helm(
        &helm,
        &[
            "template",
            "x",
            "charts/rollguard",
            "--set",
            "scope.mode=namespaced",
        ],
    );
    assert!(
        !ok && err.contains("scope.watchNamespace is required"),
        "{err}"
    );
    // Secrets: read by name, and listed and watched (label-selected credential Secrets, the
    // cache guard evaluations read); never updated or patched.
    for rendered in [&default, &namespaced] {
        assert!(
            rendered
                .contains("resources: [secrets]\n    verbs: [get, list, watch, create, delete]\n"),
            "{rendered}"
        );
        for rule in rendered.split("resources: [secrets]\n    verbs: [").skip(1) {
            let verbs = rule.split(']').next().unwrap_or_default();
            assert!(
                !verbs.contains("patch") && !verbs.contains("update"),
                "{verbs}"
            );
        }
    }
}

/// `scope.mode: namespaces`: a Role and RoleBinding in each listed namespace and no
/// ClusterRole for the operator, `--namespace=a,b`, and the operator's own admission
/// policies refuse it outside those namespaces.
#[test]
fn helm_scope_namespaces_renders_a_role_per_namespace() {
    let Some(helm) = common::helm() else { return };
    let sets = ["scope.mode=namespaces", "scope.namespaces={shop,payments}"];
    let (ok, out, err) = run_helm(
        &helm,
        &[
            "lint",
            "--strict",
            "charts/rollguard",
            "--set",
            sets[0],
            "--set",
            sets[1],
        ],
    );
    assert!(ok, "helm lint {sets:?}:\n{out}\n{err}");
    let rendered = template(&helm, "rollguard", "rollguard-system", &sets);
    let docs: Vec<&str> = rendered.split("\n---\n").collect();
    for namespace in ["shop", "payments"] {
        for kind in ["Role", "RoleBinding"] {
            let header =
                format!("kind: {kind}\nmetadata:\n  name: rollguard\n  namespace: {namespace}\n");
            assert_eq!(
                docs.iter().filter(|d| d.contains(&header)).count(),
                1,
                "one {kind} in {namespace}:\n{rendered}"
            );
        }
    }
    let role = docs
        .iter()
        .find(|d| d.contains("kind: Role\nmetadata:\n  name: rollguard\n  namespace: shop\n"))
        .unwrap();
    assert!(
        role.contains("resources: [secrets]\n    verbs: [get, list, watch, create, delete]\n"),
        "{role}"
    );
    assert!(
        role.contains("resources: [configmaps]\n    verbs: [get, list, watch, patch]\n"),
        "{role}"
    );
    // The operator's ClusterRole and ClusterRoleBinding are gone; the user roles stay.
    assert!(
        !rendered.contains("kind: ClusterRoleBinding\n"),
        "{rendered}"
    );
    assert!(!rendered.contains("kind: ClusterRole\nmetadata:\n  name: rollguard\n"));
    for role in ["author", "requester", "restorer", "emergency"] {
        assert!(
            rendered.contains(&format!(
                "kind: ClusterRole\nmetadata:\n  name: rollguard-{role}\n"
            )),
            "{role}"
        );
    }
    assert!(
        rendered.contains("- --namespace=shop,payments\n"),
        "{rendered}"
    );
    for policy in [
        "rollguard-snapshot-secrets",
        "rollguard-operator-configmaps",
    ] {
        let doc = docs
            .iter()
            .find(|d| {
                d.contains("kind: ValidatingAdmissionPolicy\n")
                    && d.contains(&format!("  name: {policy}\n"))
            })
            .unwrap_or_else(|| panic!("no policy {policy}"));
        assert!(
            doc.contains(r#"expression: "request.namespace in ['shop','payments']""#),
            "{doc}"
        );
    }
    // Cluster mode confines nothing by namespace, and scope.namespaces alone is a mistake.
    let cluster = template(&helm, "rollguard", "rollguard-system", &[]);
    assert!(!cluster.contains("request.namespace in"));
    for (sets, expected) in [
        (
            vec!["scope.mode=namespaces"],
            "scope.namespaces must list at least one namespace",
        ),
        (
            vec!["scope.namespaces={shop}"],
            "scope.namespaces is used only with scope.mode namespaces",
        ),
        (
            vec!["scope.mode=everywhere"],
            "scope.mode must be cluster, namespaced or namespaces",
        ),
    ] {
        let mut args = vec!["template", "x", "charts/rollguard"];
        for set in &sets {
            args.extend(["--set", set]);
        }
        let (ok, _, err) = run_helm(&helm, &args);
        assert!(!ok && err.contains(expected), "{sets:?}: {err}");
    }
}

#[tokio::test]
async fn default_manifests_apply_with_a_server_side_dry_run_then_for_real() {
    let Some(helm) = common::helm() else { return };
    let Some(cluster) =
        cluster("default_manifests_apply_with_a_server_side_dry_run_then_for_real").await
    else {
        return;
    };
    let _ = helm;
    let manifests = std::fs::read_to_string(common::repo().join("deploy/rollguard.yaml")).unwrap();
    let docs: Vec<&str> = manifests.split("\n---\n").collect();
    // The Namespace must exist before a dry run can admit the objects inside it.
    let namespace = docs.iter().find(|d| d.contains("kind: Namespace")).unwrap();
    let (ok, out, err) = apply(&cluster, namespace, &[]);
    assert!(ok, "{out}\n{err}");

    let (ok, out, err) = apply(&cluster, &manifests, &["--dry-run=server"]);
    assert!(ok, "server-side dry run:\n{out}\n{err}");
    assert!(
        out.contains("deployment.apps/rollguard serverside-applied (server dry run)"),
        "{out}"
    );
    assert!(
        !err.contains("PodSecurity"),
        "the Deployment breaks the restricted profile:\n{err}"
    );
    // The check above can fail: a pod template outside the profile is warned about.
    let (_, _, warned) = apply(
        &cluster,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: unrestricted, namespace: rollguard-system}\nspec:\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec: {containers: [{name: c, image: x}]}\n",
        &["--dry-run=server"],
    );
    assert!(warned.contains("PodSecurity"), "{warned}");

    // For real — all but the binding of the RollbackRequest policy, which would hold every
    // namespace of this shared control plane to it (other tests create requests as the
    // admin on behalf of others). The next test binds it for real, to its own namespace.
    // The same holds for the RolloutGuard policies' bindings.
    let real: Vec<&str> = docs
        .iter()
        .copied()
        .filter(|d| {
            !(d.contains("kind: ValidatingAdmissionPolicyBinding")
                && (d.contains("name: rollguard-requests\n")
                    || d.contains("name: rollguard-guards")))
        })
        .collect();
    assert_eq!(real.len(), docs.len() - 4);
    let (ok, out, err) = apply(&cluster, &real.join("\n---\n"), &[]);
    assert!(ok, "apply:\n{out}\n{err}");
    assert!(!err.contains("PodSecurity"), "{err}");
    for object in [
        "deployment/rollguard",
        "serviceaccount/rollguard",
        "service/rollguard-metrics",
        "role/rollguard-leader-election",
        "poddisruptionbudget/rollguard",
    ] {
        let (ok, _, err) = cluster.kubectl(&["get", "-n", "rollguard-system", object]);
        assert!(ok, "{object}: {err}");
    }
    for object in [
        "clusterrole/rollguard",
        "clusterrolebinding/rollguard",
        "validatingadmissionpolicy/rollguard-requests",
        "validatingadmissionpolicy/rollguard-guards",
        "validatingadmissionpolicy/rollguard-guards-snapshot",
        "validatingadmissionpolicy/rollguard-guards-snapshot-2",
        "validatingadmissionpolicy/rollguard-snapshot-secrets",
        "validatingadmissionpolicybinding/rollguard-snapshot-secrets",
        "validatingadmissionpolicy/rollguard-operator-configmaps",
        "validatingadmissionpolicybinding/rollguard-operator-configmaps",
    ] {
        let (ok, _, err) = cluster.kubectl(&["get", object]);
        assert!(ok, "{object}: {err}");
    }
}

fn request(name: &str, guard: &str, by: &str, extra: &str) -> RollbackRequest {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "rollguard.dev/v1alpha1",
        "kind": "RollbackRequest",
        "metadata": {"name": name},
        "spec": serde_json::from_str::<serde_json::Value>(&format!(
            r#"{{"guardRef": {{"name": "{guard}"}}, "requestedBy": "{by}", "reason": "admission test", "dryRun": true {extra}}}"#
        )).unwrap(),
    }))
    .unwrap()
}

#[tokio::test]
async fn the_operator_with_only_the_charts_rbac_rolls_back_and_the_policy_holds_users_to_their_name()
 {
    let Some(helm) = common::helm() else { return };
    let Some(cluster) = cluster(
        "the_operator_with_only_the_charts_rbac_rolls_back_and_the_policy_holds_users_to_their_name",
    )
    .await
    else {
        return;
    };
    cluster.install_crds().await;
    let system = cluster.namespace("rg-sys").await;
    let app = cluster.namespace("rg-app").await;
    let other = cluster.namespace("rg-other").await;
    let (ok, _, err) = cluster.kubectl(&[
        "label",
        "namespace",
        &system,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    ]);
    assert!(ok, "{err}");

    // The chart, namespaced to `app`, its RollbackRequest policy bound to `app` only.
    let watch = format!("scope.watchNamespace={app}");
    let chart = install_chart(
        &cluster,
        &helm,
        &system,
        &[&app],
        &["scope.mode=namespaced", &watch, "rbac.userRoles=true"],
    );
    let (fullname, err) = (chart.fullname, chart.warnings);
    assert!(!err.contains("PodSecurity"), "{err}");

    // Its ServiceAccount's token, from the TokenRequest API.
    let sa_kubeconfig = service_account_kubeconfig(&cluster, &system, &fullname);
    let sa = common::client_for(&sa_kubeconfig).await;

    cluster.apply(&format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: ff1, namespace: {app}, labels: {{rollguard.dev/flags: "true"}}}}
data: {{a: "true"}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: ff2, namespace: {app}, labels: {{rollguard.dev/flags: "true"}}}}
data: {{b: "true"}}
---
apiVersion: v1
kind: Secret
metadata: {{name: app-credentials, namespace: {app}}}
stringData: {{password: hunter2}}
---
apiVersion: v1
kind: Secret
metadata: {{name: elsewhere, namespace: {other}}}
stringData: {{password: hunter2}}
---
apiVersion: rollguard.dev/v1alpha1
kind: RolloutGuard
metadata: {{name: g1, namespace: {app}}}
spec:
  flags: {{configMapRef: {{name: ff1}}, guarded: [a], refreshPods: true}}
  notify: [{{name: board, type: inApp}}]
"#
    ));
    let kubeconfig = sa_kubeconfig.to_str().unwrap().to_string();
    let operator = cluster.start_operator_with(
        &app,
        &[
            ("POD_NAMESPACE", system.as_str()),
            ("POD_NAME", "sa-operator"),
        ],
        &[
            "--kubeconfig",
            &kubeconfig,
            "--lease-name",
            &fullname,
            "--lease-duration",
            "5s",
        ],
    );
    operator.wait_ready().await;

    // A manual rollback, asked by the admin in its own name.
    let requests: Api<RollbackRequest> = Api::namespaced(cluster.client.clone(), &app);
    cluster.apply(&format!(
        "apiVersion: rollguard.dev/v1alpha1\nkind: RollbackRequest\nmetadata: {{name: manual, namespace: {app}}}\nspec: {{guardRef: {{name: g1}}, requestedBy: admin, reason: deploy test}}\n"
    ));
    let done = common::finished(&requests, "manual").await;
    let status = done.status.unwrap();
    assert_eq!(
        status.phase,
        Some(RequestPhase::Succeeded),
        "{status:#?}\n{}",
        operator.log_text()
    );
    let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &app);
    assert_eq!(
        config_maps.get("ff1").await.unwrap().data.unwrap()["a"],
        "false"
    );
    // refreshPods on a guard, but the chart installed without rbac.refreshPods: the
    // rollback stands, and the request says why mounted files lag.
    let refresh = status
        .timeline
        .iter()
        .find(|t| t.step == "PodRefreshFailed")
        .unwrap_or_else(|| panic!("no PodRefreshFailed in {:#?}", status.timeline));
    assert!(
        refresh.message.contains("forbidden") && refresh.message.contains("rbac.refreshPods=true"),
        "{}",
        refresh.message
    );
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &app);
    let snapshots = secrets
        .list(&ListParams::default().labels("rollguard.dev/request=manual"))
        .await
        .unwrap()
        .items;
    assert_eq!(snapshots.len(), 1);
    // inApp: the operator created rollguard-status.
    wait_until(
        Duration::from_secs(10),
        "ConfigMap rollguard-status",
        || {
            let config_maps = config_maps.clone();
            async move { config_maps.get_opt("rollguard-status").await.ok().flatten() }
        },
    )
    .await;

    // An automatic rollback: the operator creates the request as system:rollguard, which the
    // policy allows its ServiceAccount only. The trigger's series, served on loopback for
    // Prometheus, breaches until the rollback has happened (verification needs it quiet).
    let errors = Arc::new(AtomicBool::new(true));
    let tag = unique_suffix();
    let (served, label) = (errors.clone(), tag.clone());
    let exporter = common::serve(axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let v = u8::from(served.load(Ordering::SeqCst));
            let text = format!("rollguard_deploy_test_errors{{test=\"{label}\"}} {v}\n");
            async move { text }
        }),
    ))
    .await;
    let sd_file = cluster.prom_sd_dir.join(format!("deploy-{tag}.json"));
    std::fs::write(
        &sd_file,
        serde_json::json!([{"targets": [exporter.to_string()], "labels": {"test": tag}}])
            .to_string(),
    )
    .unwrap();
    let query = format!("rollguard_deploy_test_errors{{test=\\\"{tag}\\\"}}");
    cluster.apply(&format!(
        r#"
apiVersion: rollguard.dev/v1alpha1
kind: RolloutGuard
metadata: {{name: g2, namespace: {app}}}
spec:
  interval: 1s
  flags: {{configMapRef: {{name: ff2}}, guarded: [b]}}
  triggers: [{{name: errors, query: "{query}", above: 0.5, for: 0s}}]
  rollback: {{mode: automatic}}
"#
    ));
    let automatic = common::automatic_request(&requests, "g2", Duration::from_secs(30)).await;
    assert_eq!(automatic.spec.requested_by, "system:rollguard");
    errors.store(false, Ordering::SeqCst);
    let name = automatic.metadata.name.unwrap();
    let done = common::finished(&requests, &name).await;
    assert_eq!(
        done.status.as_ref().unwrap().phase,
        Some(RequestPhase::Succeeded),
        "{:#?}",
        done.status
    );
    assert_eq!(
        config_maps.get("ff2").await.unwrap().data.unwrap()["b"],
        "false"
    );
    let log = operator.log_text();
    assert!(
        !log.contains("forbidden"),
        "the operator was refused something it needs:\n{log}"
    );

    // Outside its role: a Secret of a namespace it does not watch, writing a Secret that is
    // not a snapshot (RBAC has no update/patch), deleting one (the admission policy), pods.
    let err = Api::<Secret>::namespaced(sa.clone(), &other)
        .get("elsewhere")
        .await
        .unwrap_err();
    assert!(forbidden(&err).is_some(), "{err}");
    let sa_secrets: Api<Secret> = Api::namespaced(sa.clone(), &app);
    let err = sa_secrets
        .patch(
            "app-credentials",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"stringData": {"password": "x"}})),
        )
        .await
        .unwrap_err();
    assert!(forbidden(&err).is_some(), "{err}");
    let err = sa_secrets
        .delete("app-credentials", &DeleteParams::default())
        .await
        .unwrap_err();
    let message = forbidden(&err).unwrap_or_else(|| panic!("{err}"));
    assert!(
        message.contains("writes and deletes only its snapshot Secrets"),
        "{message}"
    );
    let err = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(sa.clone(), &app)
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert!(forbidden(&err).is_some(), "pods without refreshPods: {err}");
    let err = Api::<ConfigMap>::namespaced(sa.clone(), &other)
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert!(forbidden(&err).is_some(), "{err}");

    // The admission policy, as alice with the chart's requester role in `app`.
    let (ok, _, err) = cluster.kubectl(&[
        "create",
        "rolebinding",
        "alice-requester",
        "-n",
        &app,
        &format!("--clusterrole={fullname}-requester"),
        "--user=alice",
    ]);
    assert!(ok, "{err}");
    let alice: Api<RollbackRequest> = Api::namespaced(cluster.user_client("alice").await, &app);
    let pp = PostParams::default();
    // RBAC bindings reach the authorizer within moments.
    let err = wait_until(
        Duration::from_secs(10),
        "alice's request judged by the policy",
        || {
            let alice = alice.clone();
            async move {
                let e = alice
                    .create(&PostParams::default(), &request("as-bob", "g1", "bob", ""))
                    .await
                    .unwrap_err();
                forbidden(&e).filter(|m| m.contains("requestedBy"))
            }
        },
    )
    .await;
    assert!(
        err.contains(r#"spec.requestedBy must be the user who creates the request: you are "alice" but spec.requestedBy is "bob""#),
        "{err}"
    );
    alice
        .create(&pp, &request("as-alice", "g1", "alice", ""))
        .await
        .expect("requestedBy: alice is accepted");
    let err = alice
        .create(
            &pp,
            &request("urgent", "g1", "alice", r#", "mode": "immediate""#),
        )
        .await
        .unwrap_err();
    let message = forbidden(&err).unwrap_or_else(|| panic!("{err}"));
    assert!(
        message.contains(r#"needs the RBAC verb "emergency" on rolloutguards "g1""#),
        "{message}"
    );
    // Granted `emergency` on g1 only.
    grant(
        &cluster,
        &app,
        "alice",
        "emergency-g1",
        r#"{apiGroups: [rollguard.dev], resources: [rolloutguards], resourceNames: [g1], verbs: [emergency]}"#,
    );
    wait_until(
        Duration::from_secs(10),
        "alice's immediate request on g1 accepted",
        || {
            let alice = alice.clone();
            async move {
                alice
                    .create(
                        &PostParams::default(),
                        &request("urgent", "g1", "alice", r#", "mode": "immediate""#),
                    )
                    .await
                    .ok()
            }
        },
    )
    .await;
    let err = alice
        .create(
            &pp,
            &request("urgent-g2", "g2", "alice", r#", "mode": "immediate""#),
        )
        .await
        .unwrap_err();
    assert!(
        forbidden(&err).is_some_and(|m| m.contains(r#"rolloutguards "g2""#)),
        "emergency on g1 is not emergency on g2: {err}"
    );
    let _ = std::fs::remove_file(sa_kubeconfig);
    let _ = std::fs::remove_file(sd_file);
}

fn guards_api(client: kube::Client, namespace: &str) -> Api<kube::api::DynamicObject> {
    let resource = kube::api::ApiResource {
        group: "rollguard.dev".into(),
        version: "v1alpha1".into(),
        api_version: "rollguard.dev/v1alpha1".into(),
        kind: "RolloutGuard".into(),
        plural: "rolloutguards".into(),
    };
    Api::namespaced_with(client, namespace, &resource)
}

fn guard(name: &str, spec: serde_json::Value) -> kube::api::DynamicObject {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "rollguard.dev/v1alpha1",
        "kind": "RolloutGuard",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

/// The threat of SPEC §5: a tenant who may edit guards and ask for rollbacks, but not read
/// Secrets or patch ConfigMaps, gets none of the operator's rights through rollguard. As
/// alice with exactly the chart's `-author` and `-requester` roles in her namespace, the
/// API server's own admission answers (server-side dry runs, no operator needed): guards
/// naming a Secret she cannot get or a flags ConfigMap she cannot patch are refused, and so
/// is pointing an existing guard's Prometheus credential elsewhere, while an unrelated edit
/// of that guard is admitted; emergency, restore and system:rollguard requests are refused;
/// and a Role naming one guard delegates `rollback` on that guard only (bob).
#[tokio::test]
async fn a_tenant_cannot_spend_the_operators_rights_through_guards_or_requests() {
    let Some(helm) = common::helm() else { return };
    let Some(cluster) =
        cluster("a_tenant_cannot_spend_the_operators_rights_through_guards_or_requests").await
    else {
        return;
    };
    cluster.install_crds().await;
    let system = cluster.namespace("rg-tsys").await;
    let app = cluster.namespace("rg-tenant").await;
    // The chart, its user-facing policies bound to `app` only.
    let watch = format!("scope.watchNamespace={app}");
    let fullname = install_chart(
        &cluster,
        &helm,
        &system,
        &[&app],
        &["scope.mode=namespaced", &watch],
    )
    .fullname;

    // The admin's objects: a flags ConfigMap, two Secrets, guard g1 with a Prometheus
    // credential, guard g2 without.
    cluster.apply(&format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: ff, namespace: {app}, labels: {{rollguard.dev/flags: "true"}}}}
data: {{a: "true"}}
---
apiVersion: v1
kind: Secret
metadata: {{name: prom-auth, namespace: {app}, labels: {{rollguard.dev/credentials: "true"}}}}
stringData: {{token: t0ken}}
---
apiVersion: v1
kind: Secret
metadata: {{name: db-creds, namespace: {app}}}
stringData: {{password: hunter2}}
---
apiVersion: rollguard.dev/v1alpha1
kind: RolloutGuard
metadata: {{name: g1, namespace: {app}}}
spec:
  flags: {{configMapRef: {{name: ff}}, guarded: [a]}}
  prometheus: {{address: "https://prometheus.monitoring:9090", authSecretRef: {{name: prom-auth}}}}
---
apiVersion: rollguard.dev/v1alpha1
kind: RolloutGuard
metadata: {{name: g2, namespace: {app}}}
spec:
  flags: {{configMapRef: {{name: ff}}, guarded: [a]}}
"#
    ));
    for role in ["author", "requester"] {
        let (ok, _, err) = cluster.kubectl(&[
            "create",
            "rolebinding",
            &format!("alice-{role}"),
            "-n",
            &app,
            &format!("--clusterrole={fullname}-{role}"),
            "--user=alice",
        ]);
        assert!(ok, "{err}");
    }
    let alice = cluster.user_client("alice").await;
    let alice_guards = guards_api(alice.clone(), &app);
    let alice_requests: Api<RollbackRequest> = Api::namespaced(alice.clone(), &app);
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let dry_patch = PatchParams {
        dry_run: true,
        ..Default::default()
    };
    let refused = |e: kube::Error| forbidden(&e).unwrap_or_else(|| panic!("not a 403: {e}"));

    // A guard whose receiver Secret she cannot read. The RoleBindings and the policies take
    // effect within moments: until then RBAC refuses her, or nothing does.
    let notify_db = guard(
        "mine",
        serde_json::json!({
            "flags": {"configMapRef": {"name": "ff"}, "guarded": ["a"]},
            "notify": [{"name": "ops", "type": "slack", "secretRef": {"name": "db-creds"}}],
        }),
    );
    let message = wait_until(
        Duration::from_secs(10),
        "alice's guard judged by the policy",
        || {
            let (api, g, dry) = (alice_guards.clone(), notify_db.clone(), dry.clone());
            async move {
                // Admitted (a dry run: nothing stored) until the API server has loaded the
                // policy and its binding.
                let e = api.create(&dry, &g).await.err()?;
                forbidden(&e).filter(|m| m.contains("ValidatingAdmissionPolicy"))
            }
        },
    )
    .await;
    assert!(
        message.contains(&format!(
            r#"spec.notify[ops].secretRef.name: you ("alice") may not get Secret "db-creds" in namespace "{app}"; rollguard would read it for you"#
        )),
        "{message}"
    );
    // The same Secret as the Prometheus credential.
    let err = alice_guards
        .create(
            &dry,
            &guard(
                "mine",
                serde_json::json!({
                    "flags": {"configMapRef": {"name": "ff"}, "guarded": ["a"]},
                    "prometheus": {"authSecretRef": {"name": "db-creds"}},
                }),
            ),
        )
        .await
        .unwrap_err();
    let message = refused(err);
    assert!(
        message.contains(
            r#"spec.prometheus.authSecretRef.name: you ("alice") may not get Secret "db-creds""#
        ),
        "{message}"
    );
    // No Secret at all, but a flags ConfigMap she cannot patch.
    let plain = guard(
        "mine",
        serde_json::json!({"flags": {"configMapRef": {"name": "ff"}, "guarded": ["a"]}}),
    );
    let message = refused(alice_guards.create(&dry, &plain).await.unwrap_err());
    assert!(
        message.contains(&format!(
            r#"spec.flags.configMapRef.name: you ("alice") may not patch ConfigMap "ff" in namespace "{app}"; rollguard would change it for you"#
        )),
        "{message}"
    );

    // g1, the admin's guard: pointing its credential at another address needs get on
    // prom-auth (the address decides where the token goes) ...
    let err = alice_guards
        .patch(
            "g1",
            &dry_patch,
            &Patch::Merge(serde_json::json!({"spec": {"prometheus": {"address": "https://collector.example:9090"}}})),
        )
        .await
        .unwrap_err();
    let message = refused(err);
    assert!(
        message.contains(&format!(
            r#"spec.prometheus.authSecretRef.name: you ("alice") may not get Secret "prom-auth" in namespace "{app}""#
        )),
        "{message}"
    );
    // ... and so does a new hook URL; an edit of an unrelated field is not re-judged, though
    // she still may not get prom-auth or patch ff.
    let err = alice_guards
        .patch(
            "g1",
            &dry_patch,
            &Patch::Merge(serde_json::json!({"spec": {"rollback": {"hooks": {"preRollback": [{"url": "https://elsewhere.example/drain"}]}}}})),
        )
        .await
        .unwrap_err();
    assert!(refused(err).contains(r#"Secret "prom-auth""#));
    alice_guards
        .patch(
            "g1",
            &dry_patch,
            &Patch::Merge(serde_json::json!({"spec": {"interval": "30s"}})),
        )
        .await
        .expect("alice may change spec.interval of g1: no reference or address changed");

    // The same guard passes once she holds the rights (patch on ff only, by name).
    grant(
        &cluster,
        &app,
        "alice",
        "patch-ff",
        r#"{apiGroups: [""], resources: [configmaps], resourceNames: [ff], verbs: [patch]}"#,
    );
    wait_until(
        Duration::from_secs(10),
        "alice's guard admitted once she may patch ff",
        || {
            let (api, g, dry) = (alice_guards.clone(), plain.clone(), dry.clone());
            async move { api.create(&dry, &g).await.ok() }
        },
    )
    .await;

    // A snapshot.include Secret she cannot get (the flags ConfigMap is now hers to patch,
    // so this is the only refusal).
    let err = alice_guards
        .create(
            &dry,
            &guard(
                "mine",
                serde_json::json!({
                    "flags": {"configMapRef": {"name": "ff"}, "guarded": ["a"]},
                    "rollback": {"snapshot": {"include": [{"kind": "Secret", "name": "db-creds"}]}},
                }),
            ),
        )
        .await
        .unwrap_err();
    let message = refused(err);
    assert!(
        message.contains(&format!(
            r#"spec.rollback.snapshot.include[0].name: you ("alice") may not get Secret "db-creds" in namespace "{app}"; rollguard would read it for you"#
        )),
        "{message}"
    );
    // Requests: the requester role has `rollback` on every guard here, nothing more.
    alice_requests
        .create(&dry, &request("plain", "g1", "alice", ""))
        .await
        .expect("a graceful rollback of g1 asked by alice in her own name");
    let message = refused(
        alice_requests
            .create(
                &dry,
                &request("all-off", "g1", "alice", r#", "forceDisableAll": true"#),
            )
            .await
            .unwrap_err(),
    );
    assert!(
        message.contains(r#"spec.forceDisableAll: true turns off every boolean flag"#)
            && message.contains(&format!(
                r#"needs the RBAC verb "emergency" on rolloutguards "g1" in namespace "{app}", which "alice" does not have"#
            )),
        "{message}"
    );
    let message = refused(
        alice_requests
            .create(
                &dry,
                &request("undo", "g1", "alice", r#", "action": "restore""#),
            )
            .await
            .unwrap_err(),
    );
    assert!(
        message.contains(&format!(
            r#"spec.action: restore needs the RBAC verb "restore" on rolloutguards "g1" in namespace "{app}", which "alice" does not have"#
        )),
        "{message}"
    );
    let message = refused(
        alice_requests
            .create(&dry, &request("as-operator", "g1", "system:rollguard", ""))
            .await
            .unwrap_err(),
    );
    assert!(
        message.contains(
            r#"spec.requestedBy: "system:rollguard" is reserved for the rollguard operator"#
        ) && message.contains(r#"you are "alice""#),
        "{message}"
    );
    let message = refused(
        alice_requests
            .create(
                &dry,
                &request("as-system", "g1", "system:kube-scheduler", ""),
            )
            .await
            .unwrap_err(),
    );
    assert!(
        message.contains(r#"spec.requestedBy: "system:kube-scheduler" is refused"#),
        "{message}"
    );

    // bob: create requests, and `rollback` on g1 only (a Role naming it in resourceNames).
    cluster.apply(&format!(
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: rollback-g1, namespace: {app}}}
rules:
  - {{apiGroups: [rollguard.dev], resources: [rollbackrequests], verbs: [create]}}
  - {{apiGroups: [rollguard.dev], resources: [rolloutguards], resourceNames: [g1], verbs: [rollback]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: bob-rollback-g1, namespace: {app}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: rollback-g1}}
subjects: [{{kind: User, name: bob, apiGroup: rbac.authorization.k8s.io}}]
"#
    ));
    let bob: Api<RollbackRequest> = Api::namespaced(cluster.user_client("bob").await, &app);
    wait_until(
        Duration::from_secs(10),
        "bob's request for g1 admitted",
        || {
            let (bob, dry) = (bob.clone(), dry.clone());
            async move {
                bob.create(&dry, &request("bob-g1", "g1", "bob", ""))
                    .await
                    .ok()
            }
        },
    )
    .await;
    let message = refused(
        bob.create(&dry, &request("bob-g2", "g2", "bob", ""))
            .await
            .unwrap_err(),
    );
    assert!(
        message.contains(&format!(
            r#"spec.guardRef.name: a RollbackRequest for guard "g2" needs the RBAC verb "rollback" on rolloutguards "g2" in namespace "{app}", which "bob" does not have"#
        )),
        "rollback on g1 is not rollback on g2: {message}"
    );
}
