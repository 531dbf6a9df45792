//! How a request ends: Failed with the reason, or Succeeded with durations and the SLO
//! outcome; outcomes counted in the operator's metrics.

use super::*;

impl Run {
    pub(super) async fn fail(&mut self, reason: &str, message: String) -> Result<Flow, Error> {
        self.announce_ending(if reason == "HealthCheckFailed" {
            Ending::Unhealthy
        } else {
            Ending::Failed
        });
        self.status.phase = Some(RequestPhase::Failed);
        self.status.message = Some(message.clone());
        self.status.completed_at = Some(MicroTime(now()));
        self.set_condition(condition::FAILED, TRUE, reason, message.clone());
        self.set_condition(condition::COMPLETE, FALSE, reason, message.clone());
        self.record("Failed", message.clone());
        self.event(EventType::Warning, "RollbackFailed", message.clone());
        self.guard_event(
            EventType::Warning,
            "RollbackFailed",
            format!("{}: {message}", self.name()),
        );
        // Every Event exists before the status says the request is over.
        self.flush_events().await;
        self.save().await?;
        self.count_outcome("Failed");
        Ok(Flow::Next)
    }

    /// Counts the finished request and its step durations.
    pub(super) fn count_outcome(&self, outcome: &str) {
        if self.request.spec.dry_run {
            return;
        }
        let m = &self.ctx.metrics;
        let cause = if self.request.spec.requested_by == crate::api::SYSTEM_REQUESTER {
            "automatic"
        } else {
            "manual"
        };
        let cause = if self.request.spec.action == RequestAction::Restore {
            "restore"
        } else {
            cause
        };
        m.rollbacks
            .get_or_create(&crate::metrics::RollbackLabels {
                namespace: self.namespace.clone(),
                guard: self.request.spec.guard_ref.name.clone(),
                outcome: outcome.into(),
                cause: cause.into(),
            })
            .inc();
        if let Some(d) = &self.status.durations {
            // `notification` is counted when the delivery is recorded (it may come later).
            for (step, took) in [
                ("flagDisable", d.flag_disable),
                ("flagEffective", d.flag_effective),
                ("healthVerification", d.health_verification),
                ("total", d.total),
            ] {
                if let Some(took) = took {
                    m.step(step, took);
                }
            }
        }
    }

    /// The SLO outcome from the durations so far (see [`crate::slo::outcome`]).
    pub(super) fn judge_slo(&mut self) {
        self.status.slo = Some(crate::slo::outcome(
            &self.guard().spec.slo,
            &self.status.durations.clone().unwrap_or_default(),
            &self.status.notifications,
            now().duration_since(self.created()).unsigned_abs(),
        ));
    }

    pub(super) async fn succeed(&mut self) -> Result<Flow, Error> {
        let at = now();
        let since_created = seconds_between(self.created(), at);
        let durations = self.status.durations.get_or_insert_with(Durations::default);
        durations.total = Some(since_created);
        self.judge_slo();
        self.status.phase = Some(RequestPhase::Succeeded);
        self.status.completed_at = Some(MicroTime(at));
        self.announce_ending(Ending::Succeeded);
        let changed = self.status.flags_changed.as_ref().map_or(0, Vec::len);
        let restore = self.request.spec.action == RequestAction::Restore;
        let message = if restore {
            format!(
                "restored {changed} flag(s) from snapshot {:?}; {} conflict(s)",
                self.status
                    .restored_from
                    .as_ref()
                    .map(|r| r.name.as_str())
                    .unwrap_or_default(),
                self.status.conflicts.len()
            )
        } else {
            format!(
                "rolled back {changed} flag(s) in {:.3}s (flags off after {:.3}s)",
                self.status
                    .durations
                    .as_ref()
                    .and_then(|d| d.total)
                    .unwrap_or_default(),
                self.status
                    .durations
                    .as_ref()
                    .and_then(|d| d.flag_disable)
                    .unwrap_or_default()
            )
        };
        self.status.message = Some(message.clone());
        self.set_condition(condition::COMPLETE, TRUE, "Succeeded", message.clone());
        self.record("Succeeded", message.clone());
        let reason = if restore {
            "RestoreSucceeded"
        } else {
            "RollbackSucceeded"
        };
        self.event(EventType::Normal, reason, message.clone());
        self.guard_event(
            EventType::Normal,
            reason,
            format!("{}: {message}", self.name()),
        );
        self.flush_events().await;
        self.save().await?;
        self.count_outcome("Succeeded");
        // Off the flag path: old snapshots go once this one has done its job.
        self.prune_snapshots().await;
        Ok(Flow::Next)
    }
}
