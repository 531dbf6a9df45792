//! Alert triggers (SPEC §6): a trigger that breaches while an Alertmanager alert whose
//! labels equal its matchers is firing. Alerts come pushed (Alertmanager's webhook,
//! [`intake`]) or pulled (a guard's `spec.alertmanager`, [`alertmanager`]); either way they
//! are judged here, purely, into the same [`Reading`] a query trigger gives, so `for`,
//! cooldown, `mode: manual` and the rest work unchanged. Its value is the number of matching
//! firing alerts; it breaches while there is at least one.

pub mod alertmanager;
pub mod intake;
pub mod store;
pub mod webhook;

use crate::api::request::TriggeringAlert;
use crate::triggers::Reading;
use std::collections::BTreeMap;
use std::time::Duration;

/// The label that routes a pushed alert to the guards of one namespace.
pub const NAMESPACE_LABEL: &str = "namespace";

/// A firing alert, from either source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    pub labels: BTreeMap<String, String>,
    pub fingerprint: String,
    /// RFC 3339, as Alertmanager wrote it.
    pub starts_at: String,
    pub generator_url: String,
}

impl Alert {
    fn started(&self) -> Option<jiff::Timestamp> {
        self.starts_at.parse().ok()
    }

    pub fn triggering(&self) -> TriggeringAlert {
        TriggeringAlert {
            name: self.labels.get("alertname").cloned().unwrap_or_default(),
            labels: self.labels.clone(),
            fingerprint: self.fingerprint.clone(),
            starts_at: self.starts_at.clone(),
            generator_url: self.generator_url.clone(),
        }
    }
}

/// Whether every matcher names a label of `labels` with exactly its value.
pub fn matches(matchers: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !matchers.is_empty() && matchers.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The reading of an alert trigger over the firing alerts its source holds: the number
/// that match, breaching while at least one does; the oldest (then lowest fingerprint) is
/// the one shown and the one a rollback records.
pub fn reading(matchers: &BTreeMap<String, String>, firing: &[Alert]) -> Reading {
    let mut matching: Vec<&Alert> = firing
        .iter()
        .filter(|a| matches(matchers, &a.labels))
        .collect();
    matching.sort_by(|a, b| (a.started(), &a.fingerprint).cmp(&(b.started(), &b.fingerprint)));
    matching.dedup_by(|a, b| a.fingerprint == b.fingerprint);
    let shown = matching.first();
    Reading {
        value: Some(matching.len() as f64),
        baseline: None,
        labels: shown.map(|a| a.labels.clone()).unwrap_or_default(),
        breaching: !matching.is_empty(),
        no_data: false,
        alert: shown.map(|a| a.triggering()),
    }
}

/// An alert trigger's outcome from pushed alerts (`firing`, and `resolved`: those whose
/// resolution arrived lately). Pushed alerts live in memory: after an operator start, a
/// trigger that was breaching cannot tell "resolved" from "not sent again yet" until
/// Alertmanager has had `resend_window` to repeat its firing alerts, or a matching
/// resolution arrives. Until then it is an error (last good values kept, no rollback from
/// it), never a quiet reading.
pub fn pushed_outcome(
    matchers: &BTreeMap<String, String>,
    firing: &[Alert],
    resolved: &[Alert],
    was_breaching: bool,
    receiving_for: Duration,
    resend_window: Duration,
) -> Result<Reading, String> {
    let reading = reading(matchers, firing);
    let heard_resolved = resolved.iter().any(|a| matches(matchers, &a.labels));
    if !reading.breaching && was_breaching && !heard_resolved && receiving_for < resend_window {
        return Err(format!(
            "no matching alert received since the operator started {}s ago; it was firing before, so the trigger waits up to {}s (--alert-resend-window) for Alertmanager to send its firing alerts again (its route's repeat_interval)",
            receiving_for.as_secs(),
            resend_window.as_secs()
        ));
    }
    Ok(reading)
}

/// A guard as the push routing sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardView {
    pub namespace: String,
    pub name: String,
    /// Matchers of its alert triggers; empty when it has none.
    pub matchers: Vec<BTreeMap<String, String>>,
    /// It names its own Alertmanager (`spec.alertmanager`): it reads alerts from there only.
    pub pulls: bool,
}

impl GuardView {
    pub fn of(guard: &crate::api::RolloutGuard) -> Self {
        use kube::ResourceExt;
        Self {
            namespace: guard.namespace().unwrap_or_default(),
            name: guard.name_any(),
            matchers: guard
                .spec
                .triggers
                .iter()
                .filter_map(|t| t.alert.as_ref().map(|a| a.matchers.clone()))
                .collect(),
            pulls: guard.spec.alertmanager.is_some(),
        }
    }
}

/// Where a pushed alert goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// To these guards (namespace, name).
    Guards(Vec<(String, String)>),
    /// It has no `namespace` label: it reaches no guard.
    NoNamespace,
    /// No guard of its namespace has an alert trigger that matches it (the guard does not
    /// exist, has no alert triggers, reads its own Alertmanager, or its matchers differ).
    NoGuard,
}

/// The routing rule of pushed alerts: an alert reaches a guard in the namespace its
/// `namespace` label names, that takes pushed alerts (no `spec.alertmanager`), and that has
/// an alert trigger whose matchers all equal the alert's labels.
pub fn route<'a>(
    labels: &BTreeMap<String, String>,
    guards: impl IntoIterator<Item = &'a GuardView>,
) -> Route {
    let Some(namespace) = labels.get(NAMESPACE_LABEL) else {
        return Route::NoNamespace;
    };
    let mut reached: Vec<(String, String)> = guards
        .into_iter()
        .filter(|g| &g.namespace == namespace && !g.pulls)
        .filter(|g| g.matchers.iter().any(|m| matches(m, labels)))
        .map(|g| (g.namespace.clone(), g.name.clone()))
        .collect();
    reached.sort();
    reached.dedup();
    if reached.is_empty() {
        Route::NoGuard
    } else {
        Route::Guards(reached)
    }
}

#[cfg(test)]
mod tests;
