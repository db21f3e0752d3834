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
use serde_json::Value;

/// The providers Plinth knows, by their short names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Cpu,
    Cuda,
    #[serde(rename = "tensorrt")]
    TensorRt,
    #[serde(rename = "openvino")]
    OpenVino,
    Vitis,
}

impl Provider {
    pub const ALL: [Provider; 5] = [
        Provider::TensorRt,
        Provider::Cuda,
        Provider::OpenVino,
        Provider::Vitis,
        Provider::Cpu,
    ];

    /// The name in configs, logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Cpu => "cpu",
            Provider::Cuda => "cuda",
            Provider::TensorRt => "tensorrt",
            Provider::OpenVino => "openvino",
            Provider::Vitis => "vitis",
        }
    }

    /// ONNX Runtime's name (`CUDAExecutionProvider`).
    pub fn ort_name(self) -> &'static str {
        match self {
            Provider::Cpu => ort::ep::CPU::NAME,
            Provider::Cuda => ort::ep::CUDA::NAME,
            Provider::TensorRt => ort::ep::TensorRT::NAME,
            Provider::OpenVino => ort::ep::OpenVINO::NAME,
            Provider::Vitis => ort::ep::Vitis::NAME,
        }
    }

    /// Our names, ONNX Runtime's (`CUDAExecutionProvider`, as Triton and KServe configs spell them) and
    /// the usual short forms (`trt`, `vitisai`), in any case.
    pub fn parse(name: &str) -> Result<Provider, String> {
        let n = name.trim().to_ascii_lowercase();
        let n = n.strip_suffix("executionprovider").unwrap_or(&n);
        Ok(match n {
            "cpu" => Provider::Cpu,
            "cuda" | "gpu" => Provider::Cuda,
            "tensorrt" | "trt" => Provider::TensorRt,
            "openvino" => Provider::OpenVino,
            "vitis" | "vitisai" | "vitis_ai" | "vitis-ai" => Provider::Vitis,
            _ => {
                return Err(format!(
                    "unknown execution provider \"{name}\" (known: tensorrt, cuda, openvino, vitis, cpu)"
                ));
            }
        })
    }

    /// Whether the loaded ONNX Runtime library was built with this provider (false before one is loaded).
    pub fn is_available(self) -> bool {
        if !super::loaded() {
            return self == Provider::Cpu;
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

    /// How to get a library that has this provider.
    pub fn install_hint(self) -> &'static str {
        match self {
            Provider::Cpu => "",
            Provider::Cuda => cuda::INSTALL_HINT,
            Provider::TensorRt => tensorrt::INSTALL_HINT,
            Provider::OpenVino => openvino::INSTALL_HINT,
            Provider::Vitis => vitis::INSTALL_HINT,
        }
    }

    /// Whether this provider runs on a GPU (and so counts against the host's GPUs).
    pub fn uses_gpu(self) -> bool {
        matches!(self, Provider::Cuda | Provider::TensorRt)
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One entry of `executionProviders`: a provider and its options.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderSpec {
    Cpu(cpu::Options),
    Cuda(cuda::Options),
    TensorRt(tensorrt::Options),
    OpenVino(openvino::Options),
    Vitis(vitis::Options),
}

impl ProviderSpec {
    /// A provider with its default options.
    pub fn of(provider: Provider) -> ProviderSpec {
        match provider {
            Provider::Cpu => ProviderSpec::Cpu(Default::default()),
            Provider::Cuda => ProviderSpec::Cuda(Default::default()),
            Provider::TensorRt => ProviderSpec::TensorRt(Default::default()),
            Provider::OpenVino => ProviderSpec::OpenVino(Default::default()),
            Provider::Vitis => ProviderSpec::Vitis(Default::default()),
        }
    }

    pub fn provider(&self) -> Provider {
        match self {
            ProviderSpec::Cpu(_) => Provider::Cpu,
            ProviderSpec::Cuda(_) => Provider::Cuda,
            ProviderSpec::TensorRt(_) => Provider::TensorRt,
            ProviderSpec::OpenVino(_) => Provider::OpenVino,
            ProviderSpec::Vitis(_) => Provider::Vitis,
        }
    }

    /// `"cuda"`, or `{"name": "tensorrt", "fp16": true}`: a name, or an object with a name and that
    /// provider's options (an option another provider has, or a misspelt one, is an error naming it).
    pub fn from_json(value: &Value) -> Result<ProviderSpec, String> {
        let (name, options) = match value {
            Value::String(s) => (s.as_str(), serde_json::Map::new()),
            Value::Object(map) => {
                let Some(Value::String(name)) = map.get("name") else {
                    return Err("an execution provider object needs \"name\" (e.g. {\"name\": \"cuda\"})".into());
                };
                let mut options = map.clone();
                options.remove("name");
                (name.as_str(), options)
            }
            other => {
                return Err(format!(
                    "an execution provider is a name (\"cuda\") or an object with \"name\", got {other}"
                ));
            }
        };
        let provider = Provider::parse(name)?;
        let options = Value::Object(options);
        let bad = |e: serde_json::Error| format!("{provider} options: {e}");
        Ok(match provider {
            Provider::Cpu => ProviderSpec::Cpu(serde_json::from_value(options).map_err(bad)?),
            Provider::Cuda => ProviderSpec::Cuda(serde_json::from_value(options).map_err(bad)?),
            Provider::TensorRt => ProviderSpec::TensorRt(serde_json::from_value(options).map_err(bad)?),
            Provider::OpenVino => ProviderSpec::OpenVino(serde_json::from_value(options).map_err(bad)?),
            Provider::Vitis => ProviderSpec::Vitis(serde_json::from_value(options).map_err(bad)?),
        })
    }

    /// A whole `executionProviders` list: each entry as [`ProviderSpec::from_json`], no provider twice,
    /// and nothing after `cpu` (it takes every operator, so a later provider would never run).
    pub fn list_from_json(values: &[Value]) -> Result<Vec<ProviderSpec>, String> {
        let mut out: Vec<ProviderSpec> = Vec::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            let spec = ProviderSpec::from_json(v).map_err(|e| format!("[{i}]: {e}"))?;
            if out.iter().any(|s| s.provider() == spec.provider()) {
                return Err(format!("[{i}]: {} is listed twice", spec.provider()));
            }
            if out.iter().any(|s| s.provider() == Provider::Cpu) {
                return Err(format!(
                    "[{i}]: {} comes after cpu, which runs every operator left to it; list cpu last",
                    spec.provider()
                ));
            }
            out.push(spec);
        }
        Ok(out)
    }

    /// ONNX Runtime's options for this provider on one model, as key/value pairs.
    pub fn pairs(&self, cx: &Context) -> Vec<(&'static str, String)> {
        match self {
            ProviderSpec::Cpu(o) => o.pairs(cx),
            ProviderSpec::Cuda(o) => o.pairs(cx),
            ProviderSpec::TensorRt(o) => o.pairs(cx),
            ProviderSpec::OpenVino(o) => o.pairs(cx),
            ProviderSpec::Vitis(o) => o.pairs(cx),
        }
    }

    /// The provider, ready to register on a session; registration errors are returned, never swallowed.
    /// `None` for the CPU provider with its defaults: ONNX Runtime backs every session with it anyway.
    pub(crate) fn dispatch(&self, cx: &Context) -> Option<ExecutionProviderDispatch> {
        fn with<E>(mut ep: E, pairs: Vec<(&'static str, String)>) -> E
        where
            E: ArbitrarilyConfigurableExecutionProvider,
        {
            for (k, v) in pairs {
                ep = ep.with_arbitrary_config(k, v);
            }
            ep
        }
        let pairs = self.pairs(cx);
        let dispatch = match self {
            ProviderSpec::Cpu(o) => o.build()?,
            ProviderSpec::Cuda(_) => with(ort::ep::CUDA::default(), pairs).build(),
            ProviderSpec::TensorRt(_) => with(ort::ep::TensorRT::default(), pairs).build(),
            ProviderSpec::OpenVino(_) => with(ort::ep::OpenVINO::default(), pairs).build(),
            ProviderSpec::Vitis(_) => with(ort::ep::Vitis::default(), pairs).build(),
        };
        Some(dispatch.error_on_failure())
    }

    /// Before registering: what the provider needs loaded first (the CUDA libraries of the GPU wheel).
    pub(crate) fn prepare(&self) {
        if self.provider().uses_gpu() {
            cuda::preload_libraries();
        }
    }
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

/// Whether `cpu` comes after position `i` in `list`, so that a provider there may be dropped.
pub fn cpu_after(list: &[ProviderSpec], i: usize) -> bool {
    list.iter().skip(i + 1).any(|s| s.provider() == Provider::Cpu)
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
    use serde_json::json;

    use super::*;

    fn list(v: Value) -> Result<Vec<ProviderSpec>, String> {
        ProviderSpec::list_from_json(v.as_array().unwrap())
    }

    #[test]
    fn names_parse_in_every_spelling_users_bring() {
        for (name, p) in [
            ("cuda", Provider::Cuda),
            ("CUDAExecutionProvider", Provider::Cuda),
            ("TensorRT", Provider::TensorRt),
            ("trt", Provider::TensorRt),
            ("TensorrtExecutionProvider", Provider::TensorRt),
            ("OpenVINOExecutionProvider", Provider::OpenVino),
            ("vitisai", Provider::Vitis),
            ("VitisAIExecutionProvider", Provider::Vitis),
            ("CPU", Provider::Cpu),
        ] {
            assert_eq!(Provider::parse(name), Ok(p), "{name}");
        }
        let err = Provider::parse("rocm").unwrap_err();
        assert!(err.contains("unknown execution provider \"rocm\""), "{err}");
        assert!(err.contains("tensorrt, cuda"), "{err}");
        for p in Provider::ALL {
            assert_eq!(Provider::parse(p.ort_name()), Ok(p));
            assert_eq!(short_name(p.ort_name()), Some(p));
        }
    }

    #[test]
    fn lists_parse_and_validate() {
        let l = list(json!(["tensorrt", {"name": "cuda", "deviceId": 1}, "cpu"])).unwrap();
        assert_eq!(
            l.iter().map(|s| s.provider()).collect::<Vec<_>>(),
            [Provider::TensorRt, Provider::Cuda, Provider::Cpu]
        );
        assert_eq!(
            l[1],
            ProviderSpec::Cuda(cuda::Options {
                device_id: Some(1),
                ..Default::default()
            })
        );
        let err = list(json!(["cuda", "cuda"])).unwrap_err();
        assert!(err.contains("[1]: cuda is listed twice"), "{err}");
        let err = list(json!(["cpu", "cuda"])).unwrap_err();
        assert!(err.contains("[1]: cuda comes after cpu"), "{err}");
        let err = list(json!([{"name": "cuda", "fp16": true}])).unwrap_err();
        assert!(err.contains("[0]: cuda options: unknown field `fp16`"), "{err}");
        let err = list(json!([{"deviceId": 0}])).unwrap_err();
        assert!(err.contains("needs \"name\""), "{err}");
        let err = list(json!([3])).unwrap_err();
        assert!(err.contains("a name (\"cuda\") or an object"), "{err}");
        let err = list(json!([{"name": "tensorrt", "fp16": "yes"}])).unwrap_err();
        assert!(err.contains("tensorrt options: invalid type"), "{err}");
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
