//! The Plinth control plane: what a node host keeps and decides, behind the admin API.
//!
//! | job | module |
//! |---|---|
//! | the workspace: SQLite records, content-addressed blobs, secrets | `store.rs` |
//! | Azure ML's `deploymentconfig.json` / `inferenceconfig.json` | `config.rs` |
//! | deployments: one actor that serialises every write | `deployments.rs` |
//! | building a version (files, script, limits, replicas) | `build.rs` |
//! | entry scripts compiled to components (cached) | `scripts.rs` |
//! | automatic rollback of treatments | `rollback.rs` |
//! | the admin API's routes, and its types (shared with the CLI) | `admin.rs`, `api.rs` |
//! | what `service show` shows | `views.rs` |

#![forbid(unsafe_code)]

mod admin;
pub mod api;
mod build;
pub mod config;
mod deployments;
mod error;
mod rollback;
pub mod scripts;
pub mod store;
mod views;

pub use self::admin::admin;
pub use self::deployments::{ControlOptions, ControlPlane};
pub use self::error::{Error, Result};
pub use self::store::Workspace;
