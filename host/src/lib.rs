//! The Plinth node host, as a library: the binary `plinth` is built on the same API.
//!
//! - [`service`]: a running service (package, keys, limits) and the [`Router`] of services by name.
//! - [`http`]: the HTTP face ([`Host`]): health, `/api/v1/service/{name}/score`, swagger, admin API.
//! - [`server`]: serving a host on a listener, with TLS and graceful shutdown.
//! - [`control`]: the control plane (models, deployments, keys, tokens) over a [`store::Workspace`].
//! - [`config`]: Azure ML's `deploymentconfig.json` and `inferenceconfig.json`.
//! - [`auth`], [`logs`], [`scripts`], [`client`]: credentials, per-service logs, entry-script builds, the CLI's HTTP client.
//!
//! Embedding a router over your own packages takes a few lines:
//!
//! ```no_run
//! # async fn demo(package: plinth_runtime::Package) -> std::io::Result<()> {
//! use std::sync::Arc;
//! let router = Arc::new(plinth::Router::new());
//! router.insert(plinth::Service::new("diabetes", Arc::new(package), plinth::ServiceConfig::default()));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! plinth::serve(listener, Arc::new(plinth::Host::new(router)), None, plinth::server::shutdown_signal()).await
//! # }
//! ```

pub mod auth;
pub mod autoscale;
pub mod batch;
pub mod client;
pub mod collect;
pub mod config;
pub mod control;
mod error;
pub mod http;
pub mod logs;
pub mod metrics;
pub mod oip;
pub mod scripts;
pub mod server;
pub mod service;
pub mod split;
pub mod store;

pub use self::error::{Error, Result};
pub use self::http::Host;
pub use self::server::serve;
pub use self::service::{Router, Service, ServiceConfig};
