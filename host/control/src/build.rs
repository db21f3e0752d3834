//! Building a version: its files placed from the blob store as Azure ML lays out `AZUREML_MODEL_DIR`, its
//! entry script compiled (cached), its deployment config turned into the router's limits, and its first
//! replicas loaded. Slow, so it runs on the blocking pool, never on the actor or a request.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use plinth_router::{Factory, Policy, Reporting, Sampling, Version, VersionConfig};
use plinth_runtime::onnx::SessionOptions;
use plinth_runtime::wasm::ScriptLimits;
use plinth_runtime::{ModelSource, Package, PackageSpec};

use crate::context::Context;
use crate::gpus::{Need, Owner, gb};
use plinth_spec::config::DeploymentConfig;
use plinth_spec::record::{FileRef, ModelRecord, VersionRecord, check_relative};

use crate::store::Workspace;
use crate::{Error, Result};

impl Context {
    pub(crate) fn deploy_root(&self, name: &str) -> PathBuf {
        self.ws.root().join("deployments").join(name)
    }

    /// Removes the files of a version's older generations (loaded sessions and open directories stay valid).
    pub(crate) fn prune(&self, service: &str, version: &str, keep: u64) {
        let dir = self.deploy_root(service).join(version);
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy() != keep.to_string() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }

    /// The autoscaling policy of a version, if its deployment config turns autoscaling on.
    pub(crate) fn policy(&self, dc: &DeploymentConfig) -> Option<Policy> {
        dc.autoscale().then(|| Policy {
            target: dc.auto_scaler.target_utilization as f64 / 100.0,
            min: dc.auto_scaler.min_replicas,
            max: dc.auto_scaler.max_replicas,
            scale_down_after: self.options.scale_down_after,
            refresh: Duration::from_secs(dc.auto_scaler.refresh_period_in_seconds as u64),
        })
    }

    /// Materialises files, prepares the entry script and loads the package.
    pub(crate) fn build(
        &self,
        service: &str,
        record: &VersionRecord,
        generation: u64,
        stop: Arc<AtomicBool>,
    ) -> Result<Version> {
        let dir = self
            .deploy_root(service)
            .join(&record.name)
            .join(generation.to_string());
        let models_dir = dir.join("models");
        let src_dir = dir.join("src");
        let mut sources = Vec::new();
        let records = model_records(&self.ws, record)?;
        let single = records.len() == 1;
        for m in &records {
            // As Azure ML lays out AZUREML_MODEL_DIR: one model's files directly, several as <name>/<version>/.
            let base = if single {
                models_dir.clone()
            } else {
                models_dir.join(&m.name).join(m.version.to_string())
            };
            for f in &m.files {
                self.materialize(f, &base)?;
            }
            let onnx: Vec<&FileRef> = m.files.iter().filter(|f| f.path.ends_with(".onnx")).collect();
            match onnx.as_slice() {
                [one] => sources.push(ModelSource {
                    name: m.name.clone(),
                    path: base.join(&one.path),
                }),
                [] => {}
                _ => {
                    return Err(Error::BadRequest(format!(
                        "model {} holds several .onnx files; register them separately",
                        m.id()
                    )));
                }
            }
        }
        std::fs::create_dir_all(&models_dir).map_err(Error::io(&models_dir))?;
        for f in &record.source {
            self.materialize(f, &src_dir)?;
        }
        let cache = self
            .options
            .cache_dir
            .clone()
            .unwrap_or_else(|| self.ws.root().join("cache"));
        let entry_script = match &record.entry_script {
            Some(script) => {
                self.logs.event(
                    service,
                    "INFO",
                    &format!("version {}: preparing entry script {script}", record.name),
                );
                let path = src_dir.join(script);
                let tell = |what: &str| {
                    self.logs
                        .event(service, "INFO", &format!("version {}: {what}", record.name))
                };
                Some(crate::scripts::prepare_telling(&path, &cache, &tell)?)
            }
            None => None,
        };
        if entry_script.is_none() && sources.len() != 1 {
            return Err(Error::BadRequest(
                "without an entry script the model must hold exactly one .onnx file".into(),
            ));
        }
        let dc = &record.deployment_config;
        let enable_gpu = record.inference_config.enable_gpu.unwrap_or(false);
        let providers = dc.providers(enable_gpu).map_err(Error::BadRequest)?;
        let host_gpus = self.capacity.gpus();
        let replica_gpus = dc.replica_gpus(&providers, host_gpus);
        if replica_gpus > host_gpus {
            return Err(Error::BadRequest(format!(
                "gpuCores: {replica_gpus} asks for {replica_gpus} GPU(s) per replica and this host has {host_gpus} \
                 (`plinth info` lists what it has): deploy to a host with an NVIDIA GPU and the GPU build of ONNX \
                 Runtime (`scripts/setup --gpu`), or leave gpuCores out to run on the CPU"
            )));
        }
        let share = dc.gpu_share_bytes();
        if let Some(bytes) = share {
            let largest = self.gpus.largest();
            if host_gpus == 0 {
                return Err(Error::BadRequest(
                    "gpuMemoryGb asks for a share of a GPU and this host has none (`plinth info` lists what it \
                     has): deploy to a host with an NVIDIA GPU, or leave gpuMemoryGb out to run on the CPU"
                        .into(),
                ));
            }
            if largest > 0 && bytes > largest {
                return Err(Error::BadRequest(format!(
                    "gpuMemoryGb: {:.1} GB is more than this host's largest GPU holds ({:.1} GB)",
                    gb(bytes),
                    gb(largest)
                )));
            }
        }
        let need = match share {
            Some(bytes) => Some(Need::Share(bytes)),
            None if replica_gpus > 0 => Some(Need::Whole),
            None => None,
        };
        let owner = Owner {
            name: format!("{service}/{}", record.name),
            generation,
        };
        let replicas = dc.initial_replicas();
        let slots = (replicas * dc.max_concurrent_requests_per_container) as usize;
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let memory_bytes = (dc.container_resource_requirements.memory_in_gb * (1u64 << 30) as f64) as u64;
        let spec = PackageSpec {
            models: sources,
            entry_script,
            script_name: Some(service.to_string()),
            model_dir: Some(models_dir),
            session: SessionOptions {
                intra_threads: (dc.container_resource_requirements.cpu.ceil() as usize).clamp(1, cores),
                sessions: slots.clamp(1, 64),
                providers,
                cache_dir: Some(cache),
                device_id: None,
                base_dir: Some(src_dir.clone()),
                gpu_memory: share,
            },
            limits: ScriptLimits {
                deadline: Duration::from_millis(dc.scoring_timeout_ms),
                init_deadline: dc
                    .init_timeout_seconds
                    .map_or(ScriptLimits::default().init_deadline, Duration::from_secs),
                memory_bytes: memory_bytes as usize,
                max_idle: slots.clamp(1, 64),
                tmp_bytes: dc
                    .script_tmp_mb
                    .map_or(ScriptLimits::default().tmp_bytes, |mb| mb.saturating_mul(1 << 20)),
                stop,
                ..ScriptLimits::default()
            },
            ort_library: self.options.ort_library.clone(),
        };
        let engine = self.engine.clone();
        let warm_rows = dc.max_batch_size.unwrap_or(1) as usize;
        // Every replica runs each batch size it will see once at load, so no request pays for a first size.
        // A GPU replica loads where the host's placer puts it (a whole GPU: the one holding the fewest; a
        // share: where its memory fits) and holds its place there while it lives; each has its own
        // sessions (and so its own CUDA streams).
        let gpus = self.gpus.clone();
        let factory: Factory = Arc::new(move || {
            let package = if let Some(need) = need {
                let lease = gpus.take(&owner, need).map_err(plinth_runtime::Error::Config)?;
                let mut spec = spec.clone();
                spec.session.device_id = Some(lease.device());
                Package::load(&spec, Some(&engine))?.with_lease(lease)
            } else {
                Package::load(&spec, Some(&engine))?
            };
            if warm_rows > 1 {
                plinth_router::warm_batch_sizes(&package, warm_rows);
            }
            Ok(package)
        });
        self.logs.event(
            service,
            "INFO",
            &format!("version {}: loading {replicas} replica(s)", record.name),
        );
        let config = VersionConfig {
            replicas,
            max_concurrent: dc.max_concurrent_requests_per_container,
            max_queue_wait: Duration::from_millis(dc.max_queue_wait_ms),
            scoring_timeout: Duration::from_millis(dc.scoring_timeout_ms),
            replica_cpu: dc.container_resource_requirements.cpu,
            replica_memory: memory_bytes,
            replica_gpus,
        };
        let collection = match (&self.options.collector, dc.data_collection.storage_enabled) {
            (Some(c), true) => {
                let (model, model_version) = match records.first() {
                    Some(m) => (m.name.clone(), m.version.to_string()),
                    None => (service.to_string(), record.name.clone()),
                };
                Some((
                    c.clone(),
                    Sampling::new(model, model_version, dc.data_collection.sample_rate.unwrap_or(1.0)),
                ))
            }
            _ => None,
        };
        let reporting = Reporting {
            metrics: Some(self.metrics.clone()),
            collection,
        };
        let version = Version::with_factory(
            service,
            &record.name,
            factory,
            config,
            Some(self.capacity.clone()),
            reporting,
        )
        .map_err(|e| match e {
            // A script that fails to load or init, or providers the host cannot give, are the deployer's
            // problem, reported as such.
            plinth_router::Error::Runtime(e) if e.fault() == plinth_runtime::Fault::Package => {
                Error::BadRequest(e.to_string())
            }
            e => Error::Router(e),
        })?;
        let listed = !record
            .deployment_config
            .providers(enable_gpu)
            .unwrap_or_default()
            .is_empty();
        for (model, p) in &version.info().placements {
            if let Some(fallback) = &p.fallback {
                self.logs.event(
                    service,
                    "WARN",
                    &format!("version {}: model {model}: {fallback}", record.name),
                );
            } else if listed {
                let all: Vec<&str> = p.providers.iter().map(|p| p.name()).collect();
                self.logs.event(
                    service,
                    "INFO",
                    &format!(
                        "version {}: model {model} runs on {} ({})",
                        record.name,
                        p.provider,
                        all.join(", ")
                    ),
                );
            }
        }
        Ok(version)
    }

    /// Places a blob at `base/<path>`: a hard link where the filesystem allows, else a copy.
    fn materialize(&self, f: &FileRef, base: &Path) -> Result<()> {
        check_relative(&f.path)?;
        let to = base.join(&f.path);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(Error::io(parent))?;
        }
        let from = self.ws.blob_path(&f.sha256)?;
        if to.exists() {
            return Ok(());
        }
        std::fs::hard_link(&from, &to)
            .or_else(|_| std::fs::copy(&from, &to).map(drop))
            .map_err(Error::io(&to))
    }
}

/// Models of a version, as records (for placing their files).
fn model_records(ws: &Workspace, record: &VersionRecord) -> Result<Vec<ModelRecord>> {
    record.models.iter().map(|id| ws.model(id)).collect()
}
