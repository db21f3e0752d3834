//! One interpreter: made fresh for a script (instantiated, `_initialize`d, the script loaded and its
//! `init()` run), then serving requests one turn each until it traps.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use wasmtime::Store;

use super::driver::{self, Exchange, Reply, ScienceResponse};
use super::quota::DiskQuota;
use super::runtime::{ScienceRuntime, State};
use super::sandbox::{Folders, TempDir, sandbox};
use crate::wasm::call::{CallContext, LogPipe};
use crate::wasm::limits::{MemoryCap, Phase, ScriptLimits, bound_init, end_init, init_error, ticks};
use crate::{Error, ModelSet, Result};

/// What every interpreter of one script is made from.
pub(super) struct Recipe {
    pub(super) name: Arc<str>,
    pub(super) rt: Arc<ScienceRuntime>,
    pub(super) models: Arc<ModelSet>,
    pub(super) model_dir: Option<PathBuf>,
    pub(super) app_dir: PathBuf,
    /// The script's module name (its file name without `.py`).
    pub(super) module: String,
    pub(super) limits: ScriptLimits,
}

/// A kept interpreter with the script imported and `init()` run.
pub(super) struct Live {
    store: Store<State>,
    instance: wasmtime::Instance,
    stdio: LogPipe,
    _tmp: TempDir,
}

impl Recipe {
    pub(super) fn failed(&self, message: &str) -> Error {
        Error::ScriptFailed {
            script: self.name.to_string(),
            message: message.into(),
        }
    }

    /// A fresh interpreter, and the schema the script sent while loading.
    pub(super) fn instantiate(&self) -> Result<(Live, Option<Value>)> {
        let started = Instant::now();
        let stdio = LogPipe::new(self.limits.max_log_bytes);
        let folders = Folders {
            scratch: &self.rt.scratch,
            stdlib: &self.rt.interpreter.stdlib_dir,
            lib: &self.rt.interpreter.lib_dir,
            app: &self.app_dir,
            models: self.model_dir.as_deref(),
        };
        let (wasi, tmp) = sandbox(&self.name, &folders, &stdio)?;
        let state = State {
            wasi,
            limiter: MemoryCap {
                limit: self.limits.memory_bytes,
                hit: None,
            },
            exchange: Exchange {
                models: self.models.clone(),
                script: self.name.clone(),
                request_id: None,
                request: Vec::new(),
                reply: None,
                schema: None,
                log_budget: self.limits.max_log_bytes,
            },
            disk: DiskQuota::new(tmp.path(), self.limits.tmp_bytes),
        };
        let mut store = Store::new(&self.rt.engine, state);
        store.limiter(|s| &mut s.limiter);
        bound_init(&mut store, &self.limits);
        let init_err = |store: &mut Store<State>, stdio: &LogPipe, e: wasmtime::Error| {
            let out = stdio.drain(&self.name, None);
            init_error(&self.name, &self.limits, &e, store.data().limiter.hit, &out)
        };
        let instance = match self.rt.linker.instantiate(&mut store, &self.rt.interpreter.module) {
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
        let turned = driver::turn(&mut live.store, &live.instance, &driver::load_source(&self.module));
        let out = live.stdio.drain(&self.name, None);
        let reply = live.store.data_mut().exchange.reply.take();
        match (turned, reply) {
            (Ok(0), None) => {
                end_init(&mut live.store);
                let schema = live.store.data_mut().exchange.schema.take();
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
    pub(super) fn call(&self, live: &mut Live, body: &[u8], ctx: &CallContext) -> (Result<ScienceResponse>, bool) {
        {
            let exchange = &mut live.store.data_mut().exchange;
            exchange.request = driver::request_frame(body, ctx);
            exchange.reply = None;
            exchange.request_id = ctx.request_id.clone();
            exchange.log_budget = self.limits.max_log_bytes;
        }
        live.store.set_epoch_deadline(ticks(self.limits.deadline));
        let turned = driver::turn(&mut live.store, &live.instance, driver::CALL_SOURCE);
        let out = live.stdio.drain(&self.name, ctx.request_id.as_deref());
        let reply = live.store.data_mut().exchange.reply.take();
        let full = live.store.data_mut().disk.take_refused();
        let failed = |m: &str| match full {
            Some(mb) => self.failed(&format!(
                "{m} (the script's private folders hold at most {mb} MiB: scriptTmpMb)"
            )),
            None => self.failed(m),
        };
        match turned {
            Err(e) => (
                Err(self.trap_error(Phase::Run, &e, live.store.data().limiter.hit, &out)),
                false,
            ),
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
                Some(Reply::Exception(m)) => (Err(failed(&m)), true),
                None => (
                    Err(failed(last_line(&out).unwrap_or("the script answered nothing"))),
                    true,
                ),
            },
        }
    }

    fn trap_error(&self, phase: Phase, e: &wasmtime::Error, memory_hit: Option<usize>, out: &str) -> Error {
        crate::wasm::limits::trap_error(&self.name, &self.limits, phase, e, memory_hit, out)
    }
}

fn last_line(text: &str) -> Option<&str> {
    text.lines().rev().map(str::trim).find(|l| !l.is_empty())
}
