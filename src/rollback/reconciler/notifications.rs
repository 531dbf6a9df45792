//! A request's notifications: recorded as `Sending` before they go out, sent beside the
//! rollback, and their outcomes merged back into status as deliveries finish.

use super::*;

impl Run {
    /// Whether this request tells anyone: not a dry run, and past the guard lookup.
    pub(super) fn notifies(&self) -> bool {
        !self.request.spec.dry_run && self.guard.is_some()
    }

    /// Records "started" as Sending for its receivers; it goes out after the next save,
    /// beside the rest of the rollback.
    pub(super) fn announce_started(&mut self) {
        if !self.notifies() {
            return;
        }
        let receivers = self.guard().spec.notify.clone();
        let action = self.request.spec.action;
        let wanted: Vec<_> = notify::request_receivers(&receivers, NotifyEvent::Started, action)
            .into_iter()
            .map(|n| (n, NotifyEvent::Started))
            .collect();
        notify::record_sending(&mut self.status.notifications, &wanted);
        self.update_notified();
    }

    pub(super) fn announce_ending(&mut self, ending: Ending) {
        if !self.notifies() {
            return;
        }
        let receivers = self.guard().spec.notify.clone();
        let wanted = notify::ending_events(&receivers, ending, self.request.spec.action);
        notify::record_sending(&mut self.status.notifications, &wanted);
    }

    pub(super) fn update_notified(&mut self) {
        let receivers = self.guard().spec.notify.clone();
        let count =
            notify::request_receivers(&receivers, NotifyEvent::Started, self.request.spec.action)
                .len();
        let (status, reason, message) =
            notify::notified_condition(&self.status.notifications, count);
        self.set_condition(condition::NOTIFIED, status, reason, message);
    }

    pub(super) fn job(&self, receiver: &str, event: NotifyEvent) -> Job {
        Job {
            request: self.request.uid().unwrap_or_default(),
            receiver: receiver.to_string(),
            event,
        }
    }

    /// Hands every recorded-but-unsent notification to the outbox (once per process; a
    /// restart sends what was still Sending again, with the same delivery id).
    pub(super) fn send_notifications(&mut self) {
        // Called after every save: return before copying the request when nothing waits.
        if !self.notifies()
            || !self
                .status
                .notifications
                .iter()
                .any(|r| r.state == DeliveryState::Sending)
        {
            return;
        }
        let mut request = self.request.clone();
        request.status = Some(self.status.clone());
        for record in &self.status.notifications {
            if record.state != DeliveryState::Sending {
                continue;
            }
            let job = self.job(&record.receiver, record.event);
            if self.ctx.outbox.knows(&job) {
                continue;
            }
            let notifier = self
                .guard()
                .spec
                .notify
                .iter()
                .find(|n| n.name == record.receiver)
                .cloned();
            match notifier {
                Some(notifier) => {
                    let notice = notify::request_notice(&request, record.event, now());
                    self.ctx.outbox.send(&request, job, notifier, notice);
                }
                None => tracing::warn!(
                    request = %self.name(),
                    receiver = %record.receiver,
                    "receiver no longer in the guard's spec.notify; not sent"
                ),
            }
        }
    }

    /// Records the outcomes of finished deliveries. Woken by the outbox, possibly before
    /// the controller's cache holds this reconciler's last write: so it reads the request
    /// afresh and writes with its resourceVersion.
    pub(super) async fn settle_notifications(&mut self) -> Result<(), Error> {
        let uid = self.request.uid().unwrap_or_default();
        let finished = self.ctx.outbox.finished(&uid);
        if finished.is_empty() {
            return Ok(());
        }
        let pending = |status: &RollbackRequestStatus| {
            finished.iter().any(|(job, _, _)| {
                status.notifications.iter().any(|r| {
                    r.receiver == job.receiver
                        && r.event == job.event
                        && r.state == DeliveryState::Sending
                })
            })
        };
        let jobs: Vec<Job> = finished.iter().map(|(job, _, _)| job.clone()).collect();
        let mut fresh_read = false;
        for _ in 0..5 {
            if !pending(&self.status) {
                if fresh_read {
                    self.ctx.outbox.recorded(&jobs);
                    return Ok(());
                }
                // The cache may lag: look at the request itself before concluding.
                if finished.iter().all(|(_, _, recorded)| *recorded) {
                    return Ok(());
                }
            }
            let Some(fresh) = self.requests.get_opt(&self.name()).await? else {
                return Ok(());
            };
            if fresh.uid().as_deref() != Some(uid.as_str()) {
                return Ok(());
            }
            fresh_read = true;
            self.status = fresh.status.clone().unwrap_or_default();
            self.request = fresh;
            if !pending(&self.status) {
                self.ctx.outbox.recorded(&jobs);
                return Ok(());
            }
            let outcomes: Vec<_> = finished
                .iter()
                .map(|(job, delivery, _)| (job.receiver.as_str(), job.event, delivery))
                .collect();
            let notify::Merged {
                failures,
                first_started,
            } = notify::merge_deliveries(&mut self.status.notifications, &outcomes);
            let mut notification_took = None;
            if let Some(at) = first_started {
                let took = seconds_between(self.created(), at);
                let durations = self.status.durations.get_or_insert_with(Durations::default);
                if durations.notification.is_none() {
                    durations.notification = Some(took);
                    notification_took = Some(took);
                }
            }
            for (_, failure) in &failures {
                self.record("NotificationFailed", failure.clone());
            }
            if self.guard.is_some() {
                self.update_notified();
                if self.status.phase == Some(RequestPhase::Succeeded) {
                    self.judge_slo();
                }
            }
            // Through the one status write: a fresh read's resourceVersion as precondition.
            match self.save().await {
                Ok(()) => {
                    self.ctx.outbox.recorded(&jobs);
                    if let Some(took) = notification_took {
                        self.ctx.metrics.step("notification", took);
                    }
                    for (receiver, failure) in failures {
                        // Related to the receiver's Secret (or ConfigMap): one Event per
                        // receiver, not one series that keeps only the first note.
                        let receiver = self.guard.as_ref().and_then(|g| {
                            g.spec.notify.iter().find(|n| n.name == receiver).cloned()
                        });
                        let related =
                            receiver.map(|n| notify::receiver_reference(&n, &self.namespace));
                        let regarding = self.request.object_ref(&());
                        self.publish(
                            EventType::Warning,
                            "NotificationFailed",
                            failure,
                            regarding,
                            related,
                        );
                    }
                    return Ok(());
                }
                Err(Error::Kube(e)) if is_conflict(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
