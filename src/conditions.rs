//! `metav1.Condition` bookkeeping shared by both kinds: a condition keeps its
//! `lastTransitionTime` while its status does not change, so `kubectl wait`, kstatus and
//! Argo CD see real transitions only.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const TRUE: &str = "True";
pub const FALSE: &str = "False";
pub const UNKNOWN: &str = "Unknown";

/// Sets (or adds) condition `type_`; returns whether anything but the time changed.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Time,
) -> bool {
    let message = message.into();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            let changed = c.status != status
                || c.reason != reason
                || c.message != message
                || c.observed_generation != generation;
            if c.status != status {
                c.last_transition_time = now;
            }
            c.status = status.to_string();
            c.reason = reason.to_string();
            c.message = message;
            c.observed_generation = generation;
            changed
        }
        None => {
            conditions.push(Condition {
                type_: type_.to_string(),
                status: status.to_string(),
                reason: reason.to_string(),
                message,
                observed_generation: generation,
                last_transition_time: now,
            });
            true
        }
    }
}

pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    get(conditions, type_).is_some_and(|c| c.status == TRUE)
}

pub fn status_of<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a str> {
    get(conditions, type_).map(|c| c.status.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let mut cs = Vec::new();
        assert!(set(
            &mut cs,
            "Ready",
            TRUE,
            "Monitoring",
            "ok",
            Some(1),
            t(10)
        ));
        assert!(!set(
            &mut cs,
            "Ready",
            TRUE,
            "Monitoring",
            "ok",
            Some(1),
            t(20)
        ));
        assert_eq!(cs[0].last_transition_time, t(10));
        assert!(set(
            &mut cs,
            "Ready",
            TRUE,
            "Monitoring",
            "new message",
            Some(1),
            t(30)
        ));
        assert_eq!(cs[0].last_transition_time, t(10));
        assert!(set(
            &mut cs,
            "Ready",
            FALSE,
            "Invalid",
            "bad",
            Some(2),
            t(40)
        ));
        assert_eq!(cs[0].last_transition_time, t(40));
        assert!(!is_true(&cs, "Ready") && status_of(&cs, "Ready") == Some(FALSE));
    }
}
