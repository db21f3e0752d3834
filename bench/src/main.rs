//! Plinth benchmarks: `runtime` (per-call costs in process), `http` (Plinth's routes under load against
//! a bare hyper server and in-process ONNX Runtime, in one run) and `protocols` (HTTP/JSON, HTTP binary
//! and gRPC on one host). `bench/run` runs all three.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use plinth_runtime::onnx::{OnnxModel, SessionOptions};
use plinth_runtime::wasm::{CallContext, EngineConfig, ScriptLimits, WasmEngine};
use plinth_runtime::{ModelSource, Package, PackageSpec, Tensor, TensorData};

mod azure;
mod grpc;
mod load;
mod suite;

fn main() -> anyhow::Result<()> {
    let what = std::env::args().nth(1).unwrap_or_else(|| "runtime".into());
    match what.as_str() {
        "runtime" => runtime(),
        "http" => {
            let secs = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(5);
            let rounds = std::env::args().nth(3).and_then(|s| s.parse().ok()).unwrap_or(3);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(suite::suite(&repo(), secs, rounds))
        }
        "azure" => {
            let secs = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(5);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(azure::azure(&repo(), secs))
        }
        "protocols" => {
            let secs = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(5);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(grpc::protocols(&repo(), secs))
        }
        "bare" => {
            // The HTTP ceiling as a process of its own, like the host under test; with a model path, the
            // runtime call on that model with nothing around it.
            let package = match std::env::args().nth(2) {
                Some(model) => Some(Arc::new(Package::load(
                    &PackageSpec {
                        models: vec![ModelSource {
                            name: "model".into(),
                            path: model.into(),
                        }],
                        ..PackageSpec::default()
                    },
                    None,
                )?)),
                None => None,
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(async {
                let addr = load::bare_server(package).await?;
                println!("{addr}");
                std::future::pending::<anyhow::Result<()>>().await
            })
        }
        "load" => {
            // One scenario by hand: `plinth-bench load ADDR PATH CONCURRENCY SECONDS [BODY ["NAME: VALUE"...]]`.
            let args: Vec<String> = std::env::args().skip(2).collect();
            let [addr, path, c, secs, rest @ ..] = args.as_slice() else {
                bail!("usage: plinth-bench load ADDR PATH CONCURRENCY SECONDS [BODY [\"NAME: VALUE\"...]]");
            };
            let mut headers = vec![];
            for h in rest.iter().skip(1) {
                let (k, v) = h.split_once(':').context("a header is NAME: VALUE")?;
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
            let target = load::Target {
                addr: addr.parse().context("ADDR")?,
                path: path.clone(),
                headers,
                body: bytes::Bytes::from(rest.first().cloned().unwrap_or_else(|| "{}".into())),
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            let r = rt.block_on(load::run(&target, c.parse()?, Duration::from_secs(secs.parse()?)))?;
            println!(
                "{}",
                serde_json::json!({"rps": r.rps, "p50_us": r.p50_us, "p99_us": r.p99_us, "errors": r.errors})
            );
            Ok(())
        }
        other => bail!("unknown benchmark '{other}' (known: runtime, http, protocols, azure, bare, load)"),
    }
}

struct Stats {
    mean: Duration,
    p50: Duration,
    p99: Duration,
}

/// Times `f` over `iters` calls after `iters / 10` warm-up calls.
fn measure(iters: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Stats> {
    for _ in 0..iters / 10 {
        f()?;
    }
    let mut samples = Vec::with_capacity(iters);
    let started = Instant::now();
    for _ in 0..iters {
        let t = Instant::now();
        f()?;
        samples.push(t.elapsed());
    }
    let mean = started.elapsed() / iters as u32;
    samples.sort();
    Ok(Stats {
        mean,
        p50: samples[iters / 2],
        p99: samples[iters * 99 / 100],
    })
}

fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn component(name: &str) -> anyhow::Result<PathBuf> {
    let p = repo()
        .join("plugins/target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    if !p.is_file() {
        bail!("{} missing: build the guests first (bench/run does)", p.display());
    }
    Ok(p)
}

fn runtime() -> anyhow::Result<()> {
    let engine = WasmEngine::new(EngineConfig::default())?;
    let ctx = CallContext::default();
    // About 1 KB of JSON: 100 numbers.
    let values: Vec<String> = (0..100).map(|i| format!("{:.4}", i as f64 * 1.2345)).collect();
    let body = format!(r#"{{"values": [{}]}}"#, values.join(", "));
    assert!((900..1200).contains(&body.len()), "body is {} bytes", body.len());

    let script = |max_idle: usize| -> anyhow::Result<Package> {
        let spec = PackageSpec {
            entry_script: Some(component("json_sum")?),
            limits: ScriptLimits {
                max_idle,
                ..ScriptLimits::default()
            },
            ..PackageSpec::default()
        };
        Ok(Package::load(&spec, Some(&engine))?)
    };
    let kept = script(4)?;
    let fresh = script(0)?;
    let model_path = repo().join("examples/diabetes/model/model.onnx");
    let ridge = Arc::new(OnnxModel::load(
        "diabetes",
        &model_path,
        &SessionOptions::default(),
        None,
    )?);
    let x = [Tensor::new("X", vec![1, 10], TensorData::Fp32(vec![0.03; 10]))?];
    let no_code = Package::load(
        &PackageSpec {
            models: vec![ModelSource {
                name: "diabetes".into(),
                path: model_path.clone(),
            }],
            ..PackageSpec::default()
        },
        None,
    )?;
    let ridge_body = br#"{"data": [[0.03, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, -0.002, 0.02, -0.01]]}"#;
    let rust_script = Package::load(
        &PackageSpec {
            models: vec![ModelSource {
                name: "diabetes".into(),
                path: model_path,
            }],
            entry_script: Some(component("diabetes_script")?),
            ..PackageSpec::default()
        },
        Some(&engine),
    )?;

    let rows: Vec<(&str, Stats)> = vec![
        (
            "ONNX Runtime `run`, Ridge, batch 1 (tensor in, tensor out)",
            measure(20_000, || ridge.infer(&x).map(drop).context("ridge"))?,
        ),
        (
            "no-code Ridge: JSON body → tensors → ORT → JSON",
            measure(20_000, || no_code.score(ridge_body, &ctx).map(drop).context("no-code"))?,
        ),
        (
            "Rust entry script, kept instance: 1 KB JSON parse + sum",
            measure(20_000, || kept.score(body.as_bytes(), &ctx).map(drop).context("kept"))?,
        ),
        (
            "Rust entry script, fresh store + instantiate + init + run per call",
            measure(5_000, || fresh.score(body.as_bytes(), &ctx).map(drop).context("fresh"))?,
        ),
        (
            "Rust entry script around the Ridge (diabetes example)",
            measure(20_000, || {
                rust_script.score(ridge_body, &ctx).map(drop).context("rust script")
            })?,
        ),
    ];
    println!("| per call | mean µs | p50 µs | p99 µs |");
    println!("|---|---:|---:|---:|");
    for (name, s) in &rows {
        println!("| {name} | {} | {} | {} |", us(s.mean), us(s.p50), us(s.p99));
    }
    let ratio = rows[3].1.mean.as_secs_f64() / rows[2].1.mean.as_secs_f64();
    println!("\nfresh instance / kept instance: {ratio:.1}×");
    Ok(())
}
