//! `format: plain`: one ConfigMap key per flag.

use super::{Data, FlagError, Plan};
use crate::api::request::{FlagChange, FlagConflict};

/// A plain value that means "on".
pub(super) fn is_on(value: &str) -> bool {
    value.trim().eq_ignore_ascii_case("true")
}

pub(super) fn disable(
    data: &Data,
    config_map: &str,
    selected: &[&str],
    off_value: &str,
    force_all: bool,
) -> Result<Plan, FlagError> {
    let mut plan = Plan::default();
    for &flag in selected {
        let Some(current) = data.get(flag) else {
            return Err(FlagError::MissingFlag {
                flag: flag.to_string(),
                config_map: config_map.to_string(),
            });
        };
        if current != off_value {
            plan.changes.push(FlagChange {
                name: flag.to_string(),
                from: current.clone(),
                to: off_value.to_string(),
            });
            plan.writes.insert(flag.to_string(), off_value.to_string());
        }
    }
    if force_all {
        for (key, value) in data {
            if !selected.contains(&key.as_str()) && is_on(value) {
                plan.changes.push(FlagChange {
                    name: key.clone(),
                    from: value.clone(),
                    to: "false".into(),
                });
                plan.writes.insert(key.clone(), "false".into());
            }
        }
    }
    Ok(plan)
}

pub(super) fn restore(data: &Data, changes: &[FlagChange]) -> Plan {
    let mut plan = Plan::default();
    for change in changes {
        match data.get(&change.name) {
            Some(current) if *current == change.to => {
                plan.changes.push(FlagChange {
                    name: change.name.clone(),
                    from: current.clone(),
                    to: change.from.clone(),
                });
                plan.writes.insert(change.name.clone(), change.from.clone());
            }
            found => plan.conflicts.push(FlagConflict {
                name: change.name.clone(),
                expected: change.to.clone(),
                found: found.cloned().unwrap_or_else(|| "<key removed>".into()),
            }),
        }
    }
    plan
}
