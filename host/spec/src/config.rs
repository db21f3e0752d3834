//! Azure ML's deployment files, read as they are: `deploymentconfig.json` and `inferenceconfig.json`.
//!
//! Read as Azure's own loaders read them: every field Azure defines is accepted, in the spellings real
//! files use (`cpuCores`, `memoryInGb`, `enableAppInsights`, `extraDockerfileSteps`). Fields that mean
//! nothing on a Plinth host (compute type, namespace, Application Insights, ...) and keys nobody defines
//! are collected in [`Ignored`] and reported once, never failing a deployment. A known field with a
//! wrong type or an impossible value is an error that names the field.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::provider::{Provider, ProviderSpec};

/// What went wrong reading a configuration file.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub message: String,
}

/// Fields accepted but without effect here, by dotted path.
pub type Ignored = Vec<String>;

/// `deploymentconfig.json`, with Azure's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeploymentConfig {
    /// `"aks"`, `"ACI"`, `"local"`: accepted and ignored (a Plinth host is the compute).
    pub compute_type: Option<String>,
    pub container_resource_requirements: ResourceRequirements,
    pub auto_scaler: AutoScaler,
    /// Key auth (primary and secondary keys). Default true.
    pub auth_enabled: bool,
    /// Token auth (JWTs from `plinth service token`). Default false.
    pub token_auth_enabled: bool,
    /// Keys to use instead of generated ones.
    pub keys: Keys,
    /// Deadline of one scoring request, in ms. Default 60000.
    pub scoring_timeout_ms: u64,
    /// Requests one replica serves at once. Default 1.
    pub max_concurrent_requests_per_container: u32,
    /// How long a request may wait for a free replica, in ms. Default 500.
    pub max_queue_wait_ms: u64,
    /// Replicas when autoscaling is off. Default 1.
    pub num_replicas: Option<u32>,
    pub data_collection: DataCollection,
    /// Plinth: how long the entry script's `init()` may run on a fresh instance, in seconds (Azure has no
    /// such bound). Default 120.
    pub init_timeout_seconds: Option<u64>,
    /// Plinth: what a scientific `score.py` may write into its private `/` and `/tmp`, in MiB; writes
    /// beyond it fail in the script with ENOSPC. Default 128.
    pub script_tmp_mb: Option<u64>,
    /// Plinth: rows per dynamic batch for an ONNX model with a batch dimension. Default: no batching.
    pub max_batch_size: Option<u32>,
    /// Plinth: how long a request may wait for others to batch with, in microseconds. Default 500.
    pub max_batch_delay_micros: Option<u64>,
    /// Plinth: ONNX Runtime execution providers in order of preference, each a name (`"cuda"`) or an
    /// object with a name and options (`{"name": "tensorrt", "fp16": true}`). Default: `["cuda"]` when
    /// `gpuCores` ≥ 1 (or the inference config's `enableGpu`), else the CPU.
    pub execution_providers: Option<Vec<serde_json::Value>>,
    /// GPUs per replica (Azure's field): counted against the host's GPUs; without
    /// `executionProviders`, ≥ 1 means `["cuda"]`.
    pub gpu_cores: Option<u32>,
    /// Plinth: GPU memory one replica is promised, in GB, instead of a whole GPU: replicas of any service
    /// share a GPU while their promises fit in its memory (as Triton's instance groups and Ray's
    /// fractional GPUs do), and ONNX Runtime's CUDA arena is capped to the promise. Without
    /// `executionProviders` it means `["cuda"]`.
    pub gpu_memory_gb: Option<f64>,
    pub description: Option<String>,
    pub tags: Option<serde_json::Map<String, serde_json::Value>>,
    pub properties: Option<serde_json::Map<String, serde_json::Value>>,
    /// `cpuCores` at the top level (older files): containerResourceRequirements.cpu.
    pub cpu_cores: Option<f64>,
    /// `memoryInGB` at the top level (older files): containerResourceRequirements.memoryInGB.
    #[serde(rename = "memoryInGB", alias = "memoryInGb", alias = "memoryGb", alias = "memoryGB")]
    pub memory_in_gb: Option<f64>,
    // Accepted, without effect on a Plinth host:
    #[serde(alias = "enableAppInsights")]
    pub app_insights_enabled: Option<bool>,
    pub namespace: Option<String>,
    pub compute_target_name: Option<String>,
    /// On Kubernetes, the host container's liveness probe (`plinth controller render`); none on a host.
    pub liveness_probe_requirements: Option<ProbeRequirements>,
    /// On Kubernetes, the host container's readiness probe; none on a host.
    pub readiness_probe_requirements: Option<ProbeRequirements>,
    /// The liveness probe's settings at the top level (older files): `livenessProbeRequirements`'s.
    pub period_seconds: Option<u32>,
    pub initial_delay_seconds: Option<u32>,
    pub timeout_seconds: Option<u32>,
    pub success_threshold: Option<u32>,
    pub failure_threshold: Option<u32>,
    pub location: Option<String>,
    pub ssl_enabled: Option<bool>,
    pub ssl_certificate: Option<String>,
    pub ssl_key: Option<String>,
    pub ssl_cname: Option<String>,
    pub dns_name_label: Option<String>,
    pub cname: Option<String>,
    pub primary_key: Option<String>,
    pub secondary_key: Option<String>,
}

impl Default for DeploymentConfig {
    fn default() -> Self {
        DeploymentConfig {
            compute_type: None,
            container_resource_requirements: ResourceRequirements::default(),
            auto_scaler: AutoScaler::default(),
            auth_enabled: true,
            token_auth_enabled: false,
            keys: Keys::default(),
            scoring_timeout_ms: 60_000,
            max_concurrent_requests_per_container: 1,
            max_queue_wait_ms: 500,
            num_replicas: None,
            data_collection: DataCollection::default(),
            init_timeout_seconds: None,
            script_tmp_mb: None,
            max_batch_size: None,
            max_batch_delay_micros: None,
            execution_providers: None,
            cpu_cores: None,
            memory_in_gb: None,
            description: None,
            tags: None,
            properties: None,
            gpu_cores: None,
            gpu_memory_gb: None,
            app_insights_enabled: None,
            namespace: None,
            compute_target_name: None,
            liveness_probe_requirements: None,
            readiness_probe_requirements: None,
            period_seconds: None,
            initial_delay_seconds: None,
            timeout_seconds: None,
            success_threshold: None,
            failure_threshold: None,
            location: None,
            ssl_enabled: None,
            ssl_certificate: None,
            ssl_key: None,
            ssl_cname: None,
            dns_name_label: None,
            cname: None,
            primary_key: None,
            secondary_key: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ResourceRequirements {
    /// CPU cores per replica. Default 0.1.
    #[serde(alias = "cpuCores")]
    pub cpu: f64,
    /// Memory per replica, in GB. Default 0.5.
    #[serde(rename = "memoryInGB", alias = "memoryInGb", alias = "memoryGb", alias = "memoryGB")]
    pub memory_in_gb: f64,
    pub cpu_limit: Option<f64>,
    #[serde(rename = "memoryInGBLimit")]
    pub memory_in_gb_limit: Option<f64>,
    pub gpu: Option<u32>,
}

impl Default for ResourceRequirements {
    fn default() -> Self {
        ResourceRequirements {
            cpu: 0.1,
            memory_in_gb: 0.5,
            cpu_limit: None,
            memory_in_gb_limit: None,
            gpu: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AutoScaler {
    /// Default true (unless `numReplicas` is set).
    pub autoscale_enabled: Option<bool>,
    /// Default 1.
    pub min_replicas: u32,
    /// Default 10.
    pub max_replicas: u32,
    /// Percent. Default 70.
    pub target_utilization: u32,
    /// Seconds between scaling decisions. Default 1.
    pub refresh_period_in_seconds: u32,
}

impl Default for AutoScaler {
    fn default() -> Self {
        AutoScaler {
            autoscale_enabled: None,
            min_replicas: 1,
            max_replicas: 10,
            target_utilization: 70,
            refresh_period_in_seconds: 1,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Keys {
    pub primary_key: Option<String>,
    pub secondary_key: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DataCollection {
    pub storage_enabled: bool,
    /// Fraction of requests recorded, 0..=1. Default 1.
    pub sample_rate: Option<f64>,
}

/// Azure's probe settings (`livenessProbeRequirements`, `readinessProbeRequirements`), in the spellings of
/// its JSON files and of its Python SDK. Each is a Kubernetes probe's field of the same name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProbeRequirements {
    /// Seconds between probes.
    #[serde(alias = "period_seconds")]
    pub period_seconds: Option<u32>,
    /// Seconds after the container starts before the first probe.
    #[serde(alias = "initial_delay_seconds")]
    pub initial_delay_seconds: Option<u32>,
    /// Seconds a probe may take.
    #[serde(alias = "timeout_seconds")]
    pub timeout_seconds: Option<u32>,
    /// Successes in a row after a failure to count as passing again.
    #[serde(alias = "success_threshold")]
    pub success_threshold: Option<u32>,
    /// Failures in a row before the probe gives up.
    #[serde(alias = "failure_threshold")]
    pub failure_threshold: Option<u32>,
}

impl DeploymentConfig {
    /// The liveness probe's settings: `livenessProbeRequirements`, with what the top-level fields of
    /// older files give where it says nothing.
    pub fn liveness(&self) -> ProbeRequirements {
        let mut p = self.liveness_probe_requirements.clone().unwrap_or_default();
        p.period_seconds = p.period_seconds.or(self.period_seconds);
        p.initial_delay_seconds = p.initial_delay_seconds.or(self.initial_delay_seconds);
        p.timeout_seconds = p.timeout_seconds.or(self.timeout_seconds);
        p.success_threshold = p.success_threshold.or(self.success_threshold);
        p.failure_threshold = p.failure_threshold.or(self.failure_threshold);
        p
    }

    /// The readiness probe's settings.
    pub fn readiness(&self) -> ProbeRequirements {
        self.readiness_probe_requirements.clone().unwrap_or_default()
    }
}

/// `inferenceconfig.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct InferenceConfig {
    /// `score.py` (compiled to a component at deploy) or a `.wasm` component, relative to
    /// `sourceDirectory` when that is given. None: the ONNX model is served directly.
    pub entry_script: Option<String>,
    /// The project folder, packed as Azure packs it (minus what `.gitignore`/`.plinthignore` name).
    pub source_directory: Option<String>,
    /// `"python"` or `"wasm"`; inferred from the entry script when absent.
    pub runtime: Option<String>,
    pub description: Option<String>,
    // Accepted, without effect: the environment is the component itself.
    pub environment: Option<serde_json::Value>,
    pub conda_file: Option<String>,
    #[serde(alias = "extraDockerfileSteps")]
    pub extra_docker_file_steps: Option<String>,
    pub base_image: Option<String>,
    pub base_image_registry: Option<serde_json::Value>,
    /// Azure's GPU switch: without `executionProviders` in the deployment config, models run on `cuda`.
    pub enable_gpu: Option<bool>,
    pub cuda_version: Option<String>,
    pub schema_file: Option<String>,
    pub docker_file: Option<String>,
}

impl DeploymentConfig {
    pub fn from_json(file: &str, bytes: &[u8]) -> Result<(Self, Ignored), ConfigError> {
        let (mut config, unknown): (Self, _) = parse(file, bytes, lenient::File::Deployment)?;
        if let Some(cpu) = config.cpu_cores.take() {
            config.container_resource_requirements.cpu = cpu;
        }
        if let Some(gb) = config.memory_in_gb.take() {
            config.container_resource_requirements.memory_in_gb = gb;
        }
        config.validate().map_err(|message| ConfigError {
            file: file.into(),
            message,
        })?;
        let mut ignored = config.ignored();
        ignored.extend(unknown);
        Ok((config, ignored))
    }

    /// Whether autoscaling is on: explicitly, or by default when `numReplicas` is not set.
    pub fn autoscale(&self) -> bool {
        self.auto_scaler
            .autoscale_enabled
            .unwrap_or(self.num_replicas.is_none())
    }

    /// Replicas to start with.
    pub fn initial_replicas(&self) -> u32 {
        if self.autoscale() {
            self.auto_scaler.min_replicas.max(1)
        } else {
            self.num_replicas.unwrap_or(1).max(1)
        }
    }

    /// The execution providers to place models on: `executionProviders` as given, else `["cuda"]` when
    /// GPUs are asked for (`gpuCores` ≥ 1, or `enable_gpu` from the inference config), else none (CPU).
    pub fn providers(&self, enable_gpu: bool) -> Result<Vec<ProviderSpec>, String> {
        match &self.execution_providers {
            Some(list) => ProviderSpec::list_from_json(list).map_err(|e| format!("executionProviders{e}")),
            None if self.gpu_cores.unwrap_or(0) >= 1 || self.gpu_memory_gb.is_some() || enable_gpu => {
                Ok(vec![ProviderSpec::of(Provider::Cuda)])
            }
            None => Ok(Vec::new()),
        }
    }

    /// GPUs one replica takes from the host: `gpuCores` when given, else one when a GPU provider is
    /// listed first and the host has a GPU to give (on a host without, a listed `cpu` takes over).
    /// A replica with a share of a GPU (`gpuMemoryGb`) takes no whole one.
    pub fn replica_gpus(&self, providers: &[ProviderSpec], host_gpus: u32) -> u32 {
        if self.gpu_memory_gb.is_some() {
            return 0;
        }
        match self.gpu_cores {
            Some(n) => n,
            None => u32::from(host_gpus > 0 && providers.first().is_some_and(|p| p.provider().uses_gpu())),
        }
    }

    /// The GPU memory one replica is promised (`gpuMemoryGb`), in bytes.
    pub fn gpu_share_bytes(&self) -> Option<u64> {
        self.gpu_memory_gb.map(|gb| (gb * f64::from(1u32 << 30)) as u64)
    }

    fn validate(&self) -> Result<(), String> {
        if let Some(gb) = self.gpu_memory_gb {
            if !(gb > 0.0 && gb.is_finite()) {
                return Err(format!("gpuMemoryGb must be above 0, got {gb}"));
            }
            if self.gpu_cores.unwrap_or(0) >= 1 {
                return Err(
                    "give gpuCores (whole GPUs per replica) or gpuMemoryGb (a share of one GPU), not both".into(),
                );
            }
        }
        let r = &self.container_resource_requirements;
        if !(r.cpu > 0.0 && r.cpu.is_finite()) {
            return Err(format!(
                "containerResourceRequirements.cpu must be above 0, got {}",
                r.cpu
            ));
        }
        if !(r.memory_in_gb > 0.0 && r.memory_in_gb.is_finite()) {
            return Err(format!(
                "containerResourceRequirements.memoryInGB must be above 0, got {}",
                r.memory_in_gb
            ));
        }
        let a = &self.auto_scaler;
        if a.min_replicas > a.max_replicas {
            return Err(format!(
                "autoScaler.minReplicas ({}) is above autoScaler.maxReplicas ({})",
                a.min_replicas, a.max_replicas
            ));
        }
        if a.max_replicas == 0 {
            return Err("autoScaler.maxReplicas must be at least 1".into());
        }
        if !(1..=100).contains(&a.target_utilization) {
            return Err(format!(
                "autoScaler.targetUtilization must be 1..100 (percent), got {}",
                a.target_utilization
            ));
        }
        if a.refresh_period_in_seconds == 0 {
            return Err("autoScaler.refreshPeriodInSeconds must be at least 1".into());
        }
        if self.scoring_timeout_ms == 0 {
            return Err("scoringTimeoutMs must be above 0".into());
        }
        if self.init_timeout_seconds == Some(0) {
            return Err("initTimeoutSeconds must be above 0".into());
        }
        if self.script_tmp_mb == Some(0) {
            return Err("scriptTmpMb must be at least 1".into());
        }
        if self.max_concurrent_requests_per_container == 0 {
            return Err("maxConcurrentRequestsPerContainer must be at least 1".into());
        }
        if let Some(n) = self.max_batch_size
            && !(1..=4096).contains(&n)
        {
            return Err(format!("maxBatchSize must be 1..4096, got {n}"));
        }
        self.providers(false)?;
        if self.num_replicas == Some(0) {
            return Err("numReplicas must be at least 1".into());
        }
        if let Some(rate) = self.data_collection.sample_rate
            && !(0.0..=1.0).contains(&rate)
        {
            return Err(format!("dataCollection.sampleRate must be between 0 and 1, got {rate}"));
        }
        for (field, p) in [
            ("livenessProbeRequirements", self.liveness()),
            ("readinessProbeRequirements", self.readiness()),
        ] {
            for (name, value) in [
                ("periodSeconds", p.period_seconds),
                ("timeoutSeconds", p.timeout_seconds),
                ("successThreshold", p.success_threshold),
                ("failureThreshold", p.failure_threshold),
            ] {
                if value == Some(0) {
                    return Err(format!("{field}.{name} must be at least 1"));
                }
            }
        }
        // Kubernetes takes no other value for a liveness probe.
        if let Some(n) = self.liveness().success_threshold.filter(|&n| n != 1) {
            return Err(format!(
                "livenessProbeRequirements.successThreshold must be 1 (as Kubernetes requires), got {n}"
            ));
        }
        for (field, key) in [
            ("keys.primaryKey", &self.keys.primary_key),
            ("keys.secondaryKey", &self.keys.secondary_key),
        ] {
            if let Some(k) = key
                && k.len() < 16
            {
                return Err(format!("{field} must be at least 16 characters"));
            }
        }
        Ok(())
    }

    fn ignored(&self) -> Ignored {
        let mut out = Vec::new();
        let mut note = |set: bool, name: &str| {
            if set {
                out.push(name.to_string());
            }
        };
        note(self.compute_type.is_some(), "computeType");
        note(self.app_insights_enabled.is_some(), "appInsightsEnabled");
        note(self.namespace.is_some(), "namespace");
        note(self.compute_target_name.is_some(), "computeTargetName");
        for (set, name) in [
            (self.liveness_probe_requirements.is_some(), "livenessProbeRequirements"),
            (
                self.readiness_probe_requirements.is_some(),
                "readinessProbeRequirements",
            ),
            (self.period_seconds.is_some(), "periodSeconds"),
            (self.initial_delay_seconds.is_some(), "initialDelaySeconds"),
            (self.timeout_seconds.is_some(), "timeoutSeconds"),
            (self.success_threshold.is_some(), "successThreshold"),
            (self.failure_threshold.is_some(), "failureThreshold"),
        ] {
            note(set, &format!("{name} (the probes of pods on Kubernetes)"));
        }
        note(self.location.is_some(), "location");
        note(
            self.ssl_enabled.is_some(),
            "sslEnabled (TLS is the host's: plinth serve --tls-cert/--tls-key)",
        );
        note(self.ssl_certificate.is_some(), "sslCertificate");
        note(self.ssl_key.is_some(), "sslKey");
        note(self.ssl_cname.is_some(), "sslCname");
        note(self.dns_name_label.is_some(), "dnsNameLabel");
        note(self.cname.is_some(), "cname");
        note(
            self.container_resource_requirements.gpu.is_some(),
            "containerResourceRequirements.gpu",
        );
        note(
            self.container_resource_requirements.cpu_limit.is_some(),
            "containerResourceRequirements.cpuLimit",
        );
        note(
            self.container_resource_requirements.memory_in_gb_limit.is_some(),
            "containerResourceRequirements.memoryInGBLimit",
        );
        note(self.primary_key.is_some(), "primaryKey (use keys.primaryKey)");
        note(self.secondary_key.is_some(), "secondaryKey (use keys.secondaryKey)");
        out
    }
}

impl InferenceConfig {
    pub fn from_json(file: &str, bytes: &[u8]) -> Result<(Self, Ignored), ConfigError> {
        let (config, unknown): (Self, _) = parse(file, bytes, lenient::File::Inference)?;
        let err = |message: String| ConfigError {
            file: file.into(),
            message,
        };
        if let Some(rt) = &config.runtime
            && !matches!(
                rt.to_ascii_lowercase().as_str(),
                "python" | "wasm" | "rust" | "spark-py"
            )
        {
            return Err(err(format!(
                "runtime must be \"python\", \"wasm\" or \"rust\", got \"{rt}\""
            )));
        }
        if let Some(script) = &config.entry_script {
            let ext = Path::new(script).extension().and_then(|e| e.to_str()).unwrap_or("");
            if ext != "py" && ext != "wasm" {
                return Err(err(format!(
                    "entryScript must be a .py file or a .wasm component, got \"{script}\""
                )));
            }
        }
        let mut ignored = Vec::new();
        for (set, name) in [
            (
                config.environment.is_some(),
                "environment (the entry script's component is its environment)",
            ),
            (config.conda_file.is_some(), "condaFile"),
            (config.extra_docker_file_steps.is_some(), "extraDockerfileSteps"),
            (config.base_image.is_some(), "baseImage"),
            (config.base_image_registry.is_some(), "baseImageRegistry"),
            (config.cuda_version.is_some(), "cudaVersion"),
            (config.schema_file.is_some(), "schemaFile"),
            (config.docker_file.is_some(), "dockerFile"),
        ] {
            if set {
                ignored.push(name.to_string());
            }
        }
        ignored.extend(unknown);
        Ok((config, ignored))
    }

    /// The entry script's path, resolved against `base` (the folder of the config file).
    pub fn entry_script_path(&self, base: &Path) -> Option<PathBuf> {
        let script = self.entry_script.as_ref()?;
        Some(match self.source_dir(base) {
            Some(src) => src.join(script),
            None => base.join(script),
        })
    }

    pub fn source_dir(&self, base: &Path) -> Option<PathBuf> {
        self.source_directory.as_ref().map(|d| base.join(d))
    }
}

/// serde with the failing field's path in the message (`autoScaler.minReplicas: invalid type ...`), and
/// the keys nobody defines, by path, as Azure's loaders skip them (`someKey (not a field of this file)`).
/// A config file as `T`, with the fields it does not know. A boolean or a number given as text (as
/// Python's loader takes them) is read as what it spells; the Python SDK's parameter names are refused
/// naming the field they are (see `lenient.rs`). Errors name the field's path (and, when the file is read
/// as written, its line and column).
fn parse<T: serde::de::DeserializeOwned>(
    file: &str,
    bytes: &[u8],
    kind: lenient::File,
) -> Result<(T, Ignored), ConfigError> {
    let error = |path: &serde_path_to_error::Path, inner: &str| {
        let path = path.to_string();
        let inner = in_user_words(inner);
        ConfigError {
            file: file.into(),
            message: if path.is_empty() || path == "." {
                inner
            } else {
                format!("{path}: {inner}")
            },
        }
    };
    let as_written = read_noting_unknown::<T, _>(&mut serde_json::Deserializer::from_slice(bytes));
    let parsed = serde_json::from_slice::<serde_json::Value>(bytes).ok();
    if let Some(message) = parsed.as_ref().and_then(|v| lenient::sdk_spelling(kind, v)) {
        return Err(ConfigError {
            file: file.into(),
            message,
        });
    }
    let mut failed = match (as_written, parsed) {
        (Ok(read), _) => return Ok(read),
        (Err(e), None) => return Err(error(e.path(), &e.inner().to_string())),
        (Err(e), Some(value)) => (e, value),
    };
    // Text where a boolean or a number is read: read again with the text as what it spells.
    for _ in 0..64 {
        let (e, mut value) = failed;
        let message = e.inner().to_string();
        if !lenient::coerce(&mut value, e.path(), &message) {
            return Err(error(e.path(), &message));
        }
        match read_noting_unknown::<T, _>(&value) {
            Ok(read) => return Ok(read),
            Err(e) => failed = (e, value),
        }
    }
    let (e, _) = failed;
    Err(error(e.path(), &e.inner().to_string()))
}

/// `T` from `de`, with the paths of the fields `T` does not know.
fn read_noting_unknown<'de, T, D>(de: D) -> Result<(T, Ignored), serde_path_to_error::Error<D::Error>>
where
    T: serde::de::DeserializeOwned,
    D: serde::Deserializer<'de>,
{
    let mut unknown = Vec::new();
    let mut note = |path: serde_ignored::Path<'_>| unknown.push(format!("{path} (not a field of this file)"));
    let value = serde_path_to_error::deserialize(serde_ignored::Deserializer::new(de, &mut note))?;
    Ok((value, unknown))
}

/// JSON as `T`; on failure, the message with the failing field's path in front of it. Config files and
/// admin request bodies both read this way.
pub fn from_json_naming_the_field<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = in_user_words(&e.into_inner().to_string());
        if path.is_empty() || path == "." {
            inner
        } else {
            format!("{path}: {inner}")
        }
    })
}

/// serde's Rust type names in a message (`expected f64`) said as a config's reader would (`expected a
/// number`).
fn in_user_words(message: &str) -> String {
    const NUMBERS: &[&str] = &["f64", "f32", "u64", "u32", "u16", "u8", "i64", "i32", "usize"];
    let mut out = message.to_string();
    for n in NUMBERS {
        out = out.replace(&format!("expected {n}"), "expected a number");
    }
    out.replace("expected a string", "expected text in quotes")
        .replace("expected a sequence", "expected a list [...]")
        .replace("expected a map", "expected an object {...}")
}

mod lenient;
#[cfg(test)]
mod tests;
