//! Which finished RollbackRequests of a guard have outlived `spec.rollback.history` (pure).
//! Incident records are valuable: a request goes only when it is neither among the newest
//! `keep` finished ones nor younger than `keepFor`, and never while it is in flight or is the
//! guard's last rollback or last restore (a restore's default source).

use std::collections::BTreeSet;
use std::time::Duration;

/// One request of the guard, as the history judges it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub created: Option<jiff::Timestamp>,
    /// Succeeded, Failed or Superseded.
    pub finished: bool,
}

/// Names of the requests to delete, oldest first.
pub fn expired(
    mut records: Vec<Record>,
    keep: usize,
    keep_for: Duration,
    now: jiff::Timestamp,
    protected: &BTreeSet<&str>,
) -> Vec<String> {
    records.retain(|r| r.finished);
    // Newest first; names break ties so the choice is stable.
    records.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.name.cmp(&a.name)));
    let old = |r: &Record| {
        r.created
            .is_some_and(|t| now.duration_since(t).unsigned_abs() >= keep_for)
    };
    let mut out: Vec<String> = records
        .into_iter()
        .skip(keep)
        .filter(|r| old(r) && !protected.contains(r.name.as_str()))
        .map(|r| r.name)
        .collect();
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 100 * 86_400;

    fn record(name: &str, days_ago: i64, finished: bool) -> Record {
        Record {
            name: name.into(),
            created: Some(jiff::Timestamp::from_second(NOW - days_ago * 86_400).unwrap()),
            finished,
        }
    }

    fn now() -> jiff::Timestamp {
        jiff::Timestamp::from_second(NOW).unwrap()
    }

    const DAYS_30: Duration = Duration::from_secs(30 * 86_400);

    #[test]
    fn only_requests_past_both_the_count_and_the_age_go_oldest_first() {
        let records = vec![
            record("new", 1, true),
            record("month-old", 31, true),
            record("older", 40, true),
            record("oldest", 50, true),
            record("recent", 5, true),
        ];
        // Newest two kept by number; of the rest, those 30 days or older go.
        assert_eq!(
            expired(records.clone(), 2, DAYS_30, now(), &BTreeSet::new()),
            ["oldest", "older", "month-old"]
        );
        // Kept by number when there are few.
        assert!(expired(records.clone(), 5, DAYS_30, now(), &BTreeSet::new()).is_empty());
        // Kept by age when they are young.
        let young: Vec<_> = (0..10).map(|i| record(&format!("r{i}"), i, true)).collect();
        assert!(expired(young, 2, DAYS_30, now(), &BTreeSet::new()).is_empty());
    }

    #[test]
    fn requests_in_flight_and_the_guards_last_rollback_and_restore_are_never_deleted() {
        let records = vec![
            record("a", 1, true),
            record("pending", 90, false),
            record("last-rollback", 80, true),
            record("last-restore", 70, true),
            record("gone", 60, true),
        ];
        let protected = BTreeSet::from(["last-rollback", "last-restore"]);
        assert_eq!(expired(records, 1, DAYS_30, now(), &protected), ["gone"]);
    }

    #[test]
    fn zero_keep_for_keeps_by_number_only() {
        let records: Vec<_> = (0..5).map(|i| record(&format!("r{i}"), 0, true)).collect();
        assert_eq!(
            expired(records, 3, Duration::ZERO, now(), &BTreeSet::new()),
            ["r0", "r1"]
        );
    }
}
