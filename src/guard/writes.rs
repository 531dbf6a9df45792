//! When a guard's evaluation writes its status (pure): at once on a transition, otherwise at
//! most once per [`REFRESH`] to bring the values up to date. An evaluation whose judgement
//! did not change writes nothing, so a thousand quiet guards cost etcd no write per interval;
//! the operator's `/metrics` carry the live values.
//!
//! The time of the last write is the written `lastEvaluationTime`: every write carries it, and
//! nothing else writes it, so the decision needs no memory of its own and survives a restart.

use super::assess::firing;
use crate::api::guard::{RolloutGuardSpec, RolloutGuardStatus, TriggerStatus};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use std::time::Duration;

/// Values (trigger values, baselines, condition messages, `lastEvaluationTime`) are written
/// at most this often when nothing else changed.
pub const REFRESH: Duration = Duration::from_secs(60);

/// Why an evaluation writes the guard's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// Something a reader or a restart relies on changed: write now.
    Transition,
    /// Only values changed, and the last write is [`REFRESH`] old.
    Refresh,
}

impl Write {
    pub fn as_str(self) -> &'static str {
        match self {
            Write::Transition => "transition",
            Write::Refresh => "refresh",
        }
    }
}

/// Whether the evaluation at `now` that turned `written` (the status as last written) into
/// `next` writes it, and why. `announces`: it has Events to emit or a rollback to ask for,
/// which are published only once the status that records them is written. `phase`: where
/// this guard's refresh minute starts ([`refresh_phase`]).
pub fn due(
    spec: &RolloutGuardSpec,
    written: &RolloutGuardStatus,
    next: &RolloutGuardStatus,
    now: Timestamp,
    announces: bool,
    phase: Duration,
) -> Option<Write> {
    let Some(last_write) = written.last_evaluation_time.as_ref() else {
        return Some(Write::Transition);
    };
    if announces || transition(spec, written, next, now) {
        return Some(Write::Transition);
    }
    (refresh_window(now, phase) > refresh_window(last_write.0, phase)).then_some(Write::Refresh)
}

/// Values are refreshed once per [`REFRESH`] window of the guard's own: windows start
/// `phase` past each wall-clock minute. Guards created together (a GitOps sync of a
/// thousand) would otherwise all refresh at the same interval boundary, once a minute, in
/// one burst of writes.
fn refresh_window(at: Timestamp, phase: Duration) -> i64 {
    let refresh = i64::try_from(REFRESH.as_millis()).unwrap_or(i64::MAX);
    let phase = i64::try_from(phase.as_millis()).unwrap_or_default();
    (at.as_millisecond() - phase).div_euclid(refresh)
}

/// Where a guard's refresh windows start within the minute: a stable hash of its namespace
/// and name (FNV-1a), so it survives restarts and spreads a fleet evenly. Whole seconds, as
/// the written `lastEvaluationTime` is: an evaluation a moment past its window's start must
/// not read back, truncated, as one written in the window before.
pub fn refresh_phase(namespace: &str, name: &str) -> Duration {
    Duration::from_secs(stable_hash(namespace, name) % REFRESH.as_secs())
}

/// A hash of a guard's namespace and name that is the same in every process and release
/// (FNV-1a), unlike std's randomly keyed one.
pub fn stable_hash(namespace: &str, name: &str) -> u64 {
    [namespace.as_bytes(), b"/", name.as_bytes()]
        .concat()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, byte| {
            (h ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

/// Whether anything but values changed: the generation judged, the phase, a condition's
/// status or reason, a trigger's breach, firing or error, the rollback slot fields, the quiet
/// window, the notices on their way.
fn transition(
    spec: &RolloutGuardSpec,
    written: &RolloutGuardStatus,
    next: &RolloutGuardStatus,
    now: Timestamp,
) -> bool {
    written.observed_generation != next.observed_generation
        || written.phase != next.phase
        || !same_conditions(&written.conditions, &next.conditions)
        || written.triggers.len() != next.triggers.len()
        || written
            .triggers
            .iter()
            .zip(&next.triggers)
            .any(|(w, n)| !same_judgement(w, n))
        || firing_changed(spec, written, next, now)
        || written.active_rollback != next.active_rollback
        || written.last_rollback != next.last_rollback
        || written.last_restore != next.last_restore
        || written.quiet_since != next.quiet_since
        || written.pending_notices != next.pending_notices
        || written.stable_notified != next.stable_notified
}

/// A condition's message alone (e.g. how long a late evaluation waited) is a value.
fn same_conditions(written: &[Condition], next: &[Condition]) -> bool {
    let key = |c: &Condition| {
        (
            c.type_.clone(),
            c.status.clone(),
            c.reason.clone(),
            c.observed_generation,
            c.last_transition_time.clone(),
        )
    };
    let mut a: Vec<_> = written.iter().map(key).collect();
    let mut b: Vec<_> = next.iter().map(key).collect();
    a.sort_by(|x, y| x.0.cmp(&y.0));
    b.sort_by(|x, y| x.0.cmp(&y.0));
    a == b
}

/// A trigger's judgement: all but its value, baseline and the labels of its worst series.
/// Data appearing or going (`no data`) is a change of judgement too.
fn same_judgement(written: &TriggerStatus, next: &TriggerStatus) -> bool {
    written.name == next.name
        && written.threshold == next.threshold
        && written.breaching == next.breaching
        && written.breaching_since == next.breaching_since
        && written.last_error == next.last_error
        && written.value.is_some() == next.value.is_some()
}

/// A trigger started or stopped firing: the written status, read at its own evaluation time,
/// must say what the last judgement said, or the next evaluation would announce it again.
fn firing_changed(
    spec: &RolloutGuardSpec,
    written: &RolloutGuardStatus,
    next: &RolloutGuardStatus,
    now: Timestamp,
) -> bool {
    let Some(then) = written.last_evaluation_time.as_ref() else {
        return true;
    };
    spec.triggers.iter().any(|trigger| {
        let was = written
            .triggers
            .iter()
            .find(|t| t.name == trigger.name)
            .is_some_and(|t| firing(trigger, t, then.0));
        let is = next
            .triggers
            .iter()
            .find(|t| t.name == trigger.name)
            .is_some_and(|t| firing(trigger, t, now));
        was != is
    })
}

#[cfg(test)]
#[path = "writes_tests.rs"]
mod tests;
