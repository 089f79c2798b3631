//! Policy evaluation cost per reconcile on a report with 5,000 vulnerabilities.
//!
//! `cargo bench --bench policy` measures the pure evaluation (`policy::evaluate`); with
//! `DATABASE_URL` set (scripts/bench.sh starts a throwaway server) it also measures what a
//! reconcile does: read the stored findings (`Store::findings`, the compact column, no body)
//! and evaluate them, once per report version; later reconciles take them from the process's
//! `FindingsCache`), next to the path it avoids (read the report body and parse it again).
//! Env: `BENCH_VULNERABILITIES` (default 5000), `BENCH_ITERATIONS` (default 300).

use std::time::{Duration, Instant};

use scanreport_operator::api::PolicyRules;
use scanreport_operator::controller::context::FindingsCache;
use scanreport_operator::identity::{Digest, MimeType, ReportKey, default_registration_uuid};
use scanreport_operator::policy::{Rules, Source, evaluate};
use scanreport_operator::scanner::summary::{Finding, summarize_findings};
use scanreport_operator::store::{NewReport, PoolConfig, Store};

const VULN: &str = "application/vnd.security.vulnerability.report; version=1.1";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A Harbor 1.1 report of `n` vulnerabilities, with descriptions and links as real ones have.
fn report_body(n: usize) -> String {
    let severities = [
        "Critical",
        "High",
        "High",
        "Medium",
        "Medium",
        "Low",
        "Negligible",
        "Unknown",
    ];
    let vulns: Vec<_> = (0..n)
        .map(|i| {
            serde_json::json!({
                "id": format!("CVE-{}-{:05}", 2017 + i % 8, 10_000 + i),
                "package": format!("lib{}", i % 97),
                "version": format!("1.{}.{}", i % 5, i % 11),
                "fix_version": if i % 3 == 0 { String::new() } else { format!("1.{}.{}", i % 5, i % 11 + 1) },
                "severity": severities[i % severities.len()],
                "description": "A crafted input can make the parser read past the end of a buffer, which lets a remote attacker crash the process.",
                "links": [format!("https://nvd.example/vuln/detail/CVE-{}-{:05}", 2017 + i % 8, 10_000 + i)],
                "preferred_cvss": {"score_v3": 7.5, "vector_v3": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H"},
                "cwe_ids": ["CWE-125"],
            })
        })
        .collect();
    serde_json::json!({
        "generated_at": "2026-12-01T00:00:00Z",
        "scanner": {"name": "Trivy", "vendor": "Aqua Security", "version": "0.50.0"},
        "severity": "Critical",
        "vulnerabilities": vulns,
    })
    .to_string()
}

/// A policy of the usual shape: limits, ignoreUnfixed and a 100-entry allowlist.
fn rules() -> Rules {
    let allowlist: Vec<_> = (0..100)
        .map(|i| serde_json::json!({"id": format!("CVE-2018-{:05}", 10_001 + i * 8), "expires": "2099-01-01T00:00:00Z"}))
        .collect();
    let rules: PolicyRules = serde_json::from_value(serde_json::json!({
        "maxCounts": {"critical": 0, "high": 20},
        "ignoreUnfixed": true,
        "allowlist": allowlist,
    }))
    .expect("rules");
    Rules::parse(&rules, "spec.policy").expect("valid rules")
}

/// Median and 99th percentile of `samples`.
fn summary(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99))
}

fn time<T>(iterations: usize, mut f: impl FnMut() -> T) -> (Duration, Duration) {
    let samples = (0..iterations)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(f());
            started.elapsed()
        })
        .collect();
    summary(samples)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n = env_usize("BENCH_VULNERABILITIES", 5000);
    let iterations = env_usize("BENCH_ITERATIONS", 300);
    let mime = MimeType::parse(VULN).expect("mime");
    let body = report_body(n);
    let (summary_counts, findings) = summarize_findings(&mime, &body)
        .expect("a valid report")
        .expect("a vulnerability report");
    assert_eq!(findings.len(), n);
    let compact = serde_json::to_string(&findings).expect("findings");
    let rules = rules();
    let source = Source::scan_policy("production", Some(1));
    let now = chrono::Utc::now();
    let generated = Some(now);

    let mut rows = vec![(
        "evaluate (pure, findings in memory)".to_owned(),
        time(iterations * 10, || {
            evaluate(&rules, &source, &[&findings], generated, now)
        }),
    )];
    // What a reconcile does for a report version it has read before.
    let cache = FindingsCache::default();
    let report = uuid::Uuid::from_u128(1);
    cache.insert(report, now, std::sync::Arc::new(findings.clone()));
    rows.push((
        "per reconcile, report seen before: FindingsCache hit + evaluate".to_owned(),
        time(iterations * 10, || {
            let cached = cache.get(report, now).expect("cached");
            evaluate(&rules, &source, &[&cached], generated, now)
        }),
    ));
    rows.push((
        "decode the stored findings JSON + evaluate (no database)".to_owned(),
        time(iterations, || {
            let decoded: Vec<Finding> = serde_json::from_str(&compact).expect("decode");
            evaluate(&rules, &source, &[&decoded], generated, now)
        }),
    ));

    if let Ok(url) = std::env::var("DATABASE_URL") {
        let store = Store::connect(&url, &PoolConfig::default())
            .await
            .expect("connect");
        store.migrate().await.expect("migrate");
        let key = ReportKey {
            digest: Digest::parse(&format!("sha256:{:064x}", rand::random::<u64>()))
                .expect("digest"),
            registration_uuid: default_registration_uuid("bench-policy").expect("uuid"),
            mime_type: mime.clone(),
        };
        let id = key.report_id();
        store
            .store_report(NewReport {
                key,
                report: serde_json::value::RawValue::from_string(body.clone()).expect("json"),
                summary: summary_counts,
                findings: Some(findings.clone()),
                scanner_name: "Trivy".into(),
                scanner_vendor: "Aqua Security".into(),
                scanner_version: "0.50.0".into(),
                generated_at: now,
            })
            .await
            .expect("store");
        let mut samples = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let started = Instant::now();
            let found = store.findings(&[id]).await.expect("findings");
            let verdict = evaluate(&rules, &source, &[&found[0].2], generated, now);
            std::hint::black_box(verdict);
            samples.push(started.elapsed());
        }
        rows.push((
            "first reconcile after a new report: Store::findings + evaluate (PostgreSQL on loopback)".to_owned(),
            summary(samples),
        ));
        let mut samples = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let started = Instant::now();
            let stored = store.get(id).await.expect("get").expect("stored");
            let text = stored.report.to_string();
            let (_, decoded) = summarize_findings(&mime, &text)
                .expect("valid")
                .expect("vulnerability report");
            std::hint::black_box(evaluate(&rules, &source, &[&decoded], generated, now));
            samples.push(started.elapsed());
        }
        rows.push((
            "avoided: read the body + parse it + evaluate".to_owned(),
            summary(samples),
        ));
    } else {
        eprintln!("DATABASE_URL is not set: only the in-memory rows are measured");
    }

    println!(
        "\n{n} vulnerabilities, report body {} KiB, stored findings {} KiB\n",
        body.len() / 1024,
        compact.len() / 1024
    );
    println!("| what | median | p99 |\n|---|---:|---:|");
    for (what, (median, p99)) in rows {
        println!("| {what} | {median:.2?} | {p99:.2?} |");
    }
}
