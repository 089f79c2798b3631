//! The report API through the real aggregation layer: `list` latency for N reports in one
//! namespace, and `get` latency and the operator's peak RSS for one large report, each against a
//! floor measured in the same run:
//!
//! * list: the same client listing the N ScanRequests themselves (served by the API server from
//!   its watch cache), so the ratio is what the extra hop, the feed and the metadata query cost;
//! * get: reading the same body straight from PostgreSQL (`SELECT report::text`), the least any
//!   server holding it there must do;
//! * memory: the operator's peak RSS growth while serving the body, against the body's size.
//!
//! `DATABASE_URL=... cargo bench --bench report_api` (scripts/bench.sh starts PostgreSQL).
//! Env: `BENCH_REPORTS` (default 1000), `BENCH_BODY_MIB` (default 20), `BENCH_ROUNDS` (default 15).

use std::time::{Duration, Instant};

use devscanner::{DevScanner, DevScannerConfig};
use futures::{StreamExt, stream};
use kube::api::{Api, ListParams, PostParams};
use scanreport_operator::api::{ScanRequest, SeveritySummary};
use scanreport_operator::identity::{self, Digest, MimeType, ReportKey};
use scanreport_operator::store::{NewReport, PoolConfig, Store};
use testkit::fixtures::ScanRequestBuilder;
use testkit::operator::{Operator, condition, create_scanner};
use testkit::{envtest, fresh_namespace, pgtest};

const VULN: &str = "application/vnd.security.vulnerability.report; version=1.1";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A vulnerability report of about `bytes` bytes.
fn body(bytes: usize) -> Box<serde_json::value::RawValue> {
    let mut out = String::with_capacity(bytes + 1024);
    out.push_str(r#"{"generated_at":"2026-12-01T00:00:00Z","scanner":{"name":"Bench","vendor":"Bench","version":"1"},"severity":"High","vulnerabilities":["#);
    let mut i = 0u64;
    while out.len() < bytes {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            r#"{{"id":"CVE-2026-{i:06}","package":"libexample{}","version":"1.{}.0","fix_version":"1.{}.1","severity":"High","description":"A flaw in the example parser allows an attacker to cause trouble with a crafted input of size {i}."}}"#,
            i % 97,
            i % 13,
            i % 13
        ));
        i += 1;
    }
    out.push_str("]}");
    serde_json::value::RawValue::from_string(out).expect("valid JSON")
}

fn vm_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// `GET /{path}` through the API server, with `accept` when given; the body as text.
async fn get_text(client: &kube::Client, path: &str, accept: Option<&str>) -> String {
    let mut req = kube::core::Request::new("")
        .get(path, &Default::default())
        .expect("request");
    if let Some(accept) = accept {
        req.headers_mut()
            .insert("accept", accept.parse().expect("header"));
    }
    client
        .request_text(req)
        .await
        .expect("GET through the API server")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn timed<F, Fut>(rounds: usize, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        f().await;
        times.push(t.elapsed());
    }
    median(times)
}

#[tokio::main]
async fn main() {
    let reports = env_or("BENCH_REPORTS", 1000);
    let body_mib = env_or("BENCH_BODY_MIB", 20);
    let rounds = env_or("BENCH_ROUNDS", 15).max(1);
    let env = envtest::env().await;
    let client = env.client();
    let database_url = pgtest::fresh_database("benchapi").await;
    let store = Store::connect(&database_url, &PoolConfig::default())
        .await
        .expect("store");
    store.migrate().await.expect("migrate");
    let adapter = DevScanner::start(DevScannerConfig::default())
        .await
        .expect("adapter");
    create_scanner(&client, "bench-api", adapter.base_url()).await;
    let registration = identity::default_registration_uuid("bench-api").expect("uuid");
    let ns = fresh_namespace(&client, "bench-api").await;
    let big_ns = fresh_namespace(&client, "bench-api-big").await;
    let system = fresh_namespace(&client, "bench-api-system").await;

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    testkit::aggregation::register_report_api(&client, &system, "reports", port).await;

    // Reports stored beforehand: the requests reuse them, so the run measures serving, not
    // scanning.
    let mime = MimeType::parse(VULN).expect("mime");
    let key = |d: &str| ReportKey {
        digest: Digest::parse(d).expect("digest"),
        registration_uuid: registration,
        mime_type: mime.clone(),
    };
    let small = body(4 * 1024);
    let digests: Vec<String> = (0..reports)
        .map(|i| format!("sha256:{:064x}", 0xa9e0_0000u64 + i as u64))
        .collect();
    stream::iter(digests.iter())
        .for_each_concurrent(16, |d| {
            let (store, small, key) = (store.clone(), small.clone(), key(d));
            async move {
                store
                    .upsert(&NewReport {
                        key,
                        report: small,
                        summary: SeveritySummary::default(),
                        scanner_name: "Bench".into(),
                        scanner_vendor: "Bench".into(),
                        scanner_version: "1".into(),
                        generated_at: chrono::Utc::now(),
                        findings: None,
                    })
                    .await
                    .expect("upsert");
            }
        })
        .await;
    let big_digest = format!("sha256:{:064x}", 0xb19u64);
    let big = body(body_mib << 20);
    let big_len = big.get().len();
    store
        .upsert(&NewReport {
            key: key(&big_digest),
            report: big,
            summary: SeveritySummary::default(),
            scanner_name: "Bench".into(),
            scanner_vendor: "Bench".into(),
            scanner_version: "1".into(),
            generated_at: chrono::Utc::now(),
            findings: None,
        })
        .await
        .expect("upsert big");

    let listen = format!("127.0.0.1:{port}");
    let operator = Operator::start(
        env,
        &database_url,
        &[&ns, &big_ns],
        &["--report-api-listen", &listen, "--concurrency", "16"],
    );
    let pid = operator.pid().expect("operator pid");
    let sr = |name: &str, d: &str| {
        ScanRequestBuilder::new(name, "bench-api")
            .digest(d)
            .no_tag()
            .mime_types(&[VULN])
            .build()
    };
    Api::<ScanRequest>::namespaced(client.clone(), &big_ns)
        .create(&PostParams::default(), &sr("big", &big_digest))
        .await
        .expect("big request");
    let requests = Api::<ScanRequest>::namespaced(client.clone(), &ns);
    stream::iter(digests.iter().enumerate())
        .for_each_concurrent(16, |(i, d)| {
            let (requests, sr) = (requests.clone(), sr(&format!("r-{i:05}"), d));
            async move {
                requests
                    .create(&PostParams::default(), &sr)
                    .await
                    .expect("request");
            }
        })
        .await;
    let ready = |sr: &ScanRequest| condition(sr, "Ready").is_some_and(|c| c.status == "True");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let all = requests.list(&ListParams::default()).await.expect("list");
        let big = Api::<ScanRequest>::namespaced(client.clone(), &big_ns)
            .get("big")
            .await
            .expect("big");
        let n = all.items.iter().filter(|s| ready(s)).count();
        if n == reports && ready(&big) {
            break;
        }
        assert!(Instant::now() < deadline, "only {n} of {reports} Ready");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // `Request::new("").get(p)` asks for `/{p}`.
    let path = |ns: &str, rest: &str| {
        format!("apis/reports.scanreport.io/v1alpha1/namespaces/{ns}/vulnerabilityreports{rest}")
    };
    // Until the aggregator routes to the operator.
    let list_path = path(&ns, "");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let req = kube::core::Request::new("").get(&list_path, &Default::default());
        let last = match client.request_text(req.expect("request")).await {
            Ok(text) => {
                let n = text.matches("\"kind\":\"VulnerabilityReport\"").count();
                if n == reports {
                    break;
                }
                format!("{n} items: {}", text.chars().take(300).collect::<String>())
            }
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "the report API did not list every report: {last}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // --- get of the large body, and the operator's memory while it serves it ---
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = vm_kib(pid, "VmRSS:");
    let get_path = path(&big_ns, "/big-vuln");
    let big_rounds = rounds.min(7);
    let get = timed(big_rounds, || {
        let (client, get_path) = (client.clone(), get_path.clone());
        async move {
            let text = get_text(&client, &get_path, None).await;
            assert!(text.len() > big_len, "the body is served whole");
        }
    })
    .await;
    let hwm_after = vm_kib(pid, "VmHWM:");
    let big_id = key(&big_digest).report_id();
    let get_floor = timed(big_rounds, || {
        let pool = store.pool().clone();
        async move {
            let text: String =
                sqlx::query_scalar("SELECT report::text FROM scan_report WHERE id = $1")
                    .bind(big_id)
                    .fetch_one(&pool)
                    .await
                    .expect("select");
            assert!(text.len() >= big_len / 2);
        }
    })
    .await;

    // --- list of N reports against the list of the N ScanRequests ---
    let list = timed(rounds, || {
        let (client, list_path) = (client.clone(), list_path.clone());
        async move {
            get_text(&client, &list_path, None).await;
        }
    })
    .await;
    let floor_path = format!("apis/scanreport.io/v1alpha1/namespaces/{ns}/scanrequests");
    let list_floor = timed(rounds, || {
        let (client, floor_path) = (client.clone(), floor_path.clone());
        async move {
            get_text(&client, &floor_path, None).await;
        }
    })
    .await;
    let table = timed(rounds, || {
        let (client, list_path) = (client.clone(), list_path.clone());
        async move {
            get_text(
                &client,
                &list_path,
                Some("application/json;as=Table;v=v1;g=meta.k8s.io"),
            )
            .await;
        }
    })
    .await;

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    // VmHWM is the process's lifetime peak: the peak after, less the RSS before, bounds what
    // serving the body cost.
    let growth_kib = hwm_after.saturating_sub(rss_before);
    println!();
    println!(
        "Kubernetes {}, {reports} reports, one body of {:.1} MiB, {rounds} rounds (median)",
        env.server_version(),
        big_len as f64 / 1048576.0
    );
    println!();
    println!("| measurement | report API | floor | floor is | ratio |");
    println!("| --- | ---: | ---: | --- | ---: |");
    println!(
        "| list {reports} VulnerabilityReports | {:.1} ms | {:.1} ms | list {reports} ScanRequests, same client and API server | {:.2} |",
        ms(list),
        ms(list_floor),
        ms(list) / ms(list_floor)
    );
    println!(
        "| the same list as a Table (`kubectl get`) | {:.1} ms | {:.1} ms | list {reports} ScanRequests | {:.2} |",
        ms(table),
        ms(list_floor),
        ms(table) / ms(list_floor)
    );
    println!(
        "| get one {body_mib} MiB report | {:.1} ms | {:.1} ms | `SELECT report::text` straight from PostgreSQL | {:.2} |",
        ms(get),
        ms(get_floor),
        ms(get) / ms(get_floor)
    );
    println!(
        "| operator peak RSS growth serving it | {:.1} MiB | {:.1} MiB | the body's size | {:.3} |",
        growth_kib as f64 / 1024.0,
        big_len as f64 / 1048576.0,
        (growth_kib * 1024) as f64 / big_len as f64
    );
    println!(
        "| operator RSS before / peak after | {:.1} MiB / {:.1} MiB | | | |",
        rss_before as f64 / 1024.0,
        hwm_after as f64 / 1024.0
    );
    drop(operator);
}
