//! The guard's verdict, concern by concern (pure): [`super::assess`] asks a [`Judge`] in
//! turn about the schedule, verification, validity, the triggers, the rollback state and the
//! phase; each part sets its conditions and queues its notices.

use super::*;

pub(super) struct Judge<'a, 'c> {
    ctx: &'a Context<'c>,
    pub(super) status: RolloutGuardStatus,
    notices: Vec<Notice>,
}

/// What the triggers came to.
pub(super) type Fired = (
    String,
    Option<f64>,
    Option<crate::api::request::TriggeringAlert>,
);

pub(super) struct Triggers {
    pub reachable: bool,
    pub breaching: Vec<String>,
    /// The first rollback trigger firing: (name, value, the alert of an alert trigger).
    pub fired: Option<Fired>,
}

impl<'a, 'c> Judge<'a, 'c> {
    pub(super) fn new(ctx: &'a Context<'c>) -> Self {
        let prev = ctx.previous;
        Self {
            ctx,
            status: RolloutGuardStatus {
                observed_generation: ctx.generation,
                last_evaluation_time: Some(Time(ctx.now)),
                conditions: prev.conditions.clone(),
                active_rollback: prev.active_rollback.clone(),
                last_rollback: prev.last_rollback.clone(),
                last_restore: prev.last_restore.clone(),
                ..Default::default()
            },
            notices: Vec::new(),
        }
    }

    pub(super) fn done(self, rollback: Option<AutoRollback>) -> Assessment {
        Assessment {
            status: self.status,
            notices: self.notices,
            rollback,
        }
    }

    fn set(&mut self, type_: &str, value: &str, reason: &str, message: String) {
        conditions::set(
            &mut self.status.conditions,
            type_,
            value,
            reason,
            message,
            self.ctx.generation,
            Time(self.ctx.now),
        );
    }

    fn was(&self, type_: &str) -> Option<&'a str> {
        conditions::status_of(&self.ctx.previous.conditions, type_)
    }

    /// `OnSchedule`: whether this evaluation started within its interval.
    pub(super) fn schedule(&mut self) {
        let (ctx, spec) = (self.ctx, self.ctx.spec);
        match ctx.late {
            Some(late) => {
                let message = format!(
                    "this evaluation waited {}s, longer than its interval ({}), for one of the operator's evaluation slots (--guard-concurrency, --guard-concurrency-per-source)",
                    late.as_secs(),
                    spec.interval
                );
                if self.was(condition::ON_SCHEDULE) != Some(FALSE) {
                    self.notices.push(Notice::EvaluationLate {
                        message: message.clone(),
                    });
                }
                self.set(condition::ON_SCHEDULE, FALSE, "EvaluationLate", message);
            }
            None if self.was(condition::ON_SCHEDULE).is_some() => self.set(
                condition::ON_SCHEDULE,
                TRUE,
                "OnTime",
                "evaluations start within their interval".into(),
            ),
            None => {}
        }
    }

    /// `VerificationInTime`: whether verification can judge the rollback triggers and the
    /// propagation check within `health.timeout`.
    pub(super) fn verification_fit(&mut self) {
        let spec = self.ctx.spec;
        match verification_gap(spec) {
            Some(check) => {
                let message = format!(
                    "spec.health.timeout ({}) ends before verification can judge {check}; every rollback would fail verification — raise spec.health.timeout or shorten spec.interval",
                    spec.health.timeout
                );
                if self.was(condition::VERIFICATION_IN_TIME) != Some(FALSE) {
                    self.notices.push(Notice::HealthTimeoutTooShort {
                        message: message.clone(),
                    });
                }
                self.set(
                    condition::VERIFICATION_IN_TIME,
                    FALSE,
                    "HealthTimeoutTooShort",
                    message,
                );
            }
            None if self.was(condition::VERIFICATION_IN_TIME).is_some() => self.set(
                condition::VERIFICATION_IN_TIME,
                TRUE,
                "Fits",
                "verification can judge every rollback trigger (and the propagation check) within spec.health.timeout".into(),
            ),
            None => {}
        }
    }

    /// Phase `Invalid`: what only the operator can judge is wrong.
    pub(super) fn invalid(&mut self, problem: &String) {
        let prev = self.ctx.previous;
        self.status.phase = Some(GuardPhase::Invalid);
        self.status.triggers = prev.triggers.clone();
        if prev.phase != Some(GuardPhase::Invalid)
            || conditions::get(&prev.conditions, condition::READY).map(|c| &c.message)
                != Some(problem)
        {
            self.notices.push(Notice::InvalidSpec {
                message: problem.clone(),
            });
        }
        self.set(condition::READY, FALSE, "InvalidSpec", problem.clone());
    }

    /// `spec.suspend`: not evaluated.
    pub(super) fn suspended(&mut self, rolling_back: bool) {
        let prev = self.ctx.previous;
        self.status.phase = Some(if rolling_back {
            GuardPhase::RollingBack
        } else {
            GuardPhase::Suspended
        });
        self.status.triggers = prev.triggers.clone();
        self.set(
            condition::READY,
            TRUE,
            "Suspended",
            "spec.suspend is true: triggers are not evaluated".into(),
        );
    }

    /// Each trigger's new state, its transitions, and the conditions they make.
    pub(super) fn triggers(&mut self, outcomes: &[Outcome]) -> Triggers {
        let (spec, prev, now) = (self.ctx.spec, self.ctx.previous, self.ctx.now);
        let mut errors = Vec::new();
        let mut fired: Option<Fired> = None;
        let mut statuses = Vec::new();
        for (trigger, outcome) in spec.triggers.iter().zip(outcomes) {
            let before = prev.triggers.iter().find(|t| t.name == trigger.name);
            let after = advance(trigger, before, outcome, now);
            if let Err(e) = outcome {
                errors.push(format!("trigger {:?}: {e}", trigger.name));
            }
            if after.breaching && outcome.is_ok() && !before.is_some_and(|b| b.breaching) {
                self.notices.push(Notice::TriggerBreaching {
                    trigger: trigger.name.clone(),
                    message: describe(trigger, &after, "breaching"),
                });
            }
            let was_firing = before.is_some_and(|b| {
                prev.last_evaluation_time
                    .as_ref()
                    .is_some_and(|t| firing(trigger, b, t.0))
            });
            let firing_now = firing(trigger, &after, now);
            if firing_now && !was_firing {
                self.notices.push(Notice::TriggerFiring {
                    trigger: trigger.name.clone(),
                    message: describe(trigger, &after, "firing"),
                });
            }
            // The state, not the moment: a trigger still firing when a cooldown ends, a request
            // in flight finishes or a restore re-enables the flags rolls them back then.
            if firing_now && trigger.action == TriggerAction::Rollback && fired.is_none() {
                let alert = outcome.as_ref().ok().and_then(|r| r.alert.clone());
                fired = Some((trigger.name.clone(), after.value, alert));
            }
            statuses.push(after);
        }
        self.status.triggers = statuses;

        let breaching: Vec<String> = self
            .status
            .triggers
            .iter()
            .filter(|t| t.breaching)
            .map(|t| t.name.clone())
            .collect();
        let reachable = errors.is_empty();
        if reachable {
            self.set(
                condition::PROMETHEUS_REACHABLE,
                TRUE,
                "QueriesSucceeded",
                "every trigger query answered".into(),
            );
        } else {
            let message = errors.join("; ");
            if self.was(condition::PROMETHEUS_REACHABLE) != Some(FALSE) {
                self.notices.push(Notice::PrometheusUnreachable {
                    message: message.clone(),
                });
            }
            self.set(
                condition::PROMETHEUS_REACHABLE,
                FALSE,
                "QueryFailed",
                format!("{message}; last good values kept, no rollback on errors"),
            );
        }
        if breaching.is_empty() {
            self.set(
                condition::TRIGGERS_BREACHING,
                FALSE,
                "NoBreach",
                "no trigger is breaching".into(),
            );
            self.status.quiet_since = prev
                .quiet_since
                .clone()
                .filter(|_| prev.triggers.iter().all(|t| !t.breaching))
                .or(Some(Time(now)));
        } else {
            self.set(
                condition::TRIGGERS_BREACHING,
                TRUE,
                "Breaching",
                format!("breaching: {}", breaching.join(", ")),
            );
            self.status.quiet_since = None;
        }
        match (reachable, breaching.is_empty()) {
            (_, false) => self.set(
                condition::HEALTHY,
                FALSE,
                "TriggersBreaching",
                format!("breaching: {}", breaching.join(", ")),
            ),
            (true, true) => self.set(
                condition::HEALTHY,
                TRUE,
                "NoBreach",
                "every trigger is within its threshold".into(),
            ),
            (false, true) => self.set(
                condition::HEALTHY,
                UNKNOWN,
                "PrometheusUnreachable",
                "some triggers could not be evaluated".into(),
            ),
        }

        Triggers {
            reachable,
            breaching,
            fired,
        }
    }

    /// `RolledBack`, `Stable`, `FlagsDrifted`; whether the flags are off by a rollback.
    pub(super) fn rollback_state(&mut self, reachable: bool, breaching: &[String]) -> bool {
        let (ctx, spec, now) = (self.ctx, self.ctx.spec, self.ctx.now);
        let is_rolled_back = rolled_back(&self.status);
        if is_rolled_back {
            let rollback = self
                .status
                .last_rollback
                .clone()
                .expect("rolled back has a last rollback");
            if rollback.outcome.as_deref() == Some("Succeeded") {
                self.set(
                    condition::ROLLED_BACK,
                    TRUE,
                    "RollbackSucceeded",
                    format!("rolled back by {}", rollback.name),
                );
            } else {
                self.set(
                    condition::ROLLED_BACK,
                    TRUE,
                    "VerificationFailed",
                    format!(
                        "the guarded flags were turned off by {}, but its health verification failed: the cause may be elsewhere",
                        rollback.name
                    ),
                );
            }
            let window = spec.health.stability_window.to_std().unwrap_or_default();
            let quiet_from = [self.status.quiet_since.as_ref(), rollback.time.as_ref()]
                .into_iter()
                .flatten()
                .map(|t| t.0)
                .max();
            let stable = reachable
                && breaching.is_empty()
                && quiet_from.is_some_and(|t| now.duration_since(t).unsigned_abs() >= window);
            if stable {
                self.set(
                    condition::STABLE,
                    TRUE,
                    "Quiet",
                    format!(
                        "no trigger has breached for spec.health.stabilityWindow ({})",
                        spec.health.stability_window
                    ),
                );
            } else {
                self.set(
                    condition::STABLE,
                    FALSE,
                    "Settling",
                    format!(
                        "waiting for triggers to stay quiet for {}",
                        spec.health.stability_window
                    ),
                );
            }
            match ctx.drift.as_ref() {
                Some(drift) if !drift.flags.is_empty() => {
                    let who = drift
                        .manager
                        .as_deref()
                        .unwrap_or("an unknown field manager");
                    let message = format!(
                        "flag(s) {} turned back on by {who} since rollback {}; rollguard did not do it (use a restore)",
                        drift.flags.join(", "),
                        rollback.name
                    );
                    if self.was(condition::FLAGS_DRIFTED) != Some(TRUE) {
                        self.notices.push(Notice::FlagsDrifted {
                            message: message.clone(),
                        });
                    }
                    self.set(condition::FLAGS_DRIFTED, TRUE, "FlagsDrifted", message);
                }
                Some(_) => self.set(
                    condition::FLAGS_DRIFTED,
                    FALSE,
                    "NoDrift",
                    "the guarded flags are as the rollback left them".into(),
                ),
                // Not judged this time (a request of the guard in flight, the flags being
                // written by a restore, or unreadable): what was said stands.
                None => {}
            }
        } else {
            self.set(
                condition::ROLLED_BACK,
                FALSE,
                "NotRolledBack",
                "the guarded flags are as the rollout left them".into(),
            );
            self.status
                .conditions
                .retain(|c| c.type_ != condition::STABLE && c.type_ != condition::FLAGS_DRIFTED);
        }

        is_rolled_back
    }

    /// The phase and `Ready`, from everything judged before.
    pub(super) fn phase_and_ready(
        &mut self,
        rolling_back: bool,
        is_rolled_back: bool,
        reachable: bool,
        breaching: &[String],
    ) {
        let spec = self.ctx.spec;
        self.status.phase = Some(if rolling_back {
            GuardPhase::RollingBack
        } else if is_rolled_back {
            GuardPhase::RolledBack
        } else if !reachable {
            GuardPhase::Degraded
        } else if !breaching.is_empty() {
            GuardPhase::Breaching
        } else {
            GuardPhase::Monitoring
        });
        let (ready, reason, message) = if reachable {
            (
                TRUE,
                "Evaluating",
                format!(
                    "{} trigger(s) evaluated every {}",
                    spec.triggers.len(),
                    spec.interval
                ),
            )
        } else {
            (
                FALSE,
                "PrometheusUnreachable",
                "trigger queries are failing; see PrometheusReachable".to_string(),
            )
        };
        self.set(condition::READY, ready, reason, message);
    }
}
