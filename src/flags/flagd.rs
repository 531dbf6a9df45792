//! `format: flagd`: one data key holds a flagd flag-definition document. A rollback sets a
//! flag's `defaultVariant` to the off variant and drops its `targeting`; everything else in
//! the document — unknown fields, `$evaluators`, `metadata`, key order, indentation — stays.

use super::{Data, FlagError, Plan};
use crate::api::request::{FlagChange, FlagConflict};
use serde_json::{Map, Value};

struct Document<'a> {
    key: &'a str,
    config_map: &'a str,
    root: Value,
    /// Indentation of the original text (None: it was compact), kept when writing back.
    indent: Option<Vec<u8>>,
    trailing_newline: bool,
}

impl<'a> Document<'a> {
    fn parse(data: &Data, config_map: &'a str, key: &'a str) -> Result<Self, FlagError> {
        let text = data.get(key).ok_or_else(|| FlagError::MissingDocument {
            key: key.to_string(),
            config_map: config_map.to_string(),
        })?;
        let bad = |problem: String| FlagError::BadDocument {
            key: key.to_string(),
            config_map: config_map.to_string(),
            problem,
        };
        let root: Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        if !root.get("flags").is_some_and(Value::is_object) {
            return Err(bad("it has no \"flags\" object".into()));
        }
        let indent = text.lines().nth(1).map(|line| {
            let width = line.len() - line.trim_start().len();
            line.as_bytes()[..width].to_vec()
        });
        Ok(Self {
            key,
            config_map,
            root,
            indent,
            trailing_newline: text.ends_with('\n'),
        })
    }

    fn flags(&self) -> &Map<String, Value> {
        self.root["flags"].as_object().expect("checked in parse")
    }

    fn flag(&self, name: &str) -> Result<&Map<String, Value>, FlagError> {
        self.flags()
            .get(name)
            .and_then(Value::as_object)
            .ok_or_else(|| FlagError::MissingFlagdFlag {
                flag: name.to_string(),
                key: self.key.to_string(),
                config_map: self.config_map.to_string(),
            })
    }

    fn flag_mut(&mut self, name: &str) -> &mut Map<String, Value> {
        self.root["flags"][name]
            .as_object_mut()
            .expect("flag looked up before")
    }

    fn render(&self) -> String {
        let mut out = match &self.indent {
            Some(indent) => {
                let mut buf = Vec::new();
                let formatter = serde_json::ser::PrettyFormatter::with_indent(indent);
                let mut ser = serde_json::Serializer::with_formatter(&mut buf, formatter);
                serde::Serialize::serialize(&self.root, &mut ser).expect("a JSON value serialises");
                String::from_utf8(buf).expect("serde_json writes UTF-8")
            }
            None => self.root.to_string(),
        };
        if self.trailing_newline {
            out.push('\n');
        }
        out
    }
}

/// The part of a flag a rollback changes, as recorded in `flagsChanged`.
fn state(flag: &Map<String, Value>) -> Value {
    let mut s = Map::new();
    s.insert(
        "defaultVariant".into(),
        flag.get("defaultVariant").cloned().unwrap_or(Value::Null),
    );
    if let Some(targeting) = flag.get("targeting") {
        s.insert("targeting".into(), targeting.clone());
    }
    Value::Object(s)
}

fn set_state(flag: &mut Map<String, Value>, state: &Value) {
    match state.get("defaultVariant") {
        Some(Value::Null) | None => flag.remove("defaultVariant"),
        Some(v) => flag.insert("defaultVariant".into(), v.clone()),
    };
    match state.get("targeting") {
        Some(t) => flag.insert("targeting".into(), t.clone()),
        None => flag.remove("targeting"),
    };
}

fn off_state(variant: &str) -> Value {
    serde_json::json!({ "defaultVariant": variant })
}

/// A boolean flag that can evaluate to true: its default variant is `true`, or targeting
/// may pick a variant. Returns its `false` variant.
fn boolean_off_variant(flag: &Map<String, Value>) -> Option<String> {
    let variants = flag.get("variants")?.as_object()?;
    if variants.is_empty() || !variants.values().all(Value::is_boolean) {
        return None;
    }
    let default_on = flag
        .get("defaultVariant")
        .and_then(Value::as_str)
        .and_then(|v| variants.get(v))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if !default_on && !flag.contains_key("targeting") {
        return None;
    }
    variants
        .iter()
        .find(|(_, v)| **v == Value::Bool(false))
        .map(|(k, _)| k.clone())
}

pub(super) fn disable(
    data: &Data,
    config_map: &str,
    key: &str,
    selected: &[&str],
    off_variant: &str,
    force_all: bool,
) -> Result<Plan, FlagError> {
    let mut doc = Document::parse(data, config_map, key)?;
    let mut targets: Vec<(String, String)> = Vec::new();
    for &name in selected {
        let flag = doc.flag(name)?;
        let variants = flag.get("variants").and_then(Value::as_object);
        if !variants.is_some_and(|v| v.contains_key(off_variant)) {
            return Err(FlagError::MissingVariant {
                flag: name.to_string(),
                variant: off_variant.to_string(),
                variants: variants
                    .map(|v| v.keys().cloned().collect::<Vec<_>>().join(", "))
                    .unwrap_or_default(),
            });
        }
        targets.push((name.to_string(), off_variant.to_string()));
    }
    if force_all {
        for (name, flag) in doc.flags() {
            if selected.contains(&name.as_str()) {
                continue;
            }
            if let Some(variant) = flag.as_object().and_then(boolean_off_variant) {
                targets.push((name.clone(), variant));
            }
        }
    }

    let mut plan = Plan::default();
    for (name, variant) in targets {
        let before = state(doc.flag(&name)?);
        let after = off_state(&variant);
        if before != after {
            set_state(doc.flag_mut(&name), &after);
            plan.changes.push(FlagChange {
                name,
                from: before.to_string(),
                to: after.to_string(),
            });
        }
    }
    if !plan.changes.is_empty() {
        plan.writes.insert(key.to_string(), doc.render());
    }
    Ok(plan)
}

/// `snapshot` is the ConfigMap data the rollback's snapshot holds: restored flags take back
/// their key order from it, and when the restored document equals the snapshot's, the
/// snapshot's text is written verbatim, so a rollback and restore with nothing else
/// changed leave the ConfigMap byte-identical.
pub(super) fn restore(
    data: &Data,
    config_map: &str,
    key: &str,
    changes: &[FlagChange],
    snapshot: &Data,
) -> Result<Plan, FlagError> {
    let mut doc = Document::parse(data, config_map, key)?;
    let original = Document::parse(snapshot, config_map, key).ok();
    let mut plan = Plan::default();
    for change in changes {
        let parse = |text: &str| {
            serde_json::from_str::<Value>(text).map_err(|e| FlagError::BadRecordedState {
                flag: change.name.clone(),
                problem: e.to_string(),
            })
        };
        let (written, before) = (parse(&change.to)?, parse(&change.from)?);
        let current = doc.flag(&change.name).ok().map(state);
        if current.as_ref() == Some(&written) {
            let template = original
                .as_ref()
                .and_then(|o| o.flag(&change.name).ok())
                .cloned();
            let flag = doc.flag_mut(&change.name);
            set_state(flag, &before);
            if let Some(template) = template {
                reorder_like(flag, &template);
            }
            plan.changes.push(FlagChange {
                name: change.name.clone(),
                from: change.to.clone(),
                to: change.from.clone(),
            });
        } else {
            plan.conflicts.push(FlagConflict {
                name: change.name.clone(),
                expected: change.to.clone(),
                found: current
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "<flag removed>".into()),
            });
        }
    }
    if !plan.changes.is_empty() {
        let text = match original {
            Some(o) if o.root == doc.root => snapshot[key].clone(),
            _ => doc.render(),
        };
        plan.writes.insert(key.to_string(), text);
    }
    Ok(plan)
}

/// Orders `flag`'s keys as in `template`; keys the template lacks keep their order, last.
fn reorder_like(flag: &mut Map<String, Value>, template: &Map<String, Value>) {
    let mut ordered = Map::new();
    for k in template.keys() {
        if let Some(v) = flag.remove(k) {
            ordered.insert(k.clone(), v);
        }
    }
    ordered.append(flag);
    *flag = ordered;
}
