//! The Plinth control plane: what a node host keeps and decides, behind the admin API.
//!
//! | job | module |
//! |---|---|
//! | the workspace: SQLite records, content-addressed blobs, secrets | `store.rs` |
//! | the control plane a host holds (settings, the handle) | `plane.rs` |
//! | deployments: one actor that serialises every write | `deployments.rs` |
//! | an admin request turned into a checked version record | `validate.rs` |
//! | building a version (files, script, limits, replicas) | `build.rs` |
//! | entry scripts compiled to components (cached) | `scripts.rs` |
//! | automatic rollback of treatments | `rollback.rs` |
//! | the admin API's routes, and its types (shared with the CLI) | `admin.rs`, `api.rs` |
//! | what `service show` shows | `views.rs` |
//! | packages: one version as a tarball addressed by its sha256 | `package.rs` |
//! | a host serving a declared service (Kubernetes pods) | `declared.rs` |

#![forbid(unsafe_code)]

mod admin;
pub mod api;
mod build;
mod context;
mod declared;
mod deployments;
mod error;
#[cfg(test)]
mod fuzz;
pub mod gpus;
pub mod info;
pub mod package;
mod plane;
mod rollback;
pub mod scripts;
mod state;
pub mod store;
mod validate;
mod views;

pub use self::context::ControlOptions;
pub use self::declared::Declared;
pub use self::error::{Error, Result};
pub use self::plane::ControlPlane;
pub use self::store::Workspace;
