//! The Helm chart against the real control plane: `helm lint`; the default manifests
//! (deploy/rollguard.yaml) apply with a server-side dry run and then for real, within the
//! restricted Pod Security profile; the operator authenticated as the chart's
//! ServiceAccount (a TokenRequest token) with only the chart's RBAC completes a manual and
//! an automatic rollback and is refused outside its role; the admission policy holds
//! `requestedBy` to the real user and `mode: immediate` to the `emergency` verb.
//!
//! Needs helm (tests/cluster/build-tools.sh helm): without it, or without the control
//! plane, a test says so and returns, except under `CI=true`, where that is a failure.

mod common;

use common::{Cluster, cluster, unique_suffix, wait_until};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use rollguard::api::RollbackRequest;
use rollguard::api::request::RequestPhase;
use std::path::{Path, PathBuf};
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

fn template(helm: &Path, release: &str, namespace: &str, sets: &[&str]) -> String {
    let mut args = vec![
        "template",
        release,
        "charts/rollguard",
        "--namespace",
        namespace,
    ];
    for set in sets {
        args.extend(["--set", set]);
    }
    let (ok, out, err) = run_helm(helm, &args);
    assert!(ok, "helm template {sets:?}:\n{err}");
    out
}

fn write_temp(text: &str) -> PathBuf {
    let file = std::env::temp_dir().join(format!("rollguard-deploy-{}.yaml", unique_suffix()));
    std::fs::write(&file, text).unwrap();
    file
}

/// `kubectl apply --server-side` of a manifest; returns (success, stdout, stderr).
fn apply(cluster: &Cluster, yaml: &str, extra: &[&str]) -> (bool, String, String) {
    let file = write_temp(yaml);
    let mut args = vec![
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        file.to_str().unwrap(),
    ];
    args.extend(extra);
    let result = cluster.kubectl(&args);
    let _ = std::fs::remove_file(file);
    result
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
    let real: Vec<&str> = docs
        .iter()
        .copied()
        .filter(|d| {
            !(d.contains("kind: ValidatingAdmissionPolicyBinding")
                && d.contains("name: rollguard-requests"))
        })
        .collect();
    assert_eq!(real.len(), docs.len() - 1);
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
        "validatingadmissionpolicy/rollguard-snapshot-secrets",
        "validatingadmissionpolicybinding/rollguard-snapshot-secrets",
    ] {
        let (ok, _, err) = cluster.kubectl(&["get", object]);
        assert!(ok, "{object}: {err}");
    }
}

/// A kubeconfig that authenticates with a bearer token against the local API server.
fn token_kubeconfig(cluster: &Cluster, token: &str) -> PathBuf {
    let admin = std::fs::read_to_string(&cluster.kubeconfig).unwrap();
    let field = |key: &str| {
        admin
            .lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .unwrap()
            .trim()
            .to_string()
    };
    let (server, ca) = (field("server:"), field("certificate-authority:"));
    let path = std::env::temp_dir().join(format!("rollguard-sa-{}.kubeconfig", unique_suffix()));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"{server}\", certificate-authority: \"{ca}\"}}\nusers:\n- name: sa\n  user: {{token: \"{token}\"}}\ncontexts:\n- name: sa\n  context: {{cluster: c, user: sa}}\ncurrent-context: sa\n"
        ),
    )
    .unwrap();
    path
}

fn forbidden(e: &kube::Error) -> Option<String> {
    match e {
        kube::Error::Api(s) if s.code == 403 => Some(s.message.clone()),
        _ => None,
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
    let tag = unique_suffix();
    let (ok, _, err) = cluster.kubectl(&[
        "label",
        "namespace",
        &app,
        &format!("rollguard.dev/test-policy={tag}"),
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = cluster.kubectl(&[
        "label",
        "namespace",
        &system,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    ]);
    assert!(ok, "{err}");

    // The chart, namespaced to `app`, its RollbackRequest policy bound to `app` only.
    let release = format!("t{tag}");
    let fullname = format!("{release}-rollguard");
    let selector =
        format!("admissionPolicy.namespaceSelector.matchLabels.rollguard\\.dev/test-policy={tag}");
    let watch = format!("scope.watchNamespace={app}");
    let manifests = template(
        &helm,
        &release,
        &system,
        &[
            "scope.mode=namespaced",
            &watch,
            &selector,
            "rbac.userRoles=true",
        ],
    );
    let (ok, out, err) = apply(&cluster, &manifests, &[]);
    assert!(ok, "apply the chart:\n{out}\n{err}");
    assert!(!err.contains("PodSecurity"), "{err}");

    // Its ServiceAccount's token, from the TokenRequest API.
    let (ok, token, err) = cluster.kubectl(&[
        "create",
        "token",
        &fullname,
        "-n",
        &system,
        "--duration",
        "1h",
    ]);
    assert!(ok, "kubectl create token: {err}");
    let sa_kubeconfig = token_kubeconfig(&cluster, token.trim());
    let sa = common::client_for(&sa_kubeconfig).await;

    cluster.apply(&format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: ff1, namespace: {app}}}
data: {{a: "true"}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: ff2, namespace: {app}}}
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
    let ready = format!("{}/readyz", operator.metrics_url);
    wait_until(Duration::from_secs(30), "the operator ready", || {
        let url = ready.clone();
        async move {
            let r = reqwest::get(&url).await.ok()?;
            (r.status().as_u16() == 200).then_some(())
        }
    })
    .await;

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
    let automatic = wait_until(
        Duration::from_secs(30),
        "an automatic rollback of g2",
        || {
            let requests = requests.clone();
            async move {
                requests
                    .list(&ListParams::default().labels("rollguard.dev/guard=g2"))
                    .await
                    .ok()?
                    .items
                    .into_iter()
                    .next()
            }
        },
    )
    .await;
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
    cluster.apply(&format!(
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: emergency-g1, namespace: {app}}}
rules: [{{apiGroups: [rollguard.dev], resources: [rolloutguards], resourceNames: [g1], verbs: [emergency]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: alice-emergency-g1, namespace: {app}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: emergency-g1}}
subjects: [{{kind: User, name: alice, apiGroup: rbac.authorization.k8s.io}}]
"#
    ));
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
