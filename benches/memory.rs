//! Peak memory per report: the operator's report path (adapter fetch, severity count, upsert)
//! in a child process of its own, whose peak RSS (`VmHWM`) is compared with a floor measured in
//! the same run: the child's idle RSS (clients connected, metadata fetched) plus the body size.
//!
//! Scenarios: `store` (one 50 MiB report fetched and stored) and `join` (16 requests of one
//! scan of a 20 MiB report, taking the poll as the controller does: one fetches and stores, the
//! others read the stored row). `join-each` is the old behaviour for comparison: every request
//! fetches the body itself.
//!
//! `DATABASE_URL=... cargo bench --bench memory` (scripts/bench.sh starts PostgreSQL).
//! Env: `BENCH_STORE_MIB` (50), `BENCH_JOIN_MIB` (20), `BENCH_JOINERS` (16).

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use scanreport_operator::identity::{Digest, MimeType, ReportKey};
use scanreport_operator::scanner::{
    AdapterClient, AdapterCredentials, ClientOptions, ReportPoll, ScanHandle,
};
use scanreport_operator::store::{Claim, Leases, NewReport, PoolConfig, Store};

const VULN: &str = "application/vnd.security.vulnerability.report; version=1.1";
const METADATA: &str = "application/vnd.scanner.adapter.metadata+json; version=1.1";
const MIB: usize = 1024 * 1024;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A vulnerability report of about `bytes` bytes, of small items (the case that amplified most).
fn report(bytes: usize) -> Vec<u8> {
    let mut out = String::with_capacity(bytes + 256);
    out.push_str(r#"{"generated_at":"2026-11-01T00:00:00Z","scanner":{"name":"Bench","vendor":"Bench","version":"1"},"vulnerabilities":["#);
    let severities = ["Critical", "High", "Medium", "Low", "Unknown"];
    let mut i = 0usize;
    while out.len() < bytes {
        if i > 0 {
            out.push(',');
        }
        let severity = severities[i % severities.len()];
        out.push_str(&format!(
            r#"{{"id":"CVE-{i}","package":"p{i}","version":"1","fix_version":"{}","severity":"{severity}"}}"#,
            if i.is_multiple_of(2) { "2" } else { "" }
        ));
        i += 1;
    }
    out.push_str("]}");
    out.into_bytes()
}

fn metadata_json() -> String {
    serde_json::json!({
        "scanner": {"name": "Bench", "vendor": "Bench", "version": "1"},
        "capabilities": [{
            "type": "vulnerability",
            "consumes_mime_types": [
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.docker.distribution.manifest.v2+json"
            ],
            "produces_mime_types": [VULN]
        }],
        "properties": {}
    })
    .to_string()
}

/// Serves metadata and one report body from this (the parent) process, so the body the
/// adapter holds does not count against the child.
async fn serve(body: Arc<Vec<u8>>) -> String {
    let app = Router::new()
        .route(
            "/api/v1/metadata",
            get(|| async { ([(CONTENT_TYPE, METADATA)], metadata_json()) }),
        )
        .route(
            "/api/v1/scan/{id}/report",
            get(move || {
                let body = body.clone();
                async move { ([(CONTENT_TYPE, VULN)], body.as_ref().clone()) }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    format!("http://{addr}")
}

fn vm_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("field")
}

/// The child: one scenario; prints `idle_kib peak_kib downloads`.
async fn child(scenario: &str, base: &str, database_url: &str, joiners: usize) {
    let store = Store::connect(database_url, &PoolConfig::default())
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    let options = ClientOptions {
        max_response_bytes: 256 * MIB as u64,
        ..ClientOptions::default()
    };
    let client = AdapterClient::new(base, AdapterCredentials::None, None, options).expect("client");
    let metadata = client.metadata().await.expect("metadata");
    let mime = MimeType::parse(VULN).expect("mime");
    let key = ReportKey {
        digest: Digest::parse(&format!("sha256:{:064x}", rand_id())).expect("digest"),
        registration_uuid: uuid::Uuid::new_v4(),
        mime_type: mime.clone(),
    };
    let handle = ScanHandle::resume(&metadata, "scan-1", &mime).expect("handle");
    // A job in flight for the report id, as the controller would have submitted it.
    let leases = Leases::default();
    store
        .request_scan(
            &key,
            "team-a",
            None,
            false,
            Duration::from_secs(60),
            &leases,
        )
        .await
        .expect("request");
    let claim = store
        .claim(key.report_id(), key.registration_uuid, 4, "bench", &leases)
        .await
        .expect("claim");
    assert_eq!(claim, Claim::Won);
    assert!(
        store
            .record_submission(key.report_id(), "bench", "scan-1", &leases)
            .await
            .expect("submission")
    );
    // Settle allocator arenas and threads of the runtime before measuring the floor.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = vm_kib("VmRSS:");

    let requesters = if scenario == "store" { 1 } else { joiners };
    let tasks: Vec<_> = (0..requesters)
        .map(|_| {
            let (store, client, handle, key) =
                (store.clone(), client.clone(), handle.clone(), key.clone());
            let each = scenario == "join-each";
            tokio::spawn(async move {
                loop {
                    let take = each
                        || store
                            .take_poll(key.report_id(), "scan-1", Duration::from_secs(60))
                            .await
                            .expect("take poll");
                    if take {
                        let ReportPoll::Ready(report) =
                            client.fetch_report(&handle).await.expect("fetch")
                        else {
                            panic!("not ready");
                        };
                        let report = *report;
                        let new = NewReport {
                            key: key.clone(),
                            summary: report.summary.unwrap_or_default(),
                            findings: report.findings,
                            report: report.body,
                            scanner_name: "Bench".into(),
                            scanner_vendor: "Bench".into(),
                            scanner_version: "1".into(),
                            generated_at: report.generated_at.unwrap_or_else(chrono::Utc::now),
                        };
                        store.store_report(new).await.expect("upsert");
                        store
                            .complete(key.report_id(), "scan-1")
                            .await
                            .expect("complete");
                        return 1u64;
                    }
                    if store
                        .get_meta(key.report_id())
                        .await
                        .expect("meta")
                        .is_some()
                    {
                        return 0;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        })
        .collect();
    let mut downloads = 0;
    for t in tasks {
        downloads += t.await.expect("task");
    }
    println!("{idle} {} {downloads}", vm_kib("VmHWM:"));
}

fn rand_id() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let database_url = std::env::var("DATABASE_URL")
        .expect("DATABASE_URL must point at PostgreSQL; scripts/bench.sh starts one");
    if let Some(pos) = args.iter().position(|a| a == "--child") {
        let scenario = &args[pos + 1];
        let base = &args[pos + 2];
        let joiners = env_usize("BENCH_JOINERS", 16);
        child(scenario, base, &database_url, joiners).await;
        return;
    }
    let joiners = env_usize("BENCH_JOINERS", 16);
    let scenarios = [
        ("store", env_usize("BENCH_STORE_MIB", 50)),
        ("join", env_usize("BENCH_JOIN_MIB", 20)),
        ("join-each", env_usize("BENCH_JOIN_MIB", 20)),
    ];
    println!(
        "| scenario | body | requests | downloads | idle RSS | peak RSS | floor (idle + body) | peak / floor | (peak - idle) / body |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (scenario, mib) in scenarios {
        let body = Arc::new(report(mib * MIB));
        let body_kib = body.len() as u64 / 1024;
        let base = serve(body).await;
        let exe = std::env::current_exe().expect("exe");
        let out = tokio::task::spawn_blocking(move || {
            Command::new(exe)
                .args(["--child", scenario, &base])
                .output()
                .expect("child")
        })
        .await
        .expect("join");
        assert!(
            out.status.success(),
            "child {scenario}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let nums: Vec<u64> = text
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
        let [idle, peak, downloads] = nums[..] else {
            panic!("child output: {text}");
        };
        let floor = idle + body_kib;
        let requests = if scenario == "store" { 1 } else { joiners };
        println!(
            "| {scenario} | {mib} MiB | {requests} | {downloads} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.2} | {:.2} |",
            idle as f64 / 1024.0,
            peak as f64 / 1024.0,
            floor as f64 / 1024.0,
            peak as f64 / floor as f64,
            (peak.saturating_sub(idle)) as f64 / body_kib as f64,
        );
    }
}
