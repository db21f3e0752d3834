//! Entry scripts as WebAssembly components on wasmtime: one engine per process, compiled components
//! cached on disk, kept instances with a deadline and a memory cap on every call.

mod cache;
mod call;
mod host;
mod limits;
mod science;
mod script;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use self::call::{CallContext, HttpRequest};
pub use self::limits::{EPOCH_TICK, ScriptLimits};
pub use self::science::{
    APP_DIR, Artifacts, COMPILE_SECS, ScienceResponse, ScienceRuntime, ScienceScript, machine_cache_dir,
};
pub use self::script::EntryScript;
use crate::{Error, Result};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../plugins/wit",
        world: "plinth:scoring/scoring",
    });
}

pub(crate) use self::bindings::plinth::scoring::types as wit;
use self::bindings::{Scoring, ScoringPre};
use self::host::HostState;

/// Engine-wide settings. Per-script limits live in [`ScriptLimits`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where compiled components are kept, keyed by the content hash of the component and the engine
    /// settings. `None` compiles on every load. Default: none.
    pub cache_dir: Option<PathBuf>,
    /// Live instances the pooling allocator can hold at once, across every script. Default 64.
    pub max_instances: u32,
    /// The largest linear memory any instance may have; each script's own cap is at most this.
    /// Default 1 GiB (address space is reserved, not memory).
    pub max_memory_bytes: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            cache_dir: None,
            max_instances: 64,
            max_memory_bytes: 1 << 30,
        }
    }
}

/// The wasmtime engine, its linker with WASI and the Plinth host imports, and the epoch ticker.
pub struct WasmEngine {
    engine: Engine,
    linker: Linker<HostState>,
    config: EngineConfig,
    ticker: Arc<AtomicBool>,
}

impl std::fmt::Debug for WasmEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmEngine")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl WasmEngine {
    pub fn new(config: EngineConfig) -> Result<Self> {
        let mut pool = PoolingAllocationConfig::default();
        // wasip2 components (Rust and Python alike) carry two tables; Python components many core instances.
        pool.total_component_instances(config.max_instances)
            .total_core_instances(config.max_instances.saturating_mul(8))
            .total_memories(config.max_instances.saturating_mul(2))
            .total_tables(config.max_instances.saturating_mul(4))
            .total_stacks(config.max_instances)
            .max_tables_per_component(4)
            .max_memories_per_component(2)
            .max_core_instances_per_component(64)
            .table_elements(200_000)
            .max_memory_size(config.max_memory_bytes);
        let mut wt = Config::new();
        wt.epoch_interruption(true)
            .wasm_component_model(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wt).map_err(Error::engine("wasm engine"))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(Error::engine("wasm engine: linking WASI"))?;
        Scoring::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(Error::engine("wasm engine: linking host imports"))?;

        let ticker = self::limits::start_epoch_ticker(&engine, "plinth-epoch")
            .map_err(Error::engine("wasm engine: epoch thread"))?;
        Ok(WasmEngine {
            engine,
            linker,
            config,
            ticker,
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn linker(&self) -> &Linker<HostState> {
        &self.linker
    }
}

impl Drop for WasmEngine {
    fn drop(&mut self) {
        self.ticker.store(false, Ordering::Relaxed);
    }
}
