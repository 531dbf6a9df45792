//! Delivery records (pure): how finished deliveries settle a request's
//! `status.notifications`, and what becomes of a guard's `status.pendingNotices`.

use super::{channel_word, courier, event_word};
use crate::api::guard::{NotifyEvent, PendingNotice};
use crate::api::request::{DeliveryState, NotificationRecord};

/// Where a guard's recorded notice stands in this process: being delivered, delivered or
/// finally failed, or unknown (recorded by a process that stopped before it finished).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivering {
    InFlight,
    Finished,
    Unknown,
}

/// What becomes of a guard's recorded notices (pure): those whose delivery finished are
/// dropped (and returned to be forgotten), those in flight stay, and those this process
/// does not know — a restart came between recording and sending — stay and go out again.
/// Returns (kept, to send again, finished).
pub fn settle_pending(
    pending: Vec<PendingNotice>,
    state: impl Fn(&PendingNotice) -> Delivering,
) -> (Vec<PendingNotice>, Vec<PendingNotice>, Vec<PendingNotice>) {
    let (mut kept, mut again, mut finished) = (Vec::new(), Vec::new(), Vec::new());
    for notice in pending {
        match state(&notice) {
            Delivering::Finished => finished.push(notice),
            Delivering::InFlight => kept.push(notice),
            Delivering::Unknown => {
                again.push(notice.clone());
                kept.push(notice);
            }
        }
    }
    (kept, again, finished)
}

/// What the finished deliveries of a request changed in its records.
#[derive(Debug, Default, PartialEq)]
pub struct Merged {
    /// (receiver, one line for the timeline and the Warning Event) of each final failure.
    pub failures: Vec<(String, String)>,
    /// When the first "started" notification was delivered.
    pub first_started: Option<jiff::Timestamp>,
}

/// Merges finished deliveries — (receiver, moment, outcome) — into a request's
/// `status.notifications` (pure): a record still `Sending` becomes `Delivered` or `Failed`
/// with its attempts and time; a record already settled is left alone, so an outcome is
/// recorded once.
pub fn merge_deliveries(
    records: &mut [NotificationRecord],
    finished: &[(&str, NotifyEvent, &courier::Delivery)],
) -> Merged {
    let mut merged = Merged::default();
    for (receiver, event, delivery) in finished {
        let Some(record) = records
            .iter_mut()
            .find(|r| r.receiver == *receiver && r.event == *event)
        else {
            continue;
        };
        if record.state != DeliveryState::Sending {
            continue;
        }
        record.attempts = delivery.attempts;
        record.time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            delivery.finished,
        ));
        match &delivery.result {
            Ok(()) => {
                record.state = DeliveryState::Delivered;
                record.message.clear();
                if *event == NotifyEvent::Started {
                    merged.first_started = Some(
                        merged
                            .first_started
                            .map_or(delivery.finished, |f| f.min(delivery.finished)),
                    );
                }
            }
            Err(e) => {
                record.state = DeliveryState::Failed;
                record.message = e.clone();
                merged.failures.push((
                    receiver.to_string(),
                    format!(
                        "{} notification to {:?} ({}) failed after {} attempt(s): {e}",
                        event_word(*event),
                        receiver,
                        channel_word(record.type_),
                        delivery.attempts
                    ),
                ));
            }
        }
    }
    merged
}
