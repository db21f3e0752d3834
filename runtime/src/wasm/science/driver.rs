//! The driver protocol: how the host and Plinth's Python driver (`runtime/python/science/plinth_science.py`)
//! talk. The host runs Python source in the kept interpreter (a *turn*: the script's load, then one call
//! per request); the guest reaches the host through one import, `host.call`, with frames of one op byte
//! and a payload:
//!
//! - `Q`: asks for the request (a JSON head line, then the body);
//! - `R`: answers it (a JSON head with status, content type and headers, a newline, the body);
//! - `E`: fails it (`{"kind", "message"}`; `bad_request` is the caller's fault);
//! - `S`: sends the script's schema; `M`: asks for the package's model names;
//! - `I`: runs a native ONNX model (`plinth.infer`); `L`: writes a log line.

use std::sync::Arc;

use serde_json::{Value, json};
use wasmtime::{AsContextMut, Caller, Instance, Linker};

use super::sandbox::{APP_DIR, LIB_DIR};
use crate::wasm::call::CallContext;
use crate::{DataType, ModelSet, Tensor, TensorData};

/// What a scientific script answered.
#[derive(Debug, Clone, PartialEq)]
pub struct ScienceResponse {
    pub status: u16,
    pub content_type: Option<String>,
    /// Other headers the script set (`AMLResponse(..., response_headers={...})`).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The host's side of one instance's conversation with its driver.
pub(super) struct Exchange {
    pub(super) models: Arc<ModelSet>,
    pub(super) script: Arc<str>,
    pub(super) request_id: Option<Arc<str>>,
    /// The `Q` frame's answer for the call in progress.
    pub(super) request: Vec<u8>,
    pub(super) reply: Option<Reply>,
    pub(super) schema: Option<Value>,
    /// Bytes of `L` output left for this call.
    pub(super) log_budget: usize,
}

/// How the script ended a turn, as it told the host.
pub(super) enum Reply {
    Response(ScienceResponse),
    BadRequest(String),
    Exception(String),
}

/// The turn that imports the driver and loads the script `module` from [`APP_DIR`] (its `init()` run).
pub(super) fn load_source(module: &str) -> String {
    format!(
        // Assigned, so that the interpreter does not echo the result as it would an expression's.
        "import sys; sys.path[0:0] = [{LIB_DIR:?}]; import plinth_science; _ = plinth_science.load({APP_DIR:?}, {module:?})"
    )
}

/// The turn that serves one request.
pub(super) const CALL_SOURCE: &str = "_ = plinth_science.call()";

/// The `Q` frame's answer: a JSON head line (method, path, query, headers, request id), then `body`.
pub(super) fn request_frame(body: &[u8], ctx: &CallContext) -> Vec<u8> {
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
    request.extend_from_slice(body);
    request
}

/// Adds `host.call` to `linker`, answering from the [`Exchange`] that `exchange` finds in a store's data.
pub(super) fn link<T: 'static>(linker: &mut Linker<T>, exchange: fn(&mut T) -> &mut Exchange) -> wasmtime::Result<()> {
    linker.func_wrap(
        "host",
        "call",
        move |caller: Caller<'_, T>, ptr: i32, len: i32, out_ptr_ptr: i32, out_len_ptr: i32| {
            door(caller, exchange, ptr, len, out_ptr_ptr, out_len_ptr)
        },
    )?;
    Ok(())
}

/// Runs Python `source` in the kept interpreter: 0 when it ran, 1 when it raised (printed to stderr).
pub(super) fn turn(mut store: impl AsContextMut, instance: &Instance, source: &str) -> wasmtime::Result<i32> {
    let mut store = store.as_context_mut();
    let alloc = instance.get_typed_func::<i32, i32>(&mut store, "host_alloc")?;
    let turn = instance.get_typed_func::<(i32, i32), i32>(&mut store, "turn")?;
    let memory = instance
        .get_memory(&mut store, "memory")
        .ok_or_else(|| wasmtime::format_err!("the module exports no memory"))?;
    let len = source.len() as i32;
    let at = alloc.call(&mut store, len)? as u32 as usize;
    if at == 0 {
        wasmtime::bail!("the interpreter could not allocate {len} bytes");
    }
    memory.write(&mut store, at, source.as_bytes())?;
    turn.call(&mut store, (at as i32, len))
}

/// `host.call(ptr, len, out_ptr_ptr, out_len_ptr) -> 0` (answered), `-2` (a fault).
fn door<T>(
    mut caller: Caller<'_, T>,
    exchange: fn(&mut T) -> &mut Exchange,
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
    let answer = answer(exchange(caller.data_mut()), &frame);
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
fn answer(state: &mut Exchange, frame: &[u8]) -> Vec<u8> {
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
