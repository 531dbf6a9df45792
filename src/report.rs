//! What people read: the `kubectl rollguard status` dashboard and the incident report of a
//! RollbackRequest. A functional core: pure functions from the custom resources (and a
//! fixed "now" for ages) to text or JSON; the plugin binary only fetches and prints.
//!
//! Both outputs are built in two steps: a summary with stable, camelCase field names (what
//! `-o json` prints) and a text rendering of that summary, so JSON and text never disagree.

use crate::api::guard::{GuardPhase, RolloutGuard, Trigger, TriggerStatus};
use crate::api::request::{
    FlagChange, FlagConflict, HookCall, NotificationRecord, RequestAction, RequestPhase,
    RollbackRequest,
};
use crate::conditions;
use crate::triggers::Comparison;
use jiff::Timestamp;
use kube::ResourceExt;
use serde::Serialize;
use std::fmt::Write as _;

/// Terminal colours, or none when the output is piped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Colour {
    On,
    Off,
}

impl Colour {
    /// Colour on a terminal unless `NO_COLOR` is set to a non-empty value (no-color.org).
    pub fn detect(stdout_is_terminal: bool, no_color: Option<&str>) -> Self {
        if stdout_is_terminal && no_color.is_none_or(str::is_empty) {
            Colour::On
        } else {
            Colour::Off
        }
    }

    fn paint(self, code: Option<&str>, text: &str) -> String {
        match (self, code) {
            (Colour::On, Some(code)) => format!("\x1b[{code}m{text}\x1b[0m"),
            _ => text.to_string(),
        }
    }
}

const RED: Option<&str> = Some("31");
const GREEN: Option<&str> = Some("32");
const YELLOW: Option<&str> = Some("33");
const CYAN: Option<&str> = Some("36");
const BOLD: Option<&str> = Some("1");

/// `kubectl rollguard status -o …`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusFormat {
    /// One line per guard.
    Default,
    /// One line per guard, then its flags, triggers (value against threshold, breach start,
    /// last error) and problems.
    Wide,
    /// A JSON array of [`GuardSummary`].
    Json,
}

#[derive(Clone, Debug)]
pub struct StatusOptions {
    pub format: StatusFormat,
    pub colour: Colour,
    /// The namespace listed, or None for every namespace (`-A`: a NAMESPACE column).
    pub namespace: Option<String>,
    /// The time ages ("3m ago") are measured to.
    pub now: Timestamp,
}

// ---- summaries (what `-o json` prints) ----------------------------------------------

/// One guard as the dashboard shows it.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GuardSummary {
    pub namespace: String,
    pub name: String,
    /// `status.phase`, or `Unknown` before the first evaluation.
    pub phase: String,
    pub suspended: bool,
    /// Status of the `Healthy` condition: True, False or Unknown.
    pub healthy: String,
    /// Status of the `PrometheusReachable` condition: True, False or Unknown.
    pub prometheus_reachable: String,
    pub flags_drifted: bool,
    pub flags: FlagsSummary,
    pub triggers_breaching: usize,
    pub triggers_total: usize,
    pub triggers: Vec<TriggerSummary>,
    /// `status.activeRollback`: the request holding the guard's rollback slot.
    pub active_rollback: Option<RequestRef>,
    /// Unfinished requests of this guard, oldest first (the active one included).
    pub in_flight: Vec<RequestRef>,
    pub last_rollback: Option<LastAction>,
    pub last_restore: Option<LastAction>,
    pub last_evaluation_time: Option<String>,
    pub conditions: Vec<ConditionSummary>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FlagsSummary {
    pub config_map: String,
    /// `plain` or `flagd`.
    pub format: String,
    pub guarded: Vec<String>,
}

/// One trigger: its comparison from the spec, its last evaluation from the status.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TriggerSummary {
    pub name: String,
    /// `above`, `below`, `increaseAbove` or `decreaseBelow`.
    pub comparison: Option<String>,
    pub threshold: Option<f64>,
    pub value: Option<f64>,
    pub baseline: Option<f64>,
    /// Relative comparisons: (value - baseline) / |baseline|.
    pub change: Option<f64>,
    /// The trigger's `for`.
    #[serde(rename = "for")]
    pub for_: String,
    /// `rollback` or `alert`.
    pub action: String,
    /// `ok`, `breaching`, `noData`, `error` or `notEvaluated`.
    pub state: String,
    pub breaching: bool,
    pub breaching_since: Option<String>,
    pub last_error: Option<String>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RequestRef {
    pub name: String,
    /// `rollback` or `restore`.
    pub action: String,
    /// The request's phase (`Pending` until the operator writes one).
    pub phase: String,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LastAction {
    pub name: String,
    pub time: Option<String>,
    pub outcome: Option<String>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConditionSummary {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
}

/// The serde name of an enum value (`camelCase` as in the API).
fn wire_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "-".into(),
    }
}

fn phase_name(phase: Option<GuardPhase>) -> String {
    phase.map_or("Unknown".into(), |p| format!("{p:?}"))
}

fn request_phase(request: &RollbackRequest) -> RequestPhase {
    request
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .unwrap_or(RequestPhase::Pending)
}

fn comparison_name(comparison: Comparison) -> &'static str {
    match comparison {
        Comparison::Above(_) => "above",
        Comparison::Below(_) => "below",
        Comparison::IncreaseAbove(_) => "increaseAbove",
        Comparison::DecreaseBelow(_) => "decreaseBelow",
    }
}

/// One trigger of `guard`'s spec with its status (if evaluated).
pub fn trigger_summary(trigger: &Trigger, status: Option<&TriggerStatus>) -> TriggerSummary {
    let comparison = Comparison::of(trigger);
    let relative = matches!(
        comparison,
        Some(Comparison::IncreaseAbove(_) | Comparison::DecreaseBelow(_))
    );
    let value = status.and_then(|s| s.value);
    let baseline = status.and_then(|s| s.baseline);
    let change = match (relative, value, baseline) {
        (true, Some(v), Some(b)) if b != 0.0 && b.is_finite() => Some((v - b) / b.abs()),
        _ => None,
    };
    let state = match status {
        None => "notEvaluated",
        Some(s) if s.last_error.is_some() => "error",
        Some(s) if s.breaching => "breaching",
        Some(s) if s.value.is_none() => "noData",
        Some(_) => "ok",
    };
    TriggerSummary {
        name: trigger.name.clone(),
        comparison: comparison.map(|c| comparison_name(c).to_string()),
        threshold: comparison.map(Comparison::threshold),
        value,
        baseline,
        change,
        for_: trigger.for_.to_string(),
        action: wire_name(&trigger.action),
        state: state.into(),
        breaching: status.is_some_and(|s| s.breaching),
        breaching_since: status
            .and_then(|s| s.breaching_since.as_ref())
            .map(|t| t.0.to_string()),
        last_error: status.and_then(|s| s.last_error.clone()),
    }
}

fn trigger_summaries(guard: &RolloutGuard) -> Vec<TriggerSummary> {
    let statuses = guard
        .status
        .as_ref()
        .map(|s| s.triggers.as_slice())
        .unwrap_or_default();
    guard
        .spec
        .triggers
        .iter()
        .map(|t| trigger_summary(t, statuses.iter().find(|s| s.name == t.name)))
        .collect()
}

fn request_ref(request: &RollbackRequest) -> RequestRef {
    RequestRef {
        name: request.name_any(),
        action: wire_name(&request.spec.action),
        phase: format!("{:?}", request_phase(request)),
    }
}

/// The dashboard's view of each guard; `requests` supplies the rollbacks in flight.
/// Sorted by namespace and name.
pub fn guard_summaries(guards: &[RolloutGuard], requests: &[RollbackRequest]) -> Vec<GuardSummary> {
    let mut summaries: Vec<GuardSummary> = guards
        .iter()
        .map(|guard| {
            let status = guard.status.clone().unwrap_or_default();
            let namespace = guard.namespace().unwrap_or_default();
            let name = guard.name_any();
            let mut mine: Vec<&RollbackRequest> = requests
                .iter()
                .filter(|r| {
                    r.namespace().unwrap_or_default() == namespace && r.spec.guard_ref.name == name
                })
                .collect();
            mine.sort_by_key(|r| {
                (
                    r.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    r.name_any(),
                )
            });
            let in_flight: Vec<RequestRef> = mine
                .iter()
                .filter(|r| {
                    !crate::rollback::step::is_terminal(r.status.as_ref().and_then(|s| s.phase))
                })
                .map(|r| request_ref(r))
                .collect();
            let active_rollback = status.active_rollback.as_ref().map(|active| {
                mine.iter()
                    .find(|r| &r.name_any() == active)
                    .map(|r| request_ref(r))
                    .unwrap_or(RequestRef {
                        name: active.clone(),
                        action: "rollback".into(),
                        phase: "Unknown".into(),
                    })
            });
            let triggers = trigger_summaries(guard);
            let condition_status = |type_: &str| {
                conditions::status_of(&status.conditions, type_)
                    .unwrap_or(conditions::UNKNOWN)
                    .to_string()
            };
            let last = |l: &Option<crate::api::guard::LastRollback>| {
                l.as_ref().map(|l| LastAction {
                    name: l.name.clone(),
                    time: l.time.as_ref().map(|t| t.0.to_string()),
                    outcome: l.outcome.clone(),
                })
            };
            GuardSummary {
                namespace,
                name,
                phase: phase_name(status.phase),
                suspended: guard.spec.suspend,
                healthy: condition_status("Healthy"),
                prometheus_reachable: condition_status("PrometheusReachable"),
                flags_drifted: conditions::is_true(&status.conditions, "FlagsDrifted"),
                flags: FlagsSummary {
                    config_map: guard.spec.flags.config_map_ref.name.clone(),
                    format: wire_name(&guard.spec.flags.format),
                    guarded: guard.spec.flags.guarded.clone(),
                },
                triggers_breaching: triggers.iter().filter(|t| t.breaching).count(),
                triggers_total: triggers.len(),
                triggers,
                active_rollback,
                in_flight,
                last_rollback: last(&status.last_rollback),
                last_restore: last(&status.last_restore),
                last_evaluation_time: status
                    .last_evaluation_time
                    .as_ref()
                    .map(|t| t.0.to_string()),
                conditions: status
                    .conditions
                    .iter()
                    .map(|c| ConditionSummary {
                        type_: c.type_.clone(),
                        status: c.status.clone(),
                        reason: c.reason.clone(),
                        message: c.message.clone(),
                    })
                    .collect(),
            }
        })
        .collect();
    summaries.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    summaries
}

// ---- the dashboard ------------------------------------------------------------------

/// A number as people read it: up to 4 decimals, no trailing zeros.
fn number(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v.is_finite() && v.abs() >= 1000.0 => format!("{v:.0}"),
        Some(v) if v.is_finite() => {
            let s = format!("{v:.4}");
            let s = s.trim_end_matches('0').trim_end_matches('.');
            if s == "-0" { "0".into() } else { s.into() }
        }
        Some(v) => v.to_string(),
    }
}

fn percent(fraction: f64) -> String {
    format!("{}%", number(Some(fraction * 100.0)))
}

fn signed_percent(fraction: f64) -> String {
    let sign = if fraction >= 0.0 { "+" } else { "" };
    format!("{sign}{}", percent(fraction))
}

/// How long ago `then` was, as kubectl prints ages: `45s`, `3m20s`, `2h5m`, `3d4h`.
pub fn age(now: Timestamp, then: Timestamp) -> String {
    let secs = now.duration_since(then).as_secs().max(0);
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match secs {
        0..60 => format!("{s}s"),
        60..3600 if s == 0 => format!("{m}m"),
        60..3600 => format!("{m}m{s}s"),
        3600..86_400 if m == 0 => format!("{h}h"),
        3600..86_400 => format!("{h}h{m}m"),
        _ if h == 0 => format!("{d}d"),
        _ => format!("{d}d{h}h"),
    }
}

fn parse_time(text: &str) -> Option<Timestamp> {
    text.parse().ok()
}

/// `2026-11-27T10:14:00Z (1m30s ago)`.
fn when(now: Timestamp, time: Option<&str>) -> String {
    match time.and_then(parse_time) {
        Some(t) => format!("{} ({} ago)", t.strftime("%Y-%m-%dT%H:%M:%SZ"), age(now, t)),
        None => "-".into(),
    }
}

fn phase_colour(phase: &str) -> Option<&'static str> {
    match phase {
        "Monitoring" => GREEN,
        "RolledBack" | "Suspended" => CYAN,
        "Breaching" | "Degraded" | "RollingBack" => YELLOW,
        _ => RED,
    }
}

fn condition_colour(status: &str, good: &str) -> Option<&'static str> {
    match status {
        s if s == good => GREEN,
        "Unknown" => None,
        _ => RED,
    }
}

fn outcome_colour(outcome: Option<&str>) -> Option<&'static str> {
    match outcome {
        Some("Succeeded") => GREEN,
        Some(_) => RED,
        None => None,
    }
}

/// A cell: its text (padded on its plain width) and an optional colour.
type Cell = (String, Option<&'static str>);

fn plain(text: impl Into<String>) -> Cell {
    (text.into(), None)
}

/// Columns aligned on the plain text, so colour codes never shift them.
fn table(out: &mut String, indent: &str, rows: &[Vec<Cell>], colour: Colour) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.0.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        out.push_str(indent);
        for (i, (text, code)) in row.iter().enumerate() {
            let last = i + 1 == row.len();
            out.push_str(&colour.paint(*code, text));
            if !last {
                let pad = widths[i] - text.chars().count() + 2;
                out.push_str(&" ".repeat(pad));
            }
        }
        out.push('\n');
    }
}

fn active_cell(g: &GuardSummary) -> Cell {
    let waiting = |shown: &str| g.in_flight.iter().filter(|r| r.name != shown).count();
    let (shown, text) = match (&g.active_rollback, g.in_flight.first()) {
        (Some(a), _) => (a.name.as_str(), format!("{} ({})", a.name, a.phase)),
        (None, Some(r)) => (r.name.as_str(), format!("{} ({})", r.name, r.phase)),
        (None, None) => return plain("-"),
    };
    let more = waiting(shown);
    let text = if more > 0 {
        format!("{text} +{more} waiting")
    } else {
        text
    };
    (text, YELLOW)
}

fn last_cell(last: Option<&LastAction>, now: Timestamp) -> Cell {
    match last {
        None => plain("-"),
        Some(l) => {
            let ago = l
                .time
                .as_deref()
                .and_then(parse_time)
                .map(|t| format!(" {} ago", age(now, t)))
                .unwrap_or_default();
            (
                format!("{} {}{ago}", l.name, l.outcome.as_deref().unwrap_or("-")),
                outcome_colour(l.outcome.as_deref()),
            )
        }
    }
}

fn guard_row(g: &GuardSummary, opts: &StatusOptions) -> Vec<Cell> {
    let mut row = Vec::new();
    if opts.namespace.is_none() {
        row.push(plain(g.namespace.clone()));
    }
    row.push((g.name.clone(), BOLD));
    row.push((g.phase.clone(), phase_colour(&g.phase)));
    row.push((g.healthy.clone(), condition_colour(&g.healthy, "True")));
    row.push((
        format!("{}/{}", g.triggers_breaching, g.triggers_total),
        if g.triggers_breaching > 0 { RED } else { None },
    ));
    row.push(active_cell(g));
    row.push(last_cell(g.last_rollback.as_ref(), opts.now));
    if opts.format == StatusFormat::Wide {
        row.push(match g.prometheus_reachable.as_str() {
            "True" => ("reachable".into(), GREEN),
            "False" => ("UNREACHABLE".into(), RED),
            _ => plain("-"),
        });
    }
    row
}

fn header(opts: &StatusOptions) -> Vec<Cell> {
    let mut names = Vec::new();
    if opts.namespace.is_none() {
        names.push("NAMESPACE");
    }
    names.extend([
        "NAME",
        "PHASE",
        "HEALTHY",
        "BREACHING",
        "ACTIVE ROLLBACK",
        "LAST ROLLBACK",
    ]);
    if opts.format == StatusFormat::Wide {
        names.push("PROMETHEUS");
    }
    names.into_iter().map(plain).collect()
}

/// `above 0.01`, `increaseAbove 5%`.
fn comparison_text(t: &TriggerSummary) -> String {
    match (t.comparison.as_deref(), t.threshold) {
        (Some(c @ ("increaseAbove" | "decreaseBelow")), Some(th)) => {
            format!("{c} {}", percent(th))
        }
        (Some(c), th) => format!("{c} {}", number(th)),
        (None, _) => "-".into(),
    }
}

/// `0.023`, or for relative comparisons `0.32 (+28% vs baseline 0.25)`.
fn value_text(t: &TriggerSummary) -> String {
    match (t.value, t.change, t.baseline) {
        (Some(v), Some(change), Some(b)) => format!(
            "{} ({} vs baseline {})",
            number(Some(v)),
            signed_percent(change),
            number(Some(b))
        ),
        (None, _, _) if t.state != "notEvaluated" => "no data".into(),
        (v, _, _) => number(v),
    }
}

fn state_cell(t: &TriggerSummary) -> Cell {
    match t.state.as_str() {
        "ok" => ("ok".into(), GREEN),
        "breaching" => ("BREACHING".into(), RED),
        "error" if t.breaching => ("ERROR (last: BREACHING)".into(), YELLOW),
        "error" => ("ERROR".into(), YELLOW),
        "noData" => plain("no data"),
        _ => plain("not evaluated"),
    }
}

fn since_text(t: &TriggerSummary, now: Timestamp) -> String {
    match t.breaching_since.as_deref().and_then(parse_time) {
        Some(since) => format!(
            "{} (for {} of {})",
            since.strftime("%Y-%m-%dT%H:%M:%SZ"),
            age(now, since),
            t.for_
        ),
        None => "-".into(),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn wide_details(out: &mut String, g: &GuardSummary, opts: &StatusOptions) {
    let indent = "    ";
    let mut facts = vec![format!(
        "flags: ConfigMap {} ({}): {}",
        g.flags.config_map,
        g.flags.format,
        g.flags.guarded.join(", ")
    )];
    facts.push(format!(
        "values as of: {}",
        when(opts.now, g.last_evaluation_time.as_deref())
    ));
    if g.suspended {
        facts.push("suspended: no evaluation, no automatic rollback".into());
    }
    for f in &facts {
        let _ = writeln!(out, "{indent}{f}");
    }
    // What needs attention, in the operator's words.
    for c in &g.conditions {
        let problem = match c.type_.as_str() {
            "FlagsDrifted" => c.status == conditions::TRUE,
            "Ready" | "Healthy" | "PrometheusReachable" => c.status == conditions::FALSE,
            _ => false,
        };
        if problem {
            let text = format!(
                "{}={}: {}: {}",
                c.type_,
                c.status,
                c.reason,
                one_line(&c.message)
            );
            let _ = writeln!(out, "{indent}{}", opts.colour.paint(RED, &text));
        }
    }
    for r in g
        .in_flight
        .iter()
        .filter(|r| g.active_rollback.as_ref().is_none_or(|a| a.name != r.name))
    {
        let _ = writeln!(
            out,
            "{indent}waiting: {} {} ({})",
            r.action, r.name, r.phase
        );
    }
    if let Some(l) = &g.last_restore {
        let _ = writeln!(
            out,
            "{indent}last restore: {} {} at {}",
            l.name,
            l.outcome.as_deref().unwrap_or("-"),
            when(opts.now, l.time.as_deref())
        );
    }
    if g.triggers.is_empty() {
        let _ = writeln!(out, "{indent}no triggers");
        return;
    }
    let mut rows: Vec<Vec<Cell>> = vec![
        [
            "TRIGGER",
            "VALUE",
            "COMPARISON",
            "FOR",
            "ACTION",
            "STATE",
            "BREACHING SINCE",
            "LAST ERROR",
        ]
        .into_iter()
        .map(plain)
        .collect(),
    ];
    for t in &g.triggers {
        rows.push(vec![
            plain(t.name.clone()),
            plain(value_text(t)),
            plain(comparison_text(t)),
            plain(t.for_.clone()),
            plain(t.action.clone()),
            state_cell(t),
            plain(since_text(t, opts.now)),
            (
                t.last_error.as_deref().map_or("-".into(), one_line),
                t.last_error.as_ref().and(YELLOW),
            ),
        ]);
    }
    table(out, indent, &rows, opts.colour);
}

/// `kubectl rollguard status`: the dashboard of `guards`, in `opts.format`.
pub fn render_status(
    guards: &[RolloutGuard],
    requests: &[RollbackRequest],
    opts: &StatusOptions,
) -> String {
    let summaries = guard_summaries(guards, requests);
    if opts.format == StatusFormat::Json {
        let mut json = serde_json::to_string_pretty(&summaries).unwrap_or_else(|_| "[]".into());
        json.push('\n');
        return json;
    }
    if summaries.is_empty() {
        return match &opts.namespace {
            Some(ns) => format!("No RolloutGuards found in namespace {ns:?}.\n"),
            None => "No RolloutGuards found in any namespace.\n".into(),
        };
    }
    let mut out = String::new();
    match opts.format {
        StatusFormat::Wide => {
            // Guard rows share their column widths across the details between them.
            let mut rows = vec![header(opts)];
            rows.extend(summaries.iter().map(|g| guard_row(g, opts)));
            let mut aligned = String::new();
            table(&mut aligned, "", &rows, opts.colour);
            let mut lines = aligned.lines();
            let _ = writeln!(out, "{}", lines.next().unwrap_or_default());
            for (g, line) in summaries.iter().zip(lines) {
                let _ = writeln!(out, "{line}");
                wide_details(&mut out, g, opts);
            }
        }
        _ => {
            let mut rows = vec![header(opts)];
            rows.extend(summaries.iter().map(|g| guard_row(g, opts)));
            table(&mut out, "", &rows, opts.colour);
        }
    }
    out
}

// ---- the incident report --------------------------------------------------------------

/// The post-mortem of one request: what `report -o json` prints and the Markdown renders.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IncidentRecord {
    pub name: String,
    pub namespace: String,
    pub guard: String,
    /// Whether the guard could be read (without it, SLO targets are the defaults).
    pub guard_found: bool,
    /// `rollback` or `restore`.
    pub action: String,
    /// `graceful` or `immediate`.
    pub mode: String,
    pub dry_run: bool,
    /// The request's phase.
    pub outcome: String,
    pub message: Option<String>,
    pub requested_by: String,
    /// Created by the operator itself (a trigger fired).
    pub automatic: bool,
    pub reason: String,
    /// `spec.flags`: empty means every guarded flag.
    pub requested_flags: Vec<String>,
    pub force_disable_all: bool,
    pub created_at: Option<String>,
    pub started_at: Option<String>,
    pub flags_changed_at: Option<String>,
    pub completed_at: Option<String>,
    pub triggered_by: Option<TriggeredByRecord>,
    /// The guard's triggers at its last evaluation (`triggersAsOf`).
    pub triggers: Vec<TriggerSummary>,
    pub triggers_as_of: Option<String>,
    pub snapshot: Option<String>,
    pub restored_from: Option<String>,
    /// None: the flags have not been written (yet).
    pub flags_changed: Option<Vec<FlagChange>>,
    pub conflicts: Vec<FlagConflict>,
    pub slo: Vec<SloRecord>,
    /// `status.slo` as the operator recorded it at completion.
    pub slo_met: Option<bool>,
    pub slo_missed: Vec<String>,
    pub notifications: Vec<NotificationRecord>,
    pub hooks: Vec<HookCall>,
    pub timeline: Vec<TimelineRecord>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TriggeredByRecord {
    pub trigger: String,
    pub value: Option<f64>,
    /// From the guard's spec, when the trigger is still there.
    pub comparison: Option<String>,
    pub threshold: Option<f64>,
    /// Alert triggers: the alert that fired it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert: Option<crate::api::request::TriggeringAlert>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SloRecord {
    /// flagDisable, flagEffective (with a propagation check), notification,
    /// healthVerification, total, stability.
    pub name: String,
    pub seconds: Option<f64>,
    /// The guard's `spec.slo` target as written (`10s`).
    pub target: String,
    /// None: not measured (yet).
    pub met: Option<bool>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TimelineRecord {
    pub time: String,
    /// Seconds since the request's creationTimestamp.
    pub offset_seconds: Option<f64>,
    pub step: String,
    pub message: String,
}

/// Seconds from request creation to the guard turning `Stable` after this rollback: only
/// when this request is the guard's last rollback and `Stable` became True after it.
fn stability_seconds(
    request: &RollbackRequest,
    guard: &RolloutGuard,
    created: Timestamp,
) -> Option<f64> {
    let status = guard.status.as_ref()?;
    if status.last_rollback.as_ref()?.name != request.name_any() {
        return None;
    }
    let stable = conditions::get(&status.conditions, "Stable")?;
    let at = stable.last_transition_time.0;
    (stable.status == conditions::TRUE && at >= created)
        .then(|| at.duration_since(created).as_secs_f64())
}

/// The incident record of `request`; `guard` is its RolloutGuard if it could be read.
pub fn incident_record(request: &RollbackRequest, guard: Option<&RolloutGuard>) -> IncidentRecord {
    let status = request.status.clone().unwrap_or_default();
    let spec = &request.spec;
    let created = request.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let slo_spec = guard.map(|g| g.spec.slo.clone()).unwrap_or_default();
    let durations = status.durations.clone().unwrap_or_default();
    let propagation = guard.is_some_and(|g| g.spec.health.propagation.is_some());
    let mut slo: Vec<SloRecord> = crate::slo::judge(&slo_spec, &durations, propagation)
        .into_iter()
        .map(|v| SloRecord {
            name: v.name.into(),
            seconds: v.took,
            target: v.target.to_string(),
            met: v.met,
        })
        .collect();
    if spec.action == RequestAction::Rollback && !spec.dry_run {
        let took = guard
            .zip(created)
            .and_then(|(g, c)| stability_seconds(request, g, c));
        slo.push(SloRecord {
            name: "stability".into(),
            seconds: took,
            target: slo_spec.stability.to_string(),
            met: match (took, slo_spec.stability.to_std()) {
                (Some(took), Ok(t)) => Some(took <= t.as_secs_f64()),
                _ => None,
            },
        });
    }
    let triggered_by = status.triggered_by.as_ref().map(|t| {
        let comparison = guard
            .and_then(|g| g.spec.triggers.iter().find(|s| s.name == t.trigger))
            .and_then(Comparison::of);
        TriggeredByRecord {
            trigger: t.trigger.clone(),
            value: t.value,
            comparison: comparison.map(|c| comparison_name(c).to_string()),
            threshold: comparison.map(Comparison::threshold),
            alert: t.alert.clone(),
        }
    });
    let time = |t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime>| {
        t.as_ref().map(|t| t.0.to_string())
    };
    IncidentRecord {
        name: request.name_any(),
        namespace: request.namespace().unwrap_or_default(),
        guard: spec.guard_ref.name.clone(),
        guard_found: guard.is_some(),
        action: wire_name(&spec.action),
        mode: wire_name(&spec.mode),
        dry_run: spec.dry_run,
        outcome: format!("{:?}", request_phase(request)),
        message: status.message.clone(),
        requested_by: spec.requested_by.clone(),
        automatic: spec.requested_by == crate::api::SYSTEM_REQUESTER,
        reason: spec.reason.clone(),
        requested_flags: spec.flags.clone(),
        force_disable_all: spec.force_disable_all,
        created_at: created.map(|t| t.to_string()),
        started_at: time(&status.started_at),
        flags_changed_at: time(&status.flags_changed_at),
        completed_at: time(&status.completed_at),
        triggered_by,
        triggers: guard.map(trigger_summaries).unwrap_or_default(),
        triggers_as_of: guard
            .and_then(|g| g.status.as_ref())
            .and_then(|s| s.last_evaluation_time.as_ref())
            .map(|t| t.0.to_string()),
        snapshot: status.snapshot_ref.as_ref().map(|s| s.name.clone()),
        restored_from: status.restored_from.as_ref().map(|s| s.name.clone()),
        flags_changed: status.flags_changed.clone(),
        conflicts: status.conflicts.clone(),
        slo,
        slo_met: status.slo.as_ref().map(|s| s.met),
        slo_missed: status
            .slo
            .as_ref()
            .map(|s| s.missed.clone())
            .unwrap_or_default(),
        notifications: status.notifications.clone(),
        hooks: status.hooks.clone(),
        timeline: status
            .timeline
            .iter()
            .map(|e| TimelineRecord {
                time: e.time.0.to_string(),
                offset_seconds: created.map(|c| e.time.0.duration_since(c).as_secs_f64()),
                step: e.step.clone(),
                message: e.message.clone(),
            })
            .collect(),
    }
}

/// Text safe inside a Markdown table cell: one line, pipes escaped.
fn md(text: &str) -> String {
    one_line(text).replace('|', "\\|")
}

/// `2026-11-27 10:15:00.041Z`.
fn md_time(time: Option<&str>) -> String {
    match time.and_then(parse_time) {
        Some(t) => t.strftime("%Y-%m-%d %H:%M:%S%.3fZ").to_string(),
        None => "-".into(),
    }
}

fn seconds(s: Option<f64>) -> String {
    s.map_or("-".into(), |s| format!("{s:.3}s"))
}

fn threshold_text(comparison: Option<&str>, threshold: Option<f64>) -> String {
    let t = TriggerSummary {
        name: String::new(),
        comparison: comparison.map(str::to_string),
        threshold,
        value: None,
        baseline: None,
        change: None,
        for_: String::new(),
        action: String::new(),
        state: String::new(),
        breaching: false,
        breaching_since: None,
        last_error: None,
    };
    comparison_text(&t)
}

/// The post-mortem of one request, in Markdown.
pub fn incident_report(request: &RollbackRequest, guard: Option<&RolloutGuard>) -> String {
    render_incident_markdown(&incident_record(request, guard))
}

/// The Markdown rendering of an [`IncidentRecord`].
pub fn render_incident_markdown(r: &IncidentRecord) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Incident report: {}\n", r.name);

    // Summary
    let what = if r.dry_run {
        format!("dry-run {}", r.action)
    } else {
        r.action.clone()
    };
    let _ = writeln!(
        out,
        "**{}**: {what} of guard `{}` in namespace `{}`.",
        r.outcome, r.guard, r.namespace
    );
    if let Some(m) = &r.message {
        let _ = writeln!(out, "\n> {}", one_line(m));
    }
    let _ = writeln!(out, "\n## Summary\n\n| | |\n|---|---|");
    let mut row = |k: &str, v: String| {
        let _ = writeln!(out, "| {k} | {v} |");
    };
    row(
        "Guard",
        format!("`{}` (namespace `{}`)", r.guard, r.namespace),
    );
    row(
        "Action",
        format!(
            "{}, {}{}",
            r.action,
            r.mode,
            if r.dry_run { ", dry run" } else { "" }
        ),
    );
    row("Outcome", format!("**{}**", r.outcome));
    row("Created", md_time(r.created_at.as_deref()));
    row("Started", md_time(r.started_at.as_deref()));
    row("Flags changed at", md_time(r.flags_changed_at.as_deref()));
    if let Some(effective) = r.timeline.iter().find(|e| e.step == "FlagsEffective") {
        row("Flags effective at", md_time(Some(&effective.time)));
    }
    row("Completed", md_time(r.completed_at.as_deref()));
    row(
        "Snapshot",
        r.snapshot
            .as_ref()
            .map_or("-".into(), |s| format!("Secret `{s}`")),
    );
    if let Some(s) = &r.restored_from {
        row("Restored from", format!("Secret `{s}`"));
    }

    // Who and why
    let _ = writeln!(out, "\n## Who and why\n\n| | |\n|---|---|");
    let mut row = |k: &str, v: String| {
        let _ = writeln!(out, "| {k} | {v} |");
    };
    row(
        "Requested by",
        if r.automatic {
            format!("`{}` (automatic: a trigger fired)", md(&r.requested_by))
        } else {
            format!("`{}`", md(&r.requested_by))
        },
    );
    row(
        "Reason",
        if r.reason.is_empty() {
            "-".into()
        } else {
            md(&r.reason)
        },
    );
    row(
        "Mode",
        match r.mode.as_str() {
            "immediate" => "immediate (emergency: no hooks, no waiting)".into(),
            "graceful" => "graceful (drain hooks, then flags)".into(),
            other => other.into(),
        },
    );
    row(
        "Flags requested",
        if r.requested_flags.is_empty() {
            "all guarded flags".into()
        } else {
            r.requested_flags
                .iter()
                .map(|f| format!("`{}`", md(f)))
                .collect::<Vec<_>>()
                .join(", ")
        },
    );
    if r.force_disable_all {
        row(
            "Force disable all",
            "yes: every other boolean flag in the ConfigMap too".into(),
        );
    }

    // Trigger values
    let _ = writeln!(out, "\n## Trigger values\n");
    match &r.triggered_by {
        Some(t) => {
            let against = match t.comparison {
                Some(_) => format!(
                    " ({})",
                    threshold_text(t.comparison.as_deref(), t.threshold)
                ),
                None => String::new(),
            };
            match &t.alert {
                Some(alert) => {
                    let _ = writeln!(
                        out,
                        "Triggered by `{}`: alert `{}` (fingerprint `{}`) firing since {}, {} matching alert(s).",
                        t.trigger,
                        alert.name,
                        alert.fingerprint,
                        alert.starts_at,
                        number(t.value)
                    );
                    if !alert.generator_url.is_empty() {
                        let _ = writeln!(out, "\nThe rule behind it: <{}>", alert.generator_url);
                    }
                }
                None => {
                    let _ = writeln!(
                        out,
                        "Triggered by `{}` at value {}{against}.",
                        t.trigger,
                        number(t.value)
                    );
                }
            }
        }
        None => {
            let _ = writeln!(out, "Not triggered automatically: requested by a person.");
        }
    }
    if !r.guard_found {
        let _ = writeln!(
            out,
            "\nGuard `{}` was not found or not readable: its trigger values are unknown and the SLO targets below are the defaults.",
            r.guard
        );
    } else if r.triggers.is_empty() {
        let _ = writeln!(out, "\nThe guard has no triggers.");
    } else {
        let _ = writeln!(
            out,
            "\nThe guard's triggers now (values as of {}):\n\n| trigger | value | comparison | for | state | breaching since | last error |\n|---|---|---|---|---|---|---|",
            md_time(r.triggers_as_of.as_deref())
        );
        for t in &r.triggers {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} | {} | {} |",
                t.name,
                md(&value_text(t)),
                comparison_text(t),
                t.for_,
                t.state,
                md_time(t.breaching_since.as_deref()),
                t.last_error.as_deref().map_or("-".into(), md)
            );
        }
    }

    // Flags changed
    let _ = writeln!(out, "\n## Flags changed\n");
    match &r.flags_changed {
        Some(changes) if !changes.is_empty() => {
            let _ = writeln!(out, "| flag | from | to |\n|---|---|---|");
            for c in changes {
                let _ = writeln!(
                    out,
                    "| `{}` | `{}` | `{}` |",
                    md(&c.name),
                    md(&c.from),
                    md(&c.to)
                );
            }
        }
        Some(_) => out.push_str("None: every selected flag was already in the target state.\n"),
        None => out.push_str("None yet.\n"),
    }
    if !r.conflicts.is_empty() {
        let _ = writeln!(
            out,
            "\nRestore conflicts: edited since the rollback, left alone.\n\n| flag | rollback wrote | found |\n|---|---|---|"
        );
        for c in &r.conflicts {
            let _ = writeln!(
                out,
                "| `{}` | `{}` | `{}` |",
                md(&c.name),
                md(&c.expected),
                md(&c.found)
            );
        }
    }

    // Durations against the SLO
    let _ = writeln!(
        out,
        "\n## Durations against the SLO\n\n| measure | took | target | met |\n|---|---|---|---|"
    );
    for s in &r.slo {
        let met = match s.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "not measured",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {met} |",
            s.name,
            seconds(s.seconds),
            s.target
        );
    }
    let took = |name: &str| {
        r.slo
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.seconds)
    };
    if let (Some(disable), Some(effective)) = (took("flagDisable"), took("flagEffective")) {
        let _ = writeln!(
            out,
            "\nFlags off in the ConfigMap after {}; effective (no instance served their on-variant, as `spec.health.propagation` read it) after {}: {} later.",
            seconds(Some(disable)),
            seconds(Some(effective)),
            seconds(Some(effective - disable))
        );
    }
    match r.slo_met {
        Some(true) => out.push_str("\nRecorded at completion: every SLO met.\n"),
        Some(false) => {
            let _ = writeln!(
                out,
                "\nRecorded at completion: SLO missed ({}).",
                r.slo_missed.join(", ")
            );
        }
        None => {}
    }

    // Notifications sent
    let _ = writeln!(out, "\n## Notifications sent\n");
    if r.notifications.is_empty() {
        out.push_str("None recorded (no receiver in the guard's `spec.notify` for this request's events). Kubernetes Events are always written.\n");
    } else {
        let _ = writeln!(
            out,
            "| receiver | type | event | state | attempts | time | detail |\n|---|---|---|---|---|---|---|"
        );
        for n in &r.notifications {
            let time = n.time.as_ref().map(|t| t.0.to_string());
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {:?} | {} | {} | {} |",
                md(&n.receiver),
                wire_name(&n.type_),
                wire_name(&n.event),
                n.state,
                n.attempts,
                md_time(time.as_deref()),
                if n.message.is_empty() {
                    "-".into()
                } else {
                    md(&n.message)
                }
            );
        }
    }

    if !r.hooks.is_empty() {
        let _ = writeln!(
            out,
            "\n## Hooks\n\n| stage | url | outcome | detail |\n|---|---|---|---|"
        );
        for h in &r.hooks {
            let _ = writeln!(
                out,
                "| {} | {} | {:?} | {} |",
                wire_name(&h.stage),
                md(&h.url),
                h.outcome,
                if h.message.is_empty() {
                    "-".into()
                } else {
                    md(&h.message)
                }
            );
        }
    }

    // Timeline
    let _ = writeln!(
        out,
        "\n## Timeline\n\n| time (UTC) | since creation | step | what happened |\n|---|---|---|---|"
    );
    for e in &r.timeline {
        let time =
            parse_time(&e.time).map_or("-".into(), |t| t.strftime("%H:%M:%S%.3f").to_string());
        let _ = writeln!(
            out,
            "| {time} | {} | {} | {} |",
            e.offset_seconds
                .map_or("-".into(), |s| format!("+{}", seconds(Some(s)))),
            md(&e.step),
            md(&e.message)
        );
    }

    // Snapshot
    let _ = writeln!(out, "\n## Snapshot\n");
    match (&r.snapshot, r.action.as_str()) {
        (Some(s), "rollback") => {
            let _ = writeln!(
                out,
                "The state before this rollback is in Secret `{s}`. To put back what it changed:\n\n```sh\nkubectl rollguard -n {} restore {} --snapshot {s}\n```",
                r.namespace, r.guard
            );
        }
        (Some(s), _) => {
            let _ = writeln!(out, "The state before this restore is in Secret `{s}`.");
        }
        (None, _) => out.push_str("No snapshot was taken.\n"),
    }
    out
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
