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

pub use self::error::{Error, Fault, Result, TrapKind};
pub use self::package::{MAX_MODELS, ModelSet, ModelSource, Package, PackageSpec};
pub use self::tensor::{DataType, Tensor, TensorData, TensorSpec};

thread_local! {
    static THREAD_SEAT: usize = {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    };
}

/// A small number per thread, so that threads sharing a pool (replicas, sessions, log shards) each keep
/// to their own member when it is free: its memory stays in that thread's cache, and no two threads
/// fight over one lock.
pub fn thread_seat() -> usize {
    THREAD_SEAT.with(|s| *s)
}
