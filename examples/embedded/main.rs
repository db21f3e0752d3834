//! Embedded router hosting: serve your own packages from your own Rust program, on your own listener,
//! with the same router the `plinth` binary uses.
//!
//!     cargo run -p plinth-router --example embedded -- 127.0.0.1:8080
//!     curl -d @examples/diabetes/sample.json http://127.0.0.1:8080/api/v1/service/diabetes/score

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use plinth_router::{Host, Router, Service, ServiceConfig};
use plinth_runtime::{ModelSource, Package, PackageSpec};

/// Serves the diabetes model (no key: a program that embeds the router decides its own auth) until `shutdown`.
pub async fn serve_diabetes(
    repo: &Path,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let spec = PackageSpec {
        models: vec![ModelSource {
            name: "diabetes".into(),
            path: repo.join("examples/diabetes/model"),
        }],
        ..PackageSpec::default()
    };
    let package = Arc::new(Package::load(&spec, None)?);
    let router = Arc::new(Router::new());
    router.insert(Service::new(
        "diabetes",
        package,
        ServiceConfig {
            replicas: 2,
            ..ServiceConfig::default()
        },
    ));
    plinth_router::serve(listener, Arc::new(Host::new(router)), None, shutdown).await?;
    Ok(())
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8080".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("serving the diabetes model on http://{}", listener.local_addr()?);
    // The repository holding examples/diabetes: the crate's folder or one above it.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|p| p.join("examples/diabetes").is_dir())
        .expect("examples/diabetes is in the repository");
    serve_diabetes(repo, listener, plinth_router::shutdown_signal()).await
}
