use super::*;

fn err(body: &[u8], header: Option<&str>) -> String {
    decode(body, header).unwrap_err().to_string()
}

#[test]
fn json_inputs_flat_or_nested() {
    let r = decode(
        br#"{"id": "7", "inputs": [{"name": "X", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4]]}]}"#,
        None,
    )
    .unwrap();
    assert_eq!(r.id.as_deref(), Some("7"));
    assert_eq!(r.inputs[0].data, TensorData::Fp32(vec![1.0, 2.0, 3.0, 4.0]));
    let flat = decode(
        br#"{"inputs": [{"name": "X", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}]}"#,
        None,
    )
    .unwrap();
    assert_eq!(flat.inputs[0].data, r.inputs[0].data);
}

#[test]
fn binary_inputs_and_bytes() {
    let mut body =
        br#"{"inputs": [{"name": "X", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}},
        {"name": "S", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 11}}]}"#
            .to_vec();
    let json_len = body.len();
    body.extend_from_slice(&1.5f32.to_le_bytes());
    body.extend_from_slice(&(-2.0f32).to_le_bytes());
    body.extend_from_slice(&2u32.to_le_bytes());
    body.extend_from_slice(b"ab");
    body.extend_from_slice(&1u32.to_le_bytes());
    body.extend_from_slice(b"c");
    let r = decode(&body, Some(&json_len.to_string())).unwrap();
    assert_eq!(r.inputs[0].data, TensorData::Fp32(vec![1.5, -2.0]));
    assert_eq!(r.inputs[1].data, TensorData::Bytes(vec!["ab".into(), "c".into()]));
}

#[test]
fn every_malformed_request_names_its_problem() {
    assert!(err(b"garbage", None).contains("invalid inference request"));
    assert!(err(br#"{"inputs": [{"name": "X""#, None).contains("invalid inference request"));
    assert!(err(br#"{"id": "1"}"#, None).contains("missing field `inputs`"));
    assert!(
        err(
            br#"{"inputs": [{"name": "X", "shape": [2], "datatype": "FP99", "data": [1, 2]}]}"#,
            None
        )
        .contains("unknown datatype 'FP99'")
    );
    assert!(
        err(
            br#"{"inputs": [{"name": "X", "shape": [3], "datatype": "FP32", "data": [1, 2]}]}"#,
            None
        )
        .contains("needs 3 elements but data has 2")
    );
    assert!(
        err(
            br#"{"inputs": [{"name": "X", "shape": [2], "datatype": "INT32", "data": [1, "two"]}]}"#,
            None
        )
        .contains("element 1 is \"two\"")
    );
    assert!(
        err(
            br#"{"inputs": [{"name": "X", "shape": [2], "datatype": "FP32"}]}"#,
            None
        )
        .contains("neither 'data' nor")
    );
    assert!(
        err(
            br#"{"inputs": [{"name": "X", "shape": "2", "datatype": "FP32", "data": [1]}]}"#,
            None
        )
        .contains("inputs[0].shape")
    );
    assert!(
        err(
            br#"{"inputs": [{"name": "X", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]}"#,
            Some("9999")
        )
        .contains("Inference-Header-Content-Length is 9999")
    );
    let body =
        br#"{"inputs": [{"name": "X", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]}1234"#;
    let n = body.len() - 4;
    assert!(err(body, Some(&n.to_string())).contains("only 4 bytes of binary data remain"));
    assert!(
        err(
            br#"{"inputs": [{"name": "X", "shape": [-2], "datatype": "FP32", "data": []}]}"#,
            None
        )
        .contains("invalid shape")
    );
}

#[test]
fn responses_mix_json_and_binary_outputs() {
    let req = decode(
        br#"{"id": "q", "inputs": [{"name": "X", "shape": [1], "datatype": "FP32", "data": [1]}], "outputs": [{"name": "a", "parameters": {"binary_data": true}}, {"name": "b"}]}"#,
        None,
    )
    .unwrap();
    let outs = vec![
        Tensor {
            name: "a".into(),
            shape: vec![2],
            data: TensorData::Fp32(vec![1.0, 2.0]),
        },
        Tensor {
            name: "b".into(),
            shape: vec![1],
            data: TensorData::Int64(vec![7]),
        },
        Tensor {
            name: "c".into(),
            shape: vec![1],
            data: TensorData::Int64(vec![9]),
        },
    ];
    let (body, json_len) = encode("m", "1", &req, &outs, false);
    let json_len = json_len.expect("binary follows");
    let head: Value = serde_json::from_slice(&body[..json_len]).unwrap();
    assert_eq!(head["id"], "q");
    assert_eq!(
        head["outputs"].as_array().unwrap().len(),
        2,
        "only the requested outputs"
    );
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 8);
    assert_eq!(head["outputs"][1]["data"], json!([7]));
    assert_eq!(&body[json_len..], bytemuck::cast_slice::<f32, u8>(&[1.0, 2.0]));
}

#[test]
fn a_binary_count_whose_size_overflows_is_refused() {
    // 2^62 FP32 elements are 2^64 bytes: the size overflows a usize and must not wrap to match.
    let head = br#"{"inputs": [{"name": "X", "shape": [4611686018427387904], "datatype": "FP32", "parameters": {"binary_data_size": 0}}]}"#;
    let e = err(head, Some(&head.len().to_string()));
    assert!(e.contains("18446744073709551616 bytes"), "{e}");
}
