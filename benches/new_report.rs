//! PostgreSQL's work for new reports, without the API server or an adapter: what the store's
//! statements for one new report cost the database server and this client, by 16 concurrent
//! tasks through one store (as the operator's reconciles run them).
//!
//! `DATABASE_URL=... cargo bench --bench new_report` (scripts/bench.sh starts a throwaway
//! server). Env: `BENCH_REPORTS` per phase (default 3000), `BENCH_ROUNDS` (default 2).
//!
//! Phases, each over new tuples of one scanner, alternating for `BENCH_ROUNDS` rounds:
//! * **now**: the tuple read that opens and claims the job, then the upsert of the report
//!   (13.7 KB, 29 findings) that completes the claimed job: what a reconcile does when the
//!   adapter has the report at the first poll;
//! * **before**: the same with the submission recorded between them and the upsert completing
//!   the job by its scan id: the three statements before the submitter polled first;
//! * **the read alone** (each tuple of its own scanner, so no queue lock is shared) and **the
//!   upsert alone** (no job), to show what each statement costs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use chrono::Utc;
use scanreport_operator::api::SeveritySummary;
use scanreport_operator::identity::{Digest, MimeType, ReportKey, default_registration_uuid};
use scanreport_operator::scanner::summary::{Bucket, Finding};
use scanreport_operator::store::{
    Completes, Leases, NewReport, Opened, Opening, PoolConfig, Store,
};
use testkit::{cpu, pgtest};

const VULN: &str = "application/vnd.security.vulnerability.report; version=1.1";
const TASKS: usize = 16;

/// The report the development adapter serves for a vulnerability scan: 29 vulnerabilities.
fn body() -> Box<serde_json::value::RawValue> {
    let severities = ["Critical", "High", "Medium", "Low", "Unknown"];
    let vulns: Vec<_> = (0..29)
        .map(|i| {
            serde_json::json!({
                "id": format!("CVE-2026-{:05}", 1000 + i),
                "package": format!("libexample{}", i % 7),
                "version": format!("1.{}.{}", i % 5, i),
                "fix_version": if i % 3 == 0 { format!("1.{}.{}", i % 5, i + 1) } else { String::new() },
                "severity": severities[i % severities.len()],
                "description": "A crafted input can make the parser read past the end of a buffer, \
                    which lets a remote attacker crash the process or read adjacent memory.",
                "links": [format!("https://avd.example/nvd/cve-2026-{:05}", 1000 + i)],
                "cwe_ids": ["CWE-125"],
                "vendor_attributes": {"CVSS": {"nvd": {"V3Score": 7.5, "V3Vector": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H"}}}
            })
        })
        .collect();
    serde_json::value::to_raw_value(&serde_json::json!({
        "generated_at": "2026-11-27T00:00:00Z",
        "scanner": {"name": "Trivy", "vendor": "Aqua Security", "version": "0.50.0"},
        "vulnerabilities": vulns
    }))
    .expect("the report serialises")
}

fn findings() -> Vec<Finding> {
    (0..29)
        .map(|i| Finding {
            id: format!("CVE-2026-{:05}", 1000 + i),
            package: format!("libexample{}", i % 7),
            version: format!("1.{}.{}", i % 5, i),
            severity: Bucket::High,
            fix_version: (i % 3 == 0).then(|| format!("1.{}.{}", i % 5, i + 1)),
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Now,
    Before,
    ReadAlone,
    UpsertAlone,
}

impl Phase {
    fn label(self) -> &'static str {
        match self {
            Self::Now => "now: tuple read, upsert completing the claim",
            Self::Before => "before: tuple read, submission, upsert completing the scan",
            Self::ReadAlone => "the tuple read alone (a scanner per tuple)",
            Self::UpsertAlone => "the upsert alone (no job)",
        }
    }
}

fn key(n: u64, own_scanner: bool) -> ReportKey {
    let scanner = if own_scanner {
        format!("scanner-{n}")
    } else {
        "trivy".to_owned()
    };
    ReportKey {
        digest: Digest::parse(&format!("sha256:{n:064x}")).expect("a digest"),
        registration_uuid: default_registration_uuid(&scanner).expect("a uuid"),
        mime_type: MimeType::parse(VULN).expect("a MIME type"),
    }
}

/// One new report through the phase's statements.
async fn one(store: &Store, phase: Phase, n: u64, body: &serde_json::value::RawValue) {
    let leases = Leases::default();
    let k = key(n, phase == Phase::ReadAlone);
    if phase != Phase::UpsertAlone {
        let opening = Opening {
            key: &k,
            namespace: "team-a",
            max_in_flight: 64,
            holder: "bench",
            leases: &leases,
        };
        let state = store
            .tuple_state_or_open(k.report_id(), None, Some(&opening))
            .await
            .expect("tuple read");
        assert_eq!(state.opened, Some(Opened::Won), "a new tuple is claimed");
    }
    if phase == Phase::ReadAlone {
        return;
    }
    let report = NewReport {
        key: k.clone(),
        report: body.to_owned(),
        summary: SeveritySummary::default(),
        findings: Some(findings()),
        scanner_name: "Trivy".into(),
        scanner_vendor: "Aqua Security".into(),
        scanner_version: "0.50.0".into(),
        generated_at: Utc::now(),
    };
    let completes = match phase {
        Phase::Before => {
            let recorded = store
                .record_submission_and_poll(k.report_id(), "bench", "scan", &leases)
                .await
                .expect("submission");
            assert!(recorded, "the claim is held");
            Completes::Scan("scan")
        }
        Phase::Now => Completes::Claim("bench"),
        Phase::ReadAlone | Phase::UpsertAlone => Completes::Nothing,
    };
    store
        .complete_with_report(report, completes)
        .await
        .expect("upsert");
}

#[tokio::main]
async fn main() {
    let reports: u64 = std::env::var("BENCH_REPORTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2)
        .max(1);
    let url = pgtest::fresh_database("bench_new_report").await;
    let store = Store::connect(
        &url,
        &PoolConfig {
            max_connections: TASKS as u32,
            ..PoolConfig::default()
        },
    )
    .await
    .expect("connect");
    store.migrate().await.expect("migrate");
    let postmaster = cpu::postmaster_pid(store.pool()).await;
    let me = std::process::id();
    let body: Arc<Box<serde_json::value::RawValue>> = Arc::new(body());
    println!(
        "{reports} new reports per phase, {TASKS} tasks, {rounds} rounds; report {} bytes, 29 findings",
        body.get().len()
    );
    let phases = [
        Phase::Now,
        Phase::Before,
        Phase::ReadAlone,
        Phase::UpsertAlone,
    ];
    // Per phase: reports, seconds, PostgreSQL CPU-s, this process's CPU-s.
    let mut sums = [[0.0f64; 4]; 4];
    let next = Arc::new(AtomicU64::new(1 << 40));
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..phases.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let phase = phases[i];
            // Every phase starts with the WAL checkpointed (needs a privileged role).
            let _ = sqlx::query("CHECKPOINT").execute(store.pool()).await;
            let end = next.load(Ordering::Relaxed) + reports;
            let pg0 = postmaster.map_or(0.0, cpu::postgres);
            let me0 = cpu::seconds(me, false);
            let start = Instant::now();
            let tasks: Vec<_> = (0..TASKS)
                .map(|_| {
                    let (store, body, next) = (store.clone(), body.clone(), next.clone());
                    tokio::spawn(async move {
                        loop {
                            let n = next.fetch_add(1, Ordering::Relaxed);
                            if n >= end {
                                break;
                            }
                            one(&store, phase, n, &body).await;
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.expect("task");
            }
            // The counter overshoots by one per task; the next phase starts after it.
            next.store(end + TASKS as u64, Ordering::Relaxed);
            let sum = &mut sums[i];
            sum[0] += reports as f64;
            sum[1] += start.elapsed().as_secs_f64();
            sum[2] += postmaster.map_or(0.0, cpu::postgres) - pg0;
            sum[3] += cpu::seconds(me, false) - me0;
        }
    }
    println!(
        "\n| phase | reports/s | PostgreSQL CPU per report, ms | this client's CPU per report, ms |"
    );
    println!("|---|---:|---:|---:|");
    for (phase, sum) in phases.iter().zip(sums) {
        println!(
            "| {} | {:.0} | {:.3} | {:.3} |",
            phase.label(),
            sum[0] / sum[1].max(f64::MIN_POSITIVE),
            sum[2] * 1000.0 / sum[0].max(1.0),
            sum[3] * 1000.0 / sum[0].max(1.0)
        );
    }
    if postmaster.is_none() {
        println!("(PostgreSQL's CPU needs the server on this machine: not measured)");
    }
    store.close().await;
}
