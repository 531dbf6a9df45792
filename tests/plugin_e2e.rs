//! `kubectl rollguard` against the real control plane: `rollback --watch` exits 0 on
//! success and non-zero on a failed request, and `requestedBy` is the user the API server
//! authenticated (SelfSubjectReview), not something the caller typed.

mod common;

use common::{Operator, cluster};
use kube::api::Api;
use rollguard::api::RollbackRequest;

fn plugin(kubeconfig: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-rollguard"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn rollback_watch_exit_codes_and_requested_by_from_the_api_server() {
    let Some(cluster) =
        cluster("rollback_watch_exit_codes_and_requested_by_from_the_api_server").await
    else {
        return;
    };
    cluster.install_crds().await;
    let ns = cluster.namespace("plugin").await;
    cluster.apply(&format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: ff, namespace: {ns}}}
data: {{a: "true", b: "true"}}
---
apiVersion: rollguard.dev/v1alpha1
kind: RolloutGuard
metadata: {{name: g, namespace: {ns}}}
spec:
  flags: {{configMapRef: {{name: ff}}, guarded: [a, b]}}
---
apiVersion: rollguard.dev/v1alpha1
kind: RolloutGuard
metadata: {{name: broken, namespace: {ns}}}
spec:
  flags: {{configMapRef: {{name: ff}}, guarded: [a, missing]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: rollback-operator, namespace: {ns}}}
rules:
- apiGroups: [rollguard.dev]
  resources: [rollbackrequests]
  verbs: [create, get, list, watch]
- apiGroups: [rollguard.dev]
  resources: [rolloutguards]
  verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: alice-rolls-back, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: rollback-operator}}
subjects: [{{kind: User, name: alice, apiGroup: rbac.authorization.k8s.io}}]
"#
    ));
    let _operator: Operator = cluster.start_operator(&ns, &[]);
    let alice = cluster.user_kubeconfig_dir.join("alice.kubeconfig");

    // RBAC grants reach the API server's authorizer through its cache: retry briefly.
    let mut attempt = (0, String::new(), String::new());
    for _ in 0..50 {
        attempt = plugin(
            &alice,
            &[
                "-n",
                &ns,
                "rollback",
                "g",
                "--reason",
                "bad deploy",
                "--immediate",
                "--watch",
            ],
        );
        if !attempt.2.contains("forbidden") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (code, out, err) = attempt;
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("(requestedBy: alice)")
            && out.contains("FlagsDisabled")
            && out.contains("Succeeded"),
        "{out}"
    );
    let name = out
        .split_whitespace()
        .next()
        .unwrap()
        .trim_start_matches("rollbackrequest.rollguard.dev/")
        .to_string();
    let request = Api::<RollbackRequest>::namespaced(cluster.client.clone(), &ns)
        .get(&name)
        .await
        .unwrap();
    assert_eq!(request.spec.requested_by, "alice");

    let (code, out, err) = plugin(
        &alice,
        &[
            "-n",
            &ns,
            "rollback",
            "broken",
            "--reason",
            "x",
            "--immediate",
            "--watch",
        ],
    );
    assert_eq!(
        code, 1,
        "a failed request exits 1\nstdout:\n{out}\nstderr:\n{err}"
    );
    assert!(
        err.contains("spec.flags.guarded: flag \"missing\" is not in ConfigMap \"ff\""),
        "{err}"
    );

    // Errors are one line naming the missing object.
    let (code, _, err) = plugin(&alice, &["-n", &ns, "rollback", "ghost", "--reason", "x"]);
    assert_eq!(code, 2);
    assert_eq!(
        err.trim(),
        format!("error: RolloutGuard \"ghost\" in namespace \"{ns}\" not found")
    );
}
