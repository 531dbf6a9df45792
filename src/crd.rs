//! The CustomResourceDefinitions, as `rollguard crd` prints them and `crds/` holds them.

use crate::api::{RollbackRequest, RolloutGuard};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use yaml_rust2::{Yaml, YamlEmitter, yaml::Hash};

pub mod reference;

/// Both CRDs, guard first.
pub fn definitions() -> Vec<CustomResourceDefinition> {
    vec![RolloutGuard::crd(), RollbackRequest::crd()]
}

/// Both CRDs as one multi-document YAML stream.
pub fn render() -> crate::Result<String> {
    let docs = definitions()
        .iter()
        .map(|crd| serde_json::to_value(crd).map_err(crate::Error::from))
        .collect::<crate::Result<Vec<_>>>()?;
    to_yaml_stream(&docs)
}

/// Renders JSON values as a YAML stream that YAML 1.1 parsers (kubectl's) read back
/// unchanged: strings such as `off`, `on`, `yes` and `n` are quoted, so a default of
/// `"off"` stays a string instead of becoming `false`.
pub fn to_yaml_stream(docs: &[serde_json::Value]) -> crate::Result<String> {
    let mut out = String::new();
    for doc in docs {
        let mut text = String::new();
        let mut emitter = YamlEmitter::new(&mut text);
        emitter.multiline_strings(true);
        emitter
            .dump(&json_to_yaml(doc))
            .map_err(|e| crate::Error::Yaml(e.to_string()))?;
        out.push_str(&text);
        out.push('\n');
    }
    Ok(out)
}

fn json_to_yaml(value: &serde_json::Value) -> Yaml {
    use serde_json::Value;
    match value {
        Value::Null => Yaml::Null,
        Value::Bool(b) => Yaml::Boolean(*b),
        Value::Number(n) if n.is_i64() => Yaml::Integer(n.as_i64().unwrap_or_default()),
        Value::Number(n) => Yaml::Real(n.to_string()),
        Value::String(s) => Yaml::String(s.clone()),
        Value::Array(items) => Yaml::Array(items.iter().map(json_to_yaml).collect()),
        Value::Object(map) => {
            let mut hash = Hash::new();
            for (k, v) in map {
                hash.insert(Yaml::String(k.clone()), json_to_yaml(v));
            }
            Yaml::Hash(hash)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_quotes_words_that_yaml_1_1_reads_as_booleans() {
        let doc =
            serde_json::json!({"offVariant": "off", "on": ["started"], "x": "yes", "ratio": 1.5});
        let yaml = to_yaml_stream(&[doc]).unwrap();
        assert!(yaml.contains("offVariant: \"off\""), "{yaml}");
        assert!(yaml.contains("\"on\":"), "{yaml}");
        assert!(yaml.contains("x: \"yes\""), "{yaml}");
        assert!(yaml.contains("ratio: 1.5"), "{yaml}");
    }
}
