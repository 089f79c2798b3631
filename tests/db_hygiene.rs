//! Database hygiene against a real PostgreSQL: an adapter's `generated_at` in the future cannot
//! pin a report, and a hung statement or lock wait becomes a retryable error instead of a
//! reconcile that never returns.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use scanreport_operator::api::SeveritySummary;
use scanreport_operator::identity::{Digest, MimeType, ReportKey, default_registration_uuid};
use scanreport_operator::store::{NewReport, PoolConfig, REPORT_LOCK_CLASS, Store, UpsertOutcome};
use sqlx::Connection;
use testkit::pgtest;

const VULN: &str = "application/vnd.security.vulnerability.report; version=1.1";

async fn store(prefix: &str, config: PoolConfig) -> (Store, String) {
    let url = pgtest::fresh_database(prefix).await;
    let store = Store::connect(&url, &config).await.expect("connect");
    store.migrate().await.expect("migrate");
    (store, url)
}

fn report(marker: i64, generated_at: DateTime<Utc>) -> NewReport {
    NewReport {
        key: ReportKey {
            digest: Digest::parse(&format!("sha256:{:064x}", 7)).expect("digest"),
            registration_uuid: default_registration_uuid("trivy").expect("uuid"),
            mime_type: MimeType::parse(VULN).expect("mime"),
        },
        report: serde_json::value::to_raw_value(&serde_json::json!({"marker": marker}))
            .expect("json"),
        summary: SeveritySummary {
            critical: marker,
            ..SeveritySummary::default()
        },
        scanner_name: "Trivy".into(),
        scanner_vendor: "Aqua Security".into(),
        scanner_version: "0.50.0".into(),
        findings: None,
        generated_at,
    }
}

#[tokio::test]
async fn a_future_generated_at_is_clamped_and_does_not_pin_the_report() {
    let config = PoolConfig {
        max_clock_skew: Duration::ZERO,
        ..PoolConfig::default()
    };
    let (store, _) = store("hygiene_future", config).await;
    let far_future = DateTime::parse_from_rfc3339("2999-01-01T00:00:00Z")
        .expect("time")
        .with_timezone(&Utc);
    let (outcome, meta) = store
        .upsert_and_read(&report(1, far_future))
        .await
        .expect("first upsert");
    assert_eq!(outcome, UpsertOutcome::Inserted);
    let stored = meta.expect("stored").generated_at;
    let db_now = store.now().await.expect("clock");
    assert!(
        stored <= db_now,
        "generated_at is clamped to the database clock: {stored} vs {db_now}"
    );

    // A report generated a moment later (by the adapter's honest clock) replaces it.
    let later = store.now().await.expect("clock");
    let (outcome, meta) = store
        .upsert_and_read(&report(2, later))
        .await
        .expect("second upsert");
    assert_eq!(
        outcome,
        UpsertOutcome::Updated,
        "a future timestamp must not keep newer reports out"
    );
    assert_eq!(meta.expect("stored").summary.critical, 2);
}

#[tokio::test]
async fn a_hung_statement_is_cancelled_by_statement_timeout_as_a_retryable_error() {
    let config = PoolConfig {
        statement_timeout: Duration::from_millis(300),
        ..PoolConfig::default()
    };
    let (store, _) = store("hygiene_stmt", config).await;
    let started = Instant::now();
    let err = sqlx::query("SELECT pg_sleep(30)")
        .execute(store.pool())
        .await
        .expect_err("statement_timeout cancels the statement");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let err = scanreport_operator::store::StoreError::Query {
        action: "sleeping",
        source: err,
    };
    assert!(err.is_transient(), "{err}");
}

#[tokio::test]
async fn an_upsert_stuck_behind_a_held_lock_fails_after_lock_timeout_as_a_retryable_error() {
    let config = PoolConfig {
        lock_timeout: Duration::from_millis(300),
        ..PoolConfig::default()
    };
    let (store, url) = store("hygiene_lock", config).await;
    let new = report(1, Utc::now());
    // Another session holds the report's lock, as a stuck writer would.
    let mut holder = sqlx::PgConnection::connect(&url).await.expect("connect");
    let mut tx = holder.begin().await.expect("begin");
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2::text))")
        .bind(REPORT_LOCK_CLASS)
        .bind(new.id().to_string())
        .execute(&mut *tx)
        .await
        .expect("take the lock");

    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(20), store.upsert(&new))
        .await
        .expect("the upsert returns instead of waiting for the lock for ever");
    let err = result.expect_err("lock_timeout ends the wait");
    assert!(err.is_transient(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    tx.rollback().await.expect("rollback");
    store
        .upsert(&new)
        .await
        .expect("works once the lock is free");
}

#[tokio::test]
async fn of_many_requesters_joined_to_one_scan_exactly_one_takes_the_poll_and_downloads() {
    use scanreport_operator::store::{Claim, Leases};
    let (store, _) = store("hygiene_poll", PoolConfig::default()).await;
    let key = report(0, Utc::now()).key;
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
        .claim(key.report_id(), key.registration_uuid, 4, "a", &leases)
        .await
        .expect("claim");
    assert_eq!(claim, Claim::Won);
    assert!(
        store
            .record_submission(key.report_id(), "a", "scan-1", &leases)
            .await
            .expect("submit")
    );
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(16));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (store, barrier, id) = (store.clone(), barrier.clone(), key.report_id());
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .take_poll(id, "scan-1", Duration::from_secs(60))
                    .await
                    .expect("take poll")
            })
        })
        .collect();
    let mut winners = 0;
    for t in tasks {
        winners += usize::from(t.await.expect("task"));
    }
    assert_eq!(winners, 1, "one download per scan, however many joined");
    // A poll scheduled for later is nobody's until it is due.
    store
        .poll_later(key.report_id(), "scan-1", Duration::from_secs(60))
        .await
        .expect("poll later");
    assert!(
        !store
            .take_poll(key.report_id(), "scan-1", Duration::from_secs(60))
            .await
            .expect("take poll")
    );
}
