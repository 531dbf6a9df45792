//! The controller's cache of RollbackRequests, indexed by the guard they name, so that a
//! guard's evaluation, a request's place in its guard's queue and a guard change's wake-ups
//! look at that guard's requests only, not at every request of the cluster.

use crate::api::RollbackRequest;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

/// (namespace, guard) → names of its requests.
type Index = HashMap<(String, String), BTreeSet<String>>;

#[derive(Default)]
struct Names {
    live: Index,
    /// Filled during a (re)list, swapped in when it is done.
    relisting: Option<Index>,
}

fn key(r: &RollbackRequest) -> (String, String) {
    (
        r.namespace().unwrap_or_default(),
        r.spec.guard_ref.name.clone(),
    )
}

/// The requests cache with its index; cheap to clone.
#[derive(Clone)]
pub struct Requests {
    store: Store<RollbackRequest>,
    names: Arc<RwLock<Names>>,
}

impl Requests {
    pub fn new(store: Store<RollbackRequest>) -> Self {
        Self {
            store,
            names: Arc::default(),
        }
    }

    /// Keeps the index in step with the watch that fills the store (call it on every event
    /// of that watch, before or after the store sees it: lookups go through the store).
    pub fn apply(&self, event: &watcher::Event<RollbackRequest>) {
        let mut names = self.names.write().unwrap();
        match event {
            watcher::Event::Init => names.relisting = Some(Index::new()),
            watcher::Event::InitApply(r) => {
                let target = match names.relisting.as_mut() {
                    Some(relisting) => relisting,
                    None => &mut names.live,
                };
                target.entry(key(r)).or_default().insert(r.name_any());
            }
            watcher::Event::InitDone => {
                if let Some(relisted) = names.relisting.take() {
                    names.live = relisted;
                }
            }
            watcher::Event::Apply(r) => {
                names.live.entry(key(r)).or_default().insert(r.name_any());
            }
            watcher::Event::Delete(r) => {
                let k = key(r);
                if let Some(set) = names.live.get_mut(&k) {
                    set.remove(&r.name_any());
                    if set.is_empty() {
                        names.live.remove(&k);
                    }
                }
            }
        }
    }

    /// The requests of guard `guard` in `namespace`, as the cache has them.
    pub fn of_guard(&self, namespace: &str, guard: &str) -> Vec<Arc<RollbackRequest>> {
        let names = self.names.read().unwrap();
        let Some(set) = names.live.get(&(namespace.to_string(), guard.to_string())) else {
            return Vec::new();
        };
        set.iter()
            .filter_map(|name| self.store.get(&ObjectRef::new(name).within(namespace)))
            .filter(|r| r.spec.guard_ref.name == guard)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector;

    fn request(ns: &str, name: &str, guard: &str) -> RollbackRequest {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "rollguard.dev/v1alpha1", "kind": "RollbackRequest",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"guardRef": {"name": guard}, "requestedBy": "ops"}
        }))
        .unwrap()
    }

    fn names(v: Vec<Arc<RollbackRequest>>) -> Vec<String> {
        v.iter().map(|r| r.name_any()).collect()
    }

    #[test]
    fn a_guards_requests_are_found_through_the_index_and_follow_the_watch() {
        let (store, mut writer) = reflector::store();
        let requests = Requests::new(store);
        let events = [
            watcher::Event::Init,
            watcher::Event::InitApply(request("a", "r1", "g")),
            watcher::Event::InitApply(request("a", "r2", "other")),
            watcher::Event::InitApply(request("b", "r3", "g")),
            watcher::Event::InitDone,
            watcher::Event::Apply(request("a", "r4", "g")),
            watcher::Event::Delete(request("a", "r1", "g")),
        ];
        for event in &events {
            writer.apply_watcher_event(event);
            requests.apply(event);
        }
        assert_eq!(names(requests.of_guard("a", "g")), ["r4"]);
        assert_eq!(names(requests.of_guard("a", "other")), ["r2"]);
        assert_eq!(names(requests.of_guard("b", "g")), ["r3"]);
        assert!(requests.of_guard("c", "g").is_empty());
        // A relist replaces the index with what it lists.
        for event in [
            watcher::Event::Init,
            watcher::Event::InitApply(request("a", "r5", "g")),
            watcher::Event::InitDone,
        ] {
            writer.apply_watcher_event(&event);
            requests.apply(&event);
        }
        assert_eq!(names(requests.of_guard("a", "g")), ["r5"]);
        assert!(requests.of_guard("b", "g").is_empty());
    }
}
