//! Which of the host's GPUs a new replica loads on. A replica either takes a whole GPU (`gpuCores`, or a
//! GPU provider listed first) or a share of one (`gpuMemoryGb`): shares of any services sit together on
//! a GPU while their promises fit in its memory, as Triton's instance groups and Ray's fractional GPUs
//! do; whole and shared replicas never sit on one GPU. A replica keeps a [`GpuLease`] (inside its
//! package) for as long as it lives, so a replica removed by the autoscaler or a redeploy frees its place.
//!
//! As the host's CPU and memory budget does, a version's new generation counts what its older
//! generations hold as free: they go once it serves, so a redeploy is never refused for its own replicas.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// What one replica asks of a GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// The GPU for itself (with other whole replicas, never with shares): the one holding the fewest.
    Whole,
    /// This many bytes of a GPU's memory, beside other shares.
    Share(u64),
}

/// Who holds a place: a version (`service/version`) of one generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Owner {
    pub(crate) name: String,
    pub(crate) generation: u64,
}

struct Held {
    id: u64,
    owner: Owner,
    need: Need,
}

struct Gpu {
    /// Its memory in bytes; 0 when unknown (shares are then placed without a check).
    memory: u64,
    held: Vec<Held>,
}

/// The host's GPUs and the replicas placed on each.
pub(crate) struct GpuPlacer {
    gpus: Mutex<(u64, Vec<Gpu>)>,
}

/// One replica's place on a GPU; gives it back when dropped.
pub(crate) struct GpuLease {
    placer: Arc<GpuPlacer>,
    device: usize,
    id: u64,
}

/// One GPU as `plinth info` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuDevice {
    pub id: u32,
    /// Its memory, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Memory promised to the replicas with a share of it.
    pub promised_bytes: u64,
    /// Memory in use on it (every process's), as the driver reports it, when it can be asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
    /// Replicas with the GPU to themselves.
    pub whole: u32,
    /// Replicas with a share of it.
    pub shares: u32,
    /// Who holds it: `service/version (replicas × GB each)` or `service/version (whole × replicas)`.
    pub holders: Vec<String>,
}

impl GpuPlacer {
    /// `memory`: each GPU's memory in bytes (0 or missing: unknown).
    pub(crate) fn new(gpus: u32, memory: &[u64]) -> Arc<Self> {
        let gpus = (0..gpus.max(1) as usize)
            .map(|d| Gpu {
                memory: memory.get(d).copied().unwrap_or(0),
                held: Vec::new(),
            })
            .collect();
        Arc::new(GpuPlacer {
            gpus: Mutex::new((0, gpus)),
        })
    }

    /// A place for one replica of `owner`, or why there is none.
    pub(crate) fn take(self: &Arc<Self>, owner: &Owner, need: Need) -> Result<GpuLease, String> {
        let mut guard = self.gpus.lock().unwrap_or_else(|p| p.into_inner());
        let (next, gpus) = &mut *guard;
        // What an older generation of the same version holds is as good as free.
        let counts = |h: &&Held| !(h.owner.name == owner.name && h.owner.generation < owner.generation);
        let promised = |g: &Gpu| -> u64 {
            g.held
                .iter()
                .filter(counts)
                .map(|h| match h.need {
                    Need::Share(b) => b,
                    Need::Whole => 0,
                })
                .sum()
        };
        let wholes = |g: &Gpu| g.held.iter().filter(counts).filter(|h| h.need == Need::Whole).count();
        let shares = |g: &Gpu| g.held.iter().filter(counts).filter(|h| h.need != Need::Whole).count();
        let device = match need {
            Need::Whole => (0..gpus.len())
                .filter(|&d| shares(&gpus[d]) == 0)
                .min_by_key(|&d| (wholes(&gpus[d]), d)),
            // The GPU with the most memory left where it fits (spreading shares over the GPUs).
            Need::Share(bytes) => (0..gpus.len())
                .filter(|&d| wholes(&gpus[d]) == 0)
                .filter(|&d| gpus[d].memory == 0 || gpus[d].memory.saturating_sub(promised(&gpus[d])) >= bytes)
                .max_by_key(|&d| (gpus[d].memory.saturating_sub(promised(&gpus[d])), std::cmp::Reverse(d))),
        };
        let Some(device) = device else {
            let state: Vec<String> = gpus
                .iter()
                .enumerate()
                .map(|(d, g)| match (wholes(g), g.memory) {
                    (0, 0) => format!("GPU {d}: {:.1} GB promised", gb(promised(g))),
                    (0, m) => format!("GPU {d}: {:.1} of {:.1} GB promised", gb(promised(g)), gb(m)),
                    (n, _) => format!("GPU {d}: held whole by {n} replica(s)"),
                })
                .collect();
            return Err(match need {
                Need::Whole => format!(
                    "no GPU is free of shared replicas for a whole-GPU replica of {} ({})",
                    owner.name,
                    state.join("; ")
                ),
                Need::Share(bytes) => format!(
                    "no GPU has {:.1} GB free for a replica of {} (gpuMemoryGb; {})",
                    gb(bytes),
                    owner.name,
                    state.join("; ")
                ),
            });
        };
        *next += 1;
        gpus[device].held.push(Held {
            id: *next,
            owner: owner.clone(),
            need,
        });
        Ok(GpuLease {
            placer: self.clone(),
            device,
            id: *next,
        })
    }

    /// Each GPU: its memory, what is promised on it and to whom; `used` is the driver's figure per GPU.
    pub(crate) fn devices(&self, used: &[u64]) -> Vec<GpuDevice> {
        let guard = self.gpus.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .1
            .iter()
            .enumerate()
            .map(|(d, g)| {
                let mut holders: Vec<(String, Need, u32)> = Vec::new();
                for h in &g.held {
                    match holders
                        .iter_mut()
                        .find(|(n, need, _)| *n == h.owner.name && *need == h.need)
                    {
                        Some(entry) => entry.2 += 1,
                        None => holders.push((h.owner.name.clone(), h.need, 1)),
                    }
                }
                GpuDevice {
                    id: d as u32,
                    memory_bytes: (g.memory > 0).then_some(g.memory),
                    promised_bytes: g
                        .held
                        .iter()
                        .map(|h| match h.need {
                            Need::Share(b) => b,
                            Need::Whole => 0,
                        })
                        .sum(),
                    used_bytes: used.get(d).copied(),
                    whole: g.held.iter().filter(|h| h.need == Need::Whole).count() as u32,
                    shares: g.held.iter().filter(|h| h.need != Need::Whole).count() as u32,
                    holders: holders
                        .into_iter()
                        .map(|(name, need, n)| match need {
                            Need::Share(b) => format!("{name} ({n} × {:.1} GB)", gb(b)),
                            Need::Whole => format!("{name} ({n} × whole)"),
                        })
                        .collect(),
                }
            })
            .collect()
    }

    /// Where the replicas of `name` (`service/version`) sit: (GPU, GB promised; None for a whole GPU).
    pub(crate) fn placements(&self, name: &str) -> Vec<(u32, Option<f64>)> {
        let guard = self.gpus.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for (d, g) in guard.1.iter().enumerate() {
            for h in g.held.iter().filter(|h| h.owner.name == name) {
                out.push((
                    d as u32,
                    match h.need {
                        Need::Share(b) => Some(gb(b)),
                        Need::Whole => None,
                    },
                ));
            }
        }
        out
    }

    /// The largest GPU memory of the host (0: unknown).
    pub(crate) fn largest(&self) -> u64 {
        let guard = self.gpus.lock().unwrap_or_else(|p| p.into_inner());
        guard.1.iter().map(|g| g.memory).max().unwrap_or(0)
    }
}

/// Bytes in GB (GiB, as `memoryInGB` and `gpuMemoryGb` count them), for messages.
pub(crate) fn gb(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 30)
}

impl GpuLease {
    /// The device id for the execution provider.
    pub(crate) fn device(&self) -> i32 {
        self.device as i32
    }
}

impl Drop for GpuLease {
    fn drop(&mut self) {
        let mut guard = self.placer.gpus.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(g) = guard.1.get_mut(self.device) {
            g.held.retain(|h| h.id != self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GB: u64 = 1 << 30;

    fn owner(name: &str) -> Owner {
        Owner {
            name: name.into(),
            generation: 1,
        }
    }

    fn held(placer: &GpuPlacer) -> Vec<u32> {
        placer.devices(&[]).iter().map(|d| d.whole + d.shares).collect()
    }

    #[test]
    fn whole_replicas_go_to_the_least_held_gpu_and_give_it_back_when_they_go() {
        let placer = GpuPlacer::new(2, &[]);
        // Two versions of one replica each: one per GPU, not both on the first.
        let a = placer.take(&owner("s/a"), Need::Whole).unwrap();
        let b = placer.take(&owner("s/b"), Need::Whole).unwrap();
        assert_eq!((a.device(), b.device()), (0, 1));
        let c = placer.take(&owner("s/a"), Need::Whole).unwrap();
        assert_eq!(c.device(), 0);
        assert_eq!(held(&placer), [2, 1]);
        // The autoscaler removes a replica from GPU 0: the next one goes there, not round-robin to 1.
        drop(a);
        assert_eq!(placer.take(&owner("s/a"), Need::Whole).unwrap().device(), 0);
        drop(b);
        drop(c);
        assert_eq!(held(&placer), [0, 0]);
    }

    #[test]
    fn shares_fit_by_memory_beside_each_other_never_beside_a_whole_replica() {
        let placer = GpuPlacer::new(1, &[16 * GB]);
        // Two services and two replicas of one on one 16 GB GPU.
        let a = placer.take(&owner("a/1"), Need::Share(6 * GB)).unwrap();
        let b1 = placer.take(&owner("b/1"), Need::Share(4 * GB)).unwrap();
        let b2 = placer.take(&owner("b/1"), Need::Share(4 * GB)).unwrap();
        assert_eq!((a.device(), b1.device(), b2.device()), (0, 0, 0));
        let err = placer.take(&owner("c/1"), Need::Share(4 * GB)).err().unwrap();
        assert!(
            err.contains("no GPU has 4.0 GB free for a replica of c/1")
                && err.contains("GPU 0: 14.0 of 16.0 GB promised"),
            "{err}"
        );
        let err = placer.take(&owner("w/1"), Need::Whole).err().unwrap();
        assert!(err.contains("no GPU is free of shared replicas"), "{err}");
        let d = placer.devices(&[3 * GB]);
        assert_eq!(d[0].promised_bytes, 14 * GB);
        assert_eq!(d[0].used_bytes, Some(3 * GB));
        assert_eq!(d[0].holders, ["a/1 (1 × 6.0 GB)", "b/1 (2 × 4.0 GB)"]);
        assert_eq!(placer.placements("b/1"), [(0, Some(4.0)), (0, Some(4.0))]);
        // A redeploy of a (generation 2) counts generation 1's 6 GB as free.
        let next = Owner {
            name: "a/1".into(),
            generation: 2,
        };
        assert!(placer.take(&next, Need::Share(8 * GB)).is_ok());
        drop((a, b1, b2));
        let w = placer.take(&owner("w/1"), Need::Whole).unwrap();
        assert!(
            placer.take(&owner("c/1"), Need::Share(GB)).is_err(),
            "a whole GPU is not shared"
        );
        drop(w);
    }

    #[test]
    fn shares_spread_over_gpus_and_unknown_memory_takes_them_unchecked() {
        let placer = GpuPlacer::new(2, &[16 * GB, 16 * GB]);
        let a = placer.take(&owner("a/1"), Need::Share(4 * GB)).unwrap();
        let b = placer.take(&owner("b/1"), Need::Share(4 * GB)).unwrap();
        assert_eq!((a.device(), b.device()), (0, 1));
        let unknown = GpuPlacer::new(1, &[]);
        assert!(unknown.take(&owner("a/1"), Need::Share(100 * GB)).is_ok());
    }

    #[test]
    fn a_host_without_a_gpu_counts_on_device_zero() {
        let placer = GpuPlacer::new(0, &[]);
        assert_eq!(placer.take(&owner("a/1"), Need::Whole).unwrap().device(), 0);
    }
}
