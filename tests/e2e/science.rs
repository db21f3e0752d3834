//! Azure users' score.py files, unchanged, on a real host: the scientific runtime (the real python.wasm
//! with numpy, pandas, scikit-learn and joblib) behind the real HTTP routes, deployed by the CLI from the
//! files Azure made them write.

use crate::fixture::*;
use crate::support::repo;

fn make_model(dir: &std::path::Path) {
    let out = std::process::Command::new(repo().join(".venv/bin/python"))
        .arg(repo().join("examples/azure-sklearn/make_model.py"))
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_azure_example_runs_unchanged_and_answers_as_scikit_learn() {
    let dir = temp_dir("azure-sklearn");
    let host = TestHost::start(&dir.join("ws"), &[]);
    make_model(&dir.join("model"));
    host.run(&[
        "model",
        "register",
        "--name",
        "ridge",
        "--path",
        dir.join("model").to_str().unwrap(),
    ]);
    let out = host
        .cli()
        .args([
            "deploy",
            "-m",
            "ridge:1",
            "-n",
            "ridge",
            "-ic",
            "examples/azure-sklearn/inferenceconfig.json",
            "-dc",
            "examples/azure-sklearn/deploymentconfig.json",
        ])
        .output()
        .unwrap();
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{progress}");
    assert!(
        progress.contains("runs as it is on the scientific Python runtime"),
        "{progress}"
    );
    let (key, _) = host.keys("ridge");
    let sample = std::fs::read_to_string(repo().join("examples/azure-sklearn/sample.json")).unwrap();
    let r = score(&host.score_url("ridge"), Some(&key), &sample);
    assert_eq!(r.status, 200, "{}", r.body);
    let got: Vec<f64> = serde_json::from_str(&r.body).unwrap();
    let want = std::process::Command::new(repo().join(".venv/bin/python"))
        .arg(repo().join("examples/azure-sklearn/make_model.py"))
        .args(["--predict", "examples/azure-sklearn/sample.json"])
        .current_dir(repo())
        .output()
        .unwrap();
    let want: Vec<f64> = serde_json::from_slice(&want.stdout).unwrap();
    assert_eq!(got, want);
    // The interpreter's own echo never reaches the service log; the script's output would.
    let logs = host.run(&["service", "logs", "ridge"]);
    assert!(!logs.lines().any(|l| l.trim_end().ends_with(" True")), "{logs}");
    // "Debug locally first": the same files in process, the pickle's folder as AZUREML_MODEL_DIR.
    let out = plinth()
        .args(["score", "-m"])
        .arg(format!("ridge={}", dir.join("model").display()))
        .args([
            "--script",
            "examples/azure-sklearn/score.py",
            "-d",
            "examples/azure-sklearn/sample.json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let local: Vec<f64> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(local, got);
    // Which runtime serves is said.
    let show = host.run_json(&["service", "show", "ridge"]);
    assert_eq!(show["versions"][0]["runtime"], "python-scientific", "{show}");
    assert!(host.run(&["service", "show", "ridge"]).contains("python-scientific"));
    // A script exception is a 500 with the script's line, in the caller's answer and the log.
    let r = score(&host.score_url("ridge"), Some(&key), r#"{"rows": []}"#);
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(r.body.contains("KeyError: 'data' (at score.py:15)"), "{}", r.body);
}

#[test]
fn schemas_raw_requests_native_models_and_model_paths() {
    let dir = temp_dir("azure-helpers");
    let host = TestHost::start(&dir.join("ws"), &[]);
    host.register_diabetes();
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("score.py"),
        r#"import numpy as np
import plinth
from azureml.core.model import Model
from azureml.contrib.services.aml_request import rawhttp
from azureml.contrib.services.aml_response import AMLResponse


def init():
    global path
    path = Model.get_model_path("diabetes")


@rawhttp
def run(request):
    if request.method == "GET":
        return AMLResponse({"model": path, "n": request.args.get("n")}, 200)
    rows = np.array(request.get_json()["data"], dtype=np.float32)
    out = plinth.infer("diabetes", {"X": rows})
    return AMLResponse({"variable": out["variable"], "who": request.headers.get("X-Who")}, 201,
                       {"X-Served-By": "score.py"})
"#,
    )
    .unwrap();
    let ic = write_json(&dir, "ic.json", &serde_json::json!({"entryScript": "src/score.py"}));
    let dc = Dc::test().no_auth().write(&dir, "dc.json");
    host.run(&[
        "deploy",
        "-m",
        "diabetes:1",
        "-n",
        "raw",
        "--ic",
        ic.to_str().unwrap(),
        "--dc",
        dc.to_str().unwrap(),
    ]);
    let url = host.score_url("raw");
    let r = curl(&format!("{url}?n=3"), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), serde_json::json!({"model": "/models/model.onnx", "n": "3"}));
    let r = curl(
        &url,
        &[
            "-H",
            "Content-Type: application/json",
            "-H",
            "X-Who: me",
            "-d",
            &sample_body(),
        ],
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("x-served-by").as_deref(), Some("score.py"));
    // The native ONNX model's answer, through plinth.infer from numpy, equals the no-code route's.
    let plain = Dc::test().no_auth().write(&dir, "plain.json");
    host.deploy("diabetes:1", "plain", &plain);
    let direct = score(&host.score_url("plain"), None, &sample_body()).json();
    let f32s = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|row| row[0].as_f64().unwrap() as f32)
            .collect()
    };
    assert_eq!(f32s(&r.json()["variable"]), f32s(&direct["variable"]), "{}", r.body);
    assert_eq!(r.json()["who"], "me");

    // inference_schema: decoded arguments, a 400 naming the parameter, and the schema in swagger.json.
    std::fs::write(
        src.join("score.py"),
        r#"import numpy as np
import pandas as pd
from inference_schema.schema_decorators import input_schema, output_schema
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.parameter_types.pandas_parameter_type import PandasParameterType


@input_schema("data", PandasParameterType(pd.DataFrame({"a": [1.0], "b": [2.0]})))
@output_schema(NumpyParameterType(np.array([3.0])))
def run(data):
    return (data["a"] + data["b"]).to_numpy()
"#,
    )
    .unwrap();
    host.run(&[
        "deploy",
        "-n",
        "schema",
        "--ic",
        ic.to_str().unwrap(),
        "--dc",
        dc.to_str().unwrap(),
    ]);
    let url = host.score_url("schema");
    let r = score(&url, None, r#"{"data": [{"a": 1, "b": 2}, {"a": 0.5, "b": 0.25}]}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), serde_json::json!([3.0, 0.75]));
    let r = score(&url, None, r#"{"rows": []}"#);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("data"), "{}", r.body);
    let swagger = curl(&url.replace("/score", "/swagger.json"), &[]).json();
    let schema = &swagger["paths"]["/api/v1/service/schema/score"]["post"]["requestBody"]["content"]["application/json"]
        ["schema"];
    assert_eq!(
        schema["example"]["data"],
        serde_json::json!([{"a": 1.0, "b": 2.0}]),
        "{swagger}"
    );
}

#[test]
fn pure_python_packages_of_the_conda_file_are_vendored_and_native_ones_refused() {
    let dir = temp_dir("azure-vendor");
    let host = TestHost::start(&dir.join("ws"), &[]);
    std::fs::write(
        dir.join("score.py"),
        "import json\nimport numpy as np\nimport humanize\n\ndef run(raw):\n    \
         return humanize.intcomma(int(np.sum(json.loads(raw)['data'])))\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("env.yml"),
        "name: env\ndependencies:\n  - python=3.9\n  - numpy\n  - pip:\n    - humanize==4.9.0\n",
    )
    .unwrap();
    let ic = write_json(
        &dir,
        "ic.json",
        &serde_json::json!({"entryScript": "score.py", "condaFile": "env.yml"}),
    );
    let dc = Dc::test().no_auth().write(&dir, "dc.json");
    let out = host
        .cli()
        .args([
            "deploy",
            "-n",
            "vendored",
            "--ic",
            ic.to_str().unwrap(),
            "--dc",
            dc.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{progress}");
    assert!(
        progress.contains("vendoring humanize (pure Python, from PyPI)"),
        "{progress}"
    );
    let r = score(&host.score_url("vendored"), None, r#"{"data": [1000000, 234567]}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), "1,234,567");
    // A package with native code that the runtime does not carry: refused before anything is uploaded.
    std::fs::write(dir.join("env.yml"), "dependencies:\n  - pip:\n    - ujson==5.10.0\n").unwrap();
    let out = host
        .cli()
        .args([
            "deploy",
            "-n",
            "native",
            "--ic",
            ic.to_str().unwrap(),
            "--dc",
            dc.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("env.yml: ujson cannot be vendored") && err.contains("native code"),
        "{err}"
    );
}

#[test]
fn plinth_prepare_leaves_one_compiled_interpreter_per_machine() {
    // The runtime's tests (or an earlier prepare) compiled it: prepare finds it; else it compiles it now.
    let out = plinth().arg("prepare").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("scientific Python runtime ready in"), "{stdout}");
    // A second prepare, and any host or `plinth score` after it, compiles nothing.
    let again = plinth().arg("prepare").output().unwrap();
    let again = String::from_utf8_lossy(&again.stdout);
    assert!(again.contains("(already compiled)"), "{again}");
}

#[test]
fn an_init_that_loops_stops_at_its_deadline_or_when_its_service_is_deleted() {
    let dir = temp_dir("init-loop");
    let host = TestHost::start(&dir.join("ws"), &[]);
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("score.py"),
        "def init():\n    while True:\n        pass\n\n\ndef run(raw):\n    return raw\n",
    )
    .unwrap();
    let ic = write_json(&dir, "ic.json", &serde_json::json!({"entryScript": "src/score.py"}));
    let deploy = |name: &str, init_secs: u64, wait: bool| {
        let dc = Dc::test()
            .no_auth()
            .with("initTimeoutSeconds", serde_json::json!(init_secs))
            .write(&dir, &format!("dc-{name}.json"));
        let mut cmd = host.cli();
        cmd.args(["deploy", "-n", name, "--ic"]).arg(&ic).arg("--dc").arg(&dc);
        if !wait {
            cmd.arg("--no-wait");
        }
        cmd.output().unwrap()
    };
    // The deadline is the init's own, named as such (this also builds the script once).
    let out = deploy("short", 2, true);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(said.contains("init() stopped after 2 s (initTimeoutSeconds)"), "{said}");
    // CPU seconds the host has used (utime + stime, in clock ticks of 1/100 s).
    let cpu = || -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", host.pid())).unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after_name.split(' ').collect();
        (fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()) as f64 / 100.0
    };
    let busy = |secs: f64| {
        let before = cpu();
        std::thread::sleep(std::time::Duration::from_secs_f64(secs));
        cpu() - before
    };
    // A long deadline: the init loops on a core until its service is deleted, then stops at once.
    let out = deploy("long", 600, false);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::thread::sleep(std::time::Duration::from_secs(2));
    let used = busy(1.0);
    assert!(used > 0.5, "{used} s of CPU in 1 s while init() loops");
    host.run(&["service", "delete", "long"]);
    std::thread::sleep(std::time::Duration::from_secs(1));
    let used = busy(3.0);
    assert!(used < 0.5, "{used} s of CPU in the 3 s after the delete");
}
