//! Execution providers: where ONNX Runtime runs a model's operators. One file per provider, as `ort` has
//! them; each knows its options (as ONNX Runtime's key/value pairs, so they can be checked without the
//! hardware) and how to register itself on a session.
//!
//! A deployment names providers in order of preference (`"executionProviders": ["tensorrt", "cuda",
//! "cpu"]`). ONNX Runtime gives each operator to the first registered provider that can run it, the CPU
//! provider taking whatever is left. A provider the loaded library lacks, or one that fails to start,
//! fails the load with an error naming it, unless `cpu` comes later in the list: then it is dropped and
//! the fallback is reported ([`Placement::fallback`]), never silent.

pub mod cpu;
pub mod cuda;
pub mod openvino;
pub mod tensorrt;
pub mod vitis;

use std::path::PathBuf;

use ort::ep::{ArbitrarilyConfigurableExecutionProvider, ExecutionProvider, ExecutionProviderDispatch};
use serde::{Deserialize, Serialize};

pub use plinth_spec::provider::{Provider, ProviderSpec, cpu_after};

/// What the runtime knows of a provider beyond its name: ONNX Runtime's name for it, whether the loaded
/// library has it, and how to get one that does.
pub trait ProviderExt {
    /// ONNX Runtime's name (`CUDAExecutionProvider`).
    fn ort_name(self) -> &'static str;
    /// Whether the loaded ONNX Runtime library was built with this provider (false before one is loaded).
    fn is_available(&self) -> bool;
    /// How to get a library that has this provider.
    fn install_hint(self) -> &'static str;
}

impl ProviderExt for Provider {
    fn ort_name(self) -> &'static str {
        match self {
            Provider::Cpu => ort::ep::CPU::NAME,
            Provider::Cuda => ort::ep::CUDA::NAME,
            Provider::TensorRt => ort::ep::TensorRT::NAME,
            Provider::OpenVino => ort::ep::OpenVINO::NAME,
            Provider::Vitis => ort::ep::Vitis::NAME,
        }
    }

    fn is_available(&self) -> bool {
        if !super::loaded() {
            return *self == Provider::Cpu;
        }
        let found = match self {
            Provider::Cpu => return true,
            Provider::Cuda => ort::ep::CUDA::is_available(),
            Provider::TensorRt => ort::ep::TensorRT::is_available(),
            Provider::OpenVino => ort::ep::OpenVINO::is_available(),
            Provider::Vitis => ort::ep::Vitis::is_available(),
        };
        found.unwrap_or(false)
    }

    fn install_hint(self) -> &'static str {
        match self {
            Provider::Cpu => "",
            Provider::Cuda => cuda::INSTALL_HINT,
            Provider::TensorRt => tensorrt::INSTALL_HINT,
            Provider::OpenVino => openvino::INSTALL_HINT,
            Provider::Vitis => vitis::INSTALL_HINT,
        }
    }
}

/// One provider's options (`plinth_spec::provider`) as ONNX Runtime's key/value pairs for one model.
pub trait OrtPairs {
    fn pairs(&self, cx: &Context) -> Vec<(&'static str, String)>;
}

impl OrtPairs for ProviderSpec {
    fn pairs(&self, cx: &Context) -> Vec<(&'static str, String)> {
        match self {
            ProviderSpec::Cpu(o) => o.pairs(cx),
            ProviderSpec::Cuda(o) => o.pairs(cx),
            ProviderSpec::TensorRt(o) => o.pairs(cx),
            ProviderSpec::OpenVino(o) => o.pairs(cx),
            ProviderSpec::Vitis(o) => o.pairs(cx),
        }
    }
}

/// The provider, ready to register on a session; registration errors are returned, never swallowed.
/// `None` for the CPU provider with its defaults: ONNX Runtime backs every session with it anyway.
pub(crate) fn dispatch(spec: &ProviderSpec, cx: &Context) -> Option<ExecutionProviderDispatch> {
    fn with<E>(mut ep: E, pairs: Vec<(&'static str, String)>) -> E
    where
        E: ArbitrarilyConfigurableExecutionProvider,
    {
        for (k, v) in pairs {
            ep = ep.with_arbitrary_config(k, v);
        }
        ep
    }
    let pairs = spec.pairs(cx);
    let dispatch = match spec {
        ProviderSpec::Cpu(o) => cpu::build(o)?,
        ProviderSpec::Cuda(_) => with(ort::ep::CUDA::default(), pairs).build(),
        ProviderSpec::TensorRt(_) => with(ort::ep::TensorRT::default(), pairs).build(),
        ProviderSpec::OpenVino(_) => with(ort::ep::OpenVINO::default(), pairs).build(),
        ProviderSpec::Vitis(_) => with(ort::ep::Vitis::default(), pairs).build(),
    };
    Some(dispatch.error_on_failure())
}

/// Before registering: what the provider needs loaded first (the CUDA libraries of the GPU wheel).
pub(crate) fn prepare(spec: &ProviderSpec) {
    if spec.provider().uses_gpu() {
        cuda::preload_libraries();
    }
}

/// Why `provider` cannot start, in the dynamic loader's words, when its provider library beside the ONNX
/// Runtime library (`libonnxruntime_providers_tensorrt.so`) cannot be loaded: it names the library that
/// is missing (`libnvinfer.so.10: cannot open shared object file`). None when it loads, or has no library
/// of its own.
#[allow(unsafe_code)]
pub fn unloadable(provider: Provider, ort_library: &std::path::Path) -> Option<String> {
    let file = match provider {
        Provider::Cuda => "libonnxruntime_providers_cuda.so",
        Provider::TensorRt => "libonnxruntime_providers_tensorrt.so",
        Provider::OpenVino => "libonnxruntime_providers_openvino.so",
        Provider::Cpu | Provider::Vitis => return None,
    };
    let path = ort_library.parent()?.join(file);
    if !path.is_file() {
        return Some(format!("{} is missing", path.display()));
    }
    prepare(&ProviderSpec::of(provider));
    // SAFETY: ONNX Runtime's own provider library, which ONNX Runtime itself would load the same way; it is
    // closed at once (RTLD_LOCAL: nothing of it stays visible).
    let opened = unsafe {
        libloading::os::unix::Library::open(
            Some(&path),
            libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL,
        )
    };
    // The loader's own words ("libnvinfer.so.10: cannot open shared object file: ...") are the source.
    opened.err().map(|e| match std::error::Error::source(&e) {
        Some(words) => words.to_string(),
        None => e.to_string(),
    })
}

/// What a provider's options depend on beyond the deployment's words: where this model's provider
/// caches go and which device this replica was given.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// A folder for this model's compiled engines (TensorRT, OpenVINO, Vitis AI), keyed by the model's
    /// content. None: no engine cache.
    pub cache_dir: Option<PathBuf>,
    /// The GPU this replica was placed on, unless the options name one.
    pub device_id: Option<i32>,
    /// Where relative files in options (a Vitis AI config) are looked up: the deployment's source folder.
    pub base_dir: Option<PathBuf>,
    /// GPU memory one session may hold (its share of the replica's promise), in bytes.
    pub gpu_memory: Option<u64>,
}

impl Context {
    fn cache(&self, provider: Provider) -> Option<String> {
        self.cache_dir
            .as_ref()
            .map(|d| d.join(provider.name()).display().to_string())
    }

    fn resolve(&self, file: &str) -> String {
        match &self.base_dir {
            Some(base) if !std::path::Path::new(file).is_absolute() => base.join(file).display().to_string(),
            _ => file.to_string(),
        }
    }
}

/// Where a model ended up running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The first provider in use: the one that serves the model's operators it can run.
    pub provider: Provider,
    /// Every provider registered, in order (ONNX Runtime's CPU provider always backs them).
    pub providers: Vec<Provider>,
    /// Why providers earlier in the list were dropped, when `cpu` (or another) took over.
    pub fallback: Option<String>,
}

/// The first step of placing a model: which listed providers the library has. A missing one is dropped
/// when `cpu` comes later, and an error otherwise. An empty list means `cpu`.
pub fn plan(
    list: &[ProviderSpec],
    available: impl Fn(Provider) -> bool,
    library: &str,
) -> Result<(Vec<ProviderSpec>, Vec<String>), String> {
    if list.is_empty() {
        return Ok((vec![ProviderSpec::of(Provider::Cpu)], Vec::new()));
    }
    let mut keep = Vec::new();
    let mut dropped = Vec::new();
    for (i, spec) in list.iter().enumerate() {
        let p = spec.provider();
        if available(p) {
            keep.push(spec.clone());
            continue;
        }
        let reason = format!("{p} is not in this host's ONNX Runtime library ({library})");
        if cpu_after(list, i) {
            dropped.push(reason);
        } else {
            return Err(format!(
                "{reason}; {}; or list \"cpu\" after it to fall back",
                p.install_hint()
            ));
        }
    }
    Ok((keep, dropped))
}

/// The providers the loaded library was built with, by ONNX Runtime's names.
#[allow(unsafe_code)]
pub fn library_providers() -> Vec<String> {
    if !super::loaded() {
        return Vec::new();
    }
    let api = ort::api();
    let mut names: *mut *mut std::ffi::c_char = std::ptr::null_mut();
    let mut len: std::ffi::c_int = 0;
    // SAFETY: GetAvailableProviders fills `names` with `len` C strings that ReleaseAvailableProviders frees;
    // the strings are copied before that.
    unsafe {
        let status = (api.GetAvailableProviders)(&mut names, &mut len);
        if !status.0.is_null() {
            (api.ReleaseStatus)(status.0);
            return Vec::new();
        }
        if names.is_null() {
            return Vec::new();
        }
        let out = (0..len.max(0) as usize)
            .map(|i| std::ffi::CStr::from_ptr(*names.add(i)).to_string_lossy().into_owned())
            .collect();
        let status = (api.ReleaseAvailableProviders)(names, len);
        if !status.0.is_null() {
            (api.ReleaseStatus)(status.0);
        }
        out
    }
}

/// Our name for one of ONNX Runtime's (`CUDAExecutionProvider` → `cuda`), if we know it.
pub fn short_name(ort_name: &str) -> Option<Provider> {
    Provider::ALL.into_iter().find(|p| p.ort_name() == ort_name)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn list(v: Value) -> Result<Vec<ProviderSpec>, String> {
        ProviderSpec::list_from_json(v.as_array().unwrap())
    }

    #[test]
    fn a_provider_library_that_cannot_load_is_named_with_the_loaders_words() {
        let dir = std::env::temp_dir().join(format!("plinth-ep-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ort = dir.join("libonnxruntime.so.1.32.0");
        std::fs::write(&ort, b"").unwrap();
        // No provider library at all (the CPU build of ONNX Runtime).
        let said = unloadable(Provider::Cuda, &ort).unwrap();
        assert!(said.ends_with("libonnxruntime_providers_cuda.so is missing"), "{said}");
        // One the loader refuses: its words, naming the file.
        std::fs::write(dir.join("libonnxruntime_providers_tensorrt.so"), b"not a library").unwrap();
        let said = unloadable(Provider::TensorRt, &ort).unwrap();
        assert!(said.contains("libonnxruntime_providers_tensorrt.so"), "{said}");
        assert_eq!(unloadable(Provider::Cpu, &ort), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn onnx_runtime_names_map_back() {
        for p in Provider::ALL {
            assert_eq!(Provider::parse(p.ort_name()), Ok(p));
            assert_eq!(short_name(p.ort_name()), Some(p));
        }
    }

    #[test]
    fn a_missing_provider_refuses_unless_cpu_follows() {
        let only_cpu = |p: Provider| p == Provider::Cpu;
        let err = plan(&list(json!(["cuda"])).unwrap(), only_cpu, "lib.so").unwrap_err();
        assert!(
            err.starts_with("cuda is not in this host's ONNX Runtime library (lib.so)"),
            "{err}"
        );
        assert!(err.contains("onnxruntime-gpu"), "{err}");
        assert!(err.contains("ORT_DYLIB_PATH"), "{err}");
        assert!(err.contains("list \"cpu\" after it"), "{err}");

        let (keep, dropped) = plan(&list(json!(["tensorrt", "cuda", "cpu"])).unwrap(), only_cpu, "lib.so").unwrap();
        assert_eq!(keep, vec![ProviderSpec::of(Provider::Cpu)]);
        assert_eq!(dropped.len(), 2);
        assert!(dropped[0].starts_with("tensorrt is not"), "{dropped:?}");

        // TensorRT without CUDA after it and no cpu: refused even when CUDA is there.
        let gpu = |p: Provider| p != Provider::TensorRt;
        assert!(plan(&list(json!(["tensorrt", "cuda"])).unwrap(), gpu, "lib.so").is_err());
        let (keep, dropped) = plan(&list(json!(["cuda", "cpu"])).unwrap(), gpu, "lib.so").unwrap();
        assert_eq!(keep.len(), 2);
        assert!(dropped.is_empty());

        let (keep, _) = plan(&[], only_cpu, "lib.so").unwrap();
        assert_eq!(keep, vec![ProviderSpec::of(Provider::Cpu)]);
    }
}
