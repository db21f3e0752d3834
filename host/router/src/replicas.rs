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

/// The host's cores, memory and GPUs, and what replicas have reserved of them.
///
/// Memory and GPUs are hard budgets. CPU requests share cores as Kubernetes limits do: they may add up to
/// more than the host's cores (reported as the subscription ratio), up to an optional cap
/// ([`Capacity::with_cpu_oversubscription`]).
pub struct Capacity {
    cpu: f64,
    memory: u64,
    gpus: u32,
    /// The most CPU requests may add up to, as a multiple of the cores; None: no cap.
    cpu_cap: Option<f64>,
    used: Mutex<Used>,
}

#[derive(Default)]
struct Used {
    cpu: f64,
    memory: u64,
    gpus: u32,
    /// What each version's replicas hold, by the replica set's id.
    holders: std::collections::HashMap<u64, Holder>,
}

struct Holder {
    /// `service/version`.
    name: String,
    replicas: u32,
    each: Reservation,
}

/// What one replica reserves on the host.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reservation {
    pub cpu: f64,
    pub memory: u64,
    pub gpus: u32,
}

/// Who reserves: a version's replica set (`id`, unique per set) named `service/version`. Sets with the
/// same name are generations of one version: a new one may count what the one it replaces holds.
#[derive(Debug, Clone)]
pub(crate) struct Owner {
    pub(crate) id: u64,
    pub(crate) name: String,
}

impl Owner {
    pub(crate) fn new(name: String) -> Owner {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Owner {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            name,
        }
    }
}

impl Capacity {
    pub fn new(cpu: f64, memory: u64) -> Self {
        Capacity {
            cpu,
            memory,
            gpus: 0,
            cpu_cap: None,
            used: Mutex::new(Used::default()),
        }
    }

    /// The same budget with `gpus` GPUs to give out.
    pub fn with_gpus(mut self, gpus: u32) -> Self {
        self.gpus = gpus;
        self
    }

    /// Caps CPU requests at `ratio` × the host's cores (`plinth serve --cpu-oversubscription`).
    pub fn with_cpu_oversubscription(mut self, ratio: Option<f64>) -> Self {
        self.cpu_cap = ratio;
        self
    }

    /// GPUs of this host that replicas may take.
    pub fn gpus(&self) -> u32 {
        self.gpus
    }

    /// This machine: its available cores, physical memory and GPUs.
    pub fn of_host() -> Self {
        Self::of_host_with_gpus(plinth_runtime::onnx::Gpus::of_host().count())
    }

    /// This machine's cores and memory, with `gpus` GPUs (counted by the caller).
    pub fn of_host_with_gpus(gpus: u32) -> Self {
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
        // In a container (a Kubernetes pod), the memory limit is the host's memory, not the machine's.
        let memory = cgroup_memory_limit().map_or(memory, |limit| limit.min(memory));
        Capacity::new(cpu, memory).with_gpus(gpus)
    }

    fn reserve(&self, owner: &Owner, r: Reservation) -> bool {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        // What an older generation of the same version holds is as good as free: it goes once this one
        // serves. Only older ones (ids grow), so the generation being replaced gets no credit back.
        let replaced = |f: fn(&Reservation) -> u64| -> u64 {
            used.holders
                .iter()
                .filter(|(id, h)| **id < owner.id && h.name == owner.name)
                .map(|(_, h)| f(&h.each) * h.replicas as u64)
                .sum()
        };
        let memory_free = self
            .memory
            .saturating_add(replaced(|e| e.memory))
            .saturating_sub(used.memory);
        let gpus_free = (self.gpus as u64 + replaced(|e| e.gpus as u64)).saturating_sub(used.gpus as u64);
        let cpu_ok = self
            .cpu_cap
            .is_none_or(|ratio| used.cpu + r.cpu <= self.cpu * ratio + 1e-9);
        if r.memory > memory_free || r.gpus as u64 > gpus_free || !cpu_ok {
            return false;
        }
        used.cpu += r.cpu;
        used.memory += r.memory;
        used.gpus += r.gpus;
        let holder = used.holders.entry(owner.id).or_insert_with(|| Holder {
            name: owner.name.clone(),
            replicas: 0,
            each: r,
        });
        holder.replicas += 1;
        true
    }

    fn release(&self, owner: &Owner, r: Reservation) {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        used.cpu = (used.cpu - r.cpu).max(0.0);
        used.memory = used.memory.saturating_sub(r.memory);
        used.gpus = used.gpus.saturating_sub(r.gpus);
        if let Some(h) = used.holders.get_mut(&owner.id) {
            h.replicas = h.replicas.saturating_sub(1);
            if h.replicas == 0 {
                used.holders.remove(&owner.id);
            }
        }
    }

    /// (cores, bytes) still free (cores below zero when CPU is oversubscribed).
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

    /// CPU requests over cores (above 1: oversubscribed), and the cap if any.
    pub fn cpu_subscription(&self) -> (f64, Option<f64>) {
        let used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        (used.cpu / self.cpu.max(1e-9), self.cpu_cap)
    }

    /// Who holds the host's memory: `service/version (replicas × MiB each)`, largest first.
    pub fn memory_holders(&self) -> Vec<String> {
        let used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<&Holder> = used.holders.values().collect();
        v.sort_by_key(|h| std::cmp::Reverse(h.each.memory * h.replicas as u64));
        v.iter()
            .map(|h| format!("{} ({} × {} MiB)", h.name, h.replicas, h.each.memory >> 20))
            .collect()
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
    owner: Owner,
}

impl Replicas {
    pub(crate) fn new(
        factory: Option<Factory>,
        capacity: Option<Arc<Capacity>>,
        need: Reservation,
        owner: Owner,
    ) -> Self {
        Replicas {
            list: ArcSwap::from_pointee(Vec::new()),
            factory,
            capacity,
            need,
            owner,
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
        self.capacity.as_ref().is_none_or(|c| c.reserve(&self.owner, self.need))
    }

    pub(crate) fn unreserve(&self) {
        if let Some(c) = &self.capacity {
            c.release(&self.owner, self.need);
        }
    }

    /// What a replica needs against what the host has free, for messages: which budget is short, what
    /// would fit, and who holds the memory.
    pub(crate) fn capacity_note(&self) -> String {
        let Some(c) = &self.capacity else {
            return "no capacity limit".into();
        };
        let (cpu_free, mem_free) = c.free();
        let (cores, memory, gpus) = c.total();
        let need = self.need;
        if need.memory > mem_free {
            let holders = c.memory_holders();
            return format!(
                "a replica needs {} MiB of memory; the host has {} MiB free of {} MiB{}: a replica of at most \
                 {:.2} GB (containerResourceRequirements.memoryInGB) would fit, or free memory by deleting or \
                 scaling down a service",
                need.memory >> 20,
                mem_free >> 20,
                memory >> 20,
                if holders.is_empty() {
                    String::new()
                } else {
                    format!(", held by {}", holders.join(", "))
                },
                mem_free as f64 / (1u64 << 30) as f64
            );
        }
        if need.gpus > c.free_gpus() {
            return format!(
                "a replica needs {} GPU(s); the host has {} of {gpus} free",
                need.gpus,
                c.free_gpus()
            );
        }
        let (ratio, cap) = c.cpu_subscription();
        format!(
            "a replica needs {} cores; the host's {cores} cores are {:.2}× subscribed ({:.2} cores unrequested){}",
            need.cpu,
            ratio,
            cpu_free.max(0.0),
            cap.map(|r| format!(", capped at {r}× by --cpu-oversubscription"))
                .unwrap_or_default()
        )
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for _ in 0..self.list.load().len() {
            self.unreserve();
        }
    }
}

/// The memory limit of this process's cgroup (v2 `memory.max`, or v1 `memory.limit_in_bytes`), if it has
/// one. The CPU limit needs no such reading: `available_parallelism` already follows the CPU quota.
fn cgroup_memory_limit() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut files = Vec::new();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        if controllers.is_empty() {
            files.push(format!("/sys/fs/cgroup{path}/memory.max"));
        } else if controllers.split(',').any(|c| c == "memory") {
            files.push(format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"));
        }
    }
    // A container sees its own cgroup at the root of its view.
    files.push("/sys/fs/cgroup/memory.max".into());
    files.push("/sys/fs/cgroup/memory/memory.limit_in_bytes".into());
    files
        .iter()
        .filter_map(|f| parse_memory_limit(&std::fs::read_to_string(f).ok()?))
        .min()
}

/// A cgroup memory limit file's value: `max` (v2) or a page-rounded huge number (v1) mean none.
fn parse_memory_limit(text: &str) -> Option<u64> {
    let n: u64 = text.trim().parse().ok()?;
    (n < 1 << 60).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cgroup_limit_is_read_in_both_versions() {
        assert_eq!(parse_memory_limit("max\n"), None);
        assert_eq!(parse_memory_limit("1610612736\n"), Some(1_610_612_736));
        // cgroup v1's "no limit" is the largest page-aligned number.
        assert_eq!(parse_memory_limit("9223372036854771712"), None);
        assert_eq!(parse_memory_limit(""), None);
    }

    #[test]
    fn capacity_is_a_budget() {
        let r = |cpu, memory, gpus| Reservation { cpu, memory, gpus };
        let a = Owner::new("a/1".into());
        let c = Capacity::new(2.0, 1 << 30);
        assert!(c.reserve(&a, r(1.5, 1 << 29, 0)));
        assert!(c.reserve(&a, r(1.0, 1, 0)), "CPU may be oversubscribed");
        assert_eq!(c.cpu_subscription().0, 1.25);
        assert!(!c.reserve(&a, r(0.5, 1 << 30, 0)), "no memory left");
        assert!(!c.reserve(&a, r(0.1, 1, 1)), "no GPU on this host");
        c.release(&a, r(1.5, 1 << 29, 0));
        c.release(&a, r(1.0, 1, 0));
        assert_eq!(c.free(), (2.0, 1 << 30));

        let capped = Capacity::new(2.0, 1 << 30).with_cpu_oversubscription(Some(1.5));
        assert!(capped.reserve(&a, r(2.0, 1, 0)));
        assert!(capped.reserve(&a, r(1.0, 1, 0)));
        assert!(!capped.reserve(&a, r(0.1, 1, 0)), "past 1.5× the cores");

        let c = Capacity::new(8.0, 1 << 30).with_gpus(2);
        assert!(c.reserve(&a, r(0.1, 1, 1)));
        assert!(c.reserve(&a, r(0.1, 1, 1)));
        assert!(!c.reserve(&a, r(0.1, 1, 1)), "both GPUs taken");
        assert_eq!(c.free_gpus(), 0);
        c.release(&a, r(0.1, 1, 1));
        assert_eq!(c.free_gpus(), 1);
    }

    #[test]
    fn a_redeploy_counts_what_it_replaces_and_refusals_name_the_holders() {
        let r = |memory| Reservation {
            cpu: 0.1,
            memory,
            gpus: 0,
        };
        let c = Arc::new(Capacity::new(2.0, 3 << 30));
        let old = Owner::new("ridge/1".into());
        assert!(c.reserve(&old, r(2 << 30)));
        // The next generation of ridge/1 may use what the old one holds; another service may not.
        let new = Owner::new("ridge/1".into());
        assert!(c.reserve(&new, r(2 << 30)));
        // The credit is what the old one holds, once: not a licence to grow past the host.
        assert!(!c.reserve(&new, r(2 << 30)), "3 GiB host: 2 old + 2 new is the most");
        assert!(
            !c.reserve(&old, r(1 << 30)),
            "the old generation gets no credit from the new"
        );
        let other = Replicas::new(None, Some(c.clone()), r(2 << 30), Owner::new("big/1".into()));
        assert!(!other.reserve());
        let note = other.capacity_note();
        assert!(
            note.contains("a replica needs 2048 MiB of memory; the host has 0 MiB free of 3072 MiB"),
            "{note}"
        );
        assert!(
            note.contains("held by ridge/1 (1 × 2048 MiB), ridge/1 (1 × 2048 MiB)"),
            "{note}"
        );
        c.release(&old, r(2 << 30));
        let note = other.capacity_note();
        assert!(note.contains("at most 1.00 GB"), "{note}");
    }
}
