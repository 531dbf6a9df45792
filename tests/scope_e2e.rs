//! `scope.mode: namespaces`: the chart renders a Role per listed namespace and one
//! `--namespace=a,b` flag; the operator, running with exactly that flag and the chart's
//! ServiceAccount token, serves every listed namespace and can read nothing elsewhere.
//!
//! Needs helm and the local control plane (`make test` provides both); under `CI=true`
//! their absence is a failure.

mod common;

use common::tenancy::{forbidden, install_chart, service_account_kubeconfig};
use common::wait_until;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use rollguard::api::RollbackRequest;
use rollguard::api::request::RequestPhase;
use std::time::Duration;

#[tokio::test]
async fn the_operator_serves_every_listed_namespace_and_reads_nothing_elsewhere() {
    let Some(helm) = common::helm() else { return };
    let Some(cluster) = common::cluster("the_operator_serves_every_listed_namespace").await else {
        return;
    };
    cluster.install_crds().await;
    let system = cluster.namespace("rg-sys").await;
    let (shop, payments, other) = (
        cluster.namespace("shop").await,
        cluster.namespace("payments").await,
        cluster.namespace("other").await,
    );
    // The people's policies bind to no namespace here (requests below come from the admin).
    let listed = format!("scope.namespaces={{{shop},{payments}}}");
    let chart = install_chart(
        &cluster,
        &helm,
        &system,
        &[],
        &["scope.mode=namespaces", &listed],
    );
    let fullname = chart.fullname;
    // The operator gets the flag the chart's Deployment gives it.
    let flag = chart
        .manifests
        .lines()
        .find_map(|l| l.trim().strip_prefix("- --namespace="))
        .expect("the Deployment passes --namespace")
        .to_string();
    assert_eq!(flag, format!("{shop},{payments}"));

    for ns in [&shop, &payments, &other] {
        cluster.apply(&format!(
            r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: ff, namespace: {ns}, labels: {{rollguard.dev/flags: "true"}}}}
data: {{a: "true"}}
---
apiVersion: v1
kind: Secret
metadata: {{name: creds, namespace: {ns}, labels: {{rollguard.dev/credentials: "true"}}}}
stringData: {{token: t}}
---
apiVersion: rollguard.dev/v1alpha1
kind: RolloutGuard
metadata: {{name: g, namespace: {ns}}}
spec:
  flags: {{configMapRef: {{name: ff}}, guarded: [a]}}
"#
        ));
    }
    let kubeconfig = service_account_kubeconfig(&cluster, &system, &fullname);
    let namespace_flag = format!("--namespace={flag}");
    let kubeconfig_arg = kubeconfig.to_str().unwrap().to_string();
    let operator = cluster.start_operator_with(
        &shop,
        &[
            ("POD_NAMESPACE", system.as_str()),
            ("POD_NAME", "scope-operator"),
        ],
        &[
            "--kubeconfig",
            &kubeconfig_arg,
            &namespace_flag,
            "--lease-name",
            &fullname,
            "--lease-duration",
            "5s",
        ],
    );

    for ns in [&shop, &payments, &other] {
        cluster.apply(&format!(
            r#"
apiVersion: rollguard.dev/v1alpha1
kind: RollbackRequest
metadata: {{name: r, namespace: {ns}}}
spec: {{guardRef: {{name: g}}, requestedBy: ops, reason: scope test}}
"#
        ));
    }
    for ns in [&shop, &payments] {
        let requests: Api<RollbackRequest> = Api::namespaced(cluster.client.clone(), ns);
        let done = common::finished(&requests, "r").await;
        let status = done.status.unwrap();
        assert_eq!(
            status.phase,
            Some(RequestPhase::Succeeded),
            "{ns}: {status:?}\noperator log:\n{}",
            operator.log_text()
        );
        let cms: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), ns);
        assert_eq!(cms.get("ff").await.unwrap().data.unwrap()["a"], "false");
    }
    // The unlisted namespace is never served: its request stays unclaimed while both
    // listed ones finished, and its flag stays on.
    let requests: Api<RollbackRequest> = Api::namespaced(cluster.client.clone(), &other);
    let untouched = requests.get("r").await.unwrap();
    assert!(
        untouched.status.as_ref().and_then(|s| s.phase).is_none(),
        "{:?}",
        untouched.status
    );
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &other);
    assert_eq!(cms.get("ff").await.unwrap().data.unwrap()["a"], "true");

    // And the operator's own rights end at the listed namespaces.
    let operator_client = common::client_for(&kubeconfig).await;
    let listed_secret = Api::<Secret>::namespaced(operator_client.clone(), &payments)
        .get("creds")
        .await;
    assert!(listed_secret.is_ok(), "{listed_secret:?}");
    let elsewhere = wait_until(Duration::from_secs(5), "a 403 outside", || {
        let api = Api::<Secret>::namespaced(operator_client.clone(), &other);
        async move { api.get("creds").await.err().as_ref().and_then(forbidden) }
    })
    .await;
    assert!(
        elsewhere.contains("secrets \"creds\" is forbidden"),
        "{elsewhere}"
    );
    let _ = std::fs::remove_file(kubeconfig);
}
