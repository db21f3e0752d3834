//! Execution providers as a deployment names them: `"executionProviders": ["tensorrt", "cuda", "cpu"]`,
//! each a name or an object with a name and that provider's options. What each option does to ONNX
//! Runtime is the runtime's business (`plinth_runtime::onnx::ep`, one file per provider); here is only
//! what a config may say, checked without the hardware.

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

/// `{"name": "cpu", "arena": false}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CpuOptions {
    /// ONNX Runtime's memory arena for CPU tensors (default on): faster, at the cost of memory that
    /// stays with the session after a large request.
    pub arena: Option<bool>,
}

/// `{"name": "cuda", "deviceId": 0, "memoryLimitMb": 8192}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CudaOptions {
    /// The GPU to run on. Default: the one the host placed this replica on.
    pub device_id: Option<i32>,
    /// The most GPU memory ONNX Runtime's arena may take, in MiB. Default: no limit.
    pub memory_limit_mb: Option<u64>,
    /// TF32 matrix maths on Ampere and newer (ONNX Runtime's default: on).
    pub tf32: Option<bool>,
}

/// `{"name": "tensorrt", "fp16": true, "deviceId": 0, "engineCache": true, "maxWorkspaceMb": 4096}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TensorRtOptions {
    /// The GPU to run on. Default: the one the host placed this replica on.
    pub device_id: Option<i32>,
    /// Let TensorRT use FP16 kernels (faster, slightly different numbers). Default off.
    pub fp16: Option<bool>,
    /// Cache built engines under the host's cache (default on when the host has a cache).
    pub engine_cache: Option<bool>,
    /// The most GPU memory TensorRT may use while building, in MiB.
    pub max_workspace_mb: Option<u64>,
}

/// `{"name": "openvino", "deviceType": "GPU", "precision": "FP16"}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OpenVinoOptions {
    /// `CPU`, `GPU`, `GPU.1`, `NPU`, or OpenVINO's `AUTO:GPU,CPU` / `HETERO:...`. Default: OpenVINO's (CPU).
    pub device_type: Option<String>,
    /// `FP32`, `FP16` or `ACCURACY`.
    pub precision: Option<String>,
    /// Threads for CPU inference.
    pub num_threads: Option<usize>,
}

/// `{"name": "vitis", "configFile": "vaip_config.json"}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VitisOptions {
    /// Vitis AI's config; relative paths are read from the deployment's source folder.
    pub config_file: Option<String>,
    /// The device target (`X1`, `X2`).
    pub target: Option<String>,
    /// An `.xclbin` bitstream for the FPGA; relative like `configFile`.
    pub xclbin: Option<String>,
}

/// One entry of `executionProviders`: a provider and its options.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderSpec {
    Cpu(CpuOptions),
    Cuda(CudaOptions),
    TensorRt(TensorRtOptions),
    OpenVino(OpenVinoOptions),
    Vitis(VitisOptions),
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
}

/// Whether `cpu` comes after position `i` in `list`, so that a provider there may be dropped.
pub fn cpu_after(list: &[ProviderSpec], i: usize) -> bool {
    list.iter().skip(i + 1).any(|s| s.provider() == Provider::Cpu)
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
            ProviderSpec::Cuda(CudaOptions {
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
}
