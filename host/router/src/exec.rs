//! Where a call runs: on the request's own thread (an ONNX model measured fast), in place on its worker
//! thread (a lone entry-script call), or on the blocking pool (everything else, behind a 504 backstop).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Calls shorter than this (on average, for a version without an entry script) run on the calling task.
pub const INLINE_BELOW: Duration = Duration::from_micros(1000);

/// Extra time the host waits past `scoringTimeoutMs` before answering 504 itself: the runtime stops an
/// entry script at the deadline and says why; this backstop is for work that cannot be interrupted (an
/// ONNX Runtime call), a little later so that the precise error wins.
pub(crate) const TIMEOUT_GRACE: Duration = Duration::from_millis(100);

/// Where one call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// Right here, on the request's task: short, bounded work, cheaper than any hand-off.
    Inline,
    /// On this worker thread, which first hands its other work to another thread: no hand-off on the
    /// request's path, and a script that spins until its deadline holds up only its own request.
    InPlace,
    /// On the blocking pool, where many calls share the cores with a better tail.
    Pool,
}

/// Chooses where a call runs. `fast`: the version has no entry script and its calls are measured
/// fast; `quiet`: the chosen replica was idle and nobody waits.
pub(crate) fn place(has_script: bool, fast: bool, quiet: bool) -> Placement {
    if !has_script && fast {
        Placement::Inline
    } else if has_script && quiet && multi_threaded() {
        Placement::InPlace
    } else {
        Placement::Pool
    }
}

/// Whether this task runs on a multi-threaded runtime (where a call may block its thread in place).
fn multi_threaded() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// A moving average of how long a version's calls take.
#[derive(Default)]
pub(crate) struct ServiceTime {
    calls: AtomicU64,
    ewma_ns: AtomicU64,
}

impl ServiceTime {
    /// Calls measured before the average is trusted; until then every call goes to the blocking pool.
    const WARM: u64 = 16;
    const SAMPLE: u64 = 8;

    /// Takes call number `n` of the version into the average: every call while warming up, then one call
    /// in [`ServiceTime::SAMPLE`] (the average moves slowly anyway, and a shared line written by every
    /// call costs every core a cache miss).
    pub(crate) fn observe(&self, n: u64, took: Duration) {
        let calls = self.calls.load(Ordering::Relaxed);
        if calls >= Self::WARM && !n.is_multiple_of(Self::SAMPLE) {
            return;
        }
        let ns = took.as_nanos().min(u64::MAX as u128) as u64;
        let old = self.ewma_ns.load(Ordering::Relaxed);
        let new = if calls == 0 { ns } else { old - old / 8 + ns / 8 };
        self.ewma_ns.store(new, Ordering::Relaxed);
        if calls < Self::WARM {
            self.calls.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether enough calls were measured and they average under [`INLINE_BELOW`].
    pub(crate) fn is_fast(&self) -> bool {
        self.calls.load(Ordering::Relaxed) >= Self::WARM
            && self.ewma_ns.load(Ordering::Relaxed) < INLINE_BELOW.as_nanos() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_only_after_warming_up() {
        let t = ServiceTime::default();
        for n in 0..ServiceTime::WARM - 1 {
            t.observe(n, Duration::from_micros(10));
            assert!(!t.is_fast());
        }
        t.observe(ServiceTime::WARM, Duration::from_micros(10));
        assert!(t.is_fast());
        let slow = ServiceTime::default();
        for n in 0..2 * ServiceTime::WARM {
            slow.observe(n, Duration::from_millis(5));
        }
        assert!(!slow.is_fast());
    }

    #[test]
    fn scripts_never_run_inline() {
        assert_eq!(place(false, true, false), Placement::Inline);
        assert_ne!(place(true, true, true), Placement::Inline);
        assert_eq!(place(false, false, true), Placement::Pool);
    }
}
