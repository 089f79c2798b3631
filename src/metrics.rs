//! Prometheus metrics in the OpenMetrics text format, served at `/metrics`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok`, `stalled` (permanent error), `retry` (transient error) or `error` (an API write
    /// failed; the controller backs off).
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScannerLabels {
    pub scanner: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `inserted`, `updated` or `kept_existing`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `postgres` or `kubernetes`.
    pub source: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ResultLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub scans_submitted: Family<ScannerLabels, Counter>,
    pub scans_completed: Family<ScannerLabels, Counter>,
    pub scans_failed: Family<ScannerLabels, Counter>,
    pub scan_latency: HistogramFamily<ScannerLabels>,
    pub scans_in_flight: Family<ScannerLabels, Gauge>,
    pub scans_queued: Family<ScannerLabels, Gauge>,
    pub upserts: Family<OutcomeLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub leader: Gauge,
}

fn scan_latency_histogram() -> Histogram {
    // 0.1 s to about 2 hours.
    Histogram::new(exponential_buckets(0.1, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("scanreport");
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register(
            "reconciles",
            "ScanRequest reconciles by result",
            reconciles.clone(),
        );
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "reconcile_duration_seconds",
            "Time one ScanRequest reconcile took",
            reconcile_duration.clone(),
        );
        let scans_submitted = Family::<ScannerLabels, Counter>::default();
        registry.register(
            "scans_submitted",
            "Scans accepted by the adapter",
            scans_submitted.clone(),
        );
        let scans_completed = Family::<ScannerLabels, Counter>::default();
        registry.register(
            "scans_completed",
            "Scans whose report was stored",
            scans_completed.clone(),
        );
        let scans_failed = Family::<ScannerLabels, Counter>::default();
        registry.register(
            "scans_failed",
            "Scans the adapter rejected or failed permanently",
            scans_failed.clone(),
        );
        let scan_latency: HistogramFamily<ScannerLabels> =
            Family::new_with_constructor(scan_latency_histogram);
        registry.register(
            "scan_latency_seconds",
            "Time from a scan's submission to its stored report",
            scan_latency.clone(),
        );
        let scans_in_flight = Family::<ScannerLabels, Gauge>::default();
        registry.register(
            "scans_in_flight",
            "Scans claimed or submitted, across all replicas",
            scans_in_flight.clone(),
        );
        let scans_queued = Family::<ScannerLabels, Gauge>::default();
        registry.register(
            "scans_queued",
            "Scans waiting for a free slot of their scanner, across all replicas",
            scans_queued.clone(),
        );
        let upserts = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "report_upserts",
            "Report writes by outcome",
            upserts.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "api_errors",
            "Failed PostgreSQL and Kubernetes API calls",
            errors.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        // Every known label value starts at zero, so that rates and alerts work from the start.
        for result in ["ok", "stalled", "retry", "error"] {
            let _ = reconciles.get_or_create(&ResultLabels { result });
        }
        for outcome in ["inserted", "updated", "kept_existing"] {
            let _ = upserts.get_or_create(&OutcomeLabels { outcome });
        }
        for source in ["postgres", "kubernetes"] {
            let _ = errors.get_or_create(&ErrorLabels { source });
        }
        Self {
            registry,
            reconciles,
            reconcile_duration,
            scans_submitted,
            scans_completed,
            scans_failed,
            scan_latency,
            scans_in_flight,
            scans_queued,
            upserts,
            errors,
            leader,
        }
    }
}

impl Metrics {
    pub fn scanner(name: &str) -> ScannerLabels {
        ScannerLabels {
            scanner: name.to_owned(),
        }
    }

    /// Starts the per-scanner series of a newly seen scanner at zero.
    pub fn scanner_seen(&self, name: &str) {
        let labels = Self::scanner(name);
        let _ = self.scans_submitted.get_or_create(&labels);
        let _ = self.scans_completed.get_or_create(&labels);
        let _ = self.scans_failed.get_or_create(&labels);
        let _ = self.scan_latency.get_or_create(&labels);
    }

    pub fn reconciled(&self, result: &'static str, took: Duration) {
        self.reconciles
            .get_or_create(&ResultLabels { result })
            .inc();
        self.reconcile_duration.observe(took.as_secs_f64());
    }

    pub fn api_error(&self, source: &'static str) {
        self.errors.get_or_create(&ErrorLabels { source }).inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
