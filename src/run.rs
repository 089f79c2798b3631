//! `scanreport-operator run`: wires the store, the Kubernetes client, the HTTP endpoint and the
//! controller together, and shuts them down gracefully on SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::controller::{self, Context};
use crate::store::{PoolConfig, Store, redact_url};
use crate::{Error, http};

pub struct RunOptions {
    pub database_url: String,
    pub listen: SocketAddr,
    pub pool: PoolConfig,
    pub controller: controller::Config,
}

pub async fn run(opts: RunOptions) -> Result<(), Error> {
    tracing::info!(
        database = %redact_url(&opts.database_url),
        namespaces = ?opts.controller.namespaces,
        instance = %opts.controller.instance,
        "starting"
    );
    let store = Store::connect(&opts.database_url, &opts.pool).await?;
    store.migrate().await?;
    let client = kube::Client::try_default().await.map_err(Error::Kube)?;

    let shutdown = CancellationToken::new();
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
    let server = http::serve(
        opts.listen,
        http::router(ready_rx),
        shutdown.clone().cancelled_owned(),
    )
    .await
    .map_err(|source| Error::Listen {
        addr: opts.listen,
        source,
    })?;
    let server = tokio::spawn(server);

    let signals = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: finishing reconciles in progress");
        signals.cancel();
    });

    let ctx = Arc::new(Context::new(client, store.clone(), opts.controller));
    controller::run(ctx, shutdown.clone(), ready_tx).await;
    shutdown.cancel();
    if let Ok(Err(e)) = server.await {
        tracing::warn!(error = %e, "HTTP server stopped with an error");
    }
    store.pool().close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the operator");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
