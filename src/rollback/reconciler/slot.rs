//! The guard's one rollback slot: who holds it (observed from the guard and the queue),
//! waiting behind another request, taking it, losing it to an emergency, freeing it — and,
//! as a request finishes, the guard's history past `spec.rollback.history`.

use super::*;
use crate::rollback::slot_lease;
use crate::rollback::step::Queued;

impl Run {
    /// A request as the slot decisions see it.
    fn queued(r: &RollbackRequest) -> Queued {
        let status = r.status.as_ref();
        Queued {
            name: r.name_any(),
            created: r.metadata.creation_timestamp.as_ref().map(|t| t.0),
            emergency: step::is_emergency(&r.spec),
            finished: step::is_terminal(status.and_then(|s| s.phase)),
            failed: status.and_then(|s| s.phase) == Some(RequestPhase::Failed),
            restore: r.spec.action == RequestAction::Restore && !r.spec.dry_run,
            started: status.is_some_and(|s| s.started_at.is_some()),
            overtook: status.map(|s| s.overtook.clone()).unwrap_or_default(),
        }
    }

    fn queued_self(&self) -> Queued {
        let mut me = Self::queued(&self.request);
        me.started = self.status.started_at.is_some();
        me.overtook = self.status.overtook.clone();
        me
    }

    /// The guard's requests, from the controller's cache.
    fn guard_queue(&self) -> Vec<Queued> {
        self.ctx
            .requests
            .of_guard(&self.namespace, &self.request.spec.guard_ref.name)
            .iter()
            .map(|r| Self::queued(r))
            .collect()
    }

    pub(super) fn observe(&self) -> Observed {
        let status = self.guard.as_ref().and_then(|g| g.status.as_ref());
        let hooks = self.guard.as_ref().map(|g| &g.spec.rollback.hooks);
        let queue = self.guard_queue();
        let me = self.queued_self();
        let accepted = me.started;
        Observed {
            guard_exists: self.guard.is_some(),
            overtaken_by: step::overtaken(&me, accepted, &queue),
            slot: step::slot(
                &me,
                accepted,
                self.slot_holder
                    .as_deref()
                    .or(status.and_then(|s| s.active_rollback.as_deref())),
                status.and_then(|s| s.last_rollback.as_ref().map(|r| r.name.as_str())),
                &queue,
            ),
            pre_hooks: hooks.map_or(0, |h| h.pre_rollback.len()),
            post_hooks: hooks.map_or(0, |h| h.post_rollback.len()),
        }
    }

    pub(super) async fn wait(&mut self, behind: String) -> Result<Flow, Error> {
        let message = format!(
            "waiting for RollbackRequest {behind:?} of guard {:?} to finish",
            self.request.spec.guard_ref.name
        );
        if self.status.phase != Some(RequestPhase::Pending)
            || self.status.message.as_deref() != Some(message.as_str())
        {
            self.status.phase = Some(RequestPhase::Pending);
            self.status.message = Some(message.clone());
            self.record("Queued", message);
            self.save().await?;
        }
        Ok(Flow::Requeue(Duration::from_secs(2)))
    }

    /// Takes the guard's rollback slot (its Lease, `slot_lease`): one create when the guard
    /// shows it free, a handover conditional on the holder when an emergency takes it over.
    /// Sent beside it: the snapshot Secret and, for a guard taken from the watch's cache, a
    /// read of the guard that proves the cached spec current.
    pub(super) async fn claim(&mut self, supersedes: Option<String>) -> Result<Flow, Error> {
        // A rollback's snapshot is created beside the claim (capture.rs): the flags write
        // waits for both, one round trip sooner.
        let early = self.early_snapshot();
        let secrets = self.secrets.clone();
        let creating = async move {
            match early {
                Some((secret, cm)) => {
                    Some((secrets.create(&PostParams::default(), &secret).await, cm))
                }
                None => None,
            }
        };
        let cached = std::mem::take(&mut self.guard_from_cache);
        let guard_name = self.guard().name_any();
        let (guards, name) = (self.guards.clone(), guard_name.clone());
        let reading = async move {
            if cached {
                Some(guards.get_opt(&name).await)
            } else {
                None
            }
        };
        let (taken, created, read) =
            tokio::join!(self.take_slot(supersedes.as_deref()), creating, reading);
        if let Some((Ok(secret), cm)) = created {
            self.keep_early_snapshot(secret, cm);
        }
        let taken = taken?;
        let fresh = match read {
            Some(read) => Some(read?),
            None => None,
        };
        let spec_changed = fresh.as_ref().is_some_and(|fresh| {
            fresh.as_ref().map(|g| g.metadata.generation) != Some(self.guard().metadata.generation)
        });
        if let Some(fresh) = fresh {
            self.guard = fresh;
        }
        match taken {
            slot_lease::Taken::Mine => {}
            slot_lease::Taken::Other(holder) => {
                self.slot_holder = holder.map(|h| h.name);
                self.discard_early_snapshot().await;
                return Ok(Flow::Next);
            }
        }
        if self.guard.is_none() {
            // The guard went a moment before (its cached copy was behind): so does the
            // Lease, and the request decides again (the guard is not found).
            slot_lease::free(&self.leases, &guard_name, &self.slot_me()).await?;
            self.discard_early_snapshot().await;
            return Ok(Flow::Next);
        }
        self.slot_holder = Some(self.name());
        self.mirror_slot();
        if spec_changed {
            // The cached guard was behind: what was prepared from it goes, and the next
            // steps are decided on the guard as it is (the slot is kept).
            self.discard_early_snapshot().await;
            return Ok(Flow::Next);
        }
        // Recorded together with the first step's status write, one round trip fewer on
        // the way to the flags; a restart before it finds the slot held and starts there
        // (and accepts, and overtakes, again).
        self.accept();
        if let Some(other) = supersedes {
            self.record(
                "Superseding",
                format!(
                    "emergency: took the guard's rollback slot from RollbackRequest {other:?}, which ends Superseded"
                ),
            );
        }
        Ok(Flow::Next)
    }

    /// An emergency takes the guard: restores asked for no later than it and still waiting
    /// would undo it when their turn comes; they are recorded here and end `Superseded`.
    fn overtake_waiting_restores(&mut self) {
        let me = self.queued_self();
        let queue = self.guard_queue();
        let overtaken = step::to_overtake(&me, &queue);
        if !overtaken.is_empty() {
            self.record(
                "Overtaking",
                format!(
                    "emergency: RollbackRequest(s) {} asked to restore the flags no later than this rollback and would undo it; they end Superseded",
                    overtaken.join(", ")
                ),
            );
            self.status.overtook = overtaken;
        }
    }

    /// An emergency took the slot while this request was under way: it ends here. What it
    /// did so far (snapshot, hooks, flags) stays recorded; it calls nothing more.
    pub(super) async fn superseded(&mut self, by: Option<String>) -> Result<Flow, Error> {
        let message = match &by {
            Some(other) => format!(
                "superseded by the immediate rollback RollbackRequest {other:?}, which took over the guard; the steps done before are in the timeline"
            ),
            None => "superseded by an immediate rollback, which took over the guard and has finished; the steps done before are in the timeline".to_string(),
        };
        self.status.phase = Some(RequestPhase::Superseded);
        self.status.message = Some(message.clone());
        self.status.completed_at = Some(MicroTime(now()));
        self.set_condition(condition::COMPLETE, FALSE, "Superseded", message.clone());
        self.record("Superseded", message.clone());
        self.event(EventType::Normal, "RollbackSuperseded", message);
        self.flush_events().await;
        self.save().await?;
        self.count_outcome("Superseded");
        Ok(Flow::Next)
    }

    /// Marks the request accepted (once): phase, start time, the first timeline line; an
    /// emergency overtakes the restores waiting before it. All of it is recorded with the
    /// first status write, so a request killed before that write does it again on resuming
    /// (the slot held, at its next step).
    pub(super) fn accept(&mut self) {
        if self.status.started_at.is_some() {
            return;
        }
        self.status.phase = Some(RequestPhase::Snapshotting);
        self.status.started_at = Some(MicroTime(now()));
        self.status.message = None;
        let who = &self.request.spec.requested_by;
        let reason = &self.request.spec.reason;
        let message = format!(
            "{:?} {} requested by {who}{}{reason}",
            self.request.spec.mode,
            action_word(self.request.spec.action),
            if reason.is_empty() { "" } else { ": " },
        );
        self.record("Accepted", message);
        self.announce_started();
        if step::is_emergency(&self.request.spec) && self.status.overtook.is_empty() {
            self.overtake_waiting_restores();
        }
    }

    pub(super) async fn release(&mut self) -> Result<Flow, Error> {
        let succeeded = self.status.phase == Some(RequestPhase::Succeeded);
        let rollback =
            self.request.spec.action == RequestAction::Rollback && !self.request.spec.dry_run;
        let flags_disabled =
            conditions::is_true(&self.status.conditions, condition::FLAGS_DISABLED);
        let record = LastRollback {
            name: self.name(),
            time: Some(Time(now())),
            outcome: Some(if succeeded { "Succeeded" } else { "Failed" }.into()),
            flags_disabled: rollback.then_some(flags_disabled),
        };
        // A dry run or a failed restore leaves the guard's rollback state as it was. The
        // guard's phase and conditions are its own evaluation's to decide, at once.
        let mut status = json!({ "activeRollback": null });
        if rollback {
            status["lastRollback"] = serde_json::to_value(record).expect("serialises");
        } else if succeeded
            && self.request.spec.action == RequestAction::Restore
            && !self.request.spec.dry_run
        {
            status["lastRestore"] = serde_json::to_value(record).expect("serialises");
        }
        self.mirrored().await?;
        if self.patch_guard_status(status).await? {
            // The guard no longer names this request: the Lease goes, and with it the slot.
            let guard = self.guard().name_any();
            slot_lease::free(&self.leases, &guard, &self.slot_me()).await?;
            self.slot_holder = None;
            self.prune_history().await;
        }
        Ok(Flow::Next)
    }

    /// This request as a slot Lease names it.
    fn slot_me(&self) -> slot_lease::Holder {
        slot_lease::Holder {
            name: self.name(),
            uid: self.request.uid().unwrap_or_default(),
        }
    }

    /// Takes the slot Lease: from `supersedes` (an emergency taking over), else by creating
    /// it — or, if it names a holder whose request is gone or finished (a release cut short
    /// by a crash, a request deleted while holding it), by handing it over from that holder.
    async fn take_slot(&self, supersedes: Option<&str>) -> Result<slot_lease::Taken, Error> {
        let me = self.slot_me();
        let guard = self.guard();
        let taken = match supersedes {
            Some(other) => slot_lease::take_from(&self.leases, guard, other, &me).await?,
            None => slot_lease::create(&self.leases, guard, &me).await?,
        };
        let holder = match taken {
            slot_lease::Taken::Other(Some(holder)) if supersedes.is_none() => holder,
            // A Lease that names nobody rollguard wrote holds nothing.
            slot_lease::Taken::Other(None) => {
                return Ok(slot_lease::take_unheld(&self.leases, guard, &me).await?);
            }
            taken => return Ok(taken),
        };
        let cached = self
            .ctx
            .requests
            .of_guard(&self.namespace, &guard.name_any())
            .into_iter()
            .find(|r| r.name_any() == holder.name && r.uid().as_deref() == Some(&holder.uid));
        let found = match cached {
            Some(r) => Some(r),
            // Not in the cache: perhaps too new for it; asked of the API server.
            None => self.requests.get_opt(&holder.name).await?.map(Arc::new),
        };
        let found = found.as_ref().map(|r| {
            let uid = r.uid().unwrap_or_default();
            let finished = step::is_terminal(r.status.as_ref().and_then(|s| s.phase));
            (uid, finished)
        });
        if slot_lease::may_take(&holder, found.as_ref().map(|(u, f)| (u.as_str(), *f))) {
            return Ok(slot_lease::take_from(&self.leases, guard, &holder.name, &me).await?);
        }
        Ok(slot_lease::Taken::Other(Some(holder)))
    }

    /// Writes the guard's `activeRollback` (the slot's mirror) beside the steps that follow
    /// the claim; the next status write of the request waits for it.
    fn mirror_slot(&mut self) {
        let guards = self.guards.clone();
        let (guard, me) = (self.guard().name_any(), self.name());
        let write = async move {
            let patch = json!({ "status": { "activeRollback": me } });
            guards
                .patch_status(&guard, &PatchParams::default(), &Patch::Merge(&patch))
                .await
        };
        self.mirror = Some(tokio::spawn(tracing::Instrument::in_current_span(write)));
        self.wake_guard = true;
    }

    /// Waits for the mirror write started by the claim, if any.
    pub(super) async fn mirrored(&mut self) -> Result<(), Error> {
        if let Some(mirror) = self.mirror.take() {
            match mirror.await {
                Ok(written) => self.guard = Some(written?),
                Err(e) => {
                    tracing::warn!(request = %self.name(), error = %e, "the slot's mirror write did not finish")
                }
            }
        }
        Ok(())
    }

    /// Reads who holds the slot from its Lease (after a drain hook: an emergency may have
    /// taken it meanwhile). No Lease: the guard's `activeRollback` decides.
    pub(super) async fn read_slot_holder(&mut self) -> Result<(), Error> {
        let guard = self.request.spec.guard_ref.name.clone();
        self.slot_holder = slot_lease::read(&self.leases, &guard)
            .await?
            .and_then(|l| slot_lease::holder(&l))
            .map(|h| h.name);
        Ok(())
    }

    /// Patches the guard's rollback fields with its resourceVersion as a precondition, so
    /// two requests cannot both take the slot. On a conflict the guard is re-read and
    /// false returned: the state machine then decides again on the fresh guard.
    pub(super) async fn patch_guard_status(
        &mut self,
        status: serde_json::Value,
    ) -> Result<bool, Error> {
        let guard = self.guard();
        let patch = json!({ "metadata": { "resourceVersion": guard.resource_version() }, "status": status });
        let guard_name = guard.name_any();
        match self
            .guards
            .patch_status(&guard_name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(updated) => {
                self.guard = Some(updated);
                // The slot changed: the guard's evaluation decides its phase and conditions
                // once this run has recorded its next step (or ends).
                self.wake_guard = true;
                Ok(true)
            }
            Err(e) if is_conflict(&e) => {
                self.guard = self.guards.get_opt(&guard_name).await?;
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Whether this request still holds the guard's slot, asked of the API server (after
    /// the flags ConfigMap was read, so an emergency that took the slot since is seen).
    pub(super) async fn still_holds_slot(&mut self) -> Result<bool, Error> {
        let guard = self.request.spec.guard_ref.name.clone();
        if let Some(lease) = slot_lease::read(&self.leases, &guard).await? {
            return Ok(slot_lease::holder(&lease).as_ref() == Some(&self.slot_me()));
        }
        // No Lease: a slot taken before rollguard held slots in Leases, named by the guard.
        self.guard = self.guards.get_opt(&guard).await?;
        Ok(self
            .guard
            .as_ref()
            .and_then(|g| g.status.as_ref())
            .and_then(|s| s.active_rollback.as_deref())
            == Some(self.name().as_str()))
    }

    /// This request is an emergency that took the slot from another request.
    pub(super) fn took_over(&self) -> bool {
        step::is_emergency(&self.request.spec)
            && self.status.timeline.iter().any(|t| t.step == "Superseding")
    }

    /// Deletes the guard's finished requests that `spec.rollback.history` no longer keeps,
    /// each with its snapshot Secret (by the name the operator gives it). Runs as a request
    /// finishes, so the history stays bounded. Best effort: a failure never fails a rollback.
    pub(super) async fn prune_history(&self) {
        let guard = self.guard();
        let policy = &guard.spec.rollback.history;
        let Ok(all) = self.requests.list(&ListParams::default()).await else {
            return;
        };
        let mine: Vec<_> = all
            .items
            .into_iter()
            .filter(|r| r.spec.guard_ref.name == guard.name_any())
            .collect();
        let records = mine
            .iter()
            .map(|r| history::Record {
                name: r.name_any(),
                created: r.metadata.creation_timestamp.as_ref().map(|t| t.0),
                finished: step::is_terminal(r.status.as_ref().and_then(|s| s.phase)),
            })
            .collect();
        let status = guard.status.clone().unwrap_or_default();
        let protected: std::collections::BTreeSet<&str> = [
            status.active_rollback.as_deref(),
            status.last_rollback.as_ref().map(|r| r.name.as_str()),
            status.last_restore.as_ref().map(|r| r.name.as_str()),
        ]
        .into_iter()
        .flatten()
        .collect();
        let expired = history::expired(
            records,
            usize::try_from(policy.keep).unwrap_or(1).max(1),
            policy.keep_for.to_std().unwrap_or(Duration::MAX),
            now(),
            &protected,
        );
        for name in expired {
            let snapshot = mine
                .iter()
                .find(|r| r.name_any() == name)
                .and_then(|r| r.status.as_ref()?.snapshot_ref.as_ref())
                .map(|s| s.name.clone())
                .filter(|s| *s == snapshot::secret_name(&guard.name_any(), &name));
            if let Err(e) = self.requests.delete(&name, &Default::default()).await {
                tracing::warn!(request = %name, error = %e, "could not delete an expired RollbackRequest");
                continue;
            }
            tracing::info!(request = %name, guard = %guard.name_any(), "deleted a RollbackRequest past spec.rollback.history");
            if let Some(secret) = snapshot {
                match self.secrets.delete(&secret, &Default::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => {
                        tracing::warn!(snapshot = %secret, error = %e, "could not delete an expired request's snapshot")
                    }
                }
            }
        }
    }
}
