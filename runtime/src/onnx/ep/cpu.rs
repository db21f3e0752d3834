//! ONNX Runtime's own CPU provider (MLAS). Always there; it backs every session for the operators other
//! providers leave.

use ort::ep::ExecutionProviderDispatch;

use super::{Context, OrtPairs};

pub use plinth_spec::provider::CpuOptions as Options;

impl OrtPairs for Options {
    fn pairs(&self, _cx: &Context) -> Vec<(&'static str, String)> {
        self.arena
            .map(|on| vec![("use_arena", if on { "1" } else { "0" }.to_string())])
            .unwrap_or_default()
    }
}

/// Registered only to change the arena: ONNX Runtime adds the CPU provider to every session itself.
pub(super) fn build(options: &Options) -> Option<ExecutionProviderDispatch> {
    options
        .arena
        .map(|on| ort::ep::CPU::default().with_arena_allocator(on).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_leave_onnx_runtime_alone() {
        let cx = Context::default();
        assert!(Options::default().pairs(&cx).is_empty());
        assert!(build(&Options::default()).is_none());
        let off = Options { arena: Some(false) };
        assert_eq!(off.pairs(&cx), vec![("use_arena", "0".to_string())]);
        assert!(build(&off).is_some());
    }
}
