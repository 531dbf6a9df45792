//! kstatus conventions (sigs.k8s.io/cli-utils `kstatus`, read by Flux's health checks, kpt
//! and Argo CD's generic checks): the abnormal-true conditions `Reconciling` and `Stalled`,
//! with `observedGeneration`, decided from the phase alone — one pure function per kind.
//!
//! kstatus computes, in order: generation not observed → InProgress; `Reconciling=True` →
//! InProgress; `Stalled=True` → Failed; otherwise Current. So both conditions are always
//! written (`False` when they do not apply) and never both `True`.
//!
//! | kind | phase | Reconciling | Stalled | kstatus |
//! |---|---|---|---|---|
//! | guard | Monitoring, Breaching, RollingBack, RolledBack, Suspended | False | False | Current |
//! | guard | Degraded | True (`PrometheusUnreachable`) | False | InProgress |
//! | guard | Invalid | False | True (`InvalidSpec`) | Failed |
//! | request | Pending, Snapshotting, Draining, DisablingFlags, Verifying | True (the phase) | False | InProgress |
//! | request | Succeeded, Superseded | False | False | Current |
//! | request | Failed | False | True (`RollbackFailed`) | Failed |
//!
//! Before the operator's first status write, the CRDs' status default
//! (`{observedGeneration: 0}`, see [`crate::api::schema::unobserved_by_default`]) makes kstatus
//! read "generation not observed" — InProgress — instead of Current.
//!
//! A Degraded guard is InProgress, not Failed: Prometheus being unreachable is usually
//! transient, the operator retries every interval and recovers on its own, and no edit of the
//! guard is needed — a Flux health check waits (and times out if it lasts), rather than
//! failing a sync because a monitoring backend blinked.

use crate::api::guard::{GuardPhase, RolloutGuardStatus};
use crate::api::request::{RequestPhase, RollbackRequestStatus};
use crate::conditions::{self, FALSE, TRUE};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// What kstatus is to compute for an object whose generation the operator has observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Current,
    /// `Reconciling=True` with this reason and message.
    InProgress {
        reason: String,
        message: String,
    },
    /// `Stalled=True` with this reason and message.
    Failed {
        reason: String,
        message: String,
    },
}

/// A guard's verdict from its phase; `detail` is the `Ready` message (why it is invalid or
/// degraded). `None` (never assessed) is left to kstatus' own rule for objects without status.
pub fn guard_verdict(phase: Option<GuardPhase>, detail: &str) -> Verdict {
    match phase {
        Some(GuardPhase::Invalid) => Verdict::Failed {
            reason: "InvalidSpec".into(),
            message: or(detail, "the spec is invalid; fix it"),
        },
        Some(GuardPhase::Degraded) => Verdict::InProgress {
            reason: "PrometheusUnreachable".into(),
            message: format!(
                "{}; retried every interval",
                or(detail, "trigger queries are failing")
            ),
        },
        Some(
            GuardPhase::Monitoring
            | GuardPhase::Breaching
            | GuardPhase::RollingBack
            | GuardPhase::RolledBack
            | GuardPhase::Suspended,
        )
        | None => Verdict::Current,
    }
}

/// A request's verdict from its phase; `detail` is `status.message` (why it failed).
pub fn request_verdict(phase: Option<RequestPhase>, detail: &str) -> Verdict {
    let under_way = |phase: &str, message: &str| Verdict::InProgress {
        reason: phase.into(),
        message: message.into(),
    };
    match phase.unwrap_or_default() {
        RequestPhase::Pending => under_way(
            "Pending",
            "waiting for the guard's rollback slot (one request in flight per guard)",
        ),
        RequestPhase::Snapshotting => under_way("Snapshotting", "taking the snapshot"),
        RequestPhase::Draining => under_way("Draining", "calling the preRollback hooks"),
        RequestPhase::DisablingFlags => under_way("DisablingFlags", "writing the flags"),
        RequestPhase::Verifying => under_way("Verifying", "verifying health after the change"),
        RequestPhase::Succeeded | RequestPhase::Superseded => Verdict::Current,
        RequestPhase::Failed => Verdict::Failed {
            reason: "RollbackFailed".into(),
            message: or(detail, "the request failed"),
        },
    }
}

fn or(detail: &str, fallback: &str) -> String {
    if detail.is_empty() {
        fallback.into()
    } else {
        detail.into()
    }
}

/// Writes `Reconciling` and `Stalled` for `verdict`, both with `generation`.
pub fn apply(
    conditions: &mut Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    verdict: &Verdict,
    generation: Option<i64>,
    now: Time,
) {
    let (reconciling, stalled) = match verdict {
        Verdict::Current => (None, None),
        Verdict::InProgress { reason, message } => (Some((reason, message)), None),
        Verdict::Failed { reason, message } => (None, Some((reason, message))),
    };
    match reconciling {
        Some((reason, message)) => conditions::set(
            conditions,
            RECONCILING,
            TRUE,
            reason,
            message.clone(),
            generation,
            now.clone(),
        ),
        None => conditions::set(
            conditions,
            RECONCILING,
            FALSE,
            "Reconciled",
            "nothing is under way",
            generation,
            now.clone(),
        ),
    };
    match stalled {
        Some((reason, message)) => conditions::set(
            conditions,
            STALLED,
            TRUE,
            reason,
            message.clone(),
            generation,
            now,
        ),
        None => conditions::set(
            conditions,
            STALLED,
            FALSE,
            "NotStalled",
            "no error needs a change to go on",
            generation,
            now,
        ),
    };
}

/// The guard's `Reconciling` and `Stalled`, from its phase, for the generation the status is
/// written for (`observedGeneration`); at the end of its assessment.
pub fn guard(status: &mut RolloutGuardStatus, now: Time) {
    let generation = status.observed_generation;
    let detail = conditions::get(&status.conditions, "Ready")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    let verdict = guard_verdict(status.phase, &detail);
    apply(&mut status.conditions, &verdict, generation, now);
}

/// The request's `Reconciling` and `Stalled`, from its phase, for the generation the status is
/// written for (`observedGeneration`); before each status write.
pub fn request(status: &mut RollbackRequestStatus, now: Time) {
    let generation = status.observed_generation;
    let verdict = request_verdict(status.phase, status.message.as_deref().unwrap_or_default());
    apply(&mut status.conditions, &verdict, generation, now);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::status_of;

    fn t(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(secs).unwrap())
    }

    /// What kstatus reads from the two conditions (the generation being observed).
    fn computed(cs: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> &str {
        if status_of(cs, RECONCILING) == Some(TRUE) {
            "InProgress"
        } else if status_of(cs, STALLED) == Some(TRUE) {
            "Failed"
        } else {
            "Current"
        }
    }

    #[test]
    fn every_guard_phase() {
        use GuardPhase::*;
        for (phase, want) in [
            (Monitoring, "Current"),
            (Breaching, "Current"),
            (RollingBack, "Current"),
            (RolledBack, "Current"),
            (Suspended, "Current"),
            (Degraded, "InProgress"),
            (Invalid, "Failed"),
        ] {
            let mut status = RolloutGuardStatus {
                phase: Some(phase),
                ..Default::default()
            };
            conditions::set(
                &mut status.conditions,
                "Ready",
                FALSE,
                "InvalidSpec",
                "spec.triggers[0].query: bad",
                Some(4),
                t(1),
            );
            status.observed_generation = Some(4);
            guard(&mut status, t(2));
            assert_eq!(computed(&status.conditions), want, "{phase:?}");
            for type_ in [RECONCILING, STALLED] {
                let c = conditions::get(&status.conditions, type_).unwrap();
                assert_eq!(c.observed_generation, Some(4), "{phase:?} {type_}");
            }
            if phase == Invalid {
                let stalled = conditions::get(&status.conditions, STALLED).unwrap();
                assert_eq!(stalled.reason, "InvalidSpec");
                assert_eq!(stalled.message, "spec.triggers[0].query: bad");
            }
        }
    }

    #[test]
    fn every_request_phase() {
        use RequestPhase::*;
        for (phase, want) in [
            (Pending, "InProgress"),
            (Snapshotting, "InProgress"),
            (Draining, "InProgress"),
            (DisablingFlags, "InProgress"),
            (Verifying, "InProgress"),
            (Succeeded, "Current"),
            (Failed, "Failed"),
            (Superseded, "Current"),
        ] {
            let mut status = RollbackRequestStatus {
                phase: Some(phase),
                message: Some("guard \"g\" not found".into()),
                observed_generation: Some(1),
                ..Default::default()
            };
            request(&mut status, t(2));
            assert_eq!(computed(&status.conditions), want, "{phase:?}");
            for type_ in [RECONCILING, STALLED] {
                let c = conditions::get(&status.conditions, type_).unwrap();
                assert_eq!(c.observed_generation, Some(1), "{phase:?} {type_}");
            }
        }
    }

    #[test]
    fn moves_with_the_phase_and_the_generation() {
        let mut status = RollbackRequestStatus {
            observed_generation: Some(1),
            ..Default::default()
        };
        request(&mut status, t(1));
        assert_eq!(computed(&status.conditions), "InProgress");
        status.phase = Some(RequestPhase::Failed);
        request(&mut status, t(2));
        assert_eq!(computed(&status.conditions), "Failed");
        let reconciling = conditions::get(&status.conditions, RECONCILING).unwrap();
        assert_eq!(reconciling.last_transition_time, t(2));

        let mut guard_status = RolloutGuardStatus {
            phase: Some(GuardPhase::Invalid),
            observed_generation: Some(2),
            ..Default::default()
        };
        guard(&mut guard_status, t(1));
        guard_status.phase = Some(GuardPhase::Monitoring);
        guard_status.observed_generation = Some(3);
        guard(&mut guard_status, t(2));
        assert_eq!(computed(&guard_status.conditions), "Current");
        assert!(
            guard_status
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(3))
        );
    }
}
