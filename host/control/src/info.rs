//! `GET /api/v1/admin/info` and `plinth info`: the host's ONNX Runtime, providers, GPUs, cores, memory
//! and what is reserved.

use std::path::Path;

use plinth_router::Capacity;
use plinth_runtime::onnx::{self, Gpus, ep};

use crate::api::{GpuInfo, HostInfo, OnnxRuntimeInfo, PackageVersion, Reserved};
use crate::gpus::GpuPlacer;

/// This host as it is now: `capacity` is the running host's budget (None: this machine as a new host
/// would see it).
pub fn host_info(capacity: Option<&Capacity>, library: Option<&Path>) -> HostInfo {
    host_info_placed(capacity, None, library)
}

/// As [`host_info`], with each GPU as the running host's placer holds it.
pub(crate) fn host_info_placed(
    capacity: Option<&Capacity>,
    placer: Option<&GpuPlacer>,
    library: Option<&Path>,
) -> HostInfo {
    let loaded = onnx::environment(library);
    let providers = ep::library_providers()
        .into_iter()
        .map(|name| match ep::short_name(&name) {
            Some(p) => p.name().to_string(),
            None => name,
        })
        .collect();
    let onnx_runtime = OnnxRuntimeInfo {
        library: onnx::library_path().map(|p| p.display().to_string()),
        version: onnx::library_version(),
        providers,
        error: loaded.err().map(|e| e.to_string()),
    };
    let gpus = Gpus::of_host();
    let running = capacity.is_some();
    let own;
    let capacity = match capacity {
        Some(c) => c,
        None => {
            own = Capacity::of_host();
            &own
        }
    };
    let (cores, memory_bytes, count) = capacity.total();
    let (free_cores, free_memory) = capacity.free();
    HostInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        onnx_runtime,
        gpus: GpuInfo {
            count: count.max(gpus.count()),
            nvidia: gpus.nvidia,
            onnx_runtime: gpus.onnx_runtime.clone(),
            cuda: gpus.cuda,
            devices: {
                let used: Vec<u64> = gpus.memory.iter().map(|m| m.1).collect();
                match placer {
                    Some(p) => p.devices(&used),
                    None if gpus.memory.is_empty() => Vec::new(),
                    None => {
                        let totals: Vec<u64> = gpus.memory.iter().map(|m| m.0).collect();
                        GpuPlacer::new(totals.len() as u32, &totals).devices(&used)
                    }
                }
            },
        },
        cores,
        memory_bytes,
        reserved: running.then(|| Reserved {
            cores: ((cores - free_cores) * 1000.0).round() / 1000.0,
            cpu_subscription: (capacity.cpu_subscription().0 * 1000.0).round() / 1000.0,
            cpu_oversubscription_cap: capacity.cpu_subscription().1,
            memory_bytes: memory_bytes - free_memory,
            gpus: count - capacity.free_gpus(),
        }),
        scientific_python: plinth_runtime::wasm::Artifacts::find().ok().map(|a| {
            a.versions(SCIENCE_SHOWN)
                .into_iter()
                .map(|(name, version)| PackageVersion { name, version })
                .collect()
        }),
    }
}

/// The packages of the scientific runtime `plinth info` names (with Python itself).
const SCIENCE_SHOWN: &[&str] = &[
    "python",
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "joblib",
    "statsmodels",
    "matplotlib",
];
