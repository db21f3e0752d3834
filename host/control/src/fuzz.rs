//! Fuzzing, on stable Rust, of every parser that takes bytes from a client or a user's file: the
//! inference protocol's JSON and binary decoders, the `/score` decoder, the token check, and both Azure
//! configs. Inputs are valid documents mutated at random (bytes flipped, inserted, deleted, duplicated,
//! and hostile tokens spliced in: huge counts, deep brackets, overflowing numbers) plus raw noise. The
//! property everywhere: an answer, `Ok` or a named error, never a panic.
//!
//! CI runs 10,000 cases per target (a few seconds); by hand, a longer run:
//! `PLINTH_FUZZ_CASES=2000000 cargo test --release -p plinth-control fuzz`.

use std::time::Duration;

use plinth_router::{TokenIssuer, oip};
use plinth_runtime::{DataType, TensorSpec};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use plinth_spec::config::{DeploymentConfig, InferenceConfig};

fn runner() -> TestRunner {
    let cases = std::env::var("PLINTH_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Tokens that break parsers: counts and numbers out of range, brackets, escapes, type names.
const HOSTILE: &[&str] = &[
    "\"",
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    "-1",
    "0",
    "1e400",
    "3.4e39",
    "-9223372036854775808",
    "18446744073709551616",
    "4611686018427387904",
    "4294967295",
    "99999999999",
    "null",
    "true",
    "NaN",
    "\\u0000",
    "\\ud800",
    "\"BYTES\"",
    "\"FP16\"",
    "\"BOOL\"",
    "\"UINT8\"",
    "\"shape\"",
    "\"binary_data_size\"",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
];

#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, u8),
    Splice(usize, usize),
    Delete(usize, usize),
    Duplicate(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Edit::Flip(p, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Edit::Insert(p, b)),
        (any::<usize>(), 0..HOSTILE.len()).prop_map(|(p, t)| Edit::Splice(p, t)),
        (any::<usize>(), 1..32usize).prop_map(|(p, n)| Edit::Delete(p, n)),
        (any::<usize>(), 1..64usize).prop_map(|(p, n)| Edit::Duplicate(p, n)),
    ]
}

fn apply(seed: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for e in edits {
        let at = |p: usize, len: usize| if len == 0 { 0 } else { p % (len + 1) };
        match *e {
            Edit::Flip(p, x) if !b.is_empty() => {
                let i = p % b.len();
                b[i] ^= x;
            }
            Edit::Flip(..) => {}
            Edit::Insert(p, x) => b.insert(at(p, b.len()), x),
            Edit::Splice(p, t) => {
                let i = at(p, b.len());
                b.splice(i..i, HOSTILE[t].bytes());
            }
            Edit::Delete(p, n) => {
                let i = at(p, b.len());
                let end = (i + n).min(b.len());
                b.drain(i..end);
            }
            Edit::Duplicate(p, n) => {
                let i = at(p, b.len());
                let end = (i + n).min(b.len());
                let copy = b[i..end].to_vec();
                b.splice(end..end, copy);
            }
        }
    }
    b
}

/// A seed mutated by up to 8 edits, or (one case in ten) raw noise.
fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let n = seeds.len();
    prop_oneof![
        9 => (0..n, prop::collection::vec(edit(), 0..8)).prop_map(move |(i, edits)| apply(&seeds[i], &edits)),
        1 => prop::collection::vec(any::<u8>(), 0..256),
    ]
}

fn seeds(texts: &[&str]) -> Vec<Vec<u8>> {
    texts.iter().map(|t| t.as_bytes().to_vec()).collect()
}

fn run(strategy: impl Strategy<Value = Vec<u8>>, target: impl Fn(&[u8])) {
    runner()
        .run(&strategy, |bytes| {
            // A panic fails the case (proptest catches it and shrinks the input).
            target(&bytes);
            Ok::<(), TestCaseError>(())
        })
        .unwrap();
}

const OIP_JSON: &[&str] = &[
    r#"{"id": "7", "inputs": [{"name": "X", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4]]}]}"#,
    r#"{"inputs": [{"name": "X", "shape": [3], "datatype": "INT64", "data": [1, -2, 3]}], "outputs": [{"name": "Y"}]}"#,
    r#"{"inputs": [{"name": "S", "shape": [2], "datatype": "BYTES", "data": ["ab", "c"]}]}"#,
    r#"{"inputs": [{"name": "B", "shape": [1, 2], "datatype": "BOOL", "data": [true, false]}]}"#,
    r#"{"inputs": [{"name": "H", "shape": [2], "datatype": "FP16", "data": [1.5, 65504]}], "parameters": {"a": 1}}"#,
    r#"{"inputs": [{"name": "U", "shape": [4], "datatype": "UINT8", "data": [0, 1, 254, 255]}]}"#,
];

#[test]
fn fuzz_oip_json_decoder() {
    run(mutated(seeds(OIP_JSON)), |b| {
        let _ = oip::decode(b, None);
    });
}

/// A binary request: a JSON head naming `binary_data_size`, then the raw bytes.
fn binary_seeds() -> Vec<Vec<u8>> {
    let head = r#"{"inputs": [{"name": "X", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}},
        {"name": "S", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 11}}]}"#;
    let mut body = head.as_bytes().to_vec();
    body.extend_from_slice(&1.5f32.to_le_bytes());
    body.extend_from_slice(&(-2.0f32).to_le_bytes());
    body.extend_from_slice(&2u32.to_le_bytes());
    body.extend_from_slice(b"ab");
    body.extend_from_slice(&1u32.to_le_bytes());
    body.extend_from_slice(b"c");
    let int_head =
        r#"{"inputs": [{"name": "I", "shape": [1, 2], "datatype": "INT32", "parameters": {"binary_data_size": 8}}]}"#;
    let mut ints = int_head.as_bytes().to_vec();
    ints.extend_from_slice(&[1, 0, 0, 0, 255, 255, 255, 255]);
    vec![body, ints]
}

#[test]
fn fuzz_oip_binary_decoder() {
    let strategy = (mutated(binary_seeds()), 0..3u8, -8i64..8, any::<u64>());
    runner()
        .run(&strategy, |(body, which, delta, raw)| {
            // The declared head length: near the real one (the seeds' JSON ends at the last '}' before
            // the binary part), or anything at all.
            let json_end = body.iter().rposition(|&c| c == b'}').map_or(0, |i| i + 1) as i64;
            let header = match which {
                0 => (json_end + delta).to_string(),
                1 => raw.to_string(),
                _ => String::from_utf8_lossy(&body[..body.len().min(4)]).into_owned(),
            };
            let _ = oip::decode(&body, Some(&header));
            Ok::<(), TestCaseError>(())
        })
        .unwrap();
}

#[test]
fn fuzz_score_decoder() {
    let one = vec![TensorSpec {
        name: "X".into(),
        datatype: DataType::Fp32,
        shape: vec![-1, 3],
    }];
    let several = vec![
        TensorSpec {
            name: "a".into(),
            datatype: DataType::Int64,
            shape: vec![-1, 2],
        },
        TensorSpec {
            name: "s".into(),
            datatype: DataType::Bytes,
            shape: vec![-1],
        },
        TensorSpec {
            name: "f".into(),
            datatype: DataType::Fp16,
            shape: vec![2, -1],
        },
    ];
    let texts = [
        r#"{"data": [[1, 2, 3], [4.5, -6e3, 0]]}"#,
        r#"{"data": [1, 2, 3]}"#,
        r#"{"X": [[0.1, 0.2, 0.3]]}"#,
        r#"{"a": [[1, 2]], "s": ["x", "y"], "f": [[1.5], [2]]}"#,
    ];
    run(mutated(seeds(&texts)), |b| {
        let _ = plinth_runtime::json::decode_request(&one, b);
        let _ = plinth_runtime::json::decode_request(&several, b);
    });
}

#[test]
fn fuzz_token_check() {
    let issuer = TokenIssuer::new(b"a host secret of enough length!!", Duration::from_secs(3600));
    let token = issuer.issue("svc", "service-secret").unwrap().access_token;
    issuer.verify(token.as_bytes(), "svc", "service-secret").unwrap();
    let forged = [
        // alg none, a missing exp, a wrong audience: well-formed tokens that must be refused.
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJzdmMifQ.",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJzdmMifQ.c2ln",
    ];
    let mut texts: Vec<&str> = forged.to_vec();
    texts.push(&token);
    for f in forged {
        assert!(issuer.verify(f.as_bytes(), "svc", "service-secret").is_err());
    }
    run(mutated(seeds(&texts)), |b| {
        let accepted = issuer.verify(b, "svc", "service-secret").is_ok();
        // Only the issued token itself (or a spelling of it that decodes to the same signed bytes) passes.
        if accepted {
            let parts: Vec<&[u8]> = b.split(|&c| c == b'.').collect();
            assert_eq!(parts.len(), 3, "{}", String::from_utf8_lossy(b));
        }
        let _ = issuer.verify(b, "other", "service-secret");
    });
}

#[test]
fn fuzz_azure_configs() {
    let deployment = [
        r#"{"computeType": "aks", "autoScaler": {"autoscaleEnabled": true, "minReplicas": 1, "maxReplicas": 4,
            "targetUtilization": 70, "refreshPeriodInSeconds": 1}, "containerResourceRequirements": {"cpu": 0.5,
            "memoryInGB": 1.0}, "authEnabled": true, "scoringTimeoutMs": 60000, "maxConcurrentRequestsPerContainer": 2,
            "maxQueueWaitMs": 500, "numReplicas": null, "keys": {"primaryKey": "k1", "secondaryKey": "k2"}}"#,
        r#"{"autoScaler": {"autoscaleEnabled": false}, "numReplicas": 3, "tokenAuthEnabled": true, "authEnabled": false,
            "dataCollection": {"storageEnabled": true}, "livenessProbeRequirements": {"periodSeconds": 10}}"#,
        r#"{"batching": {"maxBatchSize": 8, "maxLatencyMs": 2}, "traffic_percentile": 20, "is_default": false}"#,
    ];
    let inference = [
        r#"{"entryScript": "score.py", "sourceDirectory": "src", "environment": {"name": "env"}}"#,
        r#"{"entryScript": "plugin.wasm", "runtime": "python", "condaFile": "env.yml", "extraDockerfileSteps": null}"#,
        r#"{"entry_script": "score.py", "source_directory": "."}"#,
    ];
    run(mutated(seeds(&deployment)), |b| {
        let _ = DeploymentConfig::from_json("deploymentconfig.json", b);
    });
    run(mutated(seeds(&inference)), |b| {
        let _ = InferenceConfig::from_json("inferenceconfig.json", b);
    });
}
