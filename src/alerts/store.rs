//! Pushed alerts in memory, by fingerprint. An alert is firing from the post that says so
//! until a post says it resolved, its `endsAt` passes, or Alertmanager has not sent it again
//! for `resend_window` (a lost "resolved" post must not hold a trigger for ever: Alertmanager
//! repeats a group's firing alerts every `repeat_interval`).
//!
//! Nothing here is persisted: after a start the store is empty until Alertmanager sends
//! again, and [`super::pushed_outcome`] keeps a trigger that was breaching from reading
//! that as "resolved" in the meantime.

use super::Alert;
use super::webhook::Pushed;
use jiff::Timestamp;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
struct Held {
    alert: Alert,
    /// false: its resolution, kept for `resend_window` so a trigger knows it resolved.
    firing: bool,
    namespace: String,
    ends_at: Option<Timestamp>,
    seen: Timestamp,
}

pub struct Store {
    alerts: Mutex<HashMap<String, Held>>,
    started: Instant,
    resend_window: Duration,
}

impl Store {
    pub fn new(resend_window: Duration) -> Self {
        Self {
            alerts: Mutex::default(),
            started: Instant::now(),
            resend_window,
        }
    }

    pub fn resend_window(&self) -> Duration {
        self.resend_window
    }

    /// How long this store has been receiving (since the operator started).
    pub fn receiving_for(&self) -> Duration {
        self.started.elapsed()
    }

    /// Takes one routed alert of a post (`namespace`: its `namespace` label).
    pub fn apply(&self, pushed: &Pushed, namespace: &str, now: Timestamp) {
        let mut alerts = self.alerts.lock().expect("alert store lock");
        alerts.insert(
            pushed.alert.fingerprint.clone(),
            Held {
                alert: pushed.alert.clone(),
                firing: pushed.firing,
                namespace: namespace.to_string(),
                ends_at: pushed.ends_at.filter(|_| pushed.firing),
                seen: now,
            },
        );
        let window = self.resend_window;
        alerts.retain(|_, held| live(held, now, window));
    }

    /// The alerts firing in `namespace` at `now`.
    pub fn firing(&self, namespace: &str, now: Timestamp) -> Vec<Alert> {
        self.held(namespace, now, true)
    }

    /// The alerts of `namespace` whose resolution arrived within the resend window.
    pub fn resolved(&self, namespace: &str, now: Timestamp) -> Vec<Alert> {
        self.held(namespace, now, false)
    }

    fn held(&self, namespace: &str, now: Timestamp, firing: bool) -> Vec<Alert> {
        let alerts = self.alerts.lock().expect("alert store lock");
        alerts
            .values()
            .filter(|held| held.firing == firing && held.namespace == namespace)
            .filter(|held| live(held, now, self.resend_window))
            .map(|held| held.alert.clone())
            .collect()
    }
}

fn live(held: &Held, now: Timestamp, resend_window: Duration) -> bool {
    let ended = held.ends_at.is_some_and(|end| end <= now);
    let unrepeated = now.duration_since(held.seen).unsigned_abs() > resend_window;
    !ended && !unrepeated
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn pushed(fingerprint: &str, firing: bool, ends_at: Option<&str>) -> Pushed {
        Pushed {
            alert: Alert {
                labels: BTreeMap::from([("alertname".into(), "HighErrorRate".into())]),
                fingerprint: fingerprint.into(),
                starts_at: "2026-12-07T12:00:00Z".into(),
                generator_url: String::new(),
            },
            firing,
            ends_at: ends_at.map(|t| t.parse().unwrap()),
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_796_644_800 + seconds).unwrap()
    }

    #[test]
    fn an_alert_fires_until_resolved_in_its_namespace_only() {
        let store = Store::new(Duration::from_secs(600));
        store.apply(&pushed("a", true, None), "shop", at(0));
        assert_eq!(store.firing("shop", at(1)).len(), 1);
        assert!(store.firing("other", at(1)).is_empty());
        store.apply(&pushed("a", false, None), "shop", at(2));
        assert!(store.firing("shop", at(3)).is_empty());
        assert_eq!(store.resolved("shop", at(3)).len(), 1);
        assert!(
            store.resolved("shop", at(603)).is_empty(),
            "kept for the window only"
        );
    }

    #[test]
    fn an_alert_past_its_end_or_not_sent_again_within_the_window_is_not_firing() {
        let store = Store::new(Duration::from_secs(600));
        store.apply(
            &pushed("ends", true, Some("2026-12-07T12:01:00Z")),
            "shop",
            at(0),
        );
        assert_eq!(store.firing("shop", at(59)).len(), 1);
        assert!(store.firing("shop", at(60)).is_empty());
        store.apply(&pushed("stale", true, None), "shop", at(0));
        assert_eq!(store.firing("shop", at(600)).len(), 1);
        assert!(store.firing("shop", at(601)).is_empty());
        // Sent again: the window starts over.
        store.apply(&pushed("stale", true, None), "shop", at(500));
        assert_eq!(store.firing("shop", at(1000)).len(), 1);
    }
}
