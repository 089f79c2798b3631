//! State every reconcile shares: the settings ([`Config`]), the clients ([`Context`]), the
//! per-object failure backoff and Event publishing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store as Cache};
use kube::{Client, Resource};
use rand::Rng;

use super::adapters::{Adapter, Adapters};
use super::events::{Event, Recorder};
use chrono::{DateTime, Utc};

use crate::api::{ScanPolicy, ScanRequest};
use crate::duration::{DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS};
use crate::metrics::Metrics;
use crate::redact::Redactor;
use crate::registry::content::{Content, ContentCache, ContentKey};
use crate::registry::{AccessOptions, ArtifactAccess, ProofCache, ProofKey};
use crate::scanner::summary::Finding;
use crate::store::Leases;
use crate::store::Store;

/// Field manager of every write; also the Events' reporting controller.
pub const MANAGER: &str = "scanreport-operator";

/// Settings of the controller: flags of `scanreport-operator run`, with their defaults here
/// and nowhere else.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Namespaces to watch, comma-separated; all namespaces when empty.
    #[arg(long, env = "WATCH_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// ScanRequests reconciled at once.
    #[arg(long, env = "CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Scans in flight per Scanner when its spec.maxInFlight is unset.
    #[arg(long, env = "DEFAULT_MAX_IN_FLIGHT", default_value_t = 4, value_parser = clap::value_parser!(i32).range(1..=1024))]
    pub default_max_in_flight: i32,
    /// How long adapter metadata is cached, e.g. 5m.
    #[arg(long, env = "METADATA_TTL", default_value = "5m", value_parser = crate::duration::flag_within::<{ SECOND_MS }, { 24 * HOUR_MS }>)]
    pub metadata_ttl: Duration,
    /// How long a scan may run before it is presumed lost and submitted again.
    #[arg(long, env = "SCAN_TIMEOUT", default_value = "30m", value_parser = crate::duration::flag_within::<{ MINUTE_MS }, { 24 * HOUR_MS }>)]
    pub scan_timeout: Duration,
    /// How often a queued ScanRequest checks for a free scan slot.
    /// The last one given wins (a wrapper's default can be overridden).
    #[arg(long, env = "QUEUE_POLL", default_value = "2s", value_parser = crate::duration::flag_within::<100, { 5 * MINUTE_MS }>, overrides_with = "queue_poll")]
    pub queue_poll: Duration,
    /// When a stalled ScanRequest is looked at again without any change.
    #[arg(long, env = "STALL_RECHECK", default_value = "5m", value_parser = crate::duration::flag_within::<{ 10 * SECOND_MS }, { 24 * HOUR_MS }>)]
    pub stall_recheck: Duration,
    /// Forced rescans (changes of spec.rescanToken) a namespace may start per hour, in bursts
    /// of a tenth of that (at least 1); beyond it a request waits with reason RescanRateLimited.
    #[arg(long, env = "RESCANS_PER_HOUR", default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rescans_per_hour: u32,
    /// How long a report that no ScanRequest references is kept, e.g. 30d or 36h; 0 keeps
    /// reports for ever. Values below a few minutes are for tests.
    #[arg(long, env = "REPORT_RETENTION", default_value = "30d", value_parser = crate::duration::retention_flag::<{ SECOND_MS }>)]
    pub report_retention: Duration,
    /// How long a finished (done or failed) scan job row is kept after its last change.
    #[arg(long, env = "JOB_RETENTION", default_value = "24h", value_parser = crate::duration::flag_within::<{ SECOND_MS }, { 30 * DAY_MS }>)]
    pub job_retention: Duration,
    /// Report downloads (adapter fetches of ready reports) at once, across all ScanRequests:
    /// with --max-report-size it bounds the memory reports take.
    #[arg(long, env = "MAX_CONCURRENT_DOWNLOADS", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub max_concurrent_downloads: u16,
    /// Largest report accepted from an adapter, in bytes; a larger one fails the scan with
    /// reason ResponseTooLarge.
    #[arg(long, env = "MAX_REPORT_SIZE", default_value_t = 64 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..=1024 * 1024 * 1024))]
    pub max_report_size: u64,
    /// Whether a request must prove access to its artifact at its own registry, with its own
    /// credentials, before it may see a stored report, join a scan or start one: `verify`
    /// (multi-tenant clusters) or `trust` (single-tenant clusters whose operator cannot reach
    /// the registries; any namespace naming a digest then reads its report).
    /// The last one given wins, so that a wrapper's default can be overridden.
    #[arg(
        long,
        env = "ARTIFACT_ACCESS",
        value_enum,
        default_value = "verify",
        overrides_with = "artifact_access"
    )]
    pub artifact_access: ArtifactAccess,
    /// Most platforms of an image index one request scans; an index with more to scan stalls
    /// the request (reason TooManyPlatforms) until spec.platforms chooses fewer.
    #[arg(long, env = "MAX_PLATFORMS", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub max_platforms: u16,
    /// Largest image index read, in bytes; a larger one stalls the request (reason
    /// ManifestTooLarge).
    #[arg(long, env = "MAX_INDEX_SIZE", default_value_t = 256 * 1024, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(512..=4 * 1024 * 1024))]
    pub max_index_size: usize,
    /// How long a successful proof of access is reused, e.g. 5m.
    #[arg(long, env = "ACCESS_PROOF_TTL", default_value = "5m", value_parser = crate::duration::flag_within::<{ SECOND_MS }, { 24 * HOUR_MS }>)]
    pub access_proof_ttl: Duration,
    /// The namespace of the Secrets that Scanners' `spec.auth.secretRef` names (Scanners are
    /// cluster-scoped; no other namespace is read for them). Defaults to the operator's own.
    #[arg(long, env = "POD_NAMESPACE", default_value = "scanreport-system")]
    pub cluster_resource_namespace: String,
    /// Unique per process: holder of scan claims. `run` derives it from `--instance`.
    #[arg(skip = format!("scanreport-operator-{:016x}", rand::random::<u64>()))]
    pub instance: String,
}

/// State shared by all reconciles.
pub struct Context {
    pub client: Client,
    pub store: Store,
    pub adapters: Adapters,
    /// ScanPolicies, from the watch cache `run` fills.
    pub policies: Policies,
    /// Stored findings already read, per report version.
    pub findings: FindingsCache,
    /// Events, with the series of repeats (bounded, dropped with their request).
    pub recorder: Arc<Recorder>,
    pub config: Config,
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per object.
    pub backoff: Backoff,
    /// Forced rescans per namespace (`--rescans-per-hour`).
    pub rescans: super::limits::RescanLimiter,
    /// Permits for report downloads (`--max-concurrent-downloads`).
    pub downloads: tokio::sync::Semaphore,
    /// Successful proofs of access, bounded in number and time.
    proofs: Mutex<ProofCache>,
    /// What digests' content is (media type, an index's chosen children).
    contents: Mutex<ContentCache>,
    pub access_options: AccessOptions,
    /// The redactor of the request that submitted each scan in flight (by report id), so that
    /// whoever polls it scrubs the submitter's credentials from what the adapter echoes too.
    /// Only this process's submissions are known; other text of a shared scan stays generic.
    submitters: Mutex<HashMap<uuid::Uuid, Redactor>>,
    /// Requests waiting on a scan another request runs, woken when it ends.
    pub wakeups: super::wakeups::Wakeups,
    /// What was last announced per request (verdicts, tags), so a change is announced once.
    pub announced: super::announced::Announced,
}

/// Proofs of access kept at once; beyond it the oldest are proven again when next needed.
const PROOF_CAPACITY: usize = 10_000;

/// Digests whose content is remembered at once (each at most --max-platforms children).
const CONTENT_CAPACITY: usize = 4096;

/// Submitters remembered at once; scans lost in a crash would otherwise pile up.
const SUBMITTER_CAPACITY: usize = 10_000;

impl Context {
    pub fn new(client: Client, store: Store, config: Config, metrics: Arc<Metrics>) -> Self {
        Self {
            recorder: Arc::new(Recorder::new(client.clone(), MANAGER, &config.instance)),
            adapters: Adapters::new(
                client.clone(),
                config.metadata_ttl,
                config.default_max_in_flight,
                config.max_report_size,
                config.cluster_resource_namespace.clone(),
            ),
            policies: Policies::default(),
            findings: FindingsCache::default(),
            downloads: tokio::sync::Semaphore::new(usize::from(config.max_concurrent_downloads)),
            proofs: Mutex::new(ProofCache::new(PROOF_CAPACITY, config.access_proof_ttl)),
            contents: Mutex::new(ContentCache::new(CONTENT_CAPACITY)),
            rescans: super::limits::RescanLimiter::new(config.rescans_per_hour),
            access_options: AccessOptions::default(),
            submitters: Mutex::default(),
            wakeups: super::wakeups::Wakeups::default(),
            announced: super::announced::Announced::default(),
            client,
            store,
            config,
            metrics,
            backoff: Backoff::default(),
        }
    }

    /// Whether `key` was proven recently enough.
    pub(super) fn proven(&self, key: &ProofKey, now: std::time::Instant) -> bool {
        self.proofs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_proven(key, now)
    }

    pub(super) fn record_proof(&self, key: ProofKey, now: std::time::Instant) {
        self.proofs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, now);
    }

    /// What the content of a digest is, if known.
    pub(super) fn content(&self, key: &ContentKey) -> Option<Arc<Content>> {
        self.contents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
    }

    pub(super) fn remember_content(&self, key: ContentKey, content: Arc<Content>) {
        self.contents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, content);
    }

    /// Remembers who submitted the scan of `report`.
    pub(super) fn record_submitter(&self, report: uuid::Uuid, redactor: Redactor) {
        let mut submitters = self.submitters.lock().unwrap_or_else(|e| e.into_inner());
        if submitters.len() >= SUBMITTER_CAPACITY {
            submitters.clear();
        }
        submitters.insert(report, redactor);
    }

    /// `own`, plus the submitter's secrets when this process submitted the scan of `report`.
    pub(super) fn scan_redactor(&self, report: uuid::Uuid, own: &Redactor) -> Redactor {
        let submitters = self.submitters.lock().unwrap_or_else(|e| e.into_inner());
        match submitters.get(&report) {
            Some(submitter) => own.and(submitter),
            None => own.clone(),
        }
    }

    /// The scan of `report` is over.
    pub(super) fn forget_submitter(&self, report: uuid::Uuid) {
        self.submitters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&report);
    }

    /// ScanRequest `object` was deleted: drop what is kept for it.
    pub fn forget_request(&self, object: &ObjectRef<ScanRequest>) {
        self.backoff.forget(object);
        self.recorder.forget(object);
        self.wakeups.forget(object);
        self.announced.forget(object);
    }

    /// `--report-retention`, `None` when reports are kept for ever.
    pub fn report_retention(&self) -> Option<Duration> {
        Some(self.config.report_retention).filter(|r| !r.is_zero())
    }

    /// How often the leader records references and sweeps: a quarter of the shortest
    /// retention, between 1s and 10m, so that a referenced report is refreshed several times
    /// before it could age out.
    pub fn sweep_interval(&self) -> Duration {
        let shortest = self
            .report_retention()
            .map_or(self.config.job_retention, |r| {
                r.min(self.config.job_retention)
            });
        (shortest / 4).clamp(Duration::from_secs(1), Duration::from_secs(600))
    }

    /// A report read or referenced is refreshed when its last reference is older than this:
    /// a quarter of the retention, at most 1h (few writes), always well inside the retention.
    pub fn touch_after(&self) -> Option<Duration> {
        self.report_retention()
            .map(|r| (r / 4).min(Duration::from_secs(3600)))
    }

    pub(super) fn leases(&self, adapter: &Adapter) -> Leases {
        Leases {
            // Long enough for one POST /scan, the wait for a download slot and the first GET
            // of its report, each bounded by the request timeout (the submission is recorded
            // after that GET), then others may take over.
            // Saturating: flags and specs are bounded, but no value may overflow here.
            claim: adapter
                .request_timeout
                .saturating_mul(3)
                .saturating_add(Duration::from_secs(1)),
            scan: self.config.scan_timeout,
            queue: self
                .config
                .queue_poll
                .saturating_mul(10)
                .saturating_add(Duration::from_secs(30)),
        }
    }

    /// Publishes an Event in the background, as client-go's recorder does: a slow or failing
    /// Events API never holds up a reconcile.
    ///
    /// The recorder merges Events of one object by reason and action into a series, keeping
    /// the first note; `action` therefore names what the Event is about (e.g. the report MIME
    /// type), so that the Events of two reports of one request stay apart.
    pub(super) fn event(
        &self,
        sr: &ScanRequest,
        type_: EventType,
        reason: &str,
        about: &str,
        note: String,
    ) {
        let mut action = format!("Scan {about}");
        action.truncate(128);
        let event = Event {
            type_,
            reason: reason.into(),
            note,
            action,
        };
        let (recorder, reference) = (self.recorder.clone(), sr.object_ref(&()));
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                metrics.api_error(crate::metrics::ApiSource::Kubernetes);
                tracing::warn!(error = %e, reason = %event.reason, "cannot publish event");
            }
        });
    }
}

/// The ScanPolicy watch cache, once `run` has registered it.
#[derive(Default)]
pub struct Policies {
    cache: Mutex<Option<Cache<ScanPolicy>>>,
}

impl Policies {
    /// The first cache registered is used.
    pub fn add_store(&self, cache: Cache<ScanPolicy>) {
        self.lock().get_or_insert(cache);
    }

    /// ScanPolicy `name`, if it exists.
    pub fn get(&self, name: &str) -> Option<Arc<ScanPolicy>> {
        self.lock().as_ref()?.get(&ObjectRef::new(name))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Cache<ScanPolicy>>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Most findings [`FindingsCache`] holds (about 100 bytes each); beyond it, it starts over.
const FINDINGS_CAPACITY: usize = 500_000;

/// The stored findings of reports, decoded, per report id and row version (`updated_at`): a
/// reconcile evaluates its policy without reading them again until the report changes.
#[derive(Default)]
pub struct FindingsCache {
    inner: Mutex<FindingsEntries>,
}

#[derive(Default)]
struct FindingsEntries {
    by_report: HashMap<uuid::Uuid, (DateTime<Utc>, Arc<Vec<Finding>>)>,
    held: usize,
}

impl FindingsCache {
    /// The findings of `report` as stored at `updated_at`, if read before.
    pub fn get(&self, report: uuid::Uuid, updated_at: DateTime<Utc>) -> Option<Arc<Vec<Finding>>> {
        let inner = self.lock();
        let (at, findings) = inner.by_report.get(&report)?;
        (*at == updated_at).then(|| findings.clone())
    }

    pub fn insert(
        &self,
        report: uuid::Uuid,
        updated_at: DateTime<Utc>,
        findings: Arc<Vec<Finding>>,
    ) {
        if findings.len() > FINDINGS_CAPACITY {
            return;
        }
        let mut inner = self.lock();
        if let Some((_, old)) = inner.by_report.remove(&report) {
            inner.held = inner.held.saturating_sub(cost(&old));
        }
        if inner.held.saturating_add(cost(&findings)) > FINDINGS_CAPACITY {
            inner.by_report.clear();
            inner.by_report.shrink_to_fit();
            inner.held = 0;
        }
        inner.held = inner.held.saturating_add(cost(&findings));
        inner.by_report.insert(report, (updated_at, findings));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FindingsEntries> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What an entry counts against [`FINDINGS_CAPACITY`]: its findings, and at least one, so that
/// the reports of clean images (no findings) are bounded in number too.
fn cost(findings: &[Finding]) -> usize {
    findings.len().max(1)
}

/// Exponential backoff per ScanRequest, as long as it keeps failing.
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<ObjectRef<ScanRequest>, u32>>,
}

impl Backoff {
    /// One more failure of `object`: how long to wait before trying again. 1 s, 2 s, 4 s … up
    /// to 256 s, times 0.5–1.0 so that objects failing together spread out.
    pub fn failed(&self, object: ObjectRef<ScanRequest>) -> Duration {
        let mut failures = self.lock();
        let n = failures.entry(object).or_insert(0);
        *n = n.saturating_add(1);
        backoff_base(*n).mul_f64(rand::rng().random_range(0.5..=1.0))
    }

    /// `object` reconciled, or is gone: its next failure starts again at 1 s, and a deleted
    /// object leaves nothing behind.
    pub fn forget(&self, object: &ObjectRef<ScanRequest>) {
        self.lock().remove(object);
    }

    /// Keeps only the entries of objects `live` says still exist: a request deleted while the
    /// watch was down (a re-list reports no deletion) would otherwise keep its counter.
    pub fn retain(&self, live: impl Fn(&ObjectRef<ScanRequest>) -> bool) {
        self.lock().retain(|object, _| live(object));
    }

    /// Objects with failures on record.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<ScanRequest>, u32>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The backoff before jitter after `failures` consecutive failures: 1 s doubling up to 256 s
/// (the 5-minute cap is never reached).
fn backoff_base(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(8);
    Duration::from_secs(1 << exponent).min(Duration::from_secs(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_per_object_and_forgetting_an_object_drops_its_entry() {
        let backoff = Backoff::default();
        let a = ObjectRef::<ScanRequest>::new("a").within("ns");
        let b = ObjectRef::<ScanRequest>::new("b").within("ns");
        for _ in 0..6 {
            backoff.failed(a.clone());
        }
        let first_of_b = backoff.failed(b.clone());
        assert!(first_of_b <= Duration::from_secs(1), "{first_of_b:?}");
        let seventh_of_a = backoff.failed(a.clone());
        assert!(seventh_of_a >= Duration::from_secs(32), "{seventh_of_a:?}");
        assert_eq!(backoff.len(), 2);
        backoff.forget(&a);
        assert_eq!(backoff.len(), 1, "a deleted object leaves nothing behind");
        assert!(backoff.failed(a.clone()) <= Duration::from_secs(1));
        backoff.forget(&a);
        backoff.forget(&b);
        assert!(backoff.is_empty());
    }

    #[test]
    fn cached_findings_are_those_of_the_same_report_version_and_bounded() {
        let cache = FindingsCache::default();
        let report = uuid::Uuid::from_u128(1);
        let t1 = DateTime::from_timestamp(1, 0).unwrap();
        let t2 = DateTime::from_timestamp(2, 0).unwrap();
        let one = Finding {
            id: "CVE-1".into(),
            package: "p".into(),
            version: "1".into(),
            severity: crate::scanner::summary::Bucket::High,
            fix_version: None,
        };
        cache.insert(report, t1, Arc::new(vec![one.clone()]));
        assert!(cache.get(report, t1).is_some());
        assert!(cache.get(report, t2).is_none(), "a newer row is read again");
        let many = Arc::new(vec![one; FINDINGS_CAPACITY]);
        cache.insert(uuid::Uuid::from_u128(2), t1, many);
        assert!(
            cache.get(report, t1).is_none(),
            "over the bound, it starts over"
        );
        assert_eq!(cache.lock().held, FINDINGS_CAPACITY);
    }

    #[test]
    fn cached_reports_without_findings_are_bounded_in_number() {
        let cache = FindingsCache::default();
        let t = DateTime::from_timestamp(1, 0).unwrap();
        for i in 0..=FINDINGS_CAPACITY as u128 {
            cache.insert(uuid::Uuid::from_u128(i), t, Arc::new(Vec::new()));
        }
        let entries = cache.lock().by_report.len();
        assert!(entries <= FINDINGS_CAPACITY, "{entries} entries");
    }

    #[test]
    fn backoff_entries_of_objects_that_no_longer_exist_are_dropped() {
        let backoff = Backoff::default();
        let objects: Vec<_> = (0..1000)
            .map(|i| ObjectRef::<ScanRequest>::new(&format!("sr-{i}")).within("ns"))
            .collect();
        for o in &objects {
            backoff.failed(o.clone());
        }
        let live = objects[0].clone();
        backoff.retain(|o| *o == live);
        assert_eq!(backoff.len(), 1);
        assert!(
            backoff.failed(live) > Duration::from_millis(900),
            "kept its count"
        );
    }

    #[test]
    fn backoff_doubles_from_one_second_up_to_256_seconds() {
        let secs: Vec<u64> = (1..=11).map(|n| backoff_base(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 256, 256]);
        assert_eq!(backoff_base(u32::MAX), Duration::from_secs(256));
    }
}
