//! The inference protocol three ways on the same host, in one run: HTTP/JSON (`/score`), HTTP with the
//! binary tensor extension, and gRPC with raw contents, for the Ridge and the MLP.
//!
//! The gRPC load generator drives one HTTP/2 connection per concurrent client (one stream at a time,
//! as the HTTP generator keeps one keep-alive connection per client) with hyper's HTTP/2 client on a
//! single-threaded event loop of its own, and counts a call as done when its `grpc-status` is 0.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use plinth_router::grpc_proto::ModelInferRequest;
use plinth_router::grpc_proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use prost::Message;
use tokio::net::TcpStream;

use crate::load::{Run, Target, gather, measured, run};
use crate::suite::{Host, KEY};

/// A gRPC `ModelInfer` call, framed once (the 5-byte gRPC prefix, then the message).
#[derive(Clone)]
pub struct GrpcTarget {
    pub addr: SocketAddr,
    pub key: String,
    pub framed: Bytes,
}

impl GrpcTarget {
    pub fn infer(
        addr: SocketAddr,
        key: &str,
        model: &str,
        input: &str,
        shape: &[i64],
        values: &[f32],
        output: &str,
    ) -> Self {
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let msg = ModelInferRequest {
            model_name: model.into(),
            inputs: vec![InferInputTensor {
                name: input.into(),
                datatype: "FP32".into(),
                shape: shape.to_vec(),
                ..Default::default()
            }],
            outputs: vec![InferRequestedOutputTensor {
                name: output.into(),
                ..Default::default()
            }],
            raw_input_contents: vec![Bytes::from(raw)],
            ..Default::default()
        };
        let body = msg.encode_to_vec();
        let mut framed = BytesMut::with_capacity(5 + body.len());
        framed.put_u8(0);
        framed.put_u32(body.len() as u32);
        framed.put_slice(&body);
        GrpcTarget {
            addr,
            key: key.into(),
            framed: framed.freeze(),
        }
    }
}

/// Runs `concurrency` HTTP/2 connections for `duration`, after a short warm-up, on a thread of its own.
pub async fn run_grpc(target: &GrpcTarget, concurrency: usize, duration: Duration) -> anyhow::Result<Run> {
    let target = target.clone();
    measured(duration, move |d| {
        let target = target.clone();
        async move { drive(&target, concurrency, d).await }
    })
    .await
}

async fn drive(target: &GrpcTarget, concurrency: usize, duration: Duration) -> anyhow::Result<Run> {
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    gather((0..concurrency).map(|_| connection(target.clone(), deadline)), started).await
}

async fn connection(target: GrpcTarget, deadline: Instant) -> anyhow::Result<(Vec<u32>, u64)> {
    let stream = TcpStream::connect(target.addr).await?;
    stream.set_nodelay(true)?;
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let uri = format!("http://{}/inference.GRPCInferenceService/ModelInfer", target.addr);
    let auth = format!("Bearer {}", target.key);
    let mut latencies = Vec::with_capacity(100_000);
    let mut errors = 0;
    while Instant::now() < deadline {
        let request = http::Request::post(&uri)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("authorization", &auth)
            .body(Full::new(target.framed.clone()))?;
        let sent = Instant::now();
        send.ready().await?;
        let response = send.send_request(request).await?;
        let trailers_only = response.headers().get("grpc-status").cloned();
        let collected = response.into_body().collect().await?;
        let status = trailers_only
            .or_else(|| collected.trailers().and_then(|t| t.get("grpc-status").cloned()))
            .context("no grpc-status")?;
        if status == "0" {
            latencies.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
        } else {
            errors += 1;
            if errors == 1 {
                eprintln!("gRPC status {status:?}: {:?}", collected.trailers());
            }
        }
    }
    Ok((latencies, errors))
}

/// The gRPC ceiling: a bare hyper HTTP/2 server that reads each request and answers a fixed framed
/// message with `grpc-status: 0`, nothing else (no protobuf, no router, no model).
pub async fn bare_grpc_server() -> anyhow::Result<SocketAddr> {
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                    let body = Full::new(Bytes::from_static(&[0, 0, 0, 0, 2, 0x2a, 0]))
                        .with_trailers(async { Some(Ok(trailers)) });
                    let mut r = http::Response::new(body);
                    r.headers_mut()
                        .insert("content-type", http::HeaderValue::from_static("application/grpc"));
                    Ok::<_, std::convert::Infallible>(r)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// The protocols benchmark: one host, Ridge and MLP, each three ways, at concurrency 32 and 1.
pub async fn protocols(repo: &std::path::Path, secs: u64) -> anyhow::Result<()> {
    let duration = Duration::from_secs(secs);
    let ridge_path = repo.join("examples/diabetes/model/model.onnx");
    let mlp_path = repo.join("bench/models/mlp/model.onnx");
    for p in [&ridge_path, &mlp_path] {
        if !p.is_file() {
            bail!("{} missing: run bench/run, which makes it", p.display());
        }
    }
    let ws = std::env::temp_dir().join(format!("plinth-bench-grpc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&ws);
    let host = Host::start_with(
        &repo.join("target/release/plinth"),
        &ws,
        &["--grpc-listen", "127.0.0.1:0"],
    )?;
    let grpc_addr = host.grpc.context("the host printed no gRPC address")?;
    let dir = ws.join("configs");
    std::fs::create_dir_all(&dir)?;
    let dc = |concurrent: u32| {
        serde_json::json!({
            "numReplicas": 2, "maxConcurrentRequestsPerContainer": concurrent, "maxQueueWaitMs": 30000,
            "keys": {"primaryKey": KEY, "secondaryKey": format!("{KEY}-2")}
        })
        .to_string()
    };
    std::fs::write(dir.join("dc-ridge.json"), dc(16))?;
    std::fs::write(dir.join("dc-mlp.json"), dc(1))?;
    let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
    host.cli(&["model", "register", "--name", "diabetes", "--path", &path(&ridge_path)])?;
    host.cli(&["model", "register", "--name", "mlp", "--path", &path(&mlp_path)])?;
    for (model, name) in [("diabetes:1", "ridge"), ("mlp:1", "mlp")] {
        let dc = path(&dir.join(format!("dc-{name}.json")));
        host.cli(&["deploy", "--overwrite", "-m", model, "-n", name, "--dc", &dc])?;
    }

    let ridge_row: Vec<f32> = (0..10).map(|i| 0.01 * i as f32).collect();
    let mlp_row: Vec<f32> = (0..256).map(|i| (i as f32 * 0.37).sin()).collect();
    let auth = vec![("Authorization".to_string(), format!("Bearer {KEY}"))];
    let json = |service: &str, row: &[f32]| Target {
        addr: host.addr,
        path: format!("/api/v1/service/{service}/score"),
        headers: auth.clone(),
        body: Bytes::from(serde_json::json!({ "data": [row] }).to_string()),
    };
    let binary = |service: &str, input: &str, row: &[f32], output: &str| {
        let head = serde_json::json!({
            "inputs": [{"name": input, "shape": [1, row.len()], "datatype": "FP32",
                        "parameters": {"binary_data_size": row.len() * 4}}],
            "outputs": [{"name": output, "parameters": {"binary_data": true}}]
        })
        .to_string();
        let mut body = head.clone().into_bytes();
        body.extend(row.iter().flat_map(|v| v.to_le_bytes()));
        let mut headers = auth.clone();
        headers.push(("Inference-Header-Content-Length".into(), head.len().to_string()));
        Target {
            addr: host.addr,
            path: format!("/v2/models/{service}/infer"),
            headers,
            body: Bytes::from(body),
        }
    };
    let grpc = |service: &str, input: &str, row: &[f32], output: &str| {
        GrpcTarget::infer(grpc_addr, KEY, service, input, &[1, row.len() as i64], row, output)
    };

    println!("Protocols: one host, key auth, 2 replicas each; load generator on the same machine");
    println!();
    println!("| model | protocol | c=32 requests/s | p50 µs | p99 µs | c=1 requests/s | p50 µs | p99 µs | errors |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    // The generators' own ceilings: bare servers that answer at once, in this process.
    let bare_http = crate::load::bare_server(None).await?;
    let bare_http_t = Target {
        addr: bare_http,
        path: "/".into(),
        headers: Vec::new(),
        body: Bytes::from_static(b"{}"),
    };
    let bare_grpc = GrpcTarget::infer(bare_grpc_server().await?, KEY, "none", "X", &[1], &[0.0], "y");
    for (protocol, c32, c1) in [
        (
            "bare HTTP/1.1 server",
            run(&bare_http_t, 32, duration).await?,
            run(&bare_http_t, 1, duration).await?,
        ),
        (
            "bare HTTP/2 server, fixed gRPC answer",
            run_grpc(&bare_grpc, 32, duration).await?,
            run_grpc(&bare_grpc, 1, duration).await?,
        ),
    ] {
        print_row("—", protocol, &c32, &c1);
    }
    for (model, service, input, row, output) in [
        ("Ridge", "ridge", "X", &ridge_row, "variable"),
        ("MLP 256→1024→1024→10", "mlp", "x", &mlp_row, "y"),
    ] {
        let http_json = json(service, row);
        let http_binary = binary(service, input, row, output);
        let grpc_t = grpc(service, input, row, output);
        let runs = [
            (
                "HTTP JSON `/score`",
                run(&http_json, 32, duration).await?,
                run(&http_json, 1, duration).await?,
            ),
            (
                "HTTP OIP binary",
                run(&http_binary, 32, duration).await?,
                run(&http_binary, 1, duration).await?,
            ),
            (
                "gRPC raw contents",
                run_grpc(&grpc_t, 32, duration).await?,
                run_grpc(&grpc_t, 1, duration).await?,
            ),
        ];
        for (protocol, c32, c1) in runs {
            print_row(model, protocol, &c32, &c1);
        }
    }
    Ok(())
}

fn print_row(model: &str, protocol: &str, c32: &Run, c1: &Run) {
    println!(
        "| {model} | {protocol} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
        c32.rps,
        c32.p50_us,
        c32.p99_us,
        c1.rps,
        c1.p50_us,
        c1.p99_us,
        c32.errors + c1.errors
    );
}
