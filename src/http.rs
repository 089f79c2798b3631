//! The operator's HTTP endpoint: `/healthz` (the process serves), `/readyz` (watch caches
//! synced, or a standby replica waiting for the leader lease) and `/metrics` (OpenMetrics).
//!
//! Anything in the cluster network may connect, so the listener is bounded ([`Limits`]): a
//! client must send its request headers within a timeout (a slow-loris client is cut off), an
//! idle keep-alive connection is closed, and connections beyond a cap are closed at once
//! instead of taking memory and file descriptors.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Semaphore, watch};

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

/// Bounds of the listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time a client has to send a request's headers, from connecting or from its first byte.
    pub header_read_timeout: Duration,
    /// A connection with no byte read or written for this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // Probes and a Prometheus scraper need a handful of connections and answer at once.
        Self {
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            max_connections: 64,
        }
    }
}

/// Binds `addr` now, so that a taken port fails start-up, and serves until `shutdown`, with
/// the default [`Limits`].
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<impl std::future::Future<Output = std::io::Result<()>>> {
    serve_with_limits(addr, router, shutdown, Limits::default()).await
}

/// [`serve`] with explicit [`Limits`].
pub async fn serve_with_limits(
    addr: SocketAddr,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    limits: Limits,
) -> std::io::Result<impl std::future::Future<Output = std::io::Result<()>>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    Ok(async move {
        tokio::pin!(shutdown);
        loop {
            let stream = tokio::select! {
                () = &mut shutdown => return Ok(()),
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "cannot accept a connection on the health listener");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                tracing::debug!("health listener at its connection cap; closing a new connection");
                drop(stream);
                continue;
            };
            let service = TowerToHyperService::new(router.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let (tracked, activity, started) = Tracked::new(stream);
                let io = TokioIo::new(tracked);
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.header_read_timeout);
                let connection = builder.serve_connection(io, service);
                tokio::select! {
                    result = connection => {
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "health listener connection ended");
                        }
                    }
                    () = idle(activity, started, limits.idle_timeout) => {
                        tracing::debug!("closing an idle health listener connection");
                    }
                }
            });
        }
    })
}

/// Completes once no byte moved for `timeout`, judged by `activity` (milliseconds after
/// `started` of the last read or write).
pub(crate) async fn idle(
    activity: Arc<AtomicU64>,
    started: tokio::time::Instant,
    timeout: Duration,
) {
    loop {
        let last = started + Duration::from_millis(activity.load(Ordering::Relaxed));
        let deadline = last + timeout;
        if tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

/// A stream that records when a byte last moved.
pub(crate) struct Tracked {
    inner: tokio::net::TcpStream,
    activity: Arc<AtomicU64>,
    started: tokio::time::Instant,
}

impl Tracked {
    pub(crate) fn new(
        inner: tokio::net::TcpStream,
    ) -> (Self, Arc<AtomicU64>, tokio::time::Instant) {
        let activity = Arc::new(AtomicU64::new(0));
        let started = tokio::time::Instant::now();
        let tracked = Self {
            inner,
            activity: activity.clone(),
            started,
        };
        (tracked, activity, started)
    }

    fn touch(&self) {
        let millis = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.activity.store(millis, Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        poll
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
