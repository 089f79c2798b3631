//! The `dev-scanner` command line: serves a development adapter until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use scanreport_operator::scanner::auth::DEFAULT_API_KEY_HEADER;

use crate::*;

/// `dev-scanner`: serves a development adapter until SIGINT or SIGTERM.
#[derive(clap::Args, Debug, Clone)]
pub struct DevScannerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Specification version to implement.
    #[arg(long, value_enum, default_value = "1.2")]
    pub spec: DevSpec,
    /// Report polls answered 302 (not ready) per scan before the report is served.
    #[arg(long, default_value_t = 1)]
    pub pending_polls: u32,
    /// `Refresh-After` of the 302 answers, in seconds.
    #[arg(long, default_value_t = 1)]
    pub refresh_after: u64,
    /// Inject a fault: `ENDPOINT:FAULT[:COUNT]`, ENDPOINT metadata|scan|report, FAULT a status
    /// 500..=599, hang, malformed, oversized or lost (report only); COUNT requests, or every
    /// request when omitted. Repeatable. Example: `--fault report:503:2`.
    #[arg(long = "fault", value_name = "ENDPOINT:FAULT[:COUNT]")]
    pub faults: Vec<FaultRule>,
    /// Seconds a `hang` fault waits before answering.
    #[arg(long, default_value_t = 30)]
    pub hang_for: u64,
    /// Body length in bytes of an `oversized` fault.
    #[arg(long, default_value_t = 65 * 1024 * 1024)]
    pub oversize_bytes: u64,
    /// Require HTTP Basic authentication, as `USERNAME:PASSWORD`.
    #[arg(
        long,
        env = "DEV_SCANNER_BASIC_AUTH",
        hide_env_values = true,
        group = "auth"
    )]
    pub basic_auth: Option<String>,
    /// Require `Authorization: Bearer TOKEN`.
    #[arg(
        long,
        env = "DEV_SCANNER_BEARER_TOKEN",
        hide_env_values = true,
        group = "auth"
    )]
    pub bearer_token: Option<String>,
    /// Require this API key in the `--api-key-header` header.
    #[arg(
        long,
        env = "DEV_SCANNER_API_KEY",
        hide_env_values = true,
        group = "auth"
    )]
    pub api_key: Option<String>,
    #[arg(long, default_value = DEFAULT_API_KEY_HEADER)]
    pub api_key_header: String,
    /// Serve HTTPS with this PEM certificate chain (needs `--tls-key`).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `--tls-cert`.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl DevScannerArgs {
    pub fn into_config(self) -> Result<DevScannerConfig, DevScannerError> {
        let auth = if let Some(pair) = self.basic_auth {
            let (username, password) =
                pair.split_once(':')
                    .ok_or_else(|| DevScannerError::InvalidOption {
                        reason: "--basic-auth must be USERNAME:PASSWORD".into(),
                    })?;
            DevAuth::Basic {
                username: username.to_owned(),
                password: password.to_owned(),
            }
        } else if let Some(token) = self.bearer_token {
            DevAuth::Bearer { token }
        } else if let Some(key) = self.api_key {
            DevAuth::ApiKey {
                header: self.api_key_header,
                key,
            }
        } else {
            DevAuth::None
        };
        let read = |path: PathBuf| {
            std::fs::read_to_string(&path)
                .map_err(|source| DevScannerError::ReadFile { path, source })
        };
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(DevTls {
                cert_chain_pem: read(cert)?,
                key_pem: read(key)?,
            }),
            _ => None,
        };
        Ok(DevScannerConfig {
            listen: self.listen,
            spec: self.spec,
            pending_polls: self.pending_polls,
            refresh_after_secs: self.refresh_after,
            auth,
            tls,
            hang_for: Duration::from_secs(self.hang_for),
            oversize_bytes: self.oversize_bytes,
            faults: self.faults,
        })
    }
}

/// Runs `dev-scanner` until SIGINT or SIGTERM.
pub async fn run_cli(args: DevScannerArgs) -> Result<(), DevScannerError> {
    let config = args.into_config()?;
    if !config.listen.ip().is_loopback() {
        tracing::warn!(listen = %config.listen, "the development scanner adapter is listening beyond loopback");
    }
    let mut handle = DevScanner::start(config).await?;
    println!(
        "development scanner adapter listening on {}",
        handle.base_url()
    );
    tokio::select! {
        result = handle.wait() => return result,
        () = shutdown_signal() => {}
    }
    tracing::info!("stopping the development scanner adapter");
    handle.stop_now().await;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        match term {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

// ---------------------------------------------------------------------------------------------
