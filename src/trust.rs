//! Trust boundaries (SPEC §5): an object's owner opts in before rollguard touches it on a
//! guard's behalf. A guard names objects; these checks decide whether the operator may use
//! them for it, so a guard author gets through rollguard nothing RBAC would not give them.
//! Pure judgements plus one read that applies them.

use crate::api::{CREDENTIALS_LABEL, FLAGS_LABEL, OPT_IN};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::ResourceExt;
use kube::api::Api;

/// Secrets of this type hold a ServiceAccount's API credentials: never read for a guard,
/// labelled or not.
pub const SERVICE_ACCOUNT_TOKEN: &str = "kubernetes.io/service-account-token";

fn opted_in(labels: &std::collections::BTreeMap<String, String>, label: &str) -> bool {
    labels.get(label).map(String::as_str) == Some(OPT_IN)
}

/// Whether rollguard may write `cm` (named by `field` of a guard): its owner labelled it.
pub fn writable_flags(cm: &ConfigMap, field: &str) -> Result<(), String> {
    if opted_in(cm.labels(), FLAGS_LABEL) {
        return Ok(());
    }
    let name = cm.name_any();
    Err(format!(
        "{field}: ConfigMap {name:?} is not labelled {FLAGS_LABEL}: \"{OPT_IN}\", so rollguard may not write it; its owner allows it with `kubectl label configmap {name} {FLAGS_LABEL}={OPT_IN}{}`",
        namespace_flag(cm.namespace())
    ))
}

/// Whether rollguard may read `secret` (named by `field` of a guard) and use its values.
pub fn readable_credentials(secret: &Secret, field: &str) -> Result<(), String> {
    let name = secret.name_any();
    if secret.type_.as_deref() == Some(SERVICE_ACCOUNT_TOKEN) {
        return Err(format!(
            "{field}: Secret {name:?} is a ServiceAccount token ({SERVICE_ACCOUNT_TOKEN}); rollguard never reads those for a guard, labelled or not"
        ));
    }
    if opted_in(secret.labels(), CREDENTIALS_LABEL) {
        return Ok(());
    }
    Err(format!(
        "{field}: Secret {name:?} is not labelled {CREDENTIALS_LABEL}: \"{OPT_IN}\", so rollguard may not read it; its owner allows it with `kubectl label secret {name} {CREDENTIALS_LABEL}={OPT_IN}{}`",
        namespace_flag(secret.namespace())
    ))
}

fn namespace_flag(namespace: Option<String>) -> String {
    namespace.map(|ns| format!(" -n {ns}")).unwrap_or_default()
}

/// Reads Secret `name` for `field` of a guard: Ok(None) when it does not exist, Ok(Some(Err))
/// with the message to show when its owner has not allowed rollguard to read it.
pub async fn read_credentials(
    secrets: &Api<Secret>,
    name: &str,
    field: &str,
) -> Result<Option<Result<Secret, String>>, kube::Error> {
    Ok(secrets.get_opt(name).await?.map(|secret| {
        readable_credentials(&secret, field)?;
        Ok(secret)
    }))
}

/// Every Secret `spec` names, with the field that names it (as messages show it).
pub fn referenced_secrets(spec: &crate::api::RolloutGuardSpec) -> Vec<(String, String)> {
    let prometheus = spec
        .prometheus
        .as_ref()
        .and_then(|p| p.auth_secret_ref.as_ref())
        .map(|r| {
            (
                "spec.prometheus.authSecretRef.name".to_string(),
                r.name.clone(),
            )
        });
    let alertmanager = spec
        .alertmanager
        .as_ref()
        .and_then(|a| a.auth_secret_ref.as_ref())
        .map(|r| {
            (
                "spec.alertmanager.authSecretRef.name".to_string(),
                r.name.clone(),
            )
        });
    let receivers = spec.notify.iter().filter_map(|n| {
        n.secret_ref.as_ref().map(|r| {
            (
                format!("spec.notify[{}].secretRef.name", n.name),
                r.name.clone(),
            )
        })
    });
    let included = spec
        .rollback
        .snapshot
        .include
        .iter()
        .filter(|i| i.kind == crate::api::SnapshotKind::Secret)
        .map(|i| ("spec.rollback.snapshot.include".to_string(), i.name.clone()));
    prometheus
        .into_iter()
        .chain(alertmanager)
        .chain(receivers)
        .chain(included)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_secret_a_guard_names_is_listed_with_its_field() {
        let spec: crate::api::RolloutGuardSpec = serde_json::from_value(serde_json::json!({
            "flags": {"configMapRef": {"name": "ff"}, "guarded": ["a"]},
            "prometheus": {"authSecretRef": {"name": "prom"}},
            "alertmanager": {"address": "https://am:9093", "authSecretRef": {"name": "am"}},
            "notify": [{"name": "ops", "type": "slack", "secretRef": {"name": "slack"}},
                       {"name": "board", "type": "inApp"}],
            "rollback": {"snapshot": {"include": [{"kind": "ConfigMap", "name": "settings"},
                                                   {"kind": "Secret", "name": "app-creds"}]}},
        }))
        .unwrap();
        let pairs = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            referenced_secrets(&spec),
            pairs(&[
                ("spec.prometheus.authSecretRef.name", "prom"),
                ("spec.alertmanager.authSecretRef.name", "am"),
                ("spec.notify[ops].secretRef.name", "slack"),
                ("spec.rollback.snapshot.include", "app-creds"),
            ])
        );
    }

    fn config_map(labels: serde_json::Value) -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "feature-flags", "namespace": "shop", "labels": labels}
        }))
        .unwrap()
    }

    fn secret(type_: Option<&str>, labels: serde_json::Value) -> Secret {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "prom-auth", "namespace": "shop", "labels": labels},
            "type": type_,
        }))
        .unwrap()
    }

    #[test]
    fn a_flags_config_map_is_writable_only_when_its_owner_labelled_it() {
        let field = "spec.flags.configMapRef.name";
        assert_eq!(
            writable_flags(&config_map(serde_json::json!({FLAGS_LABEL: "true"})), field),
            Ok(())
        );
        for labels in [
            serde_json::json!({}),
            serde_json::json!({FLAGS_LABEL: "yes"}),
            serde_json::json!({CREDENTIALS_LABEL: "true"}),
        ] {
            let message = writable_flags(&config_map(labels), field).unwrap_err();
            assert_eq!(
                message,
                "spec.flags.configMapRef.name: ConfigMap \"feature-flags\" is not labelled rollguard.dev/flags: \"true\", so rollguard may not write it; its owner allows it with `kubectl label configmap feature-flags rollguard.dev/flags=true -n shop`"
            );
        }
    }

    #[test]
    fn a_secret_is_readable_only_when_labelled_and_never_a_service_account_token() {
        let field = "spec.prometheus.authSecretRef.name";
        let labelled = serde_json::json!({CREDENTIALS_LABEL: "true"});
        assert_eq!(
            readable_credentials(&secret(Some("Opaque"), labelled.clone()), field),
            Ok(())
        );
        assert_eq!(
            readable_credentials(&secret(None, labelled.clone()), field),
            Ok(())
        );
        let unlabelled =
            readable_credentials(&secret(Some("Opaque"), serde_json::json!({})), field)
                .unwrap_err();
        assert!(
            unlabelled.starts_with("spec.prometheus.authSecretRef.name: Secret \"prom-auth\" is not labelled rollguard.dev/credentials: \"true\"")
                && unlabelled.contains("kubectl label secret prom-auth rollguard.dev/credentials=true -n shop"),
            "{unlabelled}"
        );
        let token = readable_credentials(&secret(Some(SERVICE_ACCOUNT_TOKEN), labelled), field)
            .unwrap_err();
        assert!(token.contains("is a ServiceAccount token"), "{token}");
    }
}
