//! What a Plinth service is, in data: the files users write and the records a host keeps, with their
//! rules. Serde only, so that everything that reads or writes a service (the host's control plane, its
//! router, the Kubernetes controller, the CLI) agrees on it without pulling in what runs one.
//!
//! | job | module |
//! |---|---|
//! | Azure ML's `deploymentconfig.json` / `inferenceconfig.json` | `config.rs` |
//! | execution providers as a config names them, with their options | `provider.rs` |
//! | models, services, versions, and an endpoint's rules; names and paths | `record.rs` |
//! | packages and the declared service a host serves | `manifest.rs` |
//! | the autoscaling policy (pure) | `scale.rs` |
//! | wall-clock time as the host reports it | `time.rs` |

#![forbid(unsafe_code)]

pub mod config;
mod error;
pub mod manifest;
pub mod provider;
pub mod record;
pub mod scale;
pub mod time;

pub use self::error::{Error, Result};
