//! Bounded growth under churn: ScanRequests created and deleted in waves for a soak period, with
//! a short report and job retention, against the instant development adapter. Records the
//! operator's RSS after every wave (against its RSS at the start and after the first wave), the status
//! writes per request (against the one write a request cannot avoid), and the table sizes once
//! the sweep has run (against the tables right after the last wave).
//!
//! `DATABASE_URL=... cargo bench --bench churn` (scripts/bench.sh starts PostgreSQL).
//! Env: `BENCH_WAVES` (default 10), `BENCH_WAVE` (requests per wave, default 1000),
//! `BENCH_SOAK_SECONDS` (the least the waves take in all, default 600).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use devscanner::{DevScanner, DevScannerConfig};
use futures::{StreamExt, TryStreamExt, stream};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use scanreport_operator::api::{ScanRequest, Scanner, ScannerSpec};
use testkit::fixtures::ScanRequestBuilder;
use testkit::operator::{Operator, condition};
use testkit::{envtest, fresh_namespace, pgtest};

const VULN: &str = "application/vnd.security.vulnerability.report; version=1.1";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Status writes per object: resourceVersion changes after the object was first seen.
fn count_writes(api: Api<ScanRequest>, writes: Arc<Mutex<HashMap<String, (String, u32)>>>) {
    tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default()).boxed();
        while let Ok(Some(event)) = events.try_next().await {
            let watcher::Event::Apply(sr) = event else {
                continue;
            };
            let rv = sr.resource_version().unwrap_or_default();
            let mut w = writes.lock().expect("lock");
            let entry = w.entry(sr.name_any()).or_insert_with(|| (rv.clone(), 0));
            if entry.0 != rv {
                entry.0 = rv;
                entry.1 += 1;
            }
        }
    });
}

async fn table_sizes(pool: &sqlx::PgPool) -> (i64, i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM scan_report), pg_total_relation_size('scan_report'),
                (SELECT count(*) FROM scan_job), pg_total_relation_size('scan_job')",
    )
    .fetch_one(pool)
    .await
    .expect("sizes")
}

async fn wait_all_ready(api: &Api<ScanRequest>, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let ready = api
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .iter()
            .filter(|s| condition(s, "Ready").is_some_and(|c| c.status == "True"))
            .count();
        if ready == n {
            return;
        }
        assert!(Instant::now() < deadline, "{ready} of {n} Ready");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::main]
async fn main() {
    let waves = env_or("BENCH_WAVES", 10).max(2);
    let wave = env_or("BENCH_WAVE", 1000).max(1);
    let soak = Duration::from_secs(env_or("BENCH_SOAK_SECONDS", 600) as u64);
    let env = envtest::env().await;
    let client: Client = env.client();
    let database_url = pgtest::fresh_database("benchchurn").await;
    let pool = sqlx::PgPool::connect(&database_url).await.expect("pool");
    // An instant adapter and room for 64 scans at once, as in benches/operator.rs: the run
    // measures what churn leaves behind, not the scanner's speed.
    let adapter = DevScanner::start(DevScannerConfig {
        pending_polls: 0,
        ..Default::default()
    })
    .await
    .expect("adapter");
    let scanner = Scanner::new(
        "churn",
        ScannerSpec {
            url: adapter.base_url().to_owned(),
            registration_uuid: None,
            auth: None,
            ca_bundle: None,
            max_in_flight: Some(64),
            request_timeout: "10s".into(),
        },
    );
    Api::<Scanner>::all(client.clone())
        .create(&PostParams::default(), &scanner)
        .await
        .expect("create the Scanner");
    let ns = fresh_namespace(&client, "churn").await;
    let operator = Operator::start(
        env,
        &database_url,
        &[&ns],
        &[
            "--report-retention",
            "20s",
            "--job-retention",
            "20s",
            "--concurrency",
            "16",
        ],
    );
    let pid = operator.pid().expect("pid");
    let api = Api::<ScanRequest>::namespaced(client.clone(), &ns);
    let writes = Arc::new(Mutex::new(HashMap::new()));
    count_writes(api.clone(), writes.clone());

    // The start: watches synced, nothing reconciled yet.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let start_rss = rss_kib(pid).max(1);
    let started = Instant::now();
    let pace = soak / u32::try_from(waves).unwrap_or(1);
    let mut rss = Vec::new();
    for w in 0..waves {
        let wave_started = Instant::now();
        stream::iter(0..wave)
            .for_each_concurrent(16, |i| {
                let api = api.clone();
                let n = w * wave + i;
                async move {
                    let sr = ScanRequestBuilder::new(&format!("c-{n:06}"), "churn")
                        .digest(&format!("sha256:{:064x}", (0xc4u64 << 40) | n as u64))
                        .no_tag()
                        .mime_types(&[VULN])
                        .build();
                    api.create(&PostParams::default(), &sr)
                        .await
                        .expect("create");
                }
            })
            .await;
        wait_all_ready(&api, wave).await;
        api.delete_collection(&DeleteParams::default(), &ListParams::default())
            .await
            .expect("delete");
        let deadline = Instant::now() + Duration::from_secs(120);
        while !api
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .is_empty()
        {
            assert!(Instant::now() < deadline, "the wave was not deleted");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // Let the process settle (one trim of freed memory, and a margin), then sample.
        tokio::time::sleep(scanreport_operator::memory::TRIM_INTERVAL + Duration::from_secs(2))
            .await;
        rss.push((started.elapsed(), rss_kib(pid)));
        if let Some(rest) = pace.checked_sub(wave_started.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }
    let after_waves = table_sizes(&pool).await;
    // The sweep runs every 5 s with a 20 s retention: give it a minute.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let after_sweep = table_sizes(&pool).await;
    let final_rss = rss_kib(pid);

    let total = waves * wave;
    let (sum, max) = {
        let w = writes.lock().expect("lock");
        let sum: u32 = w.values().map(|(_, n)| *n).sum();
        let max = w.values().map(|(_, n)| *n).max().unwrap_or(0);
        (sum, max)
    };
    let floor = rss[0].1.max(1);
    println!();
    println!(
        "Kubernetes {}, {waves} waves of {wave} ScanRequests created and deleted over {:.0} s",
        env.server_version(),
        started.elapsed().as_secs_f64()
    );
    println!();
    println!("| after wave | elapsed | operator RSS | RSS / start | RSS / after wave 1 |");
    println!("| ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| (start) | 0 s | {:.1} MiB | 1.00 | |",
        start_rss as f64 / 1024.0
    );
    for (i, (t, kib)) in rss.iter().enumerate() {
        println!(
            "| {} | {:.0} s | {:.1} MiB | {:.2} | {:.2} |",
            i + 1,
            t.as_secs_f64(),
            *kib as f64 / 1024.0,
            *kib as f64 / start_rss as f64,
            *kib as f64 / floor as f64
        );
    }
    println!(
        "| after the sweep | {:.0} s | {:.1} MiB | {:.2} | {:.2} |",
        started.elapsed().as_secs_f64(),
        final_rss as f64 / 1024.0,
        final_rss as f64 / start_rss as f64,
        final_rss as f64 / floor as f64
    );
    println!();
    println!("| table | rows after the waves | size | rows after the sweep | size |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    let kib = |b: i64| b as f64 / 1024.0;
    println!(
        "| scan_report | {} | {:.0} KiB | {} | {:.0} KiB |",
        after_waves.0,
        kib(after_waves.1),
        after_sweep.0,
        kib(after_sweep.1)
    );
    println!(
        "| scan_job | {} | {:.0} KiB | {} | {:.0} KiB |",
        after_waves.2,
        kib(after_waves.3),
        after_sweep.2,
        kib(after_sweep.3)
    );
    println!();
    println!(
        "Status writes per request: {:.2} (floor 1, the one write of its report; at most {max} for one request)",
        f64::from(sum) / total as f64
    );
    drop(operator);
}
