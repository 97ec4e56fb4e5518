//! Long-poll fetches parked on a partition: the per-partition half of Kafka's fetch
//! purgatory (`DelayedOperationPurgatory` keyed by `TopicPartitionOperationKey`).
//!
//! A fetch that has to wait for `min_bytes` watches each partition it names, once however
//! often the request names it, and stops watching when it completes, times out or is
//! dropped (its connection closed): a [`Watch`] removes its entry when dropped. An append
//! (or a close or delete) wakes every fetch watching the partition, which re-reads and
//! either answers or waits again. So a partition holds one entry per fetch parked on it
//! right now, and idle partitions hold nothing once their fetches are answered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

/// The fetches parked on one partition.
#[derive(Default)]
pub struct Watchers {
    next_key: AtomicU64,
    parked: Mutex<HashMap<u64, Arc<Notify>>>,
}

/// One parked fetch's registration on one partition; dropping it unregisters.
pub struct Watch {
    watchers: Arc<Watchers>,
    key: u64,
}

impl Watchers {
    /// Registers `waiter` to be notified at every wake until the returned [`Watch`] is
    /// dropped. A wake that comes before the waiter awaits is kept (`Notify` stores one
    /// permit), so a fetch that registers, then reads, then waits misses no append.
    pub fn watch(self: &Arc<Self>, waiter: &Arc<Notify>) -> Watch {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(key, waiter.clone());
        Watch { watchers: self.clone(), key }
    }

    /// Wakes every fetch parked on the partition; they stay registered.
    pub fn wake_all(&self) {
        for waiter in self.lock().values() {
            waiter.notify_one();
        }
    }

    /// How many fetches are parked on the partition.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no fetch is parked on the partition.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Notify>>> {
        self.parked.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.watchers.lock().remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_is_removed_when_dropped_whether_woken_or_not() {
        let watchers = Arc::new(Watchers::default());
        for _ in 0..100_000 {
            let waiter = Arc::new(Notify::new());
            let a = watchers.watch(&waiter);
            let b = watchers.watch(&waiter);
            assert_eq!(watchers.len(), 2);
            drop((a, b));
        }
        assert!(watchers.is_empty());
        assert!(watchers.parked.lock().unwrap().capacity() < 64, "the map does not keep growing");
    }

    #[tokio::test]
    async fn a_wake_before_the_wait_is_not_lost() {
        let watchers = Arc::new(Watchers::default());
        let waiter = Arc::new(Notify::new());
        let _watch = watchers.watch(&waiter);
        watchers.wake_all();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter.notified())
            .await
            .expect("the stored wake is delivered");
        // Still registered: the next append wakes it again.
        watchers.wake_all();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter.notified()).await.expect("woken again");
    }
}
