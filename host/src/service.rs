//! A running service (an endpoint): its versions, each a loaded package with its own replica slots,
//! the traffic split between them, and the service's credentials. The [`Router`] maps names to
//! services; replacing an entry never disturbs requests already holding the old one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use plinth_runtime::wasm::CallContext;
use plinth_runtime::{Package, Tensor};
use serde::Serialize;
use tokio::sync::{Notify, Semaphore, SemaphorePermit};

use crate::auth::{TokenIssuer, key_matches};
use crate::batch::{BatchConfig, Batcher};
use crate::collect::{Collector, Record, Sampling};
use crate::metrics::{Metrics, VersionSeries};
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
    name: Arc<str>,
    service: String,
    info: VersionInfo,
    config: VersionConfig,
    /// A snapshot read without locks by every request; replaced whole when replicas come or go.
    replicas: ArcSwap<Vec<Arc<Replica>>>,
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
    /// The request series of this version in one registry (held weakly: while it is held, no other
    /// registry can take its address).
    series: OnceLock<(std::sync::Weak<Metrics>, VersionSeries)>,
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
    const SAMPLE: u64 = 8;

    /// Takes call number `n` of the version into the average: every call while warming up, then one call
    /// in [`ServiceTime::SAMPLE`] (the average moves slowly anyway, and a shared line written by every
    /// call costs every core a cache miss).
    fn observe(&self, n: u64, took: Duration) {
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
            name: name.into(),
            service,
            info,
            config,
            replicas: ArcSwap::from_pointee(Vec::new()),
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
            series: OnceLock::new(),
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
        self.run(move |p| infer_on(p, &inputs)).await
    }

    /// Like [`Version::infer`] for a mirrored copy: only on a free slot, never through the batching queue.
    pub async fn try_infer(&self, inputs: Vec<Tensor>) -> Option<Result<Vec<Tensor>>> {
        self.try_run(move |p| infer_on(p, &inputs)).await
    }

    pub(crate) fn observe_batch(&self, rows: usize, waited: Duration) {
        if let Some(m) = &self.metrics {
            m.batch_size
                .with_label_values(&[self.service.as_str(), &self.name])
                .observe(rows as f64);
            m.batch_queue_seconds
                .with_label_values(&[self.service.as_str(), &self.name])
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
                version: self.name.to_string(),
                request_id: request_id.to_string(),
                input,
                output: output.to_vec(),
            });
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name, shared (for log entries that outlive the request).
    pub fn shared_name(&self) -> &Arc<str> {
        &self.name
    }

    /// This version's request series in `metrics`, resolved on first use; `None` when the version already
    /// reports to another registry (a version served by two hosts), whose callers look series up by label.
    pub fn series(&self, metrics: &Arc<Metrics>, service: &str) -> Option<&VersionSeries> {
        let (registry, series) = self
            .series
            .get_or_init(|| (Arc::downgrade(metrics), metrics.series(service, &self.name)));
        std::ptr::eq(registry.as_ptr(), Arc::as_ptr(metrics)).then_some(series)
    }

    /// Scores one request body: through the batching queue when batching is on.
    pub async fn score(&self, body: Bytes, ctx: CallContext) -> Result<Vec<u8>> {
        if self.batching() {
            let inputs = plinth_runtime::json::decode_request(&self.info.inputs, &body).map_err(Error::Runtime)?;
            return self
                .infer(inputs)
                .await
                .map(|out| plinth_runtime::json::encode_outputs(&out));
        }
        self.run(move |package| package.score(&body, &ctx)).await
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
        self.replicas.load().len() as u32
    }

    /// The last mean utilization the autoscaler saw (0..; above 1 when requests wait).
    pub fn utilization(&self) -> f64 {
        *self.utilization.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add_replica(&self, package: Arc<Package>) {
        let replica = Arc::new(Replica {
            package,
            in_flight: AtomicU32::new(0),
        });
        self.replicas.rcu(|current| {
            let mut next = Vec::clone(current);
            next.push(replica.clone());
            next
        });
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
                self.replicas.rcu(|current| {
                    let mut next = Vec::clone(current);
                    if let Some(i) = (0..next.len()).min_by_key(|&i| next[i].in_flight.load(Ordering::Relaxed)) {
                        next.remove(i);
                    }
                    next
                });
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
        let replicas = self.replicas.load();
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
                .with_label_values(&[self.service.as_str(), &self.name])
                .set(pct);
        }
    }

    fn report_replicas(&self) {
        if let Some(m) = &self.metrics {
            m.replicas
                .with_label_values(&[self.service.as_str(), &self.name])
                .set(self.replica_count() as i64);
        }
    }

    fn observe_load(&self, took: Duration) {
        if let Some(m) = &self.metrics {
            m.model_load_seconds
                .with_label_values(&[self.service.as_str(), &self.name])
                .observe(took.as_secs_f64());
        }
    }

    /// Counts a scaling decision and writes it, with its inputs, to the service's log.
    pub(crate) fn note_scaling(&self, direction: &str, d: &crate::autoscale::Decision, placed: u32) {
        if let Some(m) = &self.metrics {
            m.scaling_decisions
                .with_label_values(&[self.service.as_str(), &self.name, direction])
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
        // A free slot right away needs no timer, no clock and no shared counter: it waited for nothing.
        let (acquired, started, wait) = match self.permits.try_acquire() {
            Ok(p) => (Ok(Ok(p)), queued, Duration::ZERO),
            Err(_) => {
                let _waiting = Waiting::enter(&self.waiting);
                let cold = self.replica_count() == 0;
                if cold {
                    self.cold_start.notify_one();
                }
                let wait = if cold {
                    self.config.max_queue_wait.max(COLD_START_WAIT)
                } else {
                    self.config.max_queue_wait
                };
                let acquired = tokio::time::timeout(wait, self.permits.acquire()).await;
                (acquired, Instant::now(), wait)
            }
        };
        let permit = match acquired {
            Ok(Ok(p)) => p,
            _ => {
                let failed = Err(Error::Overloaded(format!(
                    "version {}: no free replica within {} ms",
                    self.name,
                    wait.as_millis()
                )));
                self.stats.record(started, started - queued, false);
                return failed;
            }
        };
        if let Some(m) = &self.metrics {
            let waited = (started - queued).as_secs_f64();
            match self.series(m, &self.service) {
                Some(series) => series.queue_wait.observe(waited),
                None => m
                    .queue_wait_seconds
                    .with_label_values(&[self.service.as_str(), &self.name])
                    .observe(waited),
            }
        }
        self.run_with(permit, started, f).await
    }

    /// Like [`Version::run`], but only if a slot is free right now (for mirrored copies).
    pub async fn try_run<T, F>(&self, f: F) -> Option<Result<T>>
    where
        T: Send + 'static,
        F: FnOnce(&Package) -> plinth_runtime::Result<T> + Send + 'static,
    {
        let permit = self.permits.try_acquire().ok()?;
        Some(self.run_with(permit, Instant::now(), f).await)
    }

    /// The replica with the fewest requests in flight; a held permit guarantees it has a free slot. Among
    /// idle replicas a thread keeps to the same one, so a model's working memory stays in one core's cache.
    fn pick(replicas: &[Arc<Replica>]) -> Option<&Arc<Replica>> {
        let n = replicas.len();
        if n == 0 {
            return None;
        }
        let first = plinth_runtime::thread_seat() % n;
        (0..n)
            .map(|i| &replicas[(first + i) % n])
            .min_by_key(|r| r.in_flight.load(Ordering::Relaxed))
    }

    async fn run_with<T, F>(&self, permit: SemaphorePermit<'_>, started: Instant, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Package) -> plinth_runtime::Result<T> + Send + 'static,
    {
        let replica = {
            let replicas = self.replicas.load();
            let Some(replica) = Version::pick(&replicas) else {
                return Err(Error::Overloaded(format!("version {}: no replica", self.name)));
            };
            let busy = replica.in_flight.fetch_add(1, Ordering::Relaxed);
            if self.inline() {
                // Short, bounded work (an ONNX model measured fast): run it right here, on the snapshot.
                // Handing it to the blocking pool would cost more than the call itself.
                let result = f(&replica.package).map_err(Error::from);
                replica.in_flight.fetch_sub(1, Ordering::Relaxed);
                drop(permit);
                return self.finish(started, result);
            }
            (replica.clone(), busy == 0 && self.waiting.load(Ordering::Relaxed) == 0)
        };
        let (replica, quiet) = replica;
        if quiet && self.info.has_script && multi_threaded() {
            // A lone entry-script call runs on this thread, which first hands its other work to another
            // thread: no hand-off on the request's path, and a script that spins until its deadline (the
            // runtime stops it there) holds up only its own request. Under load, calls go to the blocking
            // pool, where many of them share the cores with a better tail.
            let result = tokio::task::block_in_place(|| f(&replica.package)).map_err(Error::from);
            replica.in_flight.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
            return self.finish(started, result);
        }
        // The slot moves into the task: after a 504 the replica stays busy until the call really ends.
        permit.forget();
        let slot = Slot(self.permits.clone());
        let task = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let result = f(&replica.package);
            replica.in_flight.fetch_sub(1, Ordering::Relaxed);
            result
        });
        // The runtime stops an entry script at the deadline itself and says why; this is the backstop for
        // work that cannot be interrupted (an ONNX Runtime call), a little later so the precise error wins.
        let result = match tokio::time::timeout(self.config.scoring_timeout + TIMEOUT_GRACE, task).await {
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
        };
        self.finish(started, result)
    }

    /// Records how a call went.
    fn finish<T>(&self, started: Instant, result: Result<T>) -> Result<T> {
        let ended = Instant::now();
        if let (Some(m), Err(Error::Runtime(e))) = (&self.metrics, &result)
            && matches!(e.kind(), "deadline" | "memory" | "trap")
        {
            m.script_traps
                .with_label_values(&[self.service.as_str(), &self.name, e.kind()])
                .inc();
        }
        let status = result.as_ref().err().map(|e| e.status());
        if status.is_some_and(|s| s.is_client_error()) {
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
        }
        let failed = status.is_some_and(|s| s.is_server_error());
        let n = self.stats.record(ended, ended - started, failed);
        self.service_time.observe(n, ended - started);
        result
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

/// Whether this task runs on a multi-threaded runtime (where a call may block its thread in place).
fn multi_threaded() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// A slot given back when dropped (held by a call on the blocking pool).
struct Slot(Arc<Semaphore>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.add_permits(1);
    }
}

impl Drop for Version {
    fn drop(&mut self) {
        let n = self.replicas.load().len();
        for _ in 0..n {
            self.unreserve();
        }
    }
}

/// Runs a package's (first) model on tensors.
fn infer_on(p: &Package, inputs: &[Tensor]) -> plinth_runtime::Result<Vec<Tensor>> {
    match p.models().iter().next() {
        Some(model) => model.infer(inputs),
        None => Err(plinth_runtime::Error::Config("this version has no model".into())),
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
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    pub requests: usize,
    pub failures: usize,
    pub error_rate: f64,
    pub p99_ms: f64,
}

impl Stats {
    /// Records one outcome; returns its number.
    fn record(&self, ended: Instant, latency: Duration, failed: bool) -> u64 {
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
    keys: ArcSwap<(String, String)>,
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
        let keys = ArcSwap::from_pointee((auth.primary_key.clone(), auth.secondary_key.clone()));
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
        self.versions.iter().find(|v| *v.name == *name).ok_or_else(|| {
            let known: Vec<&str> = self.versions.iter().map(|v| v.name()).collect();
            Error::NotFound(format!(
                "service {} has no version {name} (versions: {})",
                self.name,
                known.join(", ")
            ))
        })
    }

    /// Replaces the keys; nothing restarts.
    pub fn set_keys(&self, primary: String, secondary: String) {
        self.keys.store(Arc::new((primary, secondary)));
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
            let keys = self.keys.load();
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

    /// The version for a request (`pinned` by name, or by the split), and the versions that get a copy of
    /// it (see [`Service::mirror`]). No copies for a pinned request.
    pub fn route(&self, pinned: Option<&str>) -> Result<(&Arc<Version>, Vec<Arc<Version>>)> {
        if let Some(name) = pinned {
            return Ok((self.version(name)?, Vec::new()));
        }
        let (serving, copies) = self.split.next();
        let copies = copies.map(|i| self.versions[i].clone()).collect();
        Ok((&self.versions[serving], copies))
    }

    /// Sends copies of a JSON request body to mirror versions. Fire and forget: a copy runs only on a free
    /// slot of its own version and its answer is dropped.
    pub fn mirror(copies: Vec<Arc<Version>>, body: &Bytes, ctx: &CallContext) {
        for mirror in copies {
            let body = body.clone();
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let _ = mirror.try_run(move |p| p.score(&body, &ctx)).await;
            });
        }
    }
}

/// Services by name. A request reads a snapshot without taking a lock; a deploy builds the next map and
/// swaps it in, so requests already holding an `Arc<Service>` are never disturbed.
#[derive(Default)]
pub struct Router {
    services: ArcSwap<HashMap<String, Arc<Service>>>,
    /// Serialises writers (each copies the map).
    write: Mutex<()>,
}

impl Router {
    pub fn new() -> Self {
        Router::default()
    }

    fn update<T>(&self, f: impl FnOnce(&mut HashMap<String, Arc<Service>>) -> T) -> T {
        let _one_writer = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = HashMap::clone(&self.services.load());
        let out = f(&mut next);
        self.services.store(Arc::new(next));
        out
    }

    /// Adds or replaces a service; returns the one it replaced.
    pub fn insert(&self, service: Service) -> Option<Arc<Service>> {
        self.update(|m| m.insert(service.name.clone(), Arc::new(service)))
    }

    pub fn get(&self, name: &str) -> Option<Arc<Service>> {
        self.services.load().get(name).cloned()
    }

    pub fn remove(&self, name: &str) -> Option<Arc<Service>> {
        self.update(|m| m.remove(name))
    }

    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.services.load().keys().cloned().collect();
        names.sort();
        names
    }
}
