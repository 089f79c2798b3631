//! The operator at scale on the local control plane: N ScanRequests (distinct digests) against
//! an instant development adapter, compared with the raw status-PATCH rate of the same API
//! server in the same run.
//!
//! `DATABASE_URL=... cargo bench --bench operator` (scripts/bench.sh starts PostgreSQL).
//! Env: `BENCH_REQUESTS` (default 1000), `BENCH_CONCURRENCY` (default 16, the operator's
//! default `--concurrency`, and the floor's number of concurrent clients).

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use devscanner::{DevScanner, DevScannerConfig};
use futures::{StreamExt, TryStreamExt, stream};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use scanreport_operator::api::{ScanRequest, Scanner, ScannerSpec};
use testkit::envtest;
use testkit::fixtures::ScanRequestBuilder;
use testkit::pgtest;

const VULN: &str = "application/vnd.security.vulnerability.report; version=1.1";

fn request(i: usize, scanner: &str) -> ScanRequest {
    ScanRequestBuilder::new(&format!("bench-{i:05}"), scanner)
        .repository("bench/app")
        .digest(&format!("sha256:{:064x}", 0xbe9c_0000_0000u64 + i as u64))
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
        let child = Command::new(env!("CARGO_BIN_EXE_scanreport-operator"))
            .args(["run", "--listen", &addr.to_string(), "--namespaces", ns])
            .args(["--concurrency", &concurrency.to_string()])
            .args(["--database-max-connections", &concurrency.to_string()])
            .args(["--log-level", "warn"])
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

/// The floor: SSA status patches of `n` objects by `concurrency` clients, as fast as the API
/// server takes them, watched by the same counting watch as the operator's run (so that the
/// measurement's own load is on both sides).
async fn status_patch_rate(client: &Client, ns: &str, n: usize, concurrency: usize) -> f64 {
    let api: Api<ScanRequest> = Api::namespaced(client.clone(), ns);
    stream::iter(0..n)
        .for_each_concurrent(concurrency, |i| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &request(i, "floor"))
                    .await
                    .expect("create");
            }
        })
        .await;
    let status = serde_json::json!({
        "apiVersion": "scanreport.io/v1alpha1", "kind": "ScanRequest",
        "status": {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True",
            "reason": "ReportsReady", "message": "Every requested report is stored",
            "lastTransitionTime": "2026-11-27T00:00:00Z", "observedGeneration": 1}],
            "summary": {"critical": 1, "high": 2, "medium": 3, "low": 4, "unknown": 0, "none": 0, "fixable": 5}}
    });
    let watch = spawn_watch(api.clone(), Arc::new(Mutex::new(Seen::default())));
    // Let the watch's initial list finish first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start = Instant::now();
    stream::iter(0..n)
        .for_each_concurrent(concurrency, |i| {
            let (api, status) = (api.clone(), status.clone());
            async move {
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
    let rate = n as f64 / start.elapsed().as_secs_f64();
    watch.abort();
    rate
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let concurrency: usize = std::env::var("BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let env = envtest::try_env().await.expect("local control plane");
    let client = env.client();
    let database_url = pgtest::fresh_database("bench_operator").await;
    let adapter = DevScanner::start(DevScannerConfig {
        pending_polls: 0,
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
        "{n} ScanRequests, operator concurrency {concurrency}, Kubernetes {}",
        env.server_version()
    );

    let floor_ns = envtest::fresh_namespace(&client, "bench-floor").await;
    let floor = status_patch_rate(&client, &floor_ns, n, concurrency).await;
    println!("floor: {floor:.0} status patches/s with {concurrency} clients");

    let ns = envtest::fresh_namespace(&client, "bench").await;
    let api: Api<ScanRequest> = Api::namespaced(client.clone(), &ns);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let watch = spawn_watch(api.clone(), seen.clone());
    // All requests exist before the operator starts, so that creating them (client work on the
    // same API server) is not counted as operator time.
    let creating = Instant::now();
    stream::iter(0..n)
        .for_each_concurrent(concurrency, |i| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &request(i, scanner))
                    .await
                    .expect("create");
            }
        })
        .await;
    let created = creating.elapsed();
    let start = Instant::now();
    let op = Operator::start(env.kubeconfig(), &database_url, &ns, concurrency);
    let mut started_up = None;
    loop {
        if started_up.is_none() && op.get("/readyz").await.is_some() {
            started_up = Some(start.elapsed());
        }
        let ready = seen.lock().unwrap().ready.values().filter(|r| **r).count();
        if ready == n {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1800),
            "only {ready}/{n} Ready after 30 min"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all_ready = start.elapsed();
    // Let late duplicate writes, if any, arrive before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
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
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after: u32 = seen.lock().unwrap().writes.values().map(|(_, w)| w).sum();
    op.stop();
    watch.abort();

    let floor_time = n as f64 / floor;
    let ratio = all_ready.as_secs_f64() / floor_time;
    let stats = adapter.stats();
    println!(
        "created in {:.1}s (before the operator started); all Ready {:.1}s after the operator started",
        created.as_secs_f64(),
        all_ready.as_secs_f64()
    );
    println!("\n| measure | value | target |");
    println!("|---|---:|---|");
    println!("| ScanRequests | {n} | |");
    println!(
        "| operator start to all Ready | {:.1} s | |",
        all_ready.as_secs_f64()
    );
    println!(
        "| floor: {n} raw status PATCHes, {concurrency} clients | {floor_time:.1} s ({floor:.0}/s) | |"
    );
    println!("| time / floor | {ratio:.2}× | ≤ 3× |");
    if let Some(up) = started_up {
        let steady = (all_ready - up).as_secs_f64();
        println!(
            "| of which start-up (process start to /readyz) | {:.1} s | |",
            up.as_secs_f64()
        );
        println!(
            "| after start-up, time / floor | {:.2}× | |",
            steady / floor_time
        );
    }
    println!(
        "| status writes per request, creation to Ready | {:.2} (max {max_writes}) | ≤ 2 |",
        writes as f64 / n as f64
    );
    println!("| scans submitted | {} | {n} |", stats.scans_accepted);
    println!("| operator peak RSS | {rss:.0} MiB | |");
    println!("| status writes after a restart | {} | 0 |", after - writes);
    println!(
        "| restart to all reconciled again | {:.1} s | |",
        resync.as_secs_f64()
    );
}
