//! The operator at scale on the local control plane: N ScanRequests against an instant
//! development adapter, compared with floors measured on the same API server in the same run.
//!
//! `DATABASE_URL=... cargo bench --bench operator` (scripts/bench.sh starts PostgreSQL).
//! Env: `BENCH_REQUESTS` (default 1000), `BENCH_CONCURRENCY` (default 16, the operator's
//! default `--concurrency`, and the floors' number of concurrent clients), `BENCH_SHARED_PERCENT`
//! (default 0: every request its own digest) of the requests spread over `BENCH_SHARED_DIGESTS`
//! (default 100) digests, the rest distinct; `BENCH_PENDING_POLLS` (default 0: the report is
//! ready at once) polls answered "not ready, retry in 1 s" per scan, so that requests of one
//! digest wait on a scan in flight; `BENCH_DB_CONNECTIONS` (default: one per concurrent
//! reconcile) the operator's database connections; `BENCH_OPERATOR_BIN` runs another build of
//! the operator binary; `BENCH_OPERATOR_LOG` its log level (default warn); `BENCH_PAIRS` (default 0) more operator phases at the end, each on
//! requests and digests of its own and beside an honest floor of its own, the two in turns
//! (floor first in odd pairs): a ratio per pair, and their median. `scripts/bench.sh operator_10k` runs 10,000 with 70% sharing 100 digests;
//! `scripts/bench.sh operator_joined` 1,000 over 10 digests with a scan of two pending polls.
//!
//! Floors: the *honest* floor is the API writes a request cannot avoid, one status server-side
//! apply per request plus one Event per new report, by raw clients with the operator's
//! concurrency (Events in the background, as the operator publishes them). Each apply sends the
//! status the operator wrote to the request of the same index, so the floors run after the
//! operator; the same floor with a small fixed status (what it sent before) and the old floor
//! (that small status, no Events) are printed beside it. The *report-work* floor is the honest
//! floor plus, per new report, what storing it takes with the operator's own adapter client
//! and store but no controller (`POST /scan`, `GET` the report, one upsert): the operator's
//! time over it is what the controller adds. The honest floor runs once more at the end of the
//! run: the two measure the same writes, so their ratio is the machine's drift within a run,
//! against which every other ratio is to be read. Database statements are counted with `pg_stat_statements` when the
//! server preloads it (scripts/bench.sh does), otherwise as transactions of the benchmark's
//! database (`pg_stat_database`). CPU seconds per process come from `/proc/<pid>/stat`. Every
//! timed phase starts once the servers are idle (`quiesce`): creating the objects leaves the
//! API server collecting garbage for seconds, which the phase right after it would pay.

use std::collections::{BTreeMap, HashMap};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use devscanner::{DevScanner, DevScannerConfig};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use scanreport_operator::api::{ScanRequest, Scanner, ScannerSpec};
use scanreport_operator::identity::{Digest, MimeType, ReportKey, default_registration_uuid};
use scanreport_operator::scanner::wire::mime::OCI_IMAGE_MANIFEST;
use scanreport_operator::scanner::{
    AdapterClient, AdapterCredentials, AdapterMetadata, ClientOptions, ReportPoll, ScanSubmission,
};
use scanreport_operator::store::{Completes, NewReport, PoolConfig, Store};
use testkit::envtest;
use testkit::fixtures::ScanRequestBuilder;
use testkit::{cpu, pgtest};

mod heap {
    //! Live heap bytes of this process, to measure a watch cache's memory per object.
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub struct Counting;
    pub static LIVE: AtomicUsize = AtomicUsize::new(0);

    // SAFETY: forwards to the system allocator and only counts.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    pub fn live() -> usize {
        LIVE.load(Ordering::Relaxed)
    }
}

#[global_allocator]
static HEAP: heap::Counting = heap::Counting;

/// Heap bytes per object of a reflector cache of every ScanRequest in `api`, filled by a
/// watcher as the operator's is, with or without the operator's trim.
async fn cache_bytes_per_object(api: Api<ScanRequest>, trimmed: bool) -> f64 {
    use kube::runtime::{WatchStreamExt, reflector};
    let before = heap::live();
    let (store, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    let task = if trimmed {
        tokio::spawn(
            stream
                .modify(scanreport_operator::controller::watch::trim)
                .reflect(writer)
                .for_each(|_| async {}),
        )
    } else {
        tokio::spawn(stream.reflect(writer).for_each(|_| async {}))
    };
    store.wait_until_ready().await.expect("cache filled");
    // Let the list's pages be released.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let objects = store.state().len().max(1);
    let bytes = heap::live().saturating_sub(before);
    // Free this cache before the next measurement starts counting: the writer lives in the task.
    task.abort();
    let _ = task.await;
    drop(store);
    tokio::time::sleep(Duration::from_millis(500)).await;
    bytes as f64 / objects as f64
}

const VULN: &str = "application/vnd.security.vulnerability.report; version=1.1";

/// Which digest each request scans: of every 100 requests, the first `shared_percent` take one
/// of `shared_digests` digests in turn, the others a digest of their own. A mix of another
/// `salt` has none of its digests.
#[derive(Clone, Copy)]
struct Mix {
    shared_percent: usize,
    shared_digests: usize,
    salt: u64,
}

impl Mix {
    fn digest(&self, i: usize) -> String {
        if i % 100 < self.shared_percent {
            // The k-th shared request takes the shared digests in turn.
            let k = i / 100 * self.shared_percent + i % 100;
            format!(
                "sha256:{:016x}{:048x}",
                self.salt,
                0x5a4e_0000u64 + (k % self.shared_digests) as u64
            )
        } else {
            format!(
                "sha256:{:016x}{:048x}",
                self.salt,
                0xbe9c_0000_0000u64 + i as u64
            )
        }
    }

    /// The requests that are the first of their digest: one new report each.
    fn firsts(&self, n: usize) -> Vec<bool> {
        let mut seen = std::collections::HashSet::new();
        (0..n).map(|i| seen.insert(self.digest(i))).collect()
    }
}

fn request(i: usize, scanner: &str, mix: &Mix) -> ScanRequest {
    ScanRequestBuilder::new(&format!("bench-{i:05}"), scanner)
        .repository("bench/app")
        .digest(&mix.digest(i))
        .no_tag()
        .mime_types(&[VULN])
        .build()
}

/// Per object: status writes seen (resourceVersion changes after creation) and readiness.
#[derive(Default)]
struct Seen {
    writes: HashMap<String, (String, u32)>,
    ready: HashMap<String, bool>,
}

fn spawn_watch(api: Api<ScanRequest>, seen: Arc<Mutex<Seen>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default()).boxed();
        while let Ok(Some(event)) = events.try_next().await {
            let objects = match event {
                watcher::Event::Apply(o) | watcher::Event::InitApply(o) => vec![o],
                _ => continue,
            };
            let mut seen = seen.lock().unwrap();
            for sr in objects {
                let name = sr.name_any();
                let rv = sr.resource_version().unwrap_or_default();
                match seen.writes.get_mut(&name) {
                    Some((last, n)) if *last != rv => {
                        *last = rv;
                        *n += 1;
                    }
                    Some(_) => {}
                    None => {
                        seen.writes.insert(name.clone(), (rv, 0));
                    }
                }
                let ready = sr.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                });
                seen.ready.insert(name, ready);
            }
        }
    })
}

/// What the API server has served, by verb and resource, from its own metrics (summed over
/// codes and scopes): requests (`apiserver_request_total`) and the seconds spent answering
/// them (`apiserver_request_duration_seconds_sum`); and where its ScanRequest LISTs were served
/// from: etcd, or its watch cache.
#[derive(Default)]
struct ApiServed {
    requests: BTreeMap<String, f64>,
    seconds: BTreeMap<String, f64>,
    lists: BTreeMap<String, f64>,
}

/// Rows of the API table on ScanRequest LISTs: (row, metric, `storage` label). The API server
/// labels each list with where it served it from; "fetched" is what it went through to answer,
/// which for a page can be more than the page holds.
const LIST_SOURCES: [(&str, &str, &str); 4] = [
    (
        "LIST scanrequests, served from etcd",
        "apiserver_storage_list_total{",
        "etcd",
    ),
    (
        "LIST scanrequests, served from the watch cache",
        "apiserver_storage_list_total{",
        "watchcache",
    ),
    (
        "LIST scanrequests, objects fetched from etcd",
        "apiserver_storage_list_fetched_objects_total{",
        "etcd",
    ),
    (
        "LIST scanrequests, objects fetched from the watch cache",
        "apiserver_storage_list_fetched_objects_total{",
        "watchcache",
    ),
];

async fn api_requests(client: &kube::Client) -> ApiServed {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("a request");
    let text = client.request_text(request).await.unwrap_or_default();
    ApiServed {
        requests: api_metric(&text, "apiserver_request_total{"),
        seconds: api_metric(&text, "apiserver_request_duration_seconds_sum{"),
        lists: LIST_SOURCES
            .iter()
            .map(|(what, metric, storage)| {
                let sum = samples(&text, metric)
                    .filter(|(labels, _)| {
                        label(labels, "resource") == "scanrequests"
                            && label(labels, "storage") == *storage
                    })
                    .map(|(_, value)| value)
                    .sum();
                ((*what).to_owned(), sum)
            })
            .collect(),
    }
}

fn api_metric(text: &str, prefix: &str) -> BTreeMap<String, f64> {
    let mut counts = BTreeMap::new();
    for (labels, value) in samples(text, prefix) {
        let (verb, resource, sub) = (
            label(labels, "verb"),
            label(labels, "resource"),
            label(labels, "subresource"),
        );
        let key = if sub.is_empty() {
            format!("{verb} {resource}")
        } else {
            format!("{verb} {resource}/{sub}")
        };
        *counts.entry(key).or_insert(0.0) += value;
    }
    counts
}

/// The samples of one metric in Prometheus text: (labels, value), `prefix` being its name and
/// the opening brace.
fn samples<'t>(text: &'t str, prefix: &'t str) -> impl Iterator<Item = (&'t str, f64)> + 't {
    text.lines().filter_map(move |line| {
        let (labels, value) = line.strip_prefix(prefix)?.rsplit_once("} ")?;
        Some((labels, value.trim().parse::<f64>().unwrap_or(0.0)))
    })
}

/// One label's value in a sample's labels, or "" when it has none.
fn label<'l>(labels: &'l str, name: &str) -> &'l str {
    labels
        .split(',')
        .find_map(|l| l.strip_prefix(name)?.strip_prefix("=\""))
        .map_or("", |v| v.trim_end_matches('"'))
}

/// `after - before`, the entries that grew.
fn grown(before: &ApiServed, after: &ApiServed) -> ApiServed {
    ApiServed {
        requests: grown_entries(&before.requests, &after.requests),
        seconds: grown_entries(&before.seconds, &after.seconds),
        lists: grown_entries(&before.lists, &after.lists),
    }
}

fn grown_entries(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d > 0.0)
        .collect()
}

/// The operator's database connections: `BENCH_DB_CONNECTIONS`, else one per concurrent
/// reconcile.
fn db_connections(concurrency: usize) -> String {
    env_or("BENCH_DB_CONNECTIONS", concurrency).to_string()
}

struct Operator {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl Operator {
    fn start(
        kubeconfig: &std::path::Path,
        database_url: &str,
        ns: &str,
        concurrency: usize,
    ) -> Self {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port");
        // BENCH_OPERATOR_BIN: another build of the operator (e.g. an older commit), to compare;
        // SCANREPORT_OPERATOR_BIN: the release build scripts/bench.sh makes.
        let bin = std::env::var("BENCH_OPERATOR_BIN")
            .or_else(|_| std::env::var("SCANREPORT_OPERATOR_BIN"))
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_scanreport-operator").to_owned());
        let child = Command::new(bin)
            .args(["run", "--listen", &addr.to_string(), "--namespaces", ns])
            .args(["--concurrency", &concurrency.to_string()])
            .args(["--database-max-connections", &db_connections(concurrency)])
            .args([
                "--log-level",
                &std::env::var("BENCH_OPERATOR_LOG").unwrap_or_else(|_| "warn".into()),
            ])
            // The benchmark measures the controller, not a registry.
            .args(["--artifact-access", "trust"])
            .env("KUBECONFIG", kubeconfig)
            .env("DATABASE_URL", database_url)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the operator");
        Self { child, addr }
    }

    async fn get(&self, path: &str) -> Option<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = tokio::net::TcpStream::connect(self.addr).await.ok()?;
        conn.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut raw = String::new();
        conn.read_to_string(&mut raw).await.ok()?;
        raw.starts_with("HTTP/1.0 200")
            .then(|| raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()))
            .flatten()
    }

    async fn reconciles(&self) -> f64 {
        let body = self.get("/metrics").await.unwrap_or_default();
        body.lines()
            .find_map(|l| l.strip_prefix("scanreport_reconciles_total{result=\"ok\"} "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// Peak resident set size (VmHWM), in MiB.
    fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    }

    fn stop(mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// The operator's `n` requests of Scanner `scanner`, without a status, by `concurrency` clients.
async fn create_requests(
    api: &Api<ScanRequest>,
    n: usize,
    concurrency: usize,
    scanner: &str,
    mix: Mix,
) {
    stream::iter(0..n)
        .for_each_concurrent(concurrency, |i| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &request(i, scanner, &mix))
                    .await
                    .expect("create");
            }
        })
        .await;
}

/// The objects of the floors, created once.
async fn create_floor_objects(
    api: &Api<ScanRequest>,
    n: usize,
    concurrency: usize,
    mix: &Mix,
) -> Vec<k8s_openapi::api::core::v1::ObjectReference> {
    let created: Vec<_> = stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &request(i, "floor", mix))
                    .await
                    .expect("create")
            }
        })
        .buffered(concurrency)
        .collect()
        .await;
    created.iter().map(|sr| sr.object_ref(&())).collect()
}

/// The status a floor applies.
enum Statuses {
    /// The same small status for every object (one condition and a summary): what the floors
    /// sent before they copied the operator's statuses.
    Minimal,
    /// Per object, the status the operator wrote to the request of the same index.
    Operator(Vec<serde_json::Value>),
}

impl Statuses {
    fn patch(&self, i: usize) -> serde_json::Value {
        let status = match self {
            Self::Minimal => serde_json::json!({
                "observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True",
                "reason": "ReportsReady", "message": "Every requested report is stored",
                "lastTransitionTime": "2026-11-27T00:00:00Z", "observedGeneration": 1}],
                "summary": {"critical": 1, "high": 2, "medium": 3, "low": 4, "unknown": 0, "none": 0, "fixable": 5}
            }),
            Self::Operator(all) => all.get(i).cloned().unwrap_or_default(),
        };
        serde_json::json!({"apiVersion": "scanreport.io/v1alpha1", "kind": "ScanRequest", "status": status})
    }
}

/// A floor: one SSA status patch of each of the `n` objects (created for this floor, without a
/// status, as the operator finds its requests) by `concurrency` clients, as fast as
/// the API server takes them, and with `events` one Event of each object marked in it, created
/// in the background as the operator publishes its Events (the clock stops when all are in).
/// Watched by the same counting watch as the operator's run (so that the measurement's own load
/// is on both sides). `statuses` is what each object's apply sends: the same small status for
/// all, or per object the status the operator wrote to its twin. With `work`, each object
/// marked in `events` first has its report scanned, fetched and stored.
/// Returns the seconds it took.
async fn floor(
    client: &Client,
    ns: &str,
    refs: &[k8s_openapi::api::core::v1::ObjectReference],
    concurrency: usize,
    events: Option<&[bool]>,
    statuses: &Statuses,
    work: Option<&ReportWork>,
) -> f64 {
    let api: Api<ScanRequest> = Api::namespaced(client.clone(), ns);
    let event_api: Api<K8sEvent> = Api::namespaced(client.clone(), ns);
    let watch = spawn_watch(api.clone(), Arc::new(Mutex::new(Seen::default())));
    // Let the watch's initial list finish first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start = Instant::now();
    let background = Arc::new(Mutex::new(Vec::new()));
    stream::iter(refs.iter().enumerate())
        .for_each_concurrent(concurrency, |(i, reference)| {
            let (api, background) = (api.clone(), background.clone());
            let status = statuses.patch(i);
            let event_api = event_api.clone();
            async move {
                let new_report = events.is_some_and(|e| e.get(i).copied().unwrap_or(false));
                if let Some(work) = work.filter(|_| new_report) {
                    work.store_report(i).await;
                }
                if new_report {
                    // What the operator's Recorder creates for a stored report.
                    let event = K8sEvent {
                        metadata: ObjectMeta {
                            name: Some(format!("bench-{i:05}.floor")),
                            namespace: reference.namespace.clone(),
                            ..Default::default()
                        },
                        action: Some(format!("Scan {VULN}")),
                        reason: Some("ReportStored".into()),
                        note: Some(format!(
                            "Scanned and stored report 00000000-0000-0000-0000-{i:012} ({VULN}) of sha256:{:064x}",
                            i
                        )),
                        event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
                        regarding: Some(reference.clone()),
                        reporting_controller: Some("scanreport-operator".into()),
                        reporting_instance: Some("bench-floor".into()),
                        type_: Some("Normal".into()),
                        ..Default::default()
                    };
                    background.lock().unwrap().push(tokio::spawn(async move {
                        event_api
                            .create(&PostParams::default(), &event)
                            .await
                            .expect("create Event");
                    }));
                }
                api.patch_status(
                    &format!("bench-{i:05}"),
                    &PatchParams::apply("bench-floor").force(),
                    &Patch::Apply(&status),
                )
                .await
                .expect("status patch");
            }
        })
        .await;
    let pending: Vec<_> = std::mem::take(&mut *background.lock().unwrap());
    for task in pending {
        task.await.expect("Event task");
    }
    let took = start.elapsed().as_secs_f64();
    watch.abort();
    took
}

/// What storing one new report takes, done by the operator's own adapter client and store
/// without its controller: `POST /scan`, `GET` the report, and the report's upsert (one
/// statement, completing no job). The report-work floor adds it to the honest floor's writes,
/// so that the operator's time over that floor is what the controller itself costs.
struct ReportWork {
    client: AdapterClient,
    metadata: AdapterMetadata,
    store: Store,
    /// Reports of a scanner name of their own, so that each upsert inserts a new row, as the
    /// operator's did.
    registration_uuid: uuid::Uuid,
    mix: Mix,
}

impl ReportWork {
    async fn new(adapter_url: &str, database_url: &str, concurrency: usize, mix: Mix) -> Self {
        let client = AdapterClient::new(
            adapter_url,
            AdapterCredentials::None,
            None,
            ClientOptions::default(),
        )
        .expect("adapter client");
        let metadata = client.metadata().await.expect("adapter metadata");
        let store = Store::connect(
            database_url,
            &PoolConfig {
                max_connections: u32::try_from(concurrency).unwrap_or(16),
                ..PoolConfig::default()
            },
        )
        .await
        .expect("connect the report-work floor's store");
        Self {
            client,
            metadata,
            store,
            registration_uuid: default_registration_uuid("bench-report-work").expect("a uuid"),
            mix,
        }
    }

    /// The report of request `i`: scanned, fetched and stored.
    async fn store_report(&self, i: usize) {
        let spec = request(i, "bench-report-work", &self.mix).spec;
        let mime_type = MimeType::parse(VULN).expect("a MIME type");
        let digest = Digest::parse(&self.mix.digest(i)).expect("a digest");
        let submission = ScanSubmission {
            registry_url: spec.registry.url,
            registry_authorization: None,
            repository: spec.artifact.repository,
            digest: digest.clone(),
            tag: None,
            artifact_mime_type: OCI_IMAGE_MANIFEST.to_owned(),
            report_mime_type: mime_type.clone(),
        };
        let handle = self
            .client
            .submit_scan(&self.metadata, &submission)
            .await
            .expect("scan");
        let ReportPoll::Ready(report) = self.client.fetch_report(&handle).await.expect("report")
        else {
            panic!("the benchmark's adapter has every report at the first poll");
        };
        let scanner = report
            .scanner
            .unwrap_or_else(|| self.metadata.scanner.clone());
        let new = NewReport {
            key: ReportKey {
                digest,
                registration_uuid: self.registration_uuid,
                mime_type,
            },
            summary: report.summary.unwrap_or_default(),
            findings: report.findings,
            report: report.body,
            scanner_name: scanner.name,
            scanner_vendor: scanner.vendor,
            scanner_version: scanner.version,
            generated_at: report.generated_at.unwrap_or_else(chrono::Utc::now),
        };
        self.store
            .complete_with_report(new, Completes::Nothing)
            .await
            .expect("upsert");
    }
}

/// Statements the database ran, from `pg_stat_statements` (per statement text) or, without it,
/// the transactions of the database (`pg_stat_database`, flushed by idle backends within a
/// second or so).
struct Statements {
    pool: sqlx::PgPool,
    per_statement: bool,
}

/// Per statement text: calls, and milliseconds spent executing them (0 without
/// `pg_stat_statements`).
type Counts = HashMap<String, (i64, f64)>;

impl Statements {
    async fn connect(database_url: &str) -> Self {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(database_url)
            .await
            .expect("connect to the benchmark's database");
        let per_statement = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(&pool)
            .await
            .is_ok()
            && sqlx::query("SELECT 1 FROM pg_stat_statements LIMIT 1")
                .execute(&pool)
                .await
                .is_ok();
        Self {
            pool,
            per_statement,
        }
    }

    fn source(&self) -> &'static str {
        if self.per_statement {
            "pg_stat_statements (top-level statements)"
        } else {
            "pg_stat_database xact_commit + xact_rollback (transactions)"
        }
    }

    async fn snapshot(&self) -> Counts {
        if self.per_statement {
            let rows: Vec<(String, i64, f64)> = sqlx::query_as(
                "SELECT query, sum(calls)::bigint, sum(total_exec_time)::float8 FROM pg_stat_statements \
                 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                   AND query NOT LIKE '%pg_stat_%' GROUP BY query",
            )
            .fetch_all(&self.pool)
            .await
            .expect("read pg_stat_statements");
            rows.into_iter().map(|(q, n, ms)| (q, (n, ms))).collect()
        } else {
            // Let idle backends flush their counters.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let total: i64 = sqlx::query_scalar(
                "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database \
                 WHERE datname = current_database()",
            )
            .fetch_one(&self.pool)
            .await
            .expect("read pg_stat_database");
            // Includes this benchmark's one transaction per snapshot.
            HashMap::from([("(transactions)".to_owned(), (total, 0.0))])
        }
    }

    /// (statement, calls, milliseconds) run between two snapshots, most called first.
    fn delta(before: &Counts, after: &Counts) -> Vec<(String, i64, f64)> {
        let mut d: Vec<_> = after
            .iter()
            .map(|(q, (n, ms))| {
                let (n0, ms0) = before.get(q).copied().unwrap_or((0, 0.0));
                (q.clone(), n - n0, ms - ms0)
            })
            .filter(|(_, n, _)| *n > 0)
            .collect();
        d.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        d
    }
}

/// The start of a statement's text, on one line, for a table cell.
fn short(query: &str) -> String {
    let one: String = query.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut s: String = one.chars().take(90).collect();
    if one.chars().count() > 90 {
        s.push('…');
    }
    s.replace('|', "\\|")
}

/// CPU seconds of the operator, this benchmark (adapter, watch, clients), the API server, etcd
/// and PostgreSQL, sampled between the phases.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    operator: f64,
    bench: f64,
    apiserver: f64,
    etcd: f64,
    postgres: f64,
    /// Machine-wide steal time, not a process's: not in `total`.
    steal: f64,
}

impl Cpu {
    fn sample(operator: Option<u32>, postmaster: Option<u32>) -> Self {
        let me = std::process::id();
        let procs = cpu::processes();
        let child = |name: &str| {
            procs
                .iter()
                .filter(|(_, ppid, comm)| *ppid == me && comm == name)
                .map(|(pid, _, _)| cpu::seconds(*pid, false))
                .sum()
        };
        let postgres = postmaster.map_or(0.0, cpu::postgres);
        Self {
            operator: operator.map_or(0.0, |pid| cpu::seconds(pid, false)),
            bench: cpu::seconds(me, false),
            apiserver: child("kube-apiserver"),
            etcd: child("etcd"),
            postgres,
            steal: cpu::steal(),
        }
    }

    fn since(&self, before: &Cpu) -> Cpu {
        Cpu {
            operator: self.operator - before.operator,
            bench: self.bench - before.bench,
            apiserver: self.apiserver - before.apiserver,
            etcd: self.etcd - before.etcd,
            postgres: self.postgres - before.postgres,
            steal: self.steal - before.steal,
        }
    }

    fn total(&self) -> f64 {
        self.operator + self.bench + self.apiserver + self.etcd + self.postgres
    }
}

/// Waits until the API server, etcd and PostgreSQL are idle (under a tenth of a core over a
/// second; at most 60 s), so that no timed phase pays for background work a step before it
/// caused: the API server's garbage collection after thousands of creates and writes, etcd's
/// and PostgreSQL's background writes. Returns the wait and the CPU seconds spent in it.
async fn quiesce(postmaster: Option<u32>) -> (f64, f64) {
    let start = Instant::now();
    let first = Cpu::sample(None, postmaster);
    let mut last = first;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = Cpu::sample(None, postmaster);
        let d = now.since(&last);
        if d.apiserver + d.etcd + d.postgres < 0.1 || start.elapsed() > Duration::from_secs(60) {
            return (start.elapsed().as_secs_f64(), now.since(&first).total());
        }
        last = now;
    }
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let n = env_or("BENCH_REQUESTS", 1000);
    let concurrency = env_or("BENCH_CONCURRENCY", 16);
    let mix = Mix {
        shared_percent: env_or("BENCH_SHARED_PERCENT", 0).min(100),
        shared_digests: env_or("BENCH_SHARED_DIGESTS", 100).max(1),
        salt: 0,
    };
    let pairs = env_or("BENCH_PAIRS", 0);
    let firsts = mix.firsts(n);
    let tuples = firsts.iter().filter(|f| **f).count();
    let env = envtest::try_env().await.expect("local control plane");
    let client = env.client();
    let database_url = pgtest::fresh_database("bench_operator").await;
    let statements = Statements::connect(&database_url).await;
    let postmaster = cpu::postmaster_pid(&statements.pool).await;
    let adapter = DevScanner::start(DevScannerConfig {
        pending_polls: u32::try_from(env_or("BENCH_PENDING_POLLS", 0)).unwrap_or(0),
        refresh_after_secs: 1,
        ..Default::default()
    })
    .await
    .expect("development adapter");
    let scanner = "bench";
    let spec = ScannerSpec {
        url: adapter.base_url().to_owned(),
        registration_uuid: None,
        auth: None,
        ca_bundle: None,
        max_in_flight: Some(64),
        request_timeout: "10s".into(),
    };
    Api::<Scanner>::all(client.clone())
        .create(&PostParams::default(), &Scanner::new(scanner, spec))
        .await
        .expect("create Scanner");
    println!(
        "{n} ScanRequests ({}% over {} digests, the rest distinct: {tuples} reports), operator concurrency {concurrency}, Kubernetes {}",
        mix.shared_percent,
        mix.shared_digests,
        env.server_version()
    );
    println!("database statements counted by {}", statements.source());

    // Each floor applies to objects of its own, created without a status as the operator finds
    // its requests. They all exist from the start, so that the API server holds as many objects
    // in every phase; the floors run after the operator, which writes the statuses they copy.
    let mut floor_objects = Vec::new();
    for name in [
        "bench-floor",
        "bench-floor-work",
        "bench-floor-small",
        "bench-floor-old",
        "bench-floor-again",
    ] {
        let ns = envtest::fresh_namespace(&client, name).await;
        let api: Api<ScanRequest> = Api::namespaced(client.clone(), &ns);
        let refs = create_floor_objects(&api, n, concurrency, &mix).await;
        floor_objects.push((ns, refs));
    }
    // The pairs' objects too: per pair, the operator's requests (digests of their own) and
    // the floor's objects.
    let mut pair_objects = Vec::new();
    for pair in 1..=pairs {
        let ns = envtest::fresh_namespace(&client, "bench-pair").await;
        let api: Api<ScanRequest> = Api::namespaced(client.clone(), &ns);
        let mix = Mix {
            salt: pair as u64,
            ..mix
        };
        create_requests(&api, n, concurrency, scanner, mix).await;
        let floor_ns = envtest::fresh_namespace(&client, "bench-pair-floor").await;
        let floor_api: Api<ScanRequest> = Api::namespaced(client.clone(), &floor_ns);
        let refs = create_floor_objects(&floor_api, n, concurrency, &mix).await;
        pair_objects.push((api, floor_ns, refs));
    }

    let ns = envtest::fresh_namespace(&client, "bench").await;
    let api: Api<ScanRequest> = Api::namespaced(client.clone(), &ns);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let watch = spawn_watch(api.clone(), seen.clone());
    // All requests exist before the operator starts, so that creating them (client work on the
    // same API server) is not counted as operator time.
    let creating = Instant::now();
    create_requests(&api, n, concurrency, scanner, mix).await;
    let created = creating.elapsed();
    let mut settled = vec![("operator", quiesce(postmaster).await)];
    let db_before = statements.snapshot().await;
    let api_before = api_requests(&client).await;
    let cpu_start = Cpu::sample(None, postmaster);
    let start = Instant::now();
    let op = Operator::start(env.kubeconfig(), &database_url, &ns, concurrency);
    let progress = until_all_ready(&op, &seen, n, start).await;
    let (all_ready, started_up) = (progress.all, progress.readyz);
    let cpu_run = Cpu::sample(Some(op.child.id()), postmaster).since(&cpu_start);
    let api_run = grown(&api_before, &api_requests(&client).await);
    // Let late duplicate writes, if any, arrive before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let db_run = Statements::delta(&db_before, &statements.snapshot().await);
    let writes: u32 = seen.lock().unwrap().writes.values().map(|(_, w)| w).sum();
    let max_writes = seen
        .lock()
        .unwrap()
        .writes
        .values()
        .map(|(_, w)| *w)
        .max()
        .unwrap_or(0);
    let rss = op.peak_rss_mib();
    op.stop();

    // Restart: every request is reconciled again and none may be written.
    settled.push(("restart", quiesce(postmaster).await));
    let db_before = statements.snapshot().await;
    let cpu_start = Cpu::sample(None, postmaster);
    let restarted = Instant::now();
    let op = Operator::start(env.kubeconfig(), &database_url, &ns, concurrency);
    while op.reconciles().await < n as f64 {
        assert!(
            restarted.elapsed() < Duration::from_secs(600),
            "the restarted operator did not reconcile everything"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resync = restarted.elapsed();
    let cpu_resync = Cpu::sample(Some(op.child.id()), postmaster).since(&cpu_start);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let db_resync = Statements::delta(&db_before, &statements.snapshot().await);
    let after: u32 = seen.lock().unwrap().writes.values().map(|(_, w)| w).sum();
    let rss_restart = op.peak_rss_mib();
    op.stop();
    watch.abort();
    // Before the report-work floor scans too.
    let stats = adapter.stats();

    // The floors, on the same server: the status applies alone with a small status (the old
    // floor), with the Events (the honest floor as first defined), and the honest floor with
    // each object's status exactly as the operator wrote it to the request of the same index.
    let written: HashMap<String, serde_json::Value> = api
        .list(&Default::default())
        .await
        .expect("list the operator's requests")
        .items
        .into_iter()
        .map(|sr| {
            (
                sr.name_any(),
                serde_json::to_value(&sr.status).unwrap_or_default(),
            )
        })
        .collect();
    let copied = Statuses::Operator(
        (0..n)
            .map(|i| {
                written
                    .get(&format!("bench-{i:05}"))
                    .cloned()
                    .unwrap_or_default()
            })
            .collect(),
    );
    // In the order of `floor_objects`: the honest floor first, so that, had it run last, a
    // slower floor could not be blamed on the order; the report-work floor next to it.
    let work = ReportWork::new(adapter.base_url(), &database_url, concurrency, mix).await;
    let plans = [
        (Some(&firsts[..]), &copied, None),
        (Some(&firsts[..]), &copied, Some(&work)),
        (Some(&firsts[..]), &Statuses::Minimal, None),
        (None, &Statuses::Minimal, None),
        // The honest floor once more, last: how far one floor moves within a run.
        (Some(&firsts[..]), &copied, None),
    ];
    let mut measured = Vec::new();
    // The API requests of the honest floor (the first), printed beside the operator's.
    let mut honest_api = ApiServed::default();
    for ((ns, refs), (events, statuses, work)) in floor_objects.iter().zip(plans) {
        settled.push(("floor", quiesce(postmaster).await));
        let honest = measured.is_empty();
        let api_before = if honest {
            api_requests(&client).await
        } else {
            ApiServed::default()
        };
        let before = Cpu::sample(None, postmaster);
        let took = floor(&client, ns, refs, concurrency, events, statuses, work).await;
        measured.push((took, Cpu::sample(None, postmaster).since(&before)));
        if honest {
            honest_api = grown(&api_before, &api_requests(&client).await);
        }
    }
    work.store.close().await;
    let mut paired = Vec::new();
    for (pair, (api, floor_ns, refs)) in pair_objects.iter().enumerate() {
        let floor_first = pair.is_multiple_of(2);
        let mut op_phase = None;
        let mut floor_phase = None;
        for floor_turn in [floor_first, !floor_first] {
            if floor_turn {
                quiesce(postmaster).await;
                let before = Cpu::sample(None, postmaster);
                let took = floor(
                    &client,
                    floor_ns,
                    refs,
                    concurrency,
                    Some(&firsts[..]),
                    &copied,
                    None,
                )
                .await;
                floor_phase = Some((took, Cpu::sample(None, postmaster).since(&before)));
            } else {
                op_phase =
                    Some(operator_phase(env, api, &database_url, n, concurrency, postmaster).await);
            }
        }
        if let (Some((op, op_cpu)), Some((floor, floor_cpu))) = (op_phase, floor_phase) {
            paired.push(Pair {
                op,
                op_cpu,
                floor,
                floor_cpu,
                floor_first,
            });
        }
    }
    let [
        (honest_floor, honest_cpu),
        (work_floor, work_cpu),
        (minimal_floor, minimal_cpu),
        (status_floor, status_cpu),
        (again_floor, again_cpu),
    ] = <[_; 5]>::try_from(measured).expect("five floors");
    println!(
        "floors: {n} status applies in {status_floor:.1}s; plus {tuples} Events in {minimal_floor:.1}s; with the operator's statuses {honest_floor:.1}s; plus {tuples} reports scanned and stored {work_floor:.1}s"
    );
    // The watch's memory per object: all requests Ready, as the operator's cache holds them.
    let whole = cache_bytes_per_object(api.clone(), false).await;
    let trimmed = cache_bytes_per_object(api.clone(), true).await;
    let sample = api.list(&Default::default()).await.expect("list");
    let json = |sr: &ScanRequest| serde_json::to_vec(sr).map_or(0, |v| v.len()) as f64;
    let per = sample.items.len().max(1) as f64;
    let json_whole = sample.items.iter().map(json).sum::<f64>() / per;
    let json_trimmed = sample
        .items
        .iter()
        .map(|sr| {
            let mut sr = sr.clone();
            scanreport_operator::controller::watch::trim(&mut sr);
            json(&sr)
        })
        .sum::<f64>()
        / per;

    let t = all_ready.as_secs_f64();
    println!(
        "created in {:.1}s (before the operator started); all Ready {t:.1}s after the operator started",
        created.as_secs_f64(),
    );
    println!("\n| measure | value | target |");
    println!("|---|---:|---|");
    println!(
        "| ScanRequests (reports) | {n} ({tuples}; {}% share {} digests) | |",
        mix.shared_percent, mix.shared_digests
    );
    println!("| operator start to all Ready | {t:.1} s | |");
    println!(
        "| honest floor: {n} status applies (the operator's statuses) + {tuples} Events, {concurrency} clients | {honest_floor:.1} s | |"
    );
    println!(
        "| honest floor with a small status (one condition, a summary) | {minimal_floor:.1} s | |"
    );
    println!(
        "| old floor: {n} status applies, {concurrency} clients | {status_floor:.1} s ({:.0}/s) | |",
        n as f64 / status_floor
    );
    println!(
        "| time / honest floor | {:.2}× | ≤ 1.5× |",
        t / honest_floor
    );
    println!(
        "| the honest floor again, last in the run / first (the same writes: the machine's drift) | {again_floor:.1} s / {honest_floor:.1} s = {:.2}× | |",
        again_floor / honest_floor
    );
    println!(
        "| report-work floor: the honest floor + per new report POST /scan, GET report, upsert (the operator's client and store, no controller) | {work_floor:.1} s | |"
    );
    println!(
        "| report-work floor / honest floor | {:.2}× | |",
        work_floor / honest_floor
    );
    println!(
        "| time / report-work floor (what the controller adds) | {:.2}× | |",
        t / work_floor
    );
    println!(
        "| CPU-s of all processes / report-work floor's | {:.1} / {:.1} = {:.2}× | |",
        cpu_run.total(),
        work_cpu.total(),
        cpu_run.total() / work_cpu.total().max(f64::MIN_POSITIVE)
    );
    println!(
        "| time / honest floor with a small status | {:.2}× | |",
        t / minimal_floor
    );
    println!("| time / old floor | {:.2}× | |", t / status_floor);
    // Both phases saturate the cores, so the work itself, less noisy than the wall time
    // (which also moves with how fast the API server happens to be in each phase).
    println!(
        "| CPU-s of all processes / honest floor's | {:.1} / {:.1} = {:.2}× | |",
        cpu_run.total(),
        honest_cpu.total(),
        cpu_run.total() / honest_cpu.total().max(f64::MIN_POSITIVE)
    );
    if let Some(first) = progress.first_ready {
        println!(
            "| process start to the first Ready request | {:.2} s | |",
            first.as_secs_f64()
        );
    }
    if let Some(up) = started_up {
        println!(
            "| process start to /readyz (the request cache listed whole) | {:.2} s | |",
            up.as_secs_f64()
        );
        // Reconciles start with the list's first page, before /readyz: the start-up ends at
        // whichever comes first.
        let start_up = progress.first_ready.map_or(up, |first| first.min(up));
        println!(
            "| after start-up (to the first Ready or /readyz, the earlier), time / honest floor | {:.2}× | |",
            all_ready.saturating_sub(start_up).as_secs_f64() / honest_floor
        );
    }
    println!(
        "| status writes per request, creation to Ready | {:.2} (max {max_writes}) | ≤ 2 |",
        writes as f64 / n as f64
    );
    println!("| scans submitted | {} | {tuples} |", stats.scans_accepted);
    println!("| operator peak RSS | {rss:.0} MiB | ≤ 64 MiB |");
    println!("| status writes after a restart | {} | 0 |", after - writes);
    println!(
        "| restart to all reconciled again | {:.1} s | |",
        resync.as_secs_f64()
    );
    println!("| operator peak RSS after the restart | {rss_restart:.0} MiB | |");
    println!(
        "| watch cache heap per Ready object, whole / trimmed (as the operator caches) | {whole:.0} B / {trimmed:.0} B ({:.2}) | |",
        trimmed / whole.max(1.0)
    );
    println!(
        "| JSON size per Ready object, whole / trimmed | {json_whole:.0} B / {json_trimmed:.0} B | |"
    );
    let total = |d: &[(String, i64, f64)]| d.iter().map(|(_, c, _)| c).sum::<i64>();
    println!(
        "| database statements per request, creation to Ready | {:.2} ({} in all) | ≤ 3 per new report |",
        total(&db_run[..]) as f64 / n as f64,
        total(&db_run[..])
    );
    println!(
        "| database statements per request, restart | {:.2} ({} in all) | ≤ 1 |",
        total(&db_resync[..]) as f64 / n as f64,
        total(&db_resync[..])
    );

    for (phase, d) in [("creation to Ready", &db_run), ("restart", &db_resync)] {
        println!("\nDatabase statements, {phase}:\n");
        println!("| statement | calls | per request | execution, ms in all | ms per call |");
        println!("|---|---:|---:|---:|---:|");
        for (query, calls, ms) in d.iter().take(14) {
            println!(
                "| `{}` | {calls} | {:.3} | {ms:.0} | {:.3} |",
                short(query),
                *calls as f64 / n as f64,
                ms / (*calls).max(1) as f64
            );
        }
    }

    // Both phases include the metrics read that ends them and the benchmark's counting watch.
    println!(
        "\nAPI requests served (apiserver_request_total), the operator's phase and the honest floor's:\n"
    );
    println!(
        "| verb and resource | operator to all Ready | per request | honest floor | seconds answering, operator's phase (ms each) | seconds answering, honest floor (ms each) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let mut keys: Vec<&String> = api_run
        .requests
        .keys()
        .chain(honest_api.requests.keys())
        .collect();
    keys.sort();
    keys.dedup();
    // A watch's duration is how long it stayed open, not work.
    let answering = |served: &ApiServed, key: &String| {
        if key.starts_with("WATCH") {
            return String::new();
        }
        let secs = served.seconds.get(key).copied().unwrap_or(0.0);
        let count = served.requests.get(key).copied().unwrap_or(0.0).max(1.0);
        format!("{secs:.2} ({:.1})", secs * 1000.0 / count)
    };
    for key in keys {
        let ours = api_run.requests.get(key).copied().unwrap_or(0.0);
        println!(
            "| {key} | {ours:.0} | {:.3} | {:.0} | {} | {} |",
            ours / n as f64,
            honest_api.requests.get(key).copied().unwrap_or(0.0),
            answering(&api_run, key),
            answering(&honest_api, key)
        );
    }
    for (what, _, _) in LIST_SOURCES {
        let ours = api_run.lists.get(what).copied().unwrap_or(0.0);
        println!(
            "| {what} | {ours:.0} | {:.3} | {:.0} | | |",
            ours / n as f64,
            honest_api.lists.get(what).copied().unwrap_or(0.0),
        );
    }

    println!("\nCPU seconds per process (2 cores; /proc/<pid>/stat):\n");
    println!(
        "| phase | wall | operator | kube-apiserver | etcd | PostgreSQL | benchmark (adapter, watch, clients) | total / wall | steal (the machine's, not counted) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (phase, wall, c) in [
        ("old floor", status_floor, &status_cpu),
        ("honest floor, small status", minimal_floor, &minimal_cpu),
        (
            "honest floor, the operator's statuses",
            honest_floor,
            &honest_cpu,
        ),
        (
            "report-work floor (honest floor + scan, fetch, upsert)",
            work_floor,
            &work_cpu,
        ),
        ("honest floor again, last", again_floor, &again_cpu),
        ("operator to all Ready", t, &cpu_run),
        (
            "restart to all reconciled",
            resync.as_secs_f64(),
            &cpu_resync,
        ),
    ] {
        println!(
            "| {phase} | {wall:.1} s | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} |",
            c.operator,
            c.apiserver,
            c.etcd,
            c.postgres,
            c.bench,
            c.total() / wall,
            c.steal
        );
    }
    println!(
        "\nBefore each timed phase the benchmark waits until the API server, etcd and PostgreSQL are idle (< 0.1 core over 1 s):\n"
    );
    println!("| before | waited | CPU-s of background work in the wait |");
    println!("|---|---:|---:|");
    let floors = [
        "the honest floor",
        "the report-work floor",
        "the small-status floor",
        "the old floor",
        "the honest floor again",
    ];
    let mut floor_names = floors.iter();
    for (phase, (waited, cpu)) in &settled {
        let name = match *phase {
            "floor" => floor_names.next().copied().unwrap_or("a floor"),
            "operator" => "the operator's run",
            _ => "the restart",
        };
        println!("| {name} | {waited:.1} s | {cpu:.1} |");
    }
    if !paired.is_empty() {
        print_pairs(&paired, t / honest_floor);
    }
}

/// One more operator phase, on the requests of `api`'s namespace (none has a status, none of
/// their digests has a report): from the operator's start to all Ready, as the first one.
/// Returns its progress (in seconds) and every process's CPU.
async fn operator_phase(
    env: &envtest::TestEnv,
    api: &Api<ScanRequest>,
    database_url: &str,
    n: usize,
    concurrency: usize,
    postmaster: Option<u32>,
) -> (Progress, Cpu) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let watch = spawn_watch(api.clone(), seen.clone());
    while seen.lock().unwrap().ready.len() < n {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    quiesce(postmaster).await;
    let before = Cpu::sample(None, postmaster);
    let start = Instant::now();
    let ns = api.namespace().unwrap_or_default();
    let op = Operator::start(env.kubeconfig(), database_url, ns, concurrency);
    let progress = until_all_ready(&op, &seen, n, start).await;
    let cpu = Cpu::sample(Some(op.child.id()), postmaster).since(&before);
    op.stop();
    watch.abort();
    (progress, cpu)
}

/// Times from the operator's start: to all Ready, to its `/readyz`, to the first Ready.
struct Progress {
    all: Duration,
    readyz: Option<Duration>,
    first_ready: Option<Duration>,
}

impl Progress {
    fn secs(t: Option<Duration>) -> f64 {
        t.map_or(0.0, |t| t.as_secs_f64())
    }
}

/// Waits until the counting watch has seen all `n` requests Ready. Returns the times from
/// `start` (the operator's start).
async fn until_all_ready(op: &Operator, seen: &Mutex<Seen>, n: usize, start: Instant) -> Progress {
    let mut readyz = None;
    let mut first_ready = None;
    loop {
        if readyz.is_none() && op.get("/readyz").await.is_some() {
            readyz = Some(start.elapsed());
        }
        let ready = seen.lock().unwrap().ready.values().filter(|r| **r).count();
        if first_ready.is_none() && ready > 0 {
            first_ready = Some(start.elapsed());
        }
        if ready == n {
            return Progress {
                all: start.elapsed(),
                readyz,
                first_ready,
            };
        }
        assert!(
            start.elapsed() < Duration::from_secs(1800),
            "only {ready}/{n} Ready after 30 min"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One operator phase and the honest floor run right before or after it.
struct Pair {
    /// The operator's phase: its progress from its start, and its CPU.
    op: Progress,
    op_cpu: Cpu,
    floor: f64,
    floor_cpu: Cpu,
    floor_first: bool,
}

/// The pairs' table: each operator phase against the honest floor run right before or after
/// it, so that the machine's drift over the run moves both.
fn print_pairs(paired: &[Pair], first_ratio: f64) {
    println!(
        "\nPairs: the operator's phase and an honest floor of its own, one right after the other:\n"
    );
    println!(
        "| pair | order | operator to all Ready | honest floor | time / honest floor | to the first Ready | to `/readyz` | CPU-s, operator's phase (op / API / etcd / PG / bench) | CPU-s, floor (API / etcd / bench) | CPU-s / floor's |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---|---|---:|");
    let mut ratios: Vec<f64> = Vec::new();
    for (i, p) in paired.iter().enumerate() {
        let (op, fl, floor) = (&p.op_cpu, &p.floor_cpu, p.floor.max(f64::MIN_POSITIVE));
        let all = p.op.all.as_secs_f64();
        let ratio = all / floor;
        ratios.push(ratio);
        println!(
            "| {} | {} | {:.1} s | {:.1} s | **{ratio:.2}×** | {:.2} s | {:.2} s | {:.1} / {:.1} / {:.1} / {:.1} / {:.1} | {:.1} / {:.1} / {:.1} | {:.2}× |",
            i + 1,
            if p.floor_first {
                "floor, operator"
            } else {
                "operator, floor"
            },
            all,
            p.floor,
            Progress::secs(p.op.first_ready),
            Progress::secs(p.op.readyz),
            op.operator,
            op.apiserver,
            op.etcd,
            op.postgres,
            op.bench,
            fl.apiserver,
            fl.etcd,
            fl.bench,
            op.total() / fl.total().max(f64::MIN_POSITIVE)
        );
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let m = v.len() / 2;
        if !v.len().is_multiple_of(2) {
            v[m]
        } else {
            (v[m - 1] + v[m]) / 2.0
        }
    };
    let within = ratios.iter().filter(|r| **r <= 1.5).count();
    let pairs = ratios.len();
    let pairs_median = median(&mut ratios.clone());
    ratios.push(first_ratio);
    println!(
        "\n| time / honest floor, median of the {pairs} pairs | **{pairs_median:.2}×** ({within} of {pairs} at or under 1.5×) |"
    );
    println!(
        "| with the run's first operator phase ({first_ratio:.2}×) | {:.2}× |",
        median(&mut ratios)
    );
    let mut firsts: Vec<f64> = paired
        .iter()
        .map(|p| Progress::secs(p.op.first_ready))
        .collect();
    println!(
        "| operator's start to its first Ready request, median of the pairs | {:.2} s |",
        median(&mut firsts)
    );
}
