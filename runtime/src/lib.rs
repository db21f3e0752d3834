//! Plinth's runtime: loads deployment packages and scores requests against them, with no HTTP.
//!
//! - [`onnx`]: native ONNX models on ONNX Runtime (`ort`, library loaded at run time).
//! - [`wasm`]: entry scripts as WebAssembly components (`wasmtime`, WASI preview 2), sandboxed and bounded.
//! - [`Package`]: models plus an optional entry script, the unit a service deploys.
//! - [`json`]: the request and response JSON of a no-code ONNX service.

mod error;
pub mod json;
pub mod onnx;
mod package;
mod tensor;
pub mod wasm;

pub use self::error::{Error, Result, TrapKind};
pub use self::package::{MAX_MODELS, ModelSet, ModelSource, Package, PackageSpec};
pub use self::tensor::{DataType, Tensor, TensorData, TensorSpec};
