//! Replicas: each an isolated worker with its own package (ONNX Runtime sessions, script instances),
//! placed within what the host's cores and memory hold ([`Capacity`]). A request reads the list as a
//! snapshot without a lock; adding or removing a replica swaps a new list in.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use arc_swap::Guard;
use plinth_runtime::Package;

use crate::{Error, Result};

/// Builds a replica's package: the models and the script, loaded anew, so replicas share nothing.
pub type Factory = Arc<dyn Fn() -> plinth_runtime::Result<Package> + Send + Sync>;

/// The host's cores and memory, and what replicas have reserved of them.
pub struct Capacity {
    cpu: f64,
    memory: u64,
    gpus: u32,
    used: Mutex<Used>,
}

#[derive(Default)]
struct Used {
    cpu: f64,
    memory: u64,
    gpus: u32,
}

/// What one replica reserves on the host.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reservation {
    pub cpu: f64,
    pub memory: u64,
    pub gpus: u32,
}

impl Capacity {
    pub fn new(cpu: f64, memory: u64) -> Self {
        Capacity {
            cpu,
            memory,
            gpus: 0,
            used: Mutex::new(Used::default()),
        }
    }

    /// The same budget with `gpus` GPUs to give out.
    pub fn with_gpus(mut self, gpus: u32) -> Self {
        self.gpus = gpus;
        self
    }

    /// GPUs of this host that replicas may take.
    pub fn gpus(&self) -> u32 {
        self.gpus
    }

    /// This machine: its available cores and physical memory.
    pub fn of_host() -> Self {
        let cpu = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            })
            .map(|kb| kb * 1024)
            .unwrap_or(u64::MAX);
        Capacity::new(cpu, memory).with_gpus(plinth_runtime::onnx::Gpus::of_host().count())
    }

    fn reserve(&self, r: Reservation) -> bool {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if used.cpu + r.cpu > self.cpu + 1e-9
            || used.memory.saturating_add(r.memory) > self.memory
            || used.gpus + r.gpus > self.gpus
        {
            return false;
        }
        used.cpu += r.cpu;
        used.memory += r.memory;
        used.gpus += r.gpus;
        true
    }

    fn release(&self, r: Reservation) {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        used.cpu = (used.cpu - r.cpu).max(0.0);
        used.memory = used.memory.saturating_sub(r.memory);
        used.gpus = used.gpus.saturating_sub(r.gpus);
    }

    /// (cores, bytes) still free.
    pub fn free(&self) -> (f64, u64) {
        let used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        (self.cpu - used.cpu, self.memory.saturating_sub(used.memory))
    }

    /// GPUs not taken by a replica.
    pub fn free_gpus(&self) -> u32 {
        let used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        self.gpus.saturating_sub(used.gpus)
    }

    /// The host's totals: (cores, bytes, GPUs).
    pub fn total(&self) -> (f64, u64, u32) {
        (self.cpu, self.memory, self.gpus)
    }
}

/// One replica: its own package and the requests it is serving.
pub(crate) struct Replica {
    package: Arc<Package>,
    in_flight: AtomicU32,
}

impl Replica {
    pub(crate) fn package(&self) -> &Package {
        &self.package
    }

    /// Counts a request on this replica; returns how many it was serving before.
    pub(crate) fn enter(&self) -> u32 {
        self.in_flight.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    fn busy(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

pub(crate) type Snapshot = Guard<Arc<Vec<Arc<Replica>>>>;

/// A version's replicas, where new ones come from, and what each reserves on the host.
pub(crate) struct Replicas {
    list: ArcSwap<Vec<Arc<Replica>>>,
    factory: Option<Factory>,
    capacity: Option<Arc<Capacity>>,
    need: Reservation,
}

impl Replicas {
    pub(crate) fn new(factory: Option<Factory>, capacity: Option<Arc<Capacity>>, need: Reservation) -> Self {
        Replicas {
            list: ArcSwap::from_pointee(Vec::new()),
            factory,
            capacity,
            need,
        }
    }

    pub(crate) fn count(&self) -> u32 {
        self.list.load().len() as u32
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        self.list.load()
    }

    /// Replicas serving at least one request.
    pub(crate) fn busy(&self) -> usize {
        self.list.load().iter().filter(|r| r.busy() > 0).count()
    }

    /// The replica with the fewest requests in flight (a held slot guarantees one is free). Among idle
    /// replicas a thread keeps to the same one, so a model's working memory stays in one core's cache.
    pub(crate) fn pick(replicas: &[Arc<Replica>]) -> Option<&Arc<Replica>> {
        let n = replicas.len();
        if n == 0 {
            return None;
        }
        let first = plinth_runtime::thread_seat() % n;
        (0..n).map(|i| &replicas[(first + i) % n]).min_by_key(|r| r.busy())
    }

    /// Puts a loaded package into service (its reservation already made).
    pub(crate) fn push(&self, package: Arc<Package>) {
        let replica = Arc::new(Replica {
            package,
            in_flight: AtomicU32::new(0),
        });
        self.list.rcu(|current| {
            let mut next = Vec::clone(current);
            next.push(replica.clone());
            next
        });
    }

    /// Takes the idlest replica out of service and gives back its reservation.
    pub(crate) fn remove_idlest(&self) {
        self.list.rcu(|current| {
            let mut next = Vec::clone(current);
            if let Some(i) = (0..next.len()).min_by_key(|&i| next[i].busy()) {
                next.remove(i);
            }
            next
        });
        self.unreserve();
    }

    /// Loads a new replica's package (slow: models and script, off the request path).
    pub(crate) fn load(&self, version: &str) -> Result<Package> {
        match &self.factory {
            Some(f) => f().map_err(Error::from),
            None => Err(Error::Internal(format!("version {version} cannot add replicas"))),
        }
    }

    /// Reserves one replica's cores, memory and GPUs; false if the host has no room.
    pub(crate) fn reserve(&self) -> bool {
        self.capacity.as_ref().is_none_or(|c| c.reserve(self.need))
    }

    pub(crate) fn unreserve(&self) {
        if let Some(c) = &self.capacity {
            c.release(self.need);
        }
    }

    /// What a replica needs against what the host has free, for messages.
    pub(crate) fn capacity_note(&self) -> String {
        match &self.capacity {
            Some(c) => {
                let (cpu, mem) = c.free();
                let mut note = format!(
                    "a replica needs {} cores and {} MiB; the host has {cpu:.2} cores and {} MiB free",
                    self.need.cpu,
                    self.need.memory >> 20,
                    mem >> 20
                );
                if self.need.gpus > 0 {
                    note = format!(
                        "a replica needs {} GPU(s), {} cores and {} MiB; the host has {} of {} GPU(s), {cpu:.2} \
                         cores and {} MiB free",
                        self.need.gpus,
                        self.need.cpu,
                        self.need.memory >> 20,
                        c.free_gpus(),
                        c.gpus(),
                        mem >> 20
                    );
                }
                note
            }
            None => "no capacity limit".into(),
        }
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for _ in 0..self.list.load().len() {
            self.unreserve();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_a_budget() {
        let r = |cpu, memory, gpus| Reservation { cpu, memory, gpus };
        let c = Capacity::new(2.0, 1 << 30);
        assert!(c.reserve(r(1.5, 1 << 29, 0)));
        assert!(!c.reserve(r(1.0, 1, 0)), "no cores left");
        assert!(!c.reserve(r(0.5, 1 << 30, 0)), "no memory left");
        assert!(!c.reserve(r(0.1, 1, 1)), "no GPU on this host");
        c.release(r(1.5, 1 << 29, 0));
        assert_eq!(c.free(), (2.0, 1 << 30));

        let c = Capacity::new(8.0, 1 << 30).with_gpus(2);
        assert!(c.reserve(r(0.1, 1, 1)));
        assert!(c.reserve(r(0.1, 1, 1)));
        assert!(!c.reserve(r(0.1, 1, 1)), "both GPUs taken");
        assert_eq!(c.free_gpus(), 0);
        c.release(r(0.1, 1, 1));
        assert_eq!(c.free_gpus(), 1);
    }
}
