//! SLO judgement (pure): a request's measured durations against its guard's `spec.slo`.

use crate::api::guard::NotifyEvent;
use crate::api::guard::SloSpec;
use crate::api::request::{DeliveryState, Durations, NotificationRecord, SloOutcome};
use crate::api::schema::GoDuration;

/// One SLO target judged against a request's measured duration.
#[derive(Clone, Debug, PartialEq)]
pub struct SloVerdict<'a> {
    pub name: &'static str,
    pub took: Option<f64>,
    pub target: &'a GoDuration,
    /// None: not measured (yet).
    pub met: Option<bool>,
}

/// Each request-level target of `slo` against `durations` (seconds). `flagEffective` only
/// where it is measured (`propagation`: the guard has `spec.health.propagation`) or was.
pub fn judge<'a>(
    slo: &'a SloSpec,
    durations: &Durations,
    propagation: bool,
) -> Vec<SloVerdict<'a>> {
    let effective = (propagation || durations.flag_effective.is_some()).then_some((
        "flagEffective",
        durations.flag_effective,
        &slo.flag_effective,
    ));
    [
        Some(("flagDisable", durations.flag_disable, &slo.flag_disable)),
        effective,
        Some(("notification", durations.notification, &slo.notification)),
        Some((
            "healthVerification",
            durations.health_verification,
            &slo.health_verification,
        )),
        Some(("total", durations.total, &slo.total)),
    ]
    .into_iter()
    .flatten()
    .map(|(name, took, target)| SloVerdict {
        name,
        took,
        target,
        met: match (took, target.to_std()) {
            (Some(took), Ok(t)) => Some(took <= t.as_secs_f64()),
            _ => None,
        },
    })
    .collect()
}

/// A request's SLO outcome from its durations so far. A "started" notification still out
/// when its target has passed (`age`: the time since the request was created), or finally
/// failed, misses `notification` already.
pub fn outcome(
    slo: &SloSpec,
    durations: &Durations,
    notifications: &[NotificationRecord],
    age: std::time::Duration,
) -> SloOutcome {
    let mut missed: Vec<String> = judge(slo, durations, false)
        .into_iter()
        .filter(|v| v.met == Some(false))
        .map(|v| v.name.to_string())
        .collect();
    let started: Vec<_> = notifications
        .iter()
        .filter(|r| r.event == NotifyEvent::Started)
        .collect();
    let target = slo.notification.to_std().ok();
    let late = durations.notification.is_none()
        && !started.is_empty()
        && (started.iter().all(|r| r.state == DeliveryState::Failed)
            || target.is_some_and(|t| age > t));
    if late && !missed.iter().any(|m| m == "notification") {
        missed.push("notification".into());
    }
    SloOutcome {
        met: missed.is_empty(),
        missed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::guard::NotifierType;
    use std::time::Duration;

    fn started(state: DeliveryState) -> NotificationRecord {
        NotificationRecord {
            receiver: "ops".into(),
            type_: NotifierType::Webhook,
            event: NotifyEvent::Started,
            state,
            attempts: 1,
            time: None,
            message: String::new(),
        }
    }

    #[test]
    fn targets_are_met_or_missed_by_their_durations() {
        let slo = SloSpec::default();
        let fast = Durations {
            flag_disable: Some(0.05),
            flag_effective: None,
            notification: Some(0.2),
            health_verification: Some(3.0),
            total: Some(4.0),
        };
        assert_eq!(
            outcome(&slo, &fast, &[], Duration::from_secs(4)),
            SloOutcome {
                met: true,
                missed: vec![]
            }
        );
        let slow = Durations {
            flag_disable: Some(11.0),
            total: Some(301.0),
            ..fast
        };
        assert_eq!(
            outcome(&slo, &slow, &[], Duration::from_secs(301)).missed,
            ["flagDisable", "total"]
        );
        // Not measured is not missed.
        let verdicts = judge(&slo, &Durations::default(), true);
        assert!(verdicts.iter().all(|v| v.met.is_none()), "{verdicts:?}");
    }

    #[test]
    fn flag_effective_is_judged_beside_flag_disable_only_where_it_is_measured() {
        let slo = SloSpec::default();
        let names = |d: &Durations, propagation| {
            judge(&slo, d, propagation)
                .iter()
                .map(|v| v.name)
                .collect::<Vec<_>>()
        };
        let without = Durations {
            flag_disable: Some(0.05),
            ..Durations::default()
        };
        assert!(!names(&without, false).contains(&"flagEffective"));
        assert_eq!(names(&without, true)[..2], ["flagDisable", "flagEffective"]);
        let late = Durations {
            flag_effective: Some(12.0),
            ..without.clone()
        };
        assert_eq!(names(&late, false)[..2], ["flagDisable", "flagEffective"]);
        assert_eq!(
            outcome(&slo, &late, &[], Duration::from_secs(12)).missed,
            ["flagEffective"]
        );
        let quick = Durations {
            flag_effective: Some(4.0),
            ..without
        };
        assert!(outcome(&slo, &quick, &[], Duration::from_secs(4)).met);
    }

    #[test]
    fn a_started_notification_still_out_past_its_target_or_failed_misses_already() {
        let slo = SloSpec::default();
        let none = Durations::default();
        let sending = [started(DeliveryState::Sending)];
        assert!(outcome(&slo, &none, &sending, Duration::from_secs(5)).met);
        assert_eq!(
            outcome(&slo, &none, &sending, Duration::from_secs(11)).missed,
            ["notification"]
        );
        assert_eq!(
            outcome(
                &slo,
                &none,
                &[started(DeliveryState::Failed)],
                Duration::from_secs(1)
            )
            .missed,
            ["notification"]
        );
    }
}
