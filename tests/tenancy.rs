//! Tenant isolation, attacked the way a hostile namespace would, on the real API server, a real
//! registry (Distribution with htpasswd, testkit::registry), PostgreSQL and the
//! development adapter. The operator runs with `--artifact-access verify`.
//!
//! Team A keeps a private image in its registry; team B has a registry of its own. One test per
//! attack (see docs/security.md).

use std::time::Duration;

use base64::Engine;
use devscanner::{
    DevAuth, DevScanner, DevScannerConfig, DevScannerHandle, Endpoint, FaultKind, FaultRule,
};
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use scanreport_operator::api::{ScanRequest, Scanner};
use scanreport_operator::store::{PoolConfig, Store};
use serde_json::json;
use testkit::fixtures::{ScanRequestBuilder, SecretBuilder};
use testkit::operator::{self, Operator, WAIT, create, create_scanner};
use testkit::registry::TestRegistry;
use testkit::{TestEnv, eventually, fresh_namespace, pgtest};

const VULN: &str = "application/vnd.security.vulnerability.report; version=1.1";
const TEAM_A: (&str, &str) = ("team-a-robot", "a-pass  with two spaces");
const TEAM_B: (&str, &str) = ("team-b-robot", "b-pass-0451");
const REPO_A: &str = "team-a/app";
const REPO_B: &str = "team-b/mirror";

struct Tenancy {
    client: Client,
    adapter: DevScannerHandle,
    scanner: String,
    registry_a: TestRegistry,
    registry_b: TestRegistry,
    /// The private image's digest, in A's registry (REPO_A) and B's (REPO_B).
    digest: String,
    ns_a: String,
    ns_b: String,
    /// The operator's own namespace (`--cluster-resource-namespace`).
    ns_operator: String,
    op: Operator,
}

async fn tenancy(prefix: &str, adapter: DevScannerConfig, with_scanner: bool) -> Tenancy {
    let env: &TestEnv = testkit::env().await;
    let client = env.client();
    let database_url = pgtest::fresh_database(prefix).await;
    let store = Store::connect(&database_url, &PoolConfig::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let registry_a = TestRegistry::start(&[TEAM_A]).unwrap();
    let registry_b = TestRegistry::start(&[TEAM_B]).unwrap();
    let image_a = registry_a
        .push_image(REPO_A, "1.0", "amd64", "team A's private build")
        .await
        .unwrap();
    let image_b = registry_b
        .push_image(REPO_B, "1.0", "amd64", "team A's private build")
        .await
        .unwrap();
    assert_eq!(image_a.digest, image_b.digest, "the same image in both");
    let adapter = DevScanner::start(adapter).await.unwrap();
    let scanner = format!("{prefix}-{:x}", rand::random::<u32>());
    if with_scanner {
        create_scanner(&client, &scanner, adapter.base_url()).await;
    }
    let ns_a = fresh_namespace(&client, &format!("{prefix}-a")).await;
    let ns_b = fresh_namespace(&client, &format!("{prefix}-b")).await;
    let ns_operator = fresh_namespace(&client, &format!("{prefix}-op")).await;
    let op = Operator::start(
        env,
        &database_url,
        &[&ns_a, &ns_b],
        &[
            "--artifact-access",
            "verify",
            "--cluster-resource-namespace",
            &ns_operator,
        ],
    );
    Tenancy {
        client,
        adapter,
        scanner,
        registry_a,
        registry_b,
        digest: image_a.digest,
        ns_a,
        ns_b,
        ns_operator,
        op,
    }
}

/// A `kubernetes.io/dockerconfigjson` Secret for one registry host.
async fn docker_secret(client: &Client, ns: &str, name: &str, host: &str, user: (&str, &str)) {
    SecretBuilder::docker_config()
        .name(name)
        .auth(host, user.0, user.1)
        .create(client, ns)
        .await;
}

trait BasicForm {
    fn format_basic(&self, user: (&str, &str)) -> String;
}

impl BasicForm for base64::engine::GeneralPurpose {
    fn format_basic(&self, (user, password): (&str, &str)) -> String {
        self.encode(format!("{user}:{password}"))
    }
}

/// A request for `digest` in `repository` at `registry_url` (plain http: `insecure`).
fn tenant_request(
    name: &str,
    scanner: &str,
    registry_url: &str,
    repository: &str,
    digest: &str,
    secret: Option<&str>,
) -> ScanRequest {
    let sr = ScanRequestBuilder::new(name, scanner)
        .registry_url(registry_url)
        .insecure(true)
        .repository(repository)
        .digest(digest)
        .mime_types(&[VULN]);
    match secret {
        Some(secret) => sr.credentials_secret(secret),
        None => sr,
    }
    .build()
}

/// The condition of `type_` in `sr`'s status, when it is True.
fn condition<'a>(
    sr: &'a ScanRequest,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    operator::condition(sr, type_).filter(|c| c.status == "True")
}

/// Waits until `ns/name` satisfies `check`.
async fn wait_for(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
    check: impl Fn(&ScanRequest) -> bool,
) -> ScanRequest {
    let api = Api::<ScanRequest>::namespaced(client.clone(), ns);
    let check = &check;
    eventually(&format!("{ns}/{name}: {what}"), WAIT, || {
        let api = api.clone();
        async move { api.get(name).await.ok().filter(|sr| check(sr)) }
    })
    .await
}

/// The request's conditions name `reason` (Stalled or Reconciling) and it shows no report.
fn refused_with(sr: &ScanRequest, reason: &str) -> bool {
    let current = sr.status.as_ref().and_then(|s| s.observed_generation) == sr.metadata.generation;
    let named = ["Stalled", "Reconciling"]
        .iter()
        .filter_map(|t| condition(sr, t))
        .any(|c| c.reason == reason);
    current && named
}

fn assert_no_report(sr: &ScanRequest) {
    assert!(condition(sr, "Ready").is_none(), "{:?}", sr.status);
    let status = sr.status.as_ref().expect("a status");
    assert!(status.summary.is_none(), "{status:?}");
    assert!(status.reports.is_empty(), "{status:?}");
}

/// Everything namespace `ns` can read about its requests: statuses and Events.
async fn readable(client: &Client, ns: &str) -> String {
    let requests = Api::<ScanRequest>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    let events = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    let statuses: Vec<_> = requests.items.iter().map(|r| &r.status).collect();
    format!(
        "{}\n{}",
        serde_json::to_string(&statuses).unwrap(),
        serde_json::to_string(&events.items).unwrap()
    )
}

/// Every form in which team A's credentials could show up.
fn team_a_secrets() -> Vec<String> {
    let (user, password) = TEAM_A;
    vec![
        user.to_owned(),
        password.to_owned(),
        "a-pass with two spaces".to_owned(),
        base64::engine::general_purpose::STANDARD.format_basic(TEAM_A),
        base64::engine::general_purpose::STANDARD.encode(password),
    ]
}

fn assert_absent(text: &str, needles: &[String], what: &str) {
    for needle in needles {
        assert!(
            !text.contains(needle.as_str()),
            "{what} contains {needle:?}:\n{text}"
        );
    }
}

#[tokio::test]
async fn another_namespace_naming_a_private_digest_gets_no_report_whatever_it_tries() {
    let t = tenancy("tn-digest", DevScannerConfig::default(), true).await;
    let c = &t.client;
    // Team A, with its own credentials: scanned and Ready with a summary.
    docker_secret(c, &t.ns_a, "pull", &t.registry_a.host(), TEAM_A).await;
    let a = tenant_request(
        "app",
        &t.scanner,
        &t.registry_a.url(),
        REPO_A,
        &t.digest,
        Some("pull"),
    );
    create(c, &t.ns_a, &a).await;
    let a = wait_for(c, &t.ns_a, "app", "Ready", |sr| {
        condition(sr, "Ready").is_some()
    })
    .await;
    assert!(a.status.unwrap().summary.is_some(), "A sees its summary");

    // Team B names A's digest: (a) no credentials, (b) wrong credentials, (c) another
    // registry URL (nothing listens there), (d) its own registry, which does not have it.
    SecretBuilder::basic_auth(TEAM_A.0, "guessed")
        .name("wrong")
        .create(c, &t.ns_b)
        .await;
    docker_secret(c, &t.ns_b, "own", &t.registry_b.host(), TEAM_B).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let cases = [
        (
            "anonymous",
            t.registry_a.url(),
            None,
            "ArtifactAccessDenied",
        ),
        (
            "wrong",
            t.registry_a.url(),
            Some("wrong"),
            "ArtifactAccessDenied",
        ),
        (
            "elsewhere",
            format!("http://{closed}"),
            None,
            "RegistryUnreachable",
        ),
        ("own", t.registry_b.url(), Some("own"), "ArtifactNotFound"),
    ];
    for (name, url, secret, _) in &cases {
        create(
            c,
            &t.ns_b,
            &tenant_request(name, &t.scanner, url, REPO_A, &t.digest, *secret),
        )
        .await;
    }
    for (name, _, _, reason) in &cases {
        let sr = wait_for(c, &t.ns_b, name, reason, |sr| refused_with(sr, reason)).await;
        assert_no_report(&sr);
    }
    // Still refused a while later (the unreachable one retries), and nothing was scanned for B.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (name, _, _, reason) in &cases {
        let sr = Api::<ScanRequest>::namespaced(c.clone(), &t.ns_b)
            .get(name)
            .await
            .unwrap();
        assert!(refused_with(&sr, reason), "{name}: {:?}", sr.status);
        assert_no_report(&sr);
    }
    assert_eq!(t.adapter.stats().scan_requests, 1, "only A's scan");
}

#[tokio::test]
async fn a_scan_shared_across_namespaces_fails_without_telling_one_team_about_the_other() {
    let adapter = DevScannerConfig {
        // The scan stays in flight until the test makes it fail.
        pending_polls: 100_000,
        ..DevScannerConfig::default()
    };
    let t = tenancy("tn-shared", adapter, true).await;
    let c = &t.client;
    docker_secret(c, &t.ns_a, "pull", &t.registry_a.host(), TEAM_A).await;
    docker_secret(c, &t.ns_b, "pull", &t.registry_b.host(), TEAM_B).await;
    let scanning =
        |sr: &ScanRequest| condition(sr, "Reconciling").is_some_and(|c| c.reason == "Scanning");
    let a = tenant_request(
        "app",
        &t.scanner,
        &t.registry_a.url(),
        REPO_A,
        &t.digest,
        Some("pull"),
    );
    create(c, &t.ns_a, &a).await;
    wait_for(c, &t.ns_a, "app", "Scanning", scanning).await;
    // B proves access to the same image in its own registry and joins A's scan.
    let b = tenant_request(
        "mirror",
        &t.scanner,
        &t.registry_b.url(),
        REPO_B,
        &t.digest,
        Some("pull"),
    );
    create(c, &t.ns_b, &b).await;
    wait_for(c, &t.ns_b, "mirror", "Scanning", scanning).await;
    assert_eq!(t.adapter.stats().scans_accepted, 1, "B joined A's scan");

    // The adapter fails the scan with text about A's pull: A's registry, repository, account
    // and password.
    t.adapter
        .inject_fault(FaultRule::new(
            Endpoint::Report,
            FaultKind::EchoCredentials { status: 400 },
            None,
        ))
        .unwrap();
    let stalled = |sr: &ScanRequest| condition(sr, "Stalled").is_some();
    wait_for(c, &t.ns_a, "app", "Stalled", stalled).await;
    let b = wait_for(c, &t.ns_b, "mirror", "Stalled", stalled).await;
    assert_eq!(condition(&b, "Stalled").unwrap().reason, "ScanRejected");
    tokio::time::sleep(Duration::from_secs(2)).await; // Events are published in the background.

    let mut about_a = team_a_secrets();
    about_a.extend([t.registry_a.host(), REPO_A.to_owned()]);
    assert_absent(
        &readable(c, &t.ns_b).await,
        &about_a,
        "what namespace B reads",
    );
    let about_b = vec![
        t.registry_b.host(),
        REPO_B.to_owned(),
        TEAM_B.0.to_owned(),
        TEAM_B.1.to_owned(),
    ];
    assert_absent(
        &readable(c, &t.ns_a).await,
        &about_b,
        "what namespace A reads",
    );
    let mut credentials = team_a_secrets();
    credentials.push(TEAM_B.1.to_owned());
    assert_absent(&t.op.logs(), &credentials, "the operator log");
}

#[tokio::test]
async fn an_opaque_secret_with_a_username_and_password_is_refused_and_never_sent() {
    let t = tenancy("tn-opaque", DevScannerConfig::default(), true).await;
    let c = &t.client;
    // Valid credentials even, but in a Secret that is not a registry credential.
    SecretBuilder::opaque()
        .name("database")
        .entry("username", TEAM_A.0)
        .entry("password", TEAM_A.1)
        .create(c, &t.ns_b)
        .await;
    let sr = tenant_request(
        "app",
        &t.scanner,
        &t.registry_a.url(),
        REPO_A,
        &t.digest,
        Some("database"),
    );
    create(c, &t.ns_b, &sr).await;
    let sr = wait_for(c, &t.ns_b, "app", "SecretInvalid", |sr| {
        refused_with(sr, "SecretInvalid")
    })
    .await;
    let message = &condition(&sr, "Stalled").unwrap().message;
    assert!(
        message.contains("spec.registry.credentialsSecretRef"),
        "{message}"
    );
    assert!(message.contains("Opaque"), "{message}");
    assert_no_report(&sr);
    assert_eq!(t.adapter.stats().scan_requests, 0, "nothing was submitted");
    assert_absent(&t.op.logs(), &team_a_secrets(), "the operator log");
}

#[tokio::test]
async fn a_scanner_reads_its_auth_secret_only_from_the_operators_namespace() {
    let adapter = DevScannerConfig {
        auth: DevAuth::Bearer {
            token: "adapter-token-7781".into(),
        },
        ..DevScannerConfig::default()
    };
    let t = tenancy("tn-scnsecret", adapter, false).await;
    let c = &t.client;
    // A Secret in a tenant's namespace, named by a Scanner with the old namespaced reference.
    SecretBuilder::opaque()
        .name("adapter")
        .entry("token", "adapter-token-7781")
        .create(c, &t.ns_a)
        .await;
    let scanner: Scanner = serde_json::from_value(json!({
        "apiVersion": "scanreport.io/v1alpha1", "kind": "Scanner",
        "metadata": {"name": t.scanner},
        "spec": {
            "url": t.adapter.base_url(),
            "requestTimeout": "2s",
            "auth": {"type": "Bearer", "secretRef": {"name": "adapter", "namespace": t.ns_a}},
        },
    }))
    .unwrap();
    Api::<Scanner>::all(c.clone())
        .create(&PostParams::default(), &scanner)
        .await
        .unwrap();
    docker_secret(c, &t.ns_a, "pull", &t.registry_a.host(), TEAM_A).await;
    let sr = tenant_request(
        "app",
        &t.scanner,
        &t.registry_a.url(),
        REPO_A,
        &t.digest,
        Some("pull"),
    );
    create(c, &t.ns_a, &sr).await;
    let sr = wait_for(c, &t.ns_a, "app", "ScannerMisconfigured", |sr| {
        refused_with(sr, "ScannerMisconfigured")
    })
    .await;
    let message = &condition(&sr, "Stalled").unwrap().message;
    assert!(
        message.contains(&t.ns_operator),
        "names the operator's namespace: {message}"
    );
    assert_eq!(
        t.adapter.stats().responses.get("metadata 200"),
        None,
        "the tenant's Secret was never sent"
    );

    // The same Secret in the operator's namespace is used (at the next recheck).
    SecretBuilder::opaque()
        .name("adapter")
        .entry("token", "adapter-token-7781")
        .create(c, &t.ns_operator)
        .await;
    wait_for(c, &t.ns_a, "app", "Ready", |sr| {
        condition(sr, "Ready").is_some()
    })
    .await;
}

#[tokio::test]
async fn credentials_echoed_by_a_hostile_adapter_never_reach_status_events_or_logs() {
    let adapter = DevScannerConfig {
        faults: vec![FaultRule::new(
            Endpoint::Scan,
            FaultKind::EchoCredentials { status: 400 },
            None,
        )],
        ..DevScannerConfig::default()
    };
    let t = tenancy("tn-echo", adapter, true).await;
    let c = &t.client;
    docker_secret(c, &t.ns_a, "pull", &t.registry_a.host(), TEAM_A).await;
    let sr = tenant_request(
        "app",
        &t.scanner,
        &t.registry_a.url(),
        REPO_A,
        &t.digest,
        Some("pull"),
    );
    create(c, &t.ns_a, &sr).await;
    wait_for(c, &t.ns_a, "app", "Stalled", |sr| {
        condition(sr, "Stalled").is_some()
    })
    .await;
    // The adapter did echo them, and the submitter gets the (scrubbed) answer in an Event.
    let events = Api::<Event>::namespaced(c.clone(), &t.ns_a);
    let rejected = eventually("a ScanRejected Event", WAIT, || {
        let events = events.clone();
        async move {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("ScanRejected"))
        }
    })
    .await;
    let note = rejected.note.unwrap_or_default();
    assert!(
        note.contains("failed to pull"),
        "the adapter's answer: {note}"
    );
    assert!(t.adapter.stats().faults_injected >= 1);
    assert_absent(
        &readable(c, &t.ns_a).await,
        &team_a_secrets(),
        "status and Events",
    );
    assert_absent(&t.op.logs(), &team_a_secrets(), "the operator log");
}

#[tokio::test]
async fn a_request_that_can_no_longer_prove_access_loses_the_summary_and_reports_it_had() {
    let t = tenancy("tn-revoke", DevScannerConfig::default(), true).await;
    let c = &t.client;
    docker_secret(c, &t.ns_a, "pull", &t.registry_a.host(), TEAM_A).await;
    let sr = tenant_request(
        "app",
        &t.scanner,
        &t.registry_a.url(),
        REPO_A,
        &t.digest,
        Some("pull"),
    );
    create(c, &t.ns_a, &sr).await;
    let ready = wait_for(c, &t.ns_a, "app", "Ready", |sr| {
        condition(sr, "Ready").is_some()
    })
    .await;
    let status = ready.status.unwrap();
    assert!(
        status.summary.is_some() && !status.reports.is_empty(),
        "{status:?}"
    );

    // Pointed at credentials the registry refuses: what it showed must go.
    SecretBuilder::basic_auth(TEAM_A.0, "rotated-away")
        .name("stale")
        .create(c, &t.ns_a)
        .await;
    let patch = json!({"spec": {"registry": {"credentialsSecretRef": {"name": "stale"}}}});
    Api::<ScanRequest>::namespaced(c.clone(), &t.ns_a)
        .patch(
            "app",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    let sr = wait_for(c, &t.ns_a, "app", "ArtifactAccessDenied", |sr| {
        refused_with(sr, "ArtifactAccessDenied")
    })
    .await;
    assert_no_report(&sr);
}
