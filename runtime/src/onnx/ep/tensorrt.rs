//! NVIDIA TensorRT: compiles the model into engines for the GPU (ahead of CUDA, which it needs). Engines
//! take seconds to minutes to build, so they are cached under the host's cache, keyed by the model's
//! content like compiled entry scripts, and a restart loads them instead of building again.

use super::{Context, OrtPairs, Provider};

pub const INSTALL_HINT: &str = "the TensorRT provider comes with the GPU build of ONNX Runtime (`scripts/setup \
     --gpu` installs onnxruntime-gpu==1.31.1; TensorRT itself is the tensorrt-cu13 wheel), or set \
     ORT_DYLIB_PATH to that build's libonnxruntime.so";

pub use plinth_spec::provider::TensorRtOptions as Options;

impl OrtPairs for Options {
    fn pairs(&self, cx: &Context) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(id) = self.device_id.or(cx.device_id) {
            out.push(("device_id", id.to_string()));
        }
        if let Some(on) = self.fp16 {
            out.push(("trt_fp16_enable", if on { "1" } else { "0" }.to_string()));
        }
        if let Some(mb) = self.max_workspace_mb {
            out.push(("trt_max_workspace_size", (mb << 20).to_string()));
        }
        if self.engine_cache != Some(false)
            && let Some(dir) = cx.cache(Provider::TensorRt)
        {
            out.push(("trt_engine_cache_enable", "1".to_string()));
            out.push(("trt_engine_cache_path", dir.clone()));
            out.push(("trt_timing_cache_enable", "1".to_string()));
            out.push(("trt_timing_cache_path", dir));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn engines_are_cached_per_model_unless_turned_off() {
        let cx = Context {
            cache_dir: Some(PathBuf::from("/ws/cache/ep/3f2a")),
            device_id: Some(1),
            base_dir: None,
            gpu_memory: None,
        };
        let o = Options {
            fp16: Some(true),
            max_workspace_mb: Some(2),
            ..Options::default()
        };
        assert_eq!(
            o.pairs(&cx),
            vec![
                ("device_id", "1".to_string()),
                ("trt_fp16_enable", "1".to_string()),
                ("trt_max_workspace_size", (2u64 << 20).to_string()),
                ("trt_engine_cache_enable", "1".to_string()),
                ("trt_engine_cache_path", "/ws/cache/ep/3f2a/tensorrt".to_string()),
                ("trt_timing_cache_enable", "1".to_string()),
                ("trt_timing_cache_path", "/ws/cache/ep/3f2a/tensorrt".to_string()),
            ]
        );
        let off = Options {
            engine_cache: Some(false),
            device_id: Some(0),
            ..Options::default()
        };
        assert_eq!(off.pairs(&cx), vec![("device_id", "0".to_string())]);
        assert!(Options::default().pairs(&Context::default()).is_empty());
    }
}
