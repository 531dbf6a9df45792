//! What the rollback path keeps ready before any rollback is asked for, so that an emergency
//! reads nothing from the API server before its first write (SPEC §2, "precomputed states"):
//! the flags ConfigMaps as a watch keeps them (the state a snapshot captures), and which
//! requests were created while this process watched (their watched copy is all there is to
//! know about them: nothing has written their status yet).
//!
//! Both are views that may lag; the rollback path never trusts them for more than a write
//! that carries a precondition (the guard's or the ConfigMap's resourceVersion) or an
//! AlreadyExists answer, and reads afresh whenever a cached view would decide anything else.

use crate::api::RollbackRequest;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The flags ConfigMaps (label `rollguard.dev/flags: "true"`, the only ones rollguard may
/// write) as a watch keeps them; cheap to clone.
#[derive(Clone)]
pub struct FlagsCache {
    store: Store<ConfigMap>,
    _watch: Arc<Watch>,
}

/// Stops the watch when the last handle goes.
struct Watch(Option<tokio::task::JoinHandle<()>>);

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

impl FlagsCache {
    /// Starts watching the opted-in ConfigMaps of `api` (one namespace, or all).
    pub fn start(api: Api<ConfigMap>) -> Self {
        use futures::StreamExt;
        let (store, writer) = reflector::store();
        let selector = format!("{}={}", crate::api::FLAGS_LABEL, crate::api::OPT_IN);
        let stream = watcher(api, watcher::Config::default().labels(&selector))
            .default_backoff()
            .reflect(writer)
            .touched_objects();
        let task = tokio::spawn(stream.for_each(|_| async {}));
        Self {
            store,
            _watch: Arc::new(Watch(Some(task))),
        }
    }

    /// A cache filled by the caller (unit tests).
    pub fn from_store(store: Store<ConfigMap>) -> Self {
        Self {
            store,
            _watch: Arc::new(Watch(None)),
        }
    }

    /// ConfigMap `name` of `namespace` as last watched, if it is opted in and watched.
    pub fn get(&self, namespace: &str, name: &str) -> Option<ConfigMap> {
        self.store
            .get(&ObjectRef::new(name).within(namespace))
            .map(|cm| (*cm).clone())
    }
}

/// Requests that appeared as new while this process watched, and have not been reconciled
/// since: their watched copy is the request as the API server has it (status unwritten), so
/// their first reconcile need not read them again. A request listed at start-up (a previous
/// process may have written it moments before, and a list may be served from the API
/// server's cache) or reconciled before is read afresh.
#[derive(Clone, Default)]
pub struct Arrivals(Arc<Mutex<HashMap<String, Arrival>>>);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arrival {
    /// Seen only as created, never reconciled.
    New,
    /// Listed, written, or reconciled once already: read afresh from now on.
    Known,
}

/// Nothing has written this request's status (no phase: every status write sets one).
fn untouched(r: &RollbackRequest) -> bool {
    r.status.as_ref().is_none_or(|s| s.phase.is_none())
}

impl Arrivals {
    /// Call on every event of the requests' watch. A request is New only when its first
    /// sighting is a live event of an untouched request; nothing makes it New again. True
    /// for that first sighting: the request has just arrived.
    pub fn apply(&self, event: &watcher::Event<RollbackRequest>) -> bool {
        let mut seen = self.0.lock().unwrap();
        match event {
            watcher::Event::Apply(r) => {
                let uid = r.uid().unwrap_or_default();
                let arrived = untouched(r) && !seen.contains_key(&uid);
                let first = if untouched(r) {
                    Arrival::New
                } else {
                    Arrival::Known
                };
                let entry = seen.entry(uid).or_insert(first);
                if !untouched(r) {
                    *entry = Arrival::Known;
                }
                return arrived;
            }
            watcher::Event::InitApply(r) => {
                seen.insert(r.uid().unwrap_or_default(), Arrival::Known);
            }
            watcher::Event::Delete(r) => {
                seen.remove(&r.uid().unwrap_or_default());
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
        false
    }

    /// Whether `request` (as the watch has it) may be used without reading it again: true
    /// at most once per request, at its first reconcile, and only while it is untouched.
    pub fn take(&self, request: &RollbackRequest) -> bool {
        let mut seen = self.0.lock().unwrap();
        let Some(arrival) = seen.get_mut(&request.uid().unwrap_or_default()) else {
            return false;
        };
        let new = *arrival == Arrival::New;
        *arrival = Arrival::Known;
        new && untouched(request)
    }
}

/// One reconcile of a request at a time, between the controller and the start a newly
/// arrived request gets straight from the watch (`controller::serve`): kube-runtime's
/// scheduler puts every reconcile through a timer queue whose deadlines round up to the
/// next millisecond, about 1 ms on the way to the flags (BENCHMARKS.md). The start takes
/// the request's turn as the watch delivers it, before the controller can; the
/// controller's own reconcile of it then waits for that turn and decides on the request as
/// the API server has it.
#[derive(Clone, Default)]
pub struct Turns(Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>);

/// A request's turn, held while one reconcile of it runs.
pub struct Turn {
    _held: tokio::sync::OwnedMutexGuard<()>,
    uid: String,
    turns: Turns,
}

impl Turns {
    fn of(&self, uid: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.0
            .lock()
            .unwrap()
            .entry(uid.to_string())
            .or_default()
            .clone()
    }

    /// The turn of a request just arrived, if nobody holds it.
    pub fn take_now(&self, uid: &str) -> Option<Turn> {
        let held = self.of(uid).try_lock_owned().ok()?;
        Some(Turn {
            _held: held,
            uid: uid.to_string(),
            turns: self.clone(),
        })
    }

    /// The request's turn, once whoever holds it is done.
    pub async fn take(&self, uid: &str) -> Turn {
        let held = self.of(uid).lock_owned().await;
        Turn {
            _held: held,
            uid: uid.to_string(),
            turns: self.clone(),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut turns = self.turns.0.lock().unwrap();
        // The map's reference and this turn's: nobody waits for it; forget it.
        if turns
            .get(&self.uid)
            .is_some_and(|m| Arc::strong_count(m) <= 2)
        {
            turns.remove(&self.uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uid: &str, phase: Option<&str>) -> RollbackRequest {
        let mut r = serde_json::json!({
            "apiVersion": "rollguard.dev/v1alpha1", "kind": "RollbackRequest",
            "metadata": {"name": uid, "namespace": "ns", "uid": uid},
            "spec": {"guardRef": {"name": "g"}, "requestedBy": "ops"}
        });
        if let Some(phase) = phase {
            r["status"] = serde_json::json!({ "phase": phase });
        }
        serde_json::from_value(r).unwrap()
    }

    /// Only a request created while watched, untouched, skips its first read — once.
    #[test]
    fn only_a_new_untouched_request_is_taken_from_the_watch_and_only_once() {
        let arrivals = Arrivals::default();
        let listed = request("listed", None);
        let new = request("new", None);
        let written = request("written", Some("Pending"));
        for event in [
            watcher::Event::Init,
            watcher::Event::InitApply(listed.clone()),
            watcher::Event::InitDone,
            watcher::Event::Apply(new.clone()),
            watcher::Event::Apply(written.clone()),
        ] {
            arrivals.apply(&event);
        }
        assert!(!arrivals.take(&listed), "listed at start-up: read afresh");
        assert!(!arrivals.take(&written), "status written: read afresh");
        assert!(arrivals.take(&new));
        assert!(!arrivals.take(&new), "a second reconcile reads afresh");

        // Written since it arrived (the watch shows the write): read afresh.
        let later = request("later", None);
        arrivals.apply(&watcher::Event::Apply(later.clone()));
        arrivals.apply(&watcher::Event::Apply(request("later", Some("Pending"))));
        assert!(!arrivals.take(&later));
        // Deleted before its reconcile: forgotten.
        let gone = request("gone", None);
        arrivals.apply(&watcher::Event::Apply(gone.clone()));
        arrivals.apply(&watcher::Event::Delete(gone.clone()));
        assert!(!arrivals.take(&gone));
        // Changed after its first reconcile (a label, say), still untouched: read afresh,
        // since this process may have written it meanwhile.
        arrivals.apply(&watcher::Event::Apply(new.clone()));
        assert!(!arrivals.take(&new));
        // Listed, then changed: read afresh.
        arrivals.apply(&watcher::Event::Apply(listed.clone()));
        assert!(!arrivals.take(&listed));
    }

    #[tokio::test]
    async fn a_request_taken_at_its_arrival_waits_the_controllers_turn() {
        let turns = Turns::default();
        let first = turns.take_now("u1").expect("free at arrival");
        assert!(turns.take_now("u1").is_none(), "held");
        let waiting = tokio::spawn({
            let turns = turns.clone();
            async move { turns.take("u1").await }
        });
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "the controller waits for the first turn"
        );
        drop(first);
        let second = waiting.await.unwrap();
        assert_eq!(turns.len(), 1);
        drop(second);
        assert_eq!(turns.len(), 0, "a turn nobody waits for is forgotten");
    }
}
