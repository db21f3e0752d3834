//! ONNX Runtime's own CPU provider (MLAS). Always there; it backs every session for the operators other
//! providers leave.

use ort::ep::ExecutionProviderDispatch;
use serde::{Deserialize, Serialize};

use super::Context;

/// `{"name": "cpu", "arena": false}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Options {
    /// ONNX Runtime's memory arena for CPU tensors (default on): faster, at the cost of memory that
    /// stays with the session after a large request.
    pub arena: Option<bool>,
}

impl Options {
    pub fn pairs(&self, _cx: &Context) -> Vec<(&'static str, String)> {
        self.arena
            .map(|on| vec![("use_arena", if on { "1" } else { "0" }.to_string())])
            .unwrap_or_default()
    }

    /// Registered only to change the arena: ONNX Runtime adds the CPU provider to every session itself.
    pub(crate) fn build(&self) -> Option<ExecutionProviderDispatch> {
        self.arena
            .map(|on| ort::ep::CPU::default().with_arena_allocator(on).build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_leave_onnx_runtime_alone() {
        let cx = Context::default();
        assert!(Options::default().pairs(&cx).is_empty());
        assert!(Options::default().build().is_none());
        let off = Options { arena: Some(false) };
        assert_eq!(off.pairs(&cx), vec![("use_arena", "0".to_string())]);
        assert!(off.build().is_some());
    }
}
