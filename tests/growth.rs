//! Bounded growth and fair sharing on the real API server, PostgreSQL and the development
//! adapter: a namespace that queued hundreds of scans does not hold up another namespace's one
//! scan, reports no ScanRequest references are deleted after the retention, and forced
//! rescans are rate-limited per namespace.

use std::time::{Duration, Instant};

use devscanner::{DevScanner, DevScannerConfig};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use scanreport_operator::api::{ScanRequest, Scanner, ScannerSpec};
use scanreport_operator::store::{PoolConfig, Store};
use testkit::fixtures::{self, digest};
use testkit::operator::{Operator, WAIT, create_scanner};
use testkit::{eventually, fresh_namespace, pgtest};

const VULN: &str = "application/vnd.security.vulnerability.report; version=1.1";

fn is_ready(sr: &ScanRequest) -> bool {
    sr.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

async fn ready_count(client: &Client, ns: &str) -> usize {
    Api::<ScanRequest>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|sr| is_ready(sr))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lone_request_finishes_while_another_namespace_has_200_queued_on_a_one_slot_scanner() {
    let env = testkit::env().await;
    let client = env.client();
    let url = pgtest::fresh_database("fairness").await;
    // Every scan takes one "not ready" poll with Refresh-After: 1s, so about a second.
    let adapter = DevScanner::start(DevScannerConfig {
        pending_polls: 1,
        refresh_after_secs: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    let scanner = format!("fair-{:x}", rand::random::<u32>());
    let spec = ScannerSpec {
        url: adapter.base_url().to_owned(),
        registration_uuid: None,
        auth: None,
        ca_bundle: None,
        max_in_flight: Some(1),
        request_timeout: "2s".into(),
    };
    Api::<Scanner>::all(client.clone())
        .create(&PostParams::default(), &Scanner::new(&scanner, spec))
        .await
        .unwrap();
    let big = fresh_namespace(&client, "fair-big").await;
    let small = fresh_namespace(&client, "fair-small").await;
    // Two hundred queued requests each look for a slot every --queue-poll: at the tests'
    // 200ms that alone is 1,000 reconciles a second, more than a loaded test machine serves.
    let _op = Operator::start(env, &url, &[&big, &small], &["--queue-poll", "1s"]);

    let big_api = Api::<ScanRequest>::namespaced(client.clone(), &big);
    for i in 0..200 {
        let sr = fixtures::request(&format!("big-{i}"), &scanner, &digest(), &[VULN]);
        big_api.create(&PostParams::default(), &sr).await.unwrap();
    }
    // team-big's queue is long now; its scans run one at a time.
    let before = ready_count(&client, &big).await;
    let started = Instant::now();
    let lone = fixtures::request("lone", &scanner, &digest(), &[VULN]);
    Api::<ScanRequest>::namespaced(client.clone(), &small)
        .create(&PostParams::default(), &lone)
        .await
        .unwrap();
    let small_api = Api::<ScanRequest>::namespaced(client.clone(), &small);
    eventually(
        "the lone request to be Ready",
        Duration::from_secs(60),
        || {
            let api = small_api.clone();
            async move { api.get("lone").await.ok().filter(is_ready).map(|_| ()) }
        },
    )
    .await;
    let took = started.elapsed();
    let after = ready_count(&client, &big).await;
    // The slot may be busy with one of team-big's scans when the lone one arrives, and one
    // more may finish while its status is written; first come, first served would make it
    // wait for all of team-big's remaining scans.
    assert!(
        after <= before + 4,
        "team-big finished {} scans while team-small waited ({took:?})",
        after - before
    );
    assert!(after < 200, "team-big's queue drained first ({took:?})");
    eprintln!(
        "lone request Ready after {took:?}; team-big scans finished meanwhile: {}",
        after - before
    );
}

async fn report_ids(client: &Client, ns: &str, name: &str) -> Vec<uuid::Uuid> {
    let sr = Api::<ScanRequest>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    sr.status
        .map(|s| {
            s.reports
                .iter()
                .map(|r| r.report_id.parse().unwrap())
                .collect()
        })
        .unwrap_or_default()
}

async fn wait_ready(client: &Client, ns: &str, name: &str) {
    let api = Api::<ScanRequest>::namespaced(client.clone(), ns);
    eventually(&format!("{name} to be Ready"), WAIT, || {
        let api = api.clone();
        async move { api.get(name).await.ok().filter(is_ready).map(|_| ()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_requests_report_and_job_are_swept_after_the_retention_and_a_live_ones_stay() {
    let env = testkit::env().await;
    let client = env.client();
    let url = pgtest::fresh_database("retention_op").await;
    let store = Store::connect(&url, &PoolConfig::default()).await.unwrap();
    let adapter = DevScanner::start(DevScannerConfig {
        pending_polls: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let scanner = format!("ret-{:x}", rand::random::<u32>());
    create_scanner(&client, &scanner, adapter.base_url()).await;
    let ns = fresh_namespace(&client, "retention").await;
    let op = Operator::start(
        env,
        &url,
        &[&ns],
        &["--report-retention", "4s", "--job-retention", "2s"],
    );
    let api = Api::<ScanRequest>::namespaced(client.clone(), &ns);
    for name in ["gone", "kept"] {
        let sr = fixtures::request(name, &scanner, &digest(), &[VULN]);
        api.create(&PostParams::default(), &sr).await.unwrap();
    }
    wait_ready(&client, &ns, "gone").await;
    wait_ready(&client, &ns, "kept").await;
    let gone = report_ids(&client, &ns, "gone").await[0];
    let kept = report_ids(&client, &ns, "kept").await[0];
    api.delete("gone", &Default::default()).await.unwrap();
    eventually(
        "the deleted request's report and job to be swept",
        Duration::from_secs(30),
        || {
            let store = store.clone();
            async move {
                let report = store.get_meta(gone).await.unwrap();
                let job = store.job(gone).await.unwrap();
                (report.is_none() && job.is_none()).then_some(())
            }
        },
    )
    .await;
    // Several retentions later the referenced report is still there, and its request Ready.
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert!(store.get_meta(kept).await.unwrap().is_some());
    assert_eq!(report_ids(&client, &ns, "kept").await, vec![kept]);
    let deleted = op
        .metric(r#"scanreport_retention_deleted_rows_total{table="scan_report"}"#)
        .await
        .unwrap_or(0.0);
    assert!(deleted >= 1.0, "retention metric: {deleted}");
    assert!(
        op.metric(r#"scanreport_table_bytes{table="scan_report"}"#)
            .await
            .unwrap_or(0.0)
            > 0.0
    );
}

fn reason_of(sr: &ScanRequest, type_: &str) -> Option<(String, String)> {
    testkit::operator::condition(sr, type_).map(|c| (c.status.clone(), c.reason.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rescan_over_the_namespace_budget_waits_as_rescan_rate_limited_without_a_retry_loop() {
    let env = testkit::env().await;
    let client = env.client();
    let url = pgtest::fresh_database("rescan_limit").await;
    let adapter = DevScanner::start(DevScannerConfig {
        pending_polls: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let scanner = format!("lim-{:x}", rand::random::<u32>());
    create_scanner(&client, &scanner, adapter.base_url()).await;
    let ns = fresh_namespace(&client, "rescan-limit").await;
    // One forced rescan an hour, in bursts of one.
    let op = Operator::start(env, &url, &[&ns], &["--rescans-per-hour", "1"]);
    let api = Api::<ScanRequest>::namespaced(client.clone(), &ns);
    let d = digest();
    let sr = fixtures::ScanRequestBuilder::new("app", &scanner)
        .digest(&d)
        .mime_types(&[VULN])
        .rescan_token("t1")
        .build();
    api.create(&PostParams::default(), &sr).await.unwrap();
    wait_ready(&client, &ns, "app").await;
    let set_token = |token: &'static str| {
        let api = api.clone();
        async move {
            api.patch(
                "app",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"rescanToken": token}})),
            )
            .await
            .unwrap();
        }
    };
    // The budget allows one forced rescan.
    set_token("t2").await;
    eventually("t2 to be answered", WAIT, || {
        let api = api.clone();
        async move {
            let sr = api.get("app").await.ok()?;
            (sr.status?.rescan_token.as_deref() == Some("t2")).then_some(())
        }
    })
    .await;
    assert_eq!(adapter.stats().scans_for(&d, VULN), 2);
    // The next one waits for the budget: the reports stay, the reason says why.
    set_token("t3").await;
    let limited = eventually("the rescan to be rate-limited", WAIT, || {
        let api = api.clone();
        async move {
            let sr = api.get("app").await.ok()?;
            (reason_of(&sr, "Reconciling") == Some(("True".into(), "RescanRateLimited".into())))
                .then_some(sr)
        }
    })
    .await;
    assert_eq!(
        reason_of(&limited, "Ready").map(|r| r.0),
        Some("True".into()),
        "the stored reports stay usable"
    );
    let status = limited.status.clone().unwrap();
    assert_eq!(status.rescan_token.as_deref(), Some("t2"));
    assert_eq!(status.reports.len(), 1);
    let message = testkit::operator::condition(&limited, "Reconciling")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(message.contains("spec.rescanToken"), "{message}");
    // Requeued for when the budget allows (an hour), not retried in a loop.
    let retry = r#"scanreport_reconciles_total{result="retry"}"#;
    let before = op.metric(retry).await.unwrap_or(0.0);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = op.metric(retry).await.unwrap_or(0.0);
    assert!(
        after - before <= 1.0,
        "retried {} times in 5s",
        after - before
    );
    assert_eq!(
        adapter.stats().scans_for(&d, VULN),
        2,
        "no scan beyond the budget"
    );
}

/// The Events of `name` in `ns`.
async fn events_of(
    client: &Client,
    ns: &str,
    name: &str,
) -> Vec<k8s_openapi::api::events::v1::Event> {
    Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

#[tokio::test]
async fn a_repeated_event_is_counted_in_its_series_and_a_deleted_requests_series_are_forgotten() {
    use kube::Resource;
    use kube::runtime::events::EventType;
    use kube::runtime::reflector::ObjectRef;
    use scanreport_operator::controller::events::{Event, Recorder};

    let env = testkit::env().await;
    let client = env.client();
    let ns = fresh_namespace(&client, "events").await;
    let api = Api::<ScanRequest>::namespaced(client.clone(), &ns);
    let sr = api
        .create(
            &PostParams::default(),
            &fixtures::request("app", "none", &digest(), &[VULN]),
        )
        .await
        .unwrap();
    let recorder = Recorder::new(client.clone(), "scanreport-operator", "test");
    let stored = Event {
        type_: EventType::Normal,
        reason: "ReportStored".into(),
        action: format!("Scan {VULN}"),
        note: "first".into(),
    };
    let reference = sr.object_ref(&());
    recorder.publish(&stored, &reference).await.unwrap();
    let again = Event {
        note: "second".into(),
        ..stored.clone()
    };
    recorder.publish(&again, &reference).await.unwrap();
    let events = events_of(&client, &ns, "app").await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0].series.as_ref().map(|s| s.count), Some(2));
    assert_eq!(
        events[0].note.as_deref(),
        Some("first"),
        "the first note stays"
    );
    assert_eq!(recorder.len(), 1);

    // Deleted: nothing is kept for it, and the next Event (of a new request of that name) is new.
    recorder.forget(&ObjectRef::from(&sr));
    assert!(recorder.is_empty());
    recorder.publish(&stored, &reference).await.unwrap();
    assert_eq!(events_of(&client, &ns, "app").await.len(), 2);
}
