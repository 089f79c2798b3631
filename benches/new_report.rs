//! PostgreSQL's work for new reports, without the API server or an adapter: what the store's
//! statements for one new report cost the database server and this client, by 16 concurrent
//! tasks through one store (as the operator's reconciles run them).
//!
//! `DATABASE_URL=... cargo bench --bench new_report` (scripts/bench.sh starts a throwaway
//! server). Env: `BENCH_REPORTS` per phase (default 3000), `BENCH_ROUNDS` (default 2),
//! `BENCH_RATE` new reports per second over all tasks (default 0: as fast as they go). The
//! operator's 1,000-request benchmark stores 140-370 new reports a second; paced at that rate,
//! the tasks seldom meet at a shared lock, so the phases show what it costs there.
//!
//! Phases, each over new tuples of one scanner, alternating for `BENCH_ROUNDS` rounds:
//! * **now**: the tuple read that opens and claims the job, then the upsert of the report
//!   (`testkit`'s sample, 13 KB with 29 findings) that completes the claimed job: what a reconcile does when the
//!   adapter has the report at the first poll;
//! * **now, a scanner per tuple**: the same, each tuple of its own scanner, so that no queue
//!   lock is shared: against **now**, what sixteen tasks sharing one scanner's lock cost;
//! * **before**: the same with the submission recorded between them and the upsert completing
//!   the job by its scan id: the three statements before the submitter polled first;
//! * **the read alone** (each tuple of its own scanner, so no queue lock is shared) and **the
//!   upsert alone** (no job), to show what each statement costs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use scanreport_operator::api::SeveritySummary;
use scanreport_operator::identity::{Digest, MimeType, ReportKey, default_registration_uuid};
use scanreport_operator::scanner::summary::{Finding, summarize_findings};
use scanreport_operator::store::{
    Completes, Leases, NewReport, Opened, Opening, PoolConfig, Store,
};
use serde_json::value::RawValue;
use testkit::fixtures::sample_vulnerability_report;
use testkit::{cpu, pgtest};

const VULN: &str = "application/vnd.security.vulnerability.report; version=1.1";
const TASKS: usize = 16;

/// The benchmarks' report, with its summary and findings as the operator derives them.
struct Sample {
    body: Box<RawValue>,
    summary: SeveritySummary,
    findings: Vec<Finding>,
}

fn sample() -> Sample {
    let body = serde_json::value::to_raw_value(&sample_vulnerability_report())
        .expect("the report serialises");
    let mime = MimeType::parse(VULN).expect("a MIME type");
    let (summary, findings) = summarize_findings(&mime, body.get())
        .expect("the report is well formed")
        .expect("a vulnerability report has a summary");
    Sample {
        body,
        summary,
        findings,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Now,
    /// `Now` with each tuple of its own scanner: no queue lock shared between the tasks.
    NowOwnScanner,
    Before,
    ReadAlone,
    UpsertAlone,
}

impl Phase {
    fn label(self) -> &'static str {
        match self {
            Self::Now => "now: tuple read, upsert completing the claim",
            Self::NowOwnScanner => "now, a scanner per tuple (no shared queue lock)",
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
async fn one(store: &Store, phase: Phase, n: u64, sample: &Sample) {
    let leases = Leases::default();
    let k = key(n, matches!(phase, Phase::ReadAlone | Phase::NowOwnScanner));
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
        report: sample.body.clone(),
        summary: sample.summary,
        findings: Some(sample.findings.clone()),
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
        Phase::Now | Phase::NowOwnScanner => Completes::Claim("bench"),
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
    let rate: f64 = std::env::var("BENCH_RATE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|r: &f64| r.is_finite() && *r > 0.0)
        .unwrap_or(0.0);
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
    let sample = Arc::new(sample());
    println!(
        "{reports} new reports per phase, {TASKS} tasks, {rounds} rounds, {}; report {} bytes, {} findings",
        if rate > 0.0 {
            format!("paced at {rate} reports/s")
        } else {
            "unpaced".to_owned()
        },
        sample.body.get().len(),
        sample.findings.len()
    );
    let phases = [
        Phase::Now,
        Phase::NowOwnScanner,
        Phase::Before,
        Phase::ReadAlone,
        Phase::UpsertAlone,
    ];
    // Per phase: reports, seconds, PostgreSQL CPU-s, this process's CPU-s.
    let mut sums = [[0.0f64; 4]; 5];
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
            let first = next.load(Ordering::Relaxed);
            let end = first + reports;
            let pg0 = postmaster.map_or(0.0, cpu::postgres);
            let me0 = cpu::seconds(me, false);
            let start = Instant::now();
            let tasks: Vec<_> = (0..TASKS)
                .map(|_| {
                    let (store, sample, next) = (store.clone(), sample.clone(), next.clone());
                    tokio::spawn(async move {
                        loop {
                            let n = next.fetch_add(1, Ordering::Relaxed);
                            if n >= end {
                                break;
                            }
                            if rate > 0.0 {
                                // The n-th report of the phase starts no earlier than n / rate.
                                let due =
                                    start + Duration::from_secs_f64((n - first) as f64 / rate);
                                tokio::time::sleep_until(due.into()).await;
                            }
                            one(&store, phase, n, &sample).await;
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
