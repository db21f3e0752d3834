//! `plinth score`: load a package in process and score one request, as a deployed service would.

use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use plinth_runtime::onnx::SessionOptions;
use plinth_runtime::wasm::{CallContext, EngineConfig, ScriptLimits, WasmEngine};
use plinth_runtime::{ModelSource, Package, PackageSpec};
use plinth_spec::provider::ProviderSpec;

#[derive(clap::Args)]
pub struct Args {
    /// A model as NAME=PATH (an .onnx file or a folder holding one); PATH alone names it after the file.
    /// With a script, a folder without an .onnx file (a pickled model) is the script's AZUREML_MODEL_DIR.
    #[arg(short = 'm', long = "model", value_name = "NAME=PATH")]
    models: Vec<String>,

    /// Entry script: a WebAssembly component (.wasm) or an Azure ML style score.py.
    #[arg(long, alias = "entry-script", value_name = "FILE")]
    script: Option<PathBuf>,

    /// The request body: a file, `@FILE` (as `service run -d` takes it), `-` for stdin, or JSON text.
    #[arg(long, short = 'd', value_name = "FILE", conflicts_with = "body")]
    data: Option<PathBuf>,

    /// The request body, inline.
    #[arg(long, value_name = "JSON")]
    body: Option<String>,

    /// Score the request this many times and report the mean time per call.
    #[arg(long, default_value_t = 1)]
    repeat: u32,

    /// Per-call deadline of the entry script, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    timeout_ms: u64,

    /// Memory cap of the entry script, in MiB.
    #[arg(long, default_value_t = 256)]
    memory_mb: usize,

    /// Where compiled scripts are cached.
    #[arg(long, env = "PLINTH_CACHE_DIR")]
    cache_dir: Option<PathBuf>,

    /// `text` prints the response body as it is; `json` wraps it: {"response": ..., "calls": N, "meanMicros": M}.
    #[arg(long, short = 'o', default_value = "text")]
    output: super::Output,

    /// The ONNX Runtime library file (default: found in ./.venv, beside the binary, or system-wide).
    #[arg(long, env = "ORT_DYLIB_PATH")]
    ort_lib: Option<PathBuf>,

    /// Execution providers in order of preference, as in a deployment config (`tensorrt,cuda,cpu`).
    #[arg(
        long = "execution-providers",
        alias = "ep",
        value_delimiter = ',',
        value_name = "LIST"
    )]
    providers: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.models.is_empty() && args.script.is_none() {
        bail!("give a model (-m NAME=PATH) and/or an entry script (--script FILE)");
    }
    let cache_dir = args
        .cache_dir
        .clone()
        .unwrap_or_else(plinth_control::scripts::default_cache_dir);
    let mut models = args
        .models
        .iter()
        .map(|m| parse_model(m))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // A folder without an .onnx file (a pickled scikit-learn model, say) is the script's model folder
    // (AZUREML_MODEL_DIR), not an ONNX model.
    let mut model_dir = None;
    if args.script.is_some() {
        models.retain(|m| {
            let onnx = m.path.is_file()
                || std::fs::read_dir(&m.path)
                    .map(|d| d.flatten().any(|e| e.path().extension().is_some_and(|x| x == "onnx")))
                    .unwrap_or(false);
            if !onnx && model_dir.is_none() {
                model_dir = Some(m.path.clone());
            }
            onnx
        });
    }
    let entry_script = match &args.script {
        Some(path) if super::is_rust_crate(path) => Some(super::build_rust_script(path)?),
        Some(path) => Some(plinth_control::scripts::prepare(path, &cache_dir)?),
        None => None,
    };
    let body = read_body(&args)?;
    let names: Vec<serde_json::Value> = args.providers.iter().map(|p| p.as_str().into()).collect();
    let providers = ProviderSpec::list_from_json(&names).map_err(|e| anyhow::anyhow!("--execution-providers{e}"))?;

    let spec = PackageSpec {
        models,
        entry_script,
        script_name: args
            .script
            .as_ref()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned()),
        limits: ScriptLimits {
            deadline: Duration::from_millis(args.timeout_ms),
            memory_bytes: args.memory_mb << 20,
            ..ScriptLimits::default()
        },
        ort_library: args.ort_lib.clone(),
        model_dir,
        session: SessionOptions {
            providers,
            cache_dir: Some(cache_dir.clone()),
            ..SessionOptions::default()
        },
    };
    let engine = match spec.entry_script {
        Some(_) => Some(WasmEngine::new(EngineConfig {
            cache_dir: Some(cache_dir.join("components")),
            max_instances: 8,
            ..EngineConfig::default()
        })?),
        None => None,
    };
    let started = Instant::now();
    let package = Package::load(&spec, engine.as_ref())?;
    tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "package loaded");
    for m in package.models().iter() {
        if let Some(f) = &m.placement().fallback {
            eprintln!("model {}: {f}", m.name());
        }
    }

    let ctx = CallContext {
        request_id: Some("cli".into()),
        ..CallContext::default()
    };
    let mut response = Vec::new();
    let started = Instant::now();
    for _ in 0..args.repeat.max(1) {
        response = package.score(&body, &ctx)?;
    }
    if args.repeat > 1 {
        let per_call = started.elapsed() / args.repeat;
        eprintln!("{} calls, {:.1} µs per call", args.repeat, per_call.as_secs_f64() * 1e6);
    }
    match args.output {
        super::Output::Text | super::Output::Table => super::answer::print(&response, false),
        // YAML would print the service's numbers anew: JSON keeps them as they came.
        super::Output::Yaml => {
            bail!("plinth score prints text or json (-o json keeps the answer's numbers as they are)")
        }
        super::Output::Json => {
            // The answer goes in as it came when it is JSON (no number printed anew), else as a string.
            let response = match super::answer::json_text(&response) {
                Some(text) => text.to_string(),
                None => serde_json::Value::String(String::from_utf8_lossy(&response).into_owned()).to_string(),
            };
            let mean = started.elapsed().as_secs_f64() * 1e6 / args.repeat.max(1) as f64;
            let calls = args.repeat.max(1);
            let wrapped = format!(r#"{{"response": {response}, "calls": {calls}, "meanMicros": {mean}}}"#);
            super::answer::print(wrapped.as_bytes(), false)
        }
    }
}

fn parse_model(arg: &str) -> anyhow::Result<ModelSource> {
    let (name, path) = match arg.split_once('=') {
        Some((name, path)) => (name.to_string(), PathBuf::from(path)),
        None => {
            let path = PathBuf::from(arg);
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, path)
        }
    };
    if name.is_empty() {
        bail!("model '{arg}': give it a name as NAME=PATH");
    }
    if !path.exists() {
        bail!("model '{name}': {} does not exist", path.display());
    }
    Ok(ModelSource { name, path })
}

fn read_body(args: &Args) -> anyhow::Result<Vec<u8>> {
    if let Some(body) = &args.body {
        return Ok(body.clone().into_bytes());
    }
    match &args.data {
        Some(p) if p.as_os_str() == "-" => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("reading the request from stdin")?;
            Ok(buf)
        }
        Some(p) => {
            let text = p.to_string_lossy();
            let trimmed = text.trim_start();
            match text.strip_prefix('@') {
                Some(file) if !p.exists() => std::fs::read(file).with_context(|| format!("reading {file}")),
                _ if !p.exists() && (trimmed.starts_with('{') || trimmed.starts_with('[')) => {
                    Ok(text.as_bytes().to_vec())
                }
                _ => std::fs::read(p).with_context(|| format!("reading {}", p.display())),
            }
        }
        None => bail!("give the request with --data FILE (or - for stdin) or --body JSON"),
    }
}
