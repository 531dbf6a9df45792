//! What `kubectl` shows of the two kinds, asked of the real kubectl and kube-apiserver:
//! creating the CRDs warns nothing, `kubectl explain … .status` has a description, `kubectl
//! get rg,rbr` has a Ready column on guards and a DURATION with units on requests (golden
//! file `tests/golden/kubectl-get-rg-rbr.txt`), and the operator fills that duration for
//! failed requests as well as succeeded ones.
//!
//! The control plane is shared: another checkout's tests may install their own version of
//! the CRDs at any time. Tests that read what the CRDs define install them again and retry
//! when the installed ones stopped being this checkout's in the meantime.

mod common;

use common::{Cluster, cluster, unique_suffix, wait_until};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rollguard::api::{RollbackRequest, RolloutGuard};
use serde_json::json;
use std::time::Duration;

/// The installed CRDs are this checkout's: same printer columns, and the status schema has
/// every property this checkout's has.
async fn ours_installed(cluster: &Cluster) -> bool {
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client.clone());
    for ours in rollguard::crd::definitions() {
        let Ok(installed) = crds.get(ours.metadata.name.as_deref().unwrap()).await else {
            return false;
        };
        let version = |crd: &CustomResourceDefinition| {
            let v = &crd.spec.versions[0];
            let status = v
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .and_then(|s| s.properties.as_ref())
                .and_then(|p| p.get("status"))
                .and_then(|s| s.properties.as_ref())
                .map(|p| p.keys().cloned().collect::<Vec<_>>());
            (
                serde_json::to_value(&v.additional_printer_columns).unwrap(),
                status,
            )
        };
        if version(&installed) != version(&ours) {
            return false;
        }
    }
    true
}

/// Runs `check` with this checkout's CRDs installed; when another checkout's tests replaced
/// them meanwhile, installs them again and repeats (at most 5 times).
async fn with_our_crds<T, F, Fut>(cluster: &Cluster, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    for _ in 0..5 {
        cluster.install_crds().await;
        let result = check().await;
        if ours_installed(cluster).await {
            return result;
        }
        eprintln!("the installed CRDs were replaced by another checkout's during the check; again");
    }
    panic!("the CRDs installed on the shared control plane keep changing under this test");
}

fn crd_stream_with_group(group: &str) -> String {
    rollguard::crd::render()
        .unwrap()
        .replace("rollguard.dev", group)
}

/// The API server's warnings on creating the CRDs, asked of a copy under a group of its own
/// (a dry-run create: nothing is stored, and the shared CRDs are not touched).
fn creation_warnings(cluster: &Cluster, yaml: &str) -> String {
    let file = std::env::temp_dir().join(format!("rollguard-crds-{}.yaml", unique_suffix()));
    std::fs::write(&file, yaml).unwrap();
    let (ok, out, err) =
        cluster.kubectl(&["create", "--dry-run=server", "-f", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    assert!(ok, "kubectl create --dry-run=server failed:\n{out}\n{err}");
    assert!(out.contains("created (server dry run)"), "{out}");
    err
}

#[tokio::test]
async fn creating_the_crds_warns_nothing() {
    let Some(cluster) = cluster("creating_the_crds_warns_nothing").await else {
        return;
    };
    let group = format!("w{}.rollguard.test", unique_suffix());
    let warnings = creation_warnings(&cluster, &crd_stream_with_group(&group));
    assert!(
        warnings.trim().is_empty(),
        "creating the CRDs warns:\n{warnings}"
    );
    // The same for the files users apply.
    for file in [
        "crds/rollguard.dev.yaml",
        "charts/rollguard/crds/rollguard.dev.yaml",
    ] {
        let text = std::fs::read_to_string(common::repo().join(file)).unwrap();
        let warnings = creation_warnings(&cluster, &text.replace("rollguard.dev", &group));
        assert!(warnings.trim().is_empty(), "{file} warns:\n{warnings}");
    }
}

#[tokio::test]
async fn kubectl_explain_describes_both_statuses() {
    let Some(cluster) = cluster("kubectl_explain_describes_both_statuses").await else {
        return;
    };
    let cluster = &cluster;
    with_our_crds(cluster, move || async move {
        for (field, words) in [
            (
                "rolloutguard.status",
                "What the operator observed, written only by the operator",
            ),
            (
                "rollbackrequest.status",
                "The incident record, written only by the operator",
            ),
            (
                "rollbackrequest.status.duration",
                "From creation to `completedAt`, for people",
            ),
        ] {
            // The API server publishes a changed CRD's OpenAPI a moment after it is installed.
            wait_until(
                Duration::from_secs(30),
                &format!("kubectl explain {field} to describe it"),
                || {
                    let (ok, out, err) = cluster.kubectl(&[
                        "explain",
                        field,
                        "--api-version=rollguard.dev/v1alpha1",
                    ]);
                    let described = out
                        .split_once("DESCRIPTION:")
                        .map(|(_, d)| d.split_whitespace().collect::<Vec<_>>().join(" "))
                        .is_some_and(|d| d.starts_with(words));
                    if !described {
                        eprintln!("kubectl explain {field}: ok={ok}\n{out}{err}");
                    }
                    async move { described.then_some(()) }
                },
            )
            .await;
        }
    })
    .await;
}

/// Guards and requests in the states a user meets, their status written here (no operator
/// runs in the namespace), so the output is the same every run but for the ages.
#[tokio::test]
async fn kubectl_get_rg_rbr_matches_the_golden_file() {
    let Some(cluster) = cluster("kubectl_get_rg_rbr_matches_the_golden_file").await else {
        return;
    };
    let ns = cluster.namespace("columns").await;
    let guards: Api<RolloutGuard> = Api::namespaced(cluster.client.clone(), &ns);
    let requests: Api<RollbackRequest> = Api::namespaced(cluster.client.clone(), &ns);
    let condition = |type_: &str, status: &str| {
        json!({"type": type_, "status": status, "reason": "Test", "message": "",
               "lastTransitionTime": "2026-11-27T10:15:00Z", "observedGeneration": 1})
    };
    let guard_statuses = [
        (
            "phase4",
            json!({"phase": "RolledBack", "conditions": [condition("Ready", "True"), condition("Healthy", "True"), condition("TriggersBreaching", "False")],
                   "lastRollback": {"name": "phase4-auto-20261127-101500", "time": "2026-11-27T10:15:00Z", "outcome": "Succeeded"}}),
        ),
        (
            "broken",
            json!({"phase": "Invalid", "conditions": [condition("Ready", "False")]}),
        ),
        ("fresh", serde_json::Value::Null),
    ];
    let request_statuses = [
        (
            "phase4-auto-20261127-101500",
            "system:rollguard",
            json!({"phase": "Succeeded", "duration": "640ms", "durations": {"total": 0.64}}),
        ),
        (
            "incident-42",
            "ops_team",
            json!({"phase": "Failed", "duration": "2m3s"}),
        ),
        ("queued", "ops_team", json!({"phase": "Pending"})),
    ];
    let (cluster, ns, guards, requests) = (&cluster, &ns, &guards, &requests);
    let (guard_statuses, request_statuses) = (&guard_statuses, &request_statuses);
    let output = with_our_crds(cluster, move || async move {
        for (name, status) in guard_statuses {
            let guard: RolloutGuard = serde_json::from_value(json!({
                "apiVersion": "rollguard.dev/v1alpha1", "kind": "RolloutGuard",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"flags": {"configMapRef": {"name": "feature-flags"}, "guarded": ["a"]}}
            }))
            .unwrap();
            let _ = guards.create(&PostParams::default(), &guard).await;
            if !status.is_null() {
                guards
                    .patch_status(
                        name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"status": status})),
                    )
                    .await
                    .expect("patch guard status");
            }
        }
        for (name, by, status) in request_statuses {
            let request: RollbackRequest = serde_json::from_value(json!({
                "apiVersion": "rollguard.dev/v1alpha1", "kind": "RollbackRequest",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"guardRef": {"name": "phase4"}, "requestedBy": by}
            }))
            .unwrap();
            let _ = requests.create(&PostParams::default(), &request).await;
            requests
                .patch_status(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": status})),
                )
                .await
                .expect("patch request status");
        }
        let (ok, out, err) = cluster.kubectl(&["get", "rg,rbr", "-n", ns]);
        assert!(ok, "{err}");
        out
    })
    .await;
    // Ages differ between runs: the last column's value becomes <age>; the layout stays
    // (AGE is the last column, so its width moves nothing else).
    let normalised: String = output
        .lines()
        .map(|line| {
            if line.is_empty() || line.starts_with("NAME ") {
                return format!("{line}\n");
            }
            let kept = line
                .trim_end()
                .rsplit_once(' ')
                .map_or(line, |(kept, _)| kept);
            format!("{kept} <age>\n")
        })
        .collect();
    let golden = common::repo().join("tests/golden/kubectl-get-rg-rbr.txt");
    if std::env::var("UPDATE_GOLDEN").is_ok_and(|v| !v.is_empty() && v != "0") {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "UPDATE_GOLDEN is refused under CI=true"
        );
        std::fs::write(&golden, &normalised).unwrap();
        eprintln!("updated {}", golden.display());
        return;
    }
    let expected = std::fs::read_to_string(&golden)
        .unwrap_or_else(|e| panic!("{}: {e}; create it with UPDATE_GOLDEN=1", golden.display()));
    assert_eq!(
        normalised,
        expected,
        "kubectl get rg,rbr differs from {} (raw output:\n{output})",
        golden.display()
    );
}

/// The operator writes `status.duration` when a request ends, Failed as well as Succeeded:
/// the time from creation to `completedAt` with its unit, which the DURATION column shows.
#[tokio::test]
async fn failed_and_succeeded_requests_show_their_duration_with_units() {
    let Some(cluster) =
        cluster("failed_and_succeeded_requests_show_their_duration_with_units").await
    else {
        return;
    };
    let ns = cluster.namespace("duration").await;
    let requests: Api<RollbackRequest> = Api::namespaced(cluster.client.clone(), &ns);
    let (cluster, ns, requests) = (&cluster, &ns, &requests);
    let finished = with_our_crds(cluster, move || async move {
        cluster.apply(&format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ff, namespace: {ns}, labels: {{rollguard.dev/flags: \"true\"}}}}\ndata: {{a: \"true\"}}\n---\n\
             apiVersion: rollguard.dev/v1alpha1\nkind: RolloutGuard\nmetadata: {{name: g, namespace: {ns}}}\nspec:\n  interval: 1s\n  flags: {{configMapRef: {{name: ff}}, guarded: [a]}}\n  triggers: [{{name: t, query: \"vector(0.25)\", above: 1}}]\n---\n\
             apiVersion: rollguard.dev/v1alpha1\nkind: RollbackRequest\nmetadata: {{name: ok, namespace: {ns}}}\nspec: {{guardRef: {{name: g}}, requestedBy: ops, mode: immediate}}\n---\n\
             apiVersion: rollguard.dev/v1alpha1\nkind: RollbackRequest\nmetadata: {{name: no-guard, namespace: {ns}}}\nspec: {{guardRef: {{name: missing}}, requestedBy: ops, mode: immediate}}\n"
        ));
        let _operator = cluster.start_operator(ns, &[]);
        let ok = common::finished(requests, "ok").await;
        let failed = common::finished(requests, "no-guard").await;
        let (_, table, err) = cluster.kubectl(&["get", "rbr", "-n", ns]);
        (ok, failed, table, err)
    })
    .await;
    let (ok, failed, table, err) = finished;
    use rollguard::api::request::RequestPhase;
    for (request, phase) in [
        (&ok, RequestPhase::Succeeded),
        (&failed, RequestPhase::Failed),
    ] {
        let name = request.metadata.name.as_deref().unwrap();
        let status = request.status.as_ref().unwrap();
        assert_eq!(status.phase, Some(phase), "{name}: {status:?}");
        let created = request.metadata.creation_timestamp.as_ref().unwrap().0;
        let completed = status.completed_at.as_ref().unwrap().0;
        let want = rollguard::api::human::duration_between(created, completed);
        assert_eq!(status.duration.as_deref(), Some(want.as_str()), "{name}");
        // The DURATION column (the 6th) shows it.
        let row: Vec<&str> = table
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for {name}:\n{table}{err}"))
            .split_whitespace()
            .collect();
        assert_eq!(row[5], want, "{name}:\n{table}");
    }
}
