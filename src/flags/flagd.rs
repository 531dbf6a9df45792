//! `format: flagd`: one data key holds a flagd flag-definition document. A rollback sets a
//! flag's `defaultVariant` to the off variant and drops its `targeting`.
//!
//! The document is edited in place: only the bytes of the members that change are
//! rewritten, inside the flags that change. Every other byte — other flags, `$evaluators`,
//! `metadata`, unknown fields, whitespace, key order, number literals (`1e3`,
//! `98765432109876543210987`, 17-digit doubles), string escapes, explicit `null`s — stays
//! as it was written. Nothing is ever re-encoded through `serde_json::Value` (whose numbers
//! are `f64`): serde_json parses and validates the text and hands back each member's value as
//! a `RawValue` borrowed from it, whose position in the text is the member's span.

use super::{Data, FlagError, Plan};
use crate::api::request::{FlagChange, FlagConflict};
use serde::de::{Deserializer as _, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use std::fmt;
use std::ops::Range;

/// JSON whitespace (RFC 8259 §2).
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// One `"key": value` member of an object, as byte offsets into the object's text.
#[derive(Debug)]
struct Member {
    /// The key, unescaped.
    key: String,
    /// Where the member starts: its key's opening quote.
    start: usize,
    /// Where the key's closing quote ends (the `: ` separator runs from here to `value`).
    key_end: usize,
    /// The value, exactly as written.
    value: Range<usize>,
}

/// An object's members in the order written (duplicates kept; as in flagd's parsers and
/// serde_json, the last of duplicate keys is the one that counts).
#[derive(Debug)]
struct Object {
    /// Offset of `{`.
    open: usize,
    members: Vec<Member>,
}

impl Object {
    /// Parses `text` (a JSON object, whitespace around it allowed); an error when it is not
    /// an object or not JSON.
    fn parse(text: &str) -> Result<Object, serde_json::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = Vec<(String, &'de RawValue)>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<String, &'de RawValue>()? {
                    out.push(entry);
                }
                Ok(out)
            }
        }
        let mut de = serde_json::Deserializer::from_str(text);
        let raw = (&mut de).deserialize_map(Members)?;
        de.end()?;

        // serde_json located every value; what is left between them is only whitespace and
        // the `{`, `,`, `:` and key tokens, so finding a member's start and its key's end needs
        // no JSON scanner, just skipping those bytes between known offsets.
        let bytes = text.as_bytes();
        let open = bytes
            .iter()
            .position(|&b| !is_ws(b))
            .expect("an object has a brace");
        let mut members = Vec::with_capacity(raw.len());
        let mut after = open + 1; // just past `{` or the previous member's value
        for (key, value) in raw {
            // The value is a slice of `text`: its offset is where it was read.
            let v = value.get();
            let v_start = v.as_ptr() as usize - text.as_ptr() as usize;
            debug_assert_eq!(&text[v_start..v_start + v.len()], v);
            // Between the previous value and this key: whitespace, `,`, whitespace.
            let mut start = after;
            while is_ws(bytes[start]) || bytes[start] == b',' {
                start += 1;
            }
            // Between the key and the value: whitespace, `:`, whitespace.
            let mut key_end = v_start;
            while is_ws(bytes[key_end - 1]) || bytes[key_end - 1] == b':' {
                key_end -= 1;
            }
            members.push(Member {
                key,
                start,
                key_end,
                value: v_start..v_start + v.len(),
            });
            after = v_start + v.len();
        }
        Ok(Object { open, members })
    }

    /// The last member named `key` (the one a JSON parser keeps).
    fn get(&self, key: &str) -> Option<&Member> {
        self.members.iter().rev().find(|m| m.key == key)
    }
}

/// `text` with `range` replaced by `with`.
fn splice(text: &str, range: Range<usize>, with: &str) -> String {
    let mut out = String::with_capacity(text.len() + with.len());
    out.push_str(&text[..range.start]);
    out.push_str(with);
    out.push_str(&text[range.end..]);
    out
}

/// Sets member `key` of the object `text` to the JSON text `value` (None: removes every
/// member named `key`), touching no other byte. A new member goes last, laid out like the
/// member before it.
fn set_member(text: &str, key: &str, value: Option<&str>) -> String {
    let mut text = text.to_string();
    loop {
        let obj = Object::parse(&text).expect("edited objects stay objects");
        let n = obj.members.len();
        let Some(i) = obj.members.iter().rposition(|m| m.key == key) else {
            let Some(value) = value else { return text };
            let quoted = serde_json::to_string(key).expect("a string serialises");
            return match obj.members.last() {
                None => splice(
                    &text,
                    obj.open + 1..obj.open + 1,
                    &format!("{quoted}:{value}"),
                ),
                Some(last) => {
                    // The whitespace before the last member's key (after its comma), and its
                    // key/value separator, copied.
                    let lead = if n >= 2 {
                        let prev_end = obj.members[n - 2].value.end;
                        let comma = text[prev_end..last.start]
                            .find(',')
                            .map_or(prev_end, |c| prev_end + c + 1);
                        &text[comma..last.start]
                    } else {
                        &text[obj.open + 1..last.start]
                    };
                    let colon = &text[last.key_end..last.value.start];
                    let member = format!(",{lead}{quoted}{colon}{value}");
                    splice(&text, last.value.end..last.value.end, &member)
                }
            };
        };
        let m = &obj.members[i];
        match value {
            Some(value) => return splice(&text, m.value.clone(), value),
            None => {
                let range = if i + 1 < n {
                    m.start..obj.members[i + 1].start // the member, its comma, the space after
                } else if i > 0 {
                    obj.members[i - 1].value.end..m.value.end // the comma before, the member
                } else {
                    m.start..m.value.end
                };
                text = splice(&text, range, "");
            }
        }
    }
}

/// `raw` (valid JSON) without insignificant whitespace; every other byte as written. For the
/// compact record in `flagsChanged`: serde_json has no minifier that keeps literals (writing a
/// `Value` re-encodes numbers; a `RawValue` keeps the whitespace), so this small loop does it
/// on text serde_json has already validated.
fn compact(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in raw.chars() {
        if in_string {
            in_string = escaped || c != '"';
            escaped = !escaped && c == '\\';
        } else if c == '"' {
            in_string = true;
        } else if c.is_ascii() && is_ws(c as u8) {
            continue;
        }
        out.push(c);
    }
    out
}

/// What a rollback changes in a flag: the members `keys` of a [`Kind`], each as its JSON text
/// as written (None: absent). Recorded in `flagsChanged` as a compact JSON object of the
/// present ones.
#[derive(Clone, Debug)]
struct State {
    kind: Kind,
    values: Vec<Option<String>>,
}

/// The two things a rollback does to a flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `defaultVariant` set to the off variant, `targeting` dropped.
    Variant,
    /// `state: DISABLED` (flagd then answers the application's code default): a boolean flag
    /// `forceDisableAll` turns off that has no `false` variant.
    Disabled,
}

impl Kind {
    fn keys(self) -> &'static [&'static str] {
        match self {
            Kind::Variant => &["defaultVariant", "targeting"],
            Kind::Disabled => &["state"],
        }
    }
}

impl State {
    /// The members of `kind` in the flag object `flag`.
    fn of(kind: Kind, flag: &str) -> State {
        State::parse(kind, flag).expect("a flag is an object")
    }

    /// The members of `kind` in the object `text`: a flag, or a recorded state
    /// (`flagsChanged[].from`/`.to`; its kind is `Disabled` when `to` has a `state` member).
    fn parse(kind: Kind, text: &str) -> Result<State, serde_json::Error> {
        let obj = Object::parse(text)?;
        let values = kind
            .keys()
            .iter()
            .map(|k| obj.get(k).map(|m| text[m.value.clone()].to_string()))
            .collect();
        Ok(State { kind, values })
    }

    fn render(&self) -> String {
        let members: Vec<String> = self
            .kind
            .keys()
            .iter()
            .zip(&self.values)
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k:?}:{}", compact(v))))
            .collect();
        format!("{{{}}}", members.join(","))
    }

    /// The flag object `flag` with this state's members written (absent ones removed).
    fn write_into(&self, flag: &str) -> String {
        let mut out = flag.to_string();
        let current = State::of(self.kind, flag);
        for ((key, want), have) in self
            .kind
            .keys()
            .iter()
            .zip(&self.values)
            .zip(&current.values)
        {
            if !same(want.as_deref(), have.as_deref()) {
                out = set_member(&out, key, want.as_deref());
            }
        }
        out
    }

    /// Equal in meaning (`"off"` and `"\u006ff"` are the same variant).
    fn same_as(&self, other: &State) -> bool {
        self.kind == other.kind
            && self
                .values
                .iter()
                .zip(&other.values)
                .all(|(a, b)| same(a.as_deref(), b.as_deref()))
    }
}

/// Two JSON texts that mean the same value (numbers compared as written, never as `f64`).
fn same(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            a == b
                || compact(a) == compact(b)
                || canonical(a).is_some_and(|a| Some(a) == canonical(b))
        }
        _ => false,
    }
}

/// A string or null, unescaped; None for anything else (compared as written).
fn canonical(raw: &str) -> Option<Value> {
    match serde_json::from_str::<Value>(raw).ok()? {
        v @ (Value::String(_) | Value::Null | Value::Bool(_)) => Some(v),
        _ => None,
    }
}

fn off_state(variant: &str) -> State {
    State {
        kind: Kind::Variant,
        values: vec![
            Some(serde_json::to_string(variant).expect("a string serialises")),
            None,
        ],
    }
}

fn disabled_state() -> State {
    State {
        kind: Kind::Disabled,
        values: vec![Some("\"DISABLED\"".into())],
    }
}

/// A parsed flagd document: its text, and where each flag's object is in it.
struct Document<'a> {
    key: &'a str,
    config_map: &'a str,
    text: &'a str,
    /// Each flag (the last of duplicate names), its object's span in `text`.
    flags: Vec<(String, Range<usize>)>,
}

impl<'a> Document<'a> {
    fn parse(data: &'a Data, config_map: &'a str, key: &'a str) -> Result<Self, FlagError> {
        let text = data.get(key).ok_or_else(|| FlagError::MissingDocument {
            key: key.to_string(),
            config_map: config_map.to_string(),
        })?;
        let bad = |problem: String| FlagError::BadDocument {
            key: key.to_string(),
            config_map: config_map.to_string(),
            problem,
        };
        // Validates the whole text first, so a syntax error is reported as such.
        serde_json::from_str::<&RawValue>(text).map_err(|e| bad(e.to_string()))?;
        let no_flags = || bad("it has no \"flags\" object".into());
        let root = Object::parse(text).map_err(|_| no_flags())?;
        let flags_member = root.get("flags").ok_or_else(no_flags)?;
        let flags_text = &text[flags_member.value.clone()];
        let flags_obj = Object::parse(flags_text).map_err(|_| no_flags())?;
        let base = flags_member.value.start;
        let mut flags: Vec<(String, Range<usize>)> = Vec::new();
        for m in flags_obj.members {
            let span = base + m.value.start..base + m.value.end;
            flags.retain(|(name, _)| *name != m.key);
            flags.push((m.key, span));
        }
        Ok(Self {
            key,
            config_map,
            text,
            flags,
        })
    }

    /// The text of flag `name`, if it is an object.
    fn flag(&self, name: &str) -> Option<&'a str> {
        let (_, span) = self.flags.iter().find(|(n, _)| n == name)?;
        let text = &self.text[span.clone()];
        text.starts_with('{').then_some(text)
    }

    fn require(&self, name: &str) -> Result<&'a str, FlagError> {
        self.flag(name).ok_or_else(|| FlagError::MissingFlagdFlag {
            flag: name.to_string(),
            key: self.key.to_string(),
            config_map: self.config_map.to_string(),
        })
    }

    /// The document with the named flags' objects replaced; every other byte as it was.
    fn with_flags(&self, replaced: &[(String, String)]) -> String {
        let mut edits: Vec<(Range<usize>, &str)> = replaced
            .iter()
            .map(|(name, text)| {
                let (_, span) = self
                    .flags
                    .iter()
                    .find(|(n, _)| n == name)
                    .expect("replaced flags were looked up");
                (span.clone(), text.as_str())
            })
            .collect();
        edits.sort_by_key(|(span, _)| span.start);
        let mut out = String::with_capacity(self.text.len());
        let mut at = 0;
        for (span, text) in edits {
            out.push_str(&self.text[at..span.start]);
            out.push_str(text);
            at = span.end;
        }
        out.push_str(&self.text[at..]);
        out
    }
}

/// The variants of a flag object, parsed (values only inspected, never written back).
fn variants(flag: &str) -> Option<serde_json::Map<String, Value>> {
    let obj = Object::parse(flag).ok()?;
    let m = obj.get("variants")?;
    serde_json::from_str(&flag[m.value.clone()]).ok()
}

/// How `forceDisableAll` turns off a boolean flag that can evaluate to `true` (its default
/// variant is `true`, or targeting may pick a variant): its `false` variant, or, when it
/// has none, `state: DISABLED`. None: not a boolean flag, or off already.
fn force_off(flag: &str) -> Option<State> {
    let variants = variants(flag)?;
    if variants.is_empty() || !variants.values().all(Value::is_boolean) {
        return None;
    }
    let obj = Object::parse(flag).ok()?;
    let member = |k: &str| {
        obj.get(k)
            .and_then(|m| serde_json::from_str::<Value>(&flag[m.value.clone()]).ok())
    };
    if member("state").is_some_and(|s| s == "DISABLED") {
        return None;
    }
    let default_on = member("defaultVariant")
        .as_ref()
        .and_then(Value::as_str)
        .and_then(|v| variants.get(v))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let targeting =
        member("targeting").is_some_and(|t| t.as_object().is_none_or(|o| !o.is_empty()));
    if !default_on && !targeting {
        return None;
    }
    Some(
        match variants.iter().find(|(_, v)| **v == Value::Bool(false)) {
            Some((off, _)) => off_state(off),
            None => disabled_state(),
        },
    )
}

pub(super) fn disable(
    data: &Data,
    config_map: &str,
    key: &str,
    selected: &[&str],
    off_variant: &str,
    force_all: bool,
) -> Result<Plan, FlagError> {
    let doc = Document::parse(data, config_map, key)?;
    let mut targets: Vec<(String, State)> = Vec::new();
    for &name in selected {
        let flag = doc.require(name)?;
        let variants = variants(flag);
        if !variants
            .as_ref()
            .is_some_and(|v| v.contains_key(off_variant))
        {
            return Err(FlagError::MissingVariant {
                flag: name.to_string(),
                variant: off_variant.to_string(),
                variants: variants
                    .map(|v| v.keys().cloned().collect::<Vec<_>>().join(", "))
                    .unwrap_or_default(),
            });
        }
        targets.push((name.to_string(), off_state(off_variant)));
    }
    if force_all {
        for (name, _) in &doc.flags {
            if selected.contains(&name.as_str()) {
                continue;
            }
            if let Some(off) = doc.flag(name).and_then(force_off) {
                targets.push((name.clone(), off));
            }
        }
    }

    let mut plan = Plan::default();
    let mut replaced = Vec::new();
    for (name, after) in targets {
        let flag = doc.require(&name)?;
        let before = State::of(after.kind, flag);
        if before.same_as(&after) {
            continue;
        }
        replaced.push((name.clone(), after.write_into(flag)));
        if after.kind == Kind::Disabled {
            plan.disabled_by_state.push(name.clone());
        }
        plan.changes.push(FlagChange {
            name,
            from: before.render(),
            to: after.render(),
        });
    }
    if !replaced.is_empty() {
        plan.writes
            .insert(key.to_string(), doc.with_flags(&replaced));
    }
    Ok(plan)
}

/// Whether a recorded change is a flag turned off with `state: DISABLED`.
pub(super) fn is_disabled_by_state(change: &FlagChange) -> bool {
    State::parse(Kind::Disabled, &change.to).is_ok_and(|to| to.same_as(&disabled_state()))
}

/// `snapshot` is the ConfigMap data the rollback's snapshot holds. A flag whose text is
/// still exactly what the rollback made of its snapshot text gets that text back byte for
/// byte; otherwise (no snapshot, or the flag's other members edited since) its recorded
/// members are written back in place. So a rollback and restore with nothing else changed
/// leave the ConfigMap byte-identical, and other flags are never touched.
pub(super) fn restore(
    data: &Data,
    config_map: &str,
    key: &str,
    changes: &[FlagChange],
    snapshot: &Data,
) -> Result<Plan, FlagError> {
    let doc = Document::parse(data, config_map, key)?;
    let original = Document::parse(snapshot, config_map, key).ok();
    let mut plan = Plan::default();
    let mut replaced = Vec::new();
    for change in changes {
        let recorded = |text: &str, kind| {
            State::parse(kind, text).map_err(|e| FlagError::BadRecordedState {
                flag: change.name.clone(),
                problem: e.to_string(),
            })
        };
        let kind = if Object::parse(&change.to)
            .map_err(|e| FlagError::BadRecordedState {
                flag: change.name.clone(),
                problem: e.to_string(),
            })?
            .get("state")
            .is_some()
        {
            Kind::Disabled
        } else {
            Kind::Variant
        };
        let (written, before) = (recorded(&change.to, kind)?, recorded(&change.from, kind)?);
        let current = doc.flag(&change.name);
        match current {
            Some(flag) if State::of(kind, flag).same_as(&written) => {
                let template = original.as_ref().and_then(|o| o.flag(&change.name));
                let text = match template {
                    // Nothing else in the flag changed since: its snapshot text, byte for byte.
                    Some(t) if written.write_into(t) == flag => t.to_string(),
                    // Edited since: the members written back in place, as the snapshot wrote
                    // them when it holds the recorded state, else from the record.
                    Some(t) if State::of(kind, t).same_as(&before) => {
                        State::of(kind, t).write_into(flag)
                    }
                    _ => before.write_into(flag),
                };
                replaced.push((change.name.clone(), text));
                plan.changes.push(FlagChange {
                    name: change.name.clone(),
                    from: change.to.clone(),
                    to: change.from.clone(),
                });
            }
            _ => plan.conflicts.push(FlagConflict {
                name: change.name.clone(),
                expected: change.to.clone(),
                found: current
                    .map(|f| State::of(kind, f).render())
                    .unwrap_or_else(|| "<flag removed>".into()),
            }),
        }
    }
    if !replaced.is_empty() {
        plan.writes
            .insert(key.to_string(), doc.with_flags(&replaced));
    }
    Ok(plan)
}
