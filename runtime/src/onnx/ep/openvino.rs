//! Intel OpenVINO: Intel CPUs, integrated and discrete GPUs and NPUs. Compiled blobs are cached under the
//! host's cache, keyed by the model's content.

use super::{Context, OrtPairs, Provider};

pub const INSTALL_HINT: &str = "the OpenVINO provider comes with Intel's build of ONNX Runtime (the \
     onnxruntime-openvino wheel): set ORT_DYLIB_PATH to its libonnxruntime.so";

pub use plinth_spec::provider::OpenVinoOptions as Options;

impl OrtPairs for Options {
    fn pairs(&self, cx: &Context) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(d) = &self.device_type {
            out.push(("device_type", d.clone()));
        }
        if let Some(p) = &self.precision {
            out.push(("precision", p.to_ascii_uppercase()));
        }
        if let Some(n) = self.num_threads {
            out.push(("num_of_threads", n.to_string()));
        }
        if let Some(dir) = cx.cache(Provider::OpenVino) {
            out.push(("cache_dir", dir));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn device_precision_and_cache() {
        let cx = Context {
            cache_dir: Some(PathBuf::from("/c/ab12")),
            ..Context::default()
        };
        let o = Options {
            device_type: Some("GPU".into()),
            precision: Some("fp16".into()),
            num_threads: Some(4),
        };
        assert_eq!(
            o.pairs(&cx),
            vec![
                ("device_type", "GPU".to_string()),
                ("precision", "FP16".to_string()),
                ("num_of_threads", "4".to_string()),
                ("cache_dir", "/c/ab12/openvino".to_string()),
            ]
        );
        assert!(Options::default().pairs(&Context::default()).is_empty());
    }
}
