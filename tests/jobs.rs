//! The single-flight scan job protocol against a real PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use scanreport_operator::identity::ReportKey;
use scanreport_operator::identity::{Digest, MimeType, default_registration_uuid};
use scanreport_operator::store::{
    Claim, Completes, JobState, Leases, Opened, Opening, PoolConfig, Store,
};
use testkit::pgtest;
use tokio::sync::Barrier;
use uuid::Uuid;

const HOUR: Duration = Duration::from_secs(3600);

async fn store() -> Store {
    let url = pgtest::fresh_database("jobs").await;
    let config = PoolConfig {
        max_connections: 40,
        ..PoolConfig::default()
    };
    let store = Store::connect(&url, &config).await.expect("connect");
    store.migrate().await.expect("migrate");
    store
}

fn tuple(n: u64, scanner: &str) -> ReportKey {
    ReportKey {
        digest: Digest::parse(&format!("sha256:{n:064x}")).unwrap(),
        registration_uuid: default_registration_uuid(scanner).unwrap(),
        mime_type: MimeType::parse("application/vnd.security.vulnerability.report; version=1.1")
            .unwrap(),
    }
}

fn leases() -> Leases {
    Leases {
        claim: Duration::from_secs(60),
        scan: Duration::from_secs(600),
        queue: Duration::from_secs(60),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_requesters_submit_exactly_once() {
    let store = store().await;
    let t = tuple(1, "trivy");
    let n = 32;
    let barrier = Arc::new(Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (store, barrier, t) = (store.clone(), barrier.clone(), t.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .request_scan(&t, "team-a", None, false, HOUR, &leases())
                    .await
                    .unwrap();
                let holder = format!("replica-{i}");
                let claim = store
                    .claim(t.report_id(), t.registration_uuid, 4, &holder, &leases())
                    .await
                    .unwrap();
                if claim == Claim::Won {
                    assert!(
                        store
                            .record_submission(t.report_id(), &holder, "scan-1", &leases())
                            .await
                            .unwrap()
                    );
                }
                claim
            })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        if task.await.unwrap() == Claim::Won {
            won += 1;
        }
    }
    assert_eq!(won, 1, "exactly one requester submits");
    let job = store.job(t.report_id()).await.unwrap().unwrap();
    assert!(matches!(job.state, JobState::Submitted { ref scan_id, .. } if scan_id == "scan-1"));

    // Completing is idempotent, and a request satisfied by that completion does not rescan.
    let before = store.now().await.unwrap();
    assert!(
        store
            .complete(t.report_id(), "scan-1")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .complete(t.report_id(), "scan-1")
            .await
            .unwrap()
            .is_none()
    );
    let job = store
        .request_scan(&t, "team-a", Some(before), false, HOUR, &leases())
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Done);
    // A demand for a scan newer than the last completion re-queues it, once.
    let after = store.now().await.unwrap();
    let job = store
        .request_scan(&t, "team-a", Some(after), false, HOUR, &leases())
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.completed_at.map(|c| c < after), Some(true));
}

#[tokio::test]
async fn the_in_flight_limit_queues_in_arrival_order() {
    let store = store().await;
    let reg = default_registration_uuid("limited").unwrap();
    let tuples: Vec<_> = (0..5).map(|i| tuple(100 + i, "limited")).collect();
    for t in &tuples {
        store
            .request_scan(t, "team-a", None, false, HOUR, &leases())
            .await
            .unwrap();
        // Distinct enqueue times keep the order observable.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Ask in reverse order: only the two oldest may go with a limit of 2.
    let mut results = Vec::new();
    for t in tuples.iter().rev() {
        results.push(
            store
                .claim(t.report_id(), reg, 2, "me", &leases())
                .await
                .unwrap(),
        );
    }
    results.reverse();
    assert_eq!(results[0], Claim::Won);
    assert_eq!(results[1], Claim::Won);
    assert!(
        results[2..]
            .iter()
            .all(|c| matches!(c, Claim::Queued { .. })),
        "{results:?}"
    );
    assert_eq!(store.scanner_load(reg).await.unwrap(), (2, 3));
    // A slot frees up when a scan completes; the next in line gets it.
    store
        .record_submission(tuples[0].report_id(), "me", "s0", &leases())
        .await
        .unwrap();
    store.complete(tuples[0].report_id(), "s0").await.unwrap();
    assert!(matches!(
        store
            .claim(tuples[3].report_id(), reg, 2, "me", &leases())
            .await
            .unwrap(),
        Claim::Queued { ahead: 1 }
    ));
    assert_eq!(
        store
            .claim(tuples[2].report_id(), reg, 2, "me", &leases())
            .await
            .unwrap(),
        Claim::Won
    );
    // One slot free and exactly one job queued before the asker: the older one keeps it.
    store
        .record_submission(tuples[1].report_id(), "me", "s1", &leases())
        .await
        .unwrap();
    store.complete(tuples[1].report_id(), "s1").await.unwrap();
    assert!(matches!(
        store
            .claim(tuples[4].report_id(), reg, 2, "me", &leases())
            .await
            .unwrap(),
        Claim::Queued { ahead: 1 }
    ));
    assert_eq!(
        store
            .claim(tuples[3].report_id(), reg, 2, "me", &leases())
            .await
            .unwrap(),
        Claim::Won
    );
}

#[tokio::test]
async fn a_crashed_claimant_is_replaced_after_its_lease() {
    let store = store().await;
    let t = tuple(7, "trivy");
    let short = Leases {
        claim: Duration::from_millis(300),
        ..leases()
    };
    store
        .request_scan(&t, "team-a", None, false, HOUR, &short)
        .await
        .unwrap();
    assert_eq!(
        store
            .claim(t.report_id(), t.registration_uuid, 4, "crashed", &short)
            .await
            .unwrap(),
        Claim::Won
    );
    // While the lease lives, others must wait.
    assert!(matches!(
        store
            .claim(t.report_id(), t.registration_uuid, 4, "other", &short)
            .await
            .unwrap(),
        Claim::Taken(_)
    ));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        store
            .claim(t.report_id(), t.registration_uuid, 4, "other", &short)
            .await
            .unwrap(),
        Claim::Won
    );
    // The crashed holder's late submission is refused: it no longer holds the claim.
    assert!(
        !store
            .record_submission(t.report_id(), "crashed", "late", &short)
            .await
            .unwrap()
    );
    assert!(
        store
            .record_submission(t.report_id(), "other", "scan-2", &short)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn lost_and_failed_scans() {
    let store = store().await;
    let t = tuple(9, "trivy");
    store
        .request_scan(&t, "team-a", None, false, HOUR, &leases())
        .await
        .unwrap();
    store
        .claim(t.report_id(), t.registration_uuid, 4, "a", &leases())
        .await
        .unwrap();
    store
        .record_submission(t.report_id(), "a", "s1", &leases())
        .await
        .unwrap();
    // The adapter forgot s1: back to the queue, then a new submission.
    store
        .requeue_lost(t.report_id(), "s1", &leases())
        .await
        .unwrap();
    assert_eq!(
        store.job(t.report_id()).await.unwrap().unwrap().state,
        JobState::Queued
    );
    assert_eq!(
        store
            .claim(t.report_id(), t.registration_uuid, 4, "b", &leases())
            .await
            .unwrap(),
        Claim::Won
    );
    store
        .record_submission(t.report_id(), "b", "s2", &leases())
        .await
        .unwrap();
    // A stale completion of the lost scan changes nothing.
    assert!(store.complete(t.report_id(), "s1").await.unwrap().is_none());
    store
        .fail(t.report_id(), "s2", "adapter said 422")
        .await
        .unwrap();
    let job = store
        .request_scan(&t, "team-a", None, false, HOUR, &leases())
        .await
        .unwrap();
    assert_eq!(
        job.state,
        JobState::Failed {
            error: "adapter said 422".into()
        }
    );
    // Only an explicit retry (the request changed) re-queues a failed job.
    let job = store
        .request_scan(&t, "team-a", None, true, HOUR, &leases())
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.attempts, 2);
}

#[tokio::test]
async fn abandoned_queue_entries_do_not_block_the_queue() {
    let store = store().await;
    let reg = default_registration_uuid("trivy").unwrap();
    let brief = Leases {
        queue: Duration::from_millis(200),
        ..leases()
    };
    let (gone, next) = (tuple(20, "trivy"), tuple(21, "trivy"));
    store
        .request_scan(&gone, "team-a", None, false, HOUR, &brief)
        .await
        .unwrap();
    store
        .request_scan(&next, "team-a", None, false, HOUR, &brief)
        .await
        .unwrap();
    assert!(matches!(
        store
            .claim(next.report_id(), reg, 1, "me", &brief)
            .await
            .unwrap(),
        Claim::Queued { ahead: 1 }
    ));
    // Nobody refreshes `gone` (its ScanRequest was deleted); it stops counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    store
        .request_scan(&next, "team-a", None, false, HOUR, &brief)
        .await
        .unwrap();
    assert_eq!(
        store
            .claim(next.report_id(), reg, 1, "me", &brief)
            .await
            .unwrap(),
        Claim::Won
    );
}

/// Drives a scanner with `max` slots the way requesters do: every queued job not in `won`
/// asks for a slot in enqueue order; a winner's scan completes at once and is appended to
/// `won`, and the next round starts. Stops once `until` won or after `rounds` rounds.
async fn serve(
    store: &Store,
    queued: &[(ReportKey, &str)],
    max: i64,
    won: &mut Vec<Uuid>,
    until: Option<Uuid>,
    rounds: usize,
) {
    for _ in 0..rounds {
        for (t, ns) in queued {
            let id = t.report_id();
            if won.contains(&id) {
                continue;
            }
            store
                .request_scan(t, ns, None, false, HOUR, &leases())
                .await
                .unwrap();
            if store
                .claim(id, t.registration_uuid, max, "me", &leases())
                .await
                .unwrap()
                == Claim::Won
            {
                won.push(id);
                let scan = format!("scan-{id}");
                store
                    .record_submission(id, "me", &scan, &leases())
                    .await
                    .unwrap();
                store.complete(id, &scan).await.unwrap();
                if until == Some(id) {
                    return;
                }
                break;
            }
        }
    }
}

#[tokio::test]
async fn a_lone_namespace_is_served_after_at_most_one_job_of_a_namespace_with_200_queued() {
    let store = store().await;
    let reg = default_registration_uuid("trivy").unwrap();
    // 200 jobs of team-big, all enqueued before team-small's only one.
    let mut queued: Vec<(ReportKey, &str)> = (0..200)
        .map(|n| (tuple(1000 + n, "trivy"), "team-big"))
        .collect();
    let lone = tuple(5000, "trivy");
    queued.push((lone.clone(), "team-small"));
    for (t, ns) in &queued {
        store
            .request_scan(t, ns, None, false, HOUR, &leases())
            .await
            .unwrap();
    }
    assert_eq!(
        store.queue_depths(reg).await.unwrap(),
        vec![("team-big".to_owned(), 200), ("team-small".to_owned(), 1)]
    );
    let mut won = Vec::new();
    serve(&store, &queued, 1, &mut won, Some(lone.report_id()), 4).await;
    assert_eq!(won.last(), Some(&lone.report_id()), "won: {}", won.len());
    assert!(
        won.len() <= 2,
        "team-small waited for {} scans of team-big",
        won.len() - 1
    );
    assert_eq!(
        store.queue_depths(reg).await.unwrap(),
        vec![("team-big".to_owned(), 200 - (won.len() as i64 - 1))]
    );
}

#[tokio::test]
async fn free_slots_alternate_between_namespaces_and_stay_in_order_within_one() {
    let store = store().await;
    let a: Vec<_> = (0..3)
        .map(|n| (tuple(100 + n, "trivy"), "team-a"))
        .collect();
    let b: Vec<_> = (0..3)
        .map(|n| (tuple(200 + n, "trivy"), "team-b"))
        .collect();
    // team-a asks first for all of its scans, team-b after.
    let queued: Vec<(ReportKey, &str)> = a.iter().chain(b.iter()).cloned().collect();
    for (t, ns) in &queued {
        store
            .request_scan(t, ns, None, false, HOUR, &leases())
            .await
            .unwrap();
    }
    let mut order = Vec::new();
    serve(&store, &queued, 1, &mut order, None, queued.len()).await;
    let ns_of = |id: &Uuid| {
        queued
            .iter()
            .find(|(t, _)| t.report_id() == *id)
            .map(|(_, ns)| *ns)
            .unwrap()
    };
    let namespaces: Vec<&str> = order.iter().map(ns_of).collect();
    assert_eq!(
        namespaces,
        ["team-a", "team-b", "team-a", "team-b", "team-a", "team-b"]
    );
    let a_order: Vec<Uuid> = order
        .iter()
        .copied()
        .filter(|id| ns_of(id) == "team-a")
        .collect();
    let a_ids: Vec<Uuid> = a.iter().map(|(t, _)| t.report_id()).collect();
    assert_eq!(
        a_order, a_ids,
        "first come, first served within a namespace"
    );
}

#[tokio::test]
async fn a_job_two_namespaces_wait_for_counts_for_each_and_an_abandoned_waiter_stops_counting() {
    let store = store().await;
    let reg = default_registration_uuid("trivy").unwrap();
    let brief = Leases {
        queue: Duration::from_millis(300),
        ..leases()
    };
    let shared = tuple(300, "trivy");
    store
        .request_scan(&shared, "team-a", None, false, HOUR, &brief)
        .await
        .unwrap();
    store
        .request_scan(&shared, "team-b", None, false, HOUR, &leases())
        .await
        .unwrap();
    assert_eq!(
        store.queue_depths(reg).await.unwrap(),
        vec![("team-a".to_owned(), 1), ("team-b".to_owned(), 1)]
    );
    // team-a's requester went away: only team-b still waits for the job.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        store.queue_depths(reg).await.unwrap(),
        vec![("team-b".to_owned(), 1)]
    );
}

fn new_report(t: &ReportKey) -> scanreport_operator::store::NewReport {
    scanreport_operator::store::NewReport {
        key: t.clone(),
        report: serde_json::value::to_raw_value(&serde_json::json!({"vulnerabilities": []}))
            .unwrap(),
        summary: Default::default(),
        findings: None,
        scanner_name: "Trivy".into(),
        scanner_vendor: "Aqua Security".into(),
        scanner_version: "0.50.0".into(),
        generated_at: chrono::Utc::now(),
    }
}

fn opening<'a>(t: &'a ReportKey, holder: &'a str, max: i64, leases: &'a Leases) -> Opening<'a> {
    Opening {
        key: t,
        namespace: "team-a",
        max_in_flight: max,
        holder,
        leases,
    }
}

/// Racing first reads of a new tuple: exactly one creates and claims the job in its read; the
/// others either read that job or are told it exists, and join it through the usual request and
/// claim without a second submission.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_first_reads_of_a_new_tuple_open_it_exactly_once() {
    let store = store().await;
    let t = tuple(7, "trivy");
    let n = 32;
    let barrier = Arc::new(Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (store, barrier, t) = (store.clone(), barrier.clone(), t.clone());
            tokio::spawn(async move {
                let holder = format!("replica-{i}");
                let leases = leases();
                barrier.wait().await;
                let state = store
                    .tuple_state_or_open(
                        t.report_id(),
                        None,
                        Some(&opening(&t, &holder, 4, &leases)),
                    )
                    .await
                    .unwrap();
                match state.opened {
                    Some(Opened::Won) => {
                        assert!(state.job.is_none() && state.meta.is_none());
                        true
                    }
                    Some(Opened::Queued { .. }) => panic!("one job, four slots: never queued"),
                    Some(Opened::Exists) | None => {
                        assert!(state.opened.is_some() || state.job.is_some());
                        store
                            .request_scan(&t, "team-a", None, false, HOUR, &leases)
                            .await
                            .unwrap();
                        let claim = store
                            .claim(t.report_id(), t.registration_uuid, 4, &holder, &leases)
                            .await
                            .unwrap();
                        assert!(matches!(claim, Claim::Taken(_)), "{claim:?}");
                        false
                    }
                }
            })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        if task.await.unwrap() {
            won += 1;
        }
    }
    assert_eq!(won, 1, "exactly one first read claims the scan");
    let job = store.job(t.report_id()).await.unwrap().unwrap();
    assert!(matches!(job.state, JobState::Submitting { .. }));
    assert_eq!(job.attempts, 1);
}

/// A read that opens honours the in-flight limit, and a tuple that has a job or a report is
/// never opened: the read is then only a read.
#[tokio::test]
async fn opening_queues_at_the_limit_and_leaves_known_tuples_alone() {
    let store = store().await;
    let leases = leases();
    let (a, b) = (tuple(11, "trivy"), tuple(12, "trivy"));
    let first = store
        .tuple_state_or_open(a.report_id(), None, Some(&opening(&a, "me", 1, &leases)))
        .await
        .unwrap();
    assert_eq!(first.opened, Some(Opened::Won));
    let second = store
        .tuple_state_or_open(b.report_id(), None, Some(&opening(&b, "me", 1, &leases)))
        .await
        .unwrap();
    assert_eq!(second.opened, Some(Opened::Queued { ahead: 0 }));
    assert_eq!(
        store.job(b.report_id()).await.unwrap().unwrap().state,
        JobState::Queued
    );
    // Known now: read, not opened again (no second claim attempt).
    let again = store
        .tuple_state_or_open(a.report_id(), None, Some(&opening(&a, "other", 1, &leases)))
        .await
        .unwrap();
    assert_eq!(again.opened, None);
    assert!(matches!(
        again.job.map(|j| j.state),
        Some(JobState::Submitting { holder }) if holder == "me"
    ));
    // A stored report without a job (the job swept) is not opened either.
    let c = tuple(13, "trivy");
    store.upsert(&new_report(&c)).await.unwrap();
    let stored = store
        .tuple_state_or_open(c.report_id(), None, Some(&opening(&c, "me", 1, &leases)))
        .await
        .unwrap();
    assert_eq!(stored.opened, None);
    assert!(stored.meta.is_some() && stored.job.is_none());
    assert!(store.job(c.report_id()).await.unwrap().is_none());
}

/// A slot won by opening a new tuple is that namespace's turn, as a claim's is: when both
/// namespaces then queue one job each, the one not served yet goes first, whatever the
/// arrival order.
#[tokio::test]
async fn a_slot_won_by_opening_counts_as_the_namespaces_turn() {
    let store = store().await;
    let leases = leases();
    let opened = tuple(41, "trivy");
    let state = store
        .tuple_state_or_open(
            opened.report_id(),
            None,
            Some(&opening(&opened, "me", 1, &leases)),
        )
        .await
        .unwrap();
    assert_eq!(state.opened, Some(Opened::Won));
    let job = store.job(opened.report_id()).await.unwrap().unwrap();
    assert!(matches!(&job.state, JobState::Submitting { holder } if holder == "me"));
    assert_eq!(job.attempts, 1);
    assert!(
        store
            .record_submission(opened.report_id(), "me", "scan-41", &leases)
            .await
            .unwrap()
    );
    store.complete(opened.report_id(), "scan-41").await.unwrap();
    // team-a (served by the opening) asks first, team-b after.
    let queued = vec![
        (tuple(42, "trivy"), "team-a"),
        (tuple(43, "trivy"), "team-b"),
    ];
    for (t, ns) in &queued {
        store
            .request_scan(t, ns, None, false, HOUR, &leases)
            .await
            .unwrap();
    }
    let mut won = Vec::new();
    serve(&store, &queued, 1, &mut won, None, 1).await;
    assert_eq!(won, vec![queued[1].0.report_id()], "team-b's turn first");
}

/// The submission takes the first poll for the submitter; the report's upsert completes the
/// scan in the same statement, once; a report kept (older than the stored one) still completes
/// its scan.
#[tokio::test]
async fn submission_takes_the_first_poll_and_the_upsert_completes_the_scan() {
    let store = store().await;
    let leases = leases();
    let t = tuple(21, "trivy");
    let state = store
        .tuple_state_or_open(t.report_id(), None, Some(&opening(&t, "me", 4, &leases)))
        .await
        .unwrap();
    assert_eq!(state.opened, Some(Opened::Won));
    assert!(
        !store
            .record_submission_and_poll(t.report_id(), "someone-else", "scan-1", &leases)
            .await
            .unwrap(),
        "only the holder records its submission"
    );
    assert!(
        store
            .record_submission_and_poll(t.report_id(), "me", "scan-1", &leases)
            .await
            .unwrap()
    );
    // The poll is the submitter's: nobody else takes it before the claim lease runs out.
    assert!(
        !store
            .take_poll(t.report_id(), "scan-1", leases.claim)
            .await
            .unwrap()
    );
    let (outcome, meta, took) = store
        .complete_with_report(new_report(&t), Completes::Scan("scan-1"))
        .await
        .unwrap();
    assert_eq!(outcome, scanreport_operator::store::UpsertOutcome::Inserted);
    assert!(meta.is_some());
    assert!(took.is_some(), "the scan was completed by the upsert");
    let job = store.job(t.report_id()).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Done);
    assert!(job.completed_at.is_some());
    // Again (a late second fetch of the same scan): the report is kept, nothing to complete.
    let mut older = new_report(&t);
    older.generated_at -= chrono::Duration::hours(1);
    let (outcome, meta, took) = store
        .complete_with_report(older, Completes::Scan("scan-1"))
        .await
        .unwrap();
    assert_eq!(
        outcome,
        scanreport_operator::store::UpsertOutcome::KeptExisting
    );
    assert!(meta.is_some(), "the stored row is read back");
    assert!(took.is_none());

    // A kept report still completes the scan it belongs to.
    let u = tuple(22, "trivy");
    store.upsert(&new_report(&u)).await.unwrap();
    store
        .request_scan(&u, "team-a", Some(chrono::Utc::now()), false, HOUR, &leases)
        .await
        .unwrap();
    assert_eq!(
        store
            .claim(u.report_id(), u.registration_uuid, 4, "me", &leases)
            .await
            .unwrap(),
        Claim::Won
    );
    assert!(
        store
            .record_submission_and_poll(u.report_id(), "me", "scan-2", &leases)
            .await
            .unwrap()
    );
    let mut stale = new_report(&u);
    stale.generated_at -= chrono::Duration::hours(1);
    let (outcome, _, took) = store
        .complete_with_report(stale, Completes::Scan("scan-2"))
        .await
        .unwrap();
    assert_eq!(
        outcome,
        scanreport_operator::store::UpsertOutcome::KeptExisting
    );
    assert!(took.is_some());
    assert_eq!(
        store.job(u.report_id()).await.unwrap().unwrap().state,
        JobState::Done
    );
}

/// A submitter whose first poll brought the report stores it and completes the job it still
/// claims, in one statement: only its own claim, and only while it holds it.
#[tokio::test]
async fn a_report_from_the_first_poll_completes_only_the_claim_of_its_submitter() {
    let store = store().await;
    let leases = leases();
    let t = tuple(23, "trivy");
    let state = store
        .tuple_state_or_open(t.report_id(), None, Some(&opening(&t, "me", 4, &leases)))
        .await
        .unwrap();
    assert_eq!(state.opened, Some(Opened::Won));
    let (outcome, _, took) = store
        .complete_with_report(new_report(&t), Completes::Claim("someone-else"))
        .await
        .unwrap();
    assert_eq!(outcome, scanreport_operator::store::UpsertOutcome::Inserted);
    assert!(took.is_none(), "another holder's report completes nothing");
    assert_eq!(
        store.job(t.report_id()).await.unwrap().unwrap().state,
        JobState::Submitting {
            holder: "me".into()
        }
    );
    let (_, _, took) = store
        .complete_with_report(new_report(&t), Completes::Claim("me"))
        .await
        .unwrap();
    assert!(took.is_some(), "the holder's report completes its claim");
    let job = store.job(t.report_id()).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Done);
    assert!(job.completed_at.is_some());

    // A claim that was recorded as submitted is completed by its scan id, not by the holder.
    let u = tuple(24, "trivy");
    store
        .tuple_state_or_open(u.report_id(), None, Some(&opening(&u, "me", 4, &leases)))
        .await
        .unwrap();
    assert!(
        store
            .record_submission(u.report_id(), "me", "scan-24", &leases)
            .await
            .unwrap()
    );
    let (_, _, took) = store
        .complete_with_report(new_report(&u), Completes::Claim("me"))
        .await
        .unwrap();
    assert!(took.is_none());
    assert!(matches!(
        store.job(u.report_id()).await.unwrap().unwrap().state,
        JobState::Submitted { scan_id, .. } if scan_id == "scan-24"
    ));
}

/// A submission recorded after the submitter's own first poll found nothing: the next poll is
/// anyone's once its time has come, not before.
#[tokio::test]
async fn a_submission_recorded_after_the_first_poll_schedules_the_next_one() {
    let store = store().await;
    let leases = leases();
    let (t, u) = (tuple(25, "trivy"), tuple(26, "trivy"));
    for (k, next) in [(&t, Duration::from_secs(600)), (&u, Duration::ZERO)] {
        store
            .tuple_state_or_open(k.report_id(), None, Some(&opening(k, "me", 4, &leases)))
            .await
            .unwrap();
        assert!(
            !store
                .record_submission_polled(k.report_id(), "other", "scan", &leases, next)
                .await
                .unwrap(),
            "only the holder records its submission"
        );
        assert!(
            store
                .record_submission_polled(k.report_id(), "me", "scan", &leases, next)
                .await
                .unwrap()
        );
    }
    assert!(
        !store
            .take_poll(t.report_id(), "scan", leases.claim)
            .await
            .unwrap(),
        "the next poll is not due yet"
    );
    assert!(
        store
            .take_poll(u.report_id(), "scan", leases.claim)
            .await
            .unwrap(),
        "a poll due now is anyone's"
    );
}

/// A request that read a new tuple (nothing stored, no job) while another request of it opened,
/// scanned and stored it before this one asked for a scan: what it read makes it ask, and the
/// ask must not scan again (it did at 10,000 requests: 3,101 scans for 3,100 reports).
#[tokio::test]
async fn a_scan_that_completed_after_a_read_of_nothing_is_not_repeated_for_that_read() {
    use scanreport_operator::controller::decide::{StoredReport, stored_report};
    let store = store().await;
    let leases = leases();
    let t = tuple(31, "trivy");
    // B reads the tuple: nothing yet.
    let (meta, job, read_at) = store.tuple_state(t.report_id(), None).await.unwrap();
    assert!(meta.is_none() && job.is_none());
    // A opens, submits and stores it meanwhile.
    let state = store
        .tuple_state_or_open(t.report_id(), None, Some(&opening(&t, "a", 4, &leases)))
        .await
        .unwrap();
    assert_eq!(state.opened, Some(Opened::Won));
    assert!(
        store
            .record_submission_and_poll(t.report_id(), "a", "scan-a", &leases)
            .await
            .unwrap()
    );
    store
        .complete_with_report(new_report(&t), Completes::Scan("scan-a"))
        .await
        .unwrap();
    // B decides from its read and asks for a scan, as the reconcile does.
    let StoredReport::Scan { newer_than } = stored_report(false, None, None, None, read_at) else {
        panic!("nothing was stored at B's read: it must ask");
    };
    let job = store
        .request_scan(&t, "team-b", newer_than, false, HOUR, &leases)
        .await
        .unwrap();
    assert_eq!(
        job.state,
        JobState::Done,
        "the scan A completed after B's read is B's too: no second scan"
    );
    assert_eq!(job.attempts, 1);
}
