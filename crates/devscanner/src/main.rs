//! `dev-scanner`: serves the development scanner adapter until SIGINT or SIGTERM (for demos and
//! tests; the operator never uses it).

use std::process::ExitCode;

use clap::Parser;
use devscanner::DevScannerArgs;
use scanreport_operator::telemetry;

#[derive(Parser)]
#[command(
    name = "dev-scanner",
    version,
    about = "A development Harbor scanner adapter with deterministic reports"
)]
struct Cli {
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = telemetry::LogFormat::Text)]
    log_format: telemetry::LogFormat,
    /// Log filter (tracing `EnvFilter` syntax); `RUST_LOG` wins when set.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    log_level: String,
    #[command(flatten)]
    adapter: DevScannerArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = telemetry::init(cli.log_format, &cli.log_level) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    match devscanner::run_cli(cli.adapter).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "development scanner adapter failed");
            eprintln!("error: development scanner adapter: {e}");
            ExitCode::FAILURE
        }
    }
}
