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

/// `taken` with its flags ConfigMap captured again from `flags` and every other object as
/// it was captured: the Secret to create in its place (same name, labels, annotations).
pub fn recapture(taken: &Secret, flags: &ConfigMap) -> Secret {
    let mut data = taken.data.clone().unwrap_or_default();
    data.insert(
        FLAGS_KEY.to_string(),
        ByteString(serde_json::to_vec_pretty(&capture_configmap(flags)).expect("JSON serialises")),
    );
    Secret {
        metadata: ObjectMeta {
            name: taken.metadata.name.clone(),
            namespace: taken.metadata.namespace.clone(),
            labels: taken.metadata.labels.clone(),
            annotations: taken.metadata.annotations.clone(),
            ..Default::default()
        },
        type_: taken.type_.clone(),
        data: Some(data),
        immutable: Some(true),
        ..Default::default()
    }
}

/// The resourceVersion of the flags ConfigMap a snapshot holds: the state a flags write
/// based on this snapshot must find (its precondition).
pub fn captured_version(secret: &Secret) -> Option<String> {
    let raw = secret.data.as_ref()?.get(FLAGS_KEY)?;
    let captured: serde_json::Value = serde_json::from_slice(&raw.0).ok()?;
    captured.get("resourceVersion")?.as_str().map(String::from)
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
        assert_eq!(captured_version(&secret).as_deref(), Some("42"));
    }

    /// Taken again: the flags as they are now, every other object as first captured, the
    /// same name, labels and annotations, nothing of the old object's identity.
    #[test]
    fn a_snapshot_taken_again_holds_the_new_flags_and_the_old_includes() {
        let cm = |version: &str, a: &str| -> ConfigMap {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "ff", "uid": "u-1", "resourceVersion": version},
                "data": {"a": a}
            }))
            .unwrap()
        };
        let extra: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "extra", "resourceVersion": "7"}, "data": {"k": "v"}
        }))
        .unwrap();
        let mut first = build(&SnapshotInput {
            namespace: "shop",
            guard: "g",
            request: "r",
            action: "rollback",
            flags: &cm("42", "true"),
            included: &[Included::ConfigMap(extra)],
        });
        first.metadata.uid = Some("secret-uid".into());
        first.metadata.resource_version = Some("43".into());
        let again = recapture(&first, &cm("44", "yes"));
        assert_eq!(again.metadata.name, first.metadata.name);
        assert_eq!(again.metadata.labels, first.metadata.labels);
        assert_eq!(again.metadata.annotations, first.metadata.annotations);
        assert_eq!(
            (
                again.metadata.uid.as_ref(),
                again.metadata.resource_version.as_ref()
            ),
            (None, None)
        );
        assert_eq!(again.immutable, Some(true));
        assert_eq!(captured_version(&again).as_deref(), Some("44"));
        assert_eq!(flags_data(&again).unwrap()["a"], "yes");
        let data = again.data.as_ref().unwrap();
        assert_eq!(
            data["configmap-extra.json"],
            first.data.as_ref().unwrap()["configmap-extra.json"]
        );
        assert_eq!(data.len(), 2);
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
