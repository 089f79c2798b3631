//! Report retention and job cleanup against a real PostgreSQL: unreferenced reports go after
//! the retention in batches, referenced ones stay, a sweep racing a new reference never
//! deletes a report that reference returned, and finished jobs are removed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use scanreport_operator::api::SeveritySummary;
use scanreport_operator::identity::{Digest, MimeType, ReportKey, default_registration_uuid};
use scanreport_operator::store::{Claim, Leases, NewReport, PoolConfig, Store};
use testkit::pgtest;
use uuid::Uuid;

const VULN: &str = "application/vnd.security.vulnerability.report; version=1.1";
const RETENTION: Duration = Duration::from_secs(600);
const TOUCH_AFTER: Duration = Duration::from_secs(150);

async fn store(prefix: &str) -> Store {
    let url = pgtest::fresh_database(prefix).await;
    let config = PoolConfig {
        max_connections: 20,
        ..PoolConfig::default()
    };
    let store = Store::connect(&url, &config).await.expect("connect");
    store.migrate().await.expect("migrate");
    store
}

fn key(n: u64) -> ReportKey {
    ReportKey {
        digest: Digest::parse(&format!("sha256:{n:064x}")).unwrap(),
        registration_uuid: default_registration_uuid("trivy").unwrap(),
        mime_type: MimeType::parse(VULN).unwrap(),
    }
}

/// Stores reports for `keys`, all last referenced `age` ago.
async fn reports(store: &Store, keys: &[ReportKey], age: Duration) -> Vec<Uuid> {
    for k in keys {
        let new = NewReport {
            key: k.clone(),
            report: serde_json::value::to_raw_value(&serde_json::json!({"v": 1})).unwrap(),
            summary: SeveritySummary::default(),
            scanner_name: "Trivy".into(),
            scanner_vendor: "Aqua Security".into(),
            scanner_version: "0.50.0".into(),
            generated_at: Utc::now(),
            findings: None,
        };
        store.upsert(&new).await.unwrap();
    }
    let ids: Vec<Uuid> = keys.iter().map(ReportKey::report_id).collect();
    sqlx::query(
        "UPDATE scan_report SET last_referenced_at = now() - make_interval(secs => $2) \
         WHERE id = ANY($1)",
    )
    .bind(&ids)
    .bind(age.as_secs_f64())
    .execute(store.pool())
    .await
    .unwrap();
    ids
}

async fn existing(store: &Store) -> BTreeSet<Uuid> {
    sqlx::query_scalar::<_, Uuid>("SELECT id FROM scan_report")
        .fetch_all(store.pool())
        .await
        .unwrap()
        .into_iter()
        .collect()
}

#[tokio::test]
async fn unreferenced_reports_older_than_the_retention_are_swept_and_referenced_ones_stay() {
    let store = store("retention").await;
    let old = reports(
        &store,
        &(0..1200).map(key).collect::<Vec<_>>(),
        RETENTION * 2,
    )
    .await;
    let young = reports(&store, &[key(5000)], RETENTION / 2).await;
    // The leader found these two in some ScanRequest's status.
    let referenced = [old[0], old[1]];
    assert_eq!(
        store.touch_reports(&referenced, TOUCH_AFTER).await.unwrap(),
        2
    );
    // Refreshed just now: a second pass writes nothing.
    assert_eq!(
        store.touch_reports(&referenced, TOUCH_AFTER).await.unwrap(),
        0
    );
    // Batches of 100: the sweep loops until the table has nothing left to delete.
    let swept = store
        .sweep(Some(RETENTION), Duration::from_secs(3600), 100)
        .await
        .unwrap();
    assert_eq!(swept.reports, 1198);
    let left = existing(&store).await;
    let expected: BTreeSet<Uuid> = [old[0], old[1], young[0]].into_iter().collect();
    assert_eq!(left, expected);
    // Without retention nothing is deleted.
    reports(&store, &[key(6000)], RETENTION * 100).await;
    let swept = store
        .sweep(None, Duration::from_secs(3600), 100)
        .await
        .unwrap();
    assert_eq!(swept.reports, 0);
    assert_eq!(existing(&store).await.len(), 4);
    let sizes = store.table_bytes().await.unwrap();
    assert!(
        sizes.iter().any(|(t, b)| t == "scan_report" && *b > 0),
        "{sizes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sweep_racing_new_references_never_deletes_a_report_a_reference_read() {
    let store = store("retention_race").await;
    for round in 0..3u64 {
        let keys: Vec<ReportKey> = (0..1500).map(|n| key(round * 10_000 + n)).collect();
        let ids = reports(&store, &keys, RETENTION * 2).await;
        let sweeper = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut deleted = 0;
                loop {
                    let n = store.sweep_reports_batch(RETENTION, 10).await.unwrap();
                    deleted += n;
                    if n == 0 {
                        return deleted;
                    }
                }
            })
        };
        // Readers reference the same reports meanwhile, as reconciles of new requests do:
        // whatever a read returns is what a request's status would name.
        let ids = Arc::new(ids);
        let readers: Vec<_> = (0..6)
            .map(|r| {
                let (store, ids) = (store.clone(), ids.clone());
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    for id in ids.iter().skip(r).step_by(6) {
                        let (meta, _, _) = store.tuple_state(*id, Some(TOUCH_AFTER)).await.unwrap();
                        if meta.is_some() {
                            seen.push(*id);
                        }
                    }
                    seen
                })
            })
            .collect();
        let mut seen = Vec::new();
        for r in readers {
            seen.extend(r.await.unwrap());
        }
        let deleted = sweeper.await.unwrap();
        // Later sweeps keep them too: a read made them young.
        store.sweep_reports_batch(RETENTION, 10_000).await.unwrap();
        let left = existing(&store).await;
        let lost: Vec<&Uuid> = seen.iter().filter(|id| !left.contains(id)).collect();
        assert!(
            lost.is_empty(),
            "round {round}: {} of {} reports read were deleted afterwards ({deleted} deleted)",
            lost.len(),
            seen.len()
        );
        eprintln!(
            "round {round}: {} read and kept, {deleted} swept",
            seen.len()
        );
    }
}

#[tokio::test]
async fn finished_jobs_are_removed_after_the_job_retention_and_live_ones_stay() {
    let store = store("retention_jobs").await;
    let leases = Leases::default();
    let (done, failed, queued) = (key(1), key(2), key(3));
    for k in [&done, &failed, &queued] {
        store
            .request_scan(k, "team-a", None, false, Duration::from_secs(60), &leases)
            .await
            .unwrap();
    }
    for (k, scan) in [(&done, "s-done"), (&failed, "s-failed")] {
        assert_eq!(
            store
                .claim(k.report_id(), k.registration_uuid, 4, "me", &leases)
                .await
                .unwrap(),
            Claim::Won
        );
        store
            .record_submission(k.report_id(), "me", scan, &leases)
            .await
            .unwrap();
    }
    store.complete(done.report_id(), "s-done").await.unwrap();
    store
        .fail(failed.report_id(), "s-failed", "rejected")
        .await
        .unwrap();
    // Finished a moment ago: kept for the job retention.
    let swept = store
        .sweep(None, Duration::from_secs(3600), 100)
        .await
        .unwrap();
    assert_eq!(swept.jobs, 0);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let swept = store
        .sweep(None, Duration::from_secs(1), 100)
        .await
        .unwrap();
    assert_eq!(swept.jobs, 2);
    assert!(store.job(done.report_id()).await.unwrap().is_none());
    assert!(store.job(failed.report_id()).await.unwrap().is_none());
    assert!(store.job(queued.report_id()).await.unwrap().is_some());
    // A request that still wants the tuple simply queues it again.
    let again = store
        .request_scan(
            &done,
            "team-a",
            None,
            false,
            Duration::from_secs(60),
            &leases,
        )
        .await
        .unwrap();
    assert_eq!(again.state, scanreport_operator::store::JobState::Queued);
}
