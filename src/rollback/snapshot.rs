//! The snapshot Secret (SPEC §2 step 1): the flags ConfigMap (data, resourceVersion, uid)
//! and every `snapshot.include` object, captured before any flag changes.

use crate::api::{GUARD_LABEL, REQUEST_LABEL, SNAPSHOT_SECRET_TYPE};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;

pub use crate::api::names::{ACTION_LABEL, label_value};
/// Data key holding the flags ConfigMap.
pub const FLAGS_KEY: &str = "flags-configmap.json";

/// `<guard>-snap-<request>`, shortened with a hash when it would exceed 253 characters.
pub fn secret_name(guard: &str, request: &str) -> String {
    crate::api::names::bounded(&format!("{guard}-snap-{request}"), 253)
}

/// One captured object: its identity and contents, as JSON.
fn capture_configmap(cm: &ConfigMap) -> serde_json::Value {
    serde_json::json!({
        "kind": "ConfigMap",
        "name": cm.metadata.name,
        "uid": cm.metadata.uid,
        "resourceVersion": cm.metadata.resource_version,
        "labels": cm.metadata.labels,
        "annotations": cm.metadata.annotations,
        "data": cm.data,
        "binaryData": cm.binary_data,
    })
}

fn capture_secret(secret: &Secret) -> serde_json::Value {
    serde_json::json!({
        "kind": "Secret",
        "name": secret.metadata.name,
        "uid": secret.metadata.uid,
        "resourceVersion": secret.metadata.resource_version,
        "type": secret.type_,
        "data": secret.data,
    })
}

/// An extra object named in `snapshot.include`.
pub enum Included {
    ConfigMap(ConfigMap),
    Secret(Secret),
}

pub struct SnapshotInput<'a> {
    pub namespace: &'a str,
    pub guard: &'a str,
    pub request: &'a str,
    pub action: &'a str,
    pub flags: &'a ConfigMap,
    pub included: &'a [Included],
}

/// The snapshot Secret to create.
pub fn build(input: &SnapshotInput<'_>) -> Secret {
    let mut data = BTreeMap::new();
    let json =
        |v: serde_json::Value| ByteString(serde_json::to_vec_pretty(&v).expect("JSON serialises"));
    data.insert(FLAGS_KEY.to_string(), json(capture_configmap(input.flags)));
    for object in input.included {
        let (key, value) = match object {
            Included::ConfigMap(cm) => (
                format!(
                    "configmap-{}.json",
                    cm.metadata.name.as_deref().unwrap_or_default()
                ),
                capture_configmap(cm),
            ),
            Included::Secret(s) => (
                format!(
                    "secret-{}.json",
                    s.metadata.name.as_deref().unwrap_or_default()
                ),
                capture_secret(s),
            ),
        };
        data.insert(key, json(value));
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(input.guard, input.request)),
            namespace: Some(input.namespace.to_string()),
            labels: Some(BTreeMap::from([
                (GUARD_LABEL.to_string(), label_value(input.guard)),
                (REQUEST_LABEL.to_string(), label_value(input.request)),
                (ACTION_LABEL.to_string(), input.action.to_string()),
            ])),
            // Labels may be shortened; the annotations keep the full names.
            annotations: Some(BTreeMap::from([
                (GUARD_LABEL.to_string(), input.guard.to_string()),
                (REQUEST_LABEL.to_string(), input.request.to_string()),
            ])),
            // No owner: a snapshot outlives its guard, so a guard deleted and created again
            // (a GitOps replace, a mistake) can still restore from it.
            ..Default::default()
        },
        type_: Some(SNAPSHOT_SECRET_TYPE.to_string()),
        data: Some(data),
        immutable: Some(true),
        ..Default::default()
    }
}

/// The flags ConfigMap's data as a snapshot holds it.
pub fn flags_data(secret: &Secret) -> Option<BTreeMap<String, String>> {
    let raw = secret.data.as_ref()?.get(FLAGS_KEY)?;
    let captured: serde_json::Value = serde_json::from_slice(&raw.0).ok()?;
    serde_json::from_value(captured.get("data")?.clone()).ok()
}

/// Names of snapshots to delete so that `retain` remain, oldest first. `snapshots` are
/// (name, creation time); names break ties so the choice is stable.
pub fn to_prune(
    mut snapshots: Vec<(String, Option<jiff::Timestamp>)>,
    retain: usize,
) -> Vec<String> {
    snapshots.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    let excess = snapshots.len().saturating_sub(retain);
    snapshots
        .into_iter()
        .take(excess)
        .map(|(name, _)| name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_within_kubernetes_limits() {
        assert_eq!(
            secret_name("phase4", "incident-42"),
            "phase4-snap-incident-42"
        );
        let long = secret_name(&"g".repeat(200), &"r".repeat(200));
        assert_eq!(long.len(), 253);
        assert_ne!(
            secret_name(&"g".repeat(200), &"r".repeat(200)),
            secret_name(&"g".repeat(200), &"s".repeat(200))
        );
        assert_eq!(label_value(&"x".repeat(100)).len(), 63);
    }

    #[test]
    fn the_snapshot_holds_the_config_map_identity_and_data_and_round_trips() {
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "ff", "uid": "u-1", "resourceVersion": "42"},
            "data": {"a": "true", "b": "x"}
        }))
        .unwrap();
        let secret = build(&SnapshotInput {
            namespace: "shop",
            guard: "g",
            request: "r",
            action: "rollback",
            flags: &cm,
            included: &[],
        });
        assert_eq!(secret.type_.as_deref(), Some("rollguard.dev/snapshot"));
        assert_eq!(
            secret.metadata.labels.as_ref().unwrap()["rollguard.dev/guard"],
            "g"
        );
        assert_eq!(
            secret.metadata.labels.as_ref().unwrap()["rollguard.dev/request"],
            "r"
        );
        let captured: serde_json::Value =
            serde_json::from_slice(&secret.data.as_ref().unwrap()[FLAGS_KEY].0).unwrap();
        assert_eq!(
            (
                captured["uid"].as_str(),
                captured["resourceVersion"].as_str()
            ),
            (Some("u-1"), Some("42"))
        );
        assert_eq!(flags_data(&secret), cm.data);
    }

    #[test]
    fn pruning_keeps_the_newest() {
        let t = |s| Some(jiff::Timestamp::from_second(s).unwrap());
        let snaps = vec![
            ("c".into(), t(3)),
            ("a".into(), t(1)),
            ("b".into(), t(2)),
            ("d".into(), t(4)),
        ];
        assert_eq!(to_prune(snaps.clone(), 2), vec!["a", "b"]);
        assert!(to_prune(snaps, 10).is_empty());
    }
}
