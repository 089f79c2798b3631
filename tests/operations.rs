//! Running it like production: leader election and failover, metrics, health, graceful
//! shutdown, logs without secrets.

use std::time::{Duration, Instant};

use devscanner::{DevScanner, DevScannerConfig};
use kube::Client;
use kube::api::{Api, PostParams};
use scanreport_operator::api::ScanRequest;
use testkit::fixtures::{self, digest};
use testkit::operator::{Operator, WAIT, create_scanner};
use testkit::{eventually, fresh_namespace, pgtest};

const VULN: &str = "application/vnd.security.vulnerability.report; version=1.1";
const LEASE_SECONDS: u64 = 4;

async fn scanner(client: &Client, url: &str) -> String {
    let name = format!("ops-{:x}", rand::random::<u32>());
    create_scanner(client, &name, url).await;
    name
}

async fn request(client: &Client, ns: &str, name: &str, scanner: &str) {
    let sr = fixtures::request(name, scanner, &digest(), &[VULN]);
    Api::<ScanRequest>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &sr)
        .await
        .unwrap();
}

async fn wait_ready(client: &Client, ns: &str, name: &str, timeout: Duration) {
    let api = Api::<ScanRequest>::namespaced(client.clone(), ns);
    eventually(&format!("{name} to be Ready"), timeout, || {
        let api = api.clone();
        async move {
            let sr = api.get(name).await.ok()?;
            let ready = sr
                .status?
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            ready.then_some(())
        }
    })
    .await
}

fn elected(ns: &str, lease: &str) -> Vec<String> {
    vec![
        "--leader-election".into(),
        "--lease-namespace".into(),
        ns.into(),
        "--lease-name".into(),
        lease.into(),
        "--lease-duration".into(),
        format!("{LEASE_SECONDS}s"),
    ]
}

async fn leader_of(ops: &[&Operator]) -> Option<usize> {
    let mut leaders = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        if op.metric("scanreport_leader").await == Some(1.0) {
            leaders.push(i);
        }
    }
    assert!(leaders.len() <= 1, "two leaders at once: {leaders:?}");
    leaders.first().copied()
}

#[tokio::test]
async fn one_leader_reconciles_and_a_standby_takes_over() {
    let env = testkit::env().await;
    let client = env.client();
    let url = pgtest::fresh_database("leader").await;
    let adapter = DevScanner::start(DevScannerConfig {
        pending_polls: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let scanner = scanner(&client, adapter.base_url()).await;
    let ns = fresh_namespace(&client, "leader").await;
    let args = elected(&ns, "scanreport-test");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut a = Operator::start(env, &url, &[&ns], &args);
    let mut b = Operator::start(env, &url, &[&ns], &args);

    let first = eventually("a leader", WAIT, || async { leader_of(&[&a, &b]).await }).await;
    for i in 0..3 {
        request(&client, &ns, &format!("before-{i}"), &scanner).await;
    }
    for i in 0..3 {
        wait_ready(&client, &ns, &format!("before-{i}"), WAIT).await;
    }
    // Only the leader reconciled; the standby is healthy and ready all the same.
    let (leader, standby) = if first == 0 {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    assert!(
        leader
            .metric("scanreport_reconciles_total{result=\"ok\"}")
            .await
            .unwrap_or(0.0)
            >= 3.0
    );
    assert_eq!(
        standby
            .metric("scanreport_reconciles_total{result=\"ok\"}")
            .await,
        Some(0.0),
        "the standby reconciles nothing"
    );
    assert_eq!(standby.get("/readyz").await.map(|(s, _)| s), Some(200));
    assert_eq!(standby.get("/healthz").await.map(|(s, _)| s), Some(200));

    // The leader dies without a word; the standby takes over within the lease duration.
    leader.kill();
    let killed = Instant::now();
    request(&client, &ns, "after-crash", &scanner).await;
    eventually("the standby to lead", WAIT, || async {
        (standby.metric("scanreport_leader").await == Some(1.0)).then_some(())
    })
    .await;
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(LEASE_SECONDS * 2 + 2),
        "takeover took {took:?}"
    );
    wait_ready(&client, &ns, "after-crash", WAIT).await;

    // A graceful stop releases the lease at once, so a new replica need not wait it out.
    let mut c = Operator::start(env, &url, &[&ns], &args);
    eventually("the new replica to be ready", WAIT, || async {
        (c.get("/readyz").await?.0 == 200).then_some(())
    })
    .await;
    standby.stop();
    // Right after the exit, the lease no longer names the stopped replica.
    let logs = standby.logs();
    let identity = logs
        .split("\"instance\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the start-up log names the instance")
        .to_owned();
    let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(client.clone(), &ns)
        .get("scanreport-test")
        .await
        .unwrap();
    let holder = lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    assert_ne!(holder, identity, "the stopped leader released its lease");
    let stopped = Instant::now();
    eventually("the third replica to lead", WAIT, || async {
        (c.metric("scanreport_leader").await == Some(1.0)).then_some(())
    })
    .await;
    assert!(
        stopped.elapsed() < Duration::from_secs(LEASE_SECONDS),
        "a released lease is taken at once, took {:?}",
        stopped.elapsed()
    );
    request(&client, &ns, "after-stop", &scanner).await;
    wait_ready(&client, &ns, "after-stop", WAIT).await;
    let logs = standby.logs();
    assert!(logs.contains("released the leader lease"), "{logs}");
    c.stop();
    assert!(c.errors().is_empty(), "{:?}", c.errors());
}

#[tokio::test]
async fn metrics_health_and_readiness_are_served() {
    let env = testkit::env().await;
    let client = env.client();
    let url = pgtest::fresh_database("metrics").await;
    let adapter = DevScanner::start(DevScannerConfig {
        pending_polls: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    let scanner = scanner(&client, adapter.base_url()).await;
    let ns = fresh_namespace(&client, "metrics").await;
    let mut op = Operator::start(env, &url, &[&ns], &[]);
    eventually("readiness", WAIT, || async {
        (op.get("/readyz").await?.0 == 200).then_some(())
    })
    .await;
    assert_eq!(op.get("/healthz").await.map(|(s, _)| s), Some(200));
    for i in 0..3 {
        request(&client, &ns, &format!("m{i}"), &scanner).await;
    }
    for i in 0..3 {
        wait_ready(&client, &ns, &format!("m{i}"), WAIT).await;
    }
    // The in-flight and queued gauges are refreshed every few seconds.
    let body = eventually("the scanner gauges", WAIT, || async {
        let (_, body) = op.get("/metrics").await?;
        body.contains(&format!("scanreport_scans_queued{{scanner=\"{scanner}\"}}"))
            .then_some(body)
    })
    .await;
    let scanner_label = format!("{{scanner=\"{scanner}\"}}");
    for family in [
        "# TYPE scanreport_reconciles counter",
        "# TYPE scanreport_reconcile_duration_seconds histogram",
        "# TYPE scanreport_scans_submitted counter",
        "# TYPE scanreport_scans_completed counter",
        "# TYPE scanreport_scans_failed counter",
        "# TYPE scanreport_scan_latency_seconds histogram",
        "# TYPE scanreport_scans_in_flight gauge",
        "# TYPE scanreport_scans_queued gauge",
        "# TYPE scanreport_report_upserts counter",
        "# TYPE scanreport_api_errors counter",
        "# EOF",
    ] {
        assert!(body.contains(family), "missing {family}:\n{body}");
    }
    assert_eq!(
        op.metric(&format!("scanreport_scans_submitted_total{scanner_label}"))
            .await,
        Some(3.0)
    );
    assert_eq!(
        op.metric(&format!("scanreport_scans_completed_total{scanner_label}"))
            .await,
        Some(3.0)
    );
    assert_eq!(
        op.metric(&format!(
            "scanreport_scan_latency_seconds_count{scanner_label}"
        ))
        .await,
        Some(3.0)
    );
    assert_eq!(
        op.metric("scanreport_report_upserts_total{outcome=\"inserted\"}")
            .await,
        Some(3.0)
    );
    assert_eq!(
        op.metric(&format!("scanreport_scans_in_flight{scanner_label}"))
            .await,
        Some(0.0)
    );

    // SIGTERM: a clean exit.
    let status = op.stop().expect("operator exit status");
    assert!(status.success(), "exit status {status}");
    let logs = op.logs();
    assert!(
        logs.contains("shutting down") && logs.contains("\"stopped\""),
        "{logs}"
    );
    // Every reconcile span names the object, and report steps name the report id.
    assert!(
        logs.contains("\"namespace\":")
            && logs.contains("\"scanrequest\":\"m0\"")
            && logs.contains("\"report_id\":"),
        "{logs}"
    );
}
