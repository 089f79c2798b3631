//! Fair sharing of a Scanner's slots on the real API server, PostgreSQL and a slow adapter: a
//! namespace that queued hundreds of scans does not hold up another namespace's one scan.

use std::time::{Duration, Instant};

use devscanner::{DevScanner, DevScannerConfig};
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use scanreport_operator::api::{ScanRequest, Scanner, ScannerSpec};
use testkit::fixtures::{self, digest};
use testkit::operator::Operator;
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
    let _op = Operator::start(env, &url, &[&big, &small], &[]);

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
