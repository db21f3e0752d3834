//! Native ONNX models on ONNX Runtime, loaded dynamically from the PyPI wheel's library.

pub mod ep;
mod library;

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, TensorElementType, TensorRef, ValueType};

use self::ep::{Placement, Provider, ProviderExt, ProviderSpec};
pub use self::library::{INSTALL_HINT, ORT_DYLIB_PATH, site_packages_dirs};
use crate::{DataType, Error, Result, Tensor, TensorData, TensorSpec};

static ENVIRONMENT: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();
static LIBRARY: OnceLock<PathBuf> = OnceLock::new();

/// Whether this process has loaded ONNX Runtime (calls into it before then would panic).
pub fn loaded() -> bool {
    matches!(ENVIRONMENT.get(), Some(Ok(_)))
}

/// The ONNX Runtime library this process loaded, once it has.
pub fn library_path() -> Option<&'static Path> {
    LIBRARY.get().map(PathBuf::as_path)
}

/// The loaded library's version (`1.32.0`), from its build information or else its file name.
pub fn library_version() -> Option<String> {
    ENVIRONMENT.get()?.as_ref().ok()?;
    let info = ort::info();
    let from_info = info
        .split([',', ' '])
        .find_map(|part| part.trim().strip_prefix("git-branch=rel-"))
        .map(str::to_string);
    from_info.or_else(|| {
        // A link under a fixed name (as in the container image) names the versioned file it points to.
        let path = library_path()?;
        let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let name = real.file_name()?.to_str()?;
        name.strip_prefix("libonnxruntime.so.").map(str::to_string)
    })
}

/// Loads ONNX Runtime once per process and returns its environment.
///
/// `library` overrides the search described in [`library`]; later calls return the first result.
pub fn environment(library: Option<&Path>) -> Result<ort::environment::Environment> {
    ENVIRONMENT
        .get_or_init(|| {
            let path = library::find(library).map_err(|searched| {
                let shown: Vec<String> = searched.iter().take(4).map(|p| p.display().to_string()).collect();
                format!(
                    "ONNX Runtime library not found (searched ORT_DYLIB_PATH, {}, ...): {INSTALL_HINT}",
                    shown.join(", ")
                )
            })?;
            let _ = LIBRARY.set(path.clone());
            let builder = ort::init_from(&path).map_err(|e| {
                format!(
                    "ONNX Runtime library {} could not be loaded: {e}; {INSTALL_HINT}",
                    path.display()
                )
            })?;
            builder
                .with_name("plinth")
                .with_telemetry(false)
                .build()
                .map_err(|e| format!("ONNX Runtime library {}: {e}", path.display()))
        })
        .clone()
        .map_err(Error::OrtLibrary)
}

/// How sessions of a model are built.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Threads ONNX Runtime may use inside one operator. Default 1: on a small box more threads per call
    /// cost more than they give; replicas are the way to use more cores.
    pub intra_threads: usize,
    /// Sessions kept for this model; concurrent calls beyond this wait for a free one. Default 1.
    pub sessions: usize,
    /// Execution providers in order of preference (see [`ep`]). Empty: the CPU provider.
    pub providers: Vec<ProviderSpec>,
    /// Where providers cache compiled engines (TensorRT, OpenVINO, Vitis AI), under `ep/<model sha256>/`.
    pub cache_dir: Option<PathBuf>,
    /// The GPU given to this replica, for providers whose options name none.
    pub device_id: Option<i32>,
    /// Where relative files in provider options are read from.
    pub base_dir: Option<PathBuf>,
    /// The GPU memory this replica was promised (`gpuMemoryGb`), in bytes: each session's CUDA arena is
    /// capped to its part of it (`gpu_mem_limit`).
    pub gpu_memory: Option<u64>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            intra_threads: 1,
            sessions: 1,
            providers: Vec::new(),
            cache_dir: None,
            device_id: None,
            base_dir: None,
            gpu_memory: None,
        }
    }
}

/// The GPUs of this machine, as far as they can be seen without a driver call.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Gpus {
    /// NVIDIA GPUs the kernel driver lists (`/proc/driver/nvidia/gpus`).
    pub nvidia: u32,
    /// GPUs ONNX Runtime's device discovery reports for its providers (`vendor:id`), when loaded.
    pub onnx_runtime: Vec<String>,
    /// GPUs the CUDA provider's own runtime sees (`cudaGetDeviceCount`), when the library has the CUDA
    /// provider and a CUDA runtime loads.
    pub cuda: Option<u32>,
    /// Each NVIDIA GPU's (total, used) memory in bytes, as the driver reports it (empty without it).
    pub memory: Vec<(u64, u64)>,
}

impl Gpus {
    /// This machine's GPUs.
    pub fn of_host() -> Gpus {
        let nvidia = std::fs::read_dir("/proc/driver/nvidia/gpus")
            .map(|d| d.flatten().count() as u32)
            .unwrap_or(0);
        let mut onnx_runtime = Vec::new();
        if let Some(Ok(env)) = ENVIRONMENT.get() {
            for device in env.devices() {
                let hw = device.hardware_device();
                if hw.ty() == ort::memory::DeviceType::GPU {
                    let name = format!("{}:{}", hw.vendor().unwrap_or("?"), hw.id());
                    if !onnx_runtime.contains(&name) {
                        onnx_runtime.push(name);
                    }
                }
            }
        }
        let cuda = Provider::Cuda.is_available().then(ep::cuda::device_count).flatten();
        Gpus {
            nvidia,
            onnx_runtime,
            cuda,
            memory: if nvidia > 0 {
                ep::cuda::memory().unwrap_or_default()
            } else {
                Vec::new()
            },
        }
    }

    /// How many GPUs replicas may be placed on.
    pub fn count(&self) -> u32 {
        self.nvidia
            .max(self.onnx_runtime.len() as u32)
            .max(self.cuda.unwrap_or(0))
    }
}

/// One ONNX model with its metadata and a small pool of sessions.
///
/// ONNX Runtime sessions need exclusive access per `run` (`ort` takes `&mut self`), so calls take a
/// free session from the pool and wait only when every session is busy.
pub struct OnnxModel {
    name: String,
    path: PathBuf,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
    sessions: Box<[Mutex<Session>]>,
    placement: Placement,
}

impl std::fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxModel")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .field("placement", &self.placement)
            .finish_non_exhaustive()
    }
}

impl OnnxModel {
    /// Loads `path` as model `name`.
    pub fn load(name: &str, path: &Path, options: &SessionOptions, library: Option<&Path>) -> Result<Self> {
        let env = environment(library)?;
        let load_err = |message: String| Error::ModelLoad {
            model: name.to_string(),
            message,
            source: None,
        };
        let ort_load_err = |source: ort::Error| Error::ModelLoad {
            model: name.to_string(),
            message: String::new(),
            source: Some(Box::new(source)),
        };
        if !path.is_file() {
            return Err(load_err(format!("{} is not a file", path.display())));
        }
        let library = library_path().map(|p| p.display().to_string()).unwrap_or_default();
        let provider_err = |message: String| Error::Provider {
            model: name.to_string(),
            message,
        };
        let (mut specs, mut dropped) =
            ep::plan(&options.providers, |p| p.is_available(), &library).map_err(provider_err)?;
        let caches = specs
            .iter()
            .any(|s| matches!(s.provider(), Provider::TensorRt | Provider::OpenVino | Provider::Vitis));
        let cx = ep::Context {
            cache_dir: match (&options.cache_dir, caches) {
                (Some(root), true) => Some(root.join("ep").join(content_key(path)?)),
                _ => None,
            },
            device_id: options.device_id,
            base_dir: options.base_dir.clone(),
            gpu_memory: options.gpu_memory.map(|b| b / options.sessions.max(1) as u64),
        };
        // The first session settles which providers start: one that fails is dropped when cpu follows it.
        let first = loop {
            match new_session(&env, options, &specs, &cx, path) {
                Ok(session) => break session,
                Err((Some(i), e)) if ep::cpu_after(&specs, i) => {
                    let p = specs[i].provider();
                    dropped.push(format!("{p} could not start: {}", start_failure(p, &e)));
                    specs.remove(i);
                }
                Err((Some(i), e)) => {
                    let p = specs[i].provider();
                    return Err(provider_err(format!(
                        "{p} could not start: {}; {}",
                        start_failure(p, &e),
                        p.install_hint()
                    )));
                }
                // A load failure with a device provider in use may be the provider's (an operator it
                // cannot take, a device it cannot open): with cpu listed, try the CPU alone.
                Err((None, e)) if specs.len() > 1 && specs.iter().any(|s| s.provider() == Provider::Cpu) => {
                    let gone: Vec<&str> = specs
                        .iter()
                        .map(|s| s.provider())
                        .filter(|p| *p != Provider::Cpu)
                        .map(Provider::name)
                        .collect();
                    dropped.push(format!("{} could not load the model: {e}", gone.join(", ")));
                    specs.retain(|s| s.provider() == Provider::Cpu);
                }
                Err((None, e)) => return Err(ort_load_err(e)),
            }
        };
        let count = options.sessions.max(1);
        let mut sessions = Vec::with_capacity(count);
        sessions.push(Mutex::new(first));
        for _ in 1..count {
            let session = new_session(&env, options, &specs, &cx, path).map_err(|(_, e)| ort_load_err(e))?;
            sessions.push(Mutex::new(session));
        }
        let providers: Vec<Provider> = specs.iter().map(ProviderSpec::provider).collect();
        let placement = Placement {
            provider: providers.first().copied().unwrap_or(Provider::Cpu),
            fallback: (!dropped.is_empty()).then(|| {
                format!(
                    "{}; serving on {}",
                    dropped.join("; "),
                    providers.first().copied().unwrap_or(Provider::Cpu)
                )
            }),
            providers,
        };
        let first = sessions[0]
            .lock()
            .map_err(|_| load_err("session lock poisoned".into()))?;
        let inputs = first
            .inputs()
            .iter()
            .map(|o| {
                spec_of(o.name(), o.dtype()).ok_or_else(|| {
                    load_err(format!(
                        "input '{}' is not a supported tensor type ({:?})",
                        o.name(),
                        o.dtype()
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // Outputs that are not tensors (skl2onnx's ZipMap probabilities, sequences) are left out.
        let outputs = first
            .outputs()
            .iter()
            .filter_map(|o| spec_of(o.name(), o.dtype()))
            .collect();
        drop(first);
        Ok(OnnxModel {
            name: name.to_string(),
            path: path.to_path_buf(),
            inputs,
            outputs,
            sessions: sessions.into_boxed_slice(),
            placement,
        })
    }

    /// Where the model runs: the provider serving it, and any fallback taken.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn inputs(&self) -> &[TensorSpec] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[TensorSpec] {
        &self.outputs
    }

    /// Runs the model. Inputs are checked against the metadata first, so a caller's mistake is an
    /// [`Error::InvalidInput`] naming the input, never an ONNX Runtime error.
    pub fn infer(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        self.check_inputs(inputs)?;
        let mut values: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::with_capacity(inputs.len());
        for t in inputs {
            values.push((Cow::Borrowed(t.name.as_str()), self.to_value(t)?));
        }
        let mut session = self.session();
        let outputs = session.run(values).map_err(|e| self.ort_err(e))?;
        let mut result = Vec::with_capacity(self.outputs.len());
        for spec in &self.outputs {
            let value = outputs
                .get(&spec.name)
                .ok_or_else(|| self.inference_err(format!("output '{}' missing", spec.name)))?;
            result.push(self.tensor_of(&spec.name, value)?);
        }
        Ok(result)
    }

    fn check_inputs(&self, inputs: &[Tensor]) -> Result<()> {
        for t in inputs {
            let Some(spec) = self.inputs.iter().find(|s| s.name == t.name) else {
                return Err(Error::InvalidInput(format!(
                    "model {}: unknown input '{}' (inputs: {})",
                    self.name,
                    t.name,
                    self.input_names()
                )));
            };
            spec.check(t)
                .map_err(|e| Error::InvalidInput(format!("model {}: {e}", self.name)))?;
        }
        if let Some(missing) = self.inputs.iter().find(|s| !inputs.iter().any(|t| t.name == s.name)) {
            return Err(Error::InvalidInput(format!(
                "model {}: missing input '{}'",
                self.name, missing.name
            )));
        }
        if inputs.len() != self.inputs.len() {
            return Err(Error::InvalidInput(format!(
                "model {}: an input is given more than once",
                self.name
            )));
        }
        Ok(())
    }

    fn input_names(&self) -> String {
        self.inputs
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// A free session, looked for from this thread's own (so a thread keeps reusing a warm session and
    /// threads do not contend for one lock), or this thread's own when all are busy.
    fn session(&self) -> MutexGuard<'_, Session> {
        let n = self.sessions.len();
        let start = crate::thread_seat();
        for i in 0..n {
            if let Ok(guard) = self.sessions[(start + i) % n].try_lock() {
                return guard;
            }
        }
        // A poisoned lock only means another call panicked mid-run; the session itself is still usable.
        self.sessions[start % n].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn to_value<'t>(&self, t: &'t Tensor) -> Result<SessionInputValue<'t>> {
        let shape = t.shape.as_slice();
        let value: SessionInputValue<'t> = match &t.data {
            TensorData::Bytes(v) => ort::value::Tensor::from_string_array((shape, v.as_slice()))
                .map_err(|e| self.ort_err(e))?
                .into(),
            TensorData::Bool(v) => view(shape, v).map_err(|e| self.ort_err(e))?,
            TensorData::Uint8(v) => view(shape, v).map_err(|e| self.ort_err(e))?,
            TensorData::Uint16(v) => view(shape, v).map_err(|e| self.ort_err(e))?,
            TensorData::Uint32(v) => view(shape, v).map_err(|e| self.ort_err(e))?,
            TensorData::Uint64(v) => view(shape, v).map_err(|e| self.ort_err(e))?,
            TensorData::Int8(v) => view(shape, v).map_err(|e| self.ort_err(e))?,
            TensorData::Int16(v) => view(shape, v).map_err(|e| self.ort_err(e))?,
            TensorData::Int32(v) => view(shape, v).map_err(|e| self.ort_err(e))?,
            TensorData::Int64(v) => view(shape, v).map_err(|e| self.ort_err(e))?,
            TensorData::Fp16(v) => view(shape, v).map_err(|e| self.ort_err(e))?,
            TensorData::Fp32(v) => view(shape, v).map_err(|e| self.ort_err(e))?,
            TensorData::Fp64(v) => view(shape, v).map_err(|e| self.ort_err(e))?,
        };
        Ok(value)
    }

    fn tensor_of(&self, name: &str, value: &DynValue) -> Result<Tensor> {
        let err = |e: ort::Error| self.ort_err(e);
        let ty = match value.dtype() {
            ValueType::Tensor { ty, .. } => *ty,
            other => return Err(self.inference_err(format!("output '{name}' is not a tensor ({other:?})"))),
        };
        macro_rules! extract {
            ($t:ty, $variant:ident) => {{
                let (shape, data) = value.try_extract_tensor::<$t>().map_err(err)?;
                (shape.to_vec(), TensorData::$variant(data.to_vec()))
            }};
        }
        let (shape, data) = match ty {
            TensorElementType::Bool => extract!(bool, Bool),
            TensorElementType::Uint8 => extract!(u8, Uint8),
            TensorElementType::Uint16 => extract!(u16, Uint16),
            TensorElementType::Uint32 => extract!(u32, Uint32),
            TensorElementType::Uint64 => extract!(u64, Uint64),
            TensorElementType::Int8 => extract!(i8, Int8),
            TensorElementType::Int16 => extract!(i16, Int16),
            TensorElementType::Int32 => extract!(i32, Int32),
            TensorElementType::Int64 => extract!(i64, Int64),
            TensorElementType::Float16 => extract!(half::f16, Fp16),
            TensorElementType::Float32 => extract!(f32, Fp32),
            TensorElementType::Float64 => extract!(f64, Fp64),
            TensorElementType::String => {
                let (shape, data) = value.try_extract_strings().map_err(err)?;
                (shape.to_vec(), TensorData::Bytes(data))
            }
            other => return Err(self.inference_err(format!("output '{name}' has unsupported element type {other:?}"))),
        };
        Ok(Tensor {
            name: name.to_string(),
            shape,
            data,
        })
    }

    fn inference_err(&self, message: String) -> Error {
        Error::Inference {
            model: self.name.clone(),
            message,
            source: None,
        }
    }

    fn ort_err(&self, source: ort::Error) -> Error {
        Error::Inference {
            model: self.name.clone(),
            message: String::new(),
            source: Some(source),
        }
    }
}

/// Why provider `p` did not start: ONNX Runtime's words, and the dynamic loader's when the provider's
/// library cannot be loaded (naming the missing library, which ONNX Runtime's message may leave out).
fn start_failure(p: Provider, e: &impl std::fmt::Display) -> String {
    let said = e.to_string();
    let said = said.trim();
    let loader = library_path().and_then(|lib| ep::unloadable(p, lib));
    match (said.is_empty(), loader) {
        (true, Some(l)) => l,
        (true, None) => "ONNX Runtime gave no reason".to_string(),
        (false, Some(l)) if !said.contains(&l) => format!("{said} ({l})"),
        (false, _) => said.to_string(),
    }
}

/// One session with `specs` registered in order; on failure, the position of the provider that failed to
/// register (None: the session itself failed).
fn new_session(
    env: &ort::environment::Environment,
    options: &SessionOptions,
    specs: &[ProviderSpec],
    cx: &ep::Context,
    path: &Path,
) -> std::result::Result<Session, (Option<usize>, ort::Error)> {
    let mut builder = Session::builder(env)
        .and_then(|b| b.with_intra_threads(options.intra_threads.max(1)).map_err(Into::into))
        .and_then(|b| b.with_inter_threads(1).map_err(Into::into))
        .map_err(|e| (None, e))?;
    for (i, spec) in specs.iter().enumerate() {
        let Some(dispatch) = ep::dispatch(spec, cx) else {
            continue;
        };
        ep::prepare(spec);
        builder = builder
            .with_execution_providers([dispatch])
            .map_err(|e| (Some(i), e.into()))?;
    }
    builder.commit_from_file(path).map_err(|e| (None, e))
}

/// The SHA-256 of a model file, remembered per file (by path, size and modification time) so that
/// replicas of one model hash it once.
fn content_key(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    type FileId = (PathBuf, u64, std::time::SystemTime);
    static KEYS: OnceLock<Mutex<HashMap<FileId, String>>> = OnceLock::new();
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    let id = (path.to_path_buf(), meta.len(), meta.modified().map_err(io)?);
    let keys = KEYS.get_or_init(Default::default);
    if let Some(k) = keys.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
        return Ok(k.clone());
    }
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(io)?;
    let key: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    keys.lock().unwrap_or_else(|p| p.into_inner()).insert(id, key.clone());
    Ok(key)
}

fn view<'t, T>(shape: &'t [i64], data: &'t [T]) -> ort::Result<SessionInputValue<'t>>
where
    T: ort::value::PrimitiveTensorElementType + Clone + std::fmt::Debug + 'static,
{
    Ok(TensorRef::from_array_view((shape, data))?.into())
}

fn spec_of(name: &str, dtype: &ValueType) -> Option<TensorSpec> {
    let ValueType::Tensor { ty, shape, .. } = dtype else {
        return None;
    };
    let datatype = match ty {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Uint16 => DataType::Uint16,
        TensorElementType::Uint32 => DataType::Uint32,
        TensorElementType::Uint64 => DataType::Uint64,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Float16 => DataType::Fp16,
        TensorElementType::Float32 => DataType::Fp32,
        TensorElementType::Float64 => DataType::Fp64,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    };
    Some(TensorSpec {
        name: name.to_string(),
        datatype,
        shape: shape.to_vec(),
    })
}
