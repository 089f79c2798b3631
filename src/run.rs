//! `scanreport-operator run`: wires the store, the Kubernetes client, the HTTP endpoint, leader
//! election and the controller together, and shuts down gracefully on SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kube_lease_manager::LeaseManagerBuilder;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::controller::{self, Context};
use crate::metrics::{ApiSource, Metrics};
use crate::store::{PoolConfig, Store, describe_url};
use crate::{Error, http};

pub struct RunOptions {
    /// May hold a password: kept secret in memory, logged only redacted.
    pub database_url: SecretString,
    pub listen: SocketAddr,
    pub pool: PoolConfig,
    pub controller: controller::Config,
    /// `None` runs without leader election: every replica reconciles, which is safe (the
    /// pipeline is idempotent) but does the work more than once.
    pub leader_election: Option<LeaderElection>,
    /// The aggregated report API, served on every replica when it has an address.
    pub report_api: crate::reports_api::ReportApiConfig,
}

/// Leader election (flags of `scanreport-operator run`).
#[derive(Debug, Clone, clap::Args)]
pub struct LeaderElection {
    /// Name of the Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "scanreport-operator")]
    pub lease_name: String,
    /// Namespace of the Lease (the operator's own namespace in a cluster).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// How long the lease stays valid after its last renewal; a standby takes over after it.
    #[arg(long, env = "LEASE_DURATION", default_value = "15s", value_parser = crate::duration::flag_within::<{ 2 * crate::duration::SECOND_MS }, { 5 * crate::duration::MINUTE_MS }>)]
    pub lease_duration: Duration,
}

pub async fn run(opts: RunOptions) -> Result<(), Error> {
    tracing::info!(
        database = %describe_url(opts.database_url.expose_secret()),
        namespaces = ?opts.controller.namespaces,
        instance = %opts.controller.instance,
        leader_election = opts.leader_election.is_some(),
        "starting"
    );
    let store = Store::connect(opts.database_url.expose_secret(), &opts.pool).await?;
    store.migrate().await?;
    let client = kube::Client::try_default().await.map_err(Error::Kube)?;
    let metrics = Arc::new(Metrics::default());

    let shutdown = CancellationToken::new();
    let (ready_tx, ready_rx) = watch::channel(false);
    let server = http::serve(
        opts.listen,
        http::router(ready_rx, metrics.clone()),
        shutdown.clone().cancelled_owned(),
    )
    .await
    .map_err(|source| Error::Listen {
        addr: opts.listen,
        source,
    })?;
    let server = tokio::spawn(server);
    let report_api = match opts.report_api.api_listen {
        Some(addr) => Some(tokio::spawn(
            crate::reports_api::serve(
                &opts.report_api,
                addr,
                client.clone(),
                store.clone(),
                &opts.controller.namespaces,
                shutdown.clone(),
            )
            .await?,
        )),
        None => None,
    };
    let signals = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: finishing reconciles in progress");
        signals.cancel();
    });

    let instance = opts.controller.instance.clone();
    let ctx = Arc::new(Context::new(
        client.clone(),
        store.clone(),
        opts.controller,
        metrics.clone(),
    ));
    tokio::spawn(report_scanner_load(ctx.clone(), shutdown.clone()));
    tokio::spawn(crate::memory::trim_periodically(shutdown.clone()));
    let result = match opts.leader_election {
        None => {
            controller::run(ctx, shutdown.clone(), ready_tx).await;
            Ok(())
        }
        Some(le) => lead(client, le, &instance, ctx, &shutdown, ready_tx, &metrics).await,
    };
    shutdown.cancel();
    if let Ok(Err(e)) = server.await {
        tracing::warn!(error = %e, "HTTP server stopped with an error");
    }
    if let Some(api) = report_api {
        let _ = api.await;
    }
    store.close().await;
    tracing::info!("stopped");
    result
}

/// The field manager of this replica's Lease writes: unique per replica, at most 128 bytes (a
/// longer instance name is replaced by its UUIDv5, which stays unique).
fn lease_field_manager(instance: &str) -> String {
    let manager = format!("{}-lease/{instance}", controller::MANAGER);
    if manager.len() <= 128 {
        return manager;
    }
    let id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, instance.as_bytes());
    format!("{}-lease/{id}", controller::MANAGER)
}

/// Waits for the leader lease, reconciles while holding it, and releases it on shutdown.
/// Losing the lease ends the process with an error, so that the pod restarts as a standby.
async fn lead(
    client: kube::Client,
    le: LeaderElection,
    instance: &str,
    ctx: Arc<Context>,
    shutdown: &CancellationToken,
    ready: watch::Sender<bool>,
    metrics: &Metrics,
) -> Result<(), Error> {
    let duration = le.lease_duration.as_secs().max(2);
    let manager = LeaseManagerBuilder::new(client, &le.lease_name)
        .with_namespace(&le.lease_namespace)
        .with_identity(instance)
        .with_duration(duration)
        .with_grace((duration / 3).max(1))
        // Exclusive locking rests on server-side apply conflicts between field managers, so each
        // replica needs its own: with one shared manager two replicas starting together both
        // "acquired" the lease.
        .with_field_manager(lease_field_manager(instance))
        .build()
        .await
        .map_err(Error::Lease)?;
    // A standby is healthy and ready: it serves metrics and can take over at any time.
    ready.send_replace(true);
    let (mut leader, task) = manager.watch().await;
    tracing::info!(lease = %le.lease_name, namespace = %le.lease_namespace, "waiting for the leader lease");
    let acquired = loop {
        if *leader.borrow_and_update() {
            break true;
        }
        tokio::select! {
            changed = leader.changed() => if changed.is_err() { break false },
            () = shutdown.cancelled() => break false,
        }
    };
    let mut lost = false;
    if acquired {
        tracing::info!("acquired the leader lease; reconciling");
        metrics.set_leader(true);
        ready.send_replace(false);
        let stop = shutdown.child_token();
        let run = controller::run(ctx, stop.clone(), ready);
        tokio::pin!(run);
        loop {
            tokio::select! {
                () = &mut run => break,
                changed = leader.changed(), if !lost => {
                    if changed.is_err() || !*leader.borrow_and_update() {
                        tracing::error!("lost the leader lease; stopping reconciles");
                        lost = true;
                        stop.cancel();
                    }
                }
            }
        }
        metrics.set_leader(false);
    }
    // Dropping the receiver makes the lease task release the lease, so that a standby takes
    // over at once instead of after the lease duration.
    drop(leader);
    match tokio::time::timeout(Duration::from_secs(10), task).await {
        Ok(Ok(Ok(_))) => tracing::info!("released the leader lease"),
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "cannot release the leader lease"),
        Ok(Err(e)) => tracing::warn!(error = %e, "the lease task failed"),
        Err(_) => tracing::warn!("releasing the leader lease timed out"),
    }
    if lost && !shutdown.is_cancelled() {
        return Err(Error::LostLeadership);
    }
    Ok(())
}

/// Keeps the in-flight and queued gauges current. They count across replicas, from PostgreSQL.
async fn report_scanner_load(ctx: Arc<Context>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        for gone in ctx.adapters.prune() {
            ctx.metrics.forget_scanner(&gone);
        }
        for (name, registration) in ctx.adapters.known() {
            match ctx.store.scanner_load(registration).await {
                Ok((in_flight, queued)) => ctx.metrics.scanner_load(&name, in_flight, queued),
                Err(e) => {
                    ctx.metrics.api_error(ApiSource::Postgres);
                    tracing::debug!(error = %e, "cannot count scans in flight");
                }
            }
            match ctx.store.queue_depths(registration).await {
                Ok(depths) => ctx.metrics.queue_depths(&name, &depths),
                Err(e) => {
                    ctx.metrics.api_error(ApiSource::Postgres);
                    tracing::debug!(error = %e, "cannot count queued scans per namespace");
                }
            }
        }
    }
}

async fn wait_for_signal() {
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

#[cfg(test)]
mod tests {
    use super::lease_field_manager;

    #[test]
    fn each_replica_writes_the_lease_with_its_own_field_manager() {
        assert_ne!(lease_field_manager("pod-a"), lease_field_manager("pod-b"));
        let long_a = format!("{}a", "x".repeat(200));
        let long_b = format!("{}b", "x".repeat(200));
        assert!(lease_field_manager(&long_a).len() <= 128);
        assert_ne!(lease_field_manager(&long_a), lease_field_manager(&long_b));
    }
}
