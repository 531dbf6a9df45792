//! Fair evaluation: who may evaluate now. At most `global` guards evaluate at once (each
//! holds its answers in memory), and at most `per_source` of them for one source — a
//! namespace's guards that query one Prometheus address. A slow or hostile endpoint can
//! then hold only its own source's share of the slots (each for at most one query timeout,
//! itself at most the guard's interval), never every slot; the other guards' evaluations
//! go on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Fairness {
    global: Arc<Semaphore>,
    per_source: usize,
    sources: Mutex<HashMap<String, Weak<Semaphore>>>,
    /// Status writes under way: transitions, and value refreshes apart, so a transition
    /// never waits behind a minute's refreshes.
    transitions: Semaphore,
    refreshes: Semaphore,
}

/// Held while a guard evaluates; dropping it frees both slots.
pub struct Admission {
    _source: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
}

impl Fairness {
    pub fn new(global: usize, per_source: usize) -> Self {
        Self {
            global: Arc::new(Semaphore::new(global.max(1))),
            per_source: per_source.clamp(1, global.max(1)),
            sources: Mutex::default(),
            transitions: Semaphore::new(global.max(1)),
            refreshes: Semaphore::new(global.max(1)),
        }
    }

    /// Waits for a slot to write a guard's status. An evaluation gives its evaluation slots
    /// back before it writes: the write goes to the API server, not to the source, and ten
    /// thousand guards' writes at one boundary would otherwise keep the next guards from
    /// starting on time.
    pub async fn write(&self, write: super::writes::Write) -> tokio::sync::SemaphorePermit<'_> {
        let slots = match write {
            super::writes::Write::Transition => &self.transitions,
            super::writes::Write::Refresh => &self.refreshes,
        };
        slots.acquire().await.expect("never closed")
    }

    /// Waits for a slot of `source` (see [`source`]), then for one of all; a guard waiting
    /// for its source's slot holds none of the shared ones meanwhile.
    pub async fn admit(&self, source: &str) -> Admission {
        let limit = self.source_limit(source);
        let source = limit.acquire_owned().await.expect("never closed");
        let global = self
            .global
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        Admission {
            _source: source,
            _global: global,
        }
    }

    fn source_limit(&self, source: &str) -> Arc<Semaphore> {
        let mut sources = self.sources.lock().expect("fairness lock");
        if let Some(limit) = sources.get(source).and_then(Weak::upgrade) {
            return limit;
        }
        // Sources nobody waits on any more are forgotten (their semaphores are dropped).
        sources.retain(|_, weak| weak.strong_count() > 0);
        let limit = Arc::new(Semaphore::new(self.per_source));
        sources.insert(source.to_string(), Arc::downgrade(&limit));
        limit
    }
}

/// The source a guard's evaluation counts against: its namespace and Prometheus address.
pub fn source(namespace: &str, address: Option<&str>) -> String {
    format!("{namespace}\u{0}{}", address.unwrap_or_default())
}

/// How late an evaluation starts: None while on time. Evaluations start at their interval
/// boundary; one that waited longer than its interval for a slot is late, by that wait.
/// (Time the operator was not running does not count: a restart is not lateness.)
pub fn lateness(waited: Duration, interval: Duration) -> Option<Duration> {
    (waited > interval).then_some(waited)
}

/// How long after its interval boundary an evaluation starts: guards are due just past each
/// wall-clock multiple of `interval`, so an evaluation that arrived `arrived` after the Unix
/// epoch and then waited `waited` for a slot starts this long after the boundary it arrived
/// in. (A guard woken between boundaries, by a spec change or a pushed alert, counts from
/// the boundary before it.)
pub fn start_delay(arrived: Duration, waited: Duration, interval: Duration) -> Duration {
    let interval_ms = interval.as_millis().max(1);
    let into_interval = arrived.as_millis() % interval_ms;
    Duration::from_millis(u64::try_from(into_interval).unwrap_or(u64::MAX)) + waited
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_source_never_holds_more_than_its_share_of_the_slots() {
        let fairness = Arc::new(Fairness::new(4, 2));
        let hostile = source("tenant", Some("http://attacker"));
        let held = [
            fairness.admit(&hostile).await,
            fairness.admit(&hostile).await,
        ];
        // A third evaluation of the hostile source waits...
        let waiting = {
            let fairness = fairness.clone();
            let hostile = hostile.clone();
            tokio::spawn(async move { fairness.admit(&hostile).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        // ...while other sources still get the remaining slots at once.
        let other = tokio::time::timeout(
            Duration::from_secs(1),
            fairness.admit(&source("shop", Some("http://prometheus"))),
        )
        .await;
        assert!(other.is_ok(), "another source was kept waiting");
        drop(held);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("the hostile source's next evaluation runs once a slot is free")
            .unwrap();
    }

    #[tokio::test]
    async fn the_global_bound_still_holds_across_sources() {
        let fairness = Arc::new(Fairness::new(2, 2));
        let _a = fairness.admit(&source("a", None)).await;
        let _b = fairness.admit(&source("b", None)).await;
        let third = tokio::time::timeout(
            Duration::from_millis(100),
            fairness.admit(&source("c", None)),
        )
        .await;
        assert!(
            third.is_err(),
            "a third evaluation ran past the global bound"
        );
    }

    #[test]
    fn an_evaluation_starts_its_wait_plus_its_arrival_past_the_boundary() {
        let fifteen = Duration::from_secs(15);
        // Arrived 5 ms past a boundary (as scheduled), admitted at once.
        let arrived = Duration::from_millis(1_000 * 15 * 1_000 + 5);
        assert_eq!(
            start_delay(arrived, Duration::ZERO, fifteen),
            Duration::from_millis(5)
        );
        // The same arrival, two seconds waiting for a slot.
        assert_eq!(
            start_delay(arrived, Duration::from_secs(2), fifteen),
            Duration::from_millis(2_005)
        );
    }

    #[test]
    fn a_guard_is_late_when_it_waited_longer_than_its_interval_for_a_slot() {
        let fifteen = Duration::from_secs(15);
        assert_eq!(lateness(Duration::ZERO, fifteen), None);
        assert_eq!(lateness(fifteen, fifteen), None);
        assert_eq!(
            lateness(Duration::from_secs(16), fifteen),
            Some(Duration::from_secs(16))
        );
    }
}
