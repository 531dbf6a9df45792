//! Step 5, *Verify*: the propagation check (propagation.rs), workloads Available, HTTP checks,
//! and rollback triggers judged on the time since the flags changed, within `health.timeout`.

use super::*;

impl Run {
    pub(super) async fn verify(&mut self) -> Result<Flow, Error> {
        let health = self.guard().spec.health.clone();
        let timeout = health.timeout.to_std().unwrap_or(Duration::from_secs(120));
        let started = self
            .status
            .flags_changed_at
            .as_ref()
            .map(|t| t.0)
            .unwrap_or_else(now);
        // The propagation check first: the moment it passes is recorded before anything else.
        let mut problems: Vec<String> = self.propagation_problem().await?.into_iter().collect();
        problems.extend(self.health_problems().await?);
        let at = now();
        if problems.is_empty() {
            let since_created = seconds_between(self.created(), at);
            self.status
                .durations
                .get_or_insert_with(Durations::default)
                .health_verification = Some(since_created);
            let message = format!(
                "healthy {:.1}s after the flags changed",
                seconds_between(started, at)
            );
            self.set_condition(condition::HEALTH_VERIFIED, TRUE, "Healthy", message.clone());
            self.record("HealthVerified", message.clone());
            self.save().await?;
            self.event(EventType::Normal, "HealthVerified", message);
            crate::fault::point("verified", &self.name()).await;
            return Ok(Flow::Next);
        }
        let summary = problems.join("; ");
        if at.duration_since(started).unsigned_abs() >= timeout {
            let message = format!(
                "not healthy within spec.health.timeout ({}): {summary}",
                health.timeout
            );
            self.set_condition(
                condition::HEALTH_VERIFIED,
                FALSE,
                "Unhealthy",
                message.clone(),
            );
            self.event(EventType::Warning, "HealthCheckFailed", message.clone());
            return self.fail("HealthCheckFailed", message).await;
        }
        let before = conditions::get(&self.status.conditions, condition::HEALTH_VERIFIED)
            .map(|c| c.message.clone());
        if before.as_deref() != Some(summary.as_str()) {
            self.set_condition(condition::HEALTH_VERIFIED, UNKNOWN, "Verifying", summary);
            self.save().await?;
        }
        Ok(Flow::Requeue(Duration::from_millis(500)))
    }

    /// Where the guard's queries go, or why they cannot go anywhere.
    pub(super) async fn prometheus_target(
        &self,
        guard: &RolloutGuard,
    ) -> Result<Result<Target, String>, kube::Error> {
        Target::of(
            guard,
            self.ctx.default_prometheus_url.as_deref(),
            &self.secrets,
            self.ctx.prometheus.egress(),
        )
        .await
    }

    /// What still stands between the guard and healthy (empty: healthy).
    pub(super) async fn health_problems(&self) -> Result<Vec<String>, Error> {
        let guard = self.guard().clone();
        let mut problems = Vec::new();
        for w in &guard.spec.health.workloads {
            let verdict = match w.kind {
                WorkloadKind::Deployment => {
                    match Api::<Deployment>::namespaced(self.ctx.client.clone(), &self.namespace)
                        .get_opt(&w.name)
                        .await?
                    {
                        Some(d) => crate::health::deployment_ready(&d),
                        None => Err(format!("Deployment {:?} does not exist", w.name)),
                    }
                }
                WorkloadKind::StatefulSet => {
                    match Api::<StatefulSet>::namespaced(self.ctx.client.clone(), &self.namespace)
                        .get_opt(&w.name)
                        .await?
                    {
                        Some(s) => crate::health::statefulset_ready(&s),
                        None => Err(format!("StatefulSet {:?} does not exist", w.name)),
                    }
                }
            };
            problems.extend(verdict.err());
        }
        for check in &guard.spec.health.http {
            problems.extend(
                crate::health::check_http(
                    &self.ctx.egress,
                    &check.url,
                    check.expect_status,
                    Duration::from_secs(5),
                )
                .await
                .err(),
            );
        }
        let rollback_triggers: Vec<_> = guard
            .spec
            .triggers
            .iter()
            // Alert triggers are not judged here: their rule's own window reaches back before
            // the change (as a query's range would, see `triggers::window`), and it is not
            // ours to shorten. The guard's `Stable` waits for their alerts to resolve.
            .filter(|t| t.action == TriggerAction::Rollback)
            .filter_map(|t| t.query.as_deref().map(|q| (t, q)))
            .collect();
        if rollback_triggers.is_empty() {
            return Ok(problems);
        }
        let target = match self.prometheus_target(&guard).await? {
            Ok(target) => target,
            Err(problem) => {
                problems.push(problem);
                return Ok(problems);
            }
        };
        let Target {
            address,
            timeout,
            auth,
        } = target;
        // Judged on the time since the flags changed (see `triggers::window`); a range holds
        // two samples when it spans two guard intervals (an interval no shorter than the
        // scrape interval).
        let since = self
            .status
            .flags_changed_at
            .as_ref()
            .map_or(Duration::ZERO, |t| now().duration_since(t.0).unsigned_abs());
        let floor = triggers::window::floor(
            guard
                .spec
                .interval
                .to_std()
                .unwrap_or(Duration::from_secs(15)),
        );
        for (trigger, query) in rollback_triggers {
            let query = match triggers::window::verification_query(query, since, floor) {
                Ok(Verification::Query(query)) => query,
                Ok(Verification::WaitFor(_)) => {
                    problems.push(format!(
                        "trigger {:?} is judged once its ranges hold only samples taken after the flags changed ({}s after the change: two intervals, or its range if shorter)",
                        trigger.name,
                        floor.as_secs()
                    ));
                    continue;
                }
                Err(e) => {
                    problems.push(format!(
                        "spec.triggers[{:?}].query: does not parse: {e}",
                        trigger.name
                    ));
                    continue;
                }
            };
            let current = self
                .ctx
                .prometheus
                .instant(&address, &query, timeout, auth.as_ref())
                .await;
            let baseline = match &trigger.baseline {
                Some(b) => self
                    .ctx
                    .prometheus
                    .instant(&address, &b.query, timeout, auth.as_ref())
                    .await
                    .map(Some),
                None => Ok(None),
            };
            match (current, baseline) {
                (Ok(current), Ok(baseline)) => {
                    let reading =
                        triggers::evaluate(trigger, &current, baseline.as_deref().unwrap_or(&[]));
                    if reading.breaching {
                        let value = reading
                            .value
                            .map_or("no data".to_string(), |v| v.to_string());
                        problems.push(format!(
                            "trigger {:?} still breaching (value {value})",
                            trigger.name
                        ));
                    }
                }
                (Err(e), _) | (_, Err(e)) => problems.push(format!(
                    "trigger {:?} could not be evaluated: {e}",
                    trigger.name
                )),
            }
        }
        Ok(problems)
    }
}
