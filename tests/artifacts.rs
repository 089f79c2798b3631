//! Artifacts as users name them, on the real API server, a real registry (Distribution with
//! htpasswd, testkit::registry), PostgreSQL and the development adapter, with
//! `--artifact-access verify`: tags resolved to digests (and moved, with no gap in the
//! status), image indexes fanned out per platform, the platform filter, the mismatch and
//! limit conditions, and a namespace without credentials that resolves nothing.

use std::time::{Duration, Instant};

use devscanner::{DevScanner, DevScannerConfig, DevScannerHandle};
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, ListParams};
use scanreport_operator::api::{ArtifactMimeType, ReportPhase, ScanRequest, SeveritySummary};
use testkit::fixtures::{ScanRequestBuilder, SecretBuilder};
use testkit::operator::{self, Operator, WAIT, create, create_scanner};
use testkit::registry::{PushedImage, PushedIndex, TestRegistry};
use testkit::{TestEnv, eventually, fresh_namespace, pgtest};

const VULN: &str = "application/vnd.security.vulnerability.report; version=1.1";
const SBOM: &str = "application/vnd.security.sbom.report+json; version=1.0";
const USER: (&str, &str) = ("team-robot", "robot-pass-7731");
const SECRET: &str = "pull";

struct Fixture {
    client: Client,
    adapter: DevScannerHandle,
    scanner: String,
    registry: TestRegistry,
    /// Has the pull Secret.
    ns: String,
    /// Has no Secret at all.
    ns_other: String,
    _op: Operator,
}

async fn fixture(prefix: &str, adapter: DevScannerConfig, flags: &[&str]) -> Fixture {
    let env: &TestEnv = testkit::env().await;
    let client = env.client();
    let database_url = pgtest::migrated_database(prefix).await;
    let registry = TestRegistry::start(&[USER]).unwrap();
    let adapter = DevScanner::start(adapter).await.unwrap();
    let scanner = format!("{prefix}-{:x}", rand::random::<u32>());
    create_scanner(&client, &scanner, adapter.base_url()).await;
    let ns = fresh_namespace(&client, prefix).await;
    let ns_other = fresh_namespace(&client, &format!("{prefix}-x")).await;
    SecretBuilder::docker_config()
        .name(SECRET)
        .auth(&registry.host(), USER.0, USER.1)
        .create(&client, &ns)
        .await;
    let mut all = vec!["--artifact-access", "verify"];
    all.extend_from_slice(flags);
    let op = Operator::start(env, &database_url, &[&ns, &ns_other], &all);
    Fixture {
        client,
        adapter,
        scanner,
        registry,
        ns,
        ns_other,
        _op: op,
    }
}

impl Fixture {
    /// A request for `repository` in the test registry, with the pull Secret, no digest and
    /// no tag yet.
    fn request(&self, name: &str, repository: &str) -> ScanRequestBuilder {
        ScanRequestBuilder::new(name, &self.scanner)
            .registry_url(&self.registry.url())
            .insecure(true)
            .repository(repository)
            .no_digest()
            .no_tag()
            .credentials_secret(SECRET)
            .mime_types(&[VULN])
    }

    async fn wait(
        &self,
        ns: &str,
        name: &str,
        what: &str,
        check: impl Fn(&ScanRequest) -> bool,
    ) -> ScanRequest {
        let api = Api::<ScanRequest>::namespaced(self.client.clone(), ns);
        let check = &check;
        eventually(&format!("{ns}/{name}: {what}"), WAIT, || {
            let api = api.clone();
            async move { api.get(name).await.ok().filter(|sr| check(sr)) }
        })
        .await
    }

    async fn ready(&self, name: &str) -> ScanRequest {
        self.wait(&self.ns, name, "Ready", ready).await
    }

    async fn stalled(&self, ns: &str, name: &str, reason: &str) -> ScanRequest {
        self.wait(ns, name, &format!("Stalled with {reason}"), |sr| {
            current(sr) && true_condition(sr, "Stalled").is_some_and(|c| c.reason == reason)
        })
        .await
    }

    async fn events(&self, ns: &str, reason: &str) -> Vec<String> {
        let events = Api::<Event>::namespaced(self.client.clone(), ns)
            .list(&ListParams::default())
            .await
            .unwrap();
        events
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .filter_map(|e| e.note)
            .collect()
    }
}

fn current(sr: &ScanRequest) -> bool {
    sr.status.as_ref().and_then(|s| s.observed_generation) == sr.metadata.generation
}

fn true_condition<'a>(
    sr: &'a ScanRequest,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    operator::condition(sr, type_).filter(|c| c.status == "True")
}

fn ready(sr: &ScanRequest) -> bool {
    current(sr)
        && true_condition(sr, "Ready").is_some()
        && true_condition(sr, "Reconciling").is_none()
}

fn shown_digest(sr: &ScanRequest) -> Option<&str> {
    sr.status.as_ref()?.artifact.as_ref()?.digest.as_deref()
}

fn reports(sr: &ScanRequest) -> &[scanreport_operator::api::ReportStatus] {
    sr.status.as_ref().map_or(&[], |s| s.reports.as_slice())
}

async fn push_app(registry: &TestRegistry, tag: &str, content: &str) -> PushedImage {
    registry
        .push_image("team/app", tag, "amd64", content)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_tag_is_resolved_scanned_and_rescanned_with_no_gap_when_it_moves() {
    // Each scan takes a few polls, so the move is seen while the new digest is scanned.
    let adapter = DevScannerConfig {
        pending_polls: 3,
        ..DevScannerConfig::default()
    };
    let f = fixture("art-tag", adapter, &[]).await;
    let v1 = push_app(&f.registry, "stable", "release one").await;
    let sr = f
        .request("app", "team/app")
        .tag("stable")
        .resolve_every("1m")
        .build();
    create(&f.client, &f.ns, &sr).await;
    let sr = f.ready("app").await;
    let artifact = sr.status.as_ref().and_then(|s| s.artifact.clone()).unwrap();
    assert_eq!(artifact.digest.as_deref(), Some(v1.digest.as_str()));
    assert_eq!(artifact.tag_digest.as_deref(), Some(v1.digest.as_str()));
    assert_eq!(artifact.tag.as_deref(), Some("stable"));
    assert!(artifact.resolved_at.is_some());
    assert_eq!(
        artifact.media_type.as_deref(),
        Some(ArtifactMimeType::OciImageManifest.as_str())
    );
    assert_eq!(f.adapter.stats().scans_for(&v1.digest, VULN), 1);
    let resolved = f.events(&f.ns, "TagResolved").await;
    assert!(
        resolved.iter().any(|n| n.contains(&v1.digest)),
        "{resolved:?}"
    );

    // The tag moves. Within resolveEvery (1m, jittered) the new digest is scanned; until its
    // report is stored, the status keeps the previous one and stays Ready.
    let v2 = push_app(&f.registry, "stable", "release two").await;
    assert_ne!(v1.digest, v2.digest);
    let api = Api::<ScanRequest>::namespaced(f.client.clone(), &f.ns);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut saw_move_in_progress = false;
    let done = loop {
        assert!(Instant::now() < deadline, "the moved tag was not rescanned");
        let sr = api.get("app").await.unwrap();
        // No gap: every status seen has a usable report and Ready=True.
        assert!(true_condition(&sr, "Ready").is_some(), "{:?}", sr.status);
        assert!(
            !reports(&sr).is_empty() && reports(&sr).iter().all(|r| r.generated_at.is_some()),
            "{:?}",
            sr.status
        );
        if true_condition(&sr, "Reconciling").is_some_and(|c| c.reason == "TagMoved") {
            saw_move_in_progress = true;
            assert_eq!(shown_digest(&sr), Some(v1.digest.as_str()));
            let artifact = sr
                .status
                .as_ref()
                .and_then(|s| s.artifact.as_ref())
                .unwrap();
            assert_eq!(artifact.tag_digest.as_deref(), Some(v2.digest.as_str()));
        }
        if shown_digest(&sr) == Some(v2.digest.as_str()) && ready(&sr) {
            break sr;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    };
    assert!(
        saw_move_in_progress,
        "the scan of the new digest was never seen under way"
    );
    assert_eq!(f.adapter.stats().scans_for(&v2.digest, VULN), 1);
    let report = &reports(&done)[0];
    assert_eq!(report.phase, ReportPhase::Ready);
    let moved = f.events(&f.ns, "TagMoved").await;
    assert!(
        moved
            .iter()
            .any(|n| n.contains(&v1.digest) && n.contains(&v2.digest)),
        "{moved:?}"
    );
}

/// The worst count of each severity across `reports`.
fn worst(reports: &[scanreport_operator::api::ReportStatus]) -> SeveritySummary {
    let mut w = SeveritySummary::default();
    for s in reports.iter().filter_map(|r| r.summary) {
        w.critical = w.critical.max(s.critical);
        w.high = w.high.max(s.high);
        w.medium = w.medium.max(s.medium);
        w.low = w.low.max(s.low);
        w.unknown = w.unknown.max(s.unknown);
        w.none = w.none.max(s.none);
        w.fixable = w.fixable.max(s.fixable);
    }
    w
}

async fn push_multi(registry: &TestRegistry) -> PushedIndex {
    registry.push_index("team/multi", "latest").await.unwrap()
}

#[tokio::test]
async fn an_index_fans_out_to_its_platforms_and_the_platform_filter_chooses() {
    let f = fixture("art-index", DevScannerConfig::default(), &[]).await;
    let index = push_multi(&f.registry).await;
    let sr = f
        .request("multi", "team/multi")
        .tag("latest")
        .mime_types(&[VULN, SBOM])
        .build();
    create(&f.client, &f.ns, &sr).await;
    let sr = f.ready("multi").await;
    let status = sr.status.as_ref().unwrap();
    let artifact = status.artifact.as_ref().unwrap();
    assert_eq!(artifact.digest.as_deref(), Some(index.digest.as_str()));
    assert_eq!(
        artifact.media_type.as_deref(),
        Some(ArtifactMimeType::OciImageIndex.as_str())
    );
    assert_eq!(artifact.platforms, ["linux/amd64", "linux/arm64"]);
    // One report per platform and MIME type, each of the platform's manifest; none of the
    // attestation manifest.
    assert_eq!(status.reports.len(), 4, "{:?}", status.reports);
    for (platform, digest) in ["linux/amd64", "linux/arm64"]
        .iter()
        .zip(&index.platform_digests)
    {
        for mime in [VULN, SBOM] {
            let r = status
                .reports
                .iter()
                .find(|r| r.platform.as_deref() == Some(platform) && r.mime_type == mime)
                .unwrap_or_else(|| panic!("no {mime} report for {platform}"));
            assert_eq!(r.digest.as_deref(), Some(digest.as_str()));
            assert_eq!(r.phase, ReportPhase::Ready);
            // One adapter submission each.
            assert_eq!(
                f.adapter.stats().scans_for(digest, mime),
                1,
                "{platform} {mime}"
            );
        }
    }
    let stats = f.adapter.stats();
    assert_eq!(stats.scans_accepted, 4);
    assert_eq!(stats.scans_for(&index.attestation_digest, VULN), 0);
    assert_eq!(
        stats.scans_for(&index.digest, VULN),
        0,
        "the index itself is not scanned"
    );
    // The headline is the worst of each severity across the platforms.
    let vulns: Vec<_> = status
        .reports
        .iter()
        .filter(|r| r.mime_type == VULN)
        .cloned()
        .collect();
    assert_eq!(status.summary, Some(worst(&vulns)));

    // The columns still fit on one line of a wide terminal.
    let env = testkit::env().await;
    let out = env
        .kubectl()
        .args(["get", "sr", "-n", &f.ns, "multi"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&index.digest), "{text}");
    for line in text.lines() {
        assert!(line.len() <= 160, "{} characters: {line}", line.len());
    }

    // A second request for arm64 only reuses the stored reports: no new submission.
    let arm = f
        .request("multi-arm", "team/multi")
        .digest(&index.digest)
        .platforms(&["linux/arm64"])
        .build();
    create(&f.client, &f.ns, &arm).await;
    let arm = f.ready("multi-arm").await;
    let arm_reports = reports(&arm);
    assert_eq!(arm_reports.len(), 1, "{arm_reports:?}");
    assert_eq!(arm_reports[0].platform.as_deref(), Some("linux/arm64"));
    assert_eq!(
        arm_reports[0].digest.as_deref(),
        Some(index.platform_digests[1].as_str())
    );
    assert_eq!(f.adapter.stats().scans_accepted, 4);
    assert_eq!(
        arm.status.as_ref().unwrap().summary,
        arm_reports[0].summary,
        "one platform: its own counts"
    );

    // A platform the index does not have stalls, naming what it has.
    let windows = f
        .request("multi-win", "team/multi")
        .digest(&index.digest)
        .platforms(&["windows/amd64"])
        .build();
    create(&f.client, &f.ns, &windows).await;
    let windows = f.stalled(&f.ns, "multi-win", "NoMatchingPlatform").await;
    let message = &true_condition(&windows, "Stalled").unwrap().message;
    assert!(message.contains("linux/amd64, linux/arm64"), "{message}");
    assert!(reports(&windows).is_empty());
}

#[tokio::test]
async fn mismatches_give_conditions_and_the_digest_is_what_is_scanned() {
    let f = fixture("art-mismatch", DevScannerConfig::default(), &[]).await;
    let one = push_app(&f.registry, "one", "first build").await;
    let two = push_app(&f.registry, "two", "second build").await;

    // Digest and tag disagree: the digest wins, the condition names both.
    let sr = f
        .request("pinned", "team/app")
        .digest(&one.digest)
        .tag("two")
        .build();
    create(&f.client, &f.ns, &sr).await;
    let sr = f
        .wait(&f.ns, "pinned", "Ready with TagMismatch", |sr| {
            ready(sr) && true_condition(sr, "TagMismatch").is_some()
        })
        .await;
    let mismatch = true_condition(&sr, "TagMismatch").unwrap();
    assert!(
        mismatch.message.contains(&one.digest) && mismatch.message.contains(&two.digest),
        "{}",
        mismatch.message
    );
    assert_eq!(shown_digest(&sr), Some(one.digest.as_str()));
    assert_eq!(f.adapter.stats().scans_for(&one.digest, VULN), 1);
    assert_eq!(f.adapter.stats().scans_for(&two.digest, VULN), 0);

    // A tag that does not exist beside a digest only informs.
    let sr = f
        .request("pinned-gone", "team/app")
        .digest(&one.digest)
        .tag("never-pushed")
        .build();
    create(&f.client, &f.ns, &sr).await;
    let sr = f
        .wait(&f.ns, "pinned-gone", "Ready with TagMismatch", |sr| {
            ready(sr) && true_condition(sr, "TagMismatch").is_some()
        })
        .await;
    assert_eq!(
        true_condition(&sr, "TagMismatch").unwrap().reason,
        "TagNotResolved"
    );

    // A declared media type the registry contradicts: what the registry serves is scanned.
    let sr = f
        .request("declared", "team/app")
        .digest(&one.digest)
        .artifact_mime_type(ArtifactMimeType::DockerManifestV2)
        .build();
    create(&f.client, &f.ns, &sr).await;
    let sr = f
        .wait(&f.ns, "declared", "Ready with MediaTypeMismatch", |sr| {
            ready(sr) && true_condition(sr, "MediaTypeMismatch").is_some()
        })
        .await;
    let status = sr.status.as_ref().unwrap();
    assert_eq!(
        status.artifact.as_ref().unwrap().media_type.as_deref(),
        Some(ArtifactMimeType::OciImageManifest.as_str())
    );
    // Agreeing declarations give no such condition.
    let sr = f
        .request("agreeing", "team/app")
        .digest(&one.digest)
        .tag("one")
        .artifact_mime_type(ArtifactMimeType::OciImageManifest)
        .build();
    create(&f.client, &f.ns, &sr).await;
    let sr = f.ready("agreeing").await;
    assert!(
        true_condition(&sr, "TagMismatch").is_none(),
        "{:?}",
        sr.status
    );
    assert!(true_condition(&sr, "MediaTypeMismatch").is_none());
}

#[tokio::test]
async fn an_index_with_more_platforms_than_allowed_a_nested_or_an_oversized_index_stalls() {
    let f = fixture(
        "art-limits",
        DevScannerConfig::default(),
        &["--max-platforms", "1"],
    )
    .await;
    let index = push_multi(&f.registry).await;
    let sr = f.request("wide", "team/multi").tag("latest").build();
    create(&f.client, &f.ns, &sr).await;
    let stalled = f.stalled(&f.ns, "wide", "TooManyPlatforms").await;
    let message = &true_condition(&stalled, "Stalled").unwrap().message;
    assert!(
        message.contains("spec.platforms") && message.contains("linux/arm64"),
        "{message}"
    );
    assert!(reports(&stalled).is_empty());
    assert_eq!(f.adapter.stats().scans_accepted, 0);
    // Choosing within the limit fixes it.
    let api = Api::<ScanRequest>::namespaced(f.client.clone(), &f.ns);
    api.patch(
        "wide",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({"spec": {"platforms": ["linux/amd64"]}})),
    )
    .await
    .unwrap();
    let fixed = f.ready("wide").await;
    assert_eq!(reports(&fixed).len(), 1);
    assert_eq!(
        f.adapter
            .stats()
            .scans_for(&index.platform_digests[0], VULN),
        1
    );

    // An index of an index.
    let nested = f
        .registry
        .push_nested_index("team/multi", "nested", &index)
        .await
        .unwrap();
    let sr = f.request("nested", "team/multi").digest(&nested).build();
    create(&f.client, &f.ns, &sr).await;
    let stalled = f.stalled(&f.ns, "nested", "NestedIndex").await;
    assert!(reports(&stalled).is_empty());

    // An index larger than --max-index-size, with an operator of its own.
    let env = testkit::env().await;
    let database_url = pgtest::migrated_database("art-limits-size").await;
    let ns_small = fresh_namespace(&f.client, "art-limits-small").await;
    SecretBuilder::docker_config()
        .name(SECRET)
        .auth(&f.registry.host(), USER.0, USER.1)
        .create(&f.client, &ns_small)
        .await;
    let _small = Operator::start(
        env,
        &database_url,
        &[&ns_small],
        &["--artifact-access", "verify", "--max-index-size", "512"],
    );
    assert!(
        index.index.len() > 512,
        "the test index is {} bytes",
        index.index.len()
    );
    let sr = f.request("big", "team/multi").digest(&index.digest).build();
    create(&f.client, &ns_small, &sr).await;
    let stalled = f.stalled(&ns_small, "big", "ManifestTooLarge").await;
    assert!(reports(&stalled).is_empty());
}

#[tokio::test]
async fn a_namespace_without_credentials_resolves_nothing_and_sees_no_platform() {
    let f = fixture("art-tenancy", DevScannerConfig::default(), &[]).await;
    let image = push_app(&f.registry, "stable", "private build").await;
    let index = push_multi(&f.registry).await;
    // The owner scans both, so reports exist to be stolen.
    create(
        &f.client,
        &f.ns,
        &f.request("app", "team/app").tag("stable").build(),
    )
    .await;
    create(
        &f.client,
        &f.ns,
        &f.request("multi", "team/multi").tag("latest").build(),
    )
    .await;
    f.ready("app").await;
    f.ready("multi").await;
    let scans = f.adapter.stats().scans_accepted;

    // The other namespace names the tag, the index digest and a platform's digest, without
    // credentials: the registry denies each, and nothing is resolved or shown.
    let intruder = |name: &str| {
        ScanRequestBuilder::new(name, &f.scanner)
            .registry_url(&f.registry.url())
            .insecure(true)
            .no_tag()
            .mime_types(&[VULN])
    };
    let requests = [
        intruder("by-tag")
            .repository("team/app")
            .no_digest()
            .tag("stable"),
        intruder("by-index")
            .repository("team/multi")
            .digest(&index.digest),
        intruder("by-platform")
            .repository("team/multi")
            .digest(&index.platform_digests[1]),
    ];
    for r in requests {
        let name = r.clone().build().metadata.name.unwrap();
        create(&f.client, &f.ns_other, &r.build()).await;
        let sr = f.stalled(&f.ns_other, &name, "ArtifactAccessDenied").await;
        let status = sr.status.as_ref().unwrap();
        assert!(status.reports.is_empty(), "{name}: {status:?}");
        assert!(status.summary.is_none(), "{name}: {status:?}");
        assert!(status.artifact.is_none(), "{name}: {status:?}");
    }
    let everything = serde_json::to_string(
        &Api::<ScanRequest>::namespaced(f.client.clone(), &f.ns_other)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items,
    )
    .unwrap();
    for secret in [&image.digest, &index.platform_digests[0]] {
        assert!(
            !everything.contains(secret.as_str()),
            "the other namespace learned {secret}"
        );
    }
    assert_eq!(
        f.adapter.stats().scans_accepted,
        scans,
        "no scan for the intruder"
    );
    assert!(f.events(&f.ns_other, "TagResolved").await.is_empty());
}
