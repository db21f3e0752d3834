//! Protocol messages to and from the host's own request and tensors. Every count a client gives is
//! checked against what the message holds before anything is kept.

use bytes::Bytes;
use plinth_runtime::{DataType, Tensor, TensorData};
use serde_json::{Map, Value};

use super::proto::infer_parameter::ParameterChoice;
use super::proto::model_infer_response::InferOutputTensor;
use super::proto::{InferParameter, InferTensorContents, ModelInferRequest, ModelInferResponse};
use crate::oip;
use crate::{Error, Result};

fn bad(message: String) -> Error {
    Error::BadRequest(message)
}

/// A request message as the host's decoded request (what the HTTP side decodes from JSON or binary).
pub(crate) fn request(msg: ModelInferRequest) -> Result<oip::Request> {
    if msg.inputs.is_empty() {
        return Err(bad("the request has no inputs".into()));
    }
    let raw = msg.raw_input_contents;
    if !raw.is_empty() && raw.len() != msg.inputs.len() {
        return Err(bad(format!(
            "raw_input_contents has {} entries for {} inputs (one per input, in order)",
            raw.len(),
            msg.inputs.len()
        )));
    }
    let mut inputs = Vec::with_capacity(msg.inputs.len());
    for (i, input) in msg.inputs.into_iter().enumerate() {
        let name = input.name;
        let datatype = oip::parse_datatype(&input.datatype).ok_or_else(|| {
            bad(format!(
                "input '{name}': unknown datatype '{}' (expected one of BOOL, UINT8..UINT64, INT8..INT64, FP16, FP32, FP64, BYTES)",
                input.datatype
            ))
        })?;
        let count = Tensor::element_count(&input.shape)
            .map_err(|_| bad(format!("input '{name}': invalid shape {:?}", input.shape)))?;
        let data = match (raw.get(i), input.contents) {
            (Some(_), Some(c)) if c != InferTensorContents::default() => {
                return Err(bad(format!("input '{name}' has both contents and raw_input_contents")));
            }
            (Some(bytes), _) => oip::decode_binary(&name, datatype, bytes, count)?,
            (None, contents) => from_contents(&name, datatype, contents.unwrap_or_default(), count)?,
        };
        inputs.push(Tensor {
            name,
            shape: input.shape,
            data,
        });
    }
    Ok(oip::Request {
        id: (!msg.id.is_empty()).then_some(msg.id),
        parameters: parameters(msg.parameters),
        inputs,
        outputs: (!msg.outputs.is_empty()).then(|| msg.outputs.into_iter().map(|o| (o.name, true)).collect()),
        binary_default: true,
    })
}

/// Typed contents to tensor data: the field of the datatype, narrowed where the protocol widens
/// (INT8 and INT16 travel in `int_contents`, UINT8 and UINT16 in `uint_contents`).
fn from_contents(name: &str, datatype: DataType, c: InferTensorContents, count: usize) -> Result<TensorData> {
    fn narrow<A: Copy, B: TryFrom<A>>(name: &str, datatype: DataType, v: &[A]) -> Result<Vec<B>> {
        v.iter()
            .map(|&x| B::try_from(x))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| bad(format!("input '{name}': a value does not fit {}", datatype.as_str())))
    }
    let (data, field) = match datatype {
        DataType::Bool => (TensorData::Bool(c.bool_contents), "bool_contents"),
        DataType::Int8 => (
            TensorData::Int8(narrow(name, datatype, &c.int_contents)?),
            "int_contents",
        ),
        DataType::Int16 => (
            TensorData::Int16(narrow(name, datatype, &c.int_contents)?),
            "int_contents",
        ),
        DataType::Int32 => (TensorData::Int32(c.int_contents), "int_contents"),
        DataType::Int64 => (TensorData::Int64(c.int64_contents), "int64_contents"),
        DataType::Uint8 => (
            TensorData::Uint8(narrow(name, datatype, &c.uint_contents)?),
            "uint_contents",
        ),
        DataType::Uint16 => (
            TensorData::Uint16(narrow(name, datatype, &c.uint_contents)?),
            "uint_contents",
        ),
        DataType::Uint32 => (TensorData::Uint32(c.uint_contents), "uint_contents"),
        DataType::Uint64 => (TensorData::Uint64(c.uint64_contents), "uint64_contents"),
        DataType::Fp32 => (TensorData::Fp32(c.fp32_contents), "fp32_contents"),
        DataType::Fp64 => (TensorData::Fp64(c.fp64_contents), "fp64_contents"),
        DataType::Fp16 => {
            return Err(bad(format!(
                "input '{name}': FP16 has no contents field; send it in raw_input_contents"
            )));
        }
        DataType::Bytes => {
            let strings = c
                .bytes_contents
                .into_iter()
                .enumerate()
                .map(|(i, b)| {
                    String::from_utf8(b.to_vec()).map_err(|_| {
                        bad(format!(
                            "input '{name}': BYTES element {i} is not UTF-8 (ONNX strings are text)"
                        ))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            (TensorData::Bytes(strings), "bytes_contents")
        }
    };
    if data.len() != count {
        return Err(bad(format!(
            "input '{name}': the shape needs {count} {} elements but {field} has {}",
            datatype.as_str(),
            data.len()
        )));
    }
    Ok(data)
}

/// Protocol parameters as JSON (what an entry script reads).
fn parameters(params: std::collections::HashMap<String, InferParameter>) -> Map<String, Value> {
    params
        .into_iter()
        .filter_map(|(k, v)| {
            let v = match v.parameter_choice? {
                ParameterChoice::BoolParam(b) => Value::from(b),
                ParameterChoice::Int64Param(n) => Value::from(n),
                ParameterChoice::StringParam(s) => Value::from(s),
                ParameterChoice::DoubleParam(x) => Value::from(x),
                ParameterChoice::Uint64Param(n) => Value::from(n),
            };
            Some((k, v))
        })
        .collect()
}

/// A model's outputs as the response message: each requested output (all, when none was named), its
/// bytes in `raw_output_contents`, as Triton answers.
pub(crate) fn response(model: &str, version: &str, request: &oip::Request, outputs: Vec<Tensor>) -> ModelInferResponse {
    let mut reply = ModelInferResponse {
        model_name: model.into(),
        model_version: version.into(),
        id: request.id.clone().unwrap_or_default(),
        ..Default::default()
    };
    for t in outputs {
        if let Some(wanted) = &request.outputs
            && !wanted.iter().any(|(n, _)| n == &t.name)
        {
            continue;
        }
        let mut raw = Vec::new();
        oip::append_binary(&mut raw, &t.data);
        reply.outputs.push(InferOutputTensor {
            datatype: t.datatype().as_str().into(),
            name: t.name,
            shape: t.shape,
            ..Default::default()
        });
        reply.raw_output_contents.push(Bytes::from(raw));
    }
    reply
}

/// An entry script's answer as the response message: an inference-protocol JSON response
/// (`{"outputs": [{"name", "datatype", "shape", "data"}]}`) becomes tensors; any other answer travels
/// whole as one BYTES output named `response`.
pub(crate) fn script_answer(model: &str, version: &str, answer: &[u8]) -> Result<ModelInferResponse> {
    let outputs = match serde_json::from_slice::<Value>(answer) {
        Ok(Value::Object(mut fields)) if fields.get("outputs").is_some_and(Value::is_array) => {
            let as_request = serde_json::json!({"inputs": fields.remove("outputs")});
            let decoded = oip::decode(&serde_json::to_vec(&as_request).unwrap_or_default(), None).map_err(|e| {
                Error::Internal(format!(
                    "the entry script's answer is not a valid inference response: {}",
                    e.to_string()
                        .replace("invalid inference request: ", "")
                        .replace("input", "output")
                ))
            })?;
            decoded.inputs
        }
        _ => vec![Tensor {
            name: "response".into(),
            shape: vec![1],
            data: TensorData::Bytes(vec![String::from_utf8_lossy(answer).into_owned()]),
        }],
    };
    let all = oip::Request {
        id: None,
        parameters: Map::new(),
        inputs: Vec::new(),
        outputs: None,
        binary_default: true,
    };
    Ok(response(model, version, &all, outputs))
}
