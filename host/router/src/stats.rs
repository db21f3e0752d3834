//! What a version's requests did recently: latency and failures in a lock-free ring, summarised over a
//! window for automatic rollback and `plinth endpoint show`.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Outcomes kept per version.
const OUTCOMES_KEPT: usize = 20_000;

/// Recent outcomes of a version: latency and whether the host or model failed (5xx). A ring of slots
/// written without locks: two requests ending at once never wait for each other.
pub struct Stats {
    epoch: Instant,
    slots: Box<[Outcome]>,
    requests: AtomicU64,
    failures: AtomicU64,
    /// Calls the version refused as bad input (4xx): for a mirror, requests it could not score.
    rejected: AtomicU64,
}

/// One outcome: when it ended (ms since the epoch, plus one; 0 is an empty slot) and its latency in µs
/// with the failure flag in the top bit. A reader racing a writer may pair a new time with an old latency,
/// which moves a statistic by one sample at most.
#[derive(Default)]
struct Outcome {
    at_ms: AtomicU64,
    latency: AtomicU32,
}

const FAILED: u32 = 1 << 31;

impl Default for Stats {
    fn default() -> Self {
        Stats {
            epoch: Instant::now(),
            slots: (0..OUTCOMES_KEPT).map(|_| Outcome::default()).collect(),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }
}

/// A summary of [`Stats`] over a window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Window {
    pub requests: usize,
    pub failures: usize,
    pub error_rate: f64,
    pub p99_ms: f64,
}

impl Stats {
    /// Records one outcome; returns its number.
    pub(crate) fn record(&self, ended: Instant, latency: Duration, failed: bool) -> u64 {
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        let micros = latency.as_micros().min((FAILED - 1) as u128) as u32;
        let slot = &self.slots[(n % OUTCOMES_KEPT as u64) as usize];
        slot.latency
            .store(micros | if failed { FAILED } else { 0 }, Ordering::Relaxed);
        slot.at_ms
            .store((ended - self.epoch).as_millis() as u64 + 1, Ordering::Relaxed);
        n
    }

    /// Totals since the version started: (requests, failures).
    pub fn totals(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }

    /// Counts a call refused as bad input (4xx).
    pub(crate) fn reject(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// Calls refused as bad input (4xx) since the version started.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Requests that ended within the last `window`.
    pub fn window(&self, window: Duration) -> Window {
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let since = now.saturating_sub(window.as_millis() as u64);
        let mut latencies: Vec<u32> = Vec::new();
        let mut failures = 0;
        for slot in self.slots.iter() {
            let at = slot.at_ms.load(Ordering::Relaxed);
            if at == 0 || at < since {
                continue;
            }
            let outcome = slot.latency.load(Ordering::Relaxed);
            latencies.push(outcome & !FAILED);
            failures += (outcome & FAILED != 0) as usize;
        }
        let requests = latencies.len();
        latencies.sort_unstable();
        let p99 = if requests == 0 {
            0.0
        } else {
            latencies[(requests * 99 / 100).min(requests - 1)] as f64 / 1000.0
        };
        let error_rate = if requests == 0 {
            0.0
        } else {
            failures as f64 / requests as f64
        };
        Window {
            requests,
            failures,
            error_rate,
            p99_ms: p99,
        }
    }
}
