//! The guard controller, run as several controllers over one cache. kube-runtime's runner
//! looks at every reconcile in flight each time one of them finishes; with ten thousand
//! guards due at one interval boundary (and waiting for their evaluation slots) that is
//! quadratic, and the last guards start evaluating a second late. Guards are split by a
//! stable hash of namespace and name: each shard's runner holds a sixteenth of them, and one
//! guard is always in one shard, so it is never evaluated twice at once.

use crate::api::RolloutGuard;
use futures::{Stream, StreamExt};
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// How many controllers share the guards.
pub const GUARD_SHARDS: usize = 16;

/// The shard of a guard (pure): a stable hash of its namespace and name.
pub fn shard_of(namespace: &str, name: &str, shards: usize) -> usize {
    let hash = crate::guard::writes::stable_hash(namespace, name);
    usize::try_from(hash % u64::try_from(shards.max(1)).unwrap_or(1)).unwrap_or_default()
}

/// One shard's inputs: the guards that changed, and the guards to evaluate now.
pub struct Shard {
    pub changed: UnboundedReceiver<RolloutGuard>,
    pub wake: UnboundedReceiver<ObjectRef<RolloutGuard>>,
}

/// Where the guards' changes and wake-ups are sent, each to its guard's shard.
#[derive(Clone)]
pub struct Router {
    changed: Vec<UnboundedSender<RolloutGuard>>,
    wake: Vec<UnboundedSender<ObjectRef<RolloutGuard>>>,
}

pub fn split(shards: usize) -> (Router, Vec<Shard>) {
    let (mut changed, mut wake, mut inputs) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..shards.max(1) {
        let (changed_tx, changed_rx) = unbounded_channel();
        let (wake_tx, wake_rx) = unbounded_channel();
        changed.push(changed_tx);
        wake.push(wake_tx);
        inputs.push(Shard {
            changed: changed_rx,
            wake: wake_rx,
        });
    }
    (Router { changed, wake }, inputs)
}

impl Router {
    fn index(&self, namespace: &str, name: &str) -> usize {
        shard_of(namespace, name, self.changed.len())
    }

    /// Sends each changed guard to its shard, until the watch ends.
    pub async fn changes(self, changes: impl Stream<Item = Result<RolloutGuard, watcher::Error>>) {
        let mut changes = std::pin::pin!(changes);
        while let Some(change) = changes.next().await {
            match change {
                Ok(guard) => {
                    let shard =
                        self.index(&guard.namespace().unwrap_or_default(), &guard.name_any());
                    // A shard is gone only when the operator stops.
                    let _ = self.changed[shard].send(guard);
                }
                Err(e) => tracing::warn!(error = %e, "guards' watch failed; retrying"),
            }
        }
    }

    /// Sends each guard to evaluate now to its shard, until the senders are gone.
    pub async fn wake_ups(self, wake_ups: impl Stream<Item = ObjectRef<RolloutGuard>>) {
        let mut wake_ups = std::pin::pin!(wake_ups);
        while let Some(guard) = wake_ups.next().await {
            let shard = self.index(guard.namespace.as_deref().unwrap_or_default(), &guard.name);
            let _ = self.wake[shard].send(guard);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guard_is_always_in_one_shard_and_a_fleet_spreads_over_all() {
        assert_eq!(
            shard_of("shop", "checkout", 16),
            shard_of("shop", "checkout", 16)
        );
        let mut per_shard = [0usize; GUARD_SHARDS];
        for g in 0..16_000 {
            per_shard[shard_of("shop", &format!("guard-{g}"), GUARD_SHARDS)] += 1;
        }
        // About a thousand each.
        assert!(
            per_shard.iter().all(|n| (800..1200).contains(n)),
            "{per_shard:?}"
        );
    }
}
