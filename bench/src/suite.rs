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

pub(crate) const KEY: &str = "bench-key-0123456789abcdef0123";
const RIDGE_ROW: &str = "[0.03, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, -0.002, 0.02, -0.01]";

pub(crate) struct Host {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    /// The gRPC listener, when started with `--grpc-listen`.
    pub(crate) grpc: Option<SocketAddr>,
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
        Self::start_with(bin, ws, &[])
    }

    pub(crate) fn start_with(bin: &Path, ws: &Path, extra: &[&str]) -> anyhow::Result<Host> {
        Self::start_env(bin, ws, extra, &[])
    }

    /// As [`start_with`](Self::start_with), with environment variables of its own.
    pub(crate) fn start_env(bin: &Path, ws: &Path, extra: &[&str], env: &[(&str, &Path)]) -> anyhow::Result<Host> {
        let mut child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--open-metrics", "--workspace"])
            .arg(ws)
            .args(extra)
            .envs(env.iter().copied())
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
        let grpc = line
            .split(" and gRPC on ")
            .nth(1)
            .map(|a| a.trim().parse())
            .transpose()?;
        Ok(Host {
            child,
            addr,
            grpc,
            ws: ws.to_path_buf(),
            bin: bin.to_path_buf(),
        })
    }

    pub(crate) fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
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

pub async fn suite(repo: &Path, secs: u64, rounds: usize) -> anyhow::Result<()> {
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

    // The HTTP ceiling: a bare hyper server in a process of its own, as the host is; and the same server
    // making the no-code Ridge call itself, with nothing around it (the "everything toggled off" host).
    let exe = std::env::current_exe()?;
    let bare = Process::start(Command::new(&exe).arg("bare"))?;
    let bare_score = Process::start(Command::new(&exe).arg("bare").arg(&ridge_path))?;
    let bare_mlp = Process::start(Command::new(&exe).arg("bare").arg(&mlp_path))?;

    // Plinth, release build, key auth on.
    let ws = std::env::temp_dir().join(format!("plinth-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&ws);
    let host = Host::start(&repo.join("target/release/plinth"), &ws)?;
    let dir = ws.join("configs");
    std::fs::create_dir_all(&dir)?;
    let dc = |replicas: u32, concurrent: u32, batch: Option<(u32, u32)>| {
        let mut dc = serde_json::json!({
            "numReplicas": replicas, "maxConcurrentRequestsPerContainer": concurrent, "maxQueueWaitMs": 30000,
            "keys": {"primaryKey": KEY, "secondaryKey": format!("{KEY}-2")}
        });
        if let Some((size, delay)) = batch {
            dc["maxBatchSize"] = serde_json::json!(size);
            dc["maxBatchDelayMicros"] = serde_json::json!(delay);
        }
        dc.to_string()
    };
    std::fs::write(dir.join("dc-ridge.json"), dc(2, 16, None))?;
    std::fs::write(dir.join("dc-ridge-batch.json"), dc(1, 4, Some((32, 0))))?;
    std::fs::write(dir.join("dc-mlp.json"), dc(2, 1, None))?;
    std::fs::write(
        dir.join("dc-ridge-open.json"),
        r#"{"numReplicas": 2, "maxConcurrentRequestsPerContainer": 16, "authEnabled": false}"#,
    )?;
    std::fs::write(dir.join("dc-mlp-batch.json"), dc(2, 1, Some((32, 1000))))?;
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
    for (model, name, ic, dc) in [
        ("diabetes:1", "ridge", None, "dc-ridge.json"),
        ("diabetes:1", "ridge-batch", None, "dc-ridge-batch.json"),
        ("diabetes:1", "ridge-rust", Some("ic-rust.json"), "dc-ridge.json"),
        ("mlp:1", "mlp", None, "dc-mlp.json"),
        ("mlp:1", "mlp-batch", None, "dc-mlp-batch.json"),
        ("diabetes:1", "ridge-open", None, "dc-ridge-open.json"),
    ] {
        let dc = p(dir.join(dc));
        let mut args = vec!["deploy", "--overwrite", "-m", model, "-n", name, "--dc", &dc];
        let ic = ic.map(|ic| p(dir.join(ic)));
        if let Some(ic) = &ic {
            args.extend(["--ic", ic]);
        }
        host.cli(&args)?;
    }
    // The same model as an endpoint of two versions, 90/10: the split in the path.
    let dc_ridge = p(dir.join("dc-ridge.json"));
    host.cli(&[
        "endpoint",
        "create",
        "ridge-split",
        "--version-name",
        "a",
        "-m",
        "diabetes:1",
        "--dc",
        &dc_ridge,
        "--traffic",
        "90",
    ])?;
    host.cli(&[
        "endpoint",
        "version",
        "add",
        "ridge-split",
        "b",
        "-m",
        "diabetes:1",
        "--dc",
        &dc_ridge,
        "--traffic",
        "10",
    ])?;

    let auth = vec![("Authorization".to_string(), format!("Bearer {KEY}"))];
    let target = |addr: SocketAddr, path: &str, headers: &[(String, String)], body: &str| Target {
        addr,
        path: path.into(),
        headers: headers.to_vec(),
        body: Bytes::from(body.to_string()),
    };
    let score = |service: &str, body: &str| target(host.addr, &format!("/api/v1/service/{service}/score"), &auth, body);
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
    let bare_t = target(bare.addr, "/", &[], &ridge_body);
    let bare_score_t = target(bare_score.addr, "/", &[], &ridge_body);
    let bare_mlp_t = target(bare_mlp.addr, "/", &[], &mlp_body);

    // Under load: the server and the load generator share both cores. The Ridge pair is measured in
    // alternating rounds (the machine drifts), and the median of each is reported.
    let mut bare32s = Vec::new();
    let mut ridge32s = Vec::new();
    let mut ridge32bs = Vec::new();
    for _ in 0..rounds {
        bare32s.push(run(&bare_t, 32, duration).await?);
        ridge32s.push(run(&score("ridge", &ridge_body), 32, duration).await?);
        ridge32bs.push(run(&score("ridge-batch", &ridge_body), 32, duration).await?);
    }
    let (bare32, ridge32, ridge32b) = (median(bare32s), median(ridge32s), median(ridge32bs));
    let oip32 = run(&oip, 32, duration).await?;
    let mlp32 = run(&score("mlp", &mlp_body), 32, duration).await?;
    let mlp32b = run(&score("mlp-batch", &mlp_body), 32, duration).await?;

    // One request at a time, two ways: as the machine schedules it (client and server on different
    // vCPUs: every round trip pays two cross-vCPU wake-ups), and with the load generator and the server on
    // one core (a wake-up is a context switch): the second shows the server's own latency.
    let singles: [(&str, Target); 9] = [
        ("bare hyper server", bare_t.clone()),
        ("bare hyper + no-code Ridge call, nothing else", bare_score_t.clone()),
        ("Ridge `/score` JSON, key auth", score("ridge", &ridge_body)),
        (
            "Ridge `/score` JSON, no auth",
            target(host.addr, "/api/v1/service/ridge-open/score", &[], &ridge_body),
        ),
        (
            "Ridge `/score` JSON, key auth, endpoint of two versions split 90/10",
            score("ridge-split", &ridge_body),
        ),
        (
            "Ridge via Rust entry script `/score`, key auth",
            score("ridge-rust", &ridge_body),
        ),
        ("bare hyper + no-code MLP call, nothing else", bare_mlp_t.clone()),
        ("MLP 256→1024→1024→10 `/score` JSON, key auth", score("mlp", &mlp_body)),
        (
            "MLP `/score` JSON, dynamic batching (32 rows, 1 ms)",
            score("mlp-batch", &mlp_body),
        ),
    ];
    // Unpinned, a round trip's cost swings with how deeply the idle vCPUs sleep, so every scenario runs
    // in each of the alternating rounds and the round with its median p50 is reported.
    let mut free_rounds: Vec<Vec<Run>> = vec![Vec::new(); singles.len()];
    for _ in 0..rounds {
        for ((_, t), runs) in singles.iter().zip(&mut free_rounds) {
            runs.push(run(t, 1, duration).await?);
        }
    }
    let free: Vec<Run> = free_rounds.into_iter().map(median_p50).collect();
    for pid in [
        bare.child.id(),
        bare_score.child.id(),
        bare_mlp.child.id(),
        host.child.id(),
    ] {
        pin_to_core0(pid)?;
    }
    let mut pinned = Vec::new();
    for (_, t) in &singles {
        pinned.push(run_pinned(&exe, t, 1, duration)?);
    }
    drop(host);
    drop(bare);
    drop(bare_score);
    drop(bare_mlp);
    // The compute ceiling again, now: the machine drifts, and the faster of the two is the one compared.
    let mlp_call = mlp_call.min(mean_call(2_000, || drop(mlp.infer(&mx))));

    let row = |name: &str, r: &Run| {
        format!(
            "| {name} | {:.0} | {:.0} | {:.0} | {} |",
            r.rps, r.p50_us, r.p99_us, r.errors
        )
    };
    println!("Concurrency 32 (Ridge rows: median of {rounds} alternating rounds)");
    println!();
    println!("| scenario | requests/s | p50 µs | p99 µs | errors |");
    println!("|---|---:|---:|---:|---:|");
    println!("{}", row("bare hyper server (HTTP ceiling)", &bare32));
    println!("{}", row("Ridge `/score` JSON, key auth", &ridge32));
    println!(
        "{}",
        row(
            "Ridge `/score` JSON, key auth, dynamic batching (32 rows, 0 µs)",
            &ridge32b
        )
    );
    println!("{}", row("Ridge OIP binary in/out, key auth", &oip32));
    println!("{}", row("MLP `/score` JSON (2 replicas)", &mlp32));
    println!(
        "{}",
        row("MLP `/score` JSON, dynamic batching (32 rows, 1 ms)", &mlp32b)
    );
    println!();
    println!("Concurrency 1 (unpinned: the round with the median p50 of {rounds} alternating rounds)");
    println!();
    println!("| scenario | requests/s | p50 µs | p99 µs | pinned: requests/s | p50 µs | p99 µs |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (((name, _), f), p) in singles.iter().zip(&free).zip(&pinned) {
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            f.rps, f.p50_us, f.p99_us, p.rps, p.p50_us, p.p99_us
        );
    }
    let errors: u64 = free.iter().chain(&pinned).map(|r| r.errors).sum();
    println!("(errors at concurrency 1: {errors})");
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
    let [_, bare_score1, ridge1, open1, split1, rust1, bare_mlp1, mlp1, mlpb1] = &free[..] else {
        bail!("nine single-request scenarios");
    };
    let [
        _,
        bare_score1p,
        ridge1p,
        open1p,
        split1p,
        rust1p,
        bare_mlp1p,
        mlp1p,
        mlpb1p,
    ] = &pinned[..]
    else {
        bail!("nine single-request scenarios");
    };
    println!("| goal | measured | pinned | target |");
    println!("|---|---:|---:|---:|");
    println!(
        "| Ridge c=32 / bare hyper c=32 | {:.0}% (batching: {:.0}%) | — | ≥ 50% |",
        100.0 * ridge32.rps / bare32.rps,
        100.0 * ridge32b.rps / bare32.rps
    );
    println!(
        "| Ridge c=1 p50, end to end | {:.0} µs | {:.0} µs | ≤ 150 µs |",
        ridge1.p50_us, ridge1p.p50_us
    );
    let mlp_ratio = |r: &Run| 100.0 * r.rps * mlp_call.as_secs_f64();
    println!(
        "| MLP c=1 / in-process ORT calls/s | {:.0}% | {:.0}% | ≥ 90% |",
        mlp_ratio(mlp1),
        mlp_ratio(mlp1p)
    );
    println!(
        "| (the same ratio for a bare hyper server making the same call: this machine's ceiling for it) | {:.0}% | {:.0}% | — |",
        mlp_ratio(bare_mlp1),
        mlp_ratio(bare_mlp1p)
    );
    println!(
        "| MLP c=1 / bare hyper server with the same call | {:.0}% | {:.0}% | — |",
        100.0 * mlp1.rps / bare_mlp1.rps,
        100.0 * mlp1p.rps / bare_mlp1p.rps
    );
    println!(
        "| MLP c=32 / in-process batch-1 calls/s, no batching | {:.2}× | — | — |",
        mlp32.rps * mlp_call.as_secs_f64()
    );
    println!(
        "| MLP c=32 with dynamic batching / in-process batch-1 calls/s | {:.2}× | — | ≥ 1.5× |",
        mlp32b.rps * mlp_call.as_secs_f64()
    );
    println!(
        "| MLP c=1 p50, dynamic batching (32 rows, 1 ms) / without (adaptive: an idle model runs at once) | {:.2}× | {:.2}× | ≤ 1.1× |",
        mlpb1.p50_us / mlp1.p50_us,
        mlpb1p.p50_us / mlp1p.p50_us
    );
    println!(
        "| MLP c=32 requests/s, dynamic batching / without | {:.2}× | — | ≥ 1× |",
        mlp32b.rps / mlp32.rps
    );
    println!(
        "| router + auth + split + queue + metrics + logs, p50 added (Ridge − bare hyper with the same call) | {:.0} µs | {:.0} µs | ≤ 30 µs |",
        ridge1.p50_us - bare_score1.p50_us,
        ridge1p.p50_us - bare_score1p.p50_us
    );
    println!(
        "| of which key auth (key auth − no auth), p50 | {:.0} µs | {:.0} µs | — |",
        ridge1.p50_us - open1.p50_us,
        ridge1p.p50_us - open1p.p50_us
    );
    println!(
        "| of which a 90/10 split over two versions (split − one version), p50 | {:.0} µs | {:.0} µs | — |",
        split1.p50_us - ridge1.p50_us,
        split1p.p50_us - ridge1p.p50_us
    );
    println!(
        "| Rust entry script added over no-code, in process p50 | {:.1} µs | — | ≤ 50 µs |",
        script_p50 - no_code_p50
    );
    println!(
        "| Rust entry script added over no-code, end to end p50 | {:.0} µs | {:.0} µs | ≤ 50 µs |",
        rust1.p50_us - ridge1.p50_us,
        rust1p.p50_us - ridge1p.p50_us
    );
    let _ = std::fs::remove_dir_all(&ws);
    Ok(())
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The run with the median requests/s.
fn median(runs: Vec<Run>) -> Run {
    median_by(runs, |r| r.rps)
}

/// The run with the median p50.
fn median_p50(runs: Vec<Run>) -> Run {
    median_by(runs, |r| r.p50_us)
}

fn median_by(mut runs: Vec<Run>, key: impl Fn(&Run) -> f64) -> Run {
    runs.sort_by(|a, b| key(a).total_cmp(&key(b)));
    runs.swap_remove(runs.len() / 2)
}

/// Moves every thread of a process to core 0 (threads it starts later inherit it).
fn pin_to_core0(pid: u32) -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", "0", &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .context("taskset (util-linux)")?;
    if !status.success() {
        bail!("taskset could not pin process {pid}");
    }
    Ok(())
}

/// Runs the load generator as a process pinned to core 0 (`plinth-bench load`).
fn run_pinned(exe: &Path, t: &Target, concurrency: usize, duration: Duration) -> anyhow::Result<Run> {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "0"]).arg(exe).args([
        "load",
        &t.addr.to_string(),
        &t.path,
        &concurrency.to_string(),
        &duration.as_secs().to_string(),
        std::str::from_utf8(&t.body).context("a pinned run takes a text body")?,
    ]);
    for (k, v) in &t.headers {
        cmd.arg(format!("{k}: {v}"));
    }
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .context("running plinth-bench load")?;
    if !out.status.success() {
        bail!("plinth-bench load failed");
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("plinth-bench load output")?;
    let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
    Ok(Run {
        rps: f("rps"),
        p50_us: f("p50_us"),
        p99_us: f("p99_us"),
        errors: v["errors"].as_u64().unwrap_or(0),
    })
}

/// A process of this benchmark that prints its address on its first line.
struct Process {
    child: Child,
    addr: SocketAddr,
}

impl Process {
    fn start(cmd: &mut Command) -> anyhow::Result<Process> {
        let mut child = cmd.stdout(Stdio::piped()).spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
        let addr = line.trim().parse().context("server address")?;
        Ok(Process { child, addr })
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
