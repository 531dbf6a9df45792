//! The guard's decisions, pure: how each trigger's status moves with a new evaluation (the
//! `for` window measured from the persisted `breachingSince`), and what the guard as a whole
//! is — phase, conditions, which Events to emit, and whether to roll back automatically.

use crate::api::guard::{
    GuardPhase, RollbackMode, RolloutGuardSpec, RolloutGuardStatus, Trigger, TriggerAction,
    TriggerStatus,
};
use crate::conditions::{self, FALSE, TRUE, UNKNOWN};
use crate::triggers::{Comparison, Reading};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Condition types of a RolloutGuard (SPEC §1).
pub mod condition {
    pub const READY: &str = "Ready";
    pub const HEALTHY: &str = "Healthy";
    pub const TRIGGERS_BREACHING: &str = "TriggersBreaching";
    pub const ROLLED_BACK: &str = "RolledBack";
    pub const FLAGS_DRIFTED: &str = "FlagsDrifted";
    pub const PROMETHEUS_REACHABLE: &str = "PrometheusReachable";
    pub const STABLE: &str = "Stable";
    /// Beyond SPEC §1: False while evaluations start later than their interval allows
    /// (the operator's evaluation slots were taken); absent until the first late one.
    pub const ON_SCHEDULE: &str = "OnSchedule";
    /// Beyond SPEC §1: False when `health.timeout` ends before verification can judge the
    /// rollback triggers (two intervals after the flags change, or a shorter range) or the
    /// propagation check (three intervals); absent until the first time it does not fit.
    pub const VERIFICATION_IN_TIME: &str = "VerificationInTime";
}

/// One trigger's evaluation: a reading, or why there is none (an error is never a breach).
pub type Outcome = Result<Reading, String>;

/// The trigger's status after this evaluation. A failed query keeps the last good values
/// and the breach window as they were; only a good reading moves them.
pub fn advance(
    trigger: &Trigger,
    previous: Option<&TriggerStatus>,
    outcome: &Outcome,
    now: Timestamp,
) -> TriggerStatus {
    let threshold = Comparison::of(trigger).map(Comparison::threshold);
    match outcome {
        Ok(reading) => TriggerStatus {
            name: trigger.name.clone(),
            value: reading.value,
            threshold,
            baseline: reading.baseline,
            labels: reading.labels.clone(),
            breaching: reading.breaching,
            breaching_since: reading.breaching.then(|| {
                previous
                    .filter(|p| p.breaching)
                    .and_then(|p| p.breaching_since.clone())
                    .unwrap_or(Time(now))
            }),
            last_error: None,
        },
        Err(error) => TriggerStatus {
            name: trigger.name.clone(),
            threshold,
            last_error: Some(error.clone()),
            ..previous.cloned().unwrap_or_default()
        },
    }
}

/// Whether a trigger's breach has held for its whole `for` window at `now`.
pub fn firing(trigger: &Trigger, status: &TriggerStatus, now: Timestamp) -> bool {
    let window = trigger.for_.to_std().unwrap_or_default();
    status.last_error.is_none()
        && status.breaching
        && status
            .breaching_since
            .as_ref()
            .is_some_and(|since| now.duration_since(since.0).unsigned_abs() >= window)
}

/// What the reconciler observed about the guard besides the trigger outcomes.
pub struct Context<'a> {
    pub spec: &'a RolloutGuardSpec,
    pub generation: Option<i64>,
    pub previous: &'a RolloutGuardStatus,
    /// A problem only the operator can judge (PromQL, the ConfigMap): phase Invalid.
    pub invalid: Option<String>,
    /// A RollbackRequest of this guard that has not finished (the guard's slot or the queue).
    pub request_in_flight: Option<String>,
    /// The request holding the slot (`activeRollback`) is a dry run: it rolls nothing back,
    /// so the guard does not say `RollingBack`.
    pub active_dry_run: bool,
    /// While rolled back: guarded flags turned back on since, and who did it. None: not
    /// judged in this evaluation (the `FlagsDrifted` condition is left as it was).
    pub drift: Option<Drift>,
    /// How much later than its interval allows this evaluation started (see
    /// [`super::fairness::lateness`]); None when on time.
    pub late: Option<std::time::Duration>,
    pub now: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drift {
    pub flags: Vec<String>,
    /// The field manager that last wrote them (managedFields), when known.
    pub manager: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Notice {
    /// Warning Event `EvaluationLate`, once per transition to late.
    EvaluationLate {
        message: String,
    },
    /// Warning Event, once per transition.
    TriggerBreaching {
        trigger: String,
        message: String,
    },
    TriggerFiring {
        trigger: String,
        message: String,
    },
    PrometheusUnreachable {
        message: String,
    },
    /// Warning Event `HealthTimeoutTooShort`, once per transition.
    HealthTimeoutTooShort {
        message: String,
    },
    InvalidSpec {
        message: String,
    },
    FlagsDrifted {
        message: String,
    },
}

/// An automatic RollbackRequest to create.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoRollback {
    pub trigger: String,
    pub value: Option<f64>,
    /// Alert triggers: the alert that fired it.
    pub alert: Option<crate::api::request::TriggeringAlert>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Assessment {
    pub status: RolloutGuardStatus,
    pub notices: Vec<Notice>,
    pub rollback: Option<AutoRollback>,
}

/// Whether the guarded flags are off by a rollback: its last rollback succeeded, or turned
/// the flags off and then failed its health verification; and no restore since.
pub fn rolled_back(status: &RolloutGuardStatus) -> bool {
    let Some(rollback) = status
        .last_rollback
        .as_ref()
        .filter(|r| r.outcome.as_deref() == Some("Succeeded") || r.flags_disabled == Some(true))
    else {
        return false;
    };
    match &status.last_restore {
        Some(restore) => restore.time < rollback.time,
        None => true,
    }
}

/// The first check verification cannot judge within `health.timeout`: what it is, why, and
/// how long after the flags change it could, in words (see [`crate::triggers::window`] and
/// [`crate::propagation`]).
fn verification_gap(spec: &RolloutGuardSpec) -> Option<String> {
    let timeout = spec.health.timeout.to_std().ok()?;
    let interval = spec.interval.to_std().ok()?;
    let floor = crate::triggers::window::floor(interval);
    let trigger = spec
        .triggers
        .iter()
        .filter(|t| t.action == crate::api::guard::TriggerAction::Rollback)
        .find_map(|t| {
            let after = crate::triggers::window::judged_after(t.query.as_deref()?, floor)?;
            (after >= timeout).then(|| {
                format!("trigger {:?}: its ranges hold only samples taken after the flags changed {}s after the change (two intervals, or the range if shorter)", t.name, after.as_secs())
            })
        });
    // An application that served the on-variant reads "none" once the window (two
    // intervals) is past, believed one interval later.
    let propagation = spec.health.propagation.as_ref().and_then(|_| {
        let after = floor + interval;
        (after >= timeout).then(|| {
            format!("spec.health.propagation: an application that served the on-variant reads \"none\" once the query's window (two intervals) is past, and that counts one interval later, {}s after the change", after.as_secs())
        })
    });
    trigger.or(propagation)
}

fn cooling_down(spec: &RolloutGuardSpec, status: &RolloutGuardStatus, now: Timestamp) -> bool {
    let cooldown = spec.rollback.cooldown.to_std().unwrap_or_default();
    status
        .last_rollback
        .as_ref()
        .and_then(|r| r.time.as_ref())
        .is_some_and(|t| now.duration_since(t.0).unsigned_abs() < cooldown)
}

/// Assesses the guard after evaluating its triggers (`outcomes` in spec order; empty when
/// the guard is invalid or suspended and nothing was evaluated). Every condition it returns
/// was judged for `ctx.generation`; `Reconciling` and `Stalled` follow from the phase
/// ([`crate::kstatus`]).
pub fn assess(ctx: &Context<'_>, outcomes: &[Outcome]) -> Assessment {
    let mut assessment = decide(ctx, outcomes);
    let status = &mut assessment.status;
    let now = Time(ctx.now);
    // Invalid or suspended: nothing was evaluated, so what the last evaluation said about
    // the triggers is not known for this spec.
    let not_evaluated = match (&ctx.invalid, ctx.spec.suspend) {
        (Some(_), _) => Some(("InvalidSpec", "the spec is invalid")),
        (None, true) => Some(("Suspended", "spec.suspend is true")),
        (None, false) => None,
    };
    if let Some((reason, why)) = not_evaluated {
        for type_ in [
            condition::HEALTHY,
            condition::TRIGGERS_BREACHING,
            condition::PROMETHEUS_REACHABLE,
            condition::STABLE,
            condition::FLAGS_DRIFTED,
        ] {
            if conditions::get(&status.conditions, type_).is_some() {
                conditions::set(
                    &mut status.conditions,
                    type_,
                    UNKNOWN,
                    reason,
                    format!("not evaluated: {why}"),
                    ctx.generation,
                    now.clone(),
                );
            }
        }
    }
    // Anything else still of an older generation was not judged for this one.
    let stale: Vec<String> = status
        .conditions
        .iter()
        .filter(|c| c.observed_generation != ctx.generation)
        .map(|c| c.type_.clone())
        .collect();
    for type_ in stale {
        if type_ == condition::ROLLED_BACK {
            // Follows from lastRollback and lastRestore alone: still known.
            let c = conditions::get(&status.conditions, &type_).cloned();
            if let Some(c) = c.filter(|c| (c.status == TRUE) == rolled_back(status)) {
                conditions::set(
                    &mut status.conditions,
                    &type_,
                    &c.status,
                    &c.reason,
                    c.message,
                    ctx.generation,
                    now.clone(),
                );
                continue;
            }
        }
        conditions::set(
            &mut status.conditions,
            &type_,
            UNKNOWN,
            "NotJudged",
            "not judged since the spec changed",
            ctx.generation,
            now.clone(),
        );
    }
    crate::kstatus::guard(status, now);
    assessment
}

fn decide(ctx: &Context<'_>, outcomes: &[Outcome]) -> Assessment {
    let mut judge = judge::Judge::new(ctx);
    judge.schedule();
    judge.verification_fit();
    if let Some(problem) = &ctx.invalid {
        judge.invalid(problem);
        return judge.done(None);
    }
    let rolling_back = judge.status.active_rollback.is_some() && !ctx.active_dry_run;
    if ctx.spec.suspend {
        judge.suspended(rolling_back);
        return judge.done(None);
    }
    let judge::Triggers {
        reachable,
        breaching,
        fired,
    } = judge.triggers(outcomes);
    let is_rolled_back = judge.rollback_state(reachable, &breaching);
    judge.phase_and_ready(rolling_back, is_rolled_back, reachable, &breaching);
    let spec = ctx.spec;
    let rollback = fired.filter(|_| {
        spec.rollback.mode == RollbackMode::Automatic
            && judge.status.active_rollback.is_none()
            && ctx.request_in_flight.is_none()
            && !is_rolled_back
            && !cooling_down(spec, &judge.status, ctx.now)
    });
    judge.done(rollback.map(|(trigger, value, alert)| AutoRollback {
        trigger,
        value,
        alert,
    }))
}

fn describe(trigger: &Trigger, status: &TriggerStatus, what: &str) -> String {
    if let Some(alert) = &trigger.alert {
        return format!(
            "trigger {:?} {what}: {} matching alert(s) firing{} (alert {:?}, for {})",
            trigger.name,
            status.value.unwrap_or_default(),
            if status.labels.is_empty() {
                String::new()
            } else {
                format!(", the oldest {:?}", status.labels)
            },
            alert.matchers,
            trigger.for_
        );
    }
    let value = status.value.map_or("no data".into(), |v| format!("{v}"));
    let threshold = match Comparison::of(trigger) {
        Some(Comparison::Above(t)) => format!("above {t}"),
        Some(Comparison::Below(t)) => format!("below {t}"),
        Some(Comparison::IncreaseAbove(t)) => format!(
            "increase above {t} over baseline {}",
            status.baseline.map_or("-".into(), |b| b.to_string())
        ),
        Some(Comparison::DecreaseBelow(t)) => format!(
            "decrease beyond {t} under baseline {}",
            status.baseline.map_or("-".into(), |b| b.to_string())
        ),
        None => String::new(),
    };
    let labels = if status.labels.is_empty() {
        String::new()
    } else {
        format!(" {:?}", status.labels)
    };
    format!(
        "trigger {:?} {what}: value {value}{labels} ({threshold}, for {})",
        trigger.name, trigger.for_
    )
}

mod judge;

#[cfg(test)]
#[path = "assess_tests.rs"]
mod tests;
