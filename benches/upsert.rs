//! Upsert throughput of the report store against a raw `pgbench` floor, on the same server and
//! in the same run.
//!
//! `DATABASE_URL=... cargo bench --bench upsert` (scripts/bench.sh starts a throwaway server).
//! Env: `BENCH_SECONDS` per phase (default 10), `BENCH_WRITERS` (default 8), `BENCH_ROUNDS`
//! (default 2), `PGBENCH` (path).
//!
//! Phases, over distinct tuples and then over one hot tuple: our store with 8 concurrent
//! writers sharing its connections (as reconciles do), and `pgbench -c 8 -M prepared` running
//! the very same statement text (generated from `store::UPSERT_SQL`) with the same ~13 KB
//! report bound as a parameter, alternating for `BENCH_ROUNDS` rounds (store first, then
//! pgbench first), so that a drift of the machine's speed during the run weighs on both sides
//! alike; the ratio is of the rates over all rounds. Then the same statement and binds through
//! sqlx with a connection pinned to each writer, and pgbench without the advisory lock, to show
//! what the pool and the lock cost. Then the CPU each phase cost per upsert, in the client
//! (this process, or pgbench) and in PostgreSQL, which share the machine's cores.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use scanreport_operator::api::SeveritySummary;
use scanreport_operator::identity::{Digest, MimeType, ReportKey, default_registration_uuid};
use scanreport_operator::store::{NewReport, PoolConfig, REPORT_LOCK_CLASS, Store, UPSERT_SQL};
use sqlx::ConnectOptions;
use testkit::cpu;
use testkit::fixtures::sample_vulnerability_report;

const VULN: &str = "application/vnd.security.vulnerability.report; version=1.1";

fn report(n: u64, body: &serde_json::value::RawValue) -> NewReport {
    NewReport {
        key: ReportKey {
            digest: Digest::parse(&format!("sha256:{n:064x}")).expect("valid digest"),
            registration_uuid: default_registration_uuid("trivy").expect("uuid"),
            mime_type: MimeType::parse(VULN).expect("mime"),
        },
        report: body.to_owned(),
        summary: SeveritySummary {
            critical: 7,
            high: 7,
            medium: 6,
            low: 6,
            unknown: 6,
            none: 0,
            fixable: 11,
        },
        scanner_name: "Trivy".into(),
        scanner_vendor: "Aqua Security".into(),
        scanner_version: "0.50.0".into(),
        findings: None,
        generated_at: Utc::now(),
    }
}

/// Runs `writers` tasks for `secs`; `hot` makes them all write one tuple, otherwise each upsert
/// takes the next number of `next`, which goes on counting across rounds: every round inserts
/// new tuples, as pgbench's random ones do.
async fn run_store(
    store: &Store,
    writers: usize,
    secs: u64,
    hot: bool,
    next: &Arc<AtomicU64>,
) -> (u64, f64) {
    let body: Arc<Box<serde_json::value::RawValue>> = Arc::new(
        serde_json::value::to_raw_value(&sample_vulnerability_report()).expect("report serialises"),
    );
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let (store, body, next, done) =
                (store.clone(), body.clone(), next.clone(), done.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let n = if hot {
                        1
                    } else {
                        next.fetch_add(1, Ordering::Relaxed)
                    };
                    store.upsert(&report(n, &body)).await.expect("upsert");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("writer task");
    }
    let ops = done.load(Ordering::Relaxed);
    (ops, ops as f64 / start.elapsed().as_secs_f64())
}

/// The same statement and binds as `Store::upsert`, through sqlx, but each writer on a connection
/// of its own instead of the pool: the difference to the store is what the pool costs, the
/// difference to pgbench what the driver and the binding cost.
async fn run_direct(url: &str, writers: usize, secs: u64, hot: bool) -> (u64, f64) {
    use sqlx::Connection;
    let body: Arc<Box<serde_json::value::RawValue>> = Arc::new(
        serde_json::value::to_raw_value(&sample_vulnerability_report()).expect("report serialises"),
    );
    let next = Arc::new(AtomicU64::new(3 << 40));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let (body, next, done, url) =
                (body.clone(), next.clone(), done.clone(), url.to_owned());
            tokio::spawn(async move {
                let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
                while Instant::now() < deadline {
                    let n = if hot {
                        1
                    } else {
                        next.fetch_add(1, Ordering::Relaxed)
                    };
                    let r = report(n, &body);
                    let s = &r.summary;
                    sqlx::query(UPSERT_SQL)
                        .bind(r.id())
                        .bind(r.key.digest.as_str())
                        .bind(r.key.registration_uuid)
                        .bind(r.key.mime_type.as_str())
                        .bind(r.report.get())
                        .bind(s.critical)
                        .bind(s.high)
                        .bind(s.medium)
                        .bind(s.low)
                        .bind(s.unknown)
                        .bind(s.none)
                        .bind(s.fixable)
                        .bind(&r.scanner_name)
                        .bind(&r.scanner_vendor)
                        .bind(&r.scanner_version)
                        .bind(REPORT_LOCK_CLASS)
                        .bind(r.generated_at)
                        .bind(60.0f64)
                        .bind(None::<sqlx::types::Json<serde_json::Value>>)
                        .bind(None::<&str>)
                        .bind(None::<&str>)
                        .fetch_one(&mut conn)
                        .await
                        .expect("upsert");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("writer task");
    }
    let ops = done.load(Ordering::Relaxed);
    (ops, ops as f64 / start.elapsed().as_secs_f64())
}

/// The store's upsert statement rewritten for pgbench variables: same text, same lock, same
/// conflict handling. `:n` picks the tuple; the report is bound as `:report` per execution.
/// `lock: false` replaces the advisory lock by a constant, to show what the lock costs.
fn pgbench_script(hot: bool, lock: bool) -> String {
    let reg = default_registration_uuid("trivy").expect("uuid");
    let mut sql = UPSERT_SQL.trim().to_owned();
    if !lock {
        let locked = "SELECT pg_advisory_xact_lock($16, hashtext($1::text))";
        assert!(
            sql.contains(locked),
            "the upsert takes its lock as expected"
        );
        sql = sql.replace(locked, "SELECT 1");
    }
    // Highest placeholder first so `$1` does not clobber `$16`.
    let values = [
        // No scan job to complete, no findings: as `Store::upsert` binds them here.
        ("$21", "NULL::text".to_owned()),
        ("$20", "NULL::text".to_owned()),
        ("$19", "NULL::jsonb".to_owned()),
        ("$18", "60".to_owned()),
        ("$17", "now()".to_owned()),
        ("$16", REPORT_LOCK_CLASS.to_string()),
        ("$15", "'0.50.0'".into()),
        ("$14", "'Aqua Security'".into()),
        ("$13", "'Trivy'".into()),
        ("$12", "11".into()),
        ("$11", "0".into()),
        ("$10", "6".into()),
        ("$9", "6".into()),
        ("$8", "6".into()),
        ("$7", "7".into()),
        ("$6", "7".into()),
        ("$5", ":report".into()),
        ("$4", format!("'{VULN}'")),
        ("$3", format!("'{reg}'::uuid")),
        (
            "$2",
            "'sha256:' || lpad(to_hex(:n::bigint), 64, '0')".into(),
        ),
        ("$1", "md5(:n::text)::uuid".into()),
    ];
    for (placeholder, value) in values {
        sql = sql.replace(placeholder, &value);
    }
    let pick = if hot {
        "\\set n 1".to_owned()
    } else {
        "\\set n random(1099511627776, 2199023255551)".to_owned()
    };
    format!("{pick}\n{};\n", sql.replace('\n', " "))
}

fn run_pgbench(url: &str, writers: usize, secs: u64, hot: bool, lock: bool) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("upsert.sql");
    std::fs::write(&script, pgbench_script(hot, lock)).expect("write pgbench script");
    let report = sample_vulnerability_report().to_string();
    let pgbench =
        std::env::var("PGBENCH").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin/pgbench".into());
    let out = Command::new(&pgbench)
        .args([
            "-n",
            "-M",
            "prepared",
            "-c",
            &writers.to_string(),
            "-j",
            "2",
        ])
        .args(["-T", &secs.to_string(), "-f"])
        .arg(&script)
        .arg("-D")
        .arg(format!("report={report}"))
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {pgbench}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pgbench failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no tps in pgbench output: {stdout}"))
}

/// Starts every phase from the same state: the rows so far vacuumed and analysed, and the WAL
/// checkpointed, so that no phase pays for background work the one before it caused.
async fn settle(store: &Store) {
    for sql in ["VACUUM (ANALYZE) scan_report", "CHECKPOINT"] {
        // CHECKPOINT needs a privileged role; without it the phases are only less even.
        let _ = sqlx::query(sql).execute(store.pool()).await;
    }
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let base = std::env::var("DATABASE_URL")
        .expect("DATABASE_URL must name a PostgreSQL server; scripts/bench.sh starts one");
    let secs: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let writers: usize = std::env::var("BENCH_WRITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);

    let opts: sqlx::postgres::PgConnectOptions = base.parse().expect("DATABASE_URL parses");
    let db = format!("bench_upsert_{}", std::process::id());
    let mut admin = opts.connect().await.expect("connect");
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db}")))
        .execute(&mut admin)
        .await
        .expect("drop");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(&mut admin)
        .await
        .expect("create");
    // Same server, other database; pgbench takes a plain libpq URL.
    let (head, query) = base
        .split_once('?')
        .map_or((base.as_str(), ""), |(h, q)| (h, q));
    let root = head.rsplit_once('/').map_or(head, |(r, _)| r);
    let url = if query.is_empty() {
        format!("{root}/{db}")
    } else {
        format!("{root}/{db}?{query}")
    };
    let store = Store::connect(
        &url,
        &PoolConfig {
            max_connections: writers as u32,
            ..PoolConfig::default()
        },
    )
    .await
    .expect("connect store");
    store.migrate().await.expect("migrate");
    let size = sample_vulnerability_report().to_string().len();
    println!("report size: {size} bytes; writers: {writers}; {secs} s per phase");

    let me = std::process::id();
    let postmaster = cpu::postmaster_pid(store.pool()).await;
    let pg = || postmaster.map_or(0.0, cpu::postgres);
    // CPU seconds of (this process, pgbench runs it reaped, PostgreSQL).
    let sample = || (cpu::seconds(me, false), cpu::reaped_children(me), pg());
    let rounds = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(2)
        .max(1);
    let mut rows = Vec::new();
    let mut cpu_rows = Vec::new();
    let next = Arc::new(AtomicU64::new(1 << 40));
    // Milliseconds of CPU per upsert.
    let per = |secs: f64, n: f64| secs * 1000.0 / n.max(1.0);
    for (label, hot) in [("distinct tuples", false), ("one hot tuple", true)] {
        // Upserts, seconds, client and server CPU-s: the store's phases, then pgbench's.
        let mut sums = [[0.0f64; 4]; 2];
        let mut by_round = Vec::new();
        for round in 0..rounds {
            let mut rates = [0.0f64; 2];
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for side in order {
                settle(&store).await;
                let t0 = sample();
                let (ops, rate) = if side == 0 {
                    let (ops, rate) = run_store(&store, writers, secs, hot, &next).await;
                    (ops as f64, rate)
                } else {
                    let tps = run_pgbench(&url, writers, secs, hot, true);
                    (tps * secs as f64, tps)
                };
                let t1 = sample();
                // The store runs in this process; pgbench is a child it reaped.
                let client = if side == 0 { t1.0 - t0.0 } else { t1.1 - t0.1 };
                let sum = &mut sums[side];
                sum[0] += ops;
                sum[1] += ops / rate.max(f64::MIN_POSITIVE);
                sum[2] += client;
                sum[3] += t1.2 - t0.2;
                rates[side] = rate;
            }
            by_round.push(rates[0] / rates[1].max(f64::MIN_POSITIVE) * 100.0);
        }
        let ours = sums[0][0] / sums[0][1].max(f64::MIN_POSITIVE);
        let floor = sums[1][0] / sums[1][1].max(f64::MIN_POSITIVE);
        settle(&store).await;
        let t2 = sample();
        let (direct_ops, direct) = run_direct(&url, writers, secs, hot).await;
        let t3 = sample();
        settle(&store).await;
        let unlocked = run_pgbench(&url, writers, secs, hot, false);
        let ratio = ours / floor * 100.0;
        let rounds_text: Vec<String> = by_round.iter().map(|r| format!("{r:.0}%")).collect();
        println!(
            "{label}: store {ours:.0}/s, pgbench {floor:.0}/s over {rounds} rounds: {ratio:.0}% \
             (by round: {}); sqlx on a connection per writer {direct:.0}/s, pgbench without \
             the advisory lock {unlocked:.0}/s",
            rounds_text.join(", ")
        );
        rows.push((label, ours, direct, floor, unlocked, rounds_text.join(", ")));
        cpu_rows.push((
            label,
            [
                (per(sums[0][2], sums[0][0]), per(sums[0][3], sums[0][0])),
                (
                    per(t3.0 - t2.0, direct_ops as f64),
                    per(t3.2 - t2.2, direct_ops as f64),
                ),
                (per(sums[1][2], sums[1][0]), per(sums[1][3], sums[1][0])),
            ],
        ));
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM scan_report")
        .fetch_one(store.pool())
        .await
        .expect("count");
    println!("rows after the run: {count}");
    println!(
        "\n| workload | store (upserts/s) | sqlx, a connection per writer | pgbench -c {writers} (tps) | store / pgbench | by round | sqlx / pgbench | pgbench without the advisory lock | lock costs pgbench |"
    );
    println!("|---|---:|---:|---:|---:|---|---:|---:|---:|");
    for (label, ours, direct, floor, unlocked, by_round) in rows {
        println!(
            "| {label} | {ours:.0} | {direct:.0} | {floor:.0} | {:.0}% | {by_round} | {:.0}% | {unlocked:.0} | {:.0}% |",
            ours / floor * 100.0,
            direct / floor * 100.0,
            (1.0 - floor / unlocked) * 100.0
        );
    }
    if postmaster.is_some() {
        println!(
            "\nCPU per upsert, ms (client / PostgreSQL; 2 cores shared by both, /proc/<pid>/stat):"
        );
        println!("| workload | store | sqlx, a connection per writer | pgbench |");
        println!("|---|---:|---:|---:|");
        for (label, phases) in cpu_rows {
            let cell = |(client, server): (f64, f64)| format!("{client:.3} / {server:.3}");
            println!(
                "| {label} | {} | {} | {} |",
                cell(phases[0]),
                cell(phases[1]),
                cell(phases[2])
            );
        }
    }
    store.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .ok();
}
