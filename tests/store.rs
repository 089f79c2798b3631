//! The report store against a real PostgreSQL: the race-free upsert and migrations.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use scanreport_operator::api::SeveritySummary;
use scanreport_operator::identity::{Digest, MimeType, ReportKey, default_registration_uuid};
use scanreport_operator::store::{NewReport, PoolConfig, Store, UpsertOutcome};
use testkit::pgtest;
use tokio::sync::Barrier;

const VULN: &str = "application/vnd.security.vulnerability.report; version=1.1";
const WRITERS: usize = 64;
const ROUNDS: u64 = 150;

async fn store(prefix: &str) -> Store {
    store_with(prefix, WRITERS as u32 + 4).await.0
}

/// A migrated store of `connections` connections on a fresh database, and its URL.
async fn store_with(prefix: &str, connections: u32) -> (Store, String) {
    let url = pgtest::fresh_database(prefix).await;
    let config = PoolConfig {
        max_connections: connections,
        ..PoolConfig::default()
    };
    let store = Store::connect(&url, &config).await.expect("connect");
    store.migrate().await.expect("migrate");
    (store, url)
}

fn digest(n: u64) -> Digest {
    Digest::parse(&format!("sha256:{n:064x}")).expect("valid digest")
}

fn report(digest: Digest, critical: i64, generated_at: DateTime<Utc>) -> NewReport {
    NewReport {
        key: ReportKey {
            digest,
            registration_uuid: default_registration_uuid("trivy").expect("uuid"),
            mime_type: MimeType::parse(VULN).expect("mime"),
        },
        report: serde_json::value::to_raw_value(
            &serde_json::json!({"vulnerabilities": [], "marker": critical}),
        )
        .unwrap(),
        summary: SeveritySummary {
            critical,
            high: 2,
            ..SeveritySummary::default()
        },
        scanner_name: "Trivy".into(),
        scanner_vendor: "Aqua Security".into(),
        scanner_version: "0.50.0".into(),
        findings: None,
        generated_at,
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0)
        .single()
        .expect("valid time")
}

/// Runs all reports at once, released together by a barrier, and returns every outcome.
async fn race(store: &Store, reports: Vec<NewReport>) -> Vec<UpsertOutcome> {
    let barrier = Arc::new(Barrier::new(reports.len()));
    let tasks: Vec<_> = reports
        .into_iter()
        .map(|r| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.upsert(&r).await
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        let (_, outcome) = task
            .await
            .expect("task")
            .expect("an upsert must never fail, however many writers race");
        outcomes.push(outcome);
    }
    outcomes
}

async fn row_count(store: &Store) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM scan_report")
        .fetch_one(store.pool())
        .await
        .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_upserts_of_one_tuple_make_one_row_and_no_errors() {
    let store = store("race_one").await;
    // Many rounds, each a fresh tuple, so every round races on a *first* insert. Without the
    // advisory lock in the upsert, the primary key raised 23505 within a few dozen rounds here.
    for round in 0..ROUNDS {
        let d = digest(1_000 + round);
        let reports = (0..WRITERS)
            .map(|i| report(d.clone(), i as i64, t0() + Duration::seconds(i as i64)))
            .collect();
        let outcomes = race(&store, reports).await;
        let inserted = outcomes
            .iter()
            .filter(|o| **o == UpsertOutcome::Inserted)
            .count();
        assert_eq!(inserted, 1, "round {round}: exactly one writer inserts");
        let stored = store
            .get_by_key(&ReportKey {
                digest: d.clone(),
                registration_uuid: default_registration_uuid("trivy").unwrap(),
                mime_type: MimeType::parse(VULN).unwrap(),
            })
            .await
            .unwrap()
            .expect("row exists");
        // Whatever the order, the newest report is the one that stays.
        assert_eq!(
            stored.meta.generated_at,
            t0() + Duration::seconds(WRITERS as i64 - 1)
        );
        assert_eq!(stored.meta.summary.critical, WRITERS as i64 - 1);
        assert_eq!(stored.report["marker"], WRITERS as i64 - 1);
    }
    assert_eq!(row_count(&store).await, ROUNDS as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_upserts_of_distinct_tuples_make_one_row_each() {
    let store = store("race_many").await;
    let reports = (0..WRITERS as u64)
        .map(|i| report(digest(i), 1, t0()))
        .collect();
    let outcomes = race(&store, reports).await;
    assert!(outcomes.iter().all(|o| *o == UpsertOutcome::Inserted));
    assert_eq!(row_count(&store).await, WRITERS as i64);
    // Each tuple's id is the derived one, and each row is readable by it.
    for i in 0..WRITERS as u64 {
        let r = report(digest(i), 1, t0());
        let meta = store.get_meta(r.id()).await.unwrap().expect("row by id");
        assert_eq!(meta.digest, digest(i).as_str());
    }
}

#[tokio::test]
async fn an_older_report_never_overwrites_a_newer_one() {
    let store = store("newest_wins").await;
    let d = digest(7);
    let at = |s: i64| t0() + Duration::seconds(s);
    let steps = [
        (10, UpsertOutcome::Inserted),
        (5, UpsertOutcome::KeptExisting),
        (20, UpsertOutcome::Updated),
        (15, UpsertOutcome::KeptExisting),
        (20, UpsertOutcome::KeptExisting),
        (30, UpsertOutcome::Updated),
        (1, UpsertOutcome::KeptExisting),
    ];
    for (secs, expected) in steps {
        let (_, outcome) = store
            .upsert(&report(d.clone(), secs, at(secs)))
            .await
            .unwrap();
        assert_eq!(outcome, expected, "write generated at +{secs}s");
    }
    let stored = store
        .get(report(d.clone(), 0, t0()).id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.meta.generated_at, at(30));
    assert_eq!(stored.meta.summary.critical, 30);
    assert!(stored.meta.updated_at >= stored.meta.created_at);

    // Interleaved from many writers at once: the newest still wins.
    let d = digest(8);
    let mut reports: Vec<_> = (0..WRITERS as i64)
        .map(|s| report(d.clone(), s, at(s)))
        .collect();
    reports.reverse();
    race(&store, reports).await;
    let stored = store.get(report(d, 0, t0()).id()).await.unwrap().unwrap();
    assert_eq!(stored.meta.summary.critical, WRITERS as i64 - 1);
}

#[tokio::test]
async fn reads_by_id_tuple_and_digest() {
    let store = store("reads").await;
    let d = digest(42);
    let reg = default_registration_uuid("trivy").unwrap();
    let mut ids = Vec::new();
    for mime in [
        VULN,
        "application/vnd.security.sbom.report+json; version=1.0",
    ] {
        let mut r = report(d.clone(), 3, t0());
        r.key.mime_type = MimeType::parse(mime).unwrap();
        ids.push(store.upsert(&r).await.unwrap().0);
    }
    store.upsert(&report(digest(43), 1, t0())).await.unwrap();
    let listed = store.list_by_digest(&d).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .all(|m| m.digest == d.as_str() && m.registration_uuid == reg)
    );
    let by_tuple = store
        .get_by_key(&ReportKey {
            digest: d.clone(),
            registration_uuid: reg,
            mime_type: MimeType::parse(
                "Application/Vnd.Security.Vulnerability.Report;version=\"1.1\"",
            )
            .unwrap(),
        })
        .await
        .unwrap()
        .expect("found by a non-canonical spelling of the MIME type");
    assert_eq!(by_tuple.meta.id, ids[0]);
    assert_eq!(by_tuple.meta.scanner_vendor, "Aqua Security");
    assert!(store.get(uuid::Uuid::new_v4()).await.unwrap().is_none());
}

#[tokio::test]
async fn migrations_are_idempotent_and_keep_the_harbor_constraint_name() {
    let store = store("migrate_twice").await;
    let snapshot = |store: Store| async move {
        sqlx::query_as::<_, (String, i64)>(
            "SELECT (SELECT string_agg(version::text || ':' || success::text, ',' ORDER BY version) \
             FROM _sqlx_migrations), (SELECT count(*) FROM pg_constraint \
             WHERE conname = 'scan_report_digest_registration_uuid_mime_type_key')",
        )
        .fetch_one(store.pool())
        .await
        .unwrap()
    };
    store.upsert(&report(digest(1), 1, t0())).await.unwrap();
    let before = snapshot(store.clone()).await;
    store.migrate().await.expect("second migration run");
    store.migrate().await.expect("third migration run");
    assert_eq!(snapshot(store.clone()).await, before);
    assert_eq!(before.1, 1, "the tuple constraint carries Harbor's name");
    assert_eq!(row_count(&store).await, 1, "migrating again keeps the data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_migrations_are_safe() {
    let url = pgtest::fresh_database("migrate_race").await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let store = Store::connect(&url, &PoolConfig::default()).await?;
                store.migrate().await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().expect("every concurrent migrate succeeds");
    }
}

#[tokio::test]
async fn unreachable_database_is_a_transient_error_without_the_password() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("postgres://app:hunter2-secret@127.0.0.1:{port}/reports");
    let config = PoolConfig {
        acquire_timeout: std::time::Duration::from_secs(2),
        ..PoolConfig::default()
    };
    let err = Store::connect(&url, &config)
        .await
        .err()
        .expect("no server there");
    assert!(err.is_transient(), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("127.0.0.1:{port}/reports")), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
    assert!(!format!("{err:?}").contains("hunter2"));
}

/// A server that accepts the connection and never answers (a hung proxy, a stopped host) is
/// an error after the acquire timeout, not a start-up that waits for ever.
#[tokio::test]
async fn a_database_that_never_answers_is_a_transient_error_after_the_acquire_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accept and hold every connection without a byte in reply.
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let url = format!("postgres://app:hunter2-secret@127.0.0.1:{port}/reports");
    let config = PoolConfig {
        acquire_timeout: std::time::Duration::from_millis(500),
        ..PoolConfig::default()
    };
    let outcome = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        Store::connect(&url, &config),
    )
    .await
    .expect("connect gave up within its acquire timeout");
    let err = outcome.err().expect("the server never answered");
    assert!(err.is_transient(), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    silent.abort();
}

/// Reports stored before the `findings` column existed get their findings in the migration
/// that adds it, as the extraction at upsert would have made them.
#[tokio::test]
async fn the_findings_migration_backfills_old_reports_as_the_upsert_extracts_them() {
    use scanreport_operator::scanner::summary::summarize_findings;
    let store = store("findings_backfill").await;
    let body = serde_json::json!({"vulnerabilities": [
        {"id": "CVE-2024-1", "package": "openssl", "version": "3.0", "severity": " CRITICAL ",
         "fix_version": "3.1"},
        {"id": "CVE-2024-2", "package": "zlib", "version": "1", "severity": "Negligible",
         "fix_version": "  "},
        {"id": 7, "package": ["x"], "version": "1", "severity": "moderate"},
        {"id": "x".repeat(300), "package": "p", "severity": 3, "fix_version": "2"},
        {"id": "CVE-2024-3", "package": "tar", "version": "1.34", "severity": "None"},
    ]});
    let text = body.to_string();
    let mime = MimeType::parse(VULN).unwrap();
    let (_, expected) = summarize_findings(&mime, &text).unwrap().unwrap();
    let mut old = report(digest(4242), 1, t0());
    old.report = serde_json::value::RawValue::from_string(text).unwrap();
    let id = old.id();
    // As an operator without findings stored it.
    store.upsert(&old).await.unwrap();
    assert!(store.findings(&[id]).await.unwrap().is_empty());

    // The column was `jsonb` when that migration ran (a later one made it `json`).
    sqlx::query("ALTER TABLE scan_report ALTER COLUMN report TYPE jsonb USING report::jsonb")
        .execute(store.pool())
        .await
        .unwrap();
    let migration = include_str!("../migrations/20261202000001_scan_report_findings.sql");
    sqlx::raw_sql(migration)
        .execute(store.pool())
        .await
        .unwrap();
    let found: Vec<_> = store
        .findings(&[id])
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _, findings)| (id, findings))
        .collect();
    assert_eq!(found, vec![(id, expected)]);
}

/// The store's statements reuse their connections: many statements in a row open no new
/// session each (sqlx's pool answered every statement with a ping round trip; this one must
/// not trade that for a reconnect).
#[tokio::test]
async fn statements_in_a_row_reuse_one_connection() {
    let (store, _) = store_with("reuse", 2).await;
    let sessions = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT sessions FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(store.pool())
        .await
        .expect("read the session count")
    };
    store.now().await.expect("first statement");
    let before = sessions().await;
    for _ in 0..50 {
        store.now().await.expect("statement");
    }
    let digest = digest(7);
    for i in 0..20 {
        store
            .upsert(&report(digest.clone(), i, t0() + Duration::seconds(i)))
            .await
            .expect("upsert");
    }
    // The statistics collector flushes a backend's counters when it goes idle.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let opened = sessions().await - before;
    assert!(opened <= 1, "70 statements opened {opened} sessions");
    store.close().await;
}

/// A statement abandoned mid-flight (its reconcile was cancelled) leaves its connection in an
/// unknown state: it is closed, so the next statement does not queue behind the abandoned one.
#[tokio::test]
async fn a_statement_abandoned_mid_flight_does_not_hold_up_the_next_one() {
    use scanreport_operator::store::REPORT_LOCK_CLASS;
    let (store, url) = store_with("abandon", 1).await;
    let r = report(digest(9), 1, t0());
    // Another session holds the tuple's upsert lock, so the store's upsert waits on it.
    use sqlx::Connection;
    let mut blocker = sqlx::PgConnection::connect(&url).await.expect("connect");
    sqlx::query("SELECT pg_advisory_lock($1, hashtext($2::text))")
        .bind(REPORT_LOCK_CLASS)
        .bind(r.id())
        .execute(&mut blocker)
        .await
        .expect("take the lock");
    let abandoned =
        tokio::time::timeout(std::time::Duration::from_millis(300), store.upsert(&r)).await;
    assert!(abandoned.is_err(), "the upsert must wait on the lock");
    // The lock is still held: the next statement must not wait for the abandoned one.
    let next = tokio::time::timeout(std::time::Duration::from_secs(5), store.now()).await;
    assert!(
        matches!(next, Ok(Ok(_))),
        "the next statement waited behind the abandoned one: {next:?}"
    );
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut blocker)
        .await
        .expect("release the lock");
    store.close().await;
}

/// A report body reads back as the adapter sent it, byte for byte: its keys in their order,
/// its spacing, its number spellings. The store keeps the text, it does not re-encode it.
#[tokio::test]
async fn a_report_body_reads_back_exactly_as_the_adapter_sent_it() {
    let store = store("body_verbatim").await;
    let sent = r#"{"vulnerabilities": [{"id":"CVE-2024-1","severity":"High","score":7.50}],
  "scanner":{"name":"Trivy","vendor":"Aqua Security"},"artifact":{"repository":"library/app"}}"#;
    let mut new = report(digest(9001), 0, t0());
    new.report = serde_json::value::RawValue::from_string(sent.to_owned()).unwrap();
    let id = new.id();
    store.upsert(&new).await.unwrap();

    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let n = store.stream_body(id, 1024, &tx).await.unwrap();
    drop(tx);
    let mut read = Vec::new();
    while let Some(piece) = rx.recv().await {
        read.extend(piece.unwrap());
    }
    assert_eq!(n, sent.len() as u64);
    assert_eq!(String::from_utf8(read).unwrap(), sent);
    // And the decoded report is the same JSON.
    let stored = store.get(id).await.unwrap().expect("stored");
    assert_eq!(
        stored.report,
        serde_json::from_str::<serde_json::Value>(sent).unwrap()
    );
}
