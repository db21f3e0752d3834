use std::time::Duration;

use super::proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use super::proto::{InferTensorContents, ModelInferRequest};
use super::{convert, grpc_timeout, status};
use crate::Error;
use bytes::Bytes;
use plinth_runtime::{Tensor, TensorData};

fn input(name: &str, datatype: &str, shape: Vec<i64>, contents: InferTensorContents) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape,
        parameters: Default::default(),
        contents: Some(contents),
    }
}

fn err(msg: ModelInferRequest) -> String {
    convert::request(msg).unwrap_err().to_string()
}

#[test]
fn typed_contents_and_raw_contents_decode_alike() {
    let typed = ModelInferRequest {
        inputs: vec![input(
            "X",
            "FP32",
            vec![2, 2],
            InferTensorContents {
                fp32_contents: vec![1.0, 2.0, 3.0, 4.0],
                ..Default::default()
            },
        )],
        outputs: vec![InferRequestedOutputTensor {
            name: "Y".into(),
            parameters: Default::default(),
        }],
        id: "7".into(),
        ..Default::default()
    };
    let a = convert::request(typed).unwrap();
    let raw: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0].iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut binary = ModelInferRequest {
        inputs: vec![input("X", "FP32", vec![2, 2], InferTensorContents::default())],
        raw_input_contents: vec![Bytes::from(raw)],
        ..Default::default()
    };
    binary.inputs[0].contents = None;
    let b = convert::request(binary).unwrap();
    assert_eq!(a.inputs[0].data, b.inputs[0].data);
    assert_eq!(a.id.as_deref(), Some("7"));
    assert_eq!(a.outputs, Some(vec![("Y".to_string(), true)]));
    assert_eq!(b.outputs, None);
}

#[test]
fn every_malformed_message_names_its_problem() {
    let one = |i: InferInputTensor| ModelInferRequest {
        inputs: vec![i],
        ..Default::default()
    };
    assert!(err(ModelInferRequest::default()).contains("no inputs"));
    let ints = |v: Vec<i32>| InferTensorContents {
        int_contents: v,
        ..Default::default()
    };
    assert!(err(one(input("X", "INT8", vec![1], ints(vec![300])))).contains("does not fit INT8"));
    assert!(
        err(one(input("X", "INT32", vec![3], ints(vec![1, 2]))))
            .contains("needs 3 INT32 elements but int_contents has 2")
    );
    assert!(err(one(input("X", "FP32", vec![1], ints(vec![1])))).contains("fp32_contents has 0"));
    assert!(err(one(input("X", "FP16", vec![1], ints(vec![1])))).contains("send it in raw_input_contents"));
    assert!(err(one(input("X", "FP99", vec![1], ints(vec![1])))).contains("unknown datatype 'FP99'"));
    assert!(err(one(input("X", "INT32", vec![-2], ints(vec![1])))).contains("invalid shape"));
    let bytes = InferTensorContents {
        bytes_contents: vec![Bytes::from_static(&[0xff, 0xfe])],
        ..Default::default()
    };
    assert!(err(one(input("S", "BYTES", vec![1], bytes))).contains("not UTF-8"));
    // Raw contents: one per input, sized by the shape, never both kinds at once.
    let mut two = one(input("X", "INT32", vec![1], InferTensorContents::default()));
    two.raw_input_contents = vec![Bytes::from_static(&[0; 4]), Bytes::from_static(&[0; 4])];
    assert!(err(two).contains("2 entries for 1 inputs"));
    let mut short = one(input("X", "INT32", vec![1_000_000_000], InferTensorContents::default()));
    short.raw_input_contents = vec![Bytes::from_static(&[0; 4])];
    assert!(err(short).contains("the binary data has 4 bytes"));
    let mut both = one(input("X", "INT32", vec![1], ints(vec![1])));
    both.raw_input_contents = vec![Bytes::from_static(&[0; 4])];
    assert!(err(both).contains("both contents and raw_input_contents"));
}

#[test]
fn outputs_travel_as_raw_contents_and_scripts_answer_in_kind() {
    let request = convert::request(ModelInferRequest {
        inputs: vec![input(
            "X",
            "INT64",
            vec![1],
            InferTensorContents {
                int64_contents: vec![5],
                ..Default::default()
            },
        )],
        outputs: vec![InferRequestedOutputTensor {
            name: "b".into(),
            parameters: Default::default(),
        }],
        ..Default::default()
    })
    .unwrap();
    let outputs = vec![
        Tensor {
            name: "a".into(),
            shape: vec![1],
            data: TensorData::Fp32(vec![1.0]),
        },
        Tensor {
            name: "b".into(),
            shape: vec![2],
            data: TensorData::Int64(vec![1, -1]),
        },
    ];
    let r = convert::response("m", "blue", &request, outputs);
    assert_eq!((r.model_name.as_str(), r.model_version.as_str()), ("m", "blue"));
    assert_eq!(r.outputs.len(), 1, "only the output asked for");
    assert_eq!(
        (r.outputs[0].name.as_str(), r.outputs[0].datatype.as_str()),
        ("b", "INT64")
    );
    let expected: Vec<u8> = [1i64, -1].iter().flat_map(|x| x.to_le_bytes()).collect();
    assert_eq!(r.raw_output_contents[0].as_ref(), expected.as_slice());

    let oip = br#"{"outputs": [{"name": "y", "datatype": "FP64", "shape": [2], "data": [0.5, 1.5]}]}"#;
    let r = convert::script_answer("m", "v", oip).unwrap();
    assert_eq!(r.outputs[0].name, "y");
    let expected: Vec<u8> = [0.5f64, 1.5].iter().flat_map(|x| x.to_le_bytes()).collect();
    assert_eq!(r.raw_output_contents[0].as_ref(), expected.as_slice());
    let r = convert::script_answer("m", "v", b"1:hello").unwrap();
    assert_eq!(
        (r.outputs[0].name.as_str(), r.outputs[0].datatype.as_str()),
        ("response", "BYTES")
    );
    assert_eq!(r.raw_output_contents[0].as_ref(), b"\x07\x00\x00\x001:hello");
    let bad = br#"{"outputs": [{"name": "y", "datatype": "FP64", "shape": [3], "data": [0.5]}]}"#;
    let e = convert::script_answer("m", "v", bad).unwrap_err().to_string();
    assert!(
        e.contains("not a valid inference response") && e.contains("output 'y'"),
        "{e}"
    );
}

#[test]
fn errors_map_to_status_codes_by_whose_fault() {
    use tonic::Code;
    let cases = [
        (Error::Unauthorized("no key".into()), Code::Unauthenticated),
        (Error::NotFound("model x".into()), Code::NotFound),
        (Error::BadRequest("shape".into()), Code::InvalidArgument),
        (Error::PayloadTooLarge { limit: 1 }, Code::ResourceExhausted),
        (Error::Overloaded("full".into()), Code::Unavailable),
        (Error::Timeout("late".into()), Code::DeadlineExceeded),
        (Error::BodyTimeout { secs: 60 }, Code::DeadlineExceeded),
        (Error::Internal("bug".into()), Code::Internal),
    ];
    for (e, code) in cases {
        assert_eq!(status(&e).code(), code, "{e}");
    }
}

#[test]
fn client_deadlines_are_read_from_grpc_timeout() {
    assert_eq!(grpc_timeout("200m"), Some(Duration::from_millis(200)));
    assert_eq!(grpc_timeout("3S"), Some(Duration::from_secs(3)));
    assert_eq!(grpc_timeout("1H"), Some(Duration::from_secs(3600)));
    assert_eq!(grpc_timeout("99999999n"), Some(Duration::from_nanos(99_999_999)));
    for bad in ["", "m", "12", "5x", "123456789S", "-1S"] {
        assert_eq!(grpc_timeout(bad), None, "{bad}");
    }
}

/// Fuzzing the gRPC request decoder: messages built from hostile parts (shapes huge, negative or
/// mismatched, unknown datatypes, contents and raw bytes of any size), then their encoding mutated at
/// random, decoded by prost and converted. An answer every time, never a panic. Cases:
/// `PLINTH_FUZZ_CASES` (default 10,000).
#[test]
fn fuzz_grpc_request_decoder() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    use prost::Message;

    let cases = std::env::var("PLINTH_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let datatype = prop::sample::select(vec![
        "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64",
        "BYTES", "FP99", "",
    ]);
    let dim = prop_oneof![0i64..4, Just(-1i64), Just(i64::MAX), Just(1 << 40)];
    let tensor = (
        datatype,
        prop::collection::vec(dim, 0..4),
        prop::collection::vec(any::<i32>(), 0..8),
        prop::collection::vec(any::<f32>(), 0..8),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..6), 0..4),
        any::<bool>(),
    );
    let message = (
        prop::collection::vec(tensor, 0..4),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..24), 0..4),
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..6),
    );
    runner
        .run(&message, |(tensors, raw, flips)| {
            let mut msg = ModelInferRequest {
                model_name: "m".into(),
                ..Default::default()
            };
            for (i, (datatype, shape, ints, floats, bytes, with_contents)) in tensors.into_iter().enumerate() {
                let contents = with_contents.then(|| InferTensorContents {
                    int_contents: ints,
                    fp32_contents: floats,
                    bytes_contents: bytes.into_iter().map(Bytes::from).collect(),
                    ..Default::default()
                });
                msg.inputs.push(InferInputTensor {
                    name: format!("x{i}"),
                    datatype: datatype.into(),
                    shape,
                    parameters: Default::default(),
                    contents,
                });
            }
            msg.raw_input_contents = raw.into_iter().map(Bytes::from).collect();
            let _ = convert::request(msg.clone());
            let mut wire = msg.encode_to_vec();
            for (at, x) in flips {
                if !wire.is_empty() {
                    let i = at % wire.len();
                    wire[i] ^= x;
                }
            }
            if let Ok(mutated) = ModelInferRequest::decode(wire.as_slice()) {
                let _ = convert::request(mutated);
            }
            Ok(())
        })
        .unwrap();
}
