//! Past one replica: two releases of the chart, each with `scope.mode: namespaces` over a
//! disjoint set of namespaces, run side by side, each operator with its own ServiceAccount,
//! Lease and RBAC. Each rolls back (automatically, as `system:rollguard`, and on a person's
//! request) in its own namespaces only; with one of them stopped, its namespaces wait while
//! the other's go on.
//!
//! Needs helm (tests/cluster/build-tools.sh helm): without it, or without the control plane,
//! the test says so and returns, except under `CI=true`, where that is a failure.

mod common;

use common::gauges::Gauges;
use common::tenancy::{apply_server_side, helm_template, service_account_kubeconfig};
use common::{Cluster, Operator, cluster, unique_suffix};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use rollguard::api::RollbackRequest;
use rollguard::api::request::RequestPhase;
use std::path::Path;
use std::time::Duration;

/// One release of the chart: its full name and its operator's kubeconfig.
struct Release {
    fullname: String,
    kubeconfig: String,
}

/// Installs release `name` of the chart in `system`, serving `served` only. Its people-facing
/// admission policies are bound, as a cluster-wide install's are, to every test namespace
/// (those labelled `policy`), including the other release's.
fn install(
    cluster: &Cluster,
    helm: &Path,
    name: &str,
    system: &str,
    policy: &str,
    served: &str,
) -> Release {
    let selector = format!(
        "admissionPolicy.namespaceSelector.matchLabels.rollguard\\.dev/test-policy={policy}"
    );
    let namespaces = format!("scope.namespaces={{{served}}}");
    let manifests = helm_template(
        helm,
        name,
        system,
        &[&selector, "scope.mode=namespaces", &namespaces],
    );
    let mut tries = 0;
    loop {
        let (ok, out, err) = apply_server_side(cluster, &manifests, &[]);
        if ok {
            break;
        }
        tries += 1;
        assert!(tries < 3, "apply release {name}:\n{out}\n{err}");
        std::thread::sleep(Duration::from_secs(1));
    }
    let fullname = format!("{name}-rollguard");
    let kubeconfig = service_account_kubeconfig(cluster, system, &fullname);
    Release {
        kubeconfig: kubeconfig.to_str().unwrap().to_string(),
        fullname,
    }
}

/// Starts `release`'s operator on `served`, as its ServiceAccount, and waits until it leads.
async fn start(cluster: &Cluster, release: &Release, system: &str, served: &str) -> Operator {
    let operator = cluster.start_operator_with(
        served,
        &[
            ("POD_NAMESPACE", system),
            ("POD_NAME", release.fullname.as_str()),
        ],
        &[
            "--kubeconfig",
            &release.kubeconfig,
            "--lease-name",
            &release.fullname,
            "--lease-duration",
            "5s",
        ],
    );
    operator.wait_ready().await;
    operator
}

/// A flags ConfigMap and a guard in `ns` whose trigger breaches while the test's series is 1.
fn guard_yaml(ns: &str, query: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: ff, namespace: {ns}, labels: {{rollguard.dev/flags: "true"}}}}
data: {{auto: "true", manual: "true"}}
---
apiVersion: rollguard.dev/v1alpha1
kind: RolloutGuard
metadata: {{name: g, namespace: {ns}}}
spec:
  interval: 1s
  flags: {{configMapRef: {{name: ff}}, guarded: [auto]}}
  triggers: [{{name: errors, query: "{query}", above: 0.5, for: 0s}}]
  rollback: {{mode: automatic}}
---
apiVersion: rollguard.dev/v1alpha1
kind: RolloutGuard
metadata: {{name: m, namespace: {ns}}}
spec:
  flags: {{configMapRef: {{name: ff}}, guarded: [manual]}}
"#
    )
}

fn manual(ns: &str, name: &str) -> String {
    format!(
        "apiVersion: rollguard.dev/v1alpha1\nkind: RollbackRequest\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{guardRef: {{name: m}}, requestedBy: admin, reason: shard test}}\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn two_releases_each_roll_back_in_their_own_namespaces_only() {
    let Some(helm) = common::helm() else { return };
    let Some(cluster) = cluster("two_releases_each_roll_back_in_their_own_namespaces_only").await
    else {
        return;
    };
    cluster.install_crds().await;
    let system = cluster.namespace("rg-shards").await;
    let (a, b) = (
        cluster.namespace("rg-shard-a").await,
        cluster.namespace("rg-shard-b").await,
    );
    let policy = format!("p{}", unique_suffix());
    for ns in [&a, &b] {
        let (ok, _, err) = cluster.kubectl(&[
            "label",
            "namespace",
            ns,
            &format!("rollguard.dev/test-policy={policy}"),
        ]);
        assert!(ok, "{err}");
    }
    let tag = unique_suffix();
    let (one, two) = (
        install(&cluster, &helm, &format!("a{tag}"), &system, &policy, &a),
        install(&cluster, &helm, &format!("b{tag}"), &system, &policy, &b),
    );
    let operator_a = start(&cluster, &one, &system, &a).await;
    let mut operator_b = Some(start(&cluster, &two, &system, &b).await);

    // Both lead at once, each on its own Lease.
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), &system);
    for release in [&one, &two] {
        let lease = leases.get(&release.fullname).await.unwrap();
        let holder = lease.spec.and_then(|s| s.holder_identity);
        assert!(
            holder
                .as_deref()
                .is_some_and(|h| h.starts_with(release.fullname.as_str())),
            "{}: {holder:?}",
            release.fullname
        );
    }

    // A series that breaches in both namespaces' guards until the rollbacks happened.
    let gauges = Gauges::serve(&cluster).await;
    gauges.set("errors", 1.0);
    let query = gauges.query("errors");
    cluster.apply(&guard_yaml(&a, &query));
    cluster.apply(&guard_yaml(&b, &query));

    // Each operator's automatic rollback, created as system:rollguard in its namespace, is
    // admitted although the other release's policies watch that namespace too.
    let mut automatic = Vec::new();
    for ns in [&a, &b] {
        let requests: Api<RollbackRequest> = Api::namespaced(cluster.client.clone(), ns);
        let request = common::automatic_request(&requests, "g", Duration::from_secs(60)).await;
        assert_eq!(request.spec.requested_by, "system:rollguard");
        automatic.push((ns, requests, request.metadata.name.unwrap()));
    }
    gauges.set("errors", 0.0);
    for (ns, requests, name) in automatic {
        let done = common::finished(&requests, &name).await;
        assert_eq!(
            done.status.as_ref().unwrap().phase,
            Some(RequestPhase::Succeeded),
            "{ns}: {:#?}",
            done.status
        );
    }
    for (operator, mine, theirs) in [
        (&operator_a, &a, &b),
        (operator_b.as_ref().unwrap(), &b, &a),
    ] {
        let log = operator.log_text();
        assert!(log.contains(mine.as_str()), "{mine}'s operator:\n{log}");
        assert!(
            !log.contains(theirs.as_str()),
            "{mine}'s operator acted in {theirs}:\n{log}"
        );
        assert!(!log.contains("forbidden"), "{mine}'s operator:\n{log}");
    }

    // With b's operator stopped, a request in b waits while a's operator serves a request in
    // a made after it (so a's operator had its chance at b's).
    operator_b.take().unwrap().kill();
    cluster.apply(&manual(&b, "waits"));
    cluster.apply(&manual(&a, "served"));
    let requests_a: Api<RollbackRequest> = Api::namespaced(cluster.client.clone(), &a);
    let served = common::finished(&requests_a, "served").await;
    assert_eq!(served.status.unwrap().phase, Some(RequestPhase::Succeeded));
    let requests_b: Api<RollbackRequest> = Api::namespaced(cluster.client.clone(), &b);
    let waiting = requests_b.get("waits").await.unwrap();
    let phase = waiting.status.as_ref().and_then(|s| s.phase);
    assert!(
        phase.is_none() || phase == Some(RequestPhase::Pending),
        "b's request moved without b's operator: {:#?}",
        waiting.status
    );
    let flags_b: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &b);
    assert_eq!(
        flags_b.get("ff").await.unwrap().data.unwrap()["manual"],
        "true"
    );

    // b's operator back: the request waiting in b is served.
    let _operator_b = start(&cluster, &two, &system, &b).await;
    let done = common::finished(&requests_b, "waits").await;
    assert_eq!(done.status.unwrap().phase, Some(RequestPhase::Succeeded));
    assert_eq!(
        flags_b.get("ff").await.unwrap().data.unwrap()["manual"],
        "false"
    );
}
