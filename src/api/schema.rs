//! Building blocks for the CRD schemas: the CEL rules and string formats that several
//! fields share. Each rule's message names the field and says what is allowed, because a
//! user reads it in `kubectl apply` output in the middle of an incident.

use kube::core::{Message, Rule};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// RE2 pattern of a Go duration as `time.ParseDuration` accepts it, without a sign.
pub const GO_DURATION_RE: &str = r"^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$";

/// RE2 pattern of a DNS-1123 label (trigger and notifier names).
pub const DNS_LABEL_RE: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// RE2 pattern of a DNS-1123 subdomain (object names).
pub const DNS_SUBDOMAIN_RE: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// Quotes a CEL string literal.
fn cel_quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `field` must be a DNS-1123 label; the message names the field and the value.
pub fn dns_label(field: &str) -> Rule {
    Rule::new(format!("self.matches({})", cel_quote(DNS_LABEL_RE))).message(Message::Expression(format!(
        "'{field} \"' + self + '\" is not a DNS-1123 label: use lowercase letters, digits and \"-\", starting and ending with a letter or digit, at most 63 characters'"
    )))
}

/// `field` must be a DNS-1123 subdomain (an object name); the message names the field and the value.
pub fn dns_subdomain(field: &str) -> Rule {
    object_name(field, false)
}

/// Like [`dns_subdomain`], but the empty string means "not set".
pub fn dns_subdomain_or_empty(field: &str) -> Rule {
    object_name(field, true)
}

fn object_name(field: &str, allow_empty: bool) -> Rule {
    let matches = format!("self.matches({})", cel_quote(DNS_SUBDOMAIN_RE));
    let rule = if allow_empty {
        format!("self == '' || {matches}")
    } else {
        matches
    };
    Rule::new(rule).message(Message::Expression(format!(
        "'{field} \"' + self + '\" is not a valid object name: use lowercase letters, digits, \"-\" and \".\", starting and ending with a letter or digit, at most 253 characters'"
    )))
}

/// A duration field is at least `min` (a Go duration). Malformed values pass this rule:
/// the format rule of [`GoDuration`] reports them, so the user sees one clear message.
pub fn duration_at_least(field: &str, min: &str) -> Rule {
    Rule::new(format!(
        "!self.matches({re}) || duration(self) >= duration('{min}')",
        re = cel_quote(GO_DURATION_RE)
    ))
    .message(Message::Expression(format!(
        "'{field} \"' + self + '\" is too short: the minimum is {min}'"
    )))
}

/// A duration field is at most `max` (a Go duration).
pub fn duration_at_most(field: &str, max: &str) -> Rule {
    Rule::new(format!(
        "!self.matches({re}) || duration(self) <= duration('{max}')",
        re = cel_quote(GO_DURATION_RE)
    ))
    .message(Message::Expression(format!(
        "'{field} \"' + self + '\" is too long: the maximum is {max}'"
    )))
}

/// Removes the integer formats schemars writes for Rust's integer types (`uint32`, `uint8`,
/// `int16`, …), which the Kubernetes API server does not know: creating the CRD warns
/// `unrecognized format "uint32"`. The `minimum: 0` schemars writes for unsigned types
/// stays. Applied with `#[schemars(transform = kubernetes_formats)]` to each kind's spec and
/// status; it walks every subschema.
pub fn kubernetes_formats(schema: &mut Schema) {
    use schemars::transform::{RecursiveTransform, Transform};
    RecursiveTransform(|schema: &mut Schema| {
        let rust_only = schema
            .get("format")
            .and_then(|f| f.as_str())
            .is_some_and(|f| {
                matches!(
                    f,
                    "uint"
                        | "uint8"
                        | "uint16"
                        | "uint32"
                        | "uint64"
                        | "uint128"
                        | "int"
                        | "int8"
                        | "int16"
                        | "int128"
                )
            });
        if rust_only {
            schema.remove("format");
        }
    })
    .transform(schema);
}

/// Gives each kind's `status` the default `{observedGeneration: 0}`: the API server fills it
/// in on every object the operator has not written a status to yet (just created, or the
/// operator is not running, or a request still taking its snapshot), so that kstatus and
/// Argo CD read "generation 1 not observed yet" — InProgress — instead of an object with no
/// status, which kstatus reads Current. Applied with
/// `#[schemars(transform = unobserved_by_default)]` to each kind's status type.
pub fn unobserved_by_default(schema: &mut Schema) {
    schema.insert(
        "default".into(),
        serde_json::json!({"observedGeneration": 0}),
    );
}

/// A duration in Go syntax (`15s`, `5m`, `1h30m`, `250ms`), as Kubernetes users write them.
///
/// Kept as the user's string so that status and `kubectl get -o yaml` show exactly what was
/// applied; [`GoDuration::to_std`] parses it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GoDuration(pub String);

impl GoDuration {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// Parses the Go duration. The CRD schema already rejects malformed strings, so an
    /// error here means the object bypassed validation (e.g. a unit test).
    pub fn to_std(&self) -> Result<std::time::Duration, crate::Error> {
        let nanos = go_parse_duration::parse_duration(&self.0)
            .map_err(|_| crate::Error::InvalidDuration(self.0.clone()))?;
        u64::try_from(nanos)
            .map(std::time::Duration::from_nanos)
            .map_err(|_| crate::Error::InvalidDuration(self.0.clone()))
    }
}

impl std::fmt::Display for GoDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl JsonSchema for GoDuration {
    fn schema_name() -> Cow<'static, str> {
        "GoDuration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "maxLength": 32,
            "x-kubernetes-validations": [{
                "rule": format!("self.matches({})", cel_quote(GO_DURATION_RE)),
                "messageExpression": "'\"' + self + '\" is not a duration: use Go duration syntax such as 30s, 5m or 1h30m'"
            }]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_only_integer_formats_are_removed() {
        let mut schema = json_schema!({
            "type": "object",
            "properties": {
                "index": {"type": "integer", "format": "uint32", "minimum": 0},
                "items": {"type": "array", "items": {"type": "integer", "format": "int16"}},
                "count": {"type": "integer", "format": "int64"},
                "ratio": {"type": "number", "format": "double"}
            }
        });
        kubernetes_formats(&mut schema);
        let props = &schema.as_value()["properties"];
        assert_eq!(
            props["index"],
            serde_json::json!({"type": "integer", "minimum": 0})
        );
        assert_eq!(
            props["items"]["items"],
            serde_json::json!({"type": "integer"})
        );
        assert_eq!(props["count"]["format"], "int64");
        assert_eq!(props["ratio"]["format"], "double");
    }

    /// The formats the CRDs carry are the ones the API server knows (it warns
    /// `unrecognized format` otherwise; tests/kubectl_polish.rs asks the real one).
    #[test]
    fn the_crds_carry_no_rust_only_integer_format() {
        fn formats(v: &serde_json::Value, out: &mut std::collections::BTreeSet<String>) {
            match v {
                serde_json::Value::Object(map) => {
                    if let Some(serde_json::Value::String(f)) = map.get("format") {
                        out.insert(f.clone());
                    }
                    map.values().for_each(|v| formats(v, out));
                }
                serde_json::Value::Array(items) => items.iter().for_each(|v| formats(v, out)),
                _ => {}
            }
        }
        let mut found = std::collections::BTreeSet::new();
        for crd in crate::crd::definitions() {
            formats(&serde_json::to_value(crd).unwrap(), &mut found);
        }
        let found: Vec<_> = found.iter().map(String::as_str).collect();
        assert_eq!(found, ["date-time", "double", "int32", "int64"]);
    }

    #[test]
    fn go_durations_parse_as_go_does() {
        let cases = [
            ("0", 0),
            ("0s", 0),
            ("250ms", 250_000_000),
            ("15s", 15_000_000_000),
            ("1h30m", 5_400_000_000_000),
            ("1.5h", 5_400_000_000_000),
        ];
        for (text, nanos) in cases {
            assert_eq!(
                GoDuration::new(text).to_std().unwrap().as_nanos(),
                nanos,
                "{text}"
            );
        }
    }

    #[test]
    fn malformed_durations_are_errors_naming_the_value() {
        for text in ["", "5", "five minutes", "-5s", "1d"] {
            let err = GoDuration::new(text).to_std().unwrap_err();
            assert!(err.to_string().contains(&format!("\"{text}\"")), "{err}");
        }
    }

    #[test]
    fn cel_quote_escapes_quotes_and_backslashes() {
        assert_eq!(cel_quote(r"a\.b'c"), r"'a\\.b\'c'");
    }
}
