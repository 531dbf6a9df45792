//! Part of step 5, *Verify*: the propagation check (`spec.health.propagation`, SPEC §6).
//! Verification waits until the guard's query says no instance serves the on-variant of the
//! flags this request changed; that moment is `durations.flagEffective` and the timeline's
//! `FlagsEffective`, written before verification goes on, and never measured again. A "none"
//! counts once it still holds an interval later (`propagation::settle`); until then its
//! start is kept in memory only, so a restarted operator measures again.

use super::*;
use crate::propagation::{self, Reading, Verdict};

impl Run {
    /// None: the flags are effective (recorded now or before), or there is nothing to check.
    /// Some: why verification must wait; a query that fails never passes (fail closed).
    pub(super) async fn propagation_problem(&mut self) -> Result<Option<String>, Error> {
        let guard = self.guard().clone();
        let Some(check) = &guard.spec.health.propagation else {
            return Ok(None);
        };
        let recorded = self
            .status
            .durations
            .as_ref()
            .is_some_and(|d| d.flag_effective.is_some());
        let flags: Vec<String> = self
            .status
            .flags_changed
            .iter()
            .flatten()
            .map(|c| c.name.clone())
            .collect();
        // A request that changed nothing has nothing of its own to wait for.
        if recorded || flags.is_empty() {
            return Ok(None);
        }
        let target = match self.prometheus_target(&guard).await? {
            Ok(target) => target,
            Err(problem) => return Ok(Some(format!("spec.health.propagation: {problem}"))),
        };
        let interval = guard
            .spec
            .interval
            .to_std()
            .unwrap_or(Duration::from_secs(15));
        let window = triggers::window::floor(interval);
        let query = match propagation::at(&check.query, &flags, window) {
            Ok(query) => query,
            Err(e) => return Ok(Some(format!("spec.health.propagation.query: {e}"))),
        };
        let answer = self
            .ctx
            .prometheus
            .instant(
                &target.address,
                &query,
                target.timeout,
                target.auth.as_ref(),
            )
            .await;
        // When the answer came: the query read no later than this.
        let at = now();
        let reading = answer.as_deref().map(propagation::judge);
        let verdict = self.run_of_none(propagation::settle(
            self.run_of_none_since(),
            reading.as_ref().ok(),
            at,
            interval,
        ));
        let effective_at = match (verdict, reading) {
            (Verdict::Effective(since), _) => since,
            (Verdict::Wait { .. }, Err(e)) => {
                return Ok(Some(format!(
                    "spec.health.propagation.query could not be evaluated: {e}"
                )));
            }
            (Verdict::Wait { .. }, Ok(Reading::Serving(value))) => {
                return Ok(Some(format!(
                    "spec.health.propagation: instances still serve the on-variant of {} (value {value} over the last {}s)",
                    flags.join(", "),
                    window.as_secs()
                )));
            }
            (Verdict::Wait { .. }, Ok(Reading::Effective)) => {
                return Ok(Some(format!(
                    "spec.health.propagation: no instance serves the on-variant of {}; confirming for one interval ({}s)",
                    flags.join(", "),
                    interval.as_secs()
                )));
            }
        };
        let since_created = seconds_between(self.created(), effective_at);
        self.status
            .durations
            .get_or_insert_with(Durations::default)
            .flag_effective = Some(since_created);
        let after_change = self
            .status
            .flags_changed_at
            .as_ref()
            .map_or(String::new(), |t| {
                format!(
                    " ({:.1}s after the flags changed)",
                    seconds_between(t.0, effective_at)
                )
            });
        let message = format!(
            "no instance serves the on-variant of {} any more{after_change}: spec.health.propagation read none over the last {}s, and still {:.1}s later",
            flags.join(", "),
            window.as_secs(),
            seconds_between(effective_at, at)
        );
        self.record("FlagsEffective", message.clone());
        self.save().await?;
        self.event(EventType::Normal, "FlagsEffective", message);
        crate::fault::point("flags-effective", &self.name()).await;
        Ok(None)
    }

    /// When the current run of "none" answers of this request began, if one is under way.
    fn run_of_none_since(&self) -> Option<jiff::Timestamp> {
        let runs = self.ctx.effective_since.lock().expect("not poisoned");
        runs.get(&self.request.uid().unwrap_or_default()).copied()
    }

    /// Keeps (or forgets) this request's run of "none" answers as `verdict` says; returns it.
    fn run_of_none(&self, verdict: Verdict) -> Verdict {
        let uid = self.request.uid().unwrap_or_default();
        let mut runs = self.ctx.effective_since.lock().expect("not poisoned");
        match &verdict {
            Verdict::Wait { since: Some(since) } => runs.insert(uid, *since),
            _ => runs.remove(&uid),
        };
        // Runs of requests that ended meanwhile: an hour is past any health.timeout.
        let hour_ago = now() - jiff::SignedDuration::from_hours(1);
        runs.retain(|_, since| *since > hour_ago);
        verdict
    }
}
