//! What an entry script's store holds, and the host side of the `plinth:scoring/host` imports.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::call::LogPipe;
use super::limits::MemoryCap;
use super::wit;
use crate::{ModelSet, Tensor, TensorData};

/// Per-instance state: WASI, the memory cap, the models the script may call and the call's log budget.
pub(crate) struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: MemoryCap,
    pub(crate) models: Arc<ModelSet>,
    pub(crate) script: Arc<str>,
    pub(crate) stdio: LogPipe,
    /// The request being served, for log lines.
    pub(crate) request_id: Option<Arc<str>>,
    /// Bytes of `log` output left for this call.
    pub(crate) log_budget: usize,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit::Host for HostState {}

impl super::bindings::plinth::scoring::host::Host for HostState {
    fn infer(&mut self, model: String, inputs: Vec<wit::Tensor>) -> Result<Vec<wit::Tensor>, String> {
        let model = self.models.get(&model).map_err(|e| e.to_string())?;
        let inputs: Vec<Tensor> = inputs.into_iter().map(Tensor::from).collect();
        let outputs = model.infer(&inputs).map_err(|e| e.to_string())?;
        Ok(outputs.into_iter().map(wit::Tensor::from).collect())
    }

    fn models(&mut self) -> Vec<String> {
        self.models.names().map(str::to_string).collect()
    }

    fn log(&mut self, level: wit::Level, message: String) {
        if self.log_budget == 0 {
            return;
        }
        let message = truncate(&message, self.log_budget);
        self.log_budget -= message.len();
        let script = &*self.script;
        let request_id = self.request_id.as_deref().unwrap_or("-");
        match level {
            wit::Level::Trace => tracing::trace!(target: "plinth::script", script, request_id, "{message}"),
            wit::Level::Debug => tracing::debug!(target: "plinth::script", script, request_id, "{message}"),
            wit::Level::Info => tracing::info!(target: "plinth::script", script, request_id, "{message}"),
            wit::Level::Warn => tracing::warn!(target: "plinth::script", script, request_id, "{message}"),
            wit::Level::Error => tracing::error!(target: "plinth::script", script, request_id, "{message}"),
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl From<wit::Tensor> for Tensor {
    fn from(t: wit::Tensor) -> Self {
        let data = match t.data {
            wit::TensorData::Bool(v) => TensorData::Bool(v),
            wit::TensorData::Uint8(v) => TensorData::Uint8(v),
            wit::TensorData::Uint16(v) => TensorData::Uint16(v),
            wit::TensorData::Uint32(v) => TensorData::Uint32(v),
            wit::TensorData::Uint64(v) => TensorData::Uint64(v),
            wit::TensorData::Int8(v) => TensorData::Int8(v),
            wit::TensorData::Int16(v) => TensorData::Int16(v),
            wit::TensorData::Int32(v) => TensorData::Int32(v),
            wit::TensorData::Int64(v) => TensorData::Int64(v),
            wit::TensorData::Fp32(v) => TensorData::Fp32(v),
            wit::TensorData::Fp64(v) => TensorData::Fp64(v),
            wit::TensorData::Bytes(v) => TensorData::Bytes(v),
        };
        Tensor {
            name: t.name,
            shape: t.shape,
            data,
        }
    }
}

impl From<Tensor> for wit::Tensor {
    fn from(t: Tensor) -> Self {
        let data = match t.data {
            TensorData::Bool(v) => wit::TensorData::Bool(v),
            TensorData::Uint8(v) => wit::TensorData::Uint8(v),
            TensorData::Uint16(v) => wit::TensorData::Uint16(v),
            TensorData::Uint32(v) => wit::TensorData::Uint32(v),
            TensorData::Uint64(v) => wit::TensorData::Uint64(v),
            TensorData::Int8(v) => wit::TensorData::Int8(v),
            TensorData::Int16(v) => wit::TensorData::Int16(v),
            TensorData::Int32(v) => wit::TensorData::Int32(v),
            TensorData::Int64(v) => wit::TensorData::Int64(v),
            // The contract has no half-precision case: scripts see FP16 outputs widened to FP32.
            TensorData::Fp16(v) => wit::TensorData::Fp32(v.into_iter().map(f32::from).collect()),
            TensorData::Fp32(v) => wit::TensorData::Fp32(v),
            TensorData::Fp64(v) => wit::TensorData::Fp64(v),
            TensorData::Bytes(v) => wit::TensorData::Bytes(v),
        };
        wit::Tensor {
            name: t.name,
            shape: t.shape,
            data,
        }
    }
}
