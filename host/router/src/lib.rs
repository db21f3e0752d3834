//! The Plinth embedded router: the data plane of a node host, embeddable on its own.
//!
//! A [`Router`] maps names to [`Service`]s; a service splits traffic between [`Version`]s; a version
//! runs requests on replicas of a `plinth_runtime::Package`, bounded by slots. A [`Host`] holds the
//! services for its faces, HTTP and gRPC, and [`serve`] runs it on a listener. Where each job lives:
//!
//! | job | module |
//! |---|---|
//! | the host: services, limits, request ids, the admin API it mounts | `host.rs`, `ids.rs` |
//! | the scoring flow every face calls (route, mirror, run, collect, count) | `score.rs` |
//! | the inference protocol's messages (JSON, binary tensors) | `oip.rs` |
//! | HTTP routes, bodies (limit, read timeout), the answer of a score | `http/` (`mod.rs`, `body.rs`, `answer.rs`) |
//! | the inference protocol over gRPC, its message deadline | `grpc.rs`, `grpc/convert.rs`, `grpc/deadline.rs` |
//! | error → status (HTTP, and gRPC's from it) | `status.rs` |
//! | error → JSON body, `Retry-After` | `http/response.rs` |
//! | every credential check (keys, tokens, admin) | `auth.rs` |
//! | the traffic split between versions | `split.rs` |
//! | slots (permits), waiting, the 503 | `queue.rs` |
//! | replicas and the host's capacity | `replicas.rs` |
//! | where a call runs (inline, in place, pool) | `exec.rs` |
//! | scaling decisions and their driver | `scale.rs` |
//! | dynamic batching (an actor) | `batch.rs` |
//! | metrics, logs, data collection | `observe/` |
//! | TLS, graceful drain, accept back-off | `server.rs` |
//! | timeouts, the connection cap, shedding idle connections | `conns.rs` |
//!
//! Embedding takes a few lines:
//!
//! ```no_run
//! # async fn demo(package: plinth_runtime::Package) -> std::io::Result<()> {
//! use std::sync::Arc;
//! let router = Arc::new(plinth_router::Router::new());
//! router.insert(plinth_router::Service::new("diabetes", Arc::new(package), plinth_router::ServiceConfig::default()));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let host = Arc::new(plinth_router::Host::new(router));
//! plinth_router::serve(listener, host, None, plinth_router::shutdown_signal()).await
//! # }
//! ```

#![forbid(unsafe_code)]

mod auth;
mod batch;
mod conns;
mod error;
mod exec;
mod grpc;
mod host;
mod http;
mod ids;
mod observe;
pub mod oip;
mod queue;
mod replicas;
mod router;
mod scale;
mod score;
mod server;
mod service;
mod split;
mod stats;
mod status;
mod version;

pub use plinth_spec::time;

pub use self::auth::{Auth, HostAuth, Token, TokenIssuer, generate_key};
pub use self::batch::BatchConfig;
pub use self::error::{Error, Fault, Result};
pub use self::exec::INLINE_BELOW;
pub use self::grpc::{Grpc, GrpcServer, proto as grpc_proto};
pub use self::host::{DEFAULT_BODY_READ_TIMEOUT, DEFAULT_MAX_BODY_BYTES, Host};
pub use self::http::{
    Admin, AdminBody, AdminRequest, Body, BoxFuture, MAX_ADMIN_JSON_BYTES, MAX_UPLOAD_BYTES, error_response,
    json_response,
};
pub use self::ids::REQUEST_ID;
pub use self::observe::{COLLECT_QUEUE, Collector, LINES_KEPT, LogHub, Metrics, Sampling, is_service_event};
pub use self::queue::COLD_START_WAIT;
pub use self::replicas::{Capacity, Factory, Reservation};
pub use self::router::Router;
pub use self::scale::{Decision, Policy, State as ScaleState};
pub use self::score::{MAX_JSON_DEPTH, VERSION_HEADER};
pub use self::server::{
    DRAIN, ServeOptions, serve, serve_grpc, serve_with, shutdown_signal, tls_acceptor, tls_acceptor_h2,
};
pub use self::service::{Routed, Service, ServiceConfig};
pub use self::stats::{Stats, Window};
pub use self::status::status_of;
pub use self::version::{Reporting, Version, VersionConfig, VersionInfo};

/// Starts the autoscaler for `version` with `policy`; it stops when the version is dropped.
pub fn autoscale(version: &std::sync::Arc<Version>, policy: Policy) {
    tokio::spawn(scale::run(std::sync::Arc::downgrade(version), policy));
}

/// Runs a package's first model once per power-of-two batch size up to `max_rows` (with zeros), so no
/// request pays for a first batch size.
pub fn warm_batch_sizes(package: &plinth_runtime::Package, max_rows: usize) {
    batch::warm(package, max_rows);
}
