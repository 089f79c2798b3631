//! Starting a development adapter in-process and steering it from a test while it runs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use scanreport_operator::scanner::wire;

use crate::*;

/// Starts development adapters.
pub struct DevScanner;

impl DevScanner {
    /// Binds, then serves in a background task until [`DevScannerHandle::shutdown`].
    pub async fn start(config: DevScannerConfig) -> Result<DevScannerHandle, DevScannerError> {
        for rule in &config.faults {
            rule.validate()?;
        }
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| DevScannerError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener
            .local_addr()
            .map_err(|source| DevScannerError::Bind {
                addr: config.listen,
                source,
            })?;
        let tls = config.tls.as_ref().map(server_tls_config).transpose()?;
        let base_url = format!("{}://{addr}", if tls.is_some() { "https" } else { "http" });
        let shared = Arc::new(Shared::new(&config, addr));
        let app = router(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let signal = async move {
            let _ = stopped.await;
        };
        let task = match tls {
            Some(tls) => {
                let listener = TlsListener::new(listener, tls, addr);
                tokio::spawn(async move {
                    axum::serve(listener, app)
                        .with_graceful_shutdown(signal)
                        .await
                })
            }
            None => tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(signal)
                    .await
            }),
        };
        tracing::info!(url = %base_url, spec = ?config.spec, "development scanner adapter listening");
        Ok(DevScannerHandle {
            base_url,
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

/// A running development adapter. Dropping it stops the server abruptly; prefer
/// [`DevScannerHandle::shutdown`].
pub struct DevScannerHandle {
    base_url: String,
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl DevScannerHandle {
    /// `http://127.0.0.1:PORT` or `https://...`: the URL a Scanner's `spec.url` would hold.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stats(&self) -> DevStats {
        self.shared.lock().stats.clone()
    }

    pub fn reset_stats(&self) {
        self.shared.lock().stats = DevStats::default();
    }

    /// Applies to scans already in flight too.
    pub fn set_pending_polls(&self, polls: u32) {
        self.shared.lock().pending_polls = polls;
    }

    pub fn set_refresh_after(&self, secs: u64) {
        self.shared.lock().refresh_after_secs = secs;
    }

    pub fn set_hang_for(&self, hang_for: Duration) {
        self.shared.lock().hang_for = hang_for;
    }

    pub fn set_oversize_bytes(&self, bytes: u64) {
        self.shared.lock().oversize_bytes = bytes;
    }

    pub fn inject_fault(&self, rule: FaultRule) -> Result<(), DevScannerError> {
        rule.validate()?;
        self.shared.lock().faults.push(rule);
        Ok(())
    }

    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// The last accepted scan request, registry authorization included (in-process only).
    pub fn last_scan_request(&self) -> Option<wire::ScanRequest> {
        self.shared.lock().last_scan_request.clone()
    }

    /// Stops accepting, lets requests in flight finish for up to two seconds, then aborts.
    pub async fn shutdown(mut self) {
        self.stop_now().await;
    }

    pub(crate) async fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take() {
            match tokio::time::timeout(Duration::from_secs(2), &mut task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "development scanner adapter failed"),
                Ok(Err(e)) => tracing::warn!(error = %e, "development scanner adapter task failed"),
                Err(_) => task.abort(),
            }
        }
    }

    /// Serves until the task ends (it only ends after [`DevScannerHandle::shutdown`] or on an
    /// I/O failure), for the command line.
    pub(crate) async fn wait(&mut self) -> Result<(), DevScannerError> {
        match self.task.as_mut() {
            Some(task) => match task.await {
                Ok(result) => result.map_err(DevScannerError::Serve),
                Err(e) => Err(DevScannerError::Serve(std::io::Error::other(e))),
            },
            None => Ok(()),
        }
    }
}

impl Drop for DevScannerHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
