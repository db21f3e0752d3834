//! A running service (an endpoint): its versions, each a loaded package with its own replica slots,
//! the traffic split between them, and the service's credentials. The [`Router`] maps names to
//! services; replacing an entry never disturbs requests already holding the old one.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use plinth_runtime::wasm::CallContext;
use plinth_runtime::{Package, Tensor};
use serde::Serialize;
use tokio::sync::{Notify, Semaphore};

use crate::auth::{TokenIssuer, key_matches};
use crate::batch::{BatchConfig, Batcher};
use crate::collect::{Collector, Record, Sampling};
use crate::metrics::Metrics;
use crate::split::{Split, effective};
use crate::{Error, Result};

/// Extra time the host waits past `scoring_timeout` before answering 504 itself.
const TIMEOUT_GRACE: Duration = Duration::from_millis(100);

/// Outcomes kept per version for rollback decisions and `plinth endpoint show`.
const OUTCOMES_KEPT: usize = 20_000;

/// Limits of one version.
#[derive(Debug, Clone)]
pub struct VersionConfig {
    /// Replicas at start; each serves `max_concurrent` requests at once.
    pub replicas: u32,
    pub max_concurrent: u32,
    /// How long a request may wait for a free slot before a 503.
    pub max_queue_wait: Duration,
    /// How long a request may take before a 504.
    pub scoring_timeout: Duration,
    /// CPU cores and bytes of memory one replica reserves on the host.
    pub replica_cpu: f64,
    pub replica_memory: u64,
}

impl Default for VersionConfig {
    fn default() -> Self {
        VersionConfig {
            replicas: 1,
            max_concurrent: 1,
            max_queue_wait: Duration::from_millis(500),
            scoring_timeout: Duration::from_secs(60),
            replica_cpu: 0.0,
            replica_memory: 0,
        }
    }
}

/// How long the first request waits for a replica when a version has scaled to zero.
pub const COLD_START_WAIT: Duration = Duration::from_secs(60);

/// Builds a replica's package: the models and the script, loaded anew, so replicas share nothing.
pub type Factory = Arc<dyn Fn() -> plinth_runtime::Result<Package> + Send + Sync>;

/// The host's cores and memory, and what replicas have reserved of them.
pub struct Capacity {
    cpu: f64,
    memory: u64,
    used: Mutex<(f64, u64)>,
}

impl Capacity {
    pub fn new(cpu: f64, memory: u64) -> Self {
        Capacity {
            cpu,
            memory,
            used: Mutex::new((0.0, 0)),
        }
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
        Capacity::new(cpu, memory)
    }

    fn reserve(&self, cpu: f64, memory: u64) -> bool {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if used.0 + cpu > self.cpu + 1e-9 || used.1.saturating_add(memory) > self.memory {
            return false;
        }
        used.0 += cpu;
        used.1 += memory;
        true
    }

    fn release(&self, cpu: f64, memory: u64) {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        used.0 = (used.0 - cpu).max(0.0);
        used.1 = used.1.saturating_sub(memory);
    }

    /// (cores, bytes) still free.
    pub fn free(&self) -> (f64, u64) {
        let used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        (self.cpu - used.0, self.memory.saturating_sub(used.1))
    }
}

/// One replica: its own package (sessions, script instances) and the requests it is serving.
struct Replica {
    package: Arc<Package>,
    in_flight: AtomicU32,
}

/// What the protocols report about a version, whatever its replicas.
#[derive(Debug, Clone)]
pub struct VersionInfo {
    pub inputs: Vec<plinth_runtime::TensorSpec>,
    pub outputs: Vec<plinth_runtime::TensorSpec>,
    pub has_script: bool,
}

/// One version of a service: its replicas, the slots that bound them, and how it is scaled.
pub struct Version {
    name: String,
    service: String,
    info: VersionInfo,
    config: VersionConfig,
    replicas: RwLock<Vec<Arc<Replica>>>,
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    factory: Option<Factory>,
    capacity: Option<Arc<Capacity>>,
    cold_start: Notify,
    scaling: tokio::sync::Mutex<()>,
    utilization: Mutex<f64>,
    stats: Stats,
    metrics: Option<Arc<Metrics>>,
    collection: Option<(Arc<Collector>, Sampling)>,
    batcher: std::sync::OnceLock<Batcher>,
    service_time: ServiceTime,
}

/// Calls shorter than this (on average, for a version without an entry script) run on the calling task.
pub const INLINE_BELOW: Duration = Duration::from_micros(1000);

/// A moving average of how long a version's calls take, to choose where they run.
#[derive(Default)]
struct ServiceTime {
    calls: AtomicU64,
    ewma_ns: AtomicU64,
}

impl ServiceTime {
    /// Calls measured before the average is trusted; until then every call goes to the blocking pool.
    const WARM: u64 = 16;

    fn observe(&self, took: Duration) {
        let ns = took.as_nanos().min(u64::MAX as u128) as u64;
        let old = self.ewma_ns.load(Ordering::Relaxed);
        let new = if self.calls.fetch_add(1, Ordering::Relaxed) == 0 {
            ns
        } else {
            old - old / 8 + ns / 8
        };
        self.ewma_ns.store(new, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Version")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Version {
    /// A version with one replica over `package`, scaled by nobody: the embedding entry point.
    pub fn new(name: impl Into<String>, package: Arc<Package>, config: VersionConfig) -> Self {
        let info = info_of(&package);
        let v = Version::empty(name.into(), String::new(), info, config, None, None, None);
        v.add_replica(package);
        v
    }

    /// A version whose replicas come from `factory`: `config.replicas` are loaded now (fewer if the host's
    /// capacity runs out, which is logged), more or fewer later by the autoscaler.
    pub fn with_factory(
        service: &str,
        name: &str,
        factory: Factory,
        config: VersionConfig,
        capacity: Option<Arc<Capacity>>,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Self> {
        let started = Instant::now();
        let first = Arc::new(factory().map_err(Error::from)?);
        let info = info_of(&first);
        let wanted = config.replicas;
        let v = Version::empty(
            name.into(),
            service.into(),
            info,
            config,
            Some(factory),
            capacity,
            metrics,
        );
        if wanted > 0 {
            if v.reserve() {
                v.observe_load(started.elapsed());
                v.add_replica(first);
            } else {
                return Err(Error::Overloaded(format!(
                    "version {name}: this host has no room for even one replica ({})",
                    v.capacity_note()
                )));
            }
        }
        for _ in 1..wanted {
            if !v.reserve() {
                tracing::warn!(
                    service,
                    version = name,
                    placed = v.replica_count(),
                    wanted,
                    "capped: {}",
                    v.capacity_note()
                );
                break;
            }
            let started = Instant::now();
            match v.load() {
                Ok(p) => {
                    v.observe_load(started.elapsed());
                    v.add_replica(Arc::new(p));
                }
                Err(e) => {
                    v.unreserve();
                    return Err(e);
                }
            }
        }
        v.report_replicas();
        Ok(v)
    }

    fn empty(
        name: String,
        service: String,
        info: VersionInfo,
        config: VersionConfig,
        factory: Option<Factory>,
        capacity: Option<Arc<Capacity>>,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        Version {
            name,
            service,
            info,
            config,
            replicas: RwLock::new(Vec::new()),
            permits: Arc::new(Semaphore::new(0)),
            waiting: AtomicUsize::new(0),
            factory,
            capacity,
            cold_start: Notify::new(),
            scaling: tokio::sync::Mutex::new(()),
            utilization: Mutex::new(0.0),
            stats: Stats::default(),
            metrics,
            collection: None,
            batcher: std::sync::OnceLock::new(),
            service_time: ServiceTime::default(),
        }
    }

    /// Whether calls run on the calling task: only for a model without an entry script (ONNX Runtime
    /// work is bounded by the model; a script may spin until its deadline), once it is measured fast.
    fn inline(&self) -> bool {
        !self.info.has_script
            && self.service_time.calls.load(Ordering::Relaxed) >= ServiceTime::WARM
            && self.service_time.ewma_ns.load(Ordering::Relaxed) < INLINE_BELOW.as_nanos() as u64
    }

    /// Turns on dynamic batching (for a model whose inputs and outputs all have a batch dimension).
    pub fn enable_batching(self: &Arc<Self>, config: BatchConfig) -> bool {
        if self.info.has_script || !crate::batch::batchable(&self.info.inputs, &self.info.outputs) {
            return false;
        }
        let timeout = config.max_delay + self.config.max_queue_wait + self.config.scoring_timeout + TIMEOUT_GRACE;
        let batcher = Batcher::start(Arc::downgrade(self), self.info.inputs.clone(), config, timeout);
        self.batcher.set(batcher).is_ok()
    }

    pub fn batching(&self) -> bool {
        self.batcher.get().is_some()
    }

    /// Runs the version's model on tensors: through the batching queue when batching is on.
    pub async fn infer(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        if let Some(b) = self.batcher.get() {
            return b.infer(inputs).await;
        }
        let name = self.name.clone();
        self.run(move |p| match p.models().iter().next() {
            Some(model) => model.infer(&inputs),
            None => Err(plinth_runtime::Error::UnknownModel {
                model: name,
                known: String::new(),
            }),
        })
        .await
    }

    pub(crate) fn observe_batch(&self, rows: usize, waited: Duration) {
        if let Some(m) = &self.metrics {
            m.batch_size
                .with_label_values(&[&self.service, &self.name])
                .observe(rows as f64);
            m.batch_queue_seconds
                .with_label_values(&[&self.service, &self.name])
                .observe(waited.as_secs_f64());
        }
    }

    /// Records sampled inputs and predictions of this version through `collector`.
    pub fn with_collection(mut self, collector: Arc<Collector>, sampling: Sampling) -> Self {
        self.collection = Some((collector, sampling));
        self
    }

    /// Hands a scored request to data collection, if this version collects and the sample takes it.
    pub fn collect(&self, request_id: &str, input: Bytes, output: &[u8]) {
        if let Some((collector, sampling)) = &self.collection
            && sampling.take()
        {
            collector.submit(Record {
                service: self.service.clone(),
                model: sampling.model.clone(),
                model_version: sampling.model_version.clone(),
                version: self.name.clone(),
                request_id: request_id.to_string(),
                input,
                output: output.to_vec(),
            });
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    pub fn info(&self) -> &VersionInfo {
        &self.info
    }

    pub fn config(&self) -> &VersionConfig {
        &self.config
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn replica_count(&self) -> u32 {
        self.replicas.read().unwrap_or_else(|p| p.into_inner()).len() as u32
    }

    /// The last mean utilization the autoscaler saw (0..; above 1 when requests wait).
    pub fn utilization(&self) -> f64 {
        *self.utilization.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add_replica(&self, package: Arc<Package>) {
        self.replicas
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::new(Replica {
                package,
                in_flight: AtomicU32::new(0),
            }));
        self.permits.add_permits(self.config.max_concurrent.max(1) as usize);
    }

    fn load(&self) -> Result<Package> {
        match &self.factory {
            Some(f) => f().map_err(Error::from),
            None => Err(Error::Internal(format!("version {} cannot add replicas", self.name))),
        }
    }

    fn reserve(&self) -> bool {
        self.capacity
            .as_ref()
            .is_none_or(|c| c.reserve(self.config.replica_cpu, self.config.replica_memory))
    }

    fn unreserve(&self) {
        if let Some(c) = &self.capacity {
            c.release(self.config.replica_cpu, self.config.replica_memory);
        }
    }

    fn capacity_note(&self) -> String {
        match &self.capacity {
            Some(c) => {
                let (cpu, mem) = c.free();
                format!(
                    "a replica needs {} cores and {} MiB; the host has {cpu:.2} cores and {} MiB free",
                    self.config.replica_cpu,
                    self.config.replica_memory >> 20,
                    mem >> 20
                )
            }
            None => "no capacity limit".into(),
        }
    }

    /// Scales to `n` replicas (within what the host can hold); returns the count reached.
    pub async fn scale_to(self: &Arc<Self>, n: u32) -> u32 {
        let _one_at_a_time = self.scaling.lock().await;
        loop {
            let current = self.replica_count();
            if current == n {
                break;
            }
            if current < n {
                if !self.reserve() {
                    tracing::warn!(service = %self.service, version = %self.name, placed = current, wanted = n, "capped: {}", self.capacity_note());
                    break;
                }
                let this = self.clone();
                let started = Instant::now();
                match tokio::task::spawn_blocking(move || this.load()).await {
                    Ok(Ok(p)) => {
                        self.observe_load(started.elapsed());
                        self.add_replica(Arc::new(p));
                    }
                    other => {
                        self.unreserve();
                        let e = match other {
                            Ok(Err(e)) => e.to_string(),
                            Err(e) => e.to_string(),
                            Ok(Ok(_)) => unreachable!(),
                        };
                        tracing::error!(service = %self.service, version = %self.name, error = %e, "could not add a replica");
                        break;
                    }
                }
            } else {
                // Take one replica's worth of free slots, so nothing new lands on it, then drop the idlest one.
                let slots = self.config.max_concurrent.max(1);
                let Ok(Ok(permit)) =
                    tokio::time::timeout(Duration::from_secs(1), self.permits.clone().acquire_many_owned(slots)).await
                else {
                    break;
                };
                permit.forget();
                let mut replicas = self.replicas.write().unwrap_or_else(|p| p.into_inner());
                if let Some(i) = (0..replicas.len()).min_by_key(|&i| replicas[i].in_flight.load(Ordering::Relaxed)) {
                    replicas.remove(i);
                }
                drop(replicas);
                self.unreserve();
            }
        }
        self.report_replicas();
        self.replica_count()
    }

    /// Resolves when a request waits and there is no replica at all.
    pub async fn cold_start_wanted(&self) {
        self.cold_start.notified().await
    }

    /// (current replicas, utilization, whether requests wait): busy replicas plus waiting requests,
    /// over current replicas.
    pub fn utilization_sample(&self) -> (u32, f64, bool) {
        let replicas = self.replicas.read().unwrap_or_else(|p| p.into_inner());
        let busy = replicas
            .iter()
            .filter(|r| r.in_flight.load(Ordering::Relaxed) > 0)
            .count();
        let waiting = self.waiting.load(Ordering::Relaxed);
        let current = replicas.len();
        let u = if current == 0 {
            if waiting > 0 { f64::INFINITY } else { 0.0 }
        } else {
            (busy + waiting) as f64 / current as f64
        };
        (current as u32, u, waiting > 0)
    }

    pub fn report_utilization(&self, u: f64) {
        *self.utilization.lock().unwrap_or_else(|p| p.into_inner()) = u;
        if let Some(m) = &self.metrics {
            let pct = if u.is_finite() {
                (u * 100.0).round() as i64
            } else {
                i64::MAX
            };
            m.utilization_percent
                .with_label_values(&[&self.service, &self.name])
                .set(pct);
        }
    }

    fn report_replicas(&self) {
        if let Some(m) = &self.metrics {
            m.replicas
                .with_label_values(&[&self.service, &self.name])
                .set(self.replica_count() as i64);
        }
    }

    fn observe_load(&self, took: Duration) {
        if let Some(m) = &self.metrics {
            m.model_load_seconds
                .with_label_values(&[&self.service, &self.name])
                .observe(took.as_secs_f64());
        }
    }

    /// Counts a scaling decision and writes it, with its inputs, to the service's log.
    pub(crate) fn note_scaling(&self, direction: &str, d: &crate::autoscale::Decision, placed: u32) {
        if let Some(m) = &self.metrics {
            m.scaling_decisions
                .with_label_values(&[&self.service, &self.name, direction])
                .inc();
        }
        tracing::info!(
            target: "plinth::event",
            service = %self.service,
            "scale {direction}: version {} from {} to {} replicas (wanted {}; utilization {:.2}, target {}: {})",
            self.name,
            d.current,
            placed,
            d.desired,
            d.utilization,
            d.target,
            d.reason
        );
    }

    /// Runs `f` on a replica's package on a blocking thread, holding one of its slots, within the version's
    /// limits: at most `max_queue_wait` for a slot (503), at most `scoring_timeout` for the answer (504).
    pub async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Package) -> plinth_runtime::Result<T> + Send + 'static,
    {
        let queued = Instant::now();
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let cold = self.replica_count() == 0;
        if cold {
            self.cold_start.notify_one();
        }
        let wait = if cold {
            self.config.max_queue_wait.max(COLD_START_WAIT)
        } else {
            self.config.max_queue_wait
        };
        // A free slot right away needs no timer.
        let acquired = match self.permits.clone().try_acquire_owned() {
            Ok(p) => Ok(Ok(p)),
            Err(_) => tokio::time::timeout(wait, self.permits.clone().acquire_owned()).await,
        };
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        let permit = match acquired {
            Ok(Ok(p)) => p,
            _ => {
                let failed = Err(Error::Overloaded(format!(
                    "version {}: no free replica within {} ms",
                    self.name,
                    wait.as_millis()
                )));
                self.stats.record(queued.elapsed(), false);
                return failed;
            }
        };
        if let Some(m) = &self.metrics {
            m.queue_wait_seconds
                .with_label_values(&[&self.service, &self.name])
                .observe(queued.elapsed().as_secs_f64());
        }
        self.run_with(permit, f).await
    }

    /// Like [`Version::run`], but only if a slot is free right now (for mirrored copies).
    async fn try_run<T, F>(&self, f: F) -> Option<Result<T>>
    where
        T: Send + 'static,
        F: FnOnce(&Package) -> plinth_runtime::Result<T> + Send + 'static,
    {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        Some(self.run_with(permit, f).await)
    }

    /// The replica with the fewest requests in flight; a held permit guarantees it has a free slot.
    fn pick(&self) -> Option<Arc<Replica>> {
        let replicas = self.replicas.read().unwrap_or_else(|p| p.into_inner());
        replicas
            .iter()
            .min_by_key(|r| r.in_flight.load(Ordering::Relaxed))
            .cloned()
    }

    async fn run_with<T, F>(&self, permit: tokio::sync::OwnedSemaphorePermit, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Package) -> plinth_runtime::Result<T> + Send + 'static,
    {
        let started = Instant::now();
        let Some(replica) = self.pick() else {
            return Err(Error::Overloaded(format!("version {}: no replica", self.name)));
        };
        replica.in_flight.fetch_add(1, Ordering::Relaxed);
        let result = if self.inline() {
            // Short, bounded work (an ONNX model measured fast): run it right here. Handing it to the blocking
            // pool would cost more than the call itself.
            let result = f(&replica.package).map_err(Error::from);
            replica.in_flight.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
            result
        } else {
            // The permit moves into the task: after a 504 the replica stays busy until the call really ends.
            let task = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                let result = f(&replica.package);
                replica.in_flight.fetch_sub(1, Ordering::Relaxed);
                result
            });
            // The runtime stops an entry script at the deadline itself and says why; this is the backstop for
            // work that cannot be interrupted (an ONNX Runtime call), a little later so the precise error wins.
            match tokio::time::timeout(self.config.scoring_timeout + TIMEOUT_GRACE, task).await {
                Ok(Ok(result)) => result.map_err(Error::from),
                Ok(Err(join)) => Err(Error::Internal(format!(
                    "version {}: scoring task failed: {join}",
                    self.name
                ))),
                Err(_) => Err(Error::Timeout(format!(
                    "version {}: no answer within scoringTimeoutMs ({} ms)",
                    self.name,
                    self.config.scoring_timeout.as_millis()
                ))),
            }
        };
        self.service_time.observe(started.elapsed());
        if let (Some(m), Err(Error::Runtime(e))) = (&self.metrics, &result)
            && matches!(e.kind(), "deadline" | "memory" | "trap")
        {
            m.script_traps
                .with_label_values(&[&self.service, &self.name, e.kind()])
                .inc();
        }
        let failed = result.as_ref().err().is_some_and(|e| e.status().is_server_error());
        self.stats.record(started.elapsed(), failed);
        result
    }
}

impl Drop for Version {
    fn drop(&mut self) {
        let n = self.replicas.get_mut().map(|r| r.len()).unwrap_or(0);
        for _ in 0..n {
            self.unreserve();
        }
    }
}

fn info_of(package: &Package) -> VersionInfo {
    let first = package.models().iter().next();
    VersionInfo {
        inputs: first.map(|m| m.inputs().to_vec()).unwrap_or_default(),
        outputs: first.map(|m| m.outputs().to_vec()).unwrap_or_default(),
        has_script: package.script().is_some(),
    }
}

/// Recent outcomes of a version: latency and whether the host or model failed (5xx).
#[derive(Default)]
pub struct Stats {
    recent: Mutex<VecDeque<(Instant, u32, bool)>>,
    requests: AtomicU64,
    failures: AtomicU64,
}

/// A summary of [`Stats`] over a window.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    pub requests: usize,
    pub failures: usize,
    pub error_rate: f64,
    pub p99_ms: f64,
}

impl Stats {
    fn record(&self, latency: Duration, failed: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        let micros = latency.as_micros().min(u32::MAX as u128) as u32;
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == OUTCOMES_KEPT {
            recent.pop_front();
        }
        recent.push_back((Instant::now(), micros, failed));
    }

    /// Totals since the version started: (requests, failures).
    pub fn totals(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }

    /// Requests that ended within the last `window`.
    pub fn window(&self, window: Duration) -> Window {
        let since = Instant::now().checked_sub(window);
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let mut latencies: Vec<u32> = Vec::new();
        let mut failures = 0;
        for &(at, micros, failed) in recent.iter().rev() {
            if since.is_some_and(|s| at < s) {
                break;
            }
            latencies.push(micros);
            failures += failed as usize;
        }
        drop(recent);
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

/// How a service is reached; the version settings apply to the single version `Service::new` makes.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Key auth: `Authorization: Bearer <primary or secondary key>`.
    pub auth_enabled: bool,
    /// Token auth: `Authorization: Bearer <JWT from plinth service token>`.
    pub token_auth_enabled: bool,
    pub primary_key: String,
    pub secondary_key: String,
    /// Replicas; each serves `max_concurrent` requests at once.
    pub replicas: u32,
    pub max_concurrent: u32,
    pub max_queue_wait: Duration,
    pub scoring_timeout: Duration,
    /// The version's name (`/v2/models/{name}/versions/{version}`, `x-plinth-version`).
    pub version: String,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        let v = VersionConfig::default();
        ServiceConfig {
            auth_enabled: false,
            token_auth_enabled: false,
            primary_key: String::new(),
            secondary_key: String::new(),
            replicas: v.replicas,
            max_concurrent: v.max_concurrent,
            max_queue_wait: v.max_queue_wait,
            scoring_timeout: v.scoring_timeout,
            version: "1".into(),
        }
    }
}

/// Credentials of a service.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    pub auth_enabled: bool,
    pub token_auth_enabled: bool,
    pub primary_key: String,
    pub secondary_key: String,
}

/// A version in a service's split.
pub struct Routed {
    pub version: Arc<Version>,
    /// Percent of traffic the version claims (the default also gets what nobody claims).
    pub traffic: u32,
    /// Percent of traffic copied to this version; its answers are recorded, never returned.
    pub mirror: u32,
}

pub struct Service {
    name: String,
    auth: Auth,
    keys: RwLock<(String, String)>,
    versions: Vec<Arc<Version>>,
    weights: Vec<u32>,
    default: usize,
    split: Split,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("versions", &self.versions)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// A service with one version.
    pub fn new(name: impl Into<String>, package: Arc<Package>, config: ServiceConfig) -> Self {
        let version = Version::new(
            config.version.clone(),
            package,
            VersionConfig {
                replicas: config.replicas,
                max_concurrent: config.max_concurrent,
                max_queue_wait: config.max_queue_wait,
                scoring_timeout: config.scoring_timeout,
                ..VersionConfig::default()
            },
        );
        let auth = Auth {
            auth_enabled: config.auth_enabled,
            token_auth_enabled: config.token_auth_enabled,
            primary_key: config.primary_key,
            secondary_key: config.secondary_key,
        };
        let routed = vec![Routed {
            version: Arc::new(version),
            traffic: 100,
            mirror: 0,
        }];
        Service::with_versions(name, auth, routed, 0).expect("a single version always splits")
    }

    /// A service over several versions; `default` (an index into `versions`) gets what nobody claims.
    pub fn with_versions(name: impl Into<String>, auth: Auth, versions: Vec<Routed>, default: usize) -> Result<Self> {
        let claims: Vec<u32> = versions.iter().map(|r| r.traffic).collect();
        let weights = effective(&claims, default).map_err(Error::BadRequest)?;
        let mirrors = versions
            .iter()
            .enumerate()
            .filter(|(_, r)| r.mirror > 0)
            .map(|(i, r)| (i, r.mirror))
            .collect();
        let keys = RwLock::new((auth.primary_key.clone(), auth.secondary_key.clone()));
        Ok(Service {
            name: name.into(),
            auth,
            keys,
            versions: versions.into_iter().map(|r| r.version).collect(),
            split: Split::new(&weights, mirrors),
            weights,
            default,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn versions(&self) -> &[Arc<Version>] {
        &self.versions
    }

    /// Effective traffic percentages, by version.
    pub fn weights(&self) -> &[u32] {
        &self.weights
    }

    pub fn default_version(&self) -> &Arc<Version> {
        &self.versions[self.default]
    }

    pub fn version(&self, name: &str) -> Result<&Arc<Version>> {
        self.versions.iter().find(|v| v.name == name).ok_or_else(|| {
            let known: Vec<&str> = self.versions.iter().map(|v| v.name.as_str()).collect();
            Error::NotFound(format!(
                "service {} has no version {name} (versions: {})",
                self.name,
                known.join(", ")
            ))
        })
    }

    /// Replaces the keys; nothing restarts.
    pub fn set_keys(&self, primary: String, secondary: String) {
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = (primary, secondary);
    }

    /// Checks a bearer credential: a service key, a token for this service, or the host's admin token.
    pub fn authorize(&self, bearer: Option<&[u8]>, tokens: Option<&TokenIssuer>, admin: Option<&str>) -> Result<()> {
        if !self.auth.auth_enabled && !self.auth.token_auth_enabled {
            return Ok(());
        }
        let Some(given) = bearer else {
            return Err(Error::Unauthorized(format!(
                "service {} needs an 'Authorization: Bearer <key or token>' header",
                self.name
            )));
        };
        if let Some(admin) = admin
            && key_matches(given, admin)
        {
            return Ok(());
        }
        if self.auth.auth_enabled {
            let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
            // Both comparisons always run, so timing does not tell which key matched.
            let primary = key_matches(given, &keys.0);
            let secondary = key_matches(given, &keys.1);
            if primary | secondary {
                return Ok(());
            }
        }
        if self.auth.token_auth_enabled
            && let Some(tokens) = tokens
        {
            return tokens
                .verify(given, &self.name)
                .map_err(|e| Error::Unauthorized(format!("invalid credentials for service {}: {e}", self.name)));
        }
        Err(Error::Unauthorized(format!(
            "invalid credentials for service {}",
            self.name
        )))
    }

    /// The version for a request (`pinned` by name, or by the split), and starts mirrored copies.
    pub fn route(&self, pinned: Option<&str>, body: &Bytes, ctx: &CallContext) -> Result<Arc<Version>> {
        if let Some(name) = pinned {
            return self.version(name).cloned();
        }
        let (serving, copies) = self.split.next();
        for i in copies {
            let mirror = self.versions[i].clone();
            let body = body.clone();
            let ctx = ctx.clone();
            // Fire and forget: a copy runs only on a free slot of its own version and its answer is dropped.
            tokio::spawn(async move {
                let _ = mirror.try_run(move |p| p.score(&body, &ctx)).await;
            });
        }
        Ok(self.versions[serving].clone())
    }

    /// Scores one request body on the version the split (or `pinned`) picks; returns that version too.
    pub async fn score(
        &self,
        body: Bytes,
        ctx: CallContext,
        pinned: Option<&str>,
    ) -> (Option<Arc<Version>>, Result<Vec<u8>>) {
        let version = match self.route(pinned, &body, &ctx) {
            Ok(v) => v,
            Err(e) => return (None, Err(e)),
        };
        let result = if version.batching() {
            match plinth_runtime::json::decode_request(&version.info().inputs, &body) {
                Ok(inputs) => version
                    .infer(inputs)
                    .await
                    .map(|out| plinth_runtime::json::encode_outputs(&out)),
                Err(e) => Err(Error::Runtime(e)),
            }
        } else {
            version.run(move |package| package.score(&body, &ctx)).await
        };
        (Some(version), result)
    }
}

/// Services by name. Reads are lock-free snapshots per entry; a deploy swaps in a new `Arc<Service>`.
#[derive(Default)]
pub struct Router {
    services: DashMap<String, Arc<Service>>,
}

impl Router {
    pub fn new() -> Self {
        Router::default()
    }

    /// Adds or replaces a service; returns the one it replaced.
    pub fn insert(&self, service: Service) -> Option<Arc<Service>> {
        self.services.insert(service.name.clone(), Arc::new(service))
    }

    pub fn get(&self, name: &str) -> Option<Arc<Service>> {
        self.services.get(name).map(|s| s.value().clone())
    }

    pub fn remove(&self, name: &str) -> Option<Arc<Service>> {
        self.services.remove(name).map(|(_, s)| s)
    }

    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.services.iter().map(|e| e.key().clone()).collect();
        names.sort();
        names
    }
}
