//! Utilization autoscaling, as Azure ML's router does it: utilization = busy replicas / current replicas
//! (requests waiting for a replica count as busy). Above the target, replicas are added at once;
//! below it, they are removed only after a sustained quiet window; always within min..max.
//!
//! [`Policy::decide`] is a pure function of time and samples, so it is tested with a simulated clock; the
//! host's router drives it per version and the Kubernetes controller per service.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Policy {
    /// Target utilization, 0..1 (Azure's `targetUtilization` / 100). Default 0.7.
    pub target: f64,
    pub min: u32,
    pub max: u32,
    /// How long utilization must stay below the target before replicas are removed. Default 60 s.
    pub scale_down_after: Duration,
    /// Time between decisions (Azure's `refreshPeriodInSeconds`). Default 1 s.
    pub refresh: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            target: 0.7,
            min: 1,
            max: 10,
            scale_down_after: Duration::from_secs(60),
            refresh: Duration::from_secs(1),
        }
    }
}

/// The policy's memory: since when utilization has been low.
#[derive(Debug, Default)]
pub struct State {
    low_since: Option<Duration>,
}

/// One decision and the inputs it was made from.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub current: u32,
    pub desired: u32,
    pub utilization: f64,
    pub target: f64,
    pub reason: &'static str,
}

impl Policy {
    /// Replicas wanted at time `now` (any monotonic origin), given the current count and the mean
    /// utilization since the last decision; `waiting` says whether requests wait for a replica.
    pub fn decide(&self, state: &mut State, now: Duration, current: u32, utilization: f64, waiting: bool) -> Decision {
        let d = |desired: u32, reason| Decision {
            current,
            desired,
            utilization,
            target: self.target,
            reason,
        };
        if current == 0 {
            state.low_since = None;
            return if waiting || self.min > 0 {
                d(self.min.max(1), "cold start")
            } else {
                d(0, "idle")
            };
        }
        if current < self.min {
            return d(self.min, "below minReplicas");
        }
        if current > self.max {
            return d(self.max, "above maxReplicas");
        }
        if utilization > self.target {
            state.low_since = None;
            let needed = (current as f64 * utilization / self.target).ceil() as u32;
            let desired = needed.max(current + 1).min(self.max);
            return d(
                desired,
                if desired == current {
                    "at maxReplicas"
                } else {
                    "above target"
                },
            );
        }
        if utilization < self.target {
            let since = *state.low_since.get_or_insert(now);
            if now.saturating_sub(since) >= self.scale_down_after {
                state.low_since = Some(now);
                let needed = (current as f64 * utilization / self.target).ceil() as u32;
                // One step at a time: removing replicas is conservative.
                let desired = needed.max(current.saturating_sub(1)).max(self.min);
                return d(
                    desired,
                    if desired == current {
                        "at minReplicas"
                    } else {
                        "below target long enough"
                    },
                );
            }
            return d(current, "below target, waiting");
        }
        state.low_since = None;
        d(current, "at target")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            target: 0.7,
            min: 1,
            max: 5,
            scale_down_after: Duration::from_secs(60),
            refresh: Duration::from_secs(1),
        }
    }

    fn at(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn scales_up_at_once_when_above_target() {
        let p = policy();
        let mut st = State::default();
        // 1 replica fully busy with 1 waiting: utilization 2.0 → ceil(1 × 2 / 0.7) = 3.
        assert_eq!(p.decide(&mut st, at(0), 1, 2.0, true).desired, 3);
        // Never past max.
        assert_eq!(p.decide(&mut st, at(1), 3, 5.0, true).desired, 5);
        assert_eq!(p.decide(&mut st, at(2), 5, 5.0, true).reason, "at maxReplicas");
        // Just above target adds at least one.
        assert_eq!(p.decide(&mut st, at(3), 2, 0.75, false).desired, 3);
    }

    #[test]
    fn scales_down_only_after_sustained_low_utilization() {
        let p = policy();
        let mut st = State::default();
        for s in 0..60 {
            assert_eq!(p.decide(&mut st, at(s), 4, 0.1, false).desired, 4, "second {s}");
        }
        let d = p.decide(&mut st, at(60), 4, 0.1, false);
        assert_eq!((d.desired, d.reason), (3, "below target long enough"));
        // The window starts again after each step.
        assert_eq!(p.decide(&mut st, at(61), 3, 0.1, false).desired, 3);
        assert_eq!(p.decide(&mut st, at(120), 3, 0.1, false).desired, 2);
        // A busy moment resets the window.
        assert_eq!(p.decide(&mut st, at(150), 2, 0.9, false).desired, 3);
        assert_eq!(p.decide(&mut st, at(151), 3, 0.1, false).desired, 3);
        assert_eq!(p.decide(&mut st, at(200), 3, 0.1, false).desired, 3);
        assert_eq!(p.decide(&mut st, at(211), 3, 0.1, false).desired, 2);
        // Never below min.
        assert_eq!(p.decide(&mut st, at(400), 1, 0.0, false).desired, 1);
    }

    #[test]
    fn scale_to_zero_and_back() {
        let p = Policy { min: 0, ..policy() };
        let mut st = State::default();
        assert_eq!(p.decide(&mut st, at(0), 1, 0.0, false).desired, 1);
        assert_eq!(p.decide(&mut st, at(60), 1, 0.0, false).desired, 0);
        assert_eq!(p.decide(&mut st, at(61), 0, 0.0, false).desired, 0);
        let d = p.decide(&mut st, at(62), 0, f64::INFINITY, true);
        assert_eq!((d.desired, d.reason), (1, "cold start"));
    }

    #[test]
    fn bounds_are_restored() {
        let p = Policy { min: 2, ..policy() };
        let mut st = State::default();
        assert_eq!(p.decide(&mut st, at(0), 1, 0.0, false).desired, 2);
        assert_eq!(p.decide(&mut st, at(0), 9, 0.5, false).desired, 5);
    }
}
