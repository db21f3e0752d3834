//! NVIDIA CUDA: the GPU provider of the `onnxruntime-gpu` wheel. Its CUDA and cuDNN libraries come as
//! wheels too (`nvidia-*`), in the same site-packages; they are loaded from there before the provider
//! starts, as the wheel's own Python package does, so no `LD_LIBRARY_PATH` is needed.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::{Context, OrtPairs};

pub const INSTALL_HINT: &str = "the CUDA provider comes with the GPU build of ONNX Runtime: `scripts/setup --gpu` \
     installs onnxruntime-gpu==1.31.1 with its CUDA and cuDNN wheels, or set ORT_DYLIB_PATH to that build's \
     libonnxruntime.so";

pub use plinth_spec::provider::CudaOptions as Options;

impl OrtPairs for Options {
    fn pairs(&self, cx: &Context) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(id) = self.device_id.or(cx.device_id) {
            out.push(("device_id", id.to_string()));
        }
        // The tighter of the provider's own limit and the replica's promised share.
        let own = self.memory_limit_mb.map(|mb| mb << 20);
        if let Some(bytes) = own.into_iter().chain(cx.gpu_memory).min() {
            out.push(("gpu_mem_limit", bytes.to_string()));
        }
        if let Some(on) = self.tf32 {
            out.push(("use_tf32", if on { "1" } else { "0" }.to_string()));
        }
        out
    }
}

/// The CUDA runtime, cuBLAS, cuFFT, cuRAND, NVRTC, cuDNN (and TensorRT) shipped as wheels beside the ONNX
/// Runtime library, in dependency order, for both the per-component (CUDA 12) and the consolidated
/// `nvidia/cu13` (CUDA 13) layouts.
fn wheel_libraries(site_packages: &Path) -> Vec<PathBuf> {
    let nvidia = site_packages.join("nvidia");
    let mut out = Vec::new();
    for major in ["13", "12"] {
        let cufft = if major == "13" { "12" } else { "11" };
        let names = [
            format!("libcublasLt.so.{major}"),
            format!("libcublas.so.{major}"),
            format!("libnvrtc.so.{major}"),
            "libcurand.so.10".to_string(),
            format!("libcufft.so.{cufft}"),
            format!("libcudart.so.{major}"),
        ];
        let consolidated = nvidia.join(format!("cu{major}")).join("lib");
        let split = ["cublas", "cublas", "cuda_nvrtc", "curand", "cufft", "cuda_runtime"];
        for (name, component) in names.iter().zip(split) {
            for dir in [consolidated.clone(), nvidia.join(component).join("lib")] {
                let file = dir.join(name);
                if file.is_file() && !out.contains(&file) {
                    out.push(file);
                }
            }
        }
    }
    let cudnn = nvidia.join("cudnn").join("lib").join("libcudnn.so.9");
    if cudnn.is_file() {
        out.push(cudnn);
    }
    // TensorRT 10 (the tensorrt-cu13-libs wheel), for the tensorrt provider.
    for name in ["libnvinfer.so.10", "libnvinfer_plugin.so.10", "libnvonnxparser.so.10"] {
        let file = site_packages.join("tensorrt_libs").join(name);
        if file.is_file() {
            out.push(file);
        }
    }
    out
}

/// Loads the wheels' CUDA libraries once per process (globally, so the provider library finds them).
/// Libraries the system already provides, or that are missing, are left to the provider's own error.
#[allow(unsafe_code)]
pub(crate) fn preload_libraries() {
    static DONE: OnceLock<Vec<String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let Some(site) = super::super::library_path().and_then(site_packages_of) else {
            return Vec::new();
        };
        let mut loaded = Vec::new();
        for lib in wheel_libraries(&site) {
            // SAFETY: these are NVIDIA's shared libraries, whose initialisers only set up their runtime.
            let opened = unsafe {
                libloading::os::unix::Library::open(
                    Some(&lib),
                    libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL,
                )
            };
            match opened {
                Ok(handle) => {
                    // Kept for the life of the process, as the provider library links against them.
                    std::mem::forget(handle);
                    loaded.push(lib.display().to_string());
                }
                Err(e) => tracing::warn!("could not load {}: {e}", lib.display()),
            }
        }
        if !loaded.is_empty() {
            tracing::debug!(libraries = loaded.len(), "loaded the CUDA wheels' libraries");
        }
        loaded
    });
}

/// GPUs the CUDA runtime that the provider uses sees (`cudaGetDeviceCount`), after loading the wheels'
/// libraries as the provider would; None without a CUDA runtime to ask.
#[allow(unsafe_code)]
pub fn device_count() -> Option<u32> {
    preload_libraries();
    for name in ["libcudart.so.13", "libcudart.so.12", "libcudart.so"] {
        // SAFETY: NVIDIA's CUDA runtime (already loaded by `preload_libraries` when the wheels have it);
        // `cudaGetDeviceCount(int*) -> cudaError_t` is its documented C signature.
        let count = unsafe {
            let Ok(lib) = libloading::Library::new(name) else {
                continue;
            };
            let Ok(get) =
                lib.get::<unsafe extern "C" fn(*mut std::ffi::c_int) -> std::ffi::c_int>(b"cudaGetDeviceCount")
            else {
                continue;
            };
            let mut n: std::ffi::c_int = 0;
            (get(&mut n) == 0).then_some(n.max(0) as u32)
        };
        return count;
    }
    None
}

/// Each NVIDIA GPU's memory as the driver's management library (NVML, `libnvidia-ml.so.1`) reports it:
/// (total, used) bytes, in NVML's order. None without the driver's library.
#[allow(unsafe_code)]
pub fn memory() -> Option<Vec<(u64, u64)>> {
    #[repr(C)]
    struct NvmlMemory {
        total: u64,
        free: u64,
        used: u64,
    }
    type Device = *mut std::ffi::c_void;
    // SAFETY: NVIDIA's management library; every function is called with the C signature its
    // documentation gives (`nvmlReturn_t` is an int, 0 for success), and pointers to live locals.
    unsafe {
        let lib = libloading::Library::new("libnvidia-ml.so.1").ok()?;
        let init = lib
            .get::<unsafe extern "C" fn() -> std::ffi::c_int>(b"nvmlInit_v2")
            .ok()?;
        let shutdown = lib
            .get::<unsafe extern "C" fn() -> std::ffi::c_int>(b"nvmlShutdown")
            .ok()?;
        let count = lib
            .get::<unsafe extern "C" fn(*mut std::ffi::c_uint) -> std::ffi::c_int>(b"nvmlDeviceGetCount_v2")
            .ok()?;
        let handle = lib
            .get::<unsafe extern "C" fn(std::ffi::c_uint, *mut Device) -> std::ffi::c_int>(
                b"nvmlDeviceGetHandleByIndex_v2",
            )
            .ok()?;
        let info = lib
            .get::<unsafe extern "C" fn(Device, *mut NvmlMemory) -> std::ffi::c_int>(b"nvmlDeviceGetMemoryInfo")
            .ok()?;
        if init() != 0 {
            return None;
        }
        let mut n: std::ffi::c_uint = 0;
        let mut out = Vec::new();
        if count(&mut n) == 0 {
            for i in 0..n {
                let mut device: Device = std::ptr::null_mut();
                let mut m = NvmlMemory {
                    total: 0,
                    free: 0,
                    used: 0,
                };
                if handle(i, &mut device) == 0 && info(device, &mut m) == 0 {
                    out.push((m.total, m.used));
                } else {
                    out.push((0, 0));
                }
            }
        }
        shutdown();
        Some(out)
    }
}

/// `.../site-packages` for a library at `.../site-packages/onnxruntime/capi/libonnxruntime.so.*`.
fn site_packages_of(library: &Path) -> Option<PathBuf> {
    let capi = library.parent()?;
    let package = capi.parent()?;
    (capi.file_name()? == "capi" && package.file_name()? == "onnxruntime")
        .then(|| package.parent())?
        .map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_become_onnx_runtime_keys() {
        let cx = Context {
            device_id: Some(2),
            ..Context::default()
        };
        assert_eq!(Options::default().pairs(&cx), vec![("device_id", "2".to_string())]);
        let o = Options {
            device_id: Some(0),
            memory_limit_mb: Some(1024),
            tf32: Some(false),
        };
        assert_eq!(
            o.pairs(&cx),
            vec![
                ("device_id", "0".to_string()),
                ("gpu_mem_limit", (1u64 << 30).to_string()),
                ("use_tf32", "0".to_string()),
            ]
        );
        assert!(Options::default().pairs(&Context::default()).is_empty());
        // A replica's share caps the arena unless the provider's own limit is tighter.
        let shared = Context {
            gpu_memory: Some(512 << 20),
            ..Context::default()
        };
        assert_eq!(
            Options::default().pairs(&shared),
            vec![("gpu_mem_limit", (512u64 << 20).to_string())]
        );
        assert_eq!(o.pairs(&shared)[1], ("gpu_mem_limit", (512u64 << 20).to_string()));
    }

    #[test]
    fn finds_the_wheels_libraries_in_both_layouts() {
        let root = std::env::temp_dir().join(format!("plinth-cudalibs-{}", std::process::id()));
        let site = root.join("lib/python3.12/site-packages");
        let capi = site.join("onnxruntime/capi");
        std::fs::create_dir_all(&capi).unwrap();
        assert_eq!(
            site_packages_of(&capi.join("libonnxruntime.so.1.31.1")),
            Some(site.clone())
        );
        assert_eq!(site_packages_of(Path::new("/usr/lib/libonnxruntime.so")), None);
        for f in [
            "nvidia/cu13/lib/libcudart.so.13",
            "nvidia/cu13/lib/libcublasLt.so.13",
            "nvidia/cu13/lib/libcublas.so.13",
            "nvidia/cudnn/lib/libcudnn.so.9",
            "nvidia/curand/lib/libcurand.so.10",
            "tensorrt_libs/libnvinfer.so.10",
        ] {
            let p = site.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, b"").unwrap();
        }
        let names: Vec<String> = wheel_libraries(&site)
            .iter()
            .map(|p| p.strip_prefix(&site).unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "nvidia/cu13/lib/libcublasLt.so.13",
                "nvidia/cu13/lib/libcublas.so.13",
                "nvidia/curand/lib/libcurand.so.10",
                "nvidia/cu13/lib/libcudart.so.13",
                "nvidia/cudnn/lib/libcudnn.so.9",
                "tensorrt_libs/libnvinfer.so.10",
            ]
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
