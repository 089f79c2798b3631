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
            tracing::info!(database = %store::redact_url(&url), "applying migrations");
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
    /// Namespaces to watch, comma-separated; all namespaces when empty.
    #[arg(long, env = "WATCH_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// ScanRequests reconciled at once.
    #[arg(long, env = "CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
    /// Scans in flight per Scanner when its spec.maxInFlight is unset.
    #[arg(long, env = "DEFAULT_MAX_IN_FLIGHT", default_value_t = 4, value_parser = clap::value_parser!(i32).range(1..=1024))]
    default_max_in_flight: i32,
    /// Address of /healthz and /readyz.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8080")]
    listen: std::net::SocketAddr,
    /// How long adapter metadata is cached, e.g. 5m.
    #[arg(long, env = "METADATA_TTL", default_value = "5m", value_parser = duration)]
    metadata_ttl: std::time::Duration,
    /// How long a scan may run before it is presumed lost and submitted again.
    #[arg(long, env = "SCAN_TIMEOUT", default_value = "30m", value_parser = duration)]
    scan_timeout: std::time::Duration,
    /// How often a queued ScanRequest checks for a free scan slot.
    #[arg(long, env = "QUEUE_POLL", default_value = "2s", value_parser = duration)]
    queue_poll: std::time::Duration,
    /// When a stalled ScanRequest is looked at again without any change.
    #[arg(long, env = "STALL_RECHECK", default_value = "5m", value_parser = duration)]
    stall_recheck: std::time::Duration,
    /// Database connections.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    database_max_connections: u32,
    /// Name of this replica in scan claims, Events and the lease (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,
    /// Reconcile only while holding a Lease, so that one replica works and others stand by.
    #[arg(long, env = "LEADER_ELECTION", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    leader_election: bool,
    /// Name of the Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "scanreport-operator")]
    lease_name: String,
    /// Namespace of the Lease (the operator's own namespace in a cluster).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// How long the lease stays valid after its last renewal; a standby takes over after it.
    #[arg(long, env = "LEASE_DURATION", default_value = "15s", value_parser = duration)]
    lease_duration: std::time::Duration,
}

impl RunArgs {
    fn into_options(self) -> Result<scanreport_operator::run::RunOptions, Error> {
        let defaults = scanreport_operator::controller::Config::default();
        let leader_election =
            self.leader_election
                .then_some(scanreport_operator::run::LeaderElection {
                    lease_name: self.lease_name,
                    lease_namespace: self.lease_namespace,
                    lease_duration: self.lease_duration,
                });
        Ok(scanreport_operator::run::RunOptions {
            leader_election,
            database_url: self.database_url.ok_or(Error::MissingDatabaseUrl)?,
            listen: self.listen,
            pool: store::PoolConfig {
                max_connections: self.database_max_connections,
                ..store::PoolConfig::default()
            },
            controller: scanreport_operator::controller::Config {
                namespaces: self
                    .namespaces
                    .into_iter()
                    .filter(|n| !n.is_empty())
                    .collect(),
                concurrency: self.concurrency,
                default_max_in_flight: self.default_max_in_flight,
                metadata_ttl: self.metadata_ttl,
                scan_timeout: self.scan_timeout,
                queue_poll: self.queue_poll,
                stall_recheck: self.stall_recheck,
                // The pod name alone repeats across restarts; the suffix keeps claims apart.
                instance: match self.instance {
                    Some(pod) => format!("{pod}-{:08x}", rand::random::<u32>()),
                    None => defaults.instance,
                },
            },
        })
    }
}

fn duration(raw: &str) -> Result<std::time::Duration, String> {
    scanreport_operator::controller::parse_go_duration(raw)
        .ok_or_else(|| format!("{raw:?} is not a duration such as 30s, 5m or 1h"))
}
