//! The operator's HTTP endpoint: `/healthz` (the process serves) and `/readyz` (watch caches
//! synced, so reconciles see the cluster).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::sync::watch;

#[derive(Clone)]
struct Health {
    ready: watch::Receiver<bool>,
}

async fn healthz() -> &'static str {
    "ok\n"
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

pub fn router(ready: watch::Receiver<bool>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Health { ready })
}

/// Binds `addr` now, so that a taken port fails start-up, and serves until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<impl std::future::Future<Output = std::io::Result<()>>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /healthz and /readyz");
    Ok(axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .into_future())
}
