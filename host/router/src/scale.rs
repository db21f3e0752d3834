//! Utilization autoscaling, as Azure ML's router does it: utilization = busy replicas / current replicas
//! (requests waiting for a replica count as busy). Above the target, replicas are added at once;
//! below it, they are removed only after a sustained quiet window; always within min..max.
//!
//! The policy ([`Policy::decide`]) is `plinth_spec::scale`, a pure function of time and samples; [`run`]
//! drives it with the real clock for anything [`Scalable`] (a version).

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

pub use plinth_spec::scale::{Decision, Policy, State};

/// What the scaling driver needs of a version.
pub trait Scalable: Send + Sync + 'static {
    /// (current replicas, utilization, whether requests wait): busy replicas plus waiting requests,
    /// over current replicas.
    fn sample(&self) -> (u32, f64, bool);
    /// Resolves when a request waits and there is no replica at all.
    fn cold_start_wanted(&self) -> impl Future<Output = ()> + Send;
    /// Scales to `n` replicas, within what the host holds; returns the count reached.
    fn scale_to(self: Arc<Self>, n: u32) -> impl Future<Output = u32> + Send;
    /// The mean utilization since the last decision.
    fn report(&self, utilization: f64);
    /// A decision that changed the count, with the count reached.
    fn note_scaling(&self, direction: &str, decision: &Decision, placed: u32);
}

/// How often utilization is sampled between decisions.
pub const SAMPLE: Duration = Duration::from_millis(100);

/// Drives `policy` for one version until the version is dropped.
pub async fn run<S: Scalable>(target: Weak<S>, policy: Policy) {
    let started = Instant::now();
    let mut state = State::default();
    let mut samples = 0.0;
    let mut count = 0u32;
    let mut last = Instant::now();
    loop {
        let Some(v) = target.upgrade() else { return };
        let woken = tokio::select! {
            _ = tokio::time::sleep(SAMPLE) => false,
            _ = v.cold_start_wanted() => true,
        };
        let (current, utilization, waiting) = v.sample();
        samples += if utilization.is_finite() { utilization } else { 1e9 };
        count += 1;
        if !woken && last.elapsed() < policy.refresh {
            continue;
        }
        let mean = samples / count.max(1) as f64;
        samples = 0.0;
        count = 0;
        last = Instant::now();
        let decision = policy.decide(&mut state, started.elapsed(), current, mean, waiting);
        v.report(mean);
        if decision.desired != decision.current {
            apply(v, decision).await;
        }
    }
}

async fn apply<S: Scalable>(v: Arc<S>, d: Decision) {
    let direction = if d.desired > d.current { "up" } else { "down" };
    let placed = v.clone().scale_to(d.desired).await;
    tracing::info!(
        direction,
        current = d.current,
        desired = d.desired,
        placed,
        utilization = format!("{:.2}", d.utilization),
        reason = d.reason,
        capped = placed != d.desired,
        "scaling decision"
    );
    v.note_scaling(direction, &d, placed);
}
