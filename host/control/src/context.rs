//! What every part of the control plane shares, read-only: the workspace, the router it publishes to,
//! the engine that runs scripts, the host's logs, metrics and capacity, and its settings.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use plinth_router::{Capacity, Collector, LogHub, Metrics, Router, TokenIssuer};
use plinth_runtime::wasm::WasmEngine;

use crate::store::Workspace;

/// What every part of the control plane shares, read-only.
pub(crate) struct Context {
    pub(crate) ws: Arc<Workspace>,
    pub(crate) router: Arc<Router>,
    pub(crate) engine: Arc<WasmEngine>,
    pub(crate) tokens: Arc<TokenIssuer>,
    pub(crate) logs: Arc<LogHub>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) capacity: Arc<Capacity>,
    /// Which GPU the next GPU replica loads on.
    pub(crate) gpus: Arc<crate::gpus::GpuPlacer>,
    pub(crate) options: ControlOptions,
}

/// Settings of a control plane.
#[derive(Debug, Clone)]
pub struct ControlOptions {
    /// Lifetime of the tokens `plinth service token` hands out. Default 1 hour.
    pub token_lifetime: Duration,
    pub ort_library: Option<PathBuf>,
    /// Where compiled entry scripts are cached. Default: `<workspace>/cache`.
    pub cache_dir: Option<PathBuf>,
    /// Sustained low utilization before replicas are removed. Default 60 s.
    pub scale_down_after: Duration,
    /// Where versions with `dataCollection.storageEnabled` send their records.
    pub collector: Option<Arc<Collector>>,
    /// CPU requests at most this multiple of the host's cores; None: no cap.
    pub cpu_oversubscription: Option<f64>,
    /// The service this host serves from a manifest (`plinth serve --service-manifest`): the admin API
    /// refuses every write.
    pub declared: Option<String>,
    /// GPUs replicas may be placed on, instead of those the driver and CUDA report (`plinth serve
    /// --gpus`): to keep some for other work, or to try placement on a machine without one.
    pub gpus: Option<u32>,
    /// Each GPU's memory in GB, instead of what the driver reports (`plinth serve --gpu-memory-gb`).
    pub gpu_memory_gb: Option<f64>,
}

impl Default for ControlOptions {
    fn default() -> Self {
        ControlOptions {
            token_lifetime: Duration::from_secs(3600),
            ort_library: None,
            cache_dir: None,
            scale_down_after: Duration::from_secs(60),
            collector: None,
            cpu_oversubscription: None,
            declared: None,
            gpus: None,
            gpu_memory_gb: None,
        }
    }
}
