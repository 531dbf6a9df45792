//! Step 1, *Snapshot*, on the short path: the flags ConfigMap as the watch keeps it
//! (ready::FlagsCache) copied into the snapshot Secret `<guard>-snap-<request>`. The Secret,
//! under that deterministic name, is the step's durable record (a restart meets
//! AlreadyExists and keeps it) until the next status write records it too. The Secret always
//! holds the state the flags write is based on: the write carries that state's
//! resourceVersion, and when the ConfigMap has moved on, the snapshot is taken again first.

use super::*;

/// Why a request stops before anything changed: the failure's reason and message.
type Refusal = (&'static str, String);

impl Run {
    /// The flags ConfigMap to snapshot: the watched copy when it passes every check the
    /// request makes of it (opted in; a rollback's plan), else as the API server has it now,
    /// so a copy that lags never fails a request.
    async fn flags_for_snapshot(&self) -> Result<Result<ConfigMap, Refusal>, Error> {
        let rollback = self.request.spec.action == RequestAction::Rollback;
        if let Some(cm) = self
            .ctx
            .flags
            .get(&self.namespace, &self.flags_config_map())
        {
            let writable =
                crate::trust::writable_flags(&cm, "spec.flags.configMapRef.name").is_ok();
            if writable && (!rollback || self.plan_rollback(&cm).is_ok()) {
                return Ok(Ok(cm));
            }
        }
        let cm = match self.get_flags().await? {
            Ok(cm) => cm,
            Err(refusal) => return Ok(Err(refusal)),
        };
        if rollback && let Err(message) = self.plan_rollback(&cm) {
            return Ok(Err(("InvalidFlags", message)));
        }
        Ok(Ok(cm))
    }

    /// The `snapshot.include` objects, read now.
    async fn included(&self) -> Result<Result<Vec<Included>, Refusal>, Error> {
        let mut included = Vec::new();
        let guard = self.guard().name_any();
        for item in &self.guard().spec.rollback.snapshot.include {
            let found = match item.kind {
                SnapshotKind::ConfigMap => self
                    .config_maps
                    .get_opt(&item.name)
                    .await?
                    .map(Included::ConfigMap),
                SnapshotKind::Secret => match crate::trust::read_credentials(
                    &self.secrets,
                    &item.name,
                    "spec.rollback.snapshot.include",
                )
                .await?
                {
                    Some(Ok(secret)) => Some(Included::Secret(secret)),
                    Some(Err(message)) => {
                        return Ok(Err((
                            "SnapshotIncludeRefused",
                            format!("RolloutGuard {guard:?}: {message}; nothing was changed"),
                        )));
                    }
                    None => None,
                },
            };
            match found {
                Some(object) => included.push(object),
                None => {
                    return Ok(Err((
                        "SnapshotIncludeNotFound",
                        format!(
                            "RolloutGuard {guard:?}: spec.rollback.snapshot.include: {:?} {:?} does not exist",
                            item.kind, item.name
                        ),
                    )));
                }
            }
        }
        Ok(Ok(included))
    }

    fn build_snapshot(&self, cm: &ConfigMap, included: &[Included]) -> Secret {
        snapshot::build(&SnapshotInput {
            namespace: &self.namespace,
            guard: &self.guard().name_any(),
            request: &self.name(),
            action: action_word(self.request.spec.action),
            flags: cm,
            included,
        })
    }

    /// Creates the snapshot Secret; AlreadyExists with this request's snapshot (taken before
    /// a restart) keeps that one, never retaken here.
    async fn create_snapshot(&mut self, secret: Secret) -> Result<Result<Secret, Refusal>, Error> {
        let secret_name = secret.name_any();
        match self.secrets.create(&PostParams::default(), &secret).await {
            Ok(created) => Ok(Ok(created)),
            Err(e) if is_conflict(&e) => {
                let existing = self.secrets.get(&secret_name).await?;
                if existing.annotations().get(crate::api::REQUEST_LABEL) != Some(&self.name()) {
                    return Ok(Err((
                        "SnapshotConflict",
                        format!(
                            "snapshot Secret {secret_name:?} already exists and belongs to another request"
                        ),
                    )));
                }
                Ok(Ok(existing))
            }
            Err(e) => {
                let Some(answer) = refused(&e) else {
                    return Err(e.into());
                };
                let message = format!(
                    "creating snapshot Secret {secret_name:?}: {answer}; nothing was changed"
                );
                self.set_condition(
                    condition::SNAPSHOT_TAKEN,
                    FALSE,
                    "SnapshotRefused",
                    message.clone(),
                );
                Ok(Err(("SnapshotRefused", message)))
            }
        }
    }

    /// Records the snapshot in (unsaved) status: the next status write carries it.
    fn snapshot_taken(&mut self, secret: &Secret, step: &str, message: String) {
        self.status.snapshot_ref = Some(LocalObjectReference {
            name: secret.name_any(),
        });
        self.set_condition(
            condition::SNAPSHOT_TAKEN,
            TRUE,
            "SnapshotTaken",
            message.clone(),
        );
        self.record(step, message.clone());
        self.event_after_save(EventType::Normal, "SnapshotTaken", message);
    }

    /// A rollback whose snapshot needs no read (no `snapshot.include`; the watched flags
    /// ConfigMap passes its checks): the Secret to create beside the claim, and that copy.
    pub(super) fn early_snapshot(&self) -> Option<(Secret, ConfigMap)> {
        let spec = &self.request.spec;
        let guard = self.guard.as_ref()?;
        if spec.action != RequestAction::Rollback
            || spec.dry_run
            || self.snapshot.is_some()
            || !guard.spec.rollback.snapshot.include.is_empty()
        {
            return None;
        }
        let cm = self
            .ctx
            .flags
            .get(&self.namespace, &self.flags_config_map())?;
        crate::trust::writable_flags(&cm, "spec.flags.configMapRef.name").ok()?;
        self.plan_rollback(&cm).ok()?;
        Some((self.build_snapshot(&cm, &[]), cm))
    }

    /// The Secret created beside the claim is the snapshot step's.
    pub(super) fn keep_early_snapshot(&mut self, secret: Secret, cm: ConfigMap) {
        self.snapshot = Some(secret);
        self.flags_seen = Some(cm);
        self.snapshot_early = true;
    }

    /// The claim was lost (the guard changed): the Secret created beside it goes, so a
    /// request that never runs leaves none behind. Best effort: a request that runs later
    /// finds one left by a crash here as its own (AlreadyExists) and checks what it holds.
    pub(super) async fn discard_early_snapshot(&mut self) {
        if !std::mem::take(&mut self.snapshot_early) {
            return;
        }
        self.flags_seen = None;
        let Some(secret) = self.snapshot.take() else {
            return;
        };
        let params = kube::api::DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: secret.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        if let Err(e) = self.secrets.delete(&secret.name_any(), &params).await {
            tracing::warn!(snapshot = %secret.name_any(), error = %e, "could not delete a snapshot taken beside a lost claim");
        }
    }

    pub(super) async fn snapshot(&mut self) -> Result<Flow, Error> {
        self.accept();
        if std::mem::take(&mut self.snapshot_early)
            && let (Some(secret), Some(cm)) = (self.snapshot.clone(), self.flags_seen.clone())
        {
            crate::fault::point("snapshot-created", &self.name()).await;
            self.snapshot_recorded(&cm, secret, 0);
            return Ok(Flow::Next);
        }
        // Judge the input before anything is written.
        let cm = match self.flags_for_snapshot().await? {
            Ok(cm) => cm,
            Err((reason, message)) => return self.fail(reason, message).await,
        };
        if self.request.spec.action == RequestAction::Restore {
            match self.restore_source().await? {
                Ok((source, _)) => {
                    self.status.restored_from = Some(LocalObjectReference {
                        name: source.name_any(),
                    })
                }
                Err(message) => return self.fail("SnapshotNotFound", message).await,
            }
        }
        let included = match self.included().await? {
            Ok(included) => included,
            Err((reason, message)) => return self.fail(reason, message).await,
        };
        let built = self.build_snapshot(&cm, &included);
        let secret = match self.create_snapshot(built).await? {
            Ok(secret) => secret,
            Err((reason, message)) => return self.fail(reason, message).await,
        };
        crate::fault::point("snapshot-created", &self.name()).await;
        self.snapshot_recorded(&cm, secret, included.len());
        Ok(Flow::Next)
    }

    /// The snapshot step done: recorded in (unsaved) status, the Secret and the ConfigMap
    /// copy kept for the flags write.
    fn snapshot_recorded(&mut self, cm: &ConfigMap, secret: Secret, included: usize) {
        let message = format!(
            "ConfigMap {:?} (resourceVersion {}) and {included} more object(s) saved in Secret {:?}",
            cm.name_any(),
            snapshot::captured_version(&secret).unwrap_or_default(),
            secret.name_any()
        );
        self.snapshot_taken(&secret, "SnapshotTaken", message);
        let draining = self.request.spec.action == RequestAction::Rollback
            && self.request.spec.mode == RequestMode::Graceful
            && !self.guard().spec.rollback.hooks.pre_rollback.is_empty();
        self.status.phase = Some(if draining {
            RequestPhase::Draining
        } else {
            RequestPhase::DisablingFlags
        });
        // Recorded in status with the next step (a hook call's record, or the flags
        // write's); until then the Secret itself is the record.
        self.snapshot = Some(secret);
        self.flags_seen = Some(cm.clone());
    }

    /// This request's snapshot Secret: as this run took it, else as the API server has it
    /// (a resumed request); None when it is gone.
    pub(super) async fn snapshot_for_write(&mut self) -> Result<Option<Secret>, Error> {
        if self.snapshot.is_none() {
            let name = snapshot::secret_name(&self.guard().name_any(), &self.name());
            self.snapshot =
                self.secrets.get_opt(&name).await?.filter(|s| {
                    s.annotations().get(crate::api::REQUEST_LABEL) == Some(&self.name())
                });
        }
        Ok(self.snapshot.clone())
    }

    /// The flags ConfigMap is no longer the state the snapshot holds (it changed before the
    /// write): the snapshot is taken again from `cm`, before anything is written. The old
    /// Secret (immutable) is deleted and a new one created under the same name; a restart
    /// between the two finds none and takes it then.
    pub(super) async fn retake_snapshot(
        &mut self,
        cm: &ConfigMap,
    ) -> Result<Result<(), Refusal>, Error> {
        let old = self.snapshot.take();
        let secret = match &old {
            Some(old) => snapshot::recapture(old, cm),
            None => match self.included().await? {
                Ok(included) => self.build_snapshot(cm, &included),
                Err(refusal) => return Ok(Err(refusal)),
            },
        };
        if let Some(old) = &old {
            let params = kube::api::DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    uid: old.uid(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match self.secrets.delete(&old.name_any(), &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        let secret = match self.create_snapshot(secret).await? {
            Ok(secret) => secret,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let message = format!(
            "ConfigMap {:?} changed before the flags write (resourceVersion {} → {}): saved again in Secret {:?}",
            cm.name_any(),
            old.as_ref()
                .and_then(snapshot::captured_version)
                .unwrap_or_else(|| "none".into()),
            snapshot::captured_version(&secret).unwrap_or_default(),
            secret.name_any()
        );
        self.snapshot_taken(&secret, "SnapshotRetaken", message);
        self.snapshot = Some(secret);
        Ok(Ok(()))
    }
}
