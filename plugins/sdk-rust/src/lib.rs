//! Entry scripts for Plinth in Rust.
//!
//! Implement [`Guest`] (`init` once per instance, `run` per request with the raw body) and call
//! [`export!`]; build with `cargo build --release --target wasm32-wasip2`. From `run`, call the
//! deployment's ONNX models with [`infer`]; model files are readable under [`MODEL_DIR`].
//!
//! ```ignore
//! use plinth_plugin::{Error, Guest, Tensor, infer};
//! struct Echo;
//! impl Guest for Echo {
//!     fn init() -> Result<(), String> { Ok(()) }
//!     fn run(raw_data: String) -> Result<String, Error> { Ok(raw_data) }
//! }
//! plinth_plugin::export!(Echo);
//! ```

/// The generated bindings of the `plinth:scoring` world.
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "scoring",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "plinth_plugin::bindings",
    });
}

pub use self::bindings::plinth::scoring::host::{infer, log, models};
pub use self::bindings::plinth::scoring::types::{Error, Level, Tensor, TensorData};
pub use self::bindings::{Guest, export};

/// Where the deployment's model files are, read-only.
pub const MODEL_DIR: &str = "/models";

impl Tensor {
    /// An FP32 tensor.
    pub fn fp32(name: impl Into<String>, shape: Vec<i64>, data: Vec<f32>) -> Tensor {
        Tensor { name: name.into(), shape, data: TensorData::Fp32(data) }
    }

    /// An INT64 tensor.
    pub fn int64(name: impl Into<String>, shape: Vec<i64>, data: Vec<i64>) -> Tensor {
        Tensor { name: name.into(), shape, data: TensorData::Int64(data) }
    }

    /// The elements, if this is an FP32 tensor.
    pub fn as_fp32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::Fp32(v) => Some(v),
            _ => None,
        }
    }
}

impl Error {
    /// The request was at fault: the caller gets a 4xx.
    pub fn bad_request(message: impl std::fmt::Display) -> Error {
        Error::InvalidInput(message.to_string())
    }

    /// The script failed: the caller gets a 5xx.
    pub fn internal(message: impl std::fmt::Display) -> Error {
        Error::Internal(message.to_string())
    }
}

/// Writes an info line to the service log, tagged with the request id.
pub fn info(message: &str) {
    log(Level::Info, message);
}
