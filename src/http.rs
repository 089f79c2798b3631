//! The operator's HTTP endpoint: `/healthz` (the process serves), `/readyz` (watch caches
//! synced, or a standby replica waiting for the leader lease) and `/metrics` (OpenMetrics).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;

use tokio::sync::watch;

use crate::metrics::Metrics;

#[derive(Clone)]
struct Health {
    ready: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(State(health): State<Health>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        health.metrics.encode(),
    )
}

async fn readyz(State(health): State<Health>) -> (StatusCode, &'static str) {
    if *health.ready.borrow() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "watch caches not synced yet\n",
        )
    }
}

pub fn router(ready: watch::Receiver<bool>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(self::metrics))
        .with_state(Health { ready, metrics })
}

/// Binds `addr` now, so that a taken port fails start-up, and serves until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<impl std::future::Future<Output = std::io::Result<()>>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
    Ok(axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .into_future())
}
