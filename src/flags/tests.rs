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

    // Key order is kept (zeta before alpha, $schema first, metadata last), and so are the
    // two-space indentation, the inline objects and the trailing newline.
    let positions: Vec<usize> = [
        "\"$schema\"",
        "\"zeta\"",
        "\"alpha\"",
        "\"$evaluators\"",
        "\"metadata\": {\"version\"",
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

/// A flagd document with every kind of variant and the layouts people write: big and small
/// integers, 17-digit doubles, exponents, nulls, unicode escapes, nested inline objects,
/// `$evaluators`, `fractional`, `sem_ver`, tabs and odd spacing. tests/flagd_conformance.rs
/// evaluates the same document with flagd's own evaluator.
const EVERY_VARIANT: &str = include_str!("../../tests/flagd/every-variant.flagd.json");

/// `text` with `from` (which must occur exactly once) replaced by `to`.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "{from:?} must occur once");
    text.replacen(from, to, 1)
}

const CHECKOUT_TARGETING: &str =
    "\n      \"targeting\": {\"if\": [{\"$ref\": \"isStaff\"}, \"on\", \"off\"]},";
const PRICING_DEFAULT: &str = "\"defaultVariant\": \"discount\",";
const PRICING_TARGETING: &str = ",\n      \"targeting\": {\n        \"fractional\": [\n          [\"discount\", 50],\n          [\"huge\", 50]\n        ]\n      }";

#[test]
fn flagd_rollback_rewrites_only_the_bytes_of_the_flags_it_changes() {
    let spec = flagd_spec(&["checkout-v2", "new-pricing"]);
    let original = data(&[("flags.json", EVERY_VARIANT), ("other", "x")]);
    let rollback = plan_disable(&spec, "ff", &original, &all()).unwrap();
    // Exactly the original text, less the two targeting members, with new-pricing's default
    // variant switched: every other byte (numbers, escapes, nulls, layout) as written.
    let expected = replace_once(EVERY_VARIANT, CHECKOUT_TARGETING, "");
    let expected = replace_once(&expected, PRICING_DEFAULT, "\"defaultVariant\": \"off\",");
    let expected = replace_once(&expected, PRICING_TARGETING, "");
    assert_eq!(rollback.writes.keys().collect::<Vec<_>>(), ["flags.json"]);
    assert_eq!(rollback.writes["flags.json"], expected);
    assert_eq!(
        rollback.changes,
        vec![
            FlagChange {
                name: "checkout-v2".into(),
                from: r#"{"defaultVariant":"off","targeting":{"if":[{"$ref":"isStaff"},"on","off"]}}"#.into(),
                to: r#"{"defaultVariant":"off"}"#.into(),
            },
            FlagChange {
                name: "new-pricing".into(),
                from: r#"{"defaultVariant":"discount","targeting":{"fractional":[["discount",50],["huge",50]]}}"#.into(),
                to: r#"{"defaultVariant":"off"}"#.into(),
            },
        ]
    );
    assert!(rollback.disabled_by_state.is_empty());
    assert!(disabled_by_state(&rollback.changes).is_empty());

    // Restore with the snapshot: byte-identical.
    let after = rollback.apply(&original);
    let restore = plan_restore(&spec, "ff", &after, &rollback.changes, &original).unwrap();
    assert!(restore.conflicts.is_empty());
    assert_eq!(
        restore.apply(&after),
        original,
        "byte-identical after the round trip"
    );

    // Restore without the snapshot: the recorded members come back in place (targeting last,
    // compact), still nothing else changes.
    let restore = plan_restore(&spec, "ff", &after, &rollback.changes, &Data::new()).unwrap();
    let expected = replace_once(
        &expected,
        "\"metadata\": {\"owner\": \"checkout\"}\n",
        "\"metadata\": {\"owner\": \"checkout\"},\n      \"targeting\": {\"if\":[{\"$ref\":\"isStaff\"},\"on\",\"off\"]}\n",
    );
    let expected = replace_once(
        &expected,
        "\"defaultVariant\": \"off\",\n      \"state\"",
        "\"defaultVariant\": \"discount\",\n      \"state\"",
    );
    let expected = replace_once(
        &expected,
        "\"huge\": 98765432109876543210987\n      }\n",
        "\"huge\": 98765432109876543210987\n      },\n      \"targeting\": {\"fractional\":[[\"discount\",50],[\"huge\",50]]}\n",
    );
    assert_eq!(restore.writes["flags.json"], expected);
}

#[test]
fn flagd_an_explicit_null_default_variant_comes_back_as_written() {
    let spec = flagd_spec(&["no-default"]);
    let original = data(&[("flags.json", EVERY_VARIANT)]);
    let rollback = plan_disable(&spec, "ff", &original, &all()).unwrap();
    let after = rollback.apply(&original);
    assert_eq!(
        after["flags.json"],
        replace_once(
            EVERY_VARIANT,
            "\"defaultVariant\": null",
            "\"defaultVariant\": \"off\""
        )
    );
    assert_eq!(rollback.changes[0].from, r#"{"defaultVariant":null}"#);
    for snapshot in [original.clone(), Data::new()] {
        let restore = plan_restore(&spec, "ff", &after, &rollback.changes, &snapshot).unwrap();
        assert_eq!(restore.apply(&after), original);
    }
}

#[test]
fn flagd_force_disable_all_uses_state_disabled_for_a_boolean_flag_without_a_false_variant() {
    let spec = flagd_spec(&["checkout-v2"]);
    let original = data(&[("flags.json", EVERY_VARIANT)]);
    let selection = Selection {
        flags: vec![],
        force_disable_all: true,
    };
    let rollback = plan_disable(&spec, "ff", &original, &selection).unwrap();
    let expected = replace_once(EVERY_VARIANT, CHECKOUT_TARGETING, "");
    // always-on has only a `true` variant: it is disabled by state.
    let expected = replace_once(
        &expected,
        r#""always-on": {"state": "ENABLED","#,
        r#""always-on": {"state": "DISABLED","#,
    );
    // beta-banner (default off, targeting may turn it on) loses its targeting, tabs kept.
    let expected = replace_once(
        &expected,
        "\"hidden\" ,\n\t\"targeting\" : { \"if\" : [ { \"in\" : [ \"@example.com\" , { \"var\" : \"email\" } ] } , \"shown\" , null ] }\n",
        "\"hidden\"\n",
    );
    assert_eq!(rollback.writes["flags.json"], expected);
    assert_eq!(rollback.disabled_by_state, ["always-on"]);
    assert_eq!(
        disabled_by_state(&rollback.changes),
        ["always-on"],
        "read from the record too"
    );
    let names: Vec<_> = rollback.changes.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["checkout-v2", "always-on", "beta-banner"]);
    assert_eq!(rollback.changes[1].from, r#"{"state":"ENABLED"}"#);
    assert_eq!(rollback.changes[1].to, r#"{"state":"DISABLED"}"#);

    let after = rollback.apply(&original);
    // Applying twice equals once.
    assert!(
        plan_disable(&spec, "ff", &after, &selection)
            .unwrap()
            .is_empty()
    );
    // Turned back on by hand: drift.
    let mut edited = after.clone();
    edited.insert(
        "flags.json".into(),
        after["flags.json"].replace(
            r#""always-on": {"state": "DISABLED","#,
            r#""always-on": {"state": "ENABLED","#,
        ),
    );
    assert_eq!(
        drifted(&spec, "ff", &edited, &rollback.changes),
        ["always-on"]
    );
    // Restored byte for byte.
    let restore = plan_restore(&spec, "ff", &after, &rollback.changes, &original).unwrap();
    assert_eq!(restore.apply(&after), original);
}

#[test]
fn flagd_restore_keeps_other_flags_bytes_edited_since_the_rollback() {
    let spec = flagd_spec(&["checkout-v2"]);
    let original = data(&[("flags.json", EVERY_VARIANT)]);
    let rollback = plan_disable(&spec, "ff", &original, &all()).unwrap();
    let after = rollback.apply(&original);
    // Someone edits another flag by hand meanwhile, in their own style.
    let edited_text = replace_once(
        &after["flags.json"],
        r#""big": 98765432109876543210987,"#,
        r#""big": 98765432109876543210988 ,"#,
    );
    let edited = data(&[("flags.json", &edited_text)]);
    let restore = plan_restore(&spec, "ff", &edited, &rollback.changes, &original).unwrap();
    assert_eq!(
        restore.apply(&edited)["flags.json"],
        replace_once(
            EVERY_VARIANT,
            r#""big": 98765432109876543210987,"#,
            r#""big": 98765432109876543210988 ,"#
        )
    );
}

#[test]
fn flagd_restore_of_a_flag_edited_since_puts_its_members_back_as_the_snapshot_wrote_them() {
    let spec = flagd_spec(&["new-pricing"]);
    let original = data(&[("flags.json", EVERY_VARIANT)]);
    let rollback = plan_disable(&spec, "ff", &original, &all()).unwrap();
    let after = rollback.apply(&original);
    // Someone edits another member of the rolled-back flag itself.
    let edited = data(&[(
        "flags.json",
        &replace_once(&after["flags.json"], "\"off\": 0,", "\"off\": 0.0,"),
    )]);
    let restore = plan_restore(&spec, "ff", &edited, &rollback.changes, &original).unwrap();
    assert!(restore.conflicts.is_empty());
    // defaultVariant and the multi-line targeting come back as written, the edit stays.
    assert_eq!(
        restore.apply(&edited)["flags.json"],
        replace_once(EVERY_VARIANT, "\"off\": 0,", "\"off\": 0.0,")
    );
}

#[test]
fn flagd_duplicate_and_oddly_spaced_members_are_edited_where_they_are() {
    let doc = "{ \"flags\" : {\"a\":{\"targeting\":{\"if\":[true,\"on\"]} , \"defaultVariant\":\"on\",\"targeting\":1e2,\"variants\":{\"on\":true,\"off\":false},\"state\":\"ENABLED\"}} }";
    let plan = plan_disable(
        &flagd_spec(&["a"]),
        "ff",
        &data(&[("flags.json", doc)]),
        &all(),
    )
    .unwrap();
    assert_eq!(
        plan.writes["flags.json"],
        "{ \"flags\" : {\"a\":{\"defaultVariant\":\"off\",\"variants\":{\"on\":true,\"off\":false},\"state\":\"ENABLED\"}} }"
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

/// JSON whitespace as people write it between tokens.
fn ws() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(""),
        Just(" "),
        Just("\n      "),
        Just("\t"),
        Just("\r\n  ")
    ]
    .prop_map(String::from)
}

/// A JSON value as text, with the literals a re-encoder would change: big integers,
/// 17-digit doubles, exponents, `-0`, trailing zeros, escapes, nulls, nesting.
fn raw_json() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("0"),
        Just("-0"),
        Just("1"),
        Just("98765432109876543210987"),
        Just("-9007199254740993"),
        Just("-97.67280889488873"),
        Just("0.30000000000000004"),
        Just("1e3"),
        Just("6.02214076E+23"),
        Just("5e-324"),
        Just("2.50"),
        Just("null"),
        Just("true"),
        Just("false"),
        Just(r#""caf\u00e9""#),
        Just(r#""\ud83d\ude00""#),
        Just(r#""tab\t\"q\" \\ \/""#),
        Just("\"é 😀\""),
    ]
    .prop_map(String::from);
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            (proptest::collection::vec(inner.clone(), 0..4), ws())
                .prop_map(|(items, w)| format!("[{w}{}{w}]", items.join(&format!(",{w}")))),
            (proptest::collection::vec(("[a-z]{1,3}", inner), 0..4), ws()).prop_map(
                |(members, w)| {
                    let members: Vec<String> = members
                        .iter()
                        .map(|(k, v)| format!("\"{k}\"{w}:{w}{v}"))
                        .collect();
                    format!("{{{w}{}{w}}}", members.join(&format!(",{w}")))
                }
            ),
        ]
    })
}

/// A flag object's text: its members in any order, with any spacing; `defaultVariant`
/// absent, null, or a (sometimes escaped) variant name; `targeting` present or not.
fn flag_text() -> impl Strategy<Value = String> {
    let default = prop_oneof![
        Just(None),
        Just(Some("null")),
        Just(Some(r#""on""#)),
        Just(Some(r#""off""#)),
        Just(Some(r#""\u006fn""#)),
    ];
    (
        (raw_json(), raw_json(), default, any::<bool>()),
        (
            proptest::option::of(raw_json()),
            proptest::option::of(raw_json()),
        ),
        (ws(), ws(), ws()),
    )
        .prop_flat_map(
            |((off, on, default, disabled), (targeting, metadata), (a, b, c))| {
                let state = if disabled {
                    "\"DISABLED\""
                } else {
                    "\"ENABLED\""
                };
                let mut members = vec![
                    ("state", state.to_string()),
                    (
                        "variants",
                        format!("{{{a}\"off\"{b}:{b}{off},{c}\"on\":{on}{a}}}"),
                    ),
                ];
                if let Some(d) = default {
                    members.push(("defaultVariant", d.to_string()));
                }
                if let Some(t) = targeting {
                    members.push(("targeting", format!("{{\"if\":[{t},\"on\",\"off\"]}}")));
                }
                if let Some(m) = metadata {
                    members.push(("metadata", format!("{{\"m\":{m}}}")));
                }
                (Just(members).prop_shuffle(), Just((a, b, c)))
            },
        )
        .prop_map(|(members, (a, b, c))| {
            let members: Vec<String> = members
                .iter()
                .map(|(k, v)| format!("\"{k}\"{b}:{c}{v}"))
                .collect();
            format!("{{{a}{}{a}}}", members.join(&format!(",{c}")))
        })
}

/// A flagd document as parts: the text before the flags, each flag's separator + key and
/// its object, and the text after. Joined, they are the document.
#[derive(Clone, Debug)]
struct DocParts {
    head: String,
    flags: Vec<(String, String, String)>, // (separator and key, name, flag text)
    tail: String,
}

impl DocParts {
    fn text(&self) -> String {
        let mut out = self.head.clone();
        for (lead, _, flag) in &self.flags {
            out.push_str(lead);
            out.push_str(flag);
        }
        out + &self.tail
    }

    /// Checks that `text` is this document with only the flags in `changed` rewritten:
    /// every other byte identical. Returns each changed flag's new text.
    fn only_changed(&self, text: &str, changed: &[&str]) -> Result<Vec<(String, String)>, String> {
        let mut rest = text
            .strip_prefix(self.head.as_str())
            .ok_or("the text before the flags changed")?;
        let mut rewritten = Vec::new();
        for (lead, name, flag) in &self.flags {
            rest = rest
                .strip_prefix(lead.as_str())
                .ok_or(format!("the bytes before flag {name} changed"))?;
            if changed.contains(&name.as_str()) {
                let mut values =
                    serde_json::Deserializer::from_str(rest).into_iter::<serde::de::IgnoredAny>();
                values
                    .next()
                    .ok_or("no value")?
                    .map_err(|e| e.to_string())?;
                let end = values.byte_offset();
                rewritten.push((name.clone(), rest[..end].to_string()));
                rest = &rest[end..];
            } else {
                rest = rest
                    .strip_prefix(flag.as_str())
                    .ok_or(format!("the bytes of untouched flag {name} changed"))?;
            }
        }
        (rest == self.tail)
            .then_some(rewritten)
            .ok_or("the text after the flags changed".into())
    }
}

fn flagd_doc_parts() -> impl Strategy<Value = DocParts> {
    (
        proptest::collection::btree_set("[a-z]{1,6}", 1..7),
        (ws(), ws(), raw_json(), any::<bool>()),
    )
        .prop_flat_map(|(names, rest)| {
            let n = names.len();
            (
                Just(names.into_iter().collect::<Vec<_>>()),
                proptest::collection::vec((flag_text(), ws()), n),
                Just(rest),
            )
        })
        .prop_map(|(names, flags, (a, b, evaluators, newline))| {
            let flags: Vec<(String, String, String)> = names
                .into_iter()
                .zip(flags)
                .enumerate()
                .map(|(i, (name, (flag, w)))| {
                    let comma = if i == 0 { "" } else { "," };
                    (format!("{comma}{w}\"{name}\"{b}:{a}"), name, flag)
                })
                .collect();
            DocParts {
                head: format!("{{{a}\"$schema\":{b}\"https://flagd.dev/schema/v0/flags.json\",{a}\"flags\"{b}:{b}{{"),
                flags,
                tail: format!(
                    "{a}}},{a}\"$evaluators\":{b}{{\"e\":{evaluators}}}{a}}}{}",
                    if newline { "\n" } else { "" }
                ),
            }
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
    #[test]
    fn flagd_edits_only_the_bytes_of_changed_flags(
        parts in flagd_doc_parts(),
        pick in proptest::collection::vec(any::<bool>(), 7),
        force in any::<bool>(),
    ) {
        let names: Vec<&str> = parts.flags.iter().map(|(_, n, _)| n.as_str()).collect();
        let guarded: Vec<&str> = names.iter().zip(&pick).filter(|(_, p)| **p).map(|(n, _)| *n).collect();
        prop_assume!(!guarded.is_empty());
        let spec = flagd_spec(&guarded);
        let before = data(&[("flags.json", &parts.text()), ("unrelated", "keep")]);
        let selection = Selection { flags: vec![], force_disable_all: force };
        let rollback = plan_disable(&spec, "ff", &before, &selection).unwrap();
        let after = rollback.apply(&before);
        let changed: Vec<&str> = rollback.changes.iter().map(|c| c.name.as_str()).collect();
        // Untouched flags and everything around them: the same bytes.
        let rewritten = parts.only_changed(&after["flags.json"], &changed).map_err(TestCaseError::fail)?;
        for (name, text) in &rewritten {
            let flag: serde_json::Value = serde_json::from_str(text).unwrap();
            if guarded.contains(&name.as_str()) {
                prop_assert_eq!(&flag["defaultVariant"], "off");
                prop_assert!(flag.get("targeting").is_none());
            }
        }
        for g in &guarded {
            let flag: serde_json::Value = serde_json::from_str(&after["flags.json"]).unwrap();
            prop_assert_eq!(&flag["flags"][g]["defaultVariant"], "off", "{}", after["flags.json"]);
        }
        // Idempotent.
        prop_assert!(plan_disable(&spec, "ff", &after, &selection).unwrap().is_empty());
        // Restore with the snapshot: byte-identical.
        let restore = plan_restore(&spec, "ff", &after, &rollback.changes, &before).unwrap();
        prop_assert!(restore.conflicts.is_empty());
        prop_assert_eq!(restore.apply(&after), before.clone());
        // Restore without it: still only the changed flags' bytes differ, and they mean what
        // they meant before.
        let restore = plan_restore(&spec, "ff", &after, &rollback.changes, &Data::new()).unwrap();
        let restored = restore.apply(&after);
        let rewritten = parts.only_changed(&restored["flags.json"], &changed).map_err(TestCaseError::fail)?;
        for (name, text) in rewritten {
            let original = &parts.flags.iter().find(|(_, n, _)| *n == name).unwrap().2;
            let (a, b): (serde_json::Value, serde_json::Value) =
                (serde_json::from_str(&text).unwrap(), serde_json::from_str(original).unwrap());
            prop_assert_eq!(a, b);
        }
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

/// Whether a rollback of every guarded flag, planned on `now`, may keep a snapshot of `then`.
fn stands(spec: &FlagsSpec, then: &Data, now: &Data) -> bool {
    let plan = plan_disable(spec, "ff", now, &all()).unwrap();
    let planned_then = plan_disable(spec, "ff", then, &all()).unwrap();
    snapshot_stands_for(spec, "ff", now, &plan, then, &planned_then)
}

#[test]
fn a_snapshot_stands_for_a_state_that_differs_only_where_the_plan_does_not_write() {
    let spec = plain_spec(&["a", "b"]);
    let then = data(&[("a", "true"), ("b", "false"), ("other", "1")]);
    let now = data(&[("a", "true"), ("b", "false"), ("other", "2")]);
    assert!(stands(&spec, &then, &now));
}

#[test]
fn a_snapshot_does_not_stand_for_a_state_where_a_written_flag_changed() {
    let spec = plain_spec(&["a", "b"]);
    let then = data(&[("a", "true"), ("b", "false")]);
    for now in [
        data(&[("a", "yes"), ("b", "false")]), // the same flag on, in other words
        data(&[("a", "true"), ("b", "true")]), // another guarded flag turned on since
    ] {
        assert!(!stands(&spec, &then, &now), "{now:?}");
    }
}

#[test]
fn a_flagd_snapshot_stands_while_other_flags_of_the_document_change() {
    // Another flag edited, the document laid out anew, and a written flag's metadata (a
    // restore gives back only what the rollback changed: defaultVariant and targeting).
    let spec = flagd_spec(&["zeta", "alpha"]);
    let then = data(&[("flags.json", FLAGD_DOC)]);
    let mut doc: serde_json::Value = serde_json::from_str(FLAGD_DOC).unwrap();
    doc["flags"]["colour"]["defaultVariant"] = "blue".into();
    doc["flags"]["zeta"]["metadata"]["owner"] = "team-c".into();
    let now = data(&[("flags.json", &serde_json::to_string_pretty(&doc).unwrap())]);
    assert!(stands(&spec, &then, &now));
}

#[test]
fn a_flagd_snapshot_does_not_stand_once_a_written_flag_was_edited() {
    // zeta's targeting changed since the snapshot: its on/off state did not, but a later
    // restore from the snapshot would give back the old targeting.
    let spec = flagd_spec(&["zeta", "alpha"]);
    let then = data(&[("flags.json", FLAGD_DOC)]);
    let mut doc: serde_json::Value = serde_json::from_str(FLAGD_DOC).unwrap();
    doc["flags"]["zeta"]["targeting"] = serde_json::json!({"if": [true, "on", "off"]});
    let now = data(&[("flags.json", &serde_json::to_string_pretty(&doc).unwrap())]);
    assert!(!stands(&spec, &then, &now));
}
