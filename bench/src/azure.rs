//! `plinth-bench azure`: Azure's canonical score.py (numpy + a joblib-pickled scikit-learn Ridge) on the
//! scientific Python runtime, side by side with the same model as a no-code ONNX service and with the
//! pure-Python path (componentize-py, `plinth.infer` on the ONNX model), on one host: cold start (compiled
//! interpreter cached or not), per-call p50/p99 at concurrency 1 and 8, and memory per interpreter.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;

use crate::load::{Run, Target, run};
use crate::suite::Host;

const BODY: &str = r#"{"data": [[0.0380759, 0.0506801, 0.0616962, 0.0218724, -0.0442235, -0.0348208, -0.0434008, -0.00259226, 0.0199084, -0.0176461]]}"#;

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

pub async fn azure(repo: &Path, secs: u64) -> anyhow::Result<()> {
    let bin = repo.join("target/release/plinth");
    let python = repo.join(".venv/bin/python");
    let ws = std::env::temp_dir().join(format!("plinth-bench-azure-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&ws);
    std::fs::create_dir_all(ws.join("pkl"))?;
    let made = Command::new(&python)
        .arg(repo.join("examples/azure-sklearn/make_model.py"))
        .arg(ws.join("pkl"))
        .output()?;
    if !made.status.success() {
        bail!("make_model.py: {}", String::from_utf8_lossy(&made.stderr));
    }
    let dc = ws.join("dc.json");
    std::fs::write(
        &dc,
        r#"{"numReplicas": 1, "maxConcurrentRequestsPerContainer": 8, "maxQueueWaitMs": 60000, "authEnabled": false,
            "containerResourceRequirements": {"cpu": 2, "memoryInGB": 2}}"#,
    )?;
    let p = |p: &Path| p.to_string_lossy().into_owned();
    let deploy = |host: &Host, name: &str, model: &str, ic: Option<&Path>| -> anyhow::Result<f64> {
        let started = Instant::now();
        let mut args = vec![
            "deploy".to_string(),
            "--overwrite".into(),
            "-n".into(),
            name.into(),
            "-m".into(),
            model.into(),
        ];
        if let Some(ic) = ic {
            args.extend(["--ic".into(), p(ic)]);
        }
        args.extend(["--dc".into(), p(&dc)]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        host.cli(&args).with_context(|| format!("deploying {name}"))?;
        Ok(started.elapsed().as_secs_f64())
    };

    // Cold starts: a machine whose interpreter is not compiled yet (a fresh machine-wide cache), then the
    // first deploy on a new workspace and host cache once it is (what a user meets after scripts/setup,
    // and a pod whose cache claim holds it), then a second host on the first one's own cache.
    let machine = ws.join("machine");
    let mut cold = Vec::new();
    for (label, cache) in [
        (
            "interpreter not compiled (fresh machine-wide cache)",
            ws.join("cache-a"),
        ),
        (
            "first deploy after setup (machine-wide cache compiled; new workspace and host cache)",
            ws.join("cache-b"),
        ),
        ("second host on the first host's cache", ws.join("cache-a")),
    ] {
        let host_ws = ws.join(format!("ws-{}", cold.len()));
        let env = [("PLINTH_MACHINE_CACHE", machine.as_path())];
        let host = Host::start_env(&bin, &host_ws, &["--cache-dir", &p(&cache)], &env)?;
        host.cli(&["model", "register", "--name", "ridge", "--path", &p(&ws.join("pkl"))])?;
        let took = deploy(
            &host,
            "azure",
            "ridge:1",
            Some(&repo.join("examples/azure-sklearn/inferenceconfig.json")),
        )?;
        cold.push((label, took));
    }

    // Side by side on one host.
    let host = Host::start_env(
        &bin,
        &ws.join("ws-run"),
        &["--cache-dir", &p(&ws.join("cache-a"))],
        &[("PLINTH_MACHINE_CACHE", machine.as_path())],
    )?;
    let pid = host.child.id();
    host.cli(&["model", "register", "--name", "ridge", "--path", &p(&ws.join("pkl"))])?;
    host.cli(&[
        "model",
        "register",
        "--name",
        "diabetes",
        "--path",
        &p(&repo.join("examples/diabetes/model")),
    ])?;
    let ic_py = ws.join("ic-py.json");
    std::fs::write(
        &ic_py,
        format!(
            r#"{{"entryScript": "score.py", "sourceDirectory": {:?}}}"#,
            p(&repo.join("examples/diabetes/script-python"))
        ),
    )?;
    deploy(&host, "onnx", "diabetes:1", None)?;
    deploy(&host, "pure", "diabetes:1", Some(&ic_py))?;
    let before = rss_mib(pid);
    deploy(
        &host,
        "azure",
        "ridge:1",
        Some(&repo.join("examples/azure-sklearn/inferenceconfig.json")),
    )?;
    let one = rss_mib(pid);
    let target = |service: &str| Target {
        addr: host.addr,
        path: format!("/api/v1/service/{service}/score"),
        headers: vec![],
        body: Bytes::from_static(BODY.as_bytes()),
    };
    let duration = Duration::from_secs(secs);
    let mut rows: Vec<(&str, usize, Run)> = Vec::new();
    for c in [1, 8] {
        for (label, service) in [
            ("no-code ONNX (the Ridge exported with skl2onnx)", "onnx"),
            ("pure-Python score.py (componentize-py) + plinth.infer on ONNX", "pure"),
            (
                "Azure score.py: numpy + joblib scikit-learn Ridge (scientific runtime)",
                "azure",
            ),
        ] {
            rows.push((label, c, run(&target(service), c, duration).await?));
        }
    }
    let eight = rss_mib(pid);

    println!("| cold start of the Azure score.py | seconds (deploy command, until Healthy) |");
    println!("|---|---:|");
    for (label, took) in &cold {
        println!("| {label} | {took:.1} |");
    }
    println!();
    println!(
        "| goal | measured | target |\n|---|---:|---:|\n| first deploy of a scientific score.py after setup, to Healthy | {:.1} s | ≤ 5 s |",
        cold[1].1
    );
    println!();
    println!("| service | c | req/s | p50 µs | p99 µs | errors |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (label, c, r) in &rows {
        println!(
            "| {label} | {c} | {:.0} | {:.0} | {:.0} | {} |",
            r.rps, r.p50_us, r.p99_us, r.errors
        );
    }
    println!();
    println!(
        "host RSS: {before:.0} MiB before the Azure service, {one:.0} MiB with its first interpreter (+{:.0} MiB), \
         {eight:.0} MiB after concurrency 8 (up to 8 interpreters: +{:.0} MiB each on average)",
        one - before,
        (eight - before) / 8.0
    );
    Ok(())
}
