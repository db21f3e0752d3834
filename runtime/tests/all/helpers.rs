//! Shared fixtures: the repository's paths, guest components built once per run, reference predictions.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use plinth_runtime::wasm::{EngineConfig, WasmEngine};
use plinth_runtime::{ModelSource, Package, PackageSpec};

#[path = "../../../tests/support/mod.rs"]
mod support;
pub use support::{assert_close, component, repo};

pub fn diabetes_model_dir() -> PathBuf {
    repo().join("examples/diabetes/model")
}

pub fn sample() -> Vec<u8> {
    std::fs::read(repo().join("examples/diabetes/sample.json")).unwrap()
}

/// One engine for the whole test binary, as a host has one per process.
pub fn engine() -> &'static WasmEngine {
    static ENGINE: OnceLock<WasmEngine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let cache = std::env::temp_dir().join(format!("plinth-test-cache-{}", std::process::id()));
        WasmEngine::new(EngineConfig {
            cache_dir: Some(cache),
            max_instances: 32,
            ..EngineConfig::default()
        })
        .expect("engine")
    })
}

pub fn diabetes_spec() -> PackageSpec {
    PackageSpec {
        models: vec![ModelSource {
            name: "diabetes".into(),
            path: diabetes_model_dir(),
        }],
        ..PackageSpec::default()
    }
}

pub fn load(spec: &PackageSpec) -> Arc<Package> {
    Arc::new(Package::load(spec, Some(engine())).unwrap_or_else(|e| panic!("loading package: {e}")))
}

/// scikit-learn's and Python onnxruntime's predictions for the sample rows.
pub fn reference() -> (Vec<f64>, Vec<f64>) {
    support::reference(&repo().join("examples/diabetes/sample.json"))
}
