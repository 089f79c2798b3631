//! What the API server itself enforces from the CRDs: CEL rules (`x-kubernetes-validations`) reject
//! bad input at admission with a message naming the field, and `selectableFields` make
//! `--field-selector` work on `spec.artifact.digest` and `spec.scanner`. No operator runs here.

use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use scanreport_operator::api::{
    LocalSecretReference, ScanRequest, Scanner, ScannerAuth, ScannerAuthType, ScannerSpec,
};
use testkit::fixtures::{ScanRequestBuilder, digest, request};
use testkit::fresh_namespace;

const VULN: &str = "application/vnd.security.vulnerability.report; version=1.1";

fn scanner(name: &str) -> Scanner {
    Scanner::new(
        name,
        ScannerSpec {
            url: "http://127.0.0.1:9".into(),
            registration_uuid: None,
            auth: None,
            ca_bundle: None,
            max_in_flight: None,
            request_timeout: "30s".into(),
        },
    )
}

/// The admission error of creating `obj`, which must be refused.
async fn refused<K>(api: &Api<K>, obj: &K) -> String
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(created) => panic!("admission accepted {created:?}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn rescan_after_outside_one_hour_to_one_year_is_refused_naming_the_field() {
    let client = testkit::client().await;
    let ns = fresh_namespace(&client, "cel-rescan").await;
    let api = Api::<ScanRequest>::namespaced(client, &ns);
    // Too short, too long, and one that overflows a 64-bit nanosecond count (it used to crash the
    // operator for everyone).
    for (i, value) in ["30s", "59m", "8761h", "3000000000h"]
        .into_iter()
        .enumerate()
    {
        let sr = ScanRequestBuilder::new(&format!("bad-{i}"), "trivy")
            .mime_types(&[VULN])
            .rescan_after(value)
            .build();
        let err = refused(&api, &sr).await;
        assert!(err.contains("spec.rescanAfter"), "{value}: {err}");
    }
    for (i, value) in ["1h", "24h"].into_iter().enumerate() {
        let ok = ScanRequestBuilder::new(&format!("ok-{i}"), "trivy")
            .mime_types(&[VULN])
            .rescan_after(value)
            .build();
        api.create(&PostParams::default(), &ok).await.unwrap();
    }
}

#[tokio::test]
async fn scanner_rules_are_enforced_at_admission() {
    let client = testkit::client().await;
    let api = Api::<Scanner>::all(client);
    let name = |s: &str| format!("cel-{s}-{:x}", rand::random::<u32>());

    for timeout in ["500ms", "16m", "99999999999h"] {
        let mut s = scanner(&name("timeout"));
        s.spec.request_timeout = timeout.into();
        let err = refused(&api, &s).await;
        assert!(err.contains("spec.requestTimeout"), "{timeout}: {err}");
    }

    let mut s = scanner(&name("nosecret"));
    s.spec.auth = Some(ScannerAuth {
        auth_type: ScannerAuthType::Bearer,
        secret_ref: None,
        header: None,
    });
    let err = refused(&api, &s).await;
    assert!(err.contains("spec.auth.secretRef is required"), "{err}");

    let mut s = scanner(&name("noheader"));
    s.spec.auth = Some(ScannerAuth {
        auth_type: ScannerAuthType::ApiKey,
        secret_ref: Some(LocalSecretReference {
            name: "adapter-key".into(),
        }),
        header: None,
    });
    let err = refused(&api, &s).await;
    assert!(err.contains("spec.auth.header is required"), "{err}");
}

#[tokio::test]
async fn a_scanner_registration_uuid_cannot_change_once_created() {
    let client = testkit::client().await;
    let api = Api::<Scanner>::all(client);
    let n = format!("cel-uuid-{:x}", rand::random::<u32>());
    let mut s = scanner(&n);
    s.spec.registration_uuid = Some("6e5ae6f6-9bd5-4b0e-9e41-1bb5a1f0f0b1".into());
    api.create(&PostParams::default(), &s).await.unwrap();

    for change in [
        serde_json::json!({"spec": {"registrationUUID": "00000000-0000-4000-8000-000000000000"}}),
        serde_json::json!({"spec": {"registrationUUID": null}}),
    ] {
        let err = api
            .patch(&n, &PatchParams::default(), &Patch::Merge(change.clone()))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("spec.registrationUUID cannot be changed"),
            "{change}: {err}"
        );
    }
    // Other fields stay editable.
    api.patch(
        &n,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"requestTimeout": "45s"}})),
    )
    .await
    .unwrap();

    // Adding one to a Scanner created without one would change every report id as well.
    let m = format!("cel-uuid-add-{:x}", rand::random::<u32>());
    api.create(&PostParams::default(), &scanner(&m))
        .await
        .unwrap();
    let err = api
        .patch(
            &m,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"registrationUUID": "6e5ae6f6-9bd5-4b0e-9e41-1bb5a1f0f0b1"}})),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("spec.registrationUUID cannot be changed"),
        "{err}"
    );
}

async fn names(api: &Api<ScanRequest>, selector: &str) -> Vec<String> {
    let mut names: Vec<String> = api
        .list(&ListParams::default().fields(selector))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|sr| sr.metadata.name)
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn field_selectors_find_requests_by_digest_and_scanner() {
    let env = testkit::env().await;
    let client: Client = env.client();
    let (ns1, ns2) = (
        fresh_namespace(&client, "sel-a").await,
        fresh_namespace(&client, "sel-b").await,
    );
    let (d1, d2) = (digest(), digest());
    let create = |ns: &str, name: &str, scanner: &str, d: &str| {
        let api = Api::<ScanRequest>::namespaced(client.clone(), ns);
        let sr = request(name, scanner, d, &[VULN]);
        async move { api.create(&PostParams::default(), &sr).await.unwrap() }
    };
    create(&ns1, "web", "trivy", &d1).await;
    create(&ns1, "web-grype", "grype", &d1).await;
    create(&ns1, "db", "trivy", &d2).await;
    create(&ns2, "web", "trivy", &d1).await;

    let in_ns1 = Api::<ScanRequest>::namespaced(client.clone(), &ns1);
    assert_eq!(
        names(&in_ns1, &format!("spec.artifact.digest={d1}")).await,
        ["web", "web-grype"]
    );
    assert_eq!(names(&in_ns1, "spec.scanner=trivy").await, ["db", "web"]);
    assert_eq!(
        names(
            &in_ns1,
            &format!("spec.artifact.digest={d1},spec.scanner=grype")
        )
        .await,
        ["web-grype"]
    );
    assert_eq!(
        names(&in_ns1, &format!("spec.artifact.digest!={d1}")).await,
        ["db"]
    );

    // What README shows: across namespaces, with kubectl.
    let out = env
        .kubectl()
        .args(["get", "sr", "-A", "--field-selector"])
        .arg(format!("spec.artifact.digest={d1}"))
        .args([
            "-o",
            "custom-columns=NS:.metadata.namespace,NAME:.metadata.name",
            "--no-headers",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rows: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join("/"))
        .collect();
    rows.sort();
    let mut expected = vec![
        format!("{ns1}/web"),
        format!("{ns1}/web-grype"),
        format!("{ns2}/web"),
    ];
    expected.sort();
    assert_eq!(rows, expected);
}
