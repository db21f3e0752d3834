//! One entry script: its compiled component, pre-linked, and a pool of initialised instances.
//!
//! Instances are kept between calls, as Azure ML keeps a `score.py` process: `init()` runs once per
//! instance, then `run()` serves many requests. Measured here (bench/RESULTS.md), a kept Rust instance
//! serves a 1 KB JSON call in about a quarter of the time of a fresh store + instantiate + init + run,
//! and a Python one in a thirtieth. After a trap the instance is dropped and the next call gets a fresh one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::Store;
use wasmtime::component::{Component, ResourceTable};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use super::cache::{Code, CodeCache};
use super::call::{CallContext, LogPipe, MODEL_DIR};
use super::host::HostState;
use super::limits::{MemoryCap, Phase, ScriptLimits, bound_init, end_init, init_error, ticks};
use super::{Scoring, ScoringPre, WasmEngine, wit};
use crate::{Error, ModelSet, Result};

struct Live {
    store: Store<HostState>,
    bindings: Scoring,
}

/// A loaded entry script.
pub struct EntryScript {
    name: Arc<str>,
    pre: ScoringPre<HostState>,
    engine: wasmtime::Engine,
    models: Arc<ModelSet>,
    model_dir: Option<PathBuf>,
    limits: ScriptLimits,
    idle: Mutex<Vec<Live>>,
    from_cache: bool,
}

impl std::fmt::Debug for EntryScript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntryScript")
            .field("name", &self.name)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl EntryScript {
    /// Compiles (or loads from the cache) the component at `path`, links it, and initialises one
    /// instance so that a broken `init()` fails the load rather than the first request.
    pub fn load(
        engine: &WasmEngine,
        name: &str,
        path: &Path,
        models: Arc<ModelSet>,
        model_dir: Option<&Path>,
        mut limits: ScriptLimits,
    ) -> Result<Self> {
        let wasm = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        if limits.memory_bytes > engine.config().max_memory_bytes {
            limits.memory_bytes = engine.config().max_memory_bytes;
        }
        let started = Instant::now();
        let not_a_component = refused(name, "not a valid component");
        let (component, from_cache) = match engine.config().cache_dir.as_deref() {
            Some(dir) => {
                let compiled = CodeCache::new(dir, "").load::<Component>(engine.engine(), &wasm, not_a_component)?;
                (compiled.code, compiled.from_cache)
            }
            None => (
                Component::compile(engine.engine(), &wasm).map_err(not_a_component)?,
                false,
            ),
        };
        let pre = engine
            .linker()
            .instantiate_pre(&component)
            .map_err(refused(name, "imports do not match the plinth:scoring world"))?;
        let pre = ScoringPre::new(pre).map_err(refused(name, "exports do not match the plinth:scoring world"))?;
        let script = EntryScript {
            name: name.into(),
            pre,
            engine: engine.engine().clone(),
            models,
            model_dir: model_dir.map(Path::to_path_buf),
            limits,
            idle: Mutex::new(Vec::new()),
            from_cache,
        };
        let first = script.instantiate()?;
        script.put_back(first);
        tracing::info!(
            script = name,
            from_cache,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "entry script loaded"
        );
        Ok(script)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the compiled component came from the on-disk cache.
    pub fn from_cache(&self) -> bool {
        self.from_cache
    }

    pub fn limits(&self) -> &ScriptLimits {
        &self.limits
    }

    /// Calls the script's `run` with the raw request body and returns its response body.
    pub fn run(&self, request: &str, ctx: &CallContext) -> Result<String> {
        let popped = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut live = match popped {
            Some(live) => live,
            None => self.instantiate()?,
        };
        let state = live.store.data_mut();
        state.request_id = ctx.request_id.clone();
        state.log_budget = self.limits.max_log_bytes;
        live.store.set_epoch_deadline(ticks(self.limits.deadline));
        let result = live.bindings.call_run(&mut live.store, request);
        let stdio = self.flush_stdio(&mut live.store);
        match result {
            Ok(Ok(body)) => {
                self.put_back(live);
                if body.len() > self.limits.max_response_bytes {
                    return Err(Error::OutputTooLarge {
                        script: self.name.to_string(),
                        size: body.len(),
                        limit: self.limits.max_response_bytes,
                    });
                }
                Ok(body)
            }
            Ok(Err(e)) => {
                self.put_back(live);
                Err(match e {
                    wit::Error::InvalidInput(m) => Error::InvalidInput(m),
                    wit::Error::Internal(message) => Error::ScriptFailed {
                        script: self.name.to_string(),
                        message,
                    },
                })
            }
            // The instance is unusable after a trap; dropping it frees its pool slot.
            Err(e) => Err(self.trap_error(Phase::Run, &e, live.store.data().limiter.hit, &stdio)),
        }
    }

    /// A fresh store and instance, with `init()` run.
    fn instantiate(&self) -> Result<Live> {
        let stdio = LogPipe::new(self.limits.max_log_bytes);
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdio.clone())
            .stderr(stdio.clone())
            .allow_blocking_current_thread(true);
        if let Some(dir) = &self.model_dir {
            wasi.preopened_dir(dir, MODEL_DIR, FsPerms::ReadOnly)
                .map_err(|source| Error::ScriptLoad {
                    script: self.name.to_string(),
                    message: format!("model directory {}", dir.display()),
                    source: Some(source),
                })?;
            wasi.env("AZUREML_MODEL_DIR", MODEL_DIR);
        }
        let state = HostState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limiter: MemoryCap {
                limit: self.limits.memory_bytes,
                hit: None,
            },
            models: self.models.clone(),
            script: self.name.clone(),
            stdio,
            request_id: None,
            log_budget: self.limits.max_log_bytes,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        bound_init(&mut store, &self.limits);
        let bindings = match self.pre.instantiate(&mut store) {
            Ok(b) => b,
            Err(e) => {
                let hit = store.data().limiter.hit;
                let message = format!("{e:#}");
                // The pooling allocator refuses when every slot is taken: back-pressure, not a broken script.
                if message.contains("maximum concurrent") || message.contains("pooling") {
                    return Err(Error::Overloaded {
                        script: self.name.to_string(),
                        source: e,
                    });
                }
                let stdio = self.flush_stdio(&mut store);
                return Err(self.trap_error(Phase::Init, &e, hit, &stdio));
            }
        };
        let init = bindings.call_init(&mut store);
        let stdio = self.flush_stdio(&mut store);
        match init {
            Ok(Ok(())) => {
                end_init(&mut store);
                Ok(Live { store, bindings })
            }
            Ok(Err(message)) => Err(Error::ScriptInit {
                script: self.name.to_string(),
                message,
            }),
            Err(e) => Err(init_error(
                &self.name,
                &self.limits,
                &e,
                store.data().limiter.hit,
                &stdio,
            )),
        }
    }

    fn put_back(&self, live: Live) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.limits.max_idle {
            idle.push(live);
        }
    }

    /// Writes what the script printed to the log and returns it.
    fn flush_stdio(&self, store: &mut Store<HostState>) -> String {
        let state = store.data();
        state.stdio.drain(&self.name, state.request_id.as_deref())
    }

    fn trap_error(&self, phase: Phase, e: &wasmtime::Error, memory_hit: Option<usize>, stdio: &str) -> Error {
        super::limits::trap_error(&self.name, &self.limits, phase, e, memory_hit, stdio)
    }
}

/// wasmtime's refusal to load `script`, after the host's words for what was refused.
fn refused<'a>(script: &'a str, message: &'a str) -> impl FnOnce(wasmtime::Error) -> Error + 'a {
    move |source| Error::ScriptLoad {
        script: script.to_string(),
        message: message.to_string(),
        source: Some(source),
    }
}
