//! The report API end to end, through the real kube-apiserver's aggregation layer: an
//! APIService routed to the operator (an ExternalName Service for `localhost`), `kubectl` and the
//! kube client talking only to the main API server, two teams under RBAC, and the development
//! adapter's reports in a real PostgreSQL.

use std::process::Output;

use devscanner::{DevScanner, DevScannerConfig, expected_summary};
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, RoleBinding, RoleRef, Subject};
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};
use scanreport_operator::api::ScanRequest;
use scanreport_operator::identity::Digest;
use scanreport_operator::store::{PoolConfig, Store};
use serde_json::Value;
use testkit::fixtures::{ScanRequestBuilder, digest};
use testkit::operator::{Operator, WAIT, condition, create, create_scanner};
use testkit::{TestEnv, eventually, fresh_namespace, pgtest};
use tokio::sync::OnceCell;

const VULN: &str = "application/vnd.security.vulnerability.report; version=1.1";
const SBOM: &str = "application/vnd.security.sbom.report+json; version=1.0";
use testkit::aggregation::APISERVICE;
const READER_ROLE: &str = "scanreport-test-report-reader";

/// One operator serving the report API for every test of this file: the APIService is
/// cluster-wide, so there is one of it per control plane.
struct Setup {
    env: &'static TestEnv,
    database_url: String,
    team_a: String,
    team_b: String,
    /// team-a's digest (web, and web-again) and team-b's digest.
    digest_a: String,
    digest_b: String,
    port: u16,
    scanner: String,
    _operator: Operator,
}

static SETUP: OnceCell<Setup> = OnceCell::const_new();

async fn setup() -> &'static Setup {
    SETUP.get_or_init(start).await
}

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "reports.scanreport.io".into(),
        version: "v1alpha1".into(),
        api_version: "reports.scanreport.io/v1alpha1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

fn vulns(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        ns,
        &resource("VulnerabilityReport", "vulnerabilityreports"),
    )
}

/// The adapter runs on a runtime of its own: it must outlive the test that happens to start it.
fn start_adapter() -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let adapter = DevScanner::start(DevScannerConfig::default())
                .await
                .unwrap();
            tx.send(adapter.base_url().to_owned()).unwrap();
            std::future::pending::<()>().await;
        });
    });
    rx.recv().unwrap()
}

async fn start() -> Setup {
    let env = testkit::env().await;
    let client = env.client();
    let database_url = pgtest::fresh_database("reportapi").await;
    let url = start_adapter();
    let scanner = format!("reportapi-{:x}", rand::random::<u32>());
    create_scanner(&client, &scanner, &url).await;
    let team_a = fresh_namespace(&client, "team-a").await;
    let team_b = fresh_namespace(&client, "team-b").await;
    let system = fresh_namespace(&client, "scanreport-system").await;

    // The aggregator reaches the report API through an ExternalName Service for localhost.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    testkit::aggregation::register_report_api(&client, &system, "scanreport-reports", port).await;

    let listen = format!("127.0.0.1:{port}");
    let operator = Operator::start(
        env,
        &database_url,
        &[&team_a, &team_b],
        &["--report-api-listen", &listen],
    );

    // RBAC: team-a's group may read the reports of team-a, nothing else.
    let role = ClusterRole {
        metadata: ObjectMeta {
            name: Some(READER_ROLE.into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["reports.scanreport.io".into()]),
            resources: Some(vec!["vulnerabilityreports".into(), "sbomreports".into()]),
            verbs: vec!["get".into(), "list".into(), "watch".into()],
            ..Default::default()
        }]),
        ..Default::default()
    };
    let _ = Api::<ClusterRole>::all(client.clone())
        .create(&PostParams::default(), &role)
        .await;
    for (ns, group) in [(&team_a, "team-a"), (&team_b, "team-b")] {
        let binding = RoleBinding {
            metadata: ObjectMeta {
                name: Some("report-readers".into()),
                ..Default::default()
            },
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "ClusterRole".into(),
                name: READER_ROLE.into(),
            },
            subjects: Some(vec![Subject {
                kind: "Group".into(),
                name: group.into(),
                api_group: Some("rbac.authorization.k8s.io".into()),
                ..Default::default()
            }]),
        };
        Api::<RoleBinding>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &binding)
            .await
            .unwrap();
    }

    let (digest_a, digest_b) = (digest(), digest());
    for (ns, name, d) in [
        (&team_a, "web", &digest_a),
        (&team_a, "web-again", &digest_a),
        (&team_b, "api", &digest_b),
    ] {
        let sr = ScanRequestBuilder::new(name, &scanner)
            .digest(d)
            .mime_types(&[VULN, SBOM])
            .build();
        create(&client, ns, &sr).await;
    }
    for (ns, name) in [(&team_a, "web"), (&team_a, "web-again"), (&team_b, "api")] {
        wait_ready(&client, ns, name).await;
    }
    // Available: the aggregator reached the operator and trusts its (patched-in) certificate.
    eventually("the report APIService to become Available", WAIT, || {
        let api = Api::<APIService>::all(client.clone());
        async move {
            let s = api.get(APISERVICE).await.ok()?;
            s.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Available" && c.status == "True")
                .then_some(())
        }
    })
    .await;
    Setup {
        env,
        database_url,
        team_a,
        team_b,
        digest_a,
        digest_b,
        port,
        scanner,
        _operator: operator,
    }
}

async fn wait_ready(client: &Client, ns: &str, name: &str) -> ScanRequest {
    let api = Api::<ScanRequest>::namespaced(client.clone(), ns);
    eventually(&format!("{ns}/{name} to be Ready"), WAIT, || {
        let api = api.clone();
        async move {
            api.get(name)
                .await
                .ok()
                .filter(|sr| condition(sr, "Ready").is_some_and(|c| c.status == "True"))
                .filter(|sr| condition(sr, "Reconciling").is_none())
        }
    })
    .await
}

/// `kubectl` as a user of `group`, through the main API server.
fn kubectl(s: &Setup, user: &str, group: &str, args: &[&str]) -> Output {
    s.env
        .kubectl()
        .args(["--as", user, "--as-group", group])
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Where two JSON values first differ (a JSON pointer and both values), if they do.
fn first_difference(at: &str, a: &Value, b: &Value) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                first_difference(
                    &format!("{at}/{k}"),
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                )
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| first_difference(&format!("{at}/{i}"), p, q)),
        // kubectl re-encodes numbers (a stored 5.0 prints as 5).
        (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => None,
        _ if a == b => None,
        _ => Some(format!("{at}: {a} != {b}")),
    }
}

fn kube_code(e: kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test]
async fn a_team_reads_its_reports_with_kubectl_as_a_table_and_as_yaml() {
    let s = setup().await;
    let out = kubectl(
        s,
        "alice",
        "team-a",
        &["get", "vulnerabilityreports", "-n", &s.team_a],
    );
    let table = text(&out);
    assert!(out.status.success(), "{table}");
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "SCAN", "REQUEST", "DIGEST", "SCANNER", "CRITICAL", "HIGH", "MEDIUM", "LOW",
            "FIXABLE", "AGE"
        ],
        "{table}"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    let names: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    assert_eq!(names, ["web-again-vuln", "web-vuln"], "{table}");
    let expected = expected_summary(&Digest::parse(&s.digest_a).unwrap());
    let web = &rows[1];
    assert_eq!(web[1], "web");
    assert_eq!(
        web[2],
        &s.digest_a[..19],
        "the digest is shortened to 12 hex digits"
    );
    assert_eq!(web[5], expected.critical.to_string(), "{table}");
    assert_eq!(web[6], expected.high.to_string(), "{table}");
    assert_eq!(web[9], expected.fixable.to_string(), "{table}");

    // -o yaml shows the whole stored body: the same as PostgreSQL holds.
    let out = kubectl(
        s,
        "alice",
        "team-a",
        &[
            "get",
            "vulnerabilityreport",
            "web-vuln",
            "-n",
            &s.team_a,
            "-o",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let object: Value = serde_json::from_slice(&out.stdout).unwrap();
    let report_id = object["report"]["reportID"].as_str().unwrap();
    let store = Store::connect(&s.database_url, &PoolConfig::default())
        .await
        .unwrap();
    let stored = store
        .get(report_id.parse().unwrap())
        .await
        .unwrap()
        .expect("the report is stored");
    assert_eq!(
        first_difference("", &object["report"]["body"], &stored.report),
        None,
        "the body is served as stored"
    );
    let served = object["report"]["body"]["vulnerabilities"]
        .as_array()
        .unwrap();
    assert_eq!(served.len() as i64, expected.total());
    assert_eq!(
        object["metadata"]["labels"]["scanreport.io/scanrequest"],
        "web"
    );
    assert_eq!(
        object["metadata"]["labels"]["scanreport.io/report-id"],
        report_id
    );
    assert_eq!(object["report"]["artifact"]["digest"], s.digest_a.as_str());
    assert_eq!(object["report"]["summary"]["critical"], expected.critical);

    let yaml = kubectl(
        s,
        "alice",
        "team-a",
        &["get", "vulns", "web-vuln", "-n", &s.team_a, "-o", "yaml"],
    );
    let first_cve = served[0]["id"].as_str().unwrap();
    assert!(text(&yaml).contains(first_cve), "{}", text(&yaml));

    let sboms = kubectl(
        s,
        "alice",
        "team-a",
        &["get", "sbomreports", "-n", &s.team_a, "-o", "name"],
    );
    assert_eq!(
        String::from_utf8_lossy(&sboms.stdout)
            .lines()
            .collect::<Vec<_>>(),
        [
            "sbomreport.reports.scanreport.io/web-again-sbom",
            "sbomreport.reports.scanreport.io/web-sbom"
        ],
        "{}",
        text(&sboms)
    );
}

#[tokio::test]
async fn a_team_is_forbidden_from_another_teams_reports_and_from_all_namespaces() {
    let s = setup().await;
    let alice = s.env.impersonating_client("alice", &["team-a"]);
    assert_eq!(
        vulns(&alice, &s.team_a)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    let e = vulns(&alice, &s.team_b)
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert_eq!(kube_code(e), 403);
    let e = vulns(&alice, &s.team_b).get("api-vuln").await.unwrap_err();
    assert_eq!(kube_code(e), 403, "existence is not revealed either");
    let all: Api<DynamicObject> = Api::all_with(
        alice.clone(),
        &resource("VulnerabilityReport", "vulnerabilityreports"),
    );
    assert_eq!(
        kube_code(all.list(&ListParams::default()).await.unwrap_err()),
        403
    );
    let out = kubectl(s, "alice", "team-a", &["get", "vulns", "-n", &s.team_b]);
    assert!(!out.status.success());
    assert!(text(&out).contains("forbidden"), "{}", text(&out));

    // team-b reads its own, and only its own.
    let bob = s.env.impersonating_client("bob", &["team-b"]);
    let theirs = vulns(&bob, &s.team_b)
        .list(&ListParams::default())
        .await
        .unwrap();
    let names: Vec<String> = theirs.items.iter().map(|o| o.name_any()).collect();
    assert_eq!(names, ["api-vuln"]);
    assert_eq!(
        theirs.items[0].data["report"]["artifact"]["digest"],
        s.digest_b.as_str()
    );
    let admin_all = Api::<DynamicObject>::all_with(
        s.env.client(),
        &resource("VulnerabilityReport", "vulnerabilityreports"),
    );
    let every = admin_all.list(&ListParams::default()).await.unwrap();
    let mut seen: Vec<(String, String)> = every
        .items
        .iter()
        .map(|o| (o.namespace().unwrap_or_default(), o.name_any()))
        .collect();
    seen.sort();
    let mut want = vec![
        (s.team_a.clone(), "web-again-vuln".to_owned()),
        (s.team_a.clone(), "web-vuln".to_owned()),
        (s.team_b.clone(), "api-vuln".to_owned()),
    ];
    want.sort();
    assert_eq!(
        seen, want,
        "a cluster-wide reader sees each namespace's own references"
    );
}

#[tokio::test]
async fn an_unauthenticated_caller_gets_401_and_the_port_refuses_callers_without_the_proxy_certificate()
 {
    let s = setup().await;
    // Through the API server with a bad token.
    let mut config = s.env.tester_config();
    config.auth_info.token = Some("not-a-valid-token".to_owned().into());
    let stranger = Client::try_from(config).unwrap();
    let e = vulns(&stranger, &s.team_a)
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert_eq!(kube_code(e), 401);

    // Straight to the report API's port, claiming to be an admin in the headers.
    let path = format!(
        "https://127.0.0.1:{}/apis/reports.scanreport.io/v1alpha1/namespaces/{}/vulnerabilityreports",
        s.port, s.team_a
    );
    let direct = curl(&path, None);
    assert!(direct.contains("\"code\":401"), "{direct}");
    assert!(
        direct.contains("front-proxy client certificate"),
        "{direct}"
    );
    // A certificate of the wrong CA is no better: the handshake fails.
    let (cert, key) = s.env.front_proxy_client();
    let with_proxy_cert = curl(&path, Some((&cert, &key)));
    assert!(
        with_proxy_cert.contains("\"kind\":\"VulnerabilityReportList\""),
        "only the holder of the aggregator's certificate is trusted: {with_proxy_cert}"
    );
    let wrong = s.env.dir().join("pki").join("server.crt");
    let wrong_key = s.env.dir().join("pki").join("server.key");
    let refused = curl(&path, Some((&wrong, &wrong_key)));
    assert!(!refused.contains("VulnerabilityReportList"), "{refused}");
}

/// `curl -sk` with spoofed identity headers, optionally with a client certificate.
fn curl(url: &str, cert: Option<(&std::path::Path, &std::path::Path)>) -> String {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sk", "--max-time", "10"]).args([
        "-H",
        "X-Remote-User: system:admin",
        "-H",
        "X-Remote-Group: system:masters",
    ]);
    if let Some((c, k)) = cert {
        cmd.arg("--cert").arg(c).arg("--key").arg(k);
    }
    let out = cmd.arg(url).output().expect("curl");
    text(&out)
}

#[tokio::test]
async fn label_selectors_pick_reports_by_scan_request() {
    let s = setup().await;
    let alice = s.env.impersonating_client("alice", &["team-a"]);
    let picked = vulns(&alice, &s.team_a)
        .list(&ListParams::default().labels("scanreport.io/scanrequest=web"))
        .await
        .unwrap();
    let names: Vec<String> = picked.items.iter().map(|o| o.name_any()).collect();
    assert_eq!(names, ["web-vuln"]);
    let set = vulns(&alice, &s.team_a)
        .list(&ListParams::default().labels("scanreport.io/scanrequest notin (web)"))
        .await
        .unwrap();
    assert_eq!(set.items.len(), 1);
    assert_eq!(set.items[0].name_any(), "web-again-vuln");
    // A list carries no bodies; a get does.
    assert!(picked.items[0].data.pointer("/report/body").is_none());
    let one = vulns(&alice, &s.team_a).get("web-vuln").await.unwrap();
    assert!(one.data.pointer("/report/body/vulnerabilities").is_some());
    let bad = vulns(&alice, &s.team_a)
        .list(&ListParams::default().labels("a in (b"))
        .await
        .unwrap_err();
    assert_eq!(kube_code(bad), 400);
}

#[tokio::test]
async fn kubectl_explain_describes_the_report_kinds() {
    let s = setup().await;
    let out = kubectl(
        s,
        "alice",
        "team-a",
        &["explain", "vulnerabilityreports.report"],
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    for field in ["artifact", "scanRequest", "summary", "body", "reportID"] {
        assert!(t.contains(field), "{field} missing from:\n{t}");
    }
    let writes = kubectl(
        s,
        "alice",
        "team-a",
        &["delete", "vulns", "web-vuln", "-n", &s.team_a],
    );
    assert!(
        !writes.status.success(),
        "the reports are read-only: {}",
        text(&writes)
    );
}

#[tokio::test]
async fn a_watch_sees_a_new_report_once_its_scan_request_is_ready() {
    let s = setup().await;
    let client = s.env.client();
    let alice = s.env.impersonating_client("alice", &["team-a"]);
    let api = vulns(&alice, &s.team_a);
    let list = api.list(&ListParams::default()).await.unwrap();
    let version = list.metadata.resource_version.clone().unwrap_or_default();
    let mut watch = Box::pin(
        api.watch(&kube::api::WatchParams::default(), &version)
            .await
            .unwrap(),
    );
    let name = format!("late-{:x}", rand::random::<u16>());
    let sr = ScanRequestBuilder::new(&name, &s.scanner)
        .digest(&digest())
        .mime_types(&[VULN])
        .build();
    create(&client, &s.team_a, &sr).await;
    let want = format!("{name}-vuln");
    let added = tokio::time::timeout(WAIT, async {
        use futures::StreamExt;
        while let Some(event) = watch.next().await {
            if let kube::api::WatchEvent::Added(o) = event.unwrap()
                && o.name_any() == want
            {
                return o;
            }
        }
        panic!("the watch ended");
    })
    .await
    .expect("an ADDED event for the new report");
    assert_eq!(
        added
            .labels()
            .get("scanreport.io/scanrequest")
            .map(String::as_str),
        Some(name.as_str())
    );
}
