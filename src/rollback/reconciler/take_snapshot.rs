//! Step 1, *Snapshot*: the flags ConfigMap and `snapshot.include` copied into a Secret before
//! anything changes; for a restore, which snapshot it restores from; pruning old snapshots.

use super::*;

impl Run {
    pub(super) fn flags_config_map(&self) -> String {
        self.guard().spec.flags.config_map_ref.name.clone()
    }

    /// The flags ConfigMap, or why it may not be written: gone, or its owner has not
    /// allowed rollguard to write it (SPEC §5), judged at every read before a write.
    /// Err carries the failure's reason and message.
    pub(super) async fn get_flags(
        &self,
    ) -> Result<Result<ConfigMap, (&'static str, String)>, Error> {
        let name = self.flags_config_map();
        let guard = self.guard().name_any();
        Ok(match self.config_maps.get_opt(&name).await? {
            None => Err((
                "ConfigMapNotFound",
                format!(
                    "RolloutGuard {guard:?}: spec.flags.configMapRef.name: ConfigMap {name:?} does not exist"
                ),
            )),
            Some(cm) => crate::trust::writable_flags(&cm, "spec.flags.configMapRef.name")
                .map(|()| cm)
                .map_err(|message| {
                    (
                        "ConfigMapNotAllowed",
                        format!("RolloutGuard {guard:?}: {message}; nothing was changed"),
                    )
                }),
        })
    }

    pub(super) fn selection(&self) -> Selection {
        Selection {
            flags: self.request.spec.flags.clone(),
            force_disable_all: self.request.spec.force_disable_all,
        }
    }

    pub(super) fn flag_error(&self, e: flags::FlagError) -> String {
        match e {
            flags::FlagError::NotGuarded { .. } => e.to_string(),
            _ => format!("RolloutGuard {:?}: {e}", self.guard().name_any()),
        }
    }

    /// The rollback plan for the current ConfigMap, or why the request cannot run.
    pub(super) fn plan_rollback(&self, cm: &ConfigMap) -> Result<Plan, String> {
        let data = cm.data.clone().unwrap_or_default();
        flags::plan_disable(
            &self.guard().spec.flags,
            &cm.name_any(),
            &data,
            &self.selection(),
        )
        .map_err(|e| self.flag_error(e))
    }

    /// What this request would write to the ConfigMap now, or why it cannot run.
    pub(super) async fn plan(&self, cm: &ConfigMap) -> Result<Result<Plan, String>, Error> {
        let source = match self.request.spec.action {
            RequestAction::Rollback => None,
            RequestAction::Restore => Some(self.restore_source().await?),
        };
        Ok(self.plan_from(cm, source.as_ref()))
    }

    /// The plan against `cm`, a restore's from its source read once (a retry after a
    /// conflict re-reads only the ConfigMap).
    pub(super) fn plan_from(
        &self,
        cm: &ConfigMap,
        source: Option<&Result<(Secret, Vec<FlagChange>), String>>,
    ) -> Result<Plan, String> {
        match source {
            None => self.plan_rollback(cm),
            Some(Ok((source, changes))) => {
                let snapshot_data = snapshot::flags_data(source).unwrap_or_default();
                let data = cm.data.clone().unwrap_or_default();
                let spec = &self.guard().spec.flags;
                flags::plan_restore(spec, &cm.name_any(), &data, changes, &snapshot_data)
                    .map_err(|e| self.flag_error(e))
            }
            Some(Err(message)) => Err(message.clone()),
        }
    }

    /// restore: the snapshot to restore from and the changes its rollback made.
    pub(super) async fn restore_source(
        &self,
    ) -> Result<Result<(Secret, Vec<FlagChange>), String>, Error> {
        let guard = self.guard().name_any();
        let secret = match self
            .status
            .restored_from
            .as_ref()
            .map(|r| r.name.clone())
            .or_else(|| {
                let named = &self.request.spec.snapshot_name;
                (!named.is_empty()).then(|| named.clone())
            }) {
            Some(name) => match self.secrets.get_opt(&name).await? {
                Some(s)
                    if s.type_.as_deref() == Some(SNAPSHOT_SECRET_TYPE)
                        && s.annotations().get(GUARD_LABEL) == Some(&guard) =>
                {
                    s
                }
                Some(_) => {
                    return Ok(Err(format!(
                        "spec.snapshotName: Secret {name:?} is not a snapshot of guard {guard:?}"
                    )));
                }
                None => {
                    return Ok(Err(format!(
                        "spec.snapshotName: snapshot {name:?} does not exist"
                    )));
                }
            },
            None => {
                // The newest rollback that changed a flag: one that found the flags off
                // already (after an earlier rollback) has nothing to give back. Snapshots are
                // found through the requests that took them: the operator may not list Secrets.
                let mut rollbacks: Vec<RollbackRequest> = self
                    .snapshots_taken()
                    .await?
                    .into_iter()
                    .filter(|r| r.spec.action == RequestAction::Rollback)
                    .collect();
                if rollbacks.is_empty() {
                    return Ok(Err(format!(
                        "spec.snapshotName: no rollback of guard {guard:?} that took a snapshot is left (rollguard finds the latest through its RollbackRequest and never lists Secrets); name a snapshot from `kubectl get secrets -n {} -l {GUARD_LABEL}={}`",
                        self.namespace,
                        snapshot::label_value(&guard)
                    )));
                }
                rollbacks.sort_by_key(|r| (r.metadata.creation_timestamp.clone(), r.name_any()));
                for rollback in rollbacks.into_iter().rev() {
                    let status = rollback.status.unwrap_or_default();
                    let changes = status.flags_changed.unwrap_or_default();
                    let Some(taken) = status.snapshot_ref.filter(|_| !changes.is_empty()) else {
                        continue;
                    };
                    match self.secrets.get_opt(&taken.name).await? {
                        Some(secret)
                            if secret.type_.as_deref() == Some(SNAPSHOT_SECRET_TYPE)
                                && secret.annotations().get(GUARD_LABEL) == Some(&guard) =>
                        {
                            return Ok(Ok((secret, changes)));
                        }
                        // Pruned beyond snapshot.retain, or deleted by hand: an older one.
                        _ => continue,
                    }
                }
                return Ok(Err(format!(
                    "spec.snapshotName: no rollback of guard {guard:?} with a snapshot changed a flag, so there is nothing to restore (name one with spec.snapshotName)"
                )));
            }
        };
        let changes = self.changes_of(&secret).await?;
        Ok(Ok((secret, changes)))
    }

    /// What the rollback that took `snapshot` changed: as its request recorded it, or, when
    /// that request is gone (an automatic one is deleted with its guard), what turning every
    /// guarded flag off would have changed in the snapshot. The restore still gives back
    /// only keys whose current value is the one a rollback writes.
    pub(super) async fn changes_of(&self, snapshot: &Secret) -> Result<Vec<FlagChange>, Error> {
        let taken_by = snapshot.annotations().get(crate::api::REQUEST_LABEL);
        let request = match taken_by {
            Some(name) => self.requests.get_opt(name).await?,
            None => None,
        };
        if let Some(request) = request {
            return Ok(request
                .status
                .and_then(|s| s.flags_changed)
                .unwrap_or_default());
        }
        let data = snapshot::flags_data(snapshot).unwrap_or_default();
        let every_guarded = Selection {
            flags: Vec::new(),
            force_disable_all: false,
        };
        let flags = &self.guard().spec.flags;
        Ok(
            flags::plan_disable(flags, &flags.config_map_ref.name, &data, &every_guarded)
                .map(|plan| plan.changes)
                .unwrap_or_default(),
        )
    }

    /// The guard's requests that took a snapshot, as the API server has them now.
    pub(super) async fn snapshots_taken(&self) -> Result<Vec<RollbackRequest>, Error> {
        let guard = self.request.spec.guard_ref.name.clone();
        Ok(self
            .requests
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|r| {
                r.spec.guard_ref.name == guard
                    && r.status.as_ref().is_some_and(|s| s.snapshot_ref.is_some())
            })
            .collect())
    }

    /// Keeps the snapshots of the newest `snapshot.retain` requests of the guard that took
    /// one, deleting the others by name — those that still exist (the guard's snapshot
    /// Secrets, listed by label), so a pruned snapshot is not asked for again at every
    /// rollback. A snapshot whose request was deleted is the user's to delete. Best effort:
    /// a failure here never fails a rollback.
    pub(super) async fn prune_snapshots(&self) {
        let guard = self.guard();
        let Ok(taken) = self.snapshots_taken().await else {
            return;
        };
        let mine: Vec<_> = taken
            .into_iter()
            .filter_map(|r| {
                // Only the name this operator gives a request's snapshot: a status edited by
                // hand never makes it delete another Secret.
                let expected = snapshot::secret_name(&guard.name_any(), &r.name_any());
                let created = r.metadata.creation_timestamp.map(|t| t.0);
                let name = r.status?.snapshot_ref?.name;
                (name == expected).then_some((name, created))
            })
            .collect();
        let retain = usize::try_from(guard.spec.rollback.snapshot.retain)
            .unwrap_or(1)
            .max(1);
        let listed = ListParams::default()
            .labels(&format!(
                "{GUARD_LABEL}={}",
                snapshot::label_value(&guard.name_any())
            ))
            .fields(&format!("type={SNAPSHOT_SECRET_TYPE}"));
        let Ok(present) = self.secrets.list_metadata(&listed).await else {
            return;
        };
        let present: std::collections::BTreeSet<String> =
            present.items.iter().map(|s| s.name_any()).collect();
        for name in snapshot::to_prune(mine, retain) {
            if !present.contains(&name) {
                continue;
            }
            match self.secrets.delete(&name, &Default::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => tracing::warn!(snapshot = %name, error = %e, "could not prune snapshot"),
            }
        }
    }
}
