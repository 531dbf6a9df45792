//! flagd documents rolled back and restored by rollguard's flag transforms (the library
//! functions the reconciler calls; no cluster), checked with flagd's own code, not ours:
//! every document is evaluated by flagd's Python evaluator (PyPI `openfeature-flagd-core`,
//! `tests/flagd/evaluate.py`) for many evaluation contexts, and validated against the flagd
//! JSON schema that npm `@openfeature/flagd-core` ships (`tests/flagd/validate.js`). Both are
//! installed by `tests/cluster/build-tools.sh flagd-tools` (`all` includes it). Outside CI a
//! missing install skips with a message; under `CI=true` it fails.

use rollguard::api::guard::FlagsSpec;
use rollguard::flags::{self, Data, Selection};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A document with every kind of variant: big and small integers, 17-digit doubles,
/// exponents, nulls, unicode escapes, nested objects, `$evaluators`, `fractional`, `sem_ver`.
const DOCUMENT: &str = include_str!("flagd/every-variant.flagd.json");
const GUARDED: [&str; 2] = ["checkout-v2", "new-pricing"];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

struct Tools {
    python: PathBuf,
    node_modules: PathBuf,
}

/// flagd-tools, or None (outside CI) with a message when they are not installed.
fn tools() -> Option<Tools> {
    let out = Command::new("bash")
        .arg("-c")
        .arg("source tests/cluster/versions.sh && echo \"$FLAGD_TOOLS\"")
        .current_dir(repo())
        .output()
        .expect("bash runs");
    let dir = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let tools = Tools {
        python: dir.join("venv/bin/python"),
        node_modules: dir.join("node/node_modules"),
    };
    if tools.python.is_file() && tools.node_modules.join("@openfeature/flagd-core").is_dir() {
        return Some(tools);
    }
    let msg = format!(
        "flagd's evaluator or schema is not installed under {}: run `tests/cluster/build-tools.sh flagd-tools` (make tools does)",
        dir.display()
    );
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
    eprintln!("SKIPPED: {msg}");
    None
}

fn run(mut cmd: Command, input: &[u8]) -> (bool, String, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the flagd tool");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Evaluation contexts: targeting keys spread over `fractional`'s buckets, staff and other
/// emails (`$evaluators`, `starts_with`, `ends_with`, `in`), versions for `sem_ver`, tiers;
/// some attributes missing.
fn contexts() -> Vec<serde_json::Value> {
    let emails = [
        Some("ana@example.com"),
        Some("admin@shop.fr"),
        Some("bob@shop.fr"),
        Some("carl@other.org"),
        None,
    ];
    let versions = [Some("1.0.0"), Some("1.6.2"), Some("2.1.0"), None];
    let tiers = [Some("gold"), Some("free"), None];
    (0..40)
        .map(|i| {
            let mut ctx = serde_json::json!({ "targetingKey": format!("user-{i}") });
            for (key, values) in [
                ("email", &emails[..]),
                ("version", &versions[..]),
                ("tier", &tiers[..]),
            ] {
                if let Some(v) = values[i % values.len()] {
                    ctx[key] = v.into();
                }
            }
            ctx
        })
        .collect()
}

/// Per flag, flagd's result for each context, as the evaluator printed it (numbers exact).
type Evaluation = BTreeMap<String, Vec<String>>;

fn evaluate(tools: &Tools, document: &str) -> Evaluation {
    let mut cmd = Command::new(&tools.python);
    cmd.arg(repo().join("tests/flagd/evaluate.py"));
    let input = serde_json::json!({ "document": document, "contexts": contexts() });
    let (ok, out, err) = run(cmd, input.to_string().as_bytes());
    assert!(ok, "flagd's evaluator failed: {err}\n{document}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("evaluator output {out:?}: {e}"))
}

/// The document is valid against the flagd schema (flagd-core's strict parse).
fn assert_schema_valid(tools: &Tools, document: &str) {
    let mut cmd = Command::new("node");
    cmd.arg(repo().join("tests/flagd/validate.js"))
        .env("NODE_PATH", &tools.node_modules);
    let (ok, out, err) = run(cmd, document.as_bytes());
    assert!(
        ok && out.trim() == "valid",
        "not a valid flagd document: {out}{err}\n{document}"
    );
}

fn result(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap()
}

/// The exact text of flag `name`'s object in `document`.
fn flag_text<'a>(document: &'a str, name: &str) -> &'a str {
    let key = format!("\"{name}\"");
    assert_eq!(document.matches(&key).count(), 1, "{key} once");
    let at = document.find(&key).unwrap() + key.len();
    let rest = document[at..].trim_start().strip_prefix(':').unwrap();
    let start = rest.len() - rest.trim_start().len();
    let mut values =
        serde_json::Deserializer::from_str(&rest[start..]).into_iter::<serde::de::IgnoredAny>();
    values.next().unwrap().unwrap();
    &rest[start..start + values.byte_offset()]
}

fn spec(guarded: &[&str]) -> FlagsSpec {
    serde_json::from_value(serde_json::json!({
        "configMapRef": {"name": "feature-flags"},
        "format": "flagd",
        "key": "flags.json",
        "guarded": guarded,
    }))
    .unwrap()
}

fn document(data: &Data) -> &str {
    &data["flags.json"]
}

#[test]
fn flagd_rollback_turns_off_only_the_guarded_flags_and_restore_gives_back_every_evaluation() {
    let Some(tools) = tools() else { return };
    let spec = spec(&GUARDED);
    let original: Data = [("flags.json".to_string(), DOCUMENT.to_string())].into();
    assert_schema_valid(&tools, DOCUMENT);
    let before = evaluate(&tools, DOCUMENT);

    // The contexts exercise the targeting that the rollback removes: staff see checkout-v2,
    // fractional puts users in both new-pricing buckets.
    let variants = |flag: &str, eval: &Evaluation| -> Vec<String> {
        eval[flag]
            .iter()
            .map(|r| result(r)["variant"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert!(variants("checkout-v2", &before).contains(&"on".to_string()));
    let pricing = variants("new-pricing", &before);
    assert!(pricing.contains(&"discount".into()) && pricing.contains(&"huge".into()));

    let rollback =
        flags::plan_disable(&spec, "feature-flags", &original, &Selection::default()).unwrap();
    let rolled_back = rollback.apply(&original);
    assert_schema_valid(&tools, document(&rolled_back));
    let after = evaluate(&tools, document(&rolled_back));
    for (flag, results) in &before {
        if GUARDED.contains(&flag.as_str()) {
            let off = if flag == "checkout-v2" {
                serde_json::json!(false)
            } else {
                serde_json::json!(0)
            };
            for r in &after[flag] {
                let r = result(r);
                assert_eq!(
                    (&r["variant"], &r["value"], &r["reason"]),
                    (&"off".into(), &off, &"STATIC".into()),
                    "{flag}"
                );
            }
        } else {
            // Same value (to the last digit), variant and reason for every context.
            assert_eq!(&after[flag], results, "{flag} evaluates differently");
            assert_eq!(
                flag_text(document(&rolled_back), flag),
                flag_text(DOCUMENT, flag),
                "{flag}'s bytes changed"
            );
        }
    }

    // Restored from the snapshot: the same bytes, so the same evaluations.
    let restore = flags::plan_restore(
        &spec,
        "feature-flags",
        &rolled_back,
        &rollback.changes,
        &original,
    )
    .unwrap();
    let restored = restore.apply(&rolled_back);
    assert_eq!(document(&restored), DOCUMENT, "restore is byte-identical");
    assert_eq!(evaluate(&tools, document(&restored)), before);

    // Without the snapshot the recorded members go back in place: not the same bytes, but
    // flagd evaluates every flag as before.
    let restore = flags::plan_restore(
        &spec,
        "feature-flags",
        &rolled_back,
        &rollback.changes,
        &Data::new(),
    )
    .unwrap();
    let restored = restore.apply(&rolled_back);
    assert_schema_valid(&tools, document(&restored));
    assert_eq!(evaluate(&tools, document(&restored)), before);
}

#[test]
fn flagd_force_disable_all_turns_off_every_boolean_flag_and_disables_one_without_a_false_variant() {
    let Some(tools) = tools() else { return };
    let spec = spec(&["checkout-v2"]);
    let original: Data = [("flags.json".to_string(), DOCUMENT.to_string())].into();
    let before = evaluate(&tools, DOCUMENT);
    assert!(
        before["always-on"]
            .iter()
            .all(|r| result(r)["value"] == true),
        "always-on is on before"
    );
    let selection = Selection {
        flags: vec![],
        force_disable_all: true,
    };
    let rollback = flags::plan_disable(&spec, "feature-flags", &original, &selection).unwrap();
    assert_eq!(rollback.disabled_by_state, ["always-on"]);
    let rolled_back = rollback.apply(&original);
    assert_schema_valid(&tools, document(&rolled_back));
    let after = evaluate(&tools, document(&rolled_back));
    for (flag, results) in &before {
        for (i, r) in after[flag].iter().enumerate() {
            let r = result(r);
            match flag.as_str() {
                "checkout-v2" => assert_eq!(r["variant"], "off"),
                "beta-banner" => assert_eq!(r["variant"], "hidden"),
                // flagd answers the code default (the evaluator script passes false).
                "always-on" => assert_eq!(
                    (&r["reason"], &r["value"]),
                    (&"DISABLED".into(), &false.into())
                ),
                _ => assert_eq!(after[flag][i], results[i], "{flag} evaluates differently"),
            }
        }
    }
    let restore = flags::plan_restore(
        &spec,
        "feature-flags",
        &rolled_back,
        &rollback.changes,
        &original,
    )
    .unwrap();
    let restored = restore.apply(&rolled_back);
    assert_eq!(document(&restored), DOCUMENT, "restore is byte-identical");
    assert_eq!(evaluate(&tools, document(&restored)), before);
}
