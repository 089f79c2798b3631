//! Scan policies end to end: the operator binary on a real API server, PostgreSQL and the
//! development adapter, whose reports are a pure function of the digest
//! (`devscanner::expected_vulnerabilities`), so the tests name exact CVE ids.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use devscanner::{DevScanner, DevScannerConfig, DevScannerHandle, ExpectedVulnerability};
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use scanreport_operator::api::{
    PolicyReference, PolicyRules, ScanPolicy, ScanPolicySpec, ScanRequest,
};
use scanreport_operator::identity::{self, Digest, MimeType};
use serde_json::json;
use testkit::fixtures::{digest, request};
use testkit::operator::{Operator, WAIT, condition, create, create_scanner};
use testkit::{TestEnv, eventually, fresh_namespace, pgtest};

const VULN: &str = "application/vnd.security.vulnerability.report; version=1.1";
const HARBOR: &str = "application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.0";

struct Fixture {
    env: &'static TestEnv,
    client: Client,
    database_url: String,
    adapter: DevScannerHandle,
    scanner: String,
}

async fn fixture(prefix: &str) -> Fixture {
    let env = testkit::env().await;
    let client = env.client();
    let database_url = pgtest::fresh_database(prefix).await;
    let adapter = DevScanner::start(DevScannerConfig::default())
        .await
        .unwrap();
    let scanner = format!("{prefix}-{:x}", rand::random::<u32>());
    create_scanner(&client, &scanner, adapter.base_url()).await;
    Fixture {
        env,
        client,
        database_url,
        adapter,
        scanner,
    }
}

/// What the adapter reports for `d`, each (id, package, version) once.
fn vulns(d: &str) -> Vec<ExpectedVulnerability> {
    let mut seen = BTreeSet::new();
    devscanner::expected_vulnerabilities(&Digest::parse(d).unwrap())
        .into_iter()
        .filter(|v| seen.insert((v.id.clone(), v.package.clone(), v.version.clone())))
        .collect()
}

/// A random digest whose vulnerabilities satisfy `wanted`.
fn digest_where(wanted: impl Fn(&[ExpectedVulnerability]) -> bool) -> String {
    loop {
        let d = digest();
        if wanted(&vulns(&d)) {
            return d;
        }
    }
}

fn of(vulns: &[ExpectedVulnerability], severity: &str) -> Vec<ExpectedVulnerability> {
    vulns
        .iter()
        .filter(|v| v.severity == severity)
        .cloned()
        .collect()
}

/// Ids worst first as `status.policy.violations` lists them (one severity: by id, package).
fn sorted_ids(vulns: &[ExpectedVulnerability]) -> Vec<String> {
    let mut keys: Vec<_> = vulns
        .iter()
        .map(|v| (v.id.clone(), v.package.clone(), v.version.clone()))
        .collect();
    keys.sort();
    keys.into_iter().map(|(id, _, _)| id).take(10).collect()
}

fn rules(value: serde_json::Value) -> PolicyRules {
    serde_json::from_value(value).unwrap()
}

fn with_policy(mut sr: ScanRequest, policy: PolicyRules) -> ScanRequest {
    sr.spec.policy = Some(Box::new(policy));
    sr
}

fn with_policy_ref(mut sr: ScanRequest, name: &str) -> ScanRequest {
    sr.spec.policy_ref = Some(PolicyReference { name: name.into() });
    sr
}

fn current(sr: &ScanRequest) -> bool {
    sr.status.as_ref().and_then(|s| s.observed_generation) == sr.metadata.generation
}

fn compliant(sr: &ScanRequest) -> Option<bool> {
    sr.status.as_ref()?.policy.as_ref().map(|p| p.compliant)
}

fn is_true(sr: &ScanRequest, type_: &str) -> bool {
    condition(sr, type_).is_some_and(|c| c.status == "True")
}

/// Compliant and Ready, for the generation applied.
fn ready_and_compliant(sr: &ScanRequest) -> bool {
    current(sr) && compliant(sr) == Some(true) && is_true(sr, "Ready")
}

/// Stalled for a policy violation, for the generation applied.
fn violating(sr: &ScanRequest) -> bool {
    current(sr)
        && compliant(sr) == Some(false)
        && condition(sr, "Stalled")
            .is_some_and(|c| c.status == "True" && c.reason == "PolicyViolation")
        && condition(sr, "Ready").is_some_and(|c| c.status == "False")
}

async fn wait_for(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
    check: impl Fn(&ScanRequest) -> bool,
) -> ScanRequest {
    let api = Api::<ScanRequest>::namespaced(client.clone(), ns);
    let check = &check;
    eventually(&format!("{ns}/{name} {what}"), WAIT, || {
        let api = api.clone();
        async move { api.get(name).await.ok().filter(|sr| check(sr)) }
    })
    .await
}

/// The Events of `name` with `reason`.
async fn event_objects(client: &Client, ns: &str, name: &str, reason: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
        .collect()
}

/// The notes of the Events of `name` with `reason`.
async fn events(client: &Client, ns: &str, name: &str, reason: &str) -> Vec<String> {
    event_objects(client, ns, name, reason)
        .await
        .into_iter()
        .filter_map(|e| e.note)
        .collect()
}

async fn wait_event(client: &Client, ns: &str, name: &str, reason: &str) -> String {
    eventually(
        &format!("a {reason} Event of {ns}/{name}"),
        WAIT,
        || async { events(client, ns, name, reason).await.into_iter().next() },
    )
    .await
}

/// Runs `cmd` off the test's runtime thread, which also serves the in-process adapter.
async fn run(mut cmd: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

/// `docs/gate-scanrequest.sh` against the test control plane: (exit code, how long it took).
async fn gate(env: &TestEnv, ns: &str, name: &str, timeout: &str) -> (Option<i32>, Duration) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/gate-scanrequest.sh");
    let started = Instant::now();
    let mut cmd = Command::new(script);
    cmd.args([name, ns, timeout])
        .env("KUBECONFIG", env.kubeconfig())
        .env("KUBECTL", kubectl_program(env));
    let out = run(cmd).await;
    eprintln!(
        "gate {ns}/{name}: {:?} in {:.1?}\n{}{}",
        out.status.code(),
        started.elapsed(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), started.elapsed())
}

/// The kubectl that `TestEnv::kubectl` runs.
fn kubectl_program(env: &TestEnv) -> std::ffi::OsString {
    std::env::var_os("KUBECTL").unwrap_or_else(|| {
        let bundled = env.assets().join("kubectl");
        if bundled.is_file() {
            bundled.into_os_string()
        } else {
            "kubectl".into()
        }
    })
}

#[tokio::test]
async fn a_compliant_request_is_ready_shows_its_verdict_and_passes_the_gate() {
    let f = fixture("polok").await;
    let ns = fresh_namespace(&f.client, "polok").await;
    let _op = Operator::start(f.env, &f.database_url, &[&ns], &[]);
    let d = digest();
    let all = vulns(&d);
    let (critical, high) = (of(&all, "Critical").len(), of(&all, "High").len());
    // Limits at exactly the counts: compliant, with nothing to spare.
    let policy = rules(json!({"maxCounts": {"critical": critical, "high": high}}));
    create(
        &f.client,
        &ns,
        &with_policy(request("app", &f.scanner, &d, &[VULN, HARBOR]), policy),
    )
    .await;
    let sr = wait_for(&f.client, &ns, "app", "compliant", ready_and_compliant).await;
    let verdict = sr.status.as_ref().unwrap().policy.clone().unwrap();
    assert_eq!(verdict.policy, "inline");
    assert_eq!(verdict.counts.critical, critical as i64);
    assert_eq!(verdict.counts.high, high as i64);
    assert_eq!(verdict.violation_count, 0);
    assert!(verdict.violations.is_empty());
    assert!(condition(&sr, "Stalled").is_none());
    let ready = condition(&sr, "Ready").unwrap();
    assert!(
        ready.message.contains("comply with the inline policy"),
        "{ready:?}"
    );
    assert!(
        wait_event(&f.client, &ns, "app", "PolicyCompliant")
            .await
            .contains("comply")
    );

    // `kubectl get sr` shows the verdict in its Compliant column.
    let mut get = f.env.kubectl();
    get.args(["get", "scanrequests", "-n", &ns, "app"]);
    let out = run(get).await;
    let table = String::from_utf8_lossy(&out.stdout);
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let row: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let column = header.iter().position(|h| *h == "COMPLIANT").expect(&table);
    assert_eq!(row.get(column), Some(&"true"), "{table}");

    let (code, _) = gate(f.env, &ns, "app", "60s").await;
    assert_eq!(code, Some(0), "the gate passes a compliant request");
}

#[tokio::test]
async fn a_violating_request_stalls_naming_its_worst_cves_and_fails_the_gate_fast() {
    let f = fixture("polbad").await;
    let ns = fresh_namespace(&f.client, "polbad").await;
    let _op = Operator::start(f.env, &f.database_url, &[&ns], &[]);
    let d = digest_where(|v| !of(v, "Critical").is_empty());
    let criticals = of(&vulns(&d), "Critical");
    let policy = rules(json!({"maxCounts": {"critical": 0}}));
    let applied = Instant::now();
    create(
        &f.client,
        &ns,
        &with_policy(request("app", &f.scanner, &d, &[VULN]), policy),
    )
    .await;
    // The gate fails as soon as the verdict is there, not at its timeout.
    let (code, took) = gate(f.env, &ns, "app", "120s").await;
    assert_eq!(code, Some(1), "the gate fails a violating request");
    assert!(took < Duration::from_secs(30), "failed fast: {took:?}");
    eprintln!(
        "violation to gate failure: {:.1?} after apply",
        applied.elapsed()
    );

    let sr = wait_for(&f.client, &ns, "app", "violating", violating).await;
    let verdict = sr.status.as_ref().unwrap().policy.clone().unwrap();
    let ids: Vec<String> = verdict.violations.iter().map(|v| v.id.clone()).collect();
    assert_eq!(
        ids,
        sorted_ids(&criticals),
        "exactly the critical CVEs, worst first"
    );
    assert_eq!(verdict.violation_count, criticals.len() as i64);
    let worst = &verdict.violations[0];
    let expected_worst = criticals.iter().find(|v| v.id == worst.id).unwrap();
    assert_eq!(worst.package, expected_worst.package);
    assert_eq!(worst.severity, "Critical");
    let stalled = condition(&sr, "Stalled").unwrap();
    assert!(stalled.message.contains(&worst.id), "{stalled:?}");
    assert!(
        stalled
            .message
            .contains(&format!("{} critical (at most 0 allowed)", criticals.len())),
        "{stalled:?}"
    );
    assert!(
        wait_event(&f.client, &ns, "app", "PolicyViolation")
            .await
            .contains(&worst.id)
    );

    // Plain `kubectl wait --for=condition=Ready` cannot tell; it fails only at its timeout.
    let mut wait = f.env.kubectl();
    wait.args([
        "wait",
        "-n",
        &ns,
        "scanrequest/app",
        "--for=condition=Ready",
        "--timeout=3s",
    ]);
    let out = run(wait).await;
    assert!(!out.status.success(), "a violating request is never Ready");

    // One Event per change of verdict: reconciles that find the same verdict add none.
    Api::<ScanRequest>::namespaced(f.client.clone(), &ns)
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}, "spec": {"rescanToken": "again"}})),
        )
        .await
        .unwrap();
    wait_for(&f.client, &ns, "app", "violating after a rescan", |sr| {
        violating(sr) && sr.status.as_ref().unwrap().rescan_token.as_deref() == Some("again")
    })
    .await;
    // A repeat would be merged into the first Event's series: there is none.
    let violations = event_objects(&f.client, &ns, "app", "PolicyViolation").await;
    assert_eq!(violations.len(), 1);
    assert!(violations[0].series.is_none(), "{:?}", violations[0].series);
    assert!(
        events(&f.client, &ns, "app", "PolicyCompliant")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn an_allowlisted_cve_complies_until_its_entry_expires_and_then_flips_on_time() {
    let f = fixture("polallow").await;
    let ns = fresh_namespace(&f.client, "polallow").await;
    let _op = Operator::start(f.env, &f.database_url, &[&ns], &[]);
    let d = digest_where(|v| !of(v, "Critical").is_empty());
    let criticals = of(&vulns(&d), "Critical");
    let expiring = sorted_ids(&criticals)[0].clone();
    // Whole seconds: the schema's RFC 3339 form.
    let expires = chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp() + 12, 0).unwrap();
    let allowlist: Vec<_> = criticals
        .iter()
        .map(|v| v.id.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|id| {
            if id == expiring {
                json!({"id": id, "expires": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "reason": "a backport is on the way"})
            } else {
                json!({"id": id.to_lowercase(), "reason": "not reachable"})
            }
        })
        .collect();
    let policy = rules(json!({"maxCounts": {"critical": 0}, "allowlist": allowlist}));
    create(
        &f.client,
        &ns,
        &with_policy(request("app", &f.scanner, &d, &[VULN]), policy),
    )
    .await;
    let sr = wait_for(&f.client, &ns, "app", "compliant", ready_and_compliant).await;
    assert!(
        chrono::Utc::now() < expires,
        "the scan took too long for this test"
    );
    let verdict = sr.status.as_ref().unwrap().policy.clone().unwrap();
    assert_eq!(verdict.allowlisted, criticals.len() as i64);
    assert_eq!(verdict.counts.critical, 0);
    let generation = sr.metadata.generation;

    // Nothing changes but the clock: the verdict flips at the expiry, not before, not later.
    let api = Api::<ScanRequest>::namespaced(f.client.clone(), &ns);
    let flipped = eventually("the verdict to flip at expiry", WAIT, || async {
        let sr = api.get("app").await.ok()?;
        compliant(&sr)
            .filter(|c| !c)
            .map(|_| (sr, chrono::Utc::now()))
    })
    .await;
    let (sr, seen_at) = flipped;
    assert!(seen_at >= expires, "flipped {seen_at} before {expires}");
    let late = seen_at - expires;
    eprintln!(
        "verdict flipped {} ms after the allowlist expiry",
        late.num_milliseconds()
    );
    assert!(
        late < chrono::Duration::seconds(3),
        "flipped {late} after expiry"
    );
    assert_eq!(
        sr.metadata.generation, generation,
        "no change of the request"
    );
    assert!(violating(&sr), "{:?}", sr.status);
    let verdict = sr.status.as_ref().unwrap().policy.clone().unwrap();
    let ids: Vec<&str> = verdict.violations.iter().map(|v| v.id.as_str()).collect();
    assert_eq!(ids, [expiring.as_str()]);
    assert_eq!(verdict.allowlisted, criticals.len() as i64 - 1);
}

#[tokio::test]
async fn ignore_unfixed_drops_vulnerabilities_without_a_fix_until_it_is_turned_off() {
    let f = fixture("polunfixed").await;
    let ns = fresh_namespace(&f.client, "polunfixed").await;
    let _op = Operator::start(f.env, &f.database_url, &[&ns], &[]);
    let d = digest_where(|v| of(v, "High").iter().any(|h| h.fix_version.is_none()));
    let all = vulns(&d);
    let highs = of(&all, "High");
    let fixed_highs = highs.iter().filter(|h| h.fix_version.is_some()).count();
    let unfixed: Vec<_> = highs
        .iter()
        .filter(|h| h.fix_version.is_none())
        .cloned()
        .collect();
    let policy = rules(json!({"maxCounts": {"high": fixed_highs}, "ignoreUnfixed": true}));
    create(
        &f.client,
        &ns,
        &with_policy(request("app", &f.scanner, &d, &[VULN]), policy),
    )
    .await;
    let sr = wait_for(&f.client, &ns, "app", "compliant", ready_and_compliant).await;
    let verdict = sr.status.as_ref().unwrap().policy.clone().unwrap();
    let all_unfixed = all.iter().filter(|v| v.fix_version.is_none()).count();
    assert_eq!(verdict.ignored_unfixed, all_unfixed as i64);
    assert_eq!(verdict.counts.high, fixed_highs as i64);

    Api::<ScanRequest>::namespaced(f.client.clone(), &ns)
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"policy": {"ignoreUnfixed": false}}})),
        )
        .await
        .unwrap();
    let sr = wait_for(&f.client, &ns, "app", "violating", violating).await;
    let verdict = sr.status.as_ref().unwrap().policy.clone().unwrap();
    assert_eq!(verdict.ignored_unfixed, 0);
    assert_eq!(verdict.violation_count, highs.len() as i64);
    let listed: BTreeSet<&str> = verdict.violations.iter().map(|v| v.id.as_str()).collect();
    let unfixed_ids: BTreeSet<&str> = unfixed.iter().map(|v| v.id.as_str()).collect();
    if highs.len() <= 10 {
        assert!(unfixed_ids.is_subset(&listed), "{listed:?} {unfixed_ids:?}");
    }
    assert!(
        verdict
            .violations
            .iter()
            .filter(|v| unfixed_ids.contains(v.id.as_str()))
            .all(|v| v.fix_version.is_none())
    );
}

#[tokio::test]
async fn a_scan_policy_edit_re_evaluates_its_referrers_and_only_them() {
    let f = fixture("polref").await;
    let ns = fresh_namespace(&f.client, "polref").await;
    let _op = Operator::start(f.env, &f.database_url, &[&ns], &[]);
    let policies = Api::<ScanPolicy>::all(f.client.clone());
    let suffix = format!("{:x}", rand::random::<u32>());
    let (pa, pb, pm) = (
        format!("team-a-{suffix}"),
        format!("team-b-{suffix}"),
        format!("later-{suffix}"),
    );
    let no_critical = rules(json!({"maxCounts": {"critical": 0}}));
    for (name, rules) in [(&pa, PolicyRules::default()), (&pb, no_critical.clone())] {
        policies
            .create(
                &PostParams::default(),
                &ScanPolicy::new(name, ScanPolicySpec { rules }),
            )
            .await
            .unwrap();
    }
    // a1 and a2 share a digest with criticals (a2 reuses the stored report); b1's has none.
    let da = digest_where(|v| !of(v, "Critical").is_empty());
    let db = digest_where(|v| of(v, "Critical").is_empty());
    for (name, d, policy) in [("a1", &da, &pa), ("a2", &da, &pa), ("b1", &db, &pb)] {
        create(
            &f.client,
            &ns,
            &with_policy_ref(request(name, &f.scanner, d, &[VULN]), policy),
        )
        .await;
    }
    for name in ["a1", "a2", "b1"] {
        let sr = wait_for(&f.client, &ns, name, "compliant", ready_and_compliant).await;
        let verdict = sr.status.unwrap().policy.unwrap();
        assert_eq!(verdict.generation, Some(1), "{name}");
    }
    assert_eq!(
        f.adapter.stats().scans_for(&da, VULN),
        1,
        "a2 reused a1's report"
    );

    // A reconcile of b1 would now see a critical: its stored findings (which evaluation reads,
    // never the body) are changed behind the operator's back, as a newer row version (so the
    // operator's cache of findings read before does not hide it). Only a reconcile shows it.
    let store_url = &f.database_url;
    let pool = sqlx::PgPool::connect(store_url).await.unwrap();
    let registration = identity::default_registration_uuid(&f.scanner).unwrap();
    let b_report = identity::report_id(
        &Digest::parse(&db).unwrap(),
        &registration,
        &MimeType::parse(VULN).unwrap(),
    );
    let changed = sqlx::query(
        r#"UPDATE scan_report SET findings = findings || '[["CVE-2099-0001","tampered","1","Critical",null]]'::jsonb, updated_at = now() WHERE id = $1"#,
    )
    .bind(b_report)
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(changed.rows_affected(), 1);

    // Edit team-a's policy: a1 and a2 are judged by its new generation.
    policies
        .patch(
            &pa,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"rules": {"maxCounts": {"critical": 0}}}})),
        )
        .await
        .unwrap();
    for name in ["a1", "a2"] {
        let sr = wait_for(&f.client, &ns, name, "violating under generation 2", |sr| {
            violating(sr)
                && sr
                    .status
                    .as_ref()
                    .and_then(|s| s.policy.as_ref())
                    .and_then(|p| p.generation)
                    == Some(2)
        })
        .await;
        let ids: Vec<String> = sr
            .status
            .unwrap()
            .policy
            .unwrap()
            .violations
            .iter()
            .map(|v| v.id.clone())
            .collect();
        assert_eq!(ids, sorted_ids(&of(&vulns(&da), "Critical")), "{name}");
    }
    // b1 was not reconciled: it still shows the verdict on its untampered findings.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let b1 = Api::<ScanRequest>::namespaced(f.client.clone(), &ns)
        .get("b1")
        .await
        .unwrap();
    assert!(
        ready_and_compliant(&b1),
        "b1 was re-evaluated: {:?}",
        b1.status
    );

    // The control: a change of team-b's policy re-evaluates b1, which then sees the finding.
    policies
        .patch(
            &pb,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"reviewed": "yes"}}})),
        )
        .await
        .unwrap();
    let b1 = wait_for(&f.client, &ns, "b1", "violating", violating).await;
    let ids: Vec<String> = b1
        .status
        .unwrap()
        .policy
        .unwrap()
        .violations
        .iter()
        .map(|v| v.id.clone())
        .collect();
    assert_eq!(ids, ["CVE-2099-0001"]);

    // A missing ScanPolicy stalls its referrer, naming spec.policyRef; creating it fixes that.
    create(
        &f.client,
        &ns,
        &with_policy_ref(request("m1", &f.scanner, &db, &[VULN]), &pm),
    )
    .await;
    let m1 = wait_for(
        &f.client,
        &ns,
        "m1",
        "stalled on its missing policy",
        |sr| {
            condition(sr, "Stalled")
                .is_some_and(|c| c.status == "True" && c.reason == "PolicyNotFound")
        },
    )
    .await;
    let message = &condition(&m1, "Stalled").unwrap().message;
    assert!(
        message.contains("spec.policyRef") && message.contains(&pm),
        "{message}"
    );
    assert_eq!(m1.status.unwrap().policy, None);
    policies
        .create(
            &PostParams::default(),
            &ScanPolicy::new(&pm, ScanPolicySpec::default()),
        )
        .await
        .unwrap();
    wait_for(
        &f.client,
        &ns,
        "m1",
        "compliant once its policy exists",
        ready_and_compliant,
    )
    .await;
    // Deleting a ScanPolicy stalls its referrers at once and takes their verdict away.
    policies.delete(&pa, &Default::default()).await.unwrap();
    for name in ["a1", "a2"] {
        let sr = wait_for(
            &f.client,
            &ns,
            name,
            "stalled on its deleted policy",
            |sr| {
                condition(sr, "Stalled")
                    .is_some_and(|c| c.status == "True" && c.reason == "PolicyNotFound")
            },
        )
        .await;
        assert_eq!(sr.status.unwrap().policy, None, "{name}");
    }
    for name in [&pb, &pm] {
        let _ = policies.delete(name, &Default::default()).await;
    }
}

#[tokio::test]
async fn the_schema_rejects_bad_policies_at_admission() {
    let env = testkit::env().await;
    let client = env.client();
    let ns = fresh_namespace(&client, "poladm").await;
    let api = Api::<ScanRequest>::namespaced(client.clone(), &ns);
    let base = || request("bad", "trivy", &digest(), &[VULN]);
    let cases: Vec<(ScanRequest, &str)> = vec![
        (
            with_policy_ref(with_policy(base(), PolicyRules::default()), "strict"),
            "mutually exclusive",
        ),
        (
            with_policy(base(), rules(json!({"maxReportAge": "30s"}))),
            "maxReportAge must be a duration from 1m to 8760h",
        ),
        (
            with_policy(base(), rules(json!({"maxCounts": {"critical": -1}}))),
            "critical",
        ),
        (
            with_policy(
                base(),
                rules(json!({"allowlist": [{"id": "CVE-1", "expires": "next week"}]})),
            ),
            "expires",
        ),
        (
            with_policy(base(), rules(json!({"allowlist": [{"id": "CVE 1"}]}))),
            "allowlist[0].id",
        ),
        (
            with_policy(
                base(),
                rules(json!({"allowlist": [{"id": "CVE-1"}, {"id": "CVE-1"}]})),
            ),
            "Duplicate value",
        ),
    ];
    for (sr, needle) in cases {
        let err = api
            .create(&PostParams::default(), &sr)
            .await
            .expect_err("rejected at admission");
        let text = err.to_string();
        assert!(text.contains(needle), "expected {needle:?} in: {text}");
    }
    let too_many: Vec<_> = (0..513)
        .map(|i| json!({"id": format!("CVE-2024-{i}")}))
        .collect();
    let err = Api::<ScanPolicy>::all(client.clone())
        .create(
            &PostParams::default(),
            &ScanPolicy::new(
                &format!("big-{:x}", rand::random::<u32>()),
                ScanPolicySpec {
                    rules: rules(json!({"allowlist": too_many})),
                },
            ),
        )
        .await
        .expect_err("at most 512 allowlist entries");
    assert!(err.to_string().contains("512"), "{err}");
}
