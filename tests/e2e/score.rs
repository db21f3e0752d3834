//! `plinth score`: the example served natively, through a Rust script and through a Python score.py.

use std::path::PathBuf;
use std::process::Output;

use crate::fixture::{plinth, temp_dir};
use crate::support::{assert_close, component, reference, repo};

fn sample() -> PathBuf {
    repo().join("examples/diabetes/sample.json")
}

fn ok(out: Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "plinth failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", out.stdout))
}

/// The command failed with exactly one line on stderr, which is returned.
fn one_line_error(out: Output) -> String {
    assert!(
        !out.status.success(),
        "expected a failure, got {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "one error line expected in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    errors[0].to_string()
}

fn predictions(v: &serde_json::Value) -> Vec<f64> {
    v["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn no_code_onnx_matches_scikit_learn() {
    let v = ok(plinth()
        .args(["score", "-m", "diabetes=examples/diabetes/model", "-d"])
        .arg(sample())
        .output()
        .unwrap());
    let got: Vec<f64> = v["variable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_f64().unwrap())
        .collect();
    assert_close(&got, &reference(&sample()).0, 1e-4);
    // `-d @FILE` as `service run` takes it, and JSON text inline: the same answer, byte for byte; a single
    // model file (`-m NAME=FILE`) as `model register` takes it.
    let text = |args: &[&str]| {
        let out = plinth().args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    let model = "diabetes=examples/diabetes/model";
    let by_path = text(&["score", "-m", model, "-d", sample().to_str().unwrap()]);
    let at = format!("@{}", sample().display());
    assert_eq!(text(&["score", "-m", model, "-d", &at]), by_path);
    let inline = std::fs::read_to_string(sample()).unwrap();
    assert_eq!(text(&["score", "-m", model, "-d", &inline]), by_path);
    let file = "diabetes=examples/diabetes/model/model.onnx";
    assert_eq!(text(&["score", "-m", file, "-d", &at]), by_path);
}

#[test]
fn json_output_wraps_the_response() {
    let out = plinth()
        .args([
            "score",
            "-m",
            "diabetes=examples/diabetes/model",
            "-o",
            "json",
            "--repeat",
            "3",
            "-d",
        ])
        .arg(sample())
        .output();
    let v = ok(out.unwrap());
    assert_eq!(v["calls"], 3);
    assert_eq!(v["response"]["variable"].as_array().unwrap().len(), 2);
}

#[test]
fn rust_entry_script_matches_scikit_learn() {
    // The built component, and the crate itself (which `plinth score` builds with cargo first).
    let crate_dir = repo().join("examples/diabetes/script-rust");
    for script in [component("diabetes_script"), crate_dir] {
        let out = plinth()
            .args(["score", "-m", "diabetes=examples/diabetes/model", "--script"])
            .arg(&script)
            .arg("-d")
            .arg(sample())
            .output();
        assert_close(&predictions(&ok(out.unwrap())), &reference(&sample()).0, 1e-4);
    }
}

#[test]
fn python_score_py_matches_scikit_learn() {
    let out = plinth()
        .args([
            "score",
            "-m",
            "diabetes=examples/diabetes/model",
            "--script",
            "examples/diabetes/script-python/score.py",
            "-d",
        ])
        .arg(sample())
        .output();
    assert_close(&predictions(&ok(out.unwrap())), &reference(&sample()).0, 1e-4);
    // A malformed request is the caller's fault, named as such.
    let out = plinth()
        .args([
            "score",
            "-m",
            "diabetes=examples/diabetes/model",
            "--script",
            "examples/diabetes/script-python/score.py",
        ])
        .args(["--body", r#"{"data": [[1, 2]]}"#])
        .output()
        .unwrap();
    assert!(one_line_error(out).contains("row 0 has 2 features"));
}

fn python_adversary(body: &str, extra: &[&str]) -> String {
    let out = plinth()
        .args([
            "score",
            "--script",
            "plugins/test-scripts-python/adversary/score.py",
            "--body",
            body,
        ])
        .args(extra)
        .output()
        .unwrap();
    one_line_error(out)
}

#[test]
fn a_python_script_is_bounded_like_any_other() {
    // Compile (or fetch from the cache) first, so the timing below is the deadline's alone.
    let warm = plinth()
        .args([
            "score",
            "--script",
            "plugins/test-scripts-python/adversary/score.py",
            "--body",
            "hello",
        ])
        .output()
        .unwrap();
    assert_eq!(ok(warm)["echo"], "hello");
    let started = std::time::Instant::now();
    let err = python_adversary("loop", &["--timeout-ms", "500"]);
    assert!(err.contains("deadline exceeded"), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );

    let err = python_adversary("alloc", &["--memory-mb", "96"]);
    assert!(
        err.contains("memory limit exceeded") || err.contains("MemoryError"),
        "{err}"
    );

    let err = python_adversary("read-passwd", &[]);
    assert!(err.contains("/etc/passwd") && !err.contains("root:"), "{err}");

    let err = python_adversary("raise", &[]);
    assert!(err.contains("RuntimeError: the adversary failed on purpose"), "{err}");

    let out = plinth()
        .args([
            "score",
            "--script",
            "plugins/test-scripts-python/adversary/score.py",
            "--body",
            "env",
        ])
        .output();
    let env = ok(out.unwrap());
    assert!(
        env.get("HOME").is_none() && env.get("PATH").is_none(),
        "no host environment inside: {env}"
    );
}

#[test]
fn a_missing_onnx_runtime_library_is_one_clear_line() {
    let out = plinth()
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so.1.32.0")
        .args(["score", "-m", "diabetes=examples/diabetes/model", "-d"])
        .arg(sample())
        .output()
        .unwrap();
    let err = one_line_error(out);
    assert!(
        err.contains("ONNX Runtime library /nonexistent/libonnxruntime.so.1.32.0 could not be loaded"),
        "{err}"
    );
    assert!(err.contains("pip install onnxruntime"), "{err}");
}

#[test]
fn usage_mistakes_are_one_clear_line() {
    let err = one_line_error(
        plinth()
            .args(["score", "-m", "nope=/no/such/model.onnx", "--body", "{}"])
            .output()
            .unwrap(),
    );
    assert!(err.contains("/no/such/model.onnx does not exist"), "{err}");
    let err = one_line_error(
        plinth()
            .args(["score", "--script", "Cargo.toml", "--body", "{}"])
            .output()
            .unwrap(),
    );
    assert!(err.contains("expected a .py file or a .wasm component"), "{err}");
}

#[test]
fn a_python_mistake_is_named_before_the_long_compile() {
    let dir = temp_dir("pycheck");
    let write = |name: &str, text: &str| {
        let folder = dir.join(name);
        std::fs::create_dir_all(&folder).unwrap();
        let path = folder.join("score.py");
        std::fs::write(&path, text).unwrap();
        path
    };
    let run = |path: &std::path::Path| {
        let started = std::time::Instant::now();
        let out = plinth()
            .args(["score", "--script"])
            .arg(path)
            .args(["--body", "{}"])
            .output()
            .unwrap();
        (one_line_error(out), started.elapsed())
    };
    let syntax = write("syntax", "def init():\n    pass\n\ndef run(raw)\n    return raw\n");
    let (err, took) = run(&syntax);
    assert!(err.contains("score.py:4: SyntaxError: expected ':'"), "{err}");
    assert!(took < std::time::Duration::from_secs(5), "before any compile: {took:?}");
    let missing = write(
        "missing",
        "import json\nimport tensorflow as tf\n\ndef init():\n    pass\n\ndef run(raw):\n    return raw\n",
    );
    let (err, _) = run(&missing);
    assert!(
        err.contains("score.py:2: module tensorflow is not available in the sandbox") && err.contains("source folder"),
        "{err}"
    );
    // An optional import inside try, and a module of the source folder, are fine for the check.
    let folder = write(
        "local",
        "try:\n    import numpy\nexcept ImportError:\n    numpy = None\nimport helper\n\ndef init():\n    pass\n\ndef run(raw):\n    return helper.answer()\n",
    );
    std::fs::write(
        folder.parent().unwrap().join("helper.py"),
        "def answer():\n    return 42\n",
    )
    .unwrap();
    let out = plinth()
        .args(["score", "--script"])
        .arg(&folder)
        .args(["--body", "{}"])
        .output()
        .unwrap();
    assert_eq!(ok(out), 42);
}
