//! A reconcile the API server refuses is visible where users look: a Warning Event on the
//! object, whose reason names the kind of error, so `kubectl describe` shows it (not only
//! the operator's log). The operator runs as a ServiceAccount that may read guards but not
//! write their status: every evaluation's status write is refused with 403.

mod common;

use common::tenancy::service_account_kubeconfig;
use std::time::Duration;

#[tokio::test]
async fn a_status_write_the_api_server_refuses_is_a_warning_event_on_the_guard() {
    let Some(cluster) = common::cluster("reconcile_errors").await else {
        return;
    };
    cluster.install_crds().await;
    let ns = cluster.namespace("reconcile-errors").await;
    // Everything the operator needs in the namespace except writing RolloutGuard status.
    cluster.apply(&format!(
        r#"
apiVersion: v1
kind: ServiceAccount
metadata: {{name: operator, namespace: {ns}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: operator-without-guard-status, namespace: {ns}}}
rules:
- {{apiGroups: [rollguard.dev], resources: [rolloutguards, rollbackrequests], verbs: [get, list, watch]}}
- {{apiGroups: [rollguard.dev], resources: [rolloutguards/status], verbs: [get]}}
- {{apiGroups: [rollguard.dev], resources: [rollbackrequests/status], verbs: [get, patch, update]}}
- {{apiGroups: [""], resources: [configmaps], verbs: [get, list, watch, patch]}}
- {{apiGroups: ["", events.k8s.io], resources: [events], verbs: [create, patch]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: operator, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: operator-without-guard-status}}
subjects: [{{kind: ServiceAccount, name: operator, namespace: {ns}}}]
"#
    ));
    cluster.apply(&common::flags_and_guard(
        &ns,
        r#"{a: "true"}"#,
        "  interval: 1s\n  triggers: [{name: t, query: \"vector(0)\", above: 1}]",
    ));
    let kubeconfig = service_account_kubeconfig(&cluster, &ns, "operator");
    let kubeconfig_arg = kubeconfig.to_string_lossy().to_string();
    let operator = cluster.start_operator_with(
        &ns,
        &[],
        &["--leader-elect=false", "--kubeconfig", &kubeconfig_arg],
    );

    let describe = common::wait_until(
        Duration::from_secs(30),
        "kubectl describe to show the refused status write",
        || {
            let (ok, out, err) = cluster.kubectl(&["describe", "rolloutguard", "g", "-n", &ns]);
            async move {
                assert!(ok, "kubectl describe: {err}");
                out.contains("ReconcileForbidden").then_some(out)
            }
        },
    )
    .await;
    let line = describe
        .lines()
        .find(|l| l.contains("ReconcileForbidden"))
        .unwrap();
    assert!(line.trim_start().starts_with("Warning"), "{describe}");
    assert!(
        describe.contains("rolloutguards/status") || describe.contains("forbidden"),
        "the Event says what was refused: {describe}"
    );
    // The operator really did try: its log has the same refusal.
    assert!(
        operator.log_contains("forbidden"),
        "{}",
        operator.log_text()
    );
    let _ = std::fs::remove_file(kubeconfig);
}
