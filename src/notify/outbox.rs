//! Deliveries run here, beside the rollback: the reconciler records a notification as
//! `Sending` in the request's status, hands it to the outbox and goes on with the flags; a
//! slow or dead receiver never delays them. When a delivery is over the outbox keeps its
//! outcome and wakes the request, whose reconciler (the only writer of request status)
//! records it. A guard's own moments (drift, triggerFiring) are sent the same way; their
//! final failure becomes a Warning Event on the guard.

use super::courier::{Courier, Delivery};
use super::{Delivering, Notice};
use crate::api::guard::{Notifier, NotifyEvent, PendingNotice, RolloutGuard};
use crate::api::request::RollbackRequest;
use crate::metrics::Metrics;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::ObjectRef;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

enum JobState {
    InFlight,
    /// Over; `recorded` once the reconciler has written it to status. Kept a while after
    /// that, so a status write from a stale view that turns the record back to `Sending`
    /// is repaired from here rather than sent again.
    Over {
        delivery: Delivery,
        recorded: Option<std::time::Instant>,
    },
}

/// How long an outcome is remembered after it was recorded.
const REMEMBER: std::time::Duration = std::time::Duration::from_secs(600);
/// How long an outcome nobody recorded is kept: its request (or guard) was deleted before
/// its reconciler could write it.
const UNRECORDED: std::time::Duration = std::time::Duration::from_secs(3600);

/// Whether the outbox may forget a job (pure): recorded long enough ago, or over and never
/// recorded for longer than [`UNRECORDED`] (its request is gone).
fn forgotten(state: &JobState, now: std::time::Instant, wall: jiff::Timestamp) -> bool {
    match state {
        JobState::InFlight => false,
        JobState::Over {
            recorded: Some(at), ..
        } => now.duration_since(*at) > REMEMBER,
        JobState::Over {
            recorded: None,
            delivery,
        } => wall.duration_since(delivery.finished).unsigned_abs() > UNRECORDED,
    }
}

/// One request's notification to one receiver for one moment.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Job {
    /// The request's uid.
    pub request: String,
    pub receiver: String,
    pub event: NotifyEvent,
}

pub struct Outbox {
    courier: Courier,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    jobs: Mutex<HashMap<Job, JobState>>,
    wake: mpsc::UnboundedSender<ObjectRef<RollbackRequest>>,
    /// Guard notices this process is delivering (false) or has delivered (true), by
    /// [`guard_key`]; forgotten once the guard's status no longer records them.
    guard_deliveries: Mutex<HashMap<String, (bool, std::time::Instant)>>,
    /// Per request and receiver, the end of the last delivery started: the next waits for
    /// it, so a receiver hears a request's moments in the order they happened ("started"
    /// before "completed", however fast the rollback).
    queues: Mutex<HashMap<(String, String), Queued>>,
}

/// A delivery's end, as the next one to the same receiver waits for it.
type Ended = futures::future::Shared<tokio::sync::oneshot::Receiver<()>>;

/// The last delivery started for a (request, receiver): its job, and its end.
struct Queued {
    job: Job,
    ended: Ended,
}

/// A guard notice's key in the outbox: namespace, guard, receiver and delivery id.
fn guard_key(guard: &RolloutGuard, notice: &PendingNotice) -> String {
    format!(
        "{}/{}/{}/{}",
        guard.meta().namespace.as_deref().unwrap_or_default(),
        guard.meta().name.as_deref().unwrap_or_default(),
        notice.receiver,
        notice.id
    )
}

impl Outbox {
    /// The outbox and the stream of requests to reconcile because a delivery is over.
    pub fn new(
        courier: Courier,
        recorder: Recorder,
        metrics: Arc<Metrics>,
    ) -> (
        Arc<Self>,
        mpsc::UnboundedReceiver<ObjectRef<RollbackRequest>>,
    ) {
        let (wake, woken) = mpsc::unbounded_channel();
        let outbox = Arc::new(Self {
            courier,
            recorder,
            metrics,
            jobs: Mutex::new(HashMap::new()),
            wake,
            guard_deliveries: Mutex::new(HashMap::new()),
            queues: Mutex::new(HashMap::new()),
        });
        (outbox, woken)
    }

    /// Starts delivering a request's notification, unless this process already is (or
    /// did and its outcome is not recorded yet).
    pub fn send(
        self: &Arc<Self>,
        request: &RollbackRequest,
        job: Job,
        notifier: Notifier,
        notice: Notice,
    ) {
        {
            let mut jobs = self.jobs.lock().expect("outbox lock");
            if jobs.contains_key(&job) {
                return;
            }
            jobs.insert(job.clone(), JobState::InFlight);
        }
        let namespace = request.meta().namespace.clone().unwrap_or_default();
        let reference = ObjectRef::from_obj(request);
        let outbox = self.clone();
        let (end, ended) = tokio::sync::oneshot::channel::<()>();
        let key = (job.request.clone(), job.receiver.clone());
        let before = self.queues.lock().expect("outbox lock").insert(
            key.clone(),
            Queued {
                job: job.clone(),
                ended: futures::FutureExt::shared(ended),
            },
        );
        tokio::spawn(async move {
            if let Some(before) = before {
                // Ended or dropped: either way, its turn is over.
                let _ = before.ended.await;
            }
            let delivery = outbox.courier.deliver(&namespace, &notifier, &notice).await;
            drop(end);
            {
                let mut queues = outbox.queues.lock().expect("outbox lock");
                if queues.get(&key).is_some_and(|q| q.job == job) {
                    queues.remove(&key);
                }
            }
            outbox.count(&notifier, &delivery);
            outbox.jobs.lock().expect("outbox lock").insert(
                job,
                JobState::Over {
                    delivery,
                    recorded: None,
                },
            );
            // The controller has stopped when nobody listens; the outcome is then lost
            // with the process and the record, still `Sending`, is sent again on restart.
            let _ = outbox.wake.send(reference);
        });
    }

    /// Finished deliveries of a request: (job, outcome, already recorded).
    pub fn finished(&self, request_uid: &str) -> Vec<(Job, Delivery, bool)> {
        self.jobs
            .lock()
            .expect("outbox lock")
            .iter()
            .filter(|(job, _)| job.request == request_uid)
            .filter_map(|(job, state)| match state {
                JobState::Over { delivery, recorded } => {
                    Some((job.clone(), delivery.clone(), recorded.is_some()))
                }
                JobState::InFlight => None,
            })
            .collect()
    }

    /// Whether this process is delivering (or has delivered, unrecorded) the job.
    pub fn knows(&self, job: &Job) -> bool {
        self.jobs.lock().expect("outbox lock").contains_key(job)
    }

    /// The reconciler has recorded these outcomes in status.
    pub fn recorded(&self, jobs: &[Job]) {
        let now = std::time::Instant::now();
        let mut all = self.jobs.lock().expect("outbox lock");
        for job in jobs {
            if let Some(JobState::Over { recorded, .. }) = all.get_mut(job) {
                recorded.get_or_insert(now);
            }
        }
        all.retain(|_, state| !forgotten(state, now, jiff::Timestamp::now()));
        drop(all);
        // Guard notices whose guard's status no longer asks about them (a deleted guard).
        self.guard_deliveries
            .lock()
            .unwrap()
            .retain(|_, (finished, at)| !(*finished && now.duration_since(*at) > UNRECORDED));
    }

    /// Where a guard's recorded notice stands in this process.
    pub fn guard_delivery(&self, guard: &RolloutGuard, notice: &PendingNotice) -> Delivering {
        match self
            .guard_deliveries
            .lock()
            .unwrap()
            .get(&guard_key(guard, notice))
        {
            Some((false, _)) => Delivering::InFlight,
            Some((true, _)) => Delivering::Finished,
            None => Delivering::Unknown,
        }
    }

    /// Drops what this process remembers of a guard notice its status no longer records.
    pub fn forget_guard_delivery(&self, guard: &RolloutGuard, notice: &PendingNotice) {
        self.guard_deliveries
            .lock()
            .unwrap()
            .remove(&guard_key(guard, notice));
    }

    /// Sends a guard's recorded moment (drift, triggerFiring) to one receiver; a final
    /// failure becomes a `NotificationFailed` Warning Event on the guard. The guard's next
    /// evaluation sees it finished and drops it from status.
    pub fn send_for_guard(
        self: &Arc<Self>,
        guard: &RolloutGuard,
        notifier: Notifier,
        pending: &PendingNotice,
    ) {
        let key = guard_key(guard, pending);
        self.guard_deliveries
            .lock()
            .unwrap()
            .insert(key.clone(), (false, std::time::Instant::now()));
        let notice = super::pending_guard_notice(guard, pending);
        let namespace = guard.meta().namespace.clone().unwrap_or_default();
        let reference = guard.object_ref(&());
        let outbox = self.clone();
        tokio::spawn(async move {
            let delivery = outbox.courier.deliver(&namespace, &notifier, &notice).await;
            outbox
                .guard_deliveries
                .lock()
                .unwrap()
                .insert(key, (true, std::time::Instant::now()));
            outbox.count(&notifier, &delivery);
            if let Err(message) = &delivery.result {
                let event = Event {
                    type_: EventType::Warning,
                    reason: "NotificationFailed".into(),
                    note: Some(
                        format!(
                            "{} notification to {:?} failed after {} attempt(s): {message}",
                            super::event_word(notice.event),
                            notifier.name,
                            delivery.attempts
                        )
                        .chars()
                        .take(1000)
                        .collect(),
                    ),
                    action: "Notify".into(),
                    secondary: Some(super::receiver_reference(&notifier, &namespace)),
                };
                if let Err(e) = outbox.recorder.publish(&event, &reference).await {
                    tracing::warn!(error = %e, "could not publish Event");
                }
            }
        });
    }

    fn count(&self, notifier: &Notifier, delivery: &Delivery) {
        self.metrics
            .notifications
            .get_or_create(&crate::metrics::NotificationLabels {
                channel: super::channel_word(notifier.type_).into(),
                outcome: if delivery.result.is_ok() {
                    "delivered"
                } else {
                    "failed"
                }
                .into(),
            })
            .inc();
        match &delivery.result {
            Ok(()) => tracing::info!(
                receiver = %notifier.name,
                attempts = delivery.attempts,
                "notification delivered"
            ),
            Err(e) => tracing::warn!(
                receiver = %notifier.name,
                attempts = delivery.attempts,
                error = %e,
                "notification failed"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn over(recorded: Option<Instant>, finished: jiff::Timestamp) -> JobState {
        JobState::Over {
            delivery: Delivery {
                attempts: 1,
                result: Ok(()),
                finished,
            },
            recorded,
        }
    }

    #[test]
    fn outcomes_are_forgotten_once_recorded_long_enough_or_never_recorded_for_an_hour() {
        let now = Instant::now() + Duration::from_secs(7200);
        let wall = jiff::Timestamp::now();
        let hours_ago = |h: i64| wall - jiff::SignedDuration::from_hours(h);
        assert!(!forgotten(&JobState::InFlight, now, wall));
        assert!(!forgotten(&over(Some(now), wall), now, wall));
        assert!(forgotten(
            &over(Some(now - Duration::from_secs(601)), wall),
            now,
            wall
        ));
        // Its request was deleted before the outcome could be recorded.
        assert!(!forgotten(&over(None, hours_ago(0)), now, wall));
        assert!(forgotten(&over(None, hours_ago(2)), now, wall));
    }
}
