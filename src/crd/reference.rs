//! The README's field reference, generated from the CRDs' OpenAPI schema (`rollguard crd
//! --reference`), so every field, type, default and description there is the one the API
//! server enforces. `make readme-reference` splices it into README.md between the markers;
//! `tests/readme_in_sync.rs` fails when the README's copy is stale.

use serde_json::Value;

/// The line before the generated reference in README.md.
pub const BEGIN_MARKER: &str = "<!-- BEGIN CRD REFERENCE -->";
/// The line after it.
pub const END_MARKER: &str = "<!-- END CRD REFERENCE -->";

/// One row of a field table.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// `spec.triggers[].for`: arrays of objects are written `[]`.
    pub path: String,
    /// `string`, `integer ≥ 1`, `` `plain` \| `flagd` ``, `[]string`, `map[string]string`, …
    pub ty: String,
    pub required: bool,
    /// The schema's default as JSON (strings unquoted), if any.
    pub default: Option<String>,
    pub description: String,
}

/// The reference of both kinds as Markdown (without the markers).
pub fn markdown() -> String {
    let mut out = String::from(
        "Generated from the CRD schema by `make readme-reference` (`rollguard crd --reference`); \
         `tests/readme_in_sync.rs` fails when this copy is stale. *Required* fields have no \
         default; a field with a default may be left out. Durations are Go durations \
         (`500ms`, `30s`, `5m`, `1h30m`).\n",
    );
    for crd in super::definitions() {
        let Ok(crd) = serde_json::to_value(&crd) else {
            continue;
        };
        let names = &crd["spec"]["names"];
        let kind = names["kind"].as_str().unwrap_or_default();
        let short: Vec<String> = names["shortNames"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|s| format!("`{s}`"))
                    .collect()
            })
            .unwrap_or_default();
        let version = &crd["spec"]["versions"][0];
        let schema = &version["schema"]["openAPIV3Schema"];
        out.push_str(&format!(
            "\n### {kind}\n\n`{}/{}`, namespaced, short name {}. {}\n",
            crd["spec"]["group"].as_str().unwrap_or_default(),
            version["name"].as_str().unwrap_or_default(),
            short.join(", "),
            one_line(schema["description"].as_str().unwrap_or_default()),
        ));
        for part in ["spec", "status"] {
            let mut fields = Vec::new();
            collect(&schema["properties"][part], part, false, &mut fields);
            // The root row says nothing the heading does not.
            fields.retain(|f| f.path != part);
            let (written_by, always) = if part == "spec" {
                (
                    "written by you or GitOps; the operator never writes it",
                    "*required*",
                )
            } else {
                ("written by the operator", "always set")
            };
            out.push_str(&format!(
                "\n#### {kind} `{part}` — {written_by}\n\n{}",
                table(&fields, always)
            ));
        }
    }
    out
}

/// Replaces what lies between the markers of `readme` with `reference`; None when the
/// markers are missing or out of order.
pub fn splice(readme: &str, reference: &str) -> Option<String> {
    let begin = readme.find(BEGIN_MARKER)? + BEGIN_MARKER.len();
    let end = begin + readme[begin..].find(END_MARKER)?;
    Some(format!(
        "{}\n{}\n{}",
        &readme[..begin],
        reference.trim_end(),
        &readme[end..]
    ))
}

/// Walks one schema node depth-first, parents before children, properties in name order.
pub fn collect(node: &Value, path: &str, required: bool, out: &mut Vec<Field>) {
    out.push(Field {
        path: path.to_string(),
        ty: type_of(node),
        required,
        default: node.get("default").map(render_default),
        description: description(node),
    });
    if is_condition_list(node) {
        // metav1.Condition: documented once, under Troubleshooting, not field by field.
        return;
    }
    let (object, prefix) = match node.get("type").and_then(Value::as_str) {
        Some("array") => (&node["items"], format!("{path}[]")),
        _ => (node, path.to_string()),
    };
    let Some(properties) = object.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required: Vec<&str> = object
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut names: Vec<&String> = properties.keys().collect();
    names.sort();
    for name in names {
        collect(
            &properties[name],
            &format!("{prefix}.{name}"),
            required.contains(&name.as_str()),
            out,
        );
    }
}

fn is_condition_list(node: &Value) -> bool {
    node["items"]["description"]
        .as_str()
        .is_some_and(|d| d.starts_with("Condition contains details"))
}

/// A short type: enums list their values, arrays and maps their element type, numbers
/// their bounds.
pub fn type_of(node: &Value) -> String {
    if let Some(values) = node.get("enum").and_then(Value::as_array) {
        let values: Vec<String> = values
            .iter()
            .filter_map(Value::as_str)
            .map(|v| format!("`{v}`"))
            .collect();
        if !values.is_empty() {
            return values.join(" \\| ");
        }
    }
    let ty = node.get("type").and_then(Value::as_str).unwrap_or("any");
    match ty {
        "array" if is_condition_list(node) => "[]Condition".into(),
        "array" => {
            let item = &node["items"];
            let count = bounds(node, "minItems", "maxItems", " items");
            if item.get("properties").is_some() {
                return format!("[]object{count}");
            }
            let inner = type_of(item);
            match item.get("enum") {
                Some(_) => format!("[]string{count}, each {inner}"),
                None => format!("[]{inner}{count}"),
            }
        }
        "object" => match node.get("additionalProperties") {
            Some(v) if v.is_object() => format!("map[string]{}", type_of(v)),
            _ => "object".into(),
        },
        "string" => match node.get("format").and_then(Value::as_str) {
            Some("date-time") => "timestamp".into(),
            _ => "string".into(),
        },
        "integer" | "number" => format!("{ty}{}", bounds(node, "minimum", "maximum", "")),
        other => other.into(),
    }
}

fn bounds(node: &Value, min: &str, max: &str, unit: &str) -> String {
    let num = |k: &str| node.get(k).and_then(Value::as_f64).map(|v| format!("{v}"));
    match (num(min), num(max)) {
        (Some(lo), Some(hi)) => format!(" ({lo}–{hi}{unit})"),
        (Some(lo), None) => format!(" (≥ {lo}{unit})"),
        (None, Some(hi)) => format!(" (≤ {hi}{unit})"),
        (None, None) => String::new(),
    }
}

fn render_default(value: &Value) -> String {
    match value {
        Value::String(s) => format!("`\"{s}\"`"),
        other => format!("`{other}`"),
    }
}

fn description(node: &Value) -> String {
    let text = node
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default();
    // k8s-openapi's generic wording for metav1.Time says nothing about the field.
    if text.starts_with("Time is a wrapper around time.Time")
        || text.starts_with("MicroTime is version of Time")
    {
        return String::new();
    }
    one_line(text)
}

/// Joins lines into one and escapes what would break a table cell.
fn one_line(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// `always` is what the default column says of a required field without a default.
fn table(fields: &[Field], always: &str) -> String {
    let mut out = String::from("| field | type | default | description |\n|---|---|---|---|\n");
    for f in fields {
        let default = match (&f.default, f.required) {
            (Some(d), _) => d.clone(),
            (None, true) => always.into(),
            (None, false) => String::new(),
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            f.path, f.ty, default, f.description
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_are_walked_with_paths_types_defaults_and_required() {
        let schema = json!({
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "description": "The\nname."},
                "format": {"type": "string", "enum": ["plain", "flagd"], "default": "plain"},
                "items": {"type": "array", "items": {"type": "object", "properties": {
                    "retain": {"type": "integer", "minimum": 1.0, "default": 10}}}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            }
        });
        let mut fields = Vec::new();
        collect(&schema, "spec", false, &mut fields);
        let paths: Vec<&str> = fields.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec",
                "spec.format",
                "spec.items",
                "spec.items[].retain",
                "spec.labels",
                "spec.name"
            ]
        );
        assert_eq!(fields[1].ty, "`plain` \\| `flagd`");
        assert_eq!(fields[1].default.as_deref(), Some("`\"plain\"`"));
        assert_eq!(fields[2].ty, "[]object");
        assert_eq!(fields[3].ty, "integer (≥ 1)");
        assert_eq!(fields[3].default.as_deref(), Some("`10`"));
        assert_eq!(fields[4].ty, "map[string]string");
        assert!(fields[5].required && fields[5].description == "The name.");
    }

    #[test]
    fn every_spec_field_of_both_kinds_is_in_the_reference() {
        let md = markdown();
        for needle in [
            "`spec.flags.offVariant`",
            "`spec.triggers[].for`",
            "`spec.triggers[].baseline.query`",
            "`spec.notify[].on`",
            "`spec.slo.stability`",
            "`spec.guardRef.name`",
            "`spec.snapshotName`",
            "`status.durations.total`",
            "`status.conditions`",
        ] {
            assert!(md.contains(needle), "{needle} missing");
        }
        assert!(
            md.contains("| `spec.interval` | string | `\"15s\"` |"),
            "{md}"
        );
        assert!(!md.contains("`status.conditions[].reason`"));
    }

    #[test]
    fn splice_replaces_only_between_the_markers() {
        let readme = format!("a\n{BEGIN_MARKER}\nold\n{END_MARKER}\nb\n");
        let new = splice(&readme, "new\n").unwrap();
        assert_eq!(new, format!("a\n{BEGIN_MARKER}\nnew\n{END_MARKER}\nb\n"));
        assert_eq!(splice(&new, "new").unwrap(), new, "idempotent");
        assert!(splice("no markers", "x").is_none());
    }
}
