use super::*;
use crate::api::guard::FlagFormat;
use proptest::prelude::*;

fn plain_spec(guarded: &[&str]) -> FlagsSpec {
    serde_json::from_value(serde_json::json!({
        "configMapRef": {"name": "feature-flags"},
        "guarded": guarded,
        "offValue": "false", "offVariant": "off",
    }))
    .unwrap()
}

fn flagd_spec(guarded: &[&str]) -> FlagsSpec {
    let mut spec = plain_spec(guarded);
    spec.format = FlagFormat::Flagd;
    spec.key = Some("flags.json".into());
    spec
}

fn data(pairs: &[(&str, &str)]) -> Data {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn all() -> Selection {
    Selection::default()
}

const FLAGD_DOC: &str = r##"{
  "$schema": "https://flagd.dev/schema/v0/flags.json",
  "flags": {
    "zeta": {
      "state": "ENABLED",
      "variants": {"on": true, "off": false},
      "defaultVariant": "on",
      "targeting": {"if": [{"in": ["@example.com", {"var": "email"}]}, "on", "off"]},
      "metadata": {"owner": "team-a"},
      "x-unknown": [1, 2.5, "three"]
    },
    "alpha": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
    "beta": {"state": "ENABLED", "variants": {"yes": true, "no": false}, "defaultVariant": "yes"},
    "colour": {"state": "ENABLED", "variants": {"red": "#f00", "blue": "#00f"}, "defaultVariant": "red"}
  },
  "$evaluators": {"emailWithFaas": {"in": ["@faas.com", {"var": ["email"]}]}},
  "metadata": {"version": "7"}
}
"##;

#[test]
fn plain_rollback_sets_only_the_guarded_keys_to_off_value() {
    let before = data(&[
        ("a", "true"),
        ("b", "true"),
        ("other", "true"),
        ("colour", "red"),
    ]);
    let plan = plan_disable(&plain_spec(&["a", "b"]), "ff", &before, &all()).unwrap();
    assert_eq!(plan.writes, data(&[("a", "false"), ("b", "false")]));
    assert_eq!(
        plan.changes,
        vec![
            FlagChange {
                name: "a".into(),
                from: "true".into(),
                to: "false".into()
            },
            FlagChange {
                name: "b".into(),
                from: "true".into(),
                to: "false".into()
            },
        ]
    );
}

#[test]
fn plain_rollback_of_a_subset_changes_only_that_subset() {
    let before = data(&[("a", "true"), ("b", "true")]);
    let selection = Selection {
        flags: vec!["b".into()],
        force_disable_all: false,
    };
    let plan = plan_disable(&plain_spec(&["a", "b"]), "ff", &before, &selection).unwrap();
    assert_eq!(plan.writes, data(&[("b", "false")]));
}

#[test]
fn flags_already_off_are_not_changes() {
    let before = data(&[("a", "false"), ("b", "false")]);
    let plan = plan_disable(&plain_spec(&["a", "b"]), "ff", &before, &all()).unwrap();
    assert!(plan.is_empty() && plan.changes.is_empty());
}

#[test]
fn force_disable_all_turns_off_every_other_boolean_true_and_nothing_else() {
    let before = data(&[
        ("a", "true"),
        ("x", "TRUE"),
        ("y", "false"),
        ("colour", "red"),
        ("n", "1"),
    ]);
    let selection = Selection {
        flags: vec![],
        force_disable_all: true,
    };
    let plan = plan_disable(&plain_spec(&["a"]), "ff", &before, &selection).unwrap();
    assert_eq!(plan.writes, data(&[("a", "false"), ("x", "false")]));
}

#[test]
fn a_flag_outside_the_guard_is_refused_by_name() {
    let selection = Selection {
        flags: vec!["nope".into()],
        force_disable_all: false,
    };
    let err = plan_disable(
        &plain_spec(&["a", "b"]),
        "ff",
        &data(&[("a", "true")]),
        &selection,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "spec.flags: \"nope\" is not a guarded flag of this guard (guarded: a, b)"
    );
}

#[test]
fn a_guarded_flag_missing_from_the_config_map_is_refused_by_name() {
    let err = plan_disable(
        &plain_spec(&["a", "gone"]),
        "feature-flags",
        &data(&[("a", "true")]),
        &all(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "spec.flags.guarded: flag \"gone\" is not in ConfigMap \"feature-flags\""
    );
}

#[test]
fn flagd_rollback_switches_default_variant_and_drops_targeting_keeping_everything_else() {
    let before = data(&[("flags.json", FLAGD_DOC), ("other", "x")]);
    let plan = plan_disable(&flagd_spec(&["zeta", "alpha"]), "ff", &before, &all()).unwrap();
    assert_eq!(plan.writes.keys().collect::<Vec<_>>(), ["flags.json"]);
    let after = &plan.writes["flags.json"];

    let mut expected: serde_json::Value = serde_json::from_str(FLAGD_DOC).unwrap();
    expected["flags"]["zeta"]["defaultVariant"] = "off".into();
    expected["flags"]["zeta"]
        .as_object_mut()
        .unwrap()
        .remove("targeting");
    expected["flags"]["alpha"]["defaultVariant"] = "off".into();
    let got: serde_json::Value = serde_json::from_str(after).unwrap();
    assert_eq!(got, expected);

    // Key order is kept (zeta before alpha, $schema first, metadata last), and so is the
    // two-space indentation and the trailing newline.
    let positions: Vec<usize> = [
        "\"$schema\"",
        "\"zeta\"",
        "\"alpha\"",
        "\"$evaluators\"",
        "\"metadata\": {\n    \"version\"",
    ]
    .iter()
    .map(|k| {
        after
            .find(k)
            .unwrap_or_else(|| panic!("{k} missing in {after}"))
    })
    .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{after}");
    assert!(
        after.starts_with("{\n  \"$schema\"") && after.ends_with("}\n"),
        "{after}"
    );

    assert_eq!(plan.changes.len(), 2);
    assert_eq!(plan.changes[0].name, "zeta");
    assert!(plan.changes[0].from.contains("\"targeting\""));
    assert_eq!(plan.changes[0].to, r#"{"defaultVariant":"off"}"#);
}

#[test]
fn flagd_compact_documents_stay_compact() {
    let doc = r#"{"flags":{"a":{"variants":{"on":true,"off":false},"defaultVariant":"on","state":"ENABLED"}}}"#;
    let plan = plan_disable(
        &flagd_spec(&["a"]),
        "ff",
        &data(&[("flags.json", doc)]),
        &all(),
    )
    .unwrap();
    assert_eq!(
        plan.writes["flags.json"],
        r#"{"flags":{"a":{"variants":{"on":true,"off":false},"defaultVariant":"off","state":"ENABLED"}}}"#
    );
}

#[test]
fn flagd_force_disable_all_turns_off_boolean_flags_only() {
    let before = data(&[("flags.json", FLAGD_DOC)]);
    let selection = Selection {
        flags: vec![],
        force_disable_all: true,
    };
    let plan = plan_disable(&flagd_spec(&["alpha"]), "ff", &before, &selection).unwrap();
    let got: serde_json::Value = serde_json::from_str(&plan.writes["flags.json"]).unwrap();
    assert_eq!(got["flags"]["alpha"]["defaultVariant"], "off");
    assert_eq!(got["flags"]["zeta"]["defaultVariant"], "off");
    assert!(got["flags"]["zeta"].get("targeting").is_none());
    assert_eq!(got["flags"]["beta"]["defaultVariant"], "no");
    assert_eq!(
        got["flags"]["colour"]["defaultVariant"], "red",
        "non-boolean flags are left alone"
    );
}

#[test]
fn flagd_bad_input_is_refused_by_name() {
    let spec = flagd_spec(&["alpha"]);
    let cases = [
        (
            data(&[("other", "{}")]),
            "spec.flags.key: ConfigMap \"ff\" has no data key \"flags.json\"",
        ),
        (
            data(&[("flags.json", "{not json")]),
            "spec.flags.key: data key \"flags.json\" of ConfigMap \"ff\" is not a flagd document: key must be a string at line 1 column 2",
        ),
        (
            data(&[("flags.json", "{\"flagz\": {}}")]),
            "spec.flags.key: data key \"flags.json\" of ConfigMap \"ff\" is not a flagd document: it has no \"flags\" object",
        ),
        (
            data(&[("flags.json", "{\"flags\": {}}")]),
            "spec.flags.guarded: flag \"alpha\" is not in the flagd document under key \"flags.json\" of ConfigMap \"ff\"",
        ),
        (
            data(&[(
                "flags.json",
                r#"{"flags": {"alpha": {"variants": {"enabled": true, "disabled": false}, "defaultVariant": "enabled"}}}"#,
            )]),
            "spec.flags.offVariant: flagd flag \"alpha\" has no variant \"off\" (variants: enabled, disabled)",
        ),
    ];
    for (input, message) in cases {
        assert_eq!(
            plan_disable(&spec, "ff", &input, &all())
                .unwrap_err()
                .to_string(),
            message
        );
    }
}

#[test]
fn restore_writes_back_only_unedited_flags_and_reports_conflicts() {
    let spec = plain_spec(&["a", "b"]);
    let original = data(&[("a", "true"), ("b", "true"), ("c", "x")]);
    let rollback = plan_disable(&spec, "ff", &original, &all()).unwrap();
    let mut now = rollback.apply(&original);
    now.insert("b".into(), "true-but-edited".into());
    now.insert("c".into(), "y".into());
    let restore = plan_restore(&spec, "ff", &now, &rollback.changes, &original).unwrap();
    assert_eq!(restore.writes, data(&[("a", "true")]));
    assert_eq!(
        restore.conflicts,
        vec![FlagConflict {
            name: "b".into(),
            expected: "false".into(),
            found: "true-but-edited".into()
        }]
    );
}

#[test]
fn flagd_restore_keeps_a_flag_edited_elsewhere_in_the_document() {
    let spec = flagd_spec(&["zeta", "alpha"]);
    let original = data(&[("flags.json", FLAGD_DOC)]);
    let rollback = plan_disable(&spec, "ff", &original, &all()).unwrap();
    let mut doc: serde_json::Value =
        serde_json::from_str(&rollback.apply(&original)["flags.json"]).unwrap();
    doc["flags"]["alpha"]["defaultVariant"] = "on".into(); // someone turned alpha back on by hand
    doc["flags"]["colour"]["defaultVariant"] = "blue".into(); // and edited an unrelated flag
    let now = data(&[("flags.json", &serde_json::to_string_pretty(&doc).unwrap())]);
    let restore = plan_restore(&spec, "ff", &now, &rollback.changes, &original).unwrap();
    assert_eq!(restore.conflicts.len(), 1);
    assert_eq!(restore.conflicts[0].name, "alpha");
    let got: serde_json::Value = serde_json::from_str(&restore.writes["flags.json"]).unwrap();
    assert_eq!(got["flags"]["zeta"]["defaultVariant"], "on");
    assert!(got["flags"]["zeta"]["targeting"].is_object());
    assert_eq!(
        got["flags"]["colour"]["defaultVariant"], "blue",
        "the unrelated edit is kept"
    );
}

#[test]
fn flagd_restore_brings_back_default_variant_and_targeting() {
    let spec = flagd_spec(&["zeta", "alpha"]);
    let original = data(&[("flags.json", FLAGD_DOC)]);
    let rollback = plan_disable(&spec, "ff", &original, &all()).unwrap();
    let restore = plan_restore(
        &spec,
        "ff",
        &rollback.apply(&original),
        &rollback.changes,
        &original,
    )
    .unwrap();
    let restored: serde_json::Value =
        serde_json::from_str(&restore.apply(&original)["flags.json"]).unwrap();
    let expected: serde_json::Value = serde_json::from_str(FLAGD_DOC).unwrap();
    assert_eq!(restored, expected);
    assert_eq!(
        restore.apply(&rollback.apply(&original)),
        original,
        "byte-identical after the round trip"
    );
}

// ---- laws, over generated ConfigMaps ---------------------------------------------------

fn plain_world() -> impl Strategy<Value = (Data, Vec<String>, Vec<String>, bool)> {
    let value = prop_oneof![
        Just("true".to_string()),
        Just("false".to_string()),
        "[a-z0-9]{0,6}"
    ];
    proptest::collection::btree_map("[a-z_]{1,8}", value, 1..12).prop_flat_map(|data| {
        let keys: Vec<String> = data.keys().cloned().collect();
        let n = keys.len();
        (
            Just(data),
            proptest::sample::subsequence(keys.clone(), 1..=n),
            proptest::sample::subsequence(keys, 0..=n),
            any::<bool>(),
        )
    })
}

fn flagd_world() -> impl Strategy<Value = (Data, Vec<String>, bool)> {
    let flag =
        (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(default_on, targeting, extra)| {
            let mut f = serde_json::json!({
                "state": "ENABLED",
                "variants": {"on": true, "off": false},
                "defaultVariant": if default_on { "on" } else { "off" },
            });
            if targeting {
                f["targeting"] = serde_json::json!({"if": [{"var": "beta"}, "on", "off"]});
            }
            if extra {
                f["metadata"] = serde_json::json!({"owner": "x", "n": 3});
            }
            f
        });
    (
        proptest::collection::btree_map("[a-z]{1,6}", flag, 1..8),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_flat_map(|(flags, pretty, force)| {
            let names: Vec<String> = flags.keys().cloned().collect();
            let n = names.len();
            let doc = serde_json::json!({"flags": flags, "$evaluators": {}, "metadata": {"v": 1}});
            let text = if pretty {
                serde_json::to_string_pretty(&doc).unwrap() + "\n"
            } else {
                doc.to_string()
            };
            (
                Just(data(&[("flags.json", &text), ("unrelated", "keep")])),
                proptest::sample::subsequence(names, 1..=n),
                Just(force),
            )
        })
}

proptest! {
    #[test]
    fn plain_only_selected_keys_change((before, guarded, requested, force) in plain_world()) {
        let spec = plain_spec(&guarded.iter().map(String::as_str).collect::<Vec<_>>());
        let requested: Vec<String> = requested.into_iter().filter(|f| guarded.contains(f)).collect();
        let selection = Selection { flags: requested.clone(), force_disable_all: force };
        let plan = plan_disable(&spec, "ff", &before, &selection).unwrap();
        let selected = if requested.is_empty() { guarded.clone() } else { requested };
        for key in plan.writes.keys() {
            prop_assert!(selected.contains(key) || (force && plain::is_on(&before[key])), "{key} changed");
        }
        let after = plan.apply(&before);
        for flag in &selected {
            prop_assert_eq!(&after[flag], "false");
        }
    }

    #[test]
    fn plain_applying_twice_equals_applying_once((before, guarded, _, force) in plain_world()) {
        let spec = plain_spec(&guarded.iter().map(String::as_str).collect::<Vec<_>>());
        let selection = Selection { flags: vec![], force_disable_all: force };
        let once = plan_disable(&spec, "ff", &before, &selection).unwrap().apply(&before);
        let again = plan_disable(&spec, "ff", &once, &selection).unwrap();
        prop_assert!(again.is_empty());
    }

    #[test]
    fn plain_restore_after_rollback_gives_back_the_original((before, guarded, _, force) in plain_world()) {
        let spec = plain_spec(&guarded.iter().map(String::as_str).collect::<Vec<_>>());
        let rollback = plan_disable(&spec, "ff", &before, &Selection { flags: vec![], force_disable_all: force }).unwrap();
        let restore = plan_restore(&spec, "ff", &rollback.apply(&before), &rollback.changes, &before).unwrap();
        prop_assert!(restore.conflicts.is_empty());
        prop_assert_eq!(restore.apply(&rollback.apply(&before)), before);
    }

    #[test]
    fn flagd_laws((before, guarded, force) in flagd_world()) {
        let spec = flagd_spec(&guarded.iter().map(String::as_str).collect::<Vec<_>>());
        let selection = Selection { flags: vec![], force_disable_all: force };
        let rollback = plan_disable(&spec, "ff", &before, &selection).unwrap();
        let after = rollback.apply(&before);
        // Only the document key is written, and only selected (or, forced, boolean) flags change.
        prop_assert!(rollback.writes.keys().all(|k| k == "flags.json"));
        let (old, new): (serde_json::Value, serde_json::Value) =
            (serde_json::from_str(&before["flags.json"]).unwrap(), serde_json::from_str(&after["flags.json"]).unwrap());
        for (name, flag) in new["flags"].as_object().unwrap() {
            if guarded.contains(name) || force {
                prop_assert_eq!(&flag["defaultVariant"], "off");
                prop_assert!(flag.get("targeting").is_none());
            } else {
                prop_assert_eq!(flag, &old["flags"][name]);
            }
        }
        prop_assert_eq!(&new["metadata"], &old["metadata"]);
        // Idempotent.
        prop_assert!(plan_disable(&spec, "ff", &after, &selection).unwrap().is_empty());
        // Restore gives back the original, byte for byte.
        let restore = plan_restore(&spec, "ff", &after, &rollback.changes, &before).unwrap();
        prop_assert!(restore.conflicts.is_empty());
        prop_assert_eq!(restore.apply(&after), before.clone());
        // Without the snapshot the document is still equal in meaning (keys may move).
        let restore = plan_restore(&spec, "ff", &after, &rollback.changes, &Data::new()).unwrap();
        let (a, b): (serde_json::Value, serde_json::Value) =
            (serde_json::from_str(&restore.apply(&after)["flags.json"]).unwrap(), serde_json::from_str(&before["flags.json"]).unwrap());
        prop_assert_eq!(a, b);
    }
}

#[test]
fn drift_is_a_flag_the_rollback_turned_off_that_is_on_again() {
    let spec = plain_spec(&["a", "b"]);
    let original = data(&[("a", "true"), ("b", "true")]);
    let rollback = plan_disable(&spec, "ff", &original, &all()).unwrap();
    let mut now = rollback.apply(&original);
    assert!(drifted(&spec, "ff", &now, &rollback.changes).is_empty());
    now.insert("b".into(), "true".into());
    assert_eq!(drifted(&spec, "ff", &now, &rollback.changes), ["b"]);
}

#[test]
fn the_last_writer_of_a_key_comes_from_managed_fields() {
    let cm: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "ff", "managedFields": [
            {"manager": "kubectl-client-side-apply", "operation": "Update", "time": "2026-11-27T10:00:00Z",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:a": {}, "f:b": {}}}},
            {"manager": "rollguard", "operation": "Update", "time": "2026-11-27T10:05:00Z",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:a": {}}}},
            {"manager": "argocd-controller", "operation": "Update", "time": "2026-11-27T10:06:00Z",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:b": {}}}}
        ]}
    }))
    .unwrap();
    assert_eq!(
        last_writer(&cm, "b", "rollguard").as_deref(),
        Some("argocd-controller")
    );
    assert_eq!(
        last_writer(&cm, "a", "rollguard").as_deref(),
        Some("kubectl-client-side-apply")
    );
    assert_eq!(last_writer(&cm, "zzz", "rollguard"), None);
}
