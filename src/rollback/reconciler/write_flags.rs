//! Step 4, *Disable flags* (or restore them): one write with the resourceVersion of the
//! state the snapshot holds as precondition, stamped with the request's uid (the write's
//! record until the status write after it), retried on conflict on a fresh read (taking the
//! snapshot again only if it no longer stands for that state); dry runs.

use super::*;

impl Run {
    pub(super) async fn dry_run(&mut self) -> Result<Flow, Error> {
        self.accept();
        let cm = match self.get_flags().await? {
            Ok(cm) => cm,
            Err((reason, message)) => return self.fail(reason, message).await,
        };
        let plan = match self.plan(&cm).await? {
            Ok(plan) => plan,
            Err(message) => return self.fail("InvalidFlags", message).await,
        };
        let names: Vec<_> = plan.changes.iter().map(|c| c.name.as_str()).collect();
        let message = format!(
            "dry run: would change {} flag(s){}{}; nothing was changed",
            names.len(),
            if names.is_empty() { "" } else { ": " },
            names.join(", ")
        );
        self.status.flags_changed = Some(plan.changes);
        self.status.conflicts = plan.conflicts;
        self.status.phase = Some(RequestPhase::Succeeded);
        self.status.message = Some(message.clone());
        self.status.completed_at = Some(MicroTime(now()));
        self.set_condition(condition::COMPLETE, TRUE, "DryRun", message.clone());
        self.record("DryRun", message.clone());
        self.event(EventType::Normal, "RollbackSucceeded", message);
        self.flush_events().await;
        self.save().await?;
        Ok(Flow::Next)
    }

    pub(super) async fn write_flags(&mut self) -> Result<Flow, Error> {
        let uid = self.request.uid().unwrap_or_default();
        let name = self.name();
        // A write retried against the fresh object on conflict, so concurrent edits of other
        // keys are never lost.
        // The request whose stamp the flags ConfigMap carried at the last attempt (restores).
        let mut last_writer: Option<Option<String>> = None;
        // A restore's snapshot and the changes it undoes, read once: each attempt then reads
        // only the ConfigMap before its write.
        let source = match self.request.spec.action {
            RequestAction::Restore => Some(self.restore_source().await?),
            RequestAction::Rollback => None,
        };
        self.snapshot_for_write().await?;
        let (plan_changes, conflicts, written, cm) = loop {
            // The snapshot step's copy (from the watch, possibly behind) is good for a write,
            // whose precondition proves it current; a decision not to write is taken on the
            // ConfigMap as the API server has it.
            let (cm, read_now) = match self.flags_seen.take() {
                Some(cm) => (cm, false),
                None => match self.get_flags().await? {
                    Ok(cm) => (cm, true),
                    Err((reason, message)) => return self.fail(reason, message).await,
                },
            };
            if cm.annotations().get(LAST_CHANGE_ANNOTATION) == Some(&uid) {
                // Written before a restart (or a write whose answer was lost): record it, do
                // not write again.
                let (changes, conflicts) = self.written_before(&cm, source.as_ref());
                break (changes, conflicts, true, cm);
            }
            // A restore asks whether it still holds the guard after reading the ConfigMap: an
            // emergency that took the guard since would be undone by this write. On a retry it
            // asks again only if another request of rollguard wrote the flags since (its
            // stamp changed); a conflict with a writer of other keys adds no round trip to a
            // window that writer may win again.
            if self.request.spec.action == RequestAction::Restore {
                let writer = cm.annotations().get(LAST_CHANGE_ANNOTATION).cloned();
                let ask = last_writer
                    .as_ref()
                    .is_none_or(|before| *before != writer && writer.as_deref() != Some(&uid));
                last_writer = Some(writer);
                if ask && !self.still_holds_slot().await? {
                    // The next step ends this request Superseded.
                    return Ok(Flow::Next);
                }
            }
            let plan = match self.plan_from(&cm, source.as_ref()) {
                Ok(plan) => plan,
                Err(message) => return self.fail("InvalidFlags", message).await,
            };
            // An emergency that took the slot from another request writes even when every
            // flag is already off (the annotation alone): a superseded restore about to
            // write then meets a conflict, looks at the slot again and stops.
            let writes = !plan.is_empty() || self.took_over();
            if !writes && !read_now {
                continue;
            }
            // No flag changes before a snapshot that stands for the state this write is
            // based on exists (the write's precondition is that state's resourceVersion).
            if !self.snapshot_stands_for(&cm, &plan, source.as_ref())
                && let Err((reason, message)) = self.retake_snapshot(&cm).await?
            {
                return self.fail(reason, message).await;
            }
            if !writes {
                break (plan.changes, plan.conflicts, false, cm);
            }
            // What this write changes is not recorded before it: after a restart, the stamp
            // below says it was made, and the snapshot holds the state it was made on.
            crate::fault::pause("before-flags-write", &name).await;
            let patch = json!({
                "metadata": {
                    "resourceVersion": cm.resource_version(),
                    "annotations": { LAST_CHANGE_ANNOTATION: uid },
                },
                "data": plan.writes,
            });
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            match self
                .config_maps
                .patch(&cm.name_any(), &params, &Patch::Merge(&patch))
                .await
            {
                Ok(updated) => {
                    crate::fault::point("flags-written", &name).await;
                    let written = !plan.is_empty();
                    break (plan.changes, plan.conflicts, written, updated);
                }
                Err(e) if is_conflict(&e) => continue,
                // Forbidden (RBAC, an admission policy), invalid, immutable or gone: asking
                // again changes nothing. Nothing was written.
                Err(e) => {
                    let Some(answer) = refused(&e) else {
                        return Err(e.into());
                    };
                    let message = format!(
                        "writing ConfigMap {:?}: {answer}; no flag was changed",
                        cm.name_any()
                    );
                    self.status.flags_changed = Some(Vec::new());
                    self.status.conflicts = Vec::new();
                    self.set_condition(
                        condition::FLAGS_DISABLED,
                        FALSE,
                        "WriteRefused",
                        message.clone(),
                    );
                    return self.fail("WriteRefused", message).await;
                }
            }
        };

        let at = now();
        self.status.flags_changed = Some(plan_changes.clone());
        self.status.conflicts = conflicts.clone();
        self.status.flags_changed_at = Some(MicroTime(at));
        let since_created = seconds_between(self.created(), at);
        self.status
            .durations
            .get_or_insert_with(Durations::default)
            .flag_disable = Some(since_created);
        let names: Vec<_> = plan_changes.iter().map(|c| c.name.as_str()).collect();
        let restore = self.request.spec.action == RequestAction::Restore;
        let (reason, message) = match (restore, names.is_empty()) {
            (false, true) => (
                "AlreadyOff",
                "every selected flag was already off; nothing to change".to_string(),
            ),
            (false, false) => (
                "FlagsDisabled",
                format!(
                    "turned off {} flag(s) in ConfigMap {:?}: {}",
                    names.len(),
                    cm.name_any(),
                    names.join(", ")
                ),
            ),
            (true, _) => (
                "FlagsRestored",
                format!(
                    "restored {} flag(s) in ConfigMap {:?}{}{}",
                    names.len(),
                    cm.name_any(),
                    if names.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", names.join(", "))
                    },
                    if conflicts.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; left alone, edited since the rollback: {}",
                            conflicts
                                .iter()
                                .map(|c| c.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                ),
            ),
        };
        self.set_condition(condition::FLAGS_DISABLED, TRUE, reason, message.clone());
        if !restore {
            self.status.phase = Some(RequestPhase::Verifying);
        }
        self.record(reason, message.clone());
        let by_state = self.disabled_by_state(&plan_changes);
        if !restore && let Some(note) = &by_state {
            self.record("FlagsDisabledByState", note.clone());
        }
        self.save().await?;
        if !restore {
            self.event(EventType::Normal, "FlagsDisabled", message);
            if let Some(note) = by_state {
                self.event(EventType::Warning, "FlagsDisabledByState", note);
            }
        }
        if written && self.guard().spec.flags.refresh_pods {
            // Recorded with the next step's status write; a refresh is best effort and
            // harmless to repeat.
            match self.refresh_pods(&cm).await {
                Ok(refreshed) => self.record(
                    "PodsRefreshed",
                    format!(
                        "annotated {refreshed} pod(s) that mount ConfigMap {:?}",
                        cm.name_any()
                    ),
                ),
                Err(problem) => {
                    let message = format!(
                        "spec.flags.refreshPods: {problem}; pods that mount ConfigMap {:?} see the change only after the kubelet's sync (about a minute). The operator needs list and patch on pods (chart value rbac.refreshPods=true)",
                        cm.name_any()
                    );
                    self.record("PodRefreshFailed", message.clone());
                    self.event(EventType::Warning, "PodRefreshFailed", message);
                }
            }
        }
        Ok(Flow::Next)
    }

    /// Whether the snapshot taken stands for `cm` under `plan`: taken of this very state,
    /// or of an earlier one that differs only where the plan does not write
    /// (`flags::snapshot_stands_for`). A retry after another writer's edit of other keys
    /// then costs a read and a write, as that writer's own loop does, rather than also
    /// deleting and creating the snapshot: a writer in a tight loop would win every race.
    fn snapshot_stands_for(
        &self,
        cm: &ConfigMap,
        plan: &flags::Plan,
        source: Option<&Result<(Secret, Vec<FlagChange>), String>>,
    ) -> bool {
        let Some(taken) = &self.snapshot else {
            return false;
        };
        let Some(captured) = snapshot::captured_version(taken) else {
            return false;
        };
        if cm.resource_version().as_deref() == Some(captured.as_str()) {
            return true;
        }
        let Some(then) = snapshot::flags_data(taken) else {
            return false;
        };
        let mut earlier = cm.clone();
        earlier.data = Some(then.clone());
        let Ok(planned_then) = self.plan_from(&earlier, source) else {
            return false;
        };
        flags::snapshot_stands_for(
            &self.guard().spec.flags,
            &cm.name_any(),
            &cm.data.clone().unwrap_or_default(),
            plan,
            &then,
            &planned_then,
        )
    }

    /// What a write made before a restart changed: the plan on the state its snapshot
    /// holds (the write's precondition was that state). A request resumed from an earlier
    /// version recorded its plan before writing (`FlagsDisabled=Unknown`): that record.
    fn written_before(
        &self,
        cm: &ConfigMap,
        source: Option<&Result<(Secret, Vec<FlagChange>), String>>,
    ) -> (Vec<FlagChange>, Vec<crate::api::request::FlagConflict>) {
        let recorded = conditions::status_of(&self.status.conditions, condition::FLAGS_DISABLED)
            == Some(UNKNOWN);
        let before = self
            .snapshot
            .as_ref()
            .and_then(snapshot::flags_data)
            .filter(|_| !recorded);
        let Some(data) = before else {
            return (
                self.status.flags_changed.clone().unwrap_or_default(),
                self.status.conflicts.clone(),
            );
        };
        let mut snapshotted = cm.clone();
        snapshotted.data = Some(data);
        match self.plan_from(&snapshotted, source) {
            Ok(plan) => (plan.changes, plan.conflicts),
            Err(_) => (Vec::new(), Vec::new()),
        }
    }

    /// forceDisableAll on flagd boolean flags with no `false` variant turns them off with
    /// `state: DISABLED`, which flagd answers with the application's code default: said in
    /// the timeline and a Warning Event, naming them. From the record, so it holds after a
    /// restart too.
    pub(super) fn disabled_by_state(&self, changes: &[FlagChange]) -> Option<String> {
        if self.guard().spec.flags.format != crate::api::guard::FlagFormat::Flagd {
            return None;
        }
        let names = flags::disabled_by_state(changes);
        (!names.is_empty()).then(|| {
            format!(
                "forceDisableAll: {} ha{} no false variant; set state: DISABLED, so flagd answers the application's code default (which may be true)",
                names.join(", "),
                if names.len() == 1 { "s" } else { "ve" }
            )
        })
    }

    /// Annotates pods that mount the flags ConfigMap as a volume, so the kubelet refreshes
    /// the projected file now rather than after its sync period. Best effort.
    pub(super) async fn refresh_pods(&self, cm: &ConfigMap) -> Result<usize, String> {
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let list = pods
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("listing pods: {e}"))?;
        let mut refreshed = 0;
        let mut failed = Vec::new();
        let cm_name = cm.name_any();
        let revision = cm.resource_version().unwrap_or_default();
        for pod in list.items {
            let mounts = pod
                .spec
                .as_ref()
                .and_then(|s| s.volumes.as_ref())
                .is_some_and(|vs| {
                    vs.iter()
                        .any(|v| v.config_map.as_ref().is_some_and(|c| c.name == cm_name))
                });
            if mounts {
                let patch =
                    json!({"metadata": {"annotations": {FLAGS_REVISION_ANNOTATION: revision}}});
                if let Err(e) = pods
                    .patch(
                        &pod.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                {
                    tracing::warn!(pod = %pod.name_any(), error = %e, "could not refresh pod");
                    failed.push(format!("annotating pod {:?}: {e}", pod.name_any()));
                } else {
                    refreshed += 1;
                }
            }
        }
        if failed.is_empty() {
            Ok(refreshed)
        } else {
            Err(failed.join("; "))
        }
    }
}
