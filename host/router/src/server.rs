//! Serving a [`Host`] on a listener (HTTP/1.1), or its gRPC service on another (HTTP/2): optional TLS
//! (rustls), connection hygiene (`conns.rs`), graceful drain on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::conns::{Conn, Conns, Full, Limits};
use crate::grpc::{Deadline, Grpc, GrpcServer};
use crate::host::Host;
use crate::observe::Metrics;
use crate::{Error, Result};

/// How long in-flight requests get to finish after a shutdown signal.
pub const DRAIN: Duration = Duration::from_secs(30);

/// A TLS acceptor for the PEM certificate chain and private key, for HTTP/1.1.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    tls_acceptor_for(cert, key, b"http/1.1")
}

/// A TLS acceptor for the PEM certificate chain and private key, for HTTP/2 (gRPC).
pub fn tls_acceptor_h2(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    tls_acceptor_for(cert, key, b"h2")
}

fn tls_acceptor_for(cert: &Path, key: &Path, alpn: &[u8]) -> Result<TlsAcceptor> {
    let tls = |what: String| {
        move |e: rustls_pki_types::pem::Error| Error::Tls {
            what,
            source: Box::new(e),
        }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(tls(format!("reading TLS certificate {}", cert.display())))?
        .collect::<std::result::Result<_, _>>()
        .map_err(tls(format!("parsing TLS certificate {}", cert.display())))?;
    if certs.is_empty() {
        return Err(Error::Tls {
            what: format!("TLS certificate {}", cert.display()),
            source: "no certificate in the file".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(tls(format!("reading TLS key {}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let rustls_error = |what: &str| {
        let what = what.to_string();
        move |e: rustls::Error| Error::Tls {
            what,
            source: Box::new(e),
        }
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(rustls_error("TLS protocol versions"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(rustls_error("TLS certificate and key do not match"))?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `host` until `shutdown` resolves, then stops accepting and waits (up to [`DRAIN`]) for the
/// requests in flight.
pub async fn serve(
    listener: TcpListener,
    host: Arc<Host>,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    serve_with(listener, host, tls, ServeOptions::default(), shutdown).await
}

/// How connections are treated.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// A client that has not finished the TLS handshake by then is disconnected. Default 10 s.
    pub tls_handshake_timeout: Duration,
    /// A connection with no request in flight whose next request head has not fully arrived this long
    /// after its first byte (or after the connection opened) is closed. Default 30 s.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight on which nothing arrives for this long is closed.
    /// Default 75 s.
    pub idle_timeout: Duration,
    /// Open connections at most; at the cap the oldest idle ones are closed to make room, and when every
    /// one is busy a new connection gets a 503. Default 10,000 (`plinth serve` derives it from the
    /// descriptor limit).
    pub max_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
            max_connections: 10_000,
        }
    }
}

/// [`serve`] with [`ServeOptions`].
pub async fn serve_with(
    listener: TcpListener,
    host: Arc<Host>,
    tls: Option<TlsAcceptor>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let metrics = host.metrics().clone();
    run(listener, App::Http(host), metrics, tls, options, shutdown).await
}

/// Serves the inference protocol over gRPC (HTTP/2; TLS from [`tls_acceptor_h2`]) until `shutdown`
/// resolves, with the same connection hygiene and drain as [`serve_with`].
pub async fn serve_grpc(
    listener: TcpListener,
    grpc: Grpc,
    tls: Option<TlsAcceptor>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let metrics = grpc.metrics().clone();
    let body_timeout = grpc.body_timeout();
    run(
        listener,
        App::Grpc(grpc.clone().into_server(), body_timeout, grpc),
        metrics,
        tls,
        options,
        shutdown,
    )
    .await
}

/// What a listener speaks.
#[derive(Clone)]
enum App {
    Http(Arc<Host>),
    /// The service, how long a request's message may take to arrive, and the credential check made
    /// before any message is read.
    Grpc(GrpcServer, Duration, Grpc),
}

async fn run(
    listener: TcpListener,
    app: App,
    metrics: Arc<Metrics>,
    tls: Option<TlsAcceptor>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let limits = Limits {
        header_read: options.header_read_timeout,
        idle: options.idle_timeout,
        max_connections: options.max_connections,
    };
    let conns = Conns::new(limits, metrics);
    let reaper = conns.spawn_reaper();
    tokio::pin!(shutdown);
    let mut failing = AcceptBackoff::default();
    loop {
        tokio::select! {
            accepted = async {
                conns.make_room().await;
                listener.accept().await
            } => {
                let (stream, peer) = match accepted {
                    Ok(a) => {
                        failing.reset();
                        a
                    }
                    Err(e) => {
                        // Out of descriptors, say: wait longer each time, and say so now and then.
                        tokio::time::sleep(failing.next(&e)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let registered = match conns.admit() {
                    Ok(r) => r,
                    Err(Full) => {
                        turn_away(stream, tls.is_some() || matches!(app, App::Grpc(..)));
                        continue;
                    }
                };
                let app = app.clone();
                let watcher = graceful.watcher();
                let tls = tls.clone();
                let handshake = options.tls_handshake_timeout;
                tokio::spawn(async move {
                    let conn = registered.conn.clone();
                    let stream = registered.wrap(stream);
                    let serving = async {
                        match tls {
                            Some(acceptor) => match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                                Ok(Ok(s)) => serve_io(s, app, conn, watcher).await,
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                    Ok(())
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "TLS handshake timed out");
                                    Ok(())
                                }
                            },
                            None => serve_io(stream, app, conn, watcher).await,
                        }
                    };
                    let result = tokio::select! {
                        r = serving => r,
                        _ = registered.conn.close.notified() => {
                            tracing::debug!(%peer, "connection closed: idle, slow, or shed at the connection cap");
                            Ok(())
                        }
                    };
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    drop(registered);
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: draining requests in flight");
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("drain timed out after {} s", DRAIN.as_secs());
    }
    reaper.abort();
    Ok(())
}

/// Serves one connection: HTTP/1.1 for a host, HTTP/2 for gRPC. Every request counts as in flight for
/// the reaper until its response is made. The reaper keeps the header-read and idle timeouts, so there
/// is no timer per request here.
async fn serve_io<I>(io: I, app: App, conn: Arc<Conn>, watcher: Watcher) -> std::result::Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match app {
        App::Http(host) => {
            let svc = service_fn(move |req| {
                let host = host.clone();
                let in_flight = conn.request();
                async move {
                    let response = host.handle(req).await;
                    drop(in_flight);
                    Ok::<_, Infallible>(response)
                }
            });
            let mut builder = http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(None::<Duration>);
            watcher.watch(builder.serve_connection(TokioIo::new(io), svc)).await
        }
        App::Grpc(server, body_timeout, gate) => {
            let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let mut server = server.clone();
                let in_flight = conn.request();
                // A credential that no service takes is refused from the metadata: the message (up to the
                // body limit, and naming the model) is never read.
                let refused = gate.refuse_unadmitted(&req);
                // The message within the body-read timeout, as an HTTP body: a request trickled in
                // slowly is in flight, so no timeout of the reaper's would close it.
                let req = req.map(|body| Deadline::new(body, body_timeout));
                async move {
                    let response = match refused {
                        Some(status) => Ok(status.into_http()),
                        None => tonic::codegen::Service::call(&mut server, req).await,
                    };
                    drop(in_flight);
                    response
                }
            });
            let mut builder = http2::Builder::new(TokioExecutor::new());
            builder.timer(TokioTimer::new());
            watcher.watch(builder.serve_connection(TokioIo::new(io), svc)).await
        }
    }
}

/// Answers a connection over the cap with a 503 (best effort, never waiting on the client; plain
/// HTTP/1.1 only) and closes it.
fn turn_away(stream: tokio::net::TcpStream, silently: bool) {
    if !silently {
        let body = r#"{"error":"the host is at its connection limit; retry in a second","kind":"overloaded"}"#;
        let response = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
             connection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.try_write(response.as_bytes());
    }
    tracing::debug!("connection cap reached and every connection busy: a new connection was turned away");
}

/// Failed accepts in a row: the pause before the next try doubles (10 ms up to 1 s), and a warning is
/// written at most every 10 s with how many failed, not once per failure.
#[derive(Default)]
struct AcceptBackoff {
    failures: u32,
    since_warning: u64,
    warned: Option<std::time::Instant>,
}

impl AcceptBackoff {
    fn next(&mut self, e: &std::io::Error) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.since_warning += 1;
        if self.warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            tracing::warn!(error = %e, failed = self.since_warning, "accept failed");
            self.warned = Some(std::time::Instant::now());
            self.since_warning = 0;
        }
        Duration::from_millis(10u64 << self.failures.min(7)).min(Duration::from_secs(1))
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_failures_back_off_to_a_second() {
        let mut b = AcceptBackoff::default();
        let e = std::io::Error::other("too many open files");
        let waits: Vec<Duration> = (0..10).map(|_| b.next(&e)).collect();
        assert_eq!(waits[0], Duration::from_millis(20));
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(waits[9], Duration::from_secs(1));
        assert_eq!(b.since_warning, 9, "one warning for the ten");
        b.reset();
        assert_eq!(b.next(&e), Duration::from_millis(20));
    }
}
