//! The Open Inference Protocol with the real Python tritonclient, and every malformed request by hand.

use serde_json::json;

use crate::fixture::*;

const KEY: &str = "oip-test-key-0123456789abcdef";

fn oip_host() -> (TestHost, std::path::PathBuf) {
    let dir = temp_dir("oip");
    let host = TestHost::start(&dir.join("ws"), &[]);
    host.register_diabetes();
    host.register_all_types();
    let dc = Dc::test().keys(KEY).replicas(2).write(&dir, "dc.json");
    for m in ["diabetes", "alltypes"] {
        host.run(&["deploy", "-m", &format!("{m}:1"), "-n", m, "--dc", dc.to_str().unwrap()]);
    }
    (host, dir)
}

#[test]
fn tritonclient_json_batch_binary_and_every_datatype() {
    let (host, _) = oip_host();
    python_client("oip_client.py", &[&host.url, KEY]);
}

fn infer(host: &TestHost, path: &str, body: &str) -> Reply {
    curl(
        &format!("{}{path}", host.url),
        &[
            "-X",
            "POST",
            "-H",
            &format!("Authorization: Bearer {KEY}"),
            "--data-binary",
            body,
        ],
    )
}

#[test]
fn malformed_requests_are_4xx_naming_the_problem() {
    let (host, _) = oip_host();
    let x = |shape: &str, datatype: &str, data: &str| {
        format!(r#"{{"inputs": [{{"name": "X", "shape": {shape}, "datatype": "{datatype}", "data": {data}}}]}}"#)
    };
    let row = "[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]";
    let cases: Vec<(String, &str, u16, &str)> = vec![
        (
            x("[1, 9]", "FP32", "[1,2,3,4,5,6,7,8,9]"),
            "/v2/models/diabetes/infer",
            400,
            "expected shape",
        ),
        (
            x("[1, 10]", "FP32", "[1, 2]"),
            "/v2/models/diabetes/infer",
            400,
            "needs 10 elements but data has 2",
        ),
        (
            x("[1, 10]", "FP64", row),
            "/v2/models/diabetes/infer",
            400,
            "expected datatype FP32, got FP64",
        ),
        (
            x("[1, 10]", "FP128", row),
            "/v2/models/diabetes/infer",
            400,
            "unknown datatype 'FP128'",
        ),
        (
            x("[1, 10]", "FP32", r#"["a","b","c","d","e","f","g","h","i","j"]"#),
            "/v2/models/diabetes/infer",
            400,
            "element 0 is \"a\"",
        ),
        (
            format!(r#"{{"inputs": [{{"name": "Y", "shape": [1, 10], "datatype": "FP32", "data": {row}}}]}}"#),
            "/v2/models/diabetes/infer",
            400,
            "unknown input 'Y'",
        ),
        (
            r#"{"id": "1"}"#.to_string(),
            "/v2/models/diabetes/infer",
            400,
            "missing field `inputs`",
        ),
        (
            "%%% not json".to_string(),
            "/v2/models/diabetes/infer",
            400,
            "invalid inference request",
        ),
        (
            r#"{"inputs": [{"name": "X", "sha"#.to_string(),
            "/v2/models/diabetes/infer",
            400,
            "invalid inference request",
        ),
        (
            format!(
                r#"{{"inputs": [{{"name": "X", "shape": [1, 10], "datatype": "FP32", "data": {row}}}], "outputs": [{{"name": "nope"}}]}}"#
            ),
            "/v2/models/diabetes/infer",
            400,
            "unknown output 'nope'",
        ),
        (
            x("[1, 10]", "FP32", "[3.4e39, 0, 0, 0, 0, 0, 0, 0, 0, 0]"),
            "/v2/models/diabetes/infer",
            400,
            "element 0 is 3.4e+39, which is not a valid FP32 value",
        ),
        (
            // A shape far larger than the body: refused, never allocated.
            x("[1000000000000]", "FP32", "[1]"),
            "/v2/models/diabetes/infer",
            400,
            "needs 1000000000000 elements but data has 1",
        ),
        (
            x("[1, 10]", "FP32", row),
            "/v2/models/nosuch/infer",
            404,
            "model nosuch not found",
        ),
        (
            x("[1, 10]", "FP32", row),
            "/v2/models/diabetes/versions/9/infer",
            404,
            "has no version 9",
        ),
    ];
    for (body, path, status, want) in cases {
        let r = infer(&host, path, &body);
        assert_eq!(r.status, status, "{path} {body}: {}", r.body);
        let err = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(err.contains(want), "'{err}' should contain '{want}' for {body}");
    }
    // A binary request whose header length overruns the body, and one with bytes nobody claims.
    let r = curl(
        &format!("{}/v2/models/diabetes/infer", host.url),
        &[
            "-X",
            "POST",
            "-H",
            &format!("Authorization: Bearer {KEY}"),
            "-H",
            "Inference-Header-Content-Length: 9999",
            "--data-binary",
            "{}",
        ],
    );
    assert_eq!(r.status, 400, "{}", r.body);
    // A `/score` body whose first element at each depth is long and the rest short: the shape read
    // from it would be 10^12 elements; it is refused as ragged, never reserved.
    let first_heavy = {
        let zeros = |n: usize| vec!["0"; n].join(",");
        let inner = format!("[{}]", zeros(10_000));
        let middle = format!("[{inner},{}]", zeros(9_999));
        format!(r#"{{"data": [{middle},{}]}}"#, zeros(9_999))
    };
    let r = score(&host.score_url("diabetes"), Some(KEY), &first_heavy);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("ragged"), "{}", r.body);
    let ok = infer(
        &host,
        "/v2/models/diabetes/versions/1/infer",
        &x("[1, 10]", "FP32", row),
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.json()["model_version"], "1");
    // Auth applies to models; health does not need it.
    let r = curl(
        &format!("{}/v2/models/diabetes/infer", host.url),
        &["-X", "POST", "--data-binary", &x("[1, 10]", "FP32", row)],
    );
    assert_eq!(r.status, 401);
    assert_eq!(
        curl(&format!("{}/v2/health/ready", host.url), &[]).status,
        200,
        "still ready after all that"
    );
    // Without a credential nothing names a version or a service.
    let r = curl(&format!("{}/v2/models/diabetes/versions/9", host.url), &[]);
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(!r.body.contains("versions:"), "{}", r.body);
    let r = curl(&format!("{}/readyz", host.url), &[]);
    assert_eq!((r.status, r.json()), (200, json!({"status": "ready"})));
}

#[test]
fn entry_scripts_get_the_request_as_oip_json() {
    let dir = temp_dir("oip-script");
    let host = TestHost::start(&dir.join("ws"), &[]);
    host.deploy_adversary(&dir, "adv", &Dc::test().keys(KEY));
    let r = infer(
        &host,
        "/v2/models/adv/infer",
        r#"{"id": "a", "inputs": [{"name": "t", "shape": [2], "datatype": "INT32", "data": [[1], [2]]}]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let (_, json) = r.body.split_once(':').unwrap();
    let seen: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(seen["inputs"][0]["data"], json!([1, 2]), "flattened, as OIP JSON");
    assert_eq!(seen["id"], "a");
    let meta = curl(
        &format!("{}/v2/models/adv", host.url),
        &["-H", &format!("Authorization: Bearer {KEY}")],
    );
    assert_eq!(meta.json()["platform"], "plinth_entry_script");
}
