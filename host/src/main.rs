//! The `plinth` command: one file per subcommand under `commands/`.

mod commands;
mod scripts;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Score one request against a model and/or entry script, in process (no server): "debug locally first".
    Score(commands::score::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Score(args) => commands::score::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PLINTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,plinth=info,plinth_runtime=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
