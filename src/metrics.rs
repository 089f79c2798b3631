//! Prometheus metrics in the OpenMetrics text format, served at `/metrics`. Callers use the
//! methods of [`Metrics`] with typed label values; the metric families stay private.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label values as typed enums, each with the exact text it is exported as.
macro_rules! label_value {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            pub const ALL: &[Self] = &[$(Self::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                EncodeLabelValue::encode(&self.as_str(), encoder)
            }
        }
    };
}

label_value! {
    /// How a reconcile went.
    ReconcileResult {
        Ok => "ok",
        /// A permanent error: the request is stalled.
        Stalled => "stalled",
        /// A transient error: retried with backoff.
        Retry => "retry",
        /// An API write failed; the controller backs off.
        Error => "error",
    }
}

label_value! {
    /// What an upsert did (see `store::UpsertOutcome`).
    Upsert {
        Inserted => "inserted",
        Updated => "updated",
        KeptExisting => "kept_existing",
    }
}

label_value! {
    /// The API a failed call went to.
    ApiSource {
        Postgres => "postgres",
        Kubernetes => "kubernetes",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: ReconcileResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScannerLabels {
    pub scanner: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub scanner: String,
    pub namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabels {
    pub table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: Upsert,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub source: ApiSource,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    reconcile_duration: Histogram,
    scans_submitted: Family<ScannerLabels, Counter>,
    scans_completed: Family<ScannerLabels, Counter>,
    scans_failed: Family<ScannerLabels, Counter>,
    scan_latency: HistogramFamily<ScannerLabels>,
    scans_in_flight: Family<ScannerLabels, Gauge>,
    scans_queued: Family<ScannerLabels, Gauge>,
    queue_depth: Family<QueueLabels, Gauge>,
    /// The namespaces of each scanner with a `queue_depth` series, so that a namespace whose
    /// queue emptied loses its series (the label set stays bounded by waiting namespaces).
    queue_namespaces: Mutex<HashMap<String, BTreeSet<String>>>,
    upserts: Family<OutcomeLabels, Counter>,
    swept_rows: Family<TableLabels, Counter>,
    sweep_duration: Histogram,
    table_bytes: Family<TableLabels, Gauge>,
    errors: Family<ErrorLabels, Counter>,
    leader: Gauge,
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
        let queue_depth = Family::<QueueLabels, Gauge>::default();
        registry.register(
            "scan_queue_depth",
            "Scans waiting for a free slot of their scanner per waiting namespace, across all replicas",
            queue_depth.clone(),
        );
        let upserts = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "report_upserts",
            "Report writes by outcome",
            upserts.clone(),
        );
        let swept_rows = Family::<TableLabels, Counter>::default();
        registry.register(
            "retention_deleted_rows",
            "Rows the retention sweep deleted, by table",
            swept_rows.clone(),
        );
        let sweep_duration = Histogram::new(exponential_buckets(0.001, 2.0, 18));
        registry.register(
            "retention_sweep_duration_seconds",
            "Time one retention sweep took",
            sweep_duration.clone(),
        );
        let table_bytes = Family::<TableLabels, Gauge>::default();
        registry.register(
            "table_bytes",
            "On-disk size of the operator's tables with indexes and TOAST, from the leader",
            table_bytes.clone(),
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
        for &result in ReconcileResult::ALL {
            let _ = reconciles.get_or_create(&ResultLabels { result });
        }
        for &outcome in Upsert::ALL {
            let _ = upserts.get_or_create(&OutcomeLabels { outcome });
        }
        for table in crate::store::retention::TABLES {
            let _ = swept_rows.get_or_create(&TableLabels {
                table: (*table).to_owned(),
            });
        }
        for &source in ApiSource::ALL {
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
            queue_depth,
            queue_namespaces: Mutex::default(),
            upserts,
            swept_rows,
            sweep_duration,
            table_bytes,
            errors,
            leader,
        }
    }
}

impl Metrics {
    fn scanner(name: &str) -> ScannerLabels {
        ScannerLabels {
            scanner: name.to_owned(),
        }
    }

    /// Starts the per-scanner series of a newly seen scanner at zero.
    fn scanner_seen(&self, name: &str) {
        let labels = Self::scanner(name);
        let _ = self.scans_submitted.get_or_create(&labels);
        let _ = self.scans_completed.get_or_create(&labels);
        let _ = self.scans_failed.get_or_create(&labels);
        let _ = self.scan_latency.get_or_create(&labels);
    }

    /// Times one reconcile; recorded when the timer is dropped, if it was given a result.
    pub fn reconcile_timer(&self) -> ReconcileTimer<'_> {
        ReconcileTimer {
            metrics: self,
            started: Instant::now(),
            result: None,
        }
    }

    fn reconciled(&self, result: ReconcileResult, took: Duration) {
        self.reconciles
            .get_or_create(&ResultLabels { result })
            .inc();
        self.reconcile_duration.observe(took.as_secs_f64());
    }

    pub fn api_error(&self, source: ApiSource) {
        self.errors.get_or_create(&ErrorLabels { source }).inc();
    }

    pub fn scan_submitted(&self, scanner: &str) {
        self.scans_submitted
            .get_or_create(&Self::scanner(scanner))
            .inc();
    }

    /// A scan completed, `took` after its submission.
    pub fn scan_completed(&self, scanner: &str, took: Duration) {
        let labels = Self::scanner(scanner);
        self.scans_completed.get_or_create(&labels).inc();
        self.scan_latency
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    pub fn scan_failed(&self, scanner: &str) {
        self.scans_failed
            .get_or_create(&Self::scanner(scanner))
            .inc();
    }

    pub fn upserted(&self, outcome: Upsert) {
        self.upserts.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Scans in flight and queued on one scanner, across replicas.
    pub fn scanner_load(&self, scanner: &str, in_flight: i64, queued: i64) {
        self.scanner_seen(scanner);
        let labels = Self::scanner(scanner);
        self.scans_in_flight.get_or_create(&labels).set(in_flight);
        self.scans_queued.get_or_create(&labels).set(queued);
    }

    /// Queued scans of one scanner per waiting namespace (see `Store::queue_depths`); the
    /// series of namespaces not listed are removed.
    pub fn queue_depths(&self, scanner: &str, depths: &[(String, i64)]) {
        let labels = |namespace: &str| QueueLabels {
            scanner: scanner.to_owned(),
            namespace: namespace.to_owned(),
        };
        let now: BTreeSet<String> = depths.iter().map(|(ns, _)| ns.clone()).collect();
        // A poisoned lock only means another thread panicked mid-update; the set is still usable.
        let mut known = self
            .queue_namespaces
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = known.entry(scanner.to_owned()).or_default();
        for gone in before.difference(&now) {
            self.queue_depth.remove(&labels(gone));
        }
        for (ns, depth) in depths {
            self.queue_depth.get_or_create(&labels(ns)).set(*depth);
        }
        *before = now;
    }

    /// One retention sweep: rows deleted per table and its duration.
    pub fn swept(&self, swept: &crate::store::Swept) {
        for (table, n) in [
            ("scan_report", swept.reports),
            ("scan_job", swept.jobs),
            ("scan_job_waiter", swept.waiters),
            ("scan_queue_turn", swept.turns),
        ] {
            self.swept_rows
                .get_or_create(&TableLabels {
                    table: table.to_owned(),
                })
                .inc_by(n);
        }
        self.sweep_duration.observe(swept.took.as_secs_f64());
    }

    /// On-disk table sizes in bytes (see `Store::table_bytes`).
    pub fn table_bytes(&self, sizes: &[(String, i64)]) {
        for (table, bytes) in sizes {
            self.table_bytes
                .get_or_create(&TableLabels {
                    table: table.clone(),
                })
                .set(*bytes);
        }
    }

    /// A deleted Scanner: its load and queue gauges go (its counters stay, as history).
    pub fn forget_scanner(&self, scanner: &str) {
        let labels = Self::scanner(scanner);
        self.scans_in_flight.remove(&labels);
        self.scans_queued.remove(&labels);
        self.queue_depths(scanner, &[]);
        self.queue_namespaces
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(scanner);
    }

    /// Whether this replica holds the leader lease.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Records one reconcile (count by result, duration) when dropped.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    started: Instant,
    result: Option<ReconcileResult>,
}

impl ReconcileTimer<'_> {
    pub fn set_result(&mut self, result: ReconcileResult) {
        self.result = Some(result);
    }
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        // A reconcile cancelled before it finished (shutdown) is not counted.
        if let Some(result) = self.result {
            self.metrics.reconciled(result, self.started.elapsed());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_timer_counts_once_with_its_result_and_a_cancelled_one_not_at_all() {
        let metrics = Metrics::default();
        {
            let mut timer = metrics.reconcile_timer();
            timer.set_result(ReconcileResult::Stalled);
        }
        {
            let _cancelled = metrics.reconcile_timer();
        }
        let text = metrics.encode();
        assert!(
            text.contains(r#"scanreport_reconciles_total{result="stalled"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("scanreport_reconcile_duration_seconds_count 1"),
            "{text}"
        );
    }

    #[test]
    fn label_values_are_exported_as_before() {
        let metrics = Metrics::default();
        metrics.upserted(Upsert::KeptExisting);
        metrics.api_error(ApiSource::Postgres);
        metrics.scan_completed("trivy", Duration::from_secs(3));
        metrics.scanner_load("trivy", 2, 5);
        metrics.set_leader(true);
        let text = metrics.encode();
        for expected in [
            r#"scanreport_report_upserts_total{outcome="kept_existing"} 1"#,
            r#"scanreport_api_errors_total{source="postgres"} 1"#,
            r#"scanreport_scans_completed_total{scanner="trivy"} 1"#,
            r#"scanreport_scans_in_flight{scanner="trivy"} 2"#,
            r#"scanreport_scans_queued{scanner="trivy"} 5"#,
            "scanreport_leader 1",
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
    }

    #[test]
    fn queue_depth_has_a_series_per_waiting_namespace_and_drops_emptied_ones() {
        let metrics = Metrics::default();
        metrics.queue_depths("trivy", &[("team-a".into(), 200), ("team-b".into(), 1)]);
        let text = metrics.encode();
        for expected in [
            r#"scanreport_scan_queue_depth{scanner="trivy",namespace="team-a"} 200"#,
            r#"scanreport_scan_queue_depth{scanner="trivy",namespace="team-b"} 1"#,
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
        metrics.queue_depths("trivy", &[("team-a".into(), 199)]);
        let text = metrics.encode();
        assert!(
            text.contains(r#"scanreport_scan_queue_depth{scanner="trivy",namespace="team-a"} 199"#),
            "{text}"
        );
        assert!(!text.contains(r#"namespace="team-b""#), "{text}");
        metrics.scanner_load("trivy", 1, 1);
        metrics.forget_scanner("trivy");
        let text = metrics.encode();
        assert!(!text.contains("scanreport_scan_queue_depth{"), "{text}");
        assert!(
            !text.contains(r#"scanreport_scans_queued{scanner="trivy"}"#),
            "{text}"
        );
        assert!(metrics.queue_namespaces.lock().unwrap().is_empty());
    }
}
