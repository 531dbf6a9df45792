//! `kubectl rollguard` against the real control plane: `rollback --watch` exits 0 on
//! success and non-zero on a failed request, `requestedBy` is the user the API server
//! authenticated (SelfSubjectReview), not something the caller typed, and the `status` and
//! `report` outputs of requests that really ran match golden files (names, times and
//! measured durations normalised).

mod common;
#[path = "golden/check.rs"]
mod golden;

use common::{Cluster, Operator, cluster, wait_until};
use kube::api::Api;
use rollguard::api::guard::GuardPhase;
use rollguard::api::{RollbackRequest, RolloutGuard, RolloutGuardStatus};
use std::time::Duration;

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

/// A namespace with guard `g` (flags a, b), guard `broken` (guards a flag the ConfigMap
/// lacks) and a Role letting `alice` create and read requests and read guards.
async fn guarded_namespace(cluster: &Cluster) -> String {
    cluster.install_crds().await;
    let ns = cluster.namespace("plugin").await;
    cluster.apply(&format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: ff, namespace: {ns}, labels: {{rollguard.dev/flags: "true"}}}}
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
    ns
}

/// `plugin`, retried while the API server's authorizer has not yet seen the RoleBinding.
async fn plugin_once_authorized(
    kubeconfig: &std::path::Path,
    args: &[&str],
) -> (i32, String, String) {
    let mut attempt = (0, String::new(), String::new());
    for _ in 0..50 {
        attempt = plugin(kubeconfig, args);
        if !attempt.2.contains("forbidden") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    attempt
}

/// `text` with each run-specific name replaced by its placeholder, then times, ages and
/// measured durations normalised.
fn normalised(text: &str, names: &[(&str, &str)]) -> String {
    let named = names
        .iter()
        .fold(text.to_string(), |t, (name, placeholder)| {
            t.replace(name, placeholder)
        });
    golden::normalise(&named)
}

/// The request name from `rollbackrequest.rollguard.dev/<name> created (…)`.
fn created_name(out: &str) -> String {
    out.split_whitespace()
        .next()
        .unwrap()
        .trim_start_matches("rollbackrequest.rollguard.dev/")
        .to_string()
}

#[tokio::test]
async fn rollback_watch_exit_codes_and_requested_by_from_the_api_server() {
    let Some(cluster) =
        cluster("rollback_watch_exit_codes_and_requested_by_from_the_api_server").await
    else {
        return;
    };
    let ns = guarded_namespace(&cluster).await;
    let _operator: Operator = cluster.start_operator(&ns, &[]);
    let alice = cluster.user_kubeconfig_dir.join("alice.kubeconfig");

    let (code, out, err) = plugin_once_authorized(
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
    )
    .await;
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("(requestedBy: alice)")
            && out.contains("FlagsDisabled")
            && out.contains("Succeeded"),
        "{out}"
    );
    let name = created_name(&out);
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

#[tokio::test]
async fn status_and_report_of_real_requests_match_their_golden_files() {
    let Some(cluster) =
        cluster("status_and_report_of_real_requests_match_their_golden_files").await
    else {
        return;
    };
    let ns = guarded_namespace(&cluster).await;
    let _operator: Operator = cluster.start_operator(&ns, &[]);
    let alice = cluster.user_kubeconfig_dir.join("alice.kubeconfig");
    let rollback = |guard: &'static str| {
        let ns = ns.clone();
        let alice = alice.clone();
        async move {
            let args = [
                "-n",
                &ns,
                "rollback",
                guard,
                "--reason",
                "checkout errors | 5xx",
                "--immediate",
                "--watch",
            ];
            plugin_once_authorized(&alice, &args).await
        }
    };
    let run = |args: &[&str]| {
        let mut all = vec!["-n", ns.as_str()];
        all.extend_from_slice(args);
        let (code, out, err) = plugin(&alice, &all);
        assert_eq!(code, 0, "{args:?}\nstdout:\n{out}\nstderr:\n{err}");
        assert!(
            !out.contains('\x1b'),
            "piped output has colour codes:\n{out}"
        );
        out
    };
    let guards: Api<RolloutGuard> = Api::namespaced(cluster.client.clone(), &ns);
    let settled = |guard: &'static str, done: fn(&RolloutGuardStatus) -> bool| {
        let guards = guards.clone();
        async move {
            wait_until(
                Duration::from_secs(30),
                &format!("guard {guard} to settle"),
                || {
                    let guards = guards.clone();
                    async move { guards.get(guard).await.ok()?.status.filter(done) }
                },
            )
            .await
        }
    };

    let (code, ok_out, err) = rollback("g").await;
    assert_eq!(code, 0, "stdout:\n{ok_out}\nstderr:\n{err}");
    let succeeded = created_name(&ok_out);
    // The dashboard once both guards are evaluated and g's slot is released with its
    // rollback recorded and judged (phase RolledBack, decided by the guard's evaluation that
    // the release wakes); `broken` never had a request, so it stays Invalid.
    let g = settled("g", |s| {
        s.active_rollback.is_none()
            && s.last_rollback.is_some()
            && s.phase == Some(GuardPhase::RolledBack)
            && s.conditions
                .iter()
                .any(|c| c.type_ == "PrometheusReachable")
    })
    .await;
    assert_eq!(g.last_rollback.unwrap().name, succeeded);
    settled("broken", |s| s.phase == Some(GuardPhase::Invalid)).await;
    let names = [(succeeded.as_str(), "<succeeded>"), (ns.as_str(), "<ns>")];
    golden::check("e2e-status.txt", &normalised(&run(&["status"]), &names));
    golden::check(
        "e2e-status-wide.txt",
        &normalised(&run(&["status", "-o", "wide"]), &names),
    );
    golden::check(
        "e2e-report-succeeded.md",
        &normalised(&run(&["report", &succeeded]), &names),
    );

    let (code, failed_out, err) = rollback("broken").await;
    assert_eq!(code, 1, "stdout:\n{failed_out}\nstderr:\n{err}");
    let failed = created_name(&failed_out);
    let names = [(failed.as_str(), "<failed>"), (ns.as_str(), "<ns>")];
    golden::check(
        "e2e-report-failed.md",
        &normalised(&run(&["report", &failed]), &names),
    );

    // -o json: the same facts, machine-readable.
    let status: serde_json::Value = serde_json::from_str(&run(&["status", "-o", "json"])).unwrap();
    let g = status
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "g")
        .unwrap();
    assert_eq!(g["namespace"], ns.as_str());
    assert_eq!(g["lastRollback"]["name"], succeeded.as_str());
    assert_eq!(g["lastRollback"]["outcome"], "Succeeded");
    assert_eq!(g["flags"]["guarded"], serde_json::json!(["a", "b"]));
    let record: serde_json::Value =
        serde_json::from_str(&run(&["report", &succeeded, "-o", "json"])).unwrap();
    assert_eq!(record["requestedBy"], "alice");
    assert_eq!(record["outcome"], "Succeeded");
    assert_eq!(record["snapshot"], format!("g-snap-{succeeded}").as_str());
    assert_eq!(
        record["flagsChanged"],
        serde_json::json!([{"name": "a", "from": "true", "to": "false"},
                           {"name": "b", "from": "true", "to": "false"}])
    );
    assert!(record["timeline"].as_array().is_some_and(|t| !t.is_empty()));

    // Errors: one line naming the missing object or the missing permission, exit 2.
    let (code, out, err) = plugin(&alice, &["-n", &ns, "report", "ghost"]);
    assert_eq!((code, out.as_str()), (2, ""));
    assert_eq!(
        err.trim(),
        format!("error: RollbackRequest \"ghost\" in namespace \"{ns}\" not found")
    );
    let bob = cluster.user_kubeconfig_dir.join("bob.kubeconfig");
    let (code, _, err) = plugin(&bob, &["-n", &ns, "status"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: forbidden: ")
            && err.contains("User \"bob\" cannot list resource \"rolloutguards\""),
        "{err}"
    );
}
