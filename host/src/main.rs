//! The `plinth` command: the node host (`plinth serve`) and the CLI, one file per subcommand under
//! `commands/`; `client.rs` speaks to a host's admin API, `logging.rs` routes script output into
//! service logs.

mod client;
mod commands;
mod logging;

// Many small allocations from many threads per request: glibc's arena locks showed up in profiles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use logging::ScriptLogLayer;
use plinth_router::LogHub;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Serve machine-learning models as fast, authenticated web services.
#[derive(Parser)]
#[command(name = "plinth", version, about)]
struct Cli {
    /// Log format on stderr: `text` or `json`.
    #[arg(long, global = true, default_value = "text", env = "PLINTH_LOG_FORMAT")]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node host: serve every deployed service, the admin API and health routes.
    Serve(commands::serve::Args),
    /// Register, list, show and delete models.
    Model {
        #[command(subcommand)]
        command: commands::model::Command,
        #[command(flatten)]
        host: commands::HostArgs,
    },
    /// Deploy registered models as a service (Azure's `az ml model deploy`).
    Deploy {
        #[command(flatten)]
        args: commands::deploy::Args,
        #[command(flatten)]
        host: commands::HostArgs,
    },
    /// Endpoints with versions: traffic split, default, control/treatment, mirroring, rollback.
    Endpoint {
        #[command(subcommand)]
        command: commands::endpoint::Command,
        #[command(flatten)]
        host: commands::HostArgs,
    },
    /// Manage deployed services: list, show, delete, logs, keys, regen-key, token.
    Service {
        #[command(subcommand)]
        command: commands::service::Command,
        #[command(flatten)]
        host: commands::HostArgs,
    },
    /// Score one request in process, without a server ("debug locally first").
    Score(commands::score::Args),
    /// Replicas needed for a load, by Azure ML's sizing rule.
    Capacity(commands::capacity::Args),
    /// Kubernetes: the controller that places hosts onto a cluster, its CRD, and rendered manifests.
    Controller {
        #[command(subcommand)]
        command: commands::controller::Command,
    },
    /// Compile the scientific Python runtime into this machine's cache now (once per machine).
    Prepare(commands::prepare::Args),
    /// Packages (one version as a tarball addressed by its sha256): fetch one and check it.
    Package {
        #[command(subcommand)]
        command: commands::package::Command,
    },
    /// The host: version, ONNX Runtime and its execution providers, GPUs, cores, memory, reservations.
    Info {
        #[command(flatten)]
        args: commands::info::Args,
        #[command(flatten)]
        host: commands::HostArgs,
    },
}

fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let args = export_dir_flag(std::env::args_os().map(azure_spelling).collect());
    let json_output = args
        .windows(2)
        .any(|w| (w[0] == "-o" || w[0] == "--output") && w[1] == "json")
        || args.iter().any(|a| a == "--output=json" || a == "-ojson");
    let cli = Cli::parse_from(args);
    let logs = Arc::new(LogHub::new());
    init_logging(cli.log_format, logs.clone());
    let result = match cli.command {
        Command::Serve(args) => commands::serve::run(args, logs),
        Command::Model { command, host } => commands::model::run(command, &host),
        Command::Deploy { args, host } => commands::deploy::run(args, &host),
        Command::Endpoint { command, host } => commands::endpoint::run(command, &host),
        Command::Service { command, host } => commands::service::run(command, &host),
        Command::Score(args) => commands::score::run(args),
        Command::Capacity(args) => commands::capacity::run(args),
        Command::Info { args, host } => commands::info::run(args, &host),
        Command::Controller { command } => commands::controller::run(command),
        Command::Package { command } => commands::package::run(command),
        Command::Prepare(args) => commands::prepare::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Under `-o json` an error is JSON too, on stderr, so a script reads one format.
        Err(e) if json_output => {
            eprintln!("{}", serde_json::json!({"error": error_line(&e)}));
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {}", error_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, as `{e:#}` writes them, less any cause whose words are already
/// there: the runtime's and the control plane's errors show their source's words and keep the source
/// too, for callers that look into it.
fn error_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let words = cause.to_string();
        if !line.contains(&words) {
            line.push_str(": ");
            line.push_str(&words);
        }
    }
    line
}

/// `plinth service export NAME -o DIR`: there `-o`/`--output` names the folder (everywhere else it is
/// the output format), read as `--out-dir`.
fn export_dir_flag(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let is_export = args.windows(2).any(|w| w[0] == "service" && w[1] == "export");
    if is_export {
        for a in args.iter_mut() {
            if a == "-o" || a == "--output" {
                *a = "--out-dir".into();
            }
        }
    }
    args
}

/// A reader that stopped reading (`plinth controller crd | head`) ends the command quietly, as other Unix
/// tools end, rather than with a panic from `println!`.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info.payload_as_str().unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info)
    }));
}

/// Azure's CLI spells the config flags `-ic` and `-dc` (one dash, two letters), which clap cannot
/// declare: they are read as `--ic` and `--dc`.
fn azure_spelling(arg: std::ffi::OsString) -> std::ffi::OsString {
    match arg.to_str() {
        Some("-ic") => "--ic".into(),
        Some("-dc") => "--dc".into(),
        _ => arg,
    }
}

fn init_logging(format: LogFormat, logs: Arc<LogHub>) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PLINTH_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "warn,plinth=info,plinth_router=info,plinth_control=info,plinth_runtime=info,plinth::request=warn",
        )
    });
    // Colour only on a terminal: logs redirected to a file stay plain text.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // The script log layer sees only script events, so every other disabled event stays free.
    let scripts = tracing_subscriber::filter::filter_fn(|m| plinth_router::is_service_event(m.target()));
    let registry = tracing_subscriber::registry().with(ScriptLogLayer(logs).with_filter(scripts));
    match format {
        LogFormat::Text => registry.with(fmt.with_filter(filter)).init(),
        LogFormat::Json => registry.with(fmt.json().with_filter(filter)).init(),
    }
    // Records from crates that log through `log` (cranelift and regalloc2 while compiling wasm, rustls)
    // reach tracing through a bridge that asks every filter per record; the script layer's filter has no
    // level hint, so without a cap every trace! inside the compiler took that path (a Python component or
    // the scientific interpreter compiled 4× slower). They are capped at info before the bridge.
    log::set_max_level(log::LevelFilter::Info);
}

#[cfg(test)]
mod tests {
    use super::error_line;

    #[test]
    fn an_error_line_names_each_cause_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        // The runtime's error shows its source's words and keeps the source: they appear once.
        let e = anyhow::Error::new(plinth_runtime::Error::Io {
            path: "/m/model.onnx".into(),
            source: io(),
        });
        assert_eq!(error_line(&e), "/m/model.onnx: no such file");
        // Context added on the way up still leads, with every cause after it, as `{e:#}` writes them.
        let e = anyhow::Error::new(io()).context("reading the request from stdin");
        assert_eq!(error_line(&e), format!("{e:#}"));
        assert_eq!(error_line(&e), "reading the request from stdin: no such file");
    }

    /// `--help` describes every argument of every command.
    #[test]
    fn every_argument_has_a_description() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.get_help().is_none() && !matches!(id, "help" | "version") {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&<super::Cli as clap::CommandFactory>::command(), "plinth", &mut missing);
        assert!(missing.is_empty(), "arguments without a description: {missing:#?}");
    }

    /// Azure's `-ic`/`-dc` spellings are shown where they are taken.
    #[test]
    fn deploy_help_lists_azures_flags() {
        let mut cmd = <super::Cli as clap::CommandFactory>::command();
        let help = cmd
            .find_subcommand_mut("deploy")
            .expect("deploy")
            .render_long_help()
            .to_string();
        assert!(
            help.contains("-ic/--ic FILE") && help.contains("-dc/--dc FILE"),
            "{help}"
        );
    }
}
