//! Which of the host's GPUs a new replica loads on: the one holding the fewest replicas now, whichever
//! service or version they belong to. A replica keeps a [`GpuLease`] (inside its package) for as long as
//! it lives, so a replica removed by the autoscaler or a redeploy makes its GPU the next one chosen.

use std::sync::{Arc, Mutex};

/// Replicas held on each GPU of the host.
pub(crate) struct GpuPlacer {
    held: Mutex<Vec<u32>>,
}

/// One replica's place on a GPU; gives it back when dropped.
pub(crate) struct GpuLease {
    placer: Arc<GpuPlacer>,
    device: usize,
}

impl GpuPlacer {
    pub(crate) fn new(gpus: u32) -> Arc<Self> {
        Arc::new(GpuPlacer {
            held: Mutex::new(vec![0; gpus.max(1) as usize]),
        })
    }

    /// The GPU with the fewest replicas (the lowest id among equals), taken by one more.
    pub(crate) fn take(self: &Arc<Self>) -> GpuLease {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let device = (0..held.len()).min_by_key(|&d| (held[d], d)).unwrap_or(0);
        held[device] += 1;
        GpuLease {
            placer: self.clone(),
            device,
        }
    }

    #[cfg(test)]
    fn held(&self) -> Vec<u32> {
        self.held.lock().unwrap().clone()
    }
}

impl GpuLease {
    /// The device id for the execution provider.
    pub(crate) fn device(&self) -> i32 {
        self.device as i32
    }
}

impl Drop for GpuLease {
    fn drop(&mut self) {
        let mut held = self.placer.held.lock().unwrap_or_else(|p| p.into_inner());
        held[self.device] = held[self.device].saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_go_to_the_least_held_gpu_and_give_it_back_when_they_go() {
        let placer = GpuPlacer::new(2);
        // Two versions of one replica each: one per GPU, not both on the first.
        let a = placer.take();
        let b = placer.take();
        assert_eq!((a.device(), b.device()), (0, 1));
        let c = placer.take();
        assert_eq!(c.device(), 0);
        assert_eq!(placer.held(), [2, 1]);
        // The autoscaler removes a replica from GPU 0: the next one goes there, not round-robin to 1.
        drop(a);
        assert_eq!(placer.take().device(), 0);
        drop(b);
        drop(c);
        assert_eq!(placer.held(), [0, 0]);
    }

    #[test]
    fn a_host_without_a_gpu_counts_on_device_zero() {
        let placer = GpuPlacer::new(0);
        assert_eq!(placer.take().device(), 0);
    }
}
