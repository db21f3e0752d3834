//! Backpressure as a value: a version's slots are permits, one per request a replica serves at once.
//! A request takes a free slot at once, or waits for one at most `maxQueueWaitMs` and then gets a 503
//! (`Retry-After`). Requests waiting are counted: the autoscaler counts them as busy.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, SemaphorePermit};

/// How long the first request waits for a replica when a version has scaled to zero.
pub const COLD_START_WAIT: Duration = Duration::from_secs(60);

/// The slots of one version and the requests waiting for them.
pub(crate) struct Queue {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    cold_start: Notify,
    max_wait: Duration,
}

impl Queue {
    pub(crate) fn new(max_wait: Duration) -> Self {
        Queue {
            permits: Arc::new(Semaphore::new(0)),
            waiting: AtomicUsize::new(0),
            cold_start: Notify::new(),
            max_wait,
        }
    }

    /// Slots of a replica that came into service.
    pub(crate) fn add_slots(&self, n: u32) {
        self.permits.add_permits(n as usize);
    }

    /// Takes `n` free slots out of service for good (a replica about to be removed), waiting up to
    /// `within` for them; false if they did not come free.
    pub(crate) async fn retire_slots(&self, n: u32, within: Duration) -> bool {
        match tokio::time::timeout(within, self.permits.clone().acquire_many_owned(n)).await {
            Ok(Ok(permit)) => {
                permit.forget();
                true
            }
            _ => false,
        }
    }

    /// Whether a slot is free right now (a call would start at once).
    pub(crate) fn has_free_slot(&self) -> bool {
        self.permits.available_permits() > 0
    }

    /// Requests waiting for a slot now.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Resolves when a request waits and the version has no replica at all.
    pub(crate) async fn cold_start_wanted(&self) {
        self.cold_start.notified().await
    }

    /// A slot that is free right now: no timer, no clock, no shared counter.
    pub(crate) fn try_acquire(&self) -> Option<SemaphorePermit<'_>> {
        self.permits.try_acquire().ok()
    }

    /// Waits for a slot: up to the queue wait, or up to [`COLD_START_WAIT`] when the version has no
    /// replica (`cold`; the scaler is woken first). On timeout, returns how long it waited.
    pub(crate) async fn acquire(&self, cold: bool) -> Result<SemaphorePermit<'_>, Duration> {
        let _waiting = Waiting::enter(&self.waiting);
        let wait = if cold {
            self.cold_start.notify_one();
            self.max_wait.max(COLD_START_WAIT)
        } else {
            self.max_wait
        };
        match tokio::time::timeout(wait, self.permits.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(wait),
        }
    }

    /// Moves a held slot onto another thread: it is given back when the [`Slot`] drops, so after a 504
    /// the replica stays busy until the call really ends.
    pub(crate) fn detach(&self, permit: SemaphorePermit<'_>) -> Slot {
        permit.forget();
        Slot(self.permits.clone())
    }
}

/// A slot held by a call on the blocking pool.
pub(crate) struct Slot(Arc<Semaphore>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.add_permits(1);
    }
}

/// Counts a request waiting for a slot while it waits (also when its client leaves mid-wait).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_answers_after_the_wait() {
        let q = Queue::new(Duration::from_millis(20));
        q.add_slots(1);
        let held = q.try_acquire().expect("one free slot");
        assert!(q.try_acquire().is_none());
        assert_eq!(q.acquire(false).await.err(), Some(Duration::from_millis(20)));
        assert_eq!(q.waiting(), 0, "a request that gave up is no longer waiting");
        drop(held);
        assert!(q.acquire(false).await.is_ok());
    }

    #[tokio::test]
    async fn retired_slots_never_come_back() {
        let q = Queue::new(Duration::from_millis(10));
        q.add_slots(2);
        assert!(q.retire_slots(1, Duration::from_millis(10)).await);
        let one = q.try_acquire();
        assert!(one.is_some() && q.try_acquire().is_none());
    }
}
