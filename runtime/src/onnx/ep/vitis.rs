//! AMD Vitis AI: AMD/Xilinx FPGAs and Ryzen AI NPUs. Its JSON config file (`vaip_config.json`) comes with
//! the deployment or the host; compiled models are cached under the host's cache, keyed by the model's
//! content.

use super::{Context, OrtPairs, Provider};

pub const INSTALL_HINT: &str = "the Vitis AI provider comes with AMD's build of ONNX Runtime (Ryzen AI / Vitis \
     AI software): set ORT_DYLIB_PATH to its libonnxruntime.so";

pub use plinth_spec::provider::VitisOptions as Options;

impl OrtPairs for Options {
    fn pairs(&self, cx: &Context) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(f) = &self.config_file {
            out.push(("config_file", cx.resolve(f)));
        }
        if let Some(t) = &self.target {
            out.push(("target", t.clone()));
        }
        if let Some(x) = &self.xclbin {
            out.push(("xclbin", cx.resolve(x)));
        }
        if let Some(dir) = cx.cache(Provider::Vitis) {
            let key = cx
                .cache_dir
                .as_ref()
                .and_then(|d| d.file_name())
                .map(|n| n.to_string_lossy().into_owned());
            out.push(("cache_dir", dir));
            if let Some(key) = key {
                out.push(("cache_key", key));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn config_files_resolve_against_the_deployment() {
        let cx = Context {
            cache_dir: Some(PathBuf::from("/c/ep/ab12")),
            device_id: None,
            base_dir: Some(PathBuf::from("/ws/deployments/svc/v1/3/src")),
            gpu_memory: None,
        };
        let o = Options {
            config_file: Some("vaip_config.json".into()),
            target: Some("X1".into()),
            xclbin: Some("/opt/xilinx/overlay.xclbin".into()),
        };
        assert_eq!(
            o.pairs(&cx),
            vec![
                (
                    "config_file",
                    "/ws/deployments/svc/v1/3/src/vaip_config.json".to_string()
                ),
                ("target", "X1".to_string()),
                ("xclbin", "/opt/xilinx/overlay.xclbin".to_string()),
                ("cache_dir", "/c/ep/ab12/vitis".to_string()),
                ("cache_key", "ab12".to_string()),
            ]
        );
    }
}
