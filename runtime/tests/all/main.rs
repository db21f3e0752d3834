//! Runtime integration tests: real ONNX Runtime, real wasmtime, real components built from `plugins/`.

mod helpers;
mod onnx;
mod science;
mod scripts;
