//! Where flags are changed: pure transforms of a flags ConfigMap's data (SPEC §2 step 4
//! and restore). The reconciler fetches the ConfigMap, calls these, and writes back only
//! the data keys a plan names, with the ConfigMap's resourceVersion as a precondition.

mod flagd;
mod plain;

use crate::api::guard::{FlagFormat, FlagsSpec};
use crate::api::request::{FlagChange, FlagConflict};
use std::collections::BTreeMap;

/// ConfigMap data: key → value.
pub type Data = BTreeMap<String, String>;

/// Which flags a rollback turns off.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// The request's `spec.flags`; empty means every guarded flag.
    pub flags: Vec<String>,
    /// Also turn off every other boolean flag.
    pub force_disable_all: bool,
}

/// What a transform decided: the flags that change and the data keys to write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Per flag, its state before and after (empty: nothing to do).
    pub changes: Vec<FlagChange>,
    /// restore only: flags edited since the rollback, left alone.
    pub conflicts: Vec<FlagConflict>,
    /// The data keys to write, with their new values; no other key is touched.
    pub writes: Data,
    /// flagd, `forceDisableAll`: boolean flags with no `false` variant, turned off with
    /// `state: DISABLED` (flagd then answers the application's code default, which may be
    /// `true`). Also in `changes`; the reconciler names them in a Warning Event.
    pub disabled_by_state: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// `data` with the plan's writes applied.
    pub fn apply(&self, data: &Data) -> Data {
        let mut out = data.clone();
        out.extend(self.writes.clone());
        out
    }
}

/// Input the operator cannot accept; nothing is changed. Messages name the field and value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    #[error("spec.flags: {flag:?} is not a guarded flag of this guard (guarded: {guarded})")]
    NotGuarded { flag: String, guarded: String },
    #[error("spec.flags.guarded: flag {flag:?} is not in ConfigMap {config_map:?}")]
    MissingFlag { flag: String, config_map: String },
    #[error(
        "spec.flags.guarded: flag {flag:?} is not in the flagd document under key {key:?} of ConfigMap {config_map:?}"
    )]
    MissingFlagdFlag {
        flag: String,
        key: String,
        config_map: String,
    },
    #[error("spec.flags.key: ConfigMap {config_map:?} has no data key {key:?}")]
    MissingDocument { key: String, config_map: String },
    #[error(
        "spec.flags.key: data key {key:?} of ConfigMap {config_map:?} is not a flagd document: {problem}"
    )]
    BadDocument {
        key: String,
        config_map: String,
        problem: String,
    },
    #[error(
        "spec.flags.offVariant: flagd flag {flag:?} has no variant {variant:?} (variants: {variants})"
    )]
    MissingVariant {
        flag: String,
        variant: String,
        variants: String,
    },
    #[error(
        "status.flagsChanged of the rollback names {flag:?} with a state that is not valid JSON: {problem}"
    )]
    BadRecordedState { flag: String, problem: String },
}

/// The flags a rollback selects: the requested subset (validated against `guarded`) or
/// every guarded flag.
pub fn selected_flags<'a>(
    spec: &'a FlagsSpec,
    selection: &'a Selection,
) -> Result<Vec<&'a str>, FlagError> {
    if selection.flags.is_empty() {
        return Ok(spec.guarded.iter().map(String::as_str).collect());
    }
    selection
        .flags
        .iter()
        .map(|flag| {
            if spec.guarded.contains(flag) {
                Ok(flag.as_str())
            } else {
                Err(FlagError::NotGuarded {
                    flag: flag.clone(),
                    guarded: spec.guarded.join(", "),
                })
            }
        })
        .collect()
}

/// Plans a rollback: the selected guarded flags off (plain: `offValue`; flagd:
/// `defaultVariant = offVariant`, no `targeting`), and with `force_disable_all` every other
/// boolean flag too. Flags already off are not changes, so applying twice equals once.
pub fn plan_disable(
    spec: &FlagsSpec,
    config_map: &str,
    data: &Data,
    selection: &Selection,
) -> Result<Plan, FlagError> {
    let selected = selected_flags(spec, selection)?;
    match spec.format {
        FlagFormat::Plain => plain::disable(
            data,
            config_map,
            &selected,
            &spec.off_value,
            selection.force_disable_all,
        ),
        FlagFormat::Flagd => {
            let key = spec.key.as_deref().unwrap_or_default();
            flagd::disable(
                data,
                config_map,
                key,
                &selected,
                &spec.off_variant,
                selection.force_disable_all,
            )
        }
    }
}

/// Checks, without changing anything, that every guarded flag is present and the document
/// parses: what only the operator can judge about a guard's `spec.flags`.
pub fn validate(spec: &FlagsSpec, config_map: &str, data: &Data) -> Result<(), FlagError> {
    plan_disable(spec, config_map, data, &Selection::default()).map(|_| ())
}

/// Plans a restore of what a rollback changed (`changes`, from its status): a flag whose
/// current state is still what the rollback wrote goes back to its state before; a flag
/// edited since is a conflict and is left alone. `snapshot` is the data the rollback's
/// snapshot holds (flagd gives each restored flag back its exact text from it).
pub fn plan_restore(
    spec: &FlagsSpec,
    config_map: &str,
    data: &Data,
    changes: &[FlagChange],
    snapshot: &Data,
) -> Result<Plan, FlagError> {
    match spec.format {
        FlagFormat::Plain => Ok(plain::restore(data, changes)),
        FlagFormat::Flagd => flagd::restore(
            data,
            config_map,
            spec.key.as_deref().unwrap_or_default(),
            changes,
            snapshot,
        ),
    }
}

/// Whether a snapshot of an earlier state of the ConfigMap still stands for its current
/// state `data` under `plan` (the plan on `data`): the same request plans the same on the
/// snapshot's data (`planned_then`), and restoring `plan` from the snapshot gives back
/// what each key it writes holds now (the same text, or the same JSON document laid out
/// otherwise). Keys and flags the plan leaves alone may differ — another writer's edits
/// since — and a write based on `data` keeps them.
pub fn snapshot_stands_for(
    spec: &FlagsSpec,
    config_map: &str,
    data: &Data,
    plan: &Plan,
    snapshot: &Data,
    planned_then: &Plan,
) -> bool {
    if planned_then.changes != plan.changes || planned_then.conflicts != plan.conflicts {
        return false;
    }
    let written = plan.apply(data);
    let Ok(back) = plan_restore(spec, config_map, &written, &plan.changes, snapshot) else {
        return false;
    };
    let restored = back.apply(&written);
    plan.writes
        .keys()
        .all(|k| match (restored.get(k), data.get(k)) {
            (Some(a), Some(b)) => a == b || same_json(a, b),
            (a, b) => a == b,
        })
}

fn same_json(a: &str, b: &str) -> bool {
    let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).ok();
    matches!((parse(a), parse(b)), (Some(a), Some(b)) if a == b)
}

/// The flags among a rollback's recorded `changes` (its `status.flagsChanged`) that it turned
/// off with flagd's `state: DISABLED` (`forceDisableAll`, a boolean flag with no `false`
/// variant): flagd answers the application's code default for them. Read from the record, so
/// it holds after a restart too; equals the plan's `disabled_by_state`.
pub fn disabled_by_state(changes: &[FlagChange]) -> Vec<String> {
    changes
        .iter()
        .filter(|c| flagd::is_disabled_by_state(c))
        .map(|c| c.name.clone())
        .collect()
}

/// Flags a rollback turned off (`changes`) that are no longer in the state it wrote:
/// turned back on by someone else (drift).
pub fn drifted(
    spec: &FlagsSpec,
    config_map: &str,
    data: &Data,
    changes: &[FlagChange],
) -> Vec<String> {
    match plan_restore(spec, config_map, data, changes, &Data::new()) {
        Ok(plan) => plan.conflicts.into_iter().map(|c| c.name).collect(),
        Err(_) => Vec::new(),
    }
}

/// The field manager that last wrote data key `key`, from managedFields, leaving out
/// `ignore` (the operator's own manager).
pub fn last_writer(
    cm: &k8s_openapi::api::core::v1::ConfigMap,
    key: &str,
    ignore: &str,
) -> Option<String> {
    let field = format!("f:{key}");
    cm.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref() != Some(ignore))
        .filter(|m| {
            m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.get("f:data").and_then(|d| d.get(&field)).is_some())
        })
        .max_by_key(|m| m.time.clone())
        .and_then(|m| m.manager.clone())
}

#[cfg(test)]
mod tests;
