//! Identical reads of guards evaluated in the same interval share one request: the first
//! caller of a bucket (wall-clock time divided by the interval) runs it, the others await
//! its result. Prometheus queries and Alertmanager reads both go through it.

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A read under way or done, with the bucket it belongs to.
type Bucketed<T> = (u128, Shared<BoxFuture<'static, T>>);
/// Reads by (key, interval in ms).
type Reads<K, T> = HashMap<(K, u128), Bucketed<T>>;

/// Reads keyed by `K` (what makes two reads identical) and the interval, shared per bucket.
pub struct PerInterval<K, T: Clone> {
    inner: Arc<Mutex<Reads<K, T>>>,
}

impl<K, T: Clone> Clone for PerInterval<K, T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<K, T: Clone> Default for PerInterval<K, T> {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
        }
    }
}

impl<K, T> PerInterval<K, T>
where
    K: Hash + Eq,
    T: Clone + Send + Sync + 'static,
{
    /// The result of `read` for `key` in the current `interval` bucket: `read` runs at most
    /// once per bucket (it is dropped unrun when another caller ran it already).
    pub async fn read(
        &self,
        key: K,
        interval: Duration,
        read: impl Future<Output = T> + Send + 'static,
    ) -> T {
        let interval_ms = interval.as_millis().max(1);
        let bucket = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
            / interval_ms;
        let key = (key, interval_ms);
        let shared = {
            let mut map = self.inner.lock().expect("shared reads lock");
            match map.get(&key) {
                Some((b, shared)) if *b == bucket => shared.clone(),
                _ => {
                    let fut = read.boxed().shared();
                    map.retain(|_, (b, _)| *b + 1 >= bucket);
                    map.insert(key, (bucket, fut.clone()));
                    fut
                }
            }
        };
        shared.await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn identical_reads_in_one_bucket_run_once_and_other_keys_run_their_own() {
        let reads = PerInterval::<&str, usize>::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let run = |runs: Arc<AtomicUsize>| async move { runs.fetch_add(1, Ordering::SeqCst) + 1 };
        // A bucket of ~136 years: both reads fall in the same one.
        let long = Duration::from_secs(u32::MAX.into());
        assert_eq!(reads.read("a", long, run(runs.clone())).await, 1);
        assert_eq!(reads.read("a", long, run(runs.clone())).await, 1);
        assert_eq!(reads.read("b", long, run(runs.clone())).await, 2);
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        // A 1ms interval: each read is in a new bucket after a pause.
        let a = reads
            .read("c", Duration::from_millis(1), run(runs.clone()))
            .await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let b = reads
            .read("c", Duration::from_millis(1), run(runs.clone()))
            .await;
        assert_ne!(a, b);
    }
}
