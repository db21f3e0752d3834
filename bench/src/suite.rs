//! The whole benchmark: in-process baselines, the bare hyper ceiling, and Plinth's routes under load,
//! all in one run on this machine, reported as ratios.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use plinth_runtime::onnx::{OnnxModel, SessionOptions};
use plinth_runtime::wasm::{CallContext, EngineConfig, WasmEngine};
use plinth_runtime::{ModelSource, Package, PackageSpec, Tensor, TensorData};

use crate::load::{Run, Target, run};

const KEY: &str = "bench-key-0123456789abcdef0123";
const RIDGE_ROW: &str = "[0.03, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, -0.002, 0.02, -0.01]";

struct Host {
    child: Child,
    addr: SocketAddr,
    ws: PathBuf,
    bin: PathBuf,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Host {
    fn start(bin: &Path, ws: &Path) -> anyhow::Result<Host> {
        let mut child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--open-metrics", "--workspace"])
            .arg(ws)
            .env("PLINTH_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .context("starting plinth serve")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("http://"))
            .context("no address printed")?
            .parse()?;
        Ok(Host {
            child,
            addr,
            ws: ws.to_path_buf(),
            bin: bin.to_path_buf(),
        })
    }

    fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.bin)
            .args(args)
            .env("PLINTH_HOST", format!("http://{}", self.addr))
            .env("PLINTH_WORKSPACE", &self.ws)
            .env("PLINTH_LOG", "warn")
            .output()?;
        if !out.status.success() {
            bail!("plinth {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?)
    }
}

fn mean_call(iters: u32, mut f: impl FnMut()) -> Duration {
    for _ in 0..iters / 10 {
        f();
    }
    let started = Instant::now();
    for _ in 0..iters {
        f();
    }
    started.elapsed() / iters
}

fn p50_call(iters: usize, mut f: impl FnMut()) -> f64 {
    let mut v: Vec<u128> = (0..iters)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_nanos()
        })
        .collect();
    v.sort_unstable();
    v[iters / 2] as f64 / 1000.0
}

pub async fn suite(repo: &Path, secs: u64) -> anyhow::Result<()> {
    let duration = Duration::from_secs(secs);
    let ridge_path = repo.join("examples/diabetes/model/model.onnx");
    let mlp_path = repo.join("bench/models/mlp/model.onnx");
    let script = repo.join("plugins/target/wasm32-wasip2/release/diabetes_script.wasm");
    for p in [&ridge_path, &mlp_path, &script] {
        if !p.is_file() {
            bail!("{} missing: run bench/run, which builds it", p.display());
        }
    }

    // In-process baselines, one thread, batch 1.
    let ridge = OnnxModel::load("diabetes", &ridge_path, &SessionOptions::default(), None)?;
    let mlp = OnnxModel::load("mlp", &mlp_path, &SessionOptions::default(), None)?;
    let rx = [Tensor::new("X", vec![1, 10], TensorData::Fp32(vec![0.03; 10]))?];
    let mx = [Tensor::new(
        "x",
        vec![1, 256],
        TensorData::Fp32((0..256).map(|i| (i as f32 * 0.37).sin()).collect()),
    )?];
    let ridge_call = mean_call(20_000, || drop(ridge.infer(&rx)));
    let mlp_call = mean_call(2_000, || drop(mlp.infer(&mx)));
    let ridge_body = format!(r#"{{"data": [{RIDGE_ROW}]}}"#);
    let no_code = Package::load(
        &PackageSpec {
            models: vec![ModelSource {
                name: "diabetes".into(),
                path: ridge_path.clone(),
            }],
            ..PackageSpec::default()
        },
        None,
    )?;
    let engine = WasmEngine::new(EngineConfig::default())?;
    let with_script = Package::load(
        &PackageSpec {
            models: vec![ModelSource {
                name: "diabetes".into(),
                path: ridge_path.clone(),
            }],
            entry_script: Some(script.clone()),
            ..PackageSpec::default()
        },
        Some(&engine),
    )?;
    let ctx = CallContext::default();
    let no_code_p50 = p50_call(20_000, || drop(no_code.score(ridge_body.as_bytes(), &ctx)));
    let script_p50 = p50_call(20_000, || drop(with_script.score(ridge_body.as_bytes(), &ctx)));

    // The HTTP ceiling: a bare hyper server in a process of its own, as the host is.
    let mut bare_child = Command::new(std::env::current_exe()?)
        .arg("bare")
        .stdout(Stdio::piped())
        .spawn()?;
    let mut bare_line = String::new();
    BufReader::new(bare_child.stdout.take().context("stdout")?).read_line(&mut bare_line)?;
    let bare_addr: SocketAddr = bare_line.trim().parse().context("bare server address")?;
    let bare = |c: usize| {
        let t = Target {
            addr: bare_addr,
            path: "/".into(),
            headers: vec![],
            body: Bytes::from(ridge_body.clone()),
        };
        async move { run(&t, c, duration).await }
    };
    let bare32 = bare(32).await?;
    let bare1 = bare(1).await?;
    let _ = bare_child.kill();
    let _ = bare_child.wait();

    // Plinth, release build, key auth on.
    let ws = std::env::temp_dir().join(format!("plinth-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&ws);
    let host = Host::start(&repo.join("target/release/plinth"), &ws)?;
    let dir = ws.join("configs");
    std::fs::create_dir_all(&dir)?;
    let dc = |replicas: u32, concurrent: u32| {
        serde_json::json!({
            "numReplicas": replicas, "maxConcurrentRequestsPerContainer": concurrent, "maxQueueWaitMs": 30000,
            "keys": {"primaryKey": KEY, "secondaryKey": format!("{KEY}-2")}
        })
    };
    std::fs::write(dir.join("dc-ridge.json"), dc(2, 16).to_string())?;
    std::fs::write(dir.join("dc-mlp.json"), dc(2, 1).to_string())?;
    let mut batched = dc(2, 1);
    batched["maxBatchSize"] = serde_json::json!(32);
    batched["maxBatchDelayMicros"] = serde_json::json!(1000);
    std::fs::write(dir.join("dc-mlp-batch.json"), batched.to_string())?;
    std::fs::copy(&script, dir.join("diabetes_script.wasm"))?;
    std::fs::write(dir.join("ic-rust.json"), r#"{"entryScript": "diabetes_script.wasm"}"#)?;
    let p = |p: PathBuf| p.to_string_lossy().into_owned();
    host.cli(&[
        "model",
        "register",
        "--name",
        "diabetes",
        "--path",
        &p(ridge_path.clone()),
    ])?;
    host.cli(&["model", "register", "--name", "mlp", "--path", &p(mlp_path.clone())])?;
    host.cli(&[
        "deploy",
        "-m",
        "diabetes:1",
        "-n",
        "ridge",
        "--dc",
        &p(dir.join("dc-ridge.json")),
    ])?;
    host.cli(&[
        "deploy",
        "-m",
        "diabetes:1",
        "-n",
        "ridge-rust",
        "--ic",
        &p(dir.join("ic-rust.json")),
        "--dc",
        &p(dir.join("dc-ridge.json")),
    ])?;
    host.cli(&[
        "deploy",
        "-m",
        "mlp:1",
        "-n",
        "mlp",
        "--dc",
        &p(dir.join("dc-mlp.json")),
    ])?;
    host.cli(&[
        "deploy",
        "-m",
        "mlp:1",
        "-n",
        "mlp-batch",
        "--dc",
        &p(dir.join("dc-mlp-batch.json")),
    ])?;

    let auth = vec![("Authorization".to_string(), format!("Bearer {KEY}"))];
    let score = |service: &str, body: String| Target {
        addr: host.addr,
        path: format!("/api/v1/service/{service}/score"),
        headers: auth.clone(),
        body: Bytes::from(body),
    };
    let mut oip_body = br#"{"inputs":[{"name":"X","shape":[1,10],"datatype":"FP32","parameters":{"binary_data_size":40}}],"outputs":[{"name":"variable","parameters":{"binary_data":true}}]}"#.to_vec();
    let json_len = oip_body.len();
    for i in 0..10 {
        oip_body.extend_from_slice(&(0.01f32 * i as f32).to_le_bytes());
    }
    let mut oip_headers = auth.clone();
    oip_headers.push(("Inference-Header-Content-Length".into(), json_len.to_string()));
    let oip = Target {
        addr: host.addr,
        path: "/v2/models/ridge/infer".into(),
        headers: oip_headers,
        body: Bytes::from(oip_body),
    };
    let mlp_row: Vec<String> = (0..256).map(|i| format!("{:.4}", (i as f32 * 0.37).sin())).collect();
    let mlp_body = format!(r#"{{"data": [[{}]]}}"#, mlp_row.join(","));

    let ridge32 = run(&score("ridge", ridge_body.clone()), 32, duration).await?;
    let ridge1 = run(&score("ridge", ridge_body.clone()), 1, duration).await?;
    let oip32 = run(&oip, 32, duration).await?;
    let rust1 = run(&score("ridge-rust", ridge_body.clone()), 1, duration).await?;
    let mlp1 = run(&score("mlp", mlp_body.clone()), 1, duration).await?;
    let mlp32 = run(&score("mlp", mlp_body.clone()), 32, duration).await?;
    let mlp32b = run(&score("mlp-batch", mlp_body), 32, duration).await?;
    drop(host);

    let row = |name: &str, r: &Run| {
        format!(
            "| {name} | {:.0} | {:.0} | {:.0} | {} |",
            r.rps, r.p50_us, r.p99_us, r.errors
        )
    };
    println!("| scenario | requests/s | p50 µs | p99 µs | errors |");
    println!("|---|---:|---:|---:|---:|");
    println!("{}", row("bare hyper server, c=32 (HTTP ceiling)", &bare32));
    println!("{}", row("bare hyper server, c=1", &bare1));
    println!("{}", row("Ridge `/score` JSON, key auth, c=32", &ridge32));
    println!("{}", row("Ridge `/score` JSON, key auth, c=1", &ridge1));
    println!("{}", row("Ridge OIP binary in/out, key auth, c=32", &oip32));
    println!("{}", row("Ridge via Rust entry script `/score`, c=1", &rust1));
    println!("{}", row("MLP 256→1024→1024→10 `/score` JSON, c=1", &mlp1));
    println!("{}", row("MLP `/score` JSON, c=32 (2 replicas)", &mlp32));
    println!(
        "{}",
        row("MLP `/score` JSON, c=32, dynamic batching (32 rows, 1 ms)", &mlp32b)
    );
    println!();
    println!(
        "In process, one thread, batch 1: ORT Ridge {:.1} µs/call ({:.0} calls/s); ORT MLP {:.1} µs/call ({:.0} calls/s);",
        us(ridge_call),
        1.0 / ridge_call.as_secs_f64(),
        us(mlp_call),
        1.0 / mlp_call.as_secs_f64()
    );
    println!("no-code Ridge JSON→JSON p50 {no_code_p50:.1} µs; Rust entry script around it p50 {script_p50:.1} µs.");
    println!();
    println!("| goal | measured | target |");
    println!("|---|---:|---:|");
    println!(
        "| Ridge c=32 / bare hyper c=32 | {:.0}% | ≥ 50% |",
        100.0 * ridge32.rps / bare32.rps
    );
    println!("| Ridge c=1 p50, end to end | {:.0} µs | ≤ 150 µs |", ridge1.p50_us);
    println!(
        "| MLP c=1 / in-process ORT calls/s | {:.0}% | ≥ 90% |",
        100.0 * mlp1.rps * mlp_call.as_secs_f64()
    );
    println!(
        "| MLP c=32 / in-process batch-1 calls/s, no batching | {:.2}× | — |",
        mlp32.rps * mlp_call.as_secs_f64()
    );
    println!(
        "| MLP c=32 with dynamic batching / in-process batch-1 calls/s | {:.2}× | ≥ 1.5× |",
        mlp32b.rps * mlp_call.as_secs_f64()
    );
    println!(
        "| router + auth + split + queue + JSON, p50 added over a bare HTTP round trip and the in-process call (Ridge c=1 − bare c=1 − no-code in process) | {:.0} µs | ≤ 30 µs |",
        ridge1.p50_us - bare1.p50_us - no_code_p50
    );
    println!(
        "| Rust entry script added over no-code (in process p50) | {:.1} µs | ≤ 50 µs |",
        script_p50 - no_code_p50
    );
    println!(
        "| Rust entry script added over no-code (end to end p50, c=1) | {:.0} µs | ≤ 50 µs |",
        rust1.p50_us - ridge1.p50_us
    );
    let _ = std::fs::remove_dir_all(&ws);
    Ok(())
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
