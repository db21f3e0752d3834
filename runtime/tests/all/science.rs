//! Azure ML entry scripts on the scientific runtime: the real `python.wasm` (CPython with numpy, pandas,
//! scikit-learn and joblib) on wasmtime, through `Package` as a host loads it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use plinth_runtime::wasm::{CallContext, HttpRequest, ScienceRuntime, ScriptLimits};
use plinth_runtime::{Error, Package, PackageSpec, TrapKind};

use crate::helpers::*;

/// The compiled interpreter is shared with the end-to-end tests' hosts (same cache folder), so a run
/// compiles it once.
fn runtime_cache() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plinth-cache/components")
}

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("plinth-science-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("app")).unwrap();
    std::fs::create_dir_all(d.join("models")).unwrap();
    d
}

fn load(d: &Path, script: &str, limits: ScriptLimits) -> plinth_runtime::Result<Package> {
    ScienceRuntime::get(Some(&runtime_cache())).unwrap();
    std::fs::write(d.join("app/score.py"), script).unwrap();
    let spec = PackageSpec {
        entry_script: Some(d.join("app/score.py")),
        script_name: Some(
            d.file_name()
                .unwrap()
                .to_string_lossy()
                .split('-')
                .nth(2)
                .unwrap_or("score")
                .into(),
        ),
        model_dir: Some(d.join("models")),
        limits,
        ..PackageSpec::default()
    };
    Package::load(&spec, Some(engine()))
}

fn make_model(models: &Path) {
    let out = Command::new(support_python())
        .arg(repo().join("examples/azure-sklearn/make_model.py"))
        .arg(models)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn support_python() -> PathBuf {
    let venv = repo().join(".venv/bin/python");
    if venv.is_file() { venv } else { PathBuf::from("python3") }
}

#[test]
fn the_canonical_azure_script_answers_what_scikit_learn_answers() {
    let d = dir("canonical");
    make_model(&d.join("models"));
    let script = std::fs::read_to_string(repo().join("examples/azure-sklearn/score.py")).unwrap();
    let package = load(&d, &script, ScriptLimits::default()).unwrap();
    let sample = repo().join("examples/azure-sklearn/sample.json");
    let body = std::fs::read(&sample).unwrap();
    let got: Vec<f64> = serde_json::from_slice(&package.score(&body, &CallContext::default()).unwrap()).unwrap();
    let out = Command::new(support_python())
        .arg(repo().join("examples/azure-sklearn/make_model.py"))
        .arg("--predict")
        .arg(&sample)
        .output()
        .unwrap();
    let want: Vec<f64> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        got, want,
        "the sandbox's scikit-learn must answer exactly as the host's"
    );
    // Kept instances: a second call is served by the same interpreter, quickly.
    let started = std::time::Instant::now();
    for _ in 0..20 {
        package.score(&body, &CallContext::default()).unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    // Dropping the package (a replica removed, a version replaced) ends its interpreters' threads.
    let threads = || {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .flatten()
            .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "plinth-py-canon"))
            .count()
    };
    assert_eq!(threads(), 1);
    drop(package);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while threads() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(threads(), 0, "an interpreter thread outlived its script");
}

#[test]
fn errors_as_azure_reports_them() {
    let d = dir("errors");
    let package = load(
        &d,
        "import json\nimport numpy as np\nimport plinth\n\ndef init():\n    pass\n\ndef run(raw):\n    \
         data = json.loads(raw)\n    if 'bad' in data:\n        raise plinth.BadRequest('no bad here')\n    \
         return {'sum': float(np.sum(data['x']))}\n",
        ScriptLimits::default(),
    )
    .unwrap();
    let ctx = CallContext::default();
    let ok = package.score(br#"{"x": [1, 2, 3.5]}"#, &ctx).unwrap();
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&ok).unwrap()["sum"], 6.5);
    // An exception escaping run() is the script's failure (a 500) with its file and line.
    let err = package.score(br#"{"y": 1}"#, &ctx).unwrap_err();
    assert!(matches!(err, Error::ScriptFailed { .. }), "{err:?}");
    assert!(err.to_string().contains("KeyError: 'x' (at score.py:12)"), "{err}");
    // plinth.BadRequest is the caller's (a 400).
    let err = package.score(br#"{"bad": 1}"#, &ctx).unwrap_err();
    assert!(
        err.is_client_error() && err.to_string().contains("no bad here"),
        "{err}"
    );
    // A failing init() fails the load with the script's message.
    let d = dir("init");
    let err = load(
        &d,
        "def init():\n    raise RuntimeError('no model here')\n\ndef run(raw):\n    return raw\n",
        ScriptLimits::default(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::ScriptInit { .. }), "{err:?}");
    assert!(
        err.to_string().contains("RuntimeError: no model here (at score.py:2)"),
        "{err}"
    );
}

#[test]
fn the_sandbox_holds() {
    let d = dir("sandbox");
    std::fs::write(d.join("models/weights.txt"), "w").unwrap();
    let script = "import json, os\nimport numpy as np\n\ndef init():\n    pass\n\ndef run(raw):\n    \
                  what = json.loads(raw)['what']\n    if what == 'passwd':\n        return open('/etc/passwd').read()\n    \
                  if what == 'write-model':\n        open('/models/evil.txt', 'w').write('x')\n    \
                  if what == 'loop':\n        while True:\n            pass\n    \
                  if what == 'bomb':\n        return len(np.ones((1 << 30,), dtype=np.uint8))\n    \
                  return sorted(os.listdir(os.environ['AZUREML_MODEL_DIR']))\n";
    let limits = ScriptLimits {
        deadline: Duration::from_millis(1500),
        memory_bytes: 512 << 20,
        max_idle: 1,
        ..ScriptLimits::default()
    };
    let package = Arc::new(load(&d, script, limits).unwrap());
    let ctx = CallContext::default();
    let call = |what: &str| package.score(format!(r#"{{"what": "{what}"}}"#).as_bytes(), &ctx);
    assert_eq!(call("list").unwrap(), br#"["weights.txt"]"#);
    let err = call("passwd").unwrap_err().to_string();
    assert!(err.contains("FileNotFoundError"), "{err}");
    let err = call("write-model").unwrap_err().to_string();
    assert!(err.contains("Error") && err.contains("/models/evil.txt"), "{err}");
    assert!(!d.join("models/evil.txt").exists());
    match call("loop").unwrap_err() {
        Error::ScriptTrap {
            kind: TrapKind::Deadline,
            ..
        } => {}
        other => panic!("a loop must hit the deadline: {other:?}"),
    }
    let err = call("bomb").unwrap_err();
    assert!(
        matches!(
            err,
            Error::ScriptTrap {
                kind: TrapKind::Memory,
                ..
            }
        ) || err.to_string().contains("MemoryError"),
        "{err:?}"
    );
    // The instance that trapped is replaced; the next call is served (after a fresh init).
    assert_eq!(call("list").unwrap(), br#"["weights.txt"]"#);
}

#[test]
fn an_init_that_loops_stops_at_its_deadline_or_when_its_owner_lets_go() {
    let script = "def init():\n    while True:\n        pass\n\ndef run(raw):\n    return raw\n";
    let d = dir("initloop");
    let limits = ScriptLimits {
        init_deadline: Duration::from_secs(2),
        ..ScriptLimits::default()
    };
    let started = std::time::Instant::now();
    let err = load(&d, script, limits).unwrap_err().to_string();
    assert!(err.contains("init() stopped after 2 s (initTimeoutSeconds)"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    // Let go of while it loads: the loop stops within moments, long before its deadline.
    let limits = ScriptLimits {
        init_deadline: Duration::from_secs(600),
        ..ScriptLimits::default()
    };
    let stop = limits.stop.clone();
    let loading = std::thread::spawn(move || load(&d, script, limits).map(drop));
    std::thread::sleep(Duration::from_secs(1));
    let asked = std::time::Instant::now();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let err = loading.join().unwrap().unwrap_err().to_string();
    assert!(asked.elapsed() < Duration::from_secs(2), "{:?}", asked.elapsed());
    assert!(err.contains("the service was deleted while it loaded"), "{err}");
}

#[test]
fn the_private_folders_are_capped() {
    let d = dir("tmpcap");
    let script = "import errno, json, os\n\ndef init():\n    pass\n\n\
                  def fill(path):\n    with open(path, 'wb') as f:\n        for _ in range(64):\n            \
                  f.write(b'x' * (1 << 20))\n\n\
                  def run(raw):\n    what = json.loads(raw)['what']\n    \
                  if what == 'small':\n        open('/tmp/s', 'wb').write(b'y' * (1 << 20))\n        \
                  return os.path.getsize('/tmp/s')\n    \
                  if what == 'catch':\n        try:\n            fill('/big')\n        except OSError as e:\n            \
                  return [e.errno == errno.ENOSPC, os.path.getsize('/big')]\n    \
                  if what == 'fill':\n        fill('/tmp/big')\n";
    let limits = ScriptLimits {
        tmp_bytes: 4 << 20,
        max_idle: 1,
        ..ScriptLimits::default()
    };
    let package = Arc::new(load(&d, script, limits).unwrap());
    let ctx = CallContext::default();
    let call = |what: &str| package.score(format!(r#"{{"what": "{what}"}}"#).as_bytes(), &ctx);
    assert_eq!(call("small").unwrap(), b"1048576");
    // Writes past the cap fail in the script as a full disk does; what was written stays under it.
    let caught: (bool, u64) = serde_json::from_slice(&call("catch").unwrap()).unwrap();
    assert!(caught.0, "ENOSPC");
    assert!(caught.1 < 4 << 20, "{} bytes written", caught.1);
    let err = call("fill").unwrap_err().to_string();
    assert!(
        err.contains("No space left on device") && err.contains("at most 4 MiB: scriptTmpMb"),
        "{err}"
    );
}

#[test]
fn schemas_responses_and_the_raw_request() {
    let d = dir("azure-helpers");
    let script = r#"
import numpy as np
from inference_schema.schema_decorators import input_schema, output_schema
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from azureml.contrib.services.aml_request import rawhttp
from azureml.contrib.services.aml_response import AMLResponse

@input_schema('data', NumpyParameterType(np.array([[0.1, 0.2]])))
@output_schema(NumpyParameterType(np.array([0.3])))
def run(data):
    return data.sum(axis=1)
"#;
    let package = load(&d, script, ScriptLimits::default()).unwrap();
    let schema = package.science().unwrap().schema().unwrap().clone();
    assert_eq!(
        schema["input"]["example"],
        serde_json::json!({"data": [[0.1, 0.2]]}),
        "{schema}"
    );
    assert!(schema["output"].is_object(), "{schema}");
    let ctx = CallContext::default();
    assert_eq!(
        package.score(br#"{"data": [[1, 2], [3, 4.5]]}"#, &ctx).unwrap(),
        b"[3.0, 7.5]"
    );
    let err = package.score(br#"{"data": [[1, 2, 3]]}"#, &ctx).unwrap_err();
    assert!(err.is_client_error() && err.to_string().contains("data"), "{err}");

    let d = dir("raw");
    let script = r#"
from azureml.contrib.services.aml_request import rawhttp
from azureml.contrib.services.aml_response import AMLResponse

@rawhttp
def run(request):
    if request.method != "POST":
        return AMLResponse("POST only", 405)
    return AMLResponse({"n": request.args.get("n"), "who": request.headers.get("X-Who"),
                        "body": request.get_json()}, 201)
"#;
    let package = load(&d, script, ScriptLimits::default()).unwrap();
    let ctx = CallContext {
        request_id: None,
        http: Some(Arc::new(HttpRequest {
            method: "POST".into(),
            path: "/api/v1/service/raw/score".into(),
            query: "n=3".into(),
            headers: vec![
                ("x-who".into(), "me".into()),
                ("content-type".into(), "application/json".into()),
            ],
        })),
    };
    match package.score(br#"{"a": 1}"#, &ctx).unwrap_err() {
        Error::Response { status, body, .. } => {
            assert_eq!(status, 201);
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v, serde_json::json!({"n": "3", "who": "me", "body": {"a": 1}}));
        }
        other => panic!("{other:?}"),
    }
}
