use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use scanreport_operator::{Error, api, identity, store, telemetry};

#[derive(Parser)]
#[command(
    name = "scanreport-operator",
    version,
    about = "Declarative, race-free image scanning for Kubernetes"
)]
struct Cli {
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = telemetry::LogFormat::Text, global = true)]
    log_format: telemetry::LogFormat,
    /// Log filter (tracing `EnvFilter` syntax); `RUST_LOG` wins when set.
    #[arg(long, env = "LOG_LEVEL", default_value = "info", global = true)]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator: reconcile ScanRequests until SIGTERM.
    Run(Box<RunArgs>),
    /// Print both CustomResourceDefinitions as multi-document YAML.
    Crds {
        /// Write one `<crd-name>.yaml` file per CRD into this directory instead.
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// Apply the database migrations (safe to run concurrently and repeatedly).
    Migrate {
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
    },
    /// Print the deterministic report id of (digest, registration UUID, report MIME type).
    ReportId {
        /// Artifact digest, `sha256:<64 hex>` or `sha512:<128 hex>`.
        #[arg(long)]
        digest: String,
        /// Scanner registration UUID.
        #[arg(long, conflicts_with = "scanner", required_unless_present = "scanner")]
        registration_uuid: Option<String>,
        /// Scanner name, to derive the default registration UUID instead.
        #[arg(long)]
        scanner: Option<String>,
        /// Report MIME type; any spelling, it is canonicalised.
        #[arg(long, default_value = api::DEFAULT_REPORT_MIME_TYPE)]
        mime_type: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = telemetry::init(cli.log_format, &cli.log_level) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "command failed");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), Error> {
    match command {
        Command::Run(args) => scanreport_operator::run::run(args.into_options()?).await,
        Command::Crds { dir } => {
            let docs = api::crds_yaml()?;
            if let Some(dir) = dir {
                for (name, yaml) in docs {
                    let path = dir.join(format!("{name}.yaml"));
                    std::fs::write(&path, yaml)
                        .map_err(|source| Error::WriteFile { path, source })?;
                }
                return Ok(());
            }
            let mut out = std::io::stdout().lock();
            for (_, yaml) in docs {
                // A write error here is a closed pipe; nothing useful to report.
                let _ = out.write_all(yaml.as_bytes());
            }
            Ok(())
        }
        Command::Migrate { database_url } => {
            let url = database_url.ok_or(Error::MissingDatabaseUrl)?;
            tracing::info!(database = %store::describe_url(&url), "applying migrations");
            let store = store::Store::connect(&url, &store::PoolConfig::default()).await?;
            store.migrate().await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::ReportId {
            digest,
            registration_uuid,
            scanner,
            mime_type,
        } => {
            let digest = identity::Digest::parse(&digest)?;
            // clap makes the two flags exclusive and requires one of them.
            let registration = match registration_uuid {
                Some(uuid) => identity::parse_registration_uuid(&uuid)?,
                None => identity::default_registration_uuid(scanner.as_deref().unwrap_or(""))?,
            };
            let mime = identity::MimeType::parse(&mime_type)?;
            println!("{}", identity::report_id(&digest, &registration, &mime));
            Ok(())
        }
    }
}

#[derive(clap::Args)]
struct RunArgs {
    /// PostgreSQL URL of the report store.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Address of /healthz and /readyz.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8080")]
    listen: std::net::SocketAddr,
    /// Name of this replica in scan claims, Events and the lease (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,
    /// Reconcile only while holding a Lease, so that one replica works and others stand by.
    #[arg(long, env = "LEADER_ELECTION", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    leader_election: bool,
    #[command(flatten)]
    lease: scanreport_operator::run::LeaderElection,
    #[command(flatten)]
    controller: scanreport_operator::controller::Config,
    #[command(flatten)]
    pool: store::PoolConfig,
    #[command(flatten)]
    report_api: scanreport_operator::reports_api::ReportApiConfig,
}

impl RunArgs {
    fn into_options(self) -> Result<scanreport_operator::run::RunOptions, Error> {
        let mut controller = self.controller;
        controller.namespaces.retain(|n| !n.is_empty());
        // The pod name alone repeats across restarts; the suffix keeps claims apart.
        if let Some(pod) = self.instance {
            controller.instance = format!("{pod}-{:08x}", rand::random::<u32>());
        }
        Ok(scanreport_operator::run::RunOptions {
            leader_election: self.leader_election.then_some(self.lease),
            database_url: self.database_url.ok_or(Error::MissingDatabaseUrl)?.into(),
            listen: self.listen,
            pool: self.pool,
            controller,
            report_api: self.report_api,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    #[test]
    fn every_flag_of_every_subcommand_has_a_unique_name() {
        // Flattened flag groups share one namespace: a clash panics at start-up otherwise.
        Cli::command().debug_assert();
    }
}
