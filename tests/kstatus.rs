//! The kstatus verdict of live ScanRequests, as Flux health checks and other kstatus users see it:
//! computed by `sigs.k8s.io/cli-utils/pkg/kstatus/status` itself (the `tools/kstatus` helper, built
//! by `scripts/kstatus.sh`), on objects read from the real API server while the operator works.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use devscanner::{DevScanner, DevScannerConfig};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use scanreport_operator::api::{ReportPhase, ScanRequest};
use scanreport_operator::identity::Digest;
use testkit::fixtures::{digest, request};
use testkit::operator::{Operator, WAIT, create_scanner};
use testkit::{eventually, fresh_namespace, pgtest};

const VULN: &str = "application/vnd.security.vulnerability.report; version=1.1";

/// The helper binary, built (or found in the cache) once per test process.
fn kstatus_bin() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/kstatus.sh");
        let out = Command::new(&script)
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/kstatus.sh");
        assert!(out.status.success(), "scripts/kstatus.sh failed");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

/// What kstatus says of one live object, with the typed view of the same snapshot.
#[derive(Debug)]
struct Verdict {
    status: String,
    message: String,
    object: ScanRequest,
}

async fn verdict(client: &Client, ns: &str, name: &str) -> Verdict {
    let ar = ApiResource::erase::<ScanRequest>(&());
    let live = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar)
        .get(name)
        .await
        .unwrap();
    let json = serde_json::to_vec(&live).unwrap();
    let object: ScanRequest = serde_json::from_slice(&json).unwrap();
    let mut child = Command::new(kstatus_bin())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(&json).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "kstatus failed on {name}");
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    Verdict {
        status: line["status"].as_str().unwrap().to_owned(),
        message: line["message"].as_str().unwrap_or_default().to_owned(),
        object,
    }
}

fn phases(sr: &ScanRequest) -> Vec<ReportPhase> {
    sr.status
        .iter()
        .flat_map(|s| s.reports.iter().map(|r| r.phase))
        .collect()
}

/// Waits until `name` shows `phase`, and returns kstatus' verdict on that very snapshot.
async fn verdict_in_phase(client: &Client, ns: &str, name: &str, phase: ReportPhase) -> Verdict {
    eventually(
        &format!("{ns}/{name} in phase {phase:?}"),
        WAIT,
        || async move {
            let v = verdict(client, ns, name).await;
            phases(&v.object).contains(&phase).then_some(v)
        },
    )
    .await
}

#[tokio::test]
async fn kstatus_sees_in_progress_while_queued_or_scanning_and_current_when_ready() {
    let env = testkit::env().await;
    let client = env.client();
    let database_url = pgtest::fresh_database("kstatus").await;
    // Slow scans (8 polls a second apart), one at a time: the second request waits in the queue.
    let adapter = DevScanner::start(DevScannerConfig {
        pending_polls: 8,
        refresh_after_secs: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    let scanner = format!("kstatus-{:x}", rand::random::<u32>());
    create_scanner(&client, &scanner, adapter.base_url()).await;
    kube::Api::<scanreport_operator::api::Scanner>::all(client.clone())
        .patch(
            &scanner,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"spec": {"maxInFlight": 1}})),
        )
        .await
        .unwrap();
    let ns = fresh_namespace(&client, "kstatus").await;
    let _op = Operator::start(env, &database_url, &[&ns], &[]);
    let api = Api::<ScanRequest>::namespaced(client.clone(), &ns);
    api.create(
        &PostParams::default(),
        &request("first", &scanner, &digest(), &[VULN]),
    )
    .await
    .unwrap();
    let scanning = verdict_in_phase(&client, &ns, "first", ReportPhase::Scanning).await;
    assert_eq!(scanning.status, "InProgress", "{scanning:?}");

    api.create(
        &PostParams::default(),
        &request("second", &scanner, &digest(), &[VULN]),
    )
    .await
    .unwrap();
    let queued = verdict_in_phase(&client, &ns, "second", ReportPhase::Pending).await;
    assert_eq!(queued.status, "InProgress", "{queued:?}");

    for name in ["first", "second"] {
        let ready = verdict_in_phase(&client, &ns, name, ReportPhase::Ready).await;
        assert_eq!(ready.status, "Current", "{ready:?}");
    }
}

#[tokio::test]
async fn kstatus_sees_failed_when_stalled_and_current_after_the_fix() {
    let env = testkit::env().await;
    let client = env.client();
    let database_url = pgtest::fresh_database("kstatusfail").await;
    let adapter = DevScanner::start(DevScannerConfig::default())
        .await
        .unwrap();
    let ns = fresh_namespace(&client, "kstatusfail").await;
    let _op = Operator::start(env, &database_url, &[&ns], &[]);
    let scanner = format!("kstatus-later-{:x}", rand::random::<u32>());
    Api::<ScanRequest>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &request("stuck", &scanner, &digest(), &[VULN]),
        )
        .await
        .unwrap();
    let failed = eventually("kstatus Failed for a missing Scanner", WAIT, || async {
        let v = verdict(&client, &ns, "stuck").await;
        (v.status == "Failed").then_some(v)
    })
    .await;
    assert!(failed.message.contains("spec.scanner"), "{failed:?}");

    create_scanner(&client, &scanner, adapter.base_url()).await;
    let current = eventually("kstatus Current after the Scanner exists", WAIT, || async {
        let v = verdict(&client, &ns, "stuck").await;
        (v.status == "Current").then_some(v)
    })
    .await;
    assert!(
        phases(&current.object)
            .iter()
            .all(|p| *p == ReportPhase::Ready)
    );
}

#[tokio::test]
async fn kstatus_sees_failed_for_a_policy_violation_and_current_once_the_policy_allows_it() {
    let env = testkit::env().await;
    let client = env.client();
    let database_url = pgtest::fresh_database("kstatuspolicy").await;
    let adapter = DevScanner::start(DevScannerConfig::default())
        .await
        .unwrap();
    let scanner = format!("kstatus-policy-{:x}", rand::random::<u32>());
    create_scanner(&client, &scanner, adapter.base_url()).await;
    let ns = fresh_namespace(&client, "kstatuspolicy").await;
    let _op = Operator::start(env, &database_url, &[&ns], &[]);
    // A digest whose report has a critical vulnerability, and a policy that allows none.
    let (d, worst) = loop {
        let d = digest();
        let mut criticals: Vec<String> =
            devscanner::expected_vulnerabilities(&Digest::parse(&d).unwrap())
                .into_iter()
                .filter(|v| v.severity == "Critical")
                .map(|v| v.id)
                .collect();
        criticals.sort();
        if let Some(first) = criticals.into_iter().next() {
            break (d, first);
        }
    };
    let mut sr = request("gated", &scanner, &d, &[VULN]);
    sr.spec.policy =
        Some(serde_json::from_value(serde_json::json!({"maxCounts": {"critical": 0}})).unwrap());
    Api::<ScanRequest>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &sr)
        .await
        .unwrap();
    let failed = eventually("kstatus Failed for a policy violation", WAIT, || async {
        let v = verdict(&client, &ns, "gated").await;
        (v.status == "Failed").then_some(v)
    })
    .await;
    assert!(failed.message.contains(&worst), "{failed:?}");
    assert!(failed.message.contains("critical"), "{failed:?}");

    Api::<ScanRequest>::namespaced(client.clone(), &ns)
        .patch(
            "gated",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                serde_json::json!({"spec": {"policy": {"maxCounts": {"critical": 1000}}}}),
            ),
        )
        .await
        .unwrap();
    eventually(
        "kstatus Current once the policy allows the findings",
        WAIT,
        || async {
            let v = verdict(&client, &ns, "gated").await;
            (v.status == "Current").then_some(v)
        },
    )
    .await;
}
