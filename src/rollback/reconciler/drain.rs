//! Steps 3 and 6, the *drain* and *resume* hooks: recorded before each call, called at least
//! once with one `Idempotency-Key`.

use super::*;

impl Run {
    pub(super) async fn call_hook(
        &mut self,
        stage: HookStage,
        index: usize,
    ) -> Result<Flow, Error> {
        let hooks = &self.guard().spec.rollback.hooks;
        let hook = match stage {
            HookStage::PreRollback => hooks.pre_rollback[index].clone(),
            HookStage::PostRollback => hooks.post_rollback[index].clone(),
        };
        // A call recorded as under way by an operator that then stopped is made again, with
        // the same Idempotency-Key: the receiver can tell a repeat from a new call.
        let again = self
            .status
            .hooks
            .iter()
            .position(|h| h.stage == stage && h.index as usize == index);
        let slot = match again {
            Some(slot) => {
                self.record(
                    &format!("{stage:?}Hook"),
                    format!(
                        "calling {} again: the operator stopped during the last call (same Idempotency-Key)",
                        hook.url
                    ),
                );
                slot
            }
            None => {
                self.status.hooks.push(HookCall {
                    stage,
                    index: index as u32,
                    url: hook.url.clone(),
                    outcome: HookOutcome::Calling,
                    message: String::new(),
                });
                self.status.hooks.len() - 1
            }
        };
        self.save().await?;
        crate::fault::point(
            &format!("{}-hook-recorded", hook_stage_word(stage)),
            &self.name(),
        )
        .await;

        let flags = self
            .status
            .flags_changed
            .iter()
            .flatten()
            .map(|c| c.name.clone())
            .collect::<Vec<_>>();
        let flags = if flags.is_empty() && stage == HookStage::PreRollback {
            flags::selected_flags(&self.guard().spec.flags, &self.selection())
                .map(|f| f.into_iter().map(String::from).collect())
                .unwrap_or_default()
        } else {
            flags
        };
        let name = self.name();
        let guard_name = self.guard().name_any();
        let payload = HookPayload {
            stage,
            namespace: &self.namespace,
            guard: &guard_name,
            request: &name,
            requested_by: &self.request.spec.requested_by,
            reason: &self.request.spec.reason,
            flags: &flags,
        };
        let key = format!(
            "{}-{stage:?}-{index}",
            self.request.uid().unwrap_or_default()
        );
        let result = hooks::call(&self.ctx.egress, &hook, &key, &payload).await;
        crate::fault::point(&format!("{}-hook-called", hook_stage_word(stage)), &name).await;

        let record = &mut self.status.hooks[slot];
        let (outcome, message) = match &result {
            Ok(()) => (
                HookOutcome::Succeeded,
                format!("POST {} succeeded", hook.url),
            ),
            Err(e) => (HookOutcome::Failed, e.clone()),
        };
        record.outcome = outcome;
        record.message = message.clone();
        self.record(&format!("{stage:?}Hook"), message.clone());
        // After the last drain hook the flags are written next: the phase says so.
        if stage == HookStage::PreRollback
            && index + 1 == self.guard().spec.rollback.hooks.pre_rollback.len()
        {
            self.status.phase = Some(RequestPhase::DisablingFlags);
        }
        self.save().await?;
        if result.is_err() {
            self.event(
                EventType::Warning,
                "HookFailed",
                format!("{message}; the rollback goes on"),
            );
        }
        Ok(Flow::Next)
    }
}
