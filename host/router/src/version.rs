//! One version of a service: its replicas, the slots (permits) that bound them, where its calls run,
//! what its requests did, and how it is scaled and batched. Each job lives in its own module; this
//! file puts them together around one call: take a slot, pick a replica, run, record.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use plinth_runtime::wasm::CallContext;
use plinth_runtime::{Package, Tensor, TensorSpec};
use tokio::sync::SemaphorePermit;

use crate::batch::{BatchConfig, BatchTarget, Batcher};
use crate::exec::{Placement, ServiceTime, TIMEOUT_GRACE};
use crate::observe::{Collector, Metrics, Record, Sampling, VersionSeries};
use crate::queue::Queue;
use crate::replicas::{Capacity, Factory, Owner, Replicas, Reservation};
use crate::scale::{Decision, Scalable};
use crate::stats::Stats;
use crate::{Error, Result};

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
    /// GPUs one replica takes from the host.
    pub replica_gpus: u32,
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
            replica_gpus: 0,
        }
    }
}

/// What the protocols report about a version, whatever its replicas.
#[derive(Debug, Clone)]
pub struct VersionInfo {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    pub has_script: bool,
    /// Each model's execution provider (and any fallback taken), by model name.
    pub placements: Vec<(String, plinth_runtime::onnx::ep::Placement)>,
    /// The script runs on the scientific Python runtime and reads the HTTP request around the body.
    pub wants_http: bool,
    /// The input and output schemas the script declared (Azure's `inference_schema`).
    pub schema: Option<serde_json::Value>,
}

/// Where a version reports: the host's metrics, and (optionally) data collection.
#[derive(Default)]
pub struct Reporting {
    pub metrics: Option<Arc<Metrics>>,
    pub collection: Option<(Arc<Collector>, Sampling)>,
}

pub struct Version {
    name: Arc<str>,
    service: String,
    info: VersionInfo,
    config: VersionConfig,
    replicas: Replicas,
    queue: Queue,
    service_time: ServiceTime,
    stats: Stats,
    reporting: Reporting,
    /// The request series of this version in one registry (held weakly: while it is held, no other
    /// registry can take its address).
    series: OnceLock<(std::sync::Weak<Metrics>, VersionSeries)>,
    /// The last mean utilization the autoscaler saw.
    utilization: Mutex<f64>,
    scaling: tokio::sync::Mutex<()>,
    batcher: OnceLock<Batcher>,
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
        let v = Version::empty(
            name.into(),
            String::new(),
            info,
            config,
            None,
            None,
            Reporting::default(),
        );
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
        reporting: Reporting,
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
            reporting,
        );
        if wanted > 0 {
            if !v.replicas.reserve() {
                return Err(Error::Overloaded(format!(
                    "version {name}: this host has no room for even one replica ({})",
                    v.replicas.capacity_note()
                )));
            }
            v.observe_load(started.elapsed());
            v.add_replica(first);
        }
        for _ in 1..wanted {
            if !v.replicas.reserve() {
                tracing::warn!(
                    service,
                    version = name,
                    placed = v.replica_count(),
                    wanted,
                    "capped: {}",
                    v.replicas.capacity_note()
                );
                break;
            }
            let started = Instant::now();
            match v.replicas.load(name) {
                Ok(p) => {
                    v.observe_load(started.elapsed());
                    v.add_replica(Arc::new(p));
                }
                Err(e) => {
                    v.replicas.unreserve();
                    return Err(e);
                }
            }
        }
        v.report_replicas();
        v.report_providers();
        Ok(v)
    }

    fn empty(
        name: String,
        service: String,
        info: VersionInfo,
        config: VersionConfig,
        factory: Option<Factory>,
        capacity: Option<Arc<Capacity>>,
        reporting: Reporting,
    ) -> Self {
        let owner = Owner::new(format!("{service}/{name}"));
        Version {
            name: name.into(),
            service,
            info,
            replicas: Replicas::new(
                factory,
                capacity,
                Reservation {
                    cpu: config.replica_cpu,
                    memory: config.replica_memory,
                    gpus: config.replica_gpus,
                },
                owner,
            ),
            queue: Queue::new(config.max_queue_wait),
            config,
            service_time: ServiceTime::default(),
            stats: Stats::default(),
            reporting,
            series: OnceLock::new(),
            utilization: Mutex::new(0.0),
            scaling: tokio::sync::Mutex::new(()),
            batcher: OnceLock::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name, shared (for log entries that outlive the request).
    pub fn shared_name(&self) -> &Arc<str> {
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
        self.replicas.count()
    }

    /// The last mean utilization the autoscaler saw (0..; above 1 when requests wait).
    pub fn utilization(&self) -> f64 {
        *self.utilization.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Busy replicas and waiting requests, now.
    pub fn load_now(&self) -> (usize, usize) {
        (self.replicas.busy(), self.queue.waiting())
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

    /// Scores one request body: through the batching queue when batching is on.
    pub async fn score(&self, body: Bytes, ctx: CallContext) -> Result<Vec<u8>> {
        if self.batching() {
            let inputs = match plinth_runtime::json::decode_request(&self.info.inputs, &body) {
                Ok(inputs) => inputs,
                Err(e) => {
                    // Refused before the queue, counted as a request all the same (as unbatched).
                    let e = Error::Runtime(e);
                    self.record(Instant::now(), Some(&e));
                    return Err(e);
                }
            };
            return self
                .infer(inputs)
                .await
                .map(|out| plinth_runtime::json::encode_outputs(&out));
        }
        self.run(move |package| package.score(&body, &ctx)).await
    }

    /// Runs the version's model on tensors: through the batching queue when batching is on.
    pub async fn infer(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        if let Some(b) = self.batcher.get() {
            return b.infer(self, inputs).await;
        }
        self.run(move |p| infer_on(p, &inputs)).await
    }

    /// Like [`Version::infer`] for a mirrored copy: only on a free slot, never through the batching queue.
    pub async fn try_infer(&self, inputs: Vec<Tensor>) -> Option<Result<Vec<Tensor>>> {
        self.try_run(move |p| infer_on(p, &inputs)).await
    }

    /// Whether this version records requests for data collection.
    pub fn collects(&self) -> bool {
        self.reporting.collection.is_some()
    }

    /// Hands a scored request to data collection, if this version collects and the sample takes it; the
    /// record's input and output are made only then.
    pub fn collect(&self, request_id: &str, input: impl FnOnce() -> Bytes, output: impl FnOnce() -> Vec<u8>) {
        if let Some((collector, sampling)) = &self.reporting.collection
            && sampling.take()
        {
            collector.submit(Record {
                service: self.service.clone(),
                model: sampling.model.clone(),
                model_version: sampling.model_version.clone(),
                version: self.name.to_string(),
                request_id: request_id.to_string(),
                input: input(),
                output: output(),
            });
        }
    }

    /// This version's request series in `metrics`, resolved on first use; `None` when the version already
    /// reports to another registry (a version served by two hosts), whose callers look series up by label.
    pub fn series(&self, metrics: &Arc<Metrics>, service: &str) -> Option<&VersionSeries> {
        let (registry, series) = self
            .series
            .get_or_init(|| (Arc::downgrade(metrics), metrics.series(service, &self.name)));
        std::ptr::eq(registry.as_ptr(), Arc::as_ptr(metrics)).then_some(series)
    }

    /// Runs `f` on a replica's package holding one of its slots, within the version's limits: at most
    /// `max_queue_wait` for a slot (503), at most `scoring_timeout` for the answer (504). Records the
    /// outcome as one request.
    pub async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Package) -> plinth_runtime::Result<T> + Send + 'static,
    {
        let queued = Instant::now();
        let (permit, started) = match self.take_slot(queued).await {
            Ok(taken) => taken,
            Err(e) => {
                let now = Instant::now();
                self.stats.record(now, now - queued, false);
                return Err(e);
            }
        };
        let result = self.call(permit, started, f).await;
        self.record(started, result.as_ref().err());
        result
    }

    /// Like [`Version::run`], but only if a slot is free right now (for mirrored copies).
    pub async fn try_run<T, F>(&self, f: F) -> Option<Result<T>>
    where
        T: Send + 'static,
        F: FnOnce(&Package) -> plinth_runtime::Result<T> + Send + 'static,
    {
        let permit = self.queue.try_acquire()?;
        let started = Instant::now();
        let result = self.call(permit, started, f).await;
        self.record(started, result.as_ref().err());
        Some(result)
    }

    /// A slot: free at once, or after waiting in the queue (a 503 when none comes free in time).
    async fn take_slot(&self, queued: Instant) -> Result<(SemaphorePermit<'_>, Instant)> {
        // A free slot right away needs no timer, no clock and no shared counter: it waited for nothing.
        let (permit, started) = match self.queue.try_acquire() {
            Some(p) => (p, queued),
            None => match self.queue.acquire(self.replica_count() == 0).await {
                Ok(p) => (p, Instant::now()),
                Err(waited) => {
                    return Err(Error::Overloaded(format!(
                        "version {}: no free replica within {} ms",
                        self.name,
                        waited.as_millis()
                    )));
                }
            },
        };
        if let Some(m) = &self.reporting.metrics {
            let waited = (started - queued).as_secs_f64();
            match self.series(m, &self.service) {
                Some(series) => series.queue_wait.observe(waited),
                None => m
                    .queue_wait_seconds
                    .with_label_values(&[self.service.as_str(), &self.name])
                    .observe(waited),
            }
        }
        Ok((permit, started))
    }

    /// Runs `f` on the replica a held slot entitles to, where [`crate::exec::place`] says; measures the
    /// call, records no request.
    async fn call<T, F>(&self, permit: SemaphorePermit<'_>, started: Instant, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Package) -> plinth_runtime::Result<T> + Send + 'static,
    {
        let (replica, placement) = {
            let replicas = self.replicas.snapshot();
            let Some(replica) = Replicas::pick(&replicas) else {
                return Err(Error::Overloaded(format!("version {}: no replica", self.name)));
            };
            let busy = replica.enter();
            let quiet = busy == 0 && self.queue.waiting() == 0;
            match crate::exec::place(self.info.has_script, self.service_time.is_fast(), quiet) {
                Placement::Inline => {
                    // On the snapshot itself: not even a reference count changes hands.
                    let result = f(replica.package()).map_err(Error::from);
                    replica.leave();
                    drop(permit);
                    return self.observe_call(started, result);
                }
                placement => (replica.clone(), placement),
            }
        };
        if placement == Placement::InPlace {
            let result = tokio::task::block_in_place(|| f(replica.package())).map_err(Error::from);
            replica.leave();
            drop(permit);
            return self.observe_call(started, result);
        }
        let slot = self.queue.detach(permit);
        let task = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let result = f(replica.package());
            replica.leave();
            result
        });
        let result = match tokio::time::timeout(self.config.scoring_timeout + TIMEOUT_GRACE, task).await {
            Ok(Ok(result)) => result.map_err(Error::from),
            Ok(Err(join)) => Err(Error::Task {
                what: format!("version {}: the scoring task failed", self.name),
                source: join,
            }),
            Err(_) => Err(Error::Timeout(format!(
                "version {}: no answer within scoringTimeoutMs ({} ms)",
                self.name,
                self.config.scoring_timeout.as_millis()
            ))),
        };
        self.observe_call(started, result)
    }

    /// Takes a call's duration into the service-time average and counts a trapped script.
    fn observe_call<T>(&self, started: Instant, result: Result<T>) -> Result<T> {
        if let (Some(m), Err(Error::Runtime(e @ plinth_runtime::Error::ScriptTrap { .. }))) =
            (&self.reporting.metrics, &result)
        {
            m.script_traps
                .with_label_values(&[self.service.as_str(), &self.name, e.kind()])
                .inc();
        }
        let n = self.stats.totals().0;
        self.service_time.observe(n, started.elapsed());
        result
    }

    /// Records one request's outcome: a rejected request (4xx) or a failure (5xx other than a full queue).
    pub(crate) fn record(&self, started: Instant, error: Option<&Error>) {
        let ended = Instant::now();
        let fault = error.filter(|e| !e.is_answer()).map(Error::fault);
        if fault == Some(crate::Fault::Client) {
            self.stats.reject();
        }
        self.stats
            .record(ended, ended - started, fault.is_some_and(crate::Fault::is_failure));
    }

    fn add_replica(&self, package: Arc<Package>) {
        self.replicas.push(package);
        self.queue.add_slots(self.config.max_concurrent.max(1));
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
                if !self.replicas.reserve() {
                    tracing::warn!(service = %self.service, version = %self.name, placed = current, wanted = n, "capped: {}", self.replicas.capacity_note());
                    break;
                }
                let this = self.clone();
                let started = Instant::now();
                match tokio::task::spawn_blocking(move || this.replicas.load(&this.name)).await {
                    Ok(Ok(p)) => {
                        self.observe_load(started.elapsed());
                        self.add_replica(Arc::new(p));
                    }
                    Ok(Err(e)) => {
                        self.replicas.unreserve();
                        tracing::error!(service = %self.service, version = %self.name, error = %e, "could not add a replica");
                        break;
                    }
                    Err(e) => {
                        self.replicas.unreserve();
                        tracing::error!(service = %self.service, version = %self.name, error = %e, "could not add a replica");
                        break;
                    }
                }
            } else {
                // Take one replica's worth of free slots, so nothing new lands on it, then drop the idlest one.
                let slots = self.config.max_concurrent.max(1);
                if !self.queue.retire_slots(slots, Duration::from_secs(1)).await {
                    break;
                }
                self.replicas.remove_idlest();
            }
        }
        self.report_replicas();
        self.replica_count()
    }

    /// `plinth_model_provider_info` (and `plinth_model_provider_fallback`) for each model of this version,
    /// replacing what an earlier deployment of the same version name reported.
    fn report_providers(&self) {
        let Some(m) = &self.reporting.metrics else {
            return;
        };
        for (model, p) in &self.info.placements {
            let (service, version, model) = (self.service.as_str(), &*self.name, model.as_str());
            for other in plinth_runtime::onnx::ep::Provider::ALL {
                if other != p.provider {
                    let _ = m
                        .model_provider
                        .remove_label_values(&[service, version, model, other.name()]);
                }
            }
            m.model_provider
                .with_label_values(&[service, version, model, p.provider.name()])
                .set(1);
            let fallback = m.model_provider_fallback.with_label_values(&[service, version, model]);
            fallback.set(i64::from(p.fallback.is_some()));
        }
    }

    fn report_replicas(&self) {
        if let Some(m) = &self.reporting.metrics {
            m.replicas
                .with_label_values(&[self.service.as_str(), &self.name])
                .set(self.replica_count() as i64);
        }
    }

    fn observe_load(&self, took: Duration) {
        if let Some(m) = &self.reporting.metrics {
            m.model_load_seconds
                .with_label_values(&[self.service.as_str(), &self.name])
                .observe(took.as_secs_f64());
        }
    }
}

impl Scalable for Version {
    fn sample(&self) -> (u32, f64, bool) {
        let current = self.replica_count();
        let busy = self.replicas.busy();
        let waiting = self.queue.waiting();
        let u = if current == 0 {
            if waiting > 0 { f64::INFINITY } else { 0.0 }
        } else {
            (busy + waiting) as f64 / current as f64
        };
        (current, u, waiting > 0)
    }

    async fn cold_start_wanted(&self) {
        self.queue.cold_start_wanted().await
    }

    async fn scale_to(self: Arc<Self>, n: u32) -> u32 {
        Version::scale_to(&self, n).await
    }

    fn report(&self, u: f64) {
        *self.utilization.lock().unwrap_or_else(|p| p.into_inner()) = u;
        if let Some(m) = &self.reporting.metrics {
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

    fn note_scaling(&self, direction: &str, d: &Decision, placed: u32) {
        if let Some(m) = &self.reporting.metrics {
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
}

impl BatchTarget for Version {
    async fn run_batch(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        let (permit, started) = self.take_slot(Instant::now()).await?;
        self.call(permit, started, move |p| infer_on(p, &inputs)).await
    }

    fn record_request(&self, queued: Instant, error: Option<&Error>) {
        self.record(queued, error);
    }

    fn has_free_slot(&self) -> bool {
        self.queue.has_free_slot()
    }

    fn observe_batch(&self, rows: usize, waited: Duration) {
        if let Some(m) = &self.reporting.metrics {
            m.batch_size
                .with_label_values(&[self.service.as_str(), &self.name])
                .observe(rows as f64);
            m.batch_queue_seconds
                .with_label_values(&[self.service.as_str(), &self.name])
                .observe(waited.as_secs_f64());
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
        has_script: package.has_script(),
        wants_http: package.science().is_some(),
        schema: package.science().and_then(|s| s.schema().cloned()),
        placements: package
            .models()
            .iter()
            .map(|m| (m.name().to_string(), m.placement().clone()))
            .collect(),
    }
}
