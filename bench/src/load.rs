//! A loopback load generator (fixed concurrency, fixed duration, keep-alive connections) and the bare
//! hyper server that is the HTTP ceiling every Plinth route is measured against.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
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

/// Runs `concurrency` connections for `duration`, after a short warm-up.
pub async fn run(target: &Target, concurrency: usize, duration: Duration) -> anyhow::Result<Run> {
    let _ = drive(target, concurrency, Duration::from_millis(300)).await?;
    drive(target, concurrency, duration).await
}

async fn drive(target: &Target, concurrency: usize, duration: Duration) -> anyhow::Result<Run> {
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let t = target.clone();
        tasks.push(tokio::spawn(async move { connection(t, deadline).await }));
    }
    let mut latencies: Vec<u32> = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (lat, err) = task.await??;
        latencies.extend(lat);
        errors += err;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: usize| {
        latencies
            .get((latencies.len() * p / 100).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
    };
    Ok(Run {
        errors,
        rps: latencies.len() as f64 / elapsed,
        p50_us: pct(50),
        p99_us: pct(99),
    })
}

async fn connection(t: Target, deadline: Instant) -> anyhow::Result<(Vec<u32>, u64)> {
    let stream = TcpStream::connect(t.addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut latencies = Vec::with_capacity(100_000);
    let mut errors = 0;
    while Instant::now() < deadline {
        let mut req = Request::post(&t.path).header(http::header::HOST, "bench");
        for (k, v) in &t.headers {
            req = req.header(k, v);
        }
        let req = req.body(Full::new(t.body.clone()))?;
        let sent = Instant::now();
        sender.ready().await?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let ok = status.is_success();
        let body = resp.into_body().collect().await?.to_bytes();
        if ok {
            latencies.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
        } else {
            errors += 1;
            if errors == 1 {
                eprintln!("{} {}: HTTP {status}", t.path, String::from_utf8_lossy(&body));
            }
        }
    }
    Ok((latencies, errors))
}

/// The bare hyper server: reads the body, answers a fixed small JSON.
pub async fn bare_server() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    let mut r = Response::new(Full::new(Bytes::from_static(br#"{"variable":[[152.1]]}"#)));
                    r.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, Infallible>(r)
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    Ok(addr)
}
