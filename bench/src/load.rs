//! A loopback load generator (fixed concurrency, fixed duration, keep-alive connections) and the bare
//! hyper server that is the HTTP ceiling every Plinth route is measured against.
//!
//! The generator is as light as `wrk`: one thread with its own single-threaded event loop, every
//! connection a task that writes a request prepared once and parses only the response head
//! (`httparse`) and `content-length`. A heavier client (a hyper client whose connection runs as a
//! separate task on a multi-threaded runtime) adds its own thread hand-offs to every round trip and
//! hides the server's latency behind them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use plinth_runtime::Package;
use plinth_runtime::wasm::CallContext;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Run {
    pub errors: u64,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// One request shape.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Target {
    /// The whole request on the wire, built once.
    fn wire(&self) -> Bytes {
        let mut head = format!(
            "POST {} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            self.path,
            self.body.len()
        );
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut wire = head.into_bytes();
        wire.extend_from_slice(&self.body);
        Bytes::from(wire)
    }
}

/// Runs `concurrency` connections for `duration`, after a short warm-up, on a thread of its own.
pub async fn run(target: &Target, concurrency: usize, duration: Duration) -> anyhow::Result<Run> {
    let target = target.clone();
    measured(duration, move |d| {
        let target = target.clone();
        async move { drive(&target, concurrency, d).await }
    })
    .await
}

/// Runs `drive` for a 300 ms warm-up, then for `duration`, on a thread of its own with a single-threaded
/// event loop (the generator stays off the server's runtime).
pub async fn measured<F, Fut>(duration: Duration, drive: F) -> anyhow::Result<Run>
where
    F: Fn(Duration) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<Run>>,
{
    tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            let _ = drive(Duration::from_millis(300)).await?;
            drive(duration).await
        })
    })
    .await?
}

async fn drive(target: &Target, concurrency: usize, duration: Duration) -> anyhow::Result<Run> {
    let wire = target.wire();
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let connections = (0..concurrency).map(|_| connection(target.addr, wire.clone(), deadline));
    gather(connections, started).await
}

/// Runs the connections side by side and sums what each measured (latencies in µs, errors) into a Run.
pub async fn gather<F>(connections: impl Iterator<Item = F>, started: Instant) -> anyhow::Result<Run>
where
    F: std::future::Future<Output = anyhow::Result<(Vec<u32>, u64)>> + Send + 'static,
{
    let tasks: Vec<_> = connections.map(tokio::spawn).collect();
    let mut latencies: Vec<u32> = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (lat, err) = task.await??;
        latencies.extend(lat);
        errors += err;
    }
    Ok(Run::from_latencies(latencies, errors, started.elapsed()))
}

impl Run {
    /// Throughput and percentiles of the calls that succeeded (latencies in µs) over `elapsed`.
    pub fn from_latencies(mut latencies: Vec<u32>, errors: u64, elapsed: Duration) -> Run {
        latencies.sort_unstable();
        let pct = |p: usize| {
            latencies
                .get((latencies.len() * p / 100).min(latencies.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0) as f64
        };
        Run {
            errors,
            rps: latencies.len() as f64 / elapsed.as_secs_f64(),
            p50_us: pct(50),
            p99_us: pct(99),
        }
    }
}

async fn connection(addr: SocketAddr, wire: Bytes, deadline: Instant) -> anyhow::Result<(Vec<u32>, u64)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut latencies = Vec::with_capacity(100_000);
    let mut errors = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while Instant::now() < deadline {
        let sent = Instant::now();
        stream.write_all(&wire).await?;
        let (status, body) = read_response(&mut stream, &mut buf).await?;
        if (200..300).contains(&status) {
            latencies.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
        } else {
            errors += 1;
            if errors == 1 {
                eprintln!("HTTP {status}: {}", String::from_utf8_lossy(&body));
            }
        }
    }
    Ok((latencies, errors))
}

/// Reads one response with a `content-length` body; returns its status and (for errors) its body.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            bail!("connection closed by the server");
        }
        filled += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(head_len) = resp.parse(&buf[..filled])? else {
            continue;
        };
        let status = resp.code.context("no status")?;
        let len: usize = resp
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .context("response without content-length")
            .and_then(|h| Ok(std::str::from_utf8(h.value)?.trim().parse()?))?;
        let total = head_len + len;
        if buf.len() < total {
            buf.resize(total, 0);
        }
        while filled < total {
            let n = stream.read(&mut buf[filled..total]).await?;
            if n == 0 {
                bail!("connection closed inside a response body");
            }
            filled += n;
        }
        if filled > total {
            bail!("more bytes than one response (the generator sends one request at a time)");
        }
        let body = if (200..300).contains(&status) {
            Vec::new()
        } else {
            buf[head_len..total].to_vec()
        };
        return Ok((status, body));
    }
}

/// The bare hyper server: reads the body and answers a fixed small JSON, or, given a package, the
/// package's answer (the runtime call with nothing around it: no auth, no router, no split, no queue, no
/// metrics, no logs).
pub async fn bare_server(package: Option<Arc<Package>>) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let package = package.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let package = package.clone();
                    async move {
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let answer = match &package {
                            None => Bytes::from_static(br#"{"variable":[[152.1]]}"#),
                            Some(p) => match p.score(&body, &CallContext::default()) {
                                Ok(out) => Bytes::from(out),
                                Err(e) => Bytes::from(e.to_string()),
                            },
                        };
                        let mut r = Response::new(Full::new(answer));
                        r.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    Ok(addr)
}
