//! The process's one scientific runtime: the wasmtime engine the interpreter needs, its linker (WASI
//! preview 1 and the driver's door), the compiled interpreter and the folders instances are made from.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use wasmtime::{Config, Engine, Linker};
use wasmtime_wasi::p1::WasiP1Ctx;

use super::artifacts::{Artifacts, Interpreter};
use super::driver::{self, Exchange};
use super::quota::{self, DiskQuota};
use super::sandbox::{Scratch, start_token};
use crate::wasm::limits::{MemoryCap, start_epoch_ticker};
use crate::{Error, Result};

/// The guest's wasm stack, as the module needs it.
pub(super) const WASM_STACK: usize = 8 << 20;

/// Per-instance state.
pub(super) struct State {
    pub(super) wasi: WasiP1Ctx,
    pub(super) limiter: MemoryCap,
    pub(super) exchange: Exchange,
    pub(super) disk: DiskQuota,
}

/// The compiled interpreter, its engine and linker: one per process.
pub struct ScienceRuntime {
    pub(super) engine: Engine,
    pub(super) linker: Linker<State>,
    pub(super) interpreter: Interpreter,
    /// Where instances' private `/tmp` folders are made.
    pub(super) scratch: Scratch,
    ticker: Arc<AtomicBool>,
}

impl std::fmt::Debug for ScienceRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScienceRuntime")
            .field("stdlib_dir", &self.interpreter.stdlib_dir)
            .field("from_cache", &self.interpreter.from_cache)
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
        Self::get_announcing(cache_dir, &|| {})
    }

    /// As [`get`](Self::get); `announce` is called when the interpreter is about to be compiled (not
    /// found in any cache), so a caller can say why the wait.
    pub fn get_announcing(cache_dir: Option<&Path>, announce: &dyn Fn()) -> Result<Arc<ScienceRuntime>> {
        static RUNTIME: Mutex<Option<Arc<ScienceRuntime>>> = Mutex::new(None);
        let mut slot = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rt) = &*slot {
            return Ok(rt.clone());
        }
        let rt = Arc::new(ScienceRuntime::new(&Artifacts::find()?, cache_dir, announce)?);
        *slot = Some(rt.clone());
        Ok(rt)
    }

    fn new(artifacts: &Artifacts, cache_dir: Option<&Path>, announce: &dyn Fn()) -> Result<Self> {
        const WHAT: &str = "scientific Python runtime";
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .wasm_exceptions(true)
            .async_stack_size(WASM_STACK + (1 << 20))
            .max_wasm_stack(WASM_STACK);
        let engine = Engine::new(&config).map_err(Error::engine(WHAT))?;
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
        let interpreter = Interpreter::prepare(&engine, artifacts, &root, announce)?;
        let scratch = Scratch::new(&root)?;

        let mut linker: Linker<State> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut State| &mut s.wasi).map_err(Error::engine(WHAT))?;
        driver::link(&mut linker, |s: &mut State| &mut s.exchange).map_err(Error::engine(WHAT))?;
        quota::link(&mut linker).map_err(Error::engine(WHAT))?;

        let ticker = start_epoch_ticker(&engine, "plinth-epoch-py")
            .map_err(Error::engine("scientific Python runtime: epoch thread"))?;
        Ok(ScienceRuntime {
            engine,
            linker,
            interpreter,
            scratch,
            ticker,
        })
    }

    /// Whether the compiled module came from the on-disk cache.
    pub fn from_cache(&self) -> bool {
        self.interpreter.from_cache
    }
}
