//! Test support shared by the runtime's integration tests and the end-to-end tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root (every test package lives one folder below it).
pub fn repo() -> PathBuf {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("run under cargo"));
    manifest.parent().unwrap().to_path_buf()
}

pub fn python() -> PathBuf {
    let venv = repo().join(".venv/bin/python");
    if venv.is_file() { venv } else { PathBuf::from("python3") }
}

/// scikit-learn's and Python onnxruntime's predictions for the rows in `data_file` (`{"data": ...}`).
pub fn reference(data_file: &Path) -> (Vec<f64>, Vec<f64>) {
    let out = Command::new(python())
        .arg(repo().join("examples/diabetes/make_model.py"))
        .arg("--predict")
        .arg(data_file)
        .output()
        .expect("running make_model.py");
    assert!(
        out.status.success(),
        "make_model.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let floats = |k: &str| v[k].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    (floats("sklearn"), floats("onnxruntime"))
}

pub fn assert_close(got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "got {got:?}, want {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= tol * w.abs().max(1.0),
            "got {got:?}, want {want:?} (tolerance {tol})"
        );
    }
}

/// Builds the guest workspace (`plugins/`) once per test binary and returns component `name`.
pub fn component(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
            .arg(repo().join("plugins/Cargo.toml"))
            .status()
            .expect("running cargo for the guest components");
        assert!(status.success(), "building the guest components failed");
    });
    let path = repo()
        .join("plugins/target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(path.is_file(), "{} missing after the build", path.display());
    path
}
