//! The Open Inference Protocol (KServe v2), JSON and the binary tensor extension, for every service.
//! Model name = service name. Tensors of a no-code service go straight to ONNX Runtime; an entry
//! script gets the request as OIP JSON (binary inputs turned into `data`) and answers for itself.

#[cfg(target_endian = "big")]
compile_error!("the binary tensor extension is little-endian; Plinth copies tensors without byte swapping");

use plinth_runtime::json::{flat_data, flatten};
use plinth_runtime::{DataType, Tensor, TensorData, TensorSpec, with_tensor_data};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{Error, Result};

/// The header that splits a binary request or response into its JSON part and its tensor bytes.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// Extensions `GET /v2` reports.
pub const EXTENSIONS: &[&str] = &["binary_tensor_data"];

#[derive(Debug, Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    inputs: Vec<RequestInput>,
    #[serde(default)]
    outputs: Option<Vec<RequestOutput>>,
}

#[derive(Debug, Deserialize)]
struct RequestInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct RequestOutput {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

/// A decoded inference request.
#[derive(Debug)]
pub struct Request {
    pub id: Option<String>,
    pub parameters: Map<String, Value>,
    pub inputs: Vec<Tensor>,
    /// Requested outputs and whether each wants binary data; `None`: all, as `binary_default` says.
    pub outputs: Option<Vec<(String, bool)>>,
    /// The request-wide `binary_data_output` parameter.
    pub binary_default: bool,
}

fn bad(message: String) -> Error {
    Error::BadRequest(message)
}

/// Decodes a request body; `header_len` is the `Inference-Header-Content-Length` value, if any.
pub fn decode(body: &[u8], header_len: Option<&str>) -> Result<Request> {
    let (json_part, mut binary) = match header_len {
        None => (body, &[][..]),
        Some(v) => {
            let n: usize = v
                .trim()
                .parse()
                .map_err(|_| bad(format!("Inference-Header-Content-Length '{v}' is not a number")))?;
            if n > body.len() {
                return Err(bad(format!(
                    "Inference-Header-Content-Length is {n} but the body has only {} bytes",
                    body.len()
                )));
            }
            body.split_at(n)
        }
    };
    let de = &mut serde_json::Deserializer::from_slice(json_part);
    let req: InferRequest = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            bad(format!("invalid inference request: {inner}"))
        } else {
            bad(format!("invalid inference request: {path}: {inner}"))
        }
    })?;
    if req.inputs.is_empty() {
        return Err(bad("invalid inference request: 'inputs' is empty".into()));
    }
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for input in &req.inputs {
        let name = &input.name;
        let datatype = parse_datatype(&input.datatype).ok_or_else(|| {
            bad(format!("input '{name}': unknown datatype '{}' (expected one of BOOL, UINT8..UINT64, INT8..INT64, FP16, FP32, FP64, BYTES)", input.datatype))
        })?;
        let count = Tensor::element_count(&input.shape)
            .map_err(|_| bad(format!("input '{name}': invalid shape {:?}", input.shape)))?;
        let data = match binary_size(&input.parameters, name)? {
            Some(size) => {
                if size > binary.len() {
                    return Err(bad(format!(
                        "input '{name}': binary_data_size is {size} but only {} bytes of binary data remain",
                        binary.len()
                    )));
                }
                let (mine, rest) = binary.split_at(size);
                binary = rest;
                decode_binary(name, datatype, mine, count)?
            }
            None => {
                let value = input.data.as_ref().ok_or_else(|| {
                    bad(format!(
                        "input '{name}' has neither 'data' nor parameters.binary_data_size"
                    ))
                })?;
                // Never reserve from a client's shape alone: each element takes at least a byte of JSON.
                let mut flat = Vec::with_capacity(count.min(json_part.len()));
                flatten(value, &mut flat);
                let data = flat_data(name, datatype, &flat).map_err(|e| bad(e.to_string()))?;
                if data.len() != count {
                    return Err(bad(format!(
                        "input '{name}': shape {:?} needs {count} elements but data has {}",
                        input.shape,
                        data.len()
                    )));
                }
                data
            }
        };
        inputs.push(Tensor {
            name: name.clone(),
            shape: input.shape.clone(),
            data,
        });
    }
    if !binary.is_empty() {
        return Err(bad(format!(
            "{} bytes of binary data follow the request but no input claims them",
            binary.len()
        )));
    }
    let binary_default = req
        .parameters
        .get("binary_data_output")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let outputs = req.outputs.map(|outs| {
        outs.into_iter()
            .map(|o| {
                let binary = o
                    .parameters
                    .get("binary_data")
                    .and_then(Value::as_bool)
                    .unwrap_or(binary_default);
                (o.name, binary)
            })
            .collect()
    });
    Ok(Request {
        id: req.id,
        parameters: req.parameters,
        inputs,
        outputs,
        binary_default,
    })
}

/// OIP datatype names, exactly (`FP32`, not `float`).
pub(crate) fn parse_datatype(name: &str) -> Option<DataType> {
    DataType::ALL.into_iter().find(|d| d.as_str() == name)
}

fn binary_size(params: &Map<String, Value>, name: &str) -> Result<Option<usize>> {
    match params.get("binary_data_size") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(|n| Some(n as usize)).ok_or_else(|| {
            bad(format!(
                "input '{name}': parameters.binary_data_size must be a non-negative integer"
            ))
        }),
    }
}

/// Binary tensor bytes to data: one copy, no per-element parsing (BYTES and BOOL excepted).
pub(crate) fn decode_binary(name: &str, datatype: DataType, bytes: &[u8], count: usize) -> Result<TensorData> {
    if datatype == DataType::Bytes {
        // Each element takes at least its 4-byte length.
        let mut out = Vec::with_capacity(count.min(bytes.len() / 4));
        let mut rest = bytes;
        while !rest.is_empty() {
            if rest.len() < 4 {
                return Err(bad(format!("input '{name}': truncated BYTES element length")));
            }
            let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            rest = &rest[4..];
            if len > rest.len() {
                return Err(bad(format!(
                    "input '{name}': BYTES element {} claims {len} bytes, {} remain",
                    out.len(),
                    rest.len()
                )));
            }
            let s = std::str::from_utf8(&rest[..len]).map_err(|_| {
                bad(format!(
                    "input '{name}': BYTES element {} is not UTF-8 (ONNX strings are text)",
                    out.len()
                ))
            })?;
            out.push(s.to_string());
            rest = &rest[len..];
        }
        if out.len() != count {
            return Err(bad(format!(
                "input '{name}': the shape needs {count} BYTES elements, the binary data holds {}",
                out.len()
            )));
        }
        return Ok(TensorData::Bytes(out));
    }
    let size = element_size(datatype);
    // A client's count times the element size can overflow: checked, never wrapped.
    if count.checked_mul(size) != Some(bytes.len()) {
        return Err(bad(format!(
            "input '{name}': the shape needs {count} {datatype} elements ({} bytes), the binary data has {} bytes",
            (count as u128) * (size as u128),
            bytes.len()
        )));
    }
    Ok(match datatype {
        DataType::Bool => TensorData::Bool(bytes.iter().map(|&b| b != 0).collect()),
        DataType::Uint8 => TensorData::Uint8(bytes.to_vec()),
        DataType::Uint16 => TensorData::Uint16(bytemuck::pod_collect_to_vec(bytes)),
        DataType::Uint32 => TensorData::Uint32(bytemuck::pod_collect_to_vec(bytes)),
        DataType::Uint64 => TensorData::Uint64(bytemuck::pod_collect_to_vec(bytes)),
        DataType::Int8 => TensorData::Int8(bytemuck::pod_collect_to_vec(bytes)),
        DataType::Int16 => TensorData::Int16(bytemuck::pod_collect_to_vec(bytes)),
        DataType::Int32 => TensorData::Int32(bytemuck::pod_collect_to_vec(bytes)),
        DataType::Int64 => TensorData::Int64(bytemuck::pod_collect_to_vec(bytes)),
        DataType::Fp16 => TensorData::Fp16(bytemuck::pod_collect_to_vec(bytes)),
        DataType::Fp32 => TensorData::Fp32(bytemuck::pod_collect_to_vec(bytes)),
        DataType::Fp64 => TensorData::Fp64(bytemuck::pod_collect_to_vec(bytes)),
        DataType::Bytes => unreachable!("handled above"),
    })
}

fn element_size(datatype: DataType) -> usize {
    match datatype {
        DataType::Bool | DataType::Uint8 | DataType::Int8 => 1,
        DataType::Uint16 | DataType::Int16 | DataType::Fp16 => 2,
        DataType::Uint32 | DataType::Int32 | DataType::Fp32 => 4,
        DataType::Uint64 | DataType::Int64 | DataType::Fp64 => 8,
        DataType::Bytes => 0,
    }
}

/// Checks requested output names against the model's outputs.
pub fn check_outputs(req: &Request, outputs: &[TensorSpec], model: &str) -> Result<()> {
    if let Some(requested) = &req.outputs {
        for (name, _) in requested {
            if !outputs.iter().any(|o| &o.name == name) {
                let known: Vec<&str> = outputs.iter().map(|o| o.name.as_str()).collect();
                return Err(bad(format!(
                    "model {model}: unknown output '{name}' (outputs: {})",
                    known.join(", ")
                )));
            }
        }
    }
    Ok(())
}

/// Encodes the response: the JSON part, then the bytes of the outputs sent as binary (none when
/// `json_only`). Returns the body and, when binary data follows, the length of the JSON part.
pub fn encode(
    model: &str,
    version: &str,
    req: &Request,
    outputs: &[Tensor],
    json_only: bool,
) -> (Vec<u8>, Option<usize>) {
    let mut binary: Vec<u8> = Vec::new();
    let mut entries = Vec::with_capacity(outputs.len());
    for t in outputs {
        let wants_binary = match &req.outputs {
            None => req.binary_default,
            Some(list) => match list.iter().find(|(n, _)| n == &t.name) {
                Some((_, b)) => *b,
                None => continue,
            },
        } && !json_only;
        let mut entry = json!({"name": t.name, "datatype": t.datatype().as_str(), "shape": t.shape});
        if wants_binary {
            let before = binary.len();
            append_binary(&mut binary, &t.data);
            entry["parameters"] = json!({"binary_data_size": binary.len() - before});
        } else {
            entry["data"] = json_data(&t.data);
        }
        entries.push(entry);
    }
    let mut response = json!({"model_name": model, "model_version": version, "outputs": entries});
    if let Some(id) = &req.id {
        response["id"] = json!(id);
    }
    if !req.parameters.is_empty() {
        response["parameters"] = Value::Object(req.parameters.clone());
    }
    let mut body = serde_json::to_vec(&response).unwrap_or_default();
    if binary.is_empty() {
        return (body, None);
    }
    let json_len = body.len();
    body.extend_from_slice(&binary);
    (body, Some(json_len))
}

pub(crate) fn append_binary(out: &mut Vec<u8>, data: &TensorData) {
    match data {
        TensorData::Bool(v) => out.extend(v.iter().map(|&b| b as u8)),
        TensorData::Bytes(v) => {
            for s in v {
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
        TensorData::Uint8(v) => out.extend_from_slice(v),
        TensorData::Uint16(v) => out.extend_from_slice(bytemuck::cast_slice(v)),
        TensorData::Uint32(v) => out.extend_from_slice(bytemuck::cast_slice(v)),
        TensorData::Uint64(v) => out.extend_from_slice(bytemuck::cast_slice(v)),
        TensorData::Int8(v) => out.extend_from_slice(bytemuck::cast_slice(v)),
        TensorData::Int16(v) => out.extend_from_slice(bytemuck::cast_slice(v)),
        TensorData::Int32(v) => out.extend_from_slice(bytemuck::cast_slice(v)),
        TensorData::Int64(v) => out.extend_from_slice(bytemuck::cast_slice(v)),
        TensorData::Fp16(v) => out.extend_from_slice(bytemuck::cast_slice(v)),
        TensorData::Fp32(v) => out.extend_from_slice(bytemuck::cast_slice(v)),
        TensorData::Fp64(v) => out.extend_from_slice(bytemuck::cast_slice(v)),
    }
}

/// Flat row-major JSON data, as OIP responses carry it.
fn json_data(data: &TensorData) -> Value {
    match data {
        // `half` serialises f16 as its bits; JSON wants the number.
        TensorData::Fp16(v) => v.iter().map(|x| json!(x.to_f32())).collect(),
        data => with_tensor_data!(data, v => serde_json::to_value(v).unwrap_or_default()),
    }
}

/// The request as OIP JSON with every input's `data` inline, for an entry script's `run`.
pub fn to_script_json(req: &Request) -> Vec<u8> {
    let inputs: Vec<Value> = req
        .inputs
        .iter()
        .map(|t| json!({"name": t.name, "datatype": t.datatype().as_str(), "shape": t.shape, "data": json_data(&t.data)}))
        .collect();
    let mut v = json!({"inputs": inputs});
    if let Some(id) = &req.id {
        v["id"] = json!(id);
    }
    if !req.parameters.is_empty() {
        v["parameters"] = Value::Object(req.parameters.clone());
    }
    if let Some(outs) = &req.outputs {
        v["outputs"] = Value::Array(outs.iter().map(|(n, _)| json!({"name": n})).collect());
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

/// A version's platform and tensors for model metadata: an entry script declares none.
pub(crate) fn platform(info: &crate::VersionInfo) -> (&'static str, &[TensorSpec], &[TensorSpec]) {
    match info.has_script {
        false => ("onnxruntime_onnx", &info.inputs, &info.outputs),
        true => ("plinth_entry_script", &[], &[]),
    }
}

/// `GET /v2/models/{name}`: platform, versions, inputs and outputs (-1 for dynamic dims).
pub fn model_metadata(
    name: &str,
    versions: &[&str],
    platform: &str,
    inputs: &[TensorSpec],
    outputs: &[TensorSpec],
) -> Value {
    let specs = |s: &[TensorSpec]| -> Vec<Value> {
        s.iter()
            .map(|t| json!({"name": t.name, "datatype": t.datatype.as_str(), "shape": t.shape}))
            .collect()
    };
    json!({"name": name, "versions": versions, "platform": platform, "inputs": specs(inputs), "outputs": specs(outputs)})
}

#[cfg(test)]
mod tests;
