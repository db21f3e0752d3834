//! Native ONNX through ONNX Runtime.

use std::sync::Arc;

use plinth_runtime::onnx::ep::{self, Provider, ProviderExt, ProviderSpec};
use plinth_runtime::onnx::{OnnxModel, SessionOptions};
use plinth_runtime::wasm::CallContext;
use plinth_runtime::{DataType, Error, Package, PackageSpec, Tensor, TensorData};

use crate::helpers::*;

fn ridge() -> OnnxModel {
    OnnxModel::load(
        "diabetes",
        &diabetes_model_dir().join("model.onnx"),
        &SessionOptions::default(),
        None,
    )
    .unwrap()
}

#[test]
fn metadata_names_datatypes_and_dynamic_dims() {
    let m = ridge();
    assert_eq!(m.inputs().len(), 1);
    assert_eq!(m.inputs()[0].name, "X");
    assert_eq!(m.inputs()[0].datatype, DataType::Fp32);
    assert_eq!(m.inputs()[0].shape, vec![-1, 10]);
    assert_eq!(m.outputs()[0].name, "variable");
    assert_eq!(m.outputs()[0].shape, vec![-1, 1]);
}

#[test]
fn no_code_scoring_matches_scikit_learn_and_python_onnxruntime() {
    let package = Package::load(&diabetes_spec(), None).unwrap();
    let body = package.score(&sample(), &CallContext::default()).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let got: Vec<f64> = v["variable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row[0].as_f64().unwrap())
        .collect();
    let (sklearn, onnxruntime) = reference();
    assert_close(&got, &sklearn, 1e-4);
    assert_close(&got, &onnxruntime, 1e-6);
}

#[test]
fn tensors_in_and_out() {
    let m = ridge();
    let x = Tensor::new("X", vec![3, 10], TensorData::Fp32(vec![0.01; 30])).unwrap();
    let out = m.infer(&[x]).unwrap();
    assert_eq!(out[0].name, "variable");
    assert_eq!(out[0].shape, vec![3, 1]);
    let TensorData::Fp32(v) = &out[0].data else {
        panic!("not fp32: {:?}", out[0])
    };
    assert_eq!(v[0], v[2], "same rows give the same prediction");
}

#[test]
fn caller_mistakes_are_invalid_input_naming_the_problem() {
    let m = ridge();
    let cases: Vec<(Vec<Tensor>, &str)> = vec![
        (
            vec![Tensor {
                name: "X".into(),
                shape: vec![1, 9],
                data: TensorData::Fp32(vec![0.0; 9]),
            }],
            "expected shape",
        ),
        (
            vec![Tensor {
                name: "X".into(),
                shape: vec![1, 10],
                data: TensorData::Fp64(vec![0.0; 10]),
            }],
            "expected datatype FP32",
        ),
        (
            vec![Tensor {
                name: "X".into(),
                shape: vec![1, 10],
                data: TensorData::Fp32(vec![0.0; 7]),
            }],
            "needs 10 elements",
        ),
        (
            vec![Tensor {
                name: "Y".into(),
                shape: vec![1, 10],
                data: TensorData::Fp32(vec![0.0; 10]),
            }],
            "unknown input 'Y'",
        ),
        (vec![], "missing input 'X'"),
    ];
    for (inputs, want) in cases {
        let err = m.infer(&inputs).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
        assert!(err.to_string().contains(want), "'{err}' should contain '{want}'");
    }
    let package = Package::load(&diabetes_spec(), None).unwrap();
    for (body, want) in [
        (&b"{\"data\": [[1,2]"[..], "not valid JSON"),
        (b"{\"data\": [[1,2,3,4,5,6,7,8,9,\"x\"]]}", "element 9 is \"x\""),
        (b"{\"rows\": []}", "unknown field 'rows'"),
    ] {
        let err = package.score(body, &CallContext::default()).unwrap_err();
        assert!(err.is_client_error(), "{err:?}");
        assert!(err.to_string().contains(want), "'{err}' should contain '{want}'");
    }
}

#[test]
fn a_session_is_shared_safely_by_concurrent_callers() {
    let m = Arc::new(
        OnnxModel::load(
            "diabetes",
            &diabetes_model_dir().join("model.onnx"),
            &SessionOptions {
                intra_threads: 1,
                sessions: 2,
                ..SessionOptions::default()
            },
            None,
        )
        .unwrap(),
    );
    let want = m
        .infer(&[Tensor::new("X", vec![1, 10], TensorData::Fp32(vec![0.02; 10])).unwrap()])
        .unwrap();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let m = m.clone();
            let want = want.clone();
            std::thread::spawn(move || {
                for _ in 0..200 {
                    let x = Tensor::new("X", vec![1, 10], TensorData::Fp32(vec![0.02; 10])).unwrap();
                    assert_eq!(m.infer(&[x]).unwrap(), want);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn a_missing_model_file_is_a_load_error() {
    let spec = PackageSpec {
        models: vec![plinth_runtime::ModelSource {
            name: "gone".into(),
            path: "/nonexistent/model.onnx".into(),
        }],
        ..PackageSpec::default()
    };
    let err = Package::load(&spec, None).unwrap_err();
    assert_eq!(err.kind(), "model_load");
    assert!(err.to_string().contains("gone"), "{err}");
}

#[test]
fn a_corrupt_model_file_is_a_load_error() {
    let path = std::env::temp_dir().join(format!("plinth-corrupt-{}.onnx", std::process::id()));
    std::fs::write(&path, b"this is not a model").unwrap();
    let err = OnnxModel::load("broken", &path, &SessionOptions::default(), None).unwrap_err();
    assert_eq!(err.kind(), "model_load", "{err}");
    std::fs::remove_file(path).unwrap();
}

fn with_providers(list: serde_json::Value) -> plinth_runtime::Result<OnnxModel> {
    let providers = ProviderSpec::list_from_json(list.as_array().unwrap()).unwrap();
    OnnxModel::load(
        "diabetes",
        &diabetes_model_dir().join("model.onnx"),
        &SessionOptions {
            providers,
            ..SessionOptions::default()
        },
        None,
    )
}

#[test]
fn the_cpu_library_lists_its_providers_and_serves_on_cpu() {
    let m = ridge();
    assert_eq!(m.placement().provider, Provider::Cpu);
    assert_eq!(m.placement().fallback, None);
    let names = ep::library_providers();
    assert!(names.iter().any(|n| n == "CPUExecutionProvider"), "{names:?}");
    assert!(Provider::Cpu.is_available());
    assert!(
        !Provider::Cuda.is_available(),
        "the CPU wheel has no CUDA provider: {names:?}"
    );
    assert!(!Provider::TensorRt.is_available());
    let version = plinth_runtime::onnx::library_version().unwrap();
    assert!(version.starts_with("1."), "{version}");
}

#[test]
fn cuda_alone_is_refused_naming_it_and_how_to_get_it() {
    let err = with_providers(serde_json::json!(["cuda"])).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Provider { .. }), "{msg}");
    assert!(
        msg.starts_with("model diabetes: cuda is not in this host's ONNX Runtime library ("),
        "{msg}"
    );
    assert!(msg.contains("libonnxruntime.so"), "{msg}");
    assert!(msg.contains("onnxruntime-gpu"), "{msg}");
    assert!(msg.contains("ORT_DYLIB_PATH"), "{msg}");
    let err = with_providers(serde_json::json!(["tensorrt", "cuda"])).unwrap_err();
    assert!(err.to_string().contains("tensorrt is not in"), "{err}");
}

#[test]
fn cuda_then_cpu_falls_back_and_says_so_with_the_same_answers() {
    let m = with_providers(serde_json::json!(["tensorrt", {"name": "cuda", "deviceId": 0}, "cpu"])).unwrap();
    let p = m.placement();
    assert_eq!(p.provider, Provider::Cpu);
    assert_eq!(p.providers, vec![Provider::Cpu]);
    let note = p.fallback.as_deref().unwrap();
    assert!(
        note.contains("tensorrt is not in this host's ONNX Runtime library"),
        "{note}"
    );
    assert!(note.contains("cuda is not in"), "{note}");
    assert!(note.ends_with("serving on cpu"), "{note}");
    let x = Tensor {
        name: "X".into(),
        shape: vec![1, 10],
        data: TensorData::Fp32(vec![0.03; 10]),
    };
    assert_eq!(m.infer(std::slice::from_ref(&x)).unwrap(), ridge().infer(&[x]).unwrap());
    // The CPU provider with options is registered for real.
    let m = with_providers(serde_json::json!([{"name": "cpu", "arena": false}])).unwrap();
    assert_eq!(m.placement().provider, Provider::Cpu);
    assert_eq!(m.placement().fallback, None);
}
