//! The operator end to end: the real binary against a real kube-apiserver + etcd, a real
//! PostgreSQL and the development scanner adapter.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use devscanner::{
    DevScanner, DevScannerConfig, DevScannerHandle, Endpoint, FaultKind, FaultRule,
    expected_summary,
};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use rand::{Rng, SeedableRng};
use scanreport_operator::api::{ReportPhase, ScanRequest, Scanner};
use scanreport_operator::identity::{self, Digest, MimeType};
use scanreport_operator::store::{PoolConfig, Store};
use serde_json::json;
use testkit::fixtures::{ScanRequestBuilder, SecretBuilder, digest, request};
use testkit::operator::{Operator, WAIT, condition, create, create_scanner};
use testkit::{TestEnv, eventually, fresh_namespace, pgtest};

const VULN: &str = "application/vnd.security.vulnerability.report; version=1.1";
const HARBOR: &str = "application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.0";
const SBOM: &str = "application/vnd.security.sbom.report+json; version=1.0";

struct Fixture {
    env: &'static TestEnv,
    client: Client,
    database_url: String,
    store: Store,
    adapter: DevScannerHandle,
    scanner: String,
}

async fn fixture(prefix: &str, adapter: DevScannerConfig) -> Fixture {
    let env = testkit::env().await;
    let client = env.client();
    let database_url = pgtest::fresh_database(prefix).await;
    let store = Store::connect(&database_url, &PoolConfig::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let adapter = DevScanner::start(adapter).await.unwrap();
    let scanner = format!("{prefix}-{:x}", rand::random::<u32>());
    create_scanner(&client, &scanner, adapter.base_url()).await;
    Fixture {
        env,
        client,
        database_url,
        store,
        adapter,
        scanner,
    }
}

fn is_ready(sr: &ScanRequest) -> bool {
    let current = sr.status.as_ref().and_then(|s| s.observed_generation) == sr.metadata.generation;
    current
        && condition(sr, "Ready").is_some_and(|c| c.status == "True")
        && condition(sr, "Reconciling").is_none()
}

async fn wait_ready(client: &Client, ns: &str, name: &str) -> ScanRequest {
    let api = Api::<ScanRequest>::namespaced(client.clone(), ns);
    eventually(&format!("{ns}/{name} to be Ready"), WAIT, || {
        let api = api.clone();
        async move { api.get(name).await.ok().filter(is_ready) }
    })
    .await
}

async fn wait_condition(
    client: &Client,
    ns: &str,
    name: &str,
    type_: &str,
    needle: &str,
) -> ScanRequest {
    let api = Api::<ScanRequest>::namespaced(client.clone(), ns);
    eventually(
        &format!("{ns}/{name}: {type_}=True mentioning {needle:?}"),
        WAIT,
        || {
            let api = api.clone();
            async move {
                api.get(name).await.ok().filter(|sr| {
                    condition(sr, type_)
                        .is_some_and(|c| c.status == "True" && c.message.contains(needle))
                })
            }
        },
    )
    .await
}

async fn rows(store: &Store) -> BTreeSet<(String, String)> {
    sqlx::query_as::<_, (String, String)>("SELECT digest, mime_type FROM scan_report")
        .fetch_all(store.pool())
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// Scan jobs by state, with how many of them have a completion time.
async fn jobs(store: &Store) -> BTreeMap<String, (i64, i64)> {
    sqlx::query_as::<_, (String, i64, i64)>(
        "SELECT state, count(*), count(completed_at) FROM scan_job GROUP BY state",
    )
    .fetch_all(store.pool())
    .await
    .unwrap()
    .into_iter()
    .map(|(state, n, completed)| (state, (n, completed)))
    .collect()
}

fn canonical(m: &str) -> String {
    MimeType::parse(m).unwrap().to_string()
}

#[tokio::test]
async fn happy_path_with_three_report_types() {
    let f = fixture(
        "happy",
        DevScannerConfig {
            pending_polls: 1,
            ..Default::default()
        },
    )
    .await;
    let ns = fresh_namespace(&f.client, "happy").await;
    let mut op = Operator::start(f.env, &f.database_url, &[&ns], &[]);
    let d = digest();
    create(
        &f.client,
        &ns,
        &request("nginx", &f.scanner, &d, &[VULN, HARBOR, SBOM]),
    )
    .await;
    let sr = wait_ready(&f.client, &ns, "nginx").await;

    let status = sr.status.clone().unwrap();
    let registration = identity::default_registration_uuid(&f.scanner).unwrap();
    assert_eq!(status.registration_uuid, Some(registration.to_string()));
    let expected = expected_summary(&Digest::parse(&d).unwrap());
    assert!(expected.total() > 0);
    assert_eq!(status.summary, Some(expected));
    assert_eq!(status.reports.len(), 3);
    for (report, mime) in status.reports.iter().zip([VULN, HARBOR, SBOM]) {
        let id = identity::report_id(
            &Digest::parse(&d).unwrap(),
            &registration,
            &MimeType::parse(mime).unwrap(),
        );
        assert_eq!(report.report_id, id.to_string());
        assert_eq!(report.mime_type, canonical(mime));
        assert_eq!(report.phase, ReportPhase::Ready);
        assert!(report.generated_at.is_some());
        assert_eq!(
            report.scanner.as_ref().map(|s| s.name.as_str()),
            Some("scanreport-dev-scanner")
        );
        assert_eq!(report.summary.is_some(), mime != SBOM, "{mime}");
        // The body lives in PostgreSQL under that id.
        let stored = f.store.get(id).await.unwrap().expect("report stored");
        assert_eq!(stored.meta.mime_type, canonical(mime));
        if mime != SBOM {
            assert_eq!(stored.meta.summary, expected);
        }
    }
    let stats = f.adapter.stats();
    for mime in [VULN, HARBOR, SBOM] {
        assert_eq!(stats.scans_for(&d, mime), 1, "{mime}");
    }

    // The Scanner shows what the adapter is.
    let scanner = Api::<Scanner>::all(f.client.clone())
        .get(&f.scanner)
        .await
        .unwrap();
    let scanner_status = scanner.status.unwrap();
    assert_eq!(
        scanner_status.adapter.unwrap().name,
        "scanreport-dev-scanner"
    );
    assert_eq!(
        scanner_status.registration_uuid,
        Some(registration.to_string())
    );

    // Events tell the story (published in the background), one per report and reason.
    let events_api = Api::<k8s_openapi::api::events::v1::Event>::namespaced(f.client.clone(), &ns);
    eventually(
        "ScanSubmitted and ReportStored Events for each report",
        WAIT,
        || {
            let events_api = events_api.clone();
            async move {
                let events = events_api.list(&ListParams::default()).await.ok()?;
                let seen: BTreeSet<(String, String)> = events
                    .items
                    .iter()
                    .filter_map(|e| Some((e.reason.clone()?, e.action.clone()?)))
                    .collect();
                let stored = [VULN, HARBOR, SBOM].iter().all(|m| {
                    seen.contains(&("ReportStored".to_owned(), format!("Scan {}", canonical(m))))
                });
                let submitted = seen.iter().any(|(reason, _)| reason == "ScanSubmitted");
                (stored && submitted).then_some(())
            }
        },
    )
    .await;

    // `kubectl get sr` fills the printer columns.
    let out = f
        .env
        .kubectl()
        .args(["get", "sr", "-n", &ns, "nginx", "--no-headers"])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        cols[..5],
        [
            "nginx",
            f.scanner.as_str(),
            d.as_str(),
            "True",
            expected.critical.to_string().as_str()
        ][..]
    );
    assert_eq!(cols[5], expected.high.to_string());
    op.stop();
    assert!(op.errors().is_empty(), "{:?}", op.errors());
}

/// An adapter that has the report at the first poll: the submitter stores it and completes
/// the job it still claims in one statement, never recording the submission. The job must end
/// `done` like any other, or later requests of the tuple would wait for the claim to expire.
#[tokio::test]
async fn a_report_ready_at_the_first_poll_completes_its_claimed_job() {
    let f = fixture(
        "instant",
        DevScannerConfig {
            pending_polls: 0,
            ..Default::default()
        },
    )
    .await;
    let (a, b) = (
        fresh_namespace(&f.client, "instant").await,
        fresh_namespace(&f.client, "instant").await,
    );
    let mut op = Operator::start(f.env, &f.database_url, &[&a, &b], &[]);
    let d = digest();
    create(
        &f.client,
        &a,
        &request("app", &f.scanner, &d, &[VULN, SBOM]),
    )
    .await;
    wait_ready(&f.client, &a, "app").await;
    assert_eq!(
        jobs(&f.store).await,
        BTreeMap::from([("done".to_owned(), (2, 2))]),
        "each job is done, with its completion time"
    );
    let stats = f.adapter.stats();
    assert_eq!(stats.report_requests, 2, "one poll per scan: {stats:?}");
    assert_eq!(stats.reports_not_ready, 0);

    // Another namespace's request of the same tuples uses the stored reports at once.
    create(
        &f.client,
        &b,
        &request("app", &f.scanner, &d, &[VULN, SBOM]),
    )
    .await;
    wait_ready(&f.client, &b, "app").await;
    assert_eq!(f.adapter.stats().scans_accepted, 2);
    op.stop();
    assert!(op.errors().is_empty(), "{:?}", op.errors());
}

/// The report is not ready at the first poll: the submission is recorded with the next poll's
/// time in the same statement, and a later poll stores it.
#[tokio::test]
async fn a_report_not_ready_at_the_first_poll_is_fetched_by_a_later_one() {
    let f = fixture(
        "later",
        DevScannerConfig {
            pending_polls: 1,
            ..Default::default()
        },
    )
    .await;
    let ns = fresh_namespace(&f.client, "later").await;
    let mut op = Operator::start(f.env, &f.database_url, &[&ns], &[]);
    let d = digest();
    create(&f.client, &ns, &request("app", &f.scanner, &d, &[VULN])).await;
    wait_ready(&f.client, &ns, "app").await;
    assert_eq!(
        jobs(&f.store).await,
        BTreeMap::from([("done".to_owned(), (1, 1))])
    );
    let stats = f.adapter.stats();
    assert_eq!(
        (
            stats.scans_accepted,
            stats.reports_not_ready,
            stats.report_requests
        ),
        (1, 1, 2),
        "one scan, polled twice: {stats:?}"
    );
    op.stop();
    assert!(op.errors().is_empty(), "{:?}", op.errors());
}

#[tokio::test]
async fn kubectl_apply_of_the_examples_reaches_ready() {
    // The examples name the Scanner `dev-scanner`; point it at this test's adapter.
    let f = fixture("examples", DevScannerConfig::default()).await;
    create_scanner(&f.client, "dev-scanner", f.adapter.base_url()).await;
    let ns = fresh_namespace(&f.client, "examples").await;
    let _op = Operator::start(f.env, &f.database_url, &[&ns], &[]);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        if !text.contains("kind: ScanRequest") {
            continue;
        }
        let out = f
            .env
            .kubectl()
            .args(["apply", "-n", &ns, "-f"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(doc).unwrap();
            if value["kind"] == "ScanRequest" {
                names.push(value["metadata"]["name"].as_str().unwrap().to_owned());
            }
        }
    }
    assert!(
        names.len() >= 2,
        "examples hold a few ScanRequests: {names:?}"
    );
    for name in &names {
        let sr = wait_ready(&f.client, &ns, name).await;
        let status = sr.status.unwrap();
        assert!(status.reports.iter().all(|r| r.phase == ReportPhase::Ready));
        assert!(
            status.summary.is_some_and(|s| s.total() > 0),
            "{name} has counts"
        );
    }
    Api::<Scanner>::all(f.client.clone())
        .delete("dev-scanner", &DeleteParams::default())
        .await
        .unwrap();
}

/// Scanner changes reach every controller (one per watched namespace) through the one shared
/// Scanner watch, deletions included: a ready request only reconciles again when its Scanner
/// changes, so stalling and healing here can only come from that fan-out.
#[tokio::test]
async fn a_deleted_scanner_stalls_its_requests_in_every_namespace_and_a_new_one_heals_them() {
    let f = fixture("scanner-gone", DevScannerConfig::default()).await;
    let a = fresh_namespace(&f.client, "scanner-gone-a").await;
    let b = fresh_namespace(&f.client, "scanner-gone-b").await;
    let _op = Operator::start(f.env, &f.database_url, &[&a, &b], &[]);
    let d = digest();
    for ns in [&a, &b] {
        create(&f.client, ns, &request("app", &f.scanner, &d, &[VULN])).await;
    }
    for ns in [&a, &b] {
        wait_ready(&f.client, ns, "app").await;
    }

    Api::<Scanner>::all(f.client.clone())
        .delete(&f.scanner, &DeleteParams::default())
        .await
        .unwrap();
    for ns in [&a, &b] {
        wait_condition(&f.client, ns, "app", "Stalled", "does not exist").await;
    }

    // Stalled requests look again only every 20 s (--stall-recheck); the new Scanner's event
    // heals them well before that.
    create_scanner(&f.client, &f.scanner, f.adapter.base_url()).await;
    for ns in [&a, &b] {
        let api = Api::<ScanRequest>::namespaced(f.client.clone(), ns);
        eventually(
            &format!("{ns}/app ready again soon after its Scanner is back"),
            Duration::from_secs(12),
            || {
                let api = api.clone();
                async move { api.get("app").await.ok().filter(is_ready) }
            },
        )
        .await;
    }
}

use serde::Deserialize as _;

#[tokio::test]
async fn twenty_requests_for_one_artifact_make_one_scan_per_tuple() {
    let f = fixture(
        "twenty",
        DevScannerConfig {
            pending_polls: 2,
            ..Default::default()
        },
    )
    .await;
    let mut namespaces = Vec::new();
    for _ in 0..4 {
        namespaces.push(fresh_namespace(&f.client, "twenty").await);
    }
    let ns_refs: Vec<&str> = namespaces.iter().map(String::as_str).collect();
    let _op = Operator::start(f.env, &f.database_url, &ns_refs, &[]);
    let d = digest();
    for i in 0..20 {
        // Different spellings of the same MIME types are the same reports.
        let mimes: &[&str] = if i % 2 == 0 {
            &[VULN, SBOM]
        } else {
            &[
                "Application/Vnd.Security.Vulnerability.Report;Version=\"1.1\"",
                SBOM,
            ]
        };
        create(
            &f.client,
            &namespaces[i % 4],
            &request(&format!("req-{i}"), &f.scanner, &d, mimes),
        )
        .await;
    }
    for i in 0..20 {
        wait_ready(&f.client, &namespaces[i % 4], &format!("req-{i}")).await;
    }
    let expected: BTreeSet<_> = [VULN, SBOM]
        .iter()
        .map(|m| (d.clone(), canonical(m)))
        .collect();
    assert_eq!(rows(&f.store).await, expected);
    let stats = f.adapter.stats();
    assert_eq!(stats.scans_for(&d, VULN), 1, "{stats:?}");
    assert_eq!(stats.scans_for(&d, SBOM), 1, "{stats:?}");
    assert_eq!(stats.scans_accepted, 2);
}

/// Every request waiting when the operator starts resolves its Scanner at once. They must
/// share one adapter client, one metadata request and one status apply: each apply changes the
/// Scanner, and a changed Scanner re-reconciles every request that names it.
#[tokio::test]
async fn requests_waiting_at_start_up_resolve_their_new_scanner_once() {
    let f = fixture("herd", DevScannerConfig::default()).await;
    let ns = fresh_namespace(&f.client, "herd").await;
    for i in 0..48 {
        let name = format!("req-{i}");
        create(
            &f.client,
            &ns,
            &request(&name, &f.scanner, &digest(), &[VULN]),
        )
        .await;
    }
    let scanners: Api<Scanner> = Api::all(f.client.clone());
    let before = scanners
        .get(&f.scanner)
        .await
        .unwrap()
        .resource_version()
        .unwrap();
    let op = Operator::start(f.env, &f.database_url, &[&ns], &[]);
    for i in 0..48 {
        wait_ready(&f.client, &ns, &format!("req-{i}")).await;
    }
    // Every change of the Scanner since the operator started.
    let params = kube::api::WatchParams::default()
        .fields(&format!("metadata.name={}", f.scanner))
        .timeout(2);
    use futures::StreamExt as _;
    let changes: Vec<_> = scanners
        .watch(&params, &before)
        .await
        .unwrap()
        .filter_map(|e| async move {
            match e.unwrap() {
                kube::api::WatchEvent::Modified(s) => Some(s),
                _ => None,
            }
        })
        .collect()
        .await;
    assert_eq!(changes.len(), 1, "one status apply: {changes:#?}");
    let status = changes[0].status.clone().unwrap_or_default();
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
    assert_eq!(ready.map(|c| c.status.as_str()), Some("True"), "{status:?}");
    assert_eq!(f.adapter.stats().metadata_requests, 1);
    let logs = op.logs();
    let count = |what: &str| {
        logs.lines()
            .filter(|l| l.contains(what) && l.contains(&f.scanner))
            .count()
    };
    assert_eq!(count("applied the Scanner status"), 1, "{logs}");
    assert_eq!(count("built the adapter client"), 1, "{logs}");
}

/// Requests that joined one scan are woken by the reconcile that stored its report: all of
/// them are Ready moments after the first, not after their own timers (the scan below takes
/// two polls, so most requests lose the race to fetch it and wait).
#[tokio::test]
async fn requests_that_joined_one_scan_are_ready_together_when_its_report_is_stored() {
    let f = fixture(
        "wake",
        DevScannerConfig {
            pending_polls: 2,
            ..Default::default()
        },
    )
    .await;
    let ns = fresh_namespace(&f.client, "wake").await;
    let _op = Operator::start(f.env, &f.database_url, &[&ns], &[]);
    let d = digest();
    const N: usize = 12;
    for i in 0..N {
        create(
            &f.client,
            &ns,
            &request(&format!("joined-{i}"), &f.scanner, &d, &[VULN]),
        )
        .await;
    }
    let api: Api<ScanRequest> = Api::namespaced(f.client.clone(), &ns);
    let mut ready_at: BTreeMap<String, std::time::Instant> = BTreeMap::new();
    let deadline = std::time::Instant::now() + WAIT;
    while ready_at.len() < N {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {N} requests became Ready",
            ready_at.len()
        );
        for sr in api.list(&ListParams::default()).await.unwrap() {
            if is_ready(&sr) {
                ready_at
                    .entry(sr.name_any())
                    .or_insert_with(std::time::Instant::now);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = ready_at.values().min().copied().unwrap();
    let last = ready_at.values().max().copied().unwrap();
    // Without the wake-up, the requests that lost the fetch sleep their 5 s fallback.
    assert!(
        last - first < Duration::from_millis(2500),
        "the last request was Ready {:?} after the first",
        last - first
    );
    let stats = f.adapter.stats();
    assert_eq!(stats.scans_for(&d, VULN), 1, "{stats:?}");
}

#[tokio::test]
async fn two_replicas_converge_on_one_result_without_errors() {
    let f = fixture(
        "replicas",
        DevScannerConfig {
            pending_polls: 1,
            ..Default::default()
        },
    )
    .await;
    let ns = fresh_namespace(&f.client, "replicas").await;
    let mut a = Operator::start(f.env, &f.database_url, &[&ns], &[]);
    let mut b = Operator::start(f.env, &f.database_url, &[&ns], &[]);
    let digests: Vec<String> = (0..5).map(|_| digest()).collect();
    for i in 0..10 {
        create(
            &f.client,
            &ns,
            &request(
                &format!("r{i}"),
                &f.scanner,
                &digests[i % 5],
                &[VULN, HARBOR],
            ),
        )
        .await;
    }
    for i in 0..10 {
        wait_ready(&f.client, &ns, &format!("r{i}")).await;
    }
    let stats = f.adapter.stats();
    for d in &digests {
        assert_eq!(stats.scans_for(d, VULN), 1);
        assert_eq!(stats.scans_for(d, HARBOR), 1);
    }
    assert_eq!(rows(&f.store).await.len(), 10);
    a.stop();
    b.stop();
    assert!(a.errors().is_empty(), "replica a: {:?}", a.errors());
    assert!(b.errors().is_empty(), "replica b: {:?}", b.errors());
}

#[tokio::test]
async fn crash_at_random_points_converges_without_rescans_or_rewrites() {
    let f = fixture(
        "crash",
        DevScannerConfig {
            pending_polls: 1,
            refresh_after_secs: 1,
            ..Default::default()
        },
    )
    .await;
    let ns = fresh_namespace(&f.client, "crash").await;
    let api = Api::<ScanRequest>::namespaced(f.client.clone(), &ns);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5ca9_2026);
    let mut all_tuples: BTreeSet<(String, String)> = BTreeSet::new();
    let mut digests: Vec<String> = Vec::new();
    for iteration in 0..20 {
        f.adapter.set_pending_polls(rng.random_range(0..3));
        // Two new artifacts and one already scanned, each with two reports.
        let mut batch = vec![digest(), digest()];
        if let Some(old) = digests.get(rng.random_range(0..digests.len().max(1))) {
            batch.push(old.clone());
        }
        for (j, d) in batch.iter().enumerate() {
            create(
                &f.client,
                &ns,
                &request(&format!("i{iteration}-{j}"), &f.scanner, d, &[VULN, SBOM]),
            )
            .await;
            for m in [VULN, SBOM] {
                all_tuples.insert((d.clone(), canonical(m)));
            }
        }
        digests.extend(batch.iter().take(2).cloned());

        let mut op = Operator::start(f.env, &f.database_url, &[&ns], &[]);
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..2500))).await;
        op.kill();

        // What survived the crash: stored reports, their scan counts, Ready requests.
        let stored = rows(&f.store).await;
        let stats = f.adapter.stats();
        let scans_before: BTreeMap<_, _> = stored
            .iter()
            .map(|(d, m)| ((d.clone(), m.clone()), stats.scans_for(d, m)))
            .collect();
        let ready_before: BTreeMap<String, String> = api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(is_ready)
            .map(|sr| (sr.name_any(), sr.resource_version().unwrap()))
            .collect();

        let op = Operator::start(f.env, &f.database_url, &[&ns], &[]);
        let names: Vec<String> = api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(ResourceExt::name_any)
            .collect();
        for name in &names {
            wait_ready(&f.client, &ns, name).await;
        }
        assert_eq!(
            rows(&f.store).await,
            all_tuples,
            "iteration {iteration}: one row per distinct tuple"
        );
        let stats = f.adapter.stats();
        for ((d, m), before) in &scans_before {
            assert_eq!(
                stats.scans_for(d, m),
                *before,
                "iteration {iteration}: {d} {m} was not rescanned"
            );
        }
        // Give the new operator time to have touched everything, then check nothing Ready was
        // written again.
        tokio::time::sleep(Duration::from_millis(500)).await;
        for (name, rv) in &ready_before {
            let now = api.get(name).await.unwrap();
            assert_eq!(
                now.resource_version().as_ref(),
                Some(rv),
                "iteration {iteration}: {name} was Ready and got a status write"
            );
        }
        drop(op);
    }
}

#[tokio::test]
async fn slow_flaky_and_dead_adapters_converge() {
    let f = fixture(
        "adapters",
        DevScannerConfig {
            pending_polls: 3,
            refresh_after_secs: 1,
            ..Default::default()
        },
    )
    .await;
    let ns = fresh_namespace(&f.client, "adapters").await;
    let _op = Operator::start(f.env, &f.database_url, &[&ns], &[]);

    // Slow: 302 three times, then the report.
    let slow = digest();
    create(&f.client, &ns, &request("slow", &f.scanner, &slow, &[VULN])).await;
    let sr = wait_condition(&f.client, &ns, "slow", "Reconciling", "scanning").await;
    assert_eq!(sr.status.unwrap().reports[0].phase, ReportPhase::Scanning);
    wait_ready(&f.client, &ns, "slow").await;
    assert!(f.adapter.stats().reports_not_ready >= 3);

    // Flaky: 503 on submit twice and 500 on the report twice, then fine.
    f.adapter.set_pending_polls(0);
    f.adapter
        .inject_fault(FaultRule::new(
            Endpoint::Scan,
            FaultKind::ServerError { status: 503 },
            Some(2),
        ))
        .unwrap();
    f.adapter
        .inject_fault(FaultRule::new(
            Endpoint::Report,
            FaultKind::ServerError { status: 500 },
            Some(2),
        ))
        .unwrap();
    let flaky = digest();
    create(
        &f.client,
        &ns,
        &request("flaky", &f.scanner, &flaky, &[VULN]),
    )
    .await;
    wait_ready(&f.client, &ns, "flaky").await;
    let stats = f.adapter.stats();
    assert_eq!(stats.responses_with(Endpoint::Scan, 503), 2);
    assert_eq!(stats.responses_with(Endpoint::Report, 500), 2);
    assert_eq!(stats.scans_for(&flaky, VULN), 1);

    // Dead: connection refused, then back on the same address.
    let addr = f.adapter.local_addr();
    f.adapter.shutdown().await;
    let dead = digest();
    create(&f.client, &ns, &request("dead", &f.scanner, &dead, &[VULN])).await;
    wait_condition(&f.client, &ns, "dead", "Reconciling", "unavailable").await;
    let back = DevScanner::start(DevScannerConfig {
        listen: addr,
        pending_polls: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    wait_ready(&f.client, &ns, "dead").await;
    assert_eq!(back.stats().scans_for(&dead, VULN), 1);
}

#[tokio::test]
async fn a_postgres_outage_heals_without_restarting_the_operator() {
    let pg = pgtest::PgCluster::start();
    let env = testkit::env().await;
    let client = env.client();
    let adapter = DevScanner::start(DevScannerConfig {
        pending_polls: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let scanner = format!("pg-{:x}", rand::random::<u32>());
    create_scanner(&client, &scanner, adapter.base_url()).await;
    let ns = fresh_namespace(&client, "pg-outage").await;
    let mut op = Operator::start(env, &pg.url(), &[&ns], &[]);
    let first = digest();
    create(&client, &ns, &request("before", &scanner, &first, &[VULN])).await;
    wait_ready(&client, &ns, "before").await;

    pg.halt();
    create(
        &client,
        &ns,
        &request("during", &scanner, &digest(), &[VULN]),
    )
    .await;
    wait_condition(&client, &ns, "during", "Reconciling", "database").await;
    pg.resume();
    wait_ready(&client, &ns, "during").await;
    assert!(op.is_running(), "the operator survived the outage");
    let store = Store::connect(&pg.url(), &PoolConfig::default())
        .await
        .unwrap();
    assert_eq!(rows(&store).await.len(), 2);
    op.stop();
}

#[tokio::test]
async fn bad_input_stalls_with_a_message_naming_the_field() {
    let f = fixture("bad", DevScannerConfig::default()).await;
    let ns = fresh_namespace(&f.client, "bad").await;
    let _op = Operator::start(f.env, &f.database_url, &[&ns], &[]);
    let api = Api::<ScanRequest>::namespaced(f.client.clone(), &ns);

    let missing_scanner = format!("{}-later", f.scanner);
    create(
        &f.client,
        &ns,
        &request("unknown-scanner", &missing_scanner, &digest(), &[VULN]),
    )
    .await;
    let sr = wait_condition(&f.client, &ns, "unknown-scanner", "Stalled", "spec.scanner").await;
    assert_eq!(condition(&sr, "Ready").unwrap().status, "False");

    create(
        &f.client,
        &ns,
        &request(
            "bad-mime",
            &f.scanner,
            &digest(),
            &[VULN, "application/vnd.example.report; version=9"],
        ),
    )
    .await;
    wait_condition(
        &f.client,
        &ns,
        "bad-mime",
        "Stalled",
        "spec.reportMimeTypes[1]",
    )
    .await;

    let with_secret = ScanRequestBuilder::new("missing-secret", &f.scanner)
        .credentials_secret("pull-secret")
        .mime_types(&[VULN])
        .build();
    create(&f.client, &ns, &with_secret).await;
    wait_condition(
        &f.client,
        &ns,
        "missing-secret",
        "Stalled",
        "spec.registry.credentialsSecretRef",
    )
    .await;

    // Stalled requests do not hot-loop: no further writes while nothing changes.
    let before = api.get("unknown-scanner").await.unwrap().resource_version();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        api.get("unknown-scanner").await.unwrap().resource_version(),
        before
    );
    assert_eq!(
        f.adapter.stats().scans_accepted,
        0,
        "nothing reached the adapter"
    );

    // Fixing the referenced object resumes reconciling.
    create_scanner(&f.client, &missing_scanner, f.adapter.base_url()).await;
    wait_ready(&f.client, &ns, "unknown-scanner").await;
    // Fixing the spec resumes it too.
    api.patch(
        "bad-mime",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"reportMimeTypes": [VULN]}})),
    )
    .await
    .unwrap();
    wait_ready(&f.client, &ns, "bad-mime").await;
    // The Secret's credentials reach the adapter and nowhere else.
    SecretBuilder::basic_auth("robot", "s3cr3t-registry-pass")
        .name("pull-secret")
        .create(&f.client, &ns)
        .await;
    // Secrets are not watched: a spec change (or the periodic recheck) picks it up.
    api.patch("missing-secret", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {"touch": "1"}}, "spec": {"artifact": {"tag": "retry"}}}))).await.unwrap();
    let sr = wait_ready(&f.client, &ns, "missing-secret").await;
    assert_eq!(f.adapter.stats().scans_with_registry_authorization, 1);
    let status = serde_json::to_string(&sr.status).unwrap();
    assert!(!status.contains("s3cr3t"));
    assert!(
        !_op.logs().contains("s3cr3t-registry-pass"),
        "a credential reached the logs"
    );

    // The schema rejects a malformed digest at admission.
    let bad = request("bad-digest", &f.scanner, "sha256:1234", &[VULN]);
    let err = api.create(&PostParams::default(), &bad).await.unwrap_err();
    assert!(err.to_string().contains("spec.artifact.digest"), "{err}");
}

#[tokio::test]
async fn rescans_keep_the_previous_report_until_the_new_one_is_stored() {
    let f = fixture(
        "rescan",
        DevScannerConfig {
            pending_polls: 0,
            ..Default::default()
        },
    )
    .await;
    let ns = fresh_namespace(&f.client, "rescan").await;
    let _op = Operator::start(f.env, &f.database_url, &[&ns], &[]);
    let api = Api::<ScanRequest>::namespaced(f.client.clone(), &ns);
    let d = digest();
    let sr = ScanRequestBuilder::new("app", &f.scanner)
        .digest(&d)
        .mime_types(&[VULN])
        .rescan_token("v1")
        .build();
    create(&f.client, &ns, &sr).await;
    let first = wait_ready(&f.client, &ns, "app").await.status.unwrap();
    assert_eq!(f.adapter.stats().scans_for(&d, VULN), 1);

    // A new token forces a scan; meanwhile the old report stays in the status.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    f.adapter.set_pending_polls(3);
    api.patch(
        "app",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"rescanToken": "v2"}})),
    )
    .await
    .unwrap();
    let during = wait_condition(&f.client, &ns, "app", "Reconciling", "")
        .await
        .status
        .unwrap();
    let report = &during.reports[0];
    assert_eq!(report.phase, ReportPhase::Rescanning);
    assert_eq!(
        report.generated_at, first.reports[0].generated_at,
        "the old report is still shown"
    );
    assert_eq!(report.report_id, first.reports[0].report_id);
    assert_eq!(
        condition_of(&during, "Ready"),
        Some("True".into()),
        "still usable while rescanning"
    );
    let after = wait_ready(&f.client, &ns, "app").await.status.unwrap();
    assert!(after.reports[0].generated_at > first.reports[0].generated_at);
    assert_eq!(after.rescan_token.as_deref(), Some("v2"));
    assert_eq!(f.adapter.stats().scans_for(&d, VULN), 2);

    // rescanAfter: a report older than that is scanned again.
    f.adapter.set_pending_polls(0);
    api.patch(
        "app",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"rescanAfter": "1h"}})),
    )
    .await
    .unwrap();
    wait_ready(&f.client, &ns, "app").await;
    assert_eq!(
        f.adapter.stats().scans_for(&d, VULN),
        2,
        "a fresh report is not rescanned"
    );
    sqlx::query("UPDATE scan_job SET completed_at = now() - interval '2 hours'")
        .execute(f.store.pool())
        .await
        .unwrap();
    api.patch(
        "app",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"rescanAfter": "90m"}})),
    )
    .await
    .unwrap();
    eventually("the stale report to be rescanned", WAIT, || async {
        (f.adapter.stats().scans_for(&d, VULN) == 3).then_some(())
    })
    .await;
    wait_ready(&f.client, &ns, "app").await;
}

fn condition_of(
    status: &scanreport_operator::api::ScanRequestStatus,
    type_: &str,
) -> Option<String> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
}
