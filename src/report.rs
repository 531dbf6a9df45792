//! What people read: the `kubectl rollguard status` dashboard and the Markdown incident
//! report of a RollbackRequest. Pure rendering over the custom resources.

use crate::api::guard::{GuardPhase, RolloutGuard};
use crate::api::request::{RequestPhase, RollbackRequest};
use crate::conditions;
use kube::ResourceExt;
use std::fmt::Write as _;

/// Terminal colours, or none when the output is piped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Colour {
    On,
    Off,
}

impl Colour {
    fn paint(self, code: &str, text: &str) -> String {
        match self {
            Colour::On => format!("\x1b[{code}m{text}\x1b[0m"),
            Colour::Off => text.to_string(),
        }
    }
}

fn phase_code(phase: Option<GuardPhase>) -> &'static str {
    match phase {
        Some(GuardPhase::Monitoring) => "32",
        Some(GuardPhase::RolledBack | GuardPhase::Suspended) => "36",
        Some(GuardPhase::Breaching | GuardPhase::Degraded | GuardPhase::RollingBack) => "33",
        Some(GuardPhase::Invalid) | None => "31",
    }
}

fn number(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v.is_finite() && v.abs() >= 1000.0 => format!("{v:.0}"),
        Some(v) if v.is_finite() => {
            let s = format!("{v:.4}");
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        }
        Some(v) => v.to_string(),
    }
}

/// The dashboard: one block per guard, its triggers' values against their thresholds,
/// rollbacks in flight (`requests` not finished) and the last rollback.
pub fn status_dashboard(
    guards: &[RolloutGuard],
    requests: &[RollbackRequest],
    colour: Colour,
    all_namespaces: bool,
) -> String {
    let mut out = String::new();
    if guards.is_empty() {
        out.push_str("No RolloutGuards found.\n");
        return out;
    }
    for guard in guards {
        let status = guard.status.clone().unwrap_or_default();
        let phase = status
            .phase
            .map_or("Unknown".to_string(), |p| format!("{p:?}"));
        let name = if all_namespaces {
            format!(
                "{}/{}",
                guard.namespace().unwrap_or_default(),
                guard.name_any()
            )
        } else {
            guard.name_any()
        };
        let healthy = conditions::status_of(&status.conditions, "Healthy").unwrap_or("Unknown");
        let _ = writeln!(
            out,
            "{}  {}  healthy={}  flags={}/{}",
            colour.paint("1", &name),
            colour.paint(phase_code(status.phase), &phase),
            healthy,
            guard.spec.flags.config_map_ref.name,
            guard.spec.flags.guarded.join(",")
        );
        for trigger in &guard.spec.triggers {
            let t = status.triggers.iter().find(|t| t.name == trigger.name);
            let comparison = crate::triggers::Comparison::of(trigger);
            let (op, threshold) = match comparison {
                Some(crate::triggers::Comparison::Above(t)) => (">", t),
                Some(crate::triggers::Comparison::Below(t)) => ("<", t),
                Some(crate::triggers::Comparison::IncreaseAbove(t)) => ("+%>", t),
                Some(crate::triggers::Comparison::DecreaseBelow(t)) => ("-%>", t),
                None => ("?", 0.0),
            };
            let value = number(t.and_then(|t| t.value));
            let state = match t {
                Some(t) if t.last_error.is_some() => colour.paint("33", "error"),
                Some(t) if t.breaching => {
                    let since = t
                        .breaching_since
                        .as_ref()
                        .map(|s| format!(" since {}", s.0.strftime("%H:%M:%S")))
                        .unwrap_or_default();
                    colour.paint("31", &format!("BREACHING{since}"))
                }
                Some(_) => colour.paint("32", "ok"),
                None => "-".into(),
            };
            let _ = writeln!(
                out,
                "    {:<28} {:>12} {op} {:<10} for {:<6} {state}",
                trigger.name,
                value,
                number(Some(threshold)),
                trigger.for_
            );
        }
        let in_flight: Vec<String> = requests
            .iter()
            .filter(|r| {
                r.namespace() == guard.namespace() && r.spec.guard_ref.name == guard.name_any()
            })
            .filter(|r| {
                !crate::rollback::step::is_terminal(r.status.as_ref().and_then(|s| s.phase))
            })
            .map(|r| {
                format!(
                    "{} ({:?})",
                    r.name_any(),
                    r.status
                        .as_ref()
                        .and_then(|s| s.phase)
                        .unwrap_or(RequestPhase::Pending)
                )
            })
            .collect();
        if !in_flight.is_empty() {
            let _ = writeln!(
                out,
                "    in flight: {}",
                colour.paint("33", &in_flight.join(", "))
            );
        }
        if let Some(last) = &status.last_rollback {
            let when = last
                .time
                .as_ref()
                .map(|t| t.0.strftime("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "    last rollback: {} {} {when}",
                last.name,
                last.outcome.as_deref().unwrap_or("-")
            );
        }
    }
    out
}

/// The post-mortem of one request, in Markdown.
pub fn incident_report(request: &RollbackRequest, guard: Option<&RolloutGuard>) -> String {
    let status = request.status.clone().unwrap_or_default();
    let spec = &request.spec;
    let mut out = String::new();
    let phase = status
        .phase
        .map_or("Pending".to_string(), |p| format!("{p:?}"));
    let _ = writeln!(out, "# Incident report: {}\n", request.name_any());
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(
        out,
        "| Guard | {} (namespace {}) |",
        spec.guard_ref.name,
        request.namespace().unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "| Action | {:?}, {:?}{} |",
        spec.action,
        spec.mode,
        if spec.dry_run { ", dry run" } else { "" }
    );
    let _ = writeln!(out, "| Outcome | **{phase}** |");
    let _ = writeln!(out, "| Requested by | {} |", spec.requested_by);
    let _ = writeln!(
        out,
        "| Reason | {} |",
        if spec.reason.is_empty() {
            "-"
        } else {
            &spec.reason
        }
    );
    if let Some(t) = &status.triggered_by {
        let _ = writeln!(
            out,
            "| Triggered by | trigger `{}` at value {} |",
            t.trigger,
            number(t.value)
        );
    }
    if let Some(s) = &status.snapshot_ref {
        let _ = writeln!(out, "| Snapshot | Secret `{}` |", s.name);
    }
    if let Some(s) = &status.restored_from {
        let _ = writeln!(out, "| Restored from | Secret `{}` |", s.name);
    }
    let created = request
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_default();
    let _ = writeln!(out, "| Created | {created} |");
    if let Some(m) = &status.message {
        let _ = writeln!(out, "\n{m}");
    }

    let _ = writeln!(out, "\n## Flags changed\n");
    match &status.flags_changed {
        Some(changes) if !changes.is_empty() => {
            let _ = writeln!(out, "| flag | from | to |\n|---|---|---|");
            for c in changes {
                let _ = writeln!(out, "| `{}` | `{}` | `{}` |", c.name, c.from, c.to);
            }
        }
        Some(_) => out.push_str("None: every selected flag was already in the target state.\n"),
        None => out.push_str("None yet.\n"),
    }
    if !status.conflicts.is_empty() {
        let _ = writeln!(
            out,
            "\nLeft alone (edited since the rollback):\n\n| flag | rollback wrote | found |\n|---|---|---|"
        );
        for c in &status.conflicts {
            let _ = writeln!(out, "| `{}` | `{}` | `{}` |", c.name, c.expected, c.found);
        }
    }

    let _ = writeln!(out, "\n## Durations against the SLO\n");
    let durations = status.durations.clone().unwrap_or_default();
    let slo = guard.map(|g| g.spec.slo.clone()).unwrap_or_default();
    let _ = writeln!(out, "| step | took (s) | target | met |\n|---|---|---|---|");
    for verdict in slo.judge(&durations) {
        let met = match verdict.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "-",
        };
        let took = verdict.took.map_or("-".into(), |t| format!("{t:.3}"));
        let _ = writeln!(
            out,
            "| {} | {took} | {} | {met} |",
            verdict.name, verdict.target
        );
    }
    if !status.hooks.is_empty() {
        let _ = writeln!(
            out,
            "\n## Hooks\n\n| stage | url | outcome | detail |\n|---|---|---|---|"
        );
        for h in &status.hooks {
            let _ = writeln!(
                out,
                "| {:?} | {} | {:?} | {} |",
                h.stage, h.url, h.outcome, h.message
            );
        }
    }
    let _ = writeln!(
        out,
        "\n## Timeline\n\n| time (UTC) | step | what happened |\n|---|---|---|"
    );
    for entry in &status.timeline {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            entry.time.0.strftime("%H:%M:%S%.3f"),
            entry.step,
            entry.message.replace('|', "\\|")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> RollbackRequest {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "rollguard.dev/v1alpha1", "kind": "RollbackRequest",
            "metadata": {"name": "incident-42", "namespace": "shop", "creationTimestamp": "2026-11-27T10:15:00Z"},
            "spec": {"guardRef": {"name": "phase4"}, "requestedBy": "ops_team", "reason": "Critical issue", "mode": "graceful"},
            "status": {
                "phase": "Succeeded", "message": "rolled back 1 flag(s)",
                "snapshotRef": {"name": "phase4-snap-incident-42"},
                "flagsChanged": [{"name": "a", "from": "true", "to": "false"}],
                "durations": {"flagDisable": 0.041, "healthVerification": 38.2, "total": 400.0},
                "timeline": [{"time": "2026-11-27T10:15:00.041000Z", "step": "FlagsDisabled", "message": "turned off 1 flag(s)"}]
            }
        }))
        .unwrap()
    }

    #[test]
    fn the_report_names_who_why_what_changed_and_each_slo() {
        let report = incident_report(&request(), None);
        for line in [
            "# Incident report: incident-42",
            "| Requested by | ops_team |",
            "| Reason | Critical issue |",
            "| Outcome | **Succeeded** |",
            "| Snapshot | Secret `phase4-snap-incident-42` |",
            "| `a` | `true` | `false` |",
            "| flagDisable | 0.041 | 10s | yes |",
            "| total | 400.000 | 5m | **no** |",
            "| notification | - | 10s | - |",
            "| 10:15:00.041 | FlagsDisabled | turned off 1 flag(s) |",
        ] {
            assert!(report.contains(line), "missing {line:?} in\n{report}");
        }
    }

    #[test]
    fn the_dashboard_shows_values_against_thresholds_without_colour_when_piped() {
        let guard: RolloutGuard = serde_json::from_value(serde_json::json!({
            "apiVersion": "rollguard.dev/v1alpha1", "kind": "RolloutGuard",
            "metadata": {"name": "phase4", "namespace": "shop"},
            "spec": {"flags": {"configMapRef": {"name": "ff"}, "guarded": ["a"]},
                     "triggers": [{"name": "error-rate", "query": "q", "above": 0.01, "for": "5m"}]},
            "status": {"phase": "Breaching", "triggers": [{"name": "error-rate", "value": 0.023, "threshold": 0.01, "breaching": true, "breachingSince": "2026-11-27T10:14:00Z"}]}
        }))
        .unwrap();
        let text = status_dashboard(&[guard], &[], Colour::Off, false);
        assert!(
            text.starts_with("phase4  Breaching  healthy=Unknown  flags=ff/a\n"),
            "{text}"
        );
        assert!(
            text.contains("error-rate")
                && text.contains("0.023 > 0.01")
                && text.contains("BREACHING since 10:14:00"),
            "{text}"
        );
        assert!(!text.contains('\x1b'));
        assert!(status_dashboard(&[], &[], Colour::On, false).contains("No RolloutGuards"));
    }
}
