//! Proof of access, tag resolution and manifest fetch against a real registry (Distribution 2.8
//! with htpasswd auth, see crates/testkit/src/registry.rs), plus a small hostile registry for the
//! Bearer-token flow and for answers a real registry never gives.
//!
//! The tenant cases: a namespace that names another team's digest with (a) no credentials,
//! (b) wrong credentials, (c) another registry URL, (d) a registry without that digest gets no
//! proof.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use futures::StreamExt;
use scanreport_operator::registry::access::MANIFEST_MEDIA_TYPES;
use scanreport_operator::registry::credentials::CredentialsError;
use scanreport_operator::registry::{
    AccessError, AccessOptions, RegistryCredentials, RegistryEndpoint, fetch_manifest,
    prove_access, resolve_tag,
};
use testkit::fixtures::SecretBuilder;
use testkit::registry::{PushedImage, TestRegistry, sha256};

const TEAM_A: (&str, &str) = ("team-a-robot", "a-pass  with two spaces");
const TEAM_B: (&str, &str) = ("team-b-robot", "b-pass");

fn options() -> AccessOptions {
    AccessOptions::default()
}

fn endpoint(registry: &TestRegistry) -> RegistryEndpoint {
    RegistryEndpoint::parse(&registry.url(), true).unwrap()
}

fn creds(registry: &TestRegistry, user: &str, password: &str) -> RegistryCredentials {
    let secret = SecretBuilder::docker_config()
        .auth(&format!("http://{}", registry.host()), user, password)
        .build();
    RegistryCredentials::from_secret(&secret, endpoint(registry).host()).unwrap()
}

async fn team_a_image(registry: &TestRegistry) -> PushedImage {
    registry
        .push_image("team-a/private", "v1", "amd64", "team a's secret sauce")
        .await
        .unwrap()
}

#[tokio::test]
async fn the_owner_with_the_right_credentials_proves_access() {
    let registry = TestRegistry::start(&[TEAM_A, TEAM_B]).unwrap();
    let image = team_a_image(&registry).await;
    let a = creds(&registry, TEAM_A.0, TEAM_A.1);
    prove_access(
        &endpoint(&registry),
        &image.repository,
        &image.digest,
        &a,
        &options(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn another_tenant_without_credentials_is_denied() {
    let registry = TestRegistry::start(&[TEAM_A]).unwrap();
    let image = team_a_image(&registry).await;
    let err = prove_access(
        &endpoint(&registry),
        &image.repository,
        &image.digest,
        &RegistryCredentials::Anonymous,
        &options(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, AccessError::Denied { status: 401, .. }),
        "{err}"
    );
    assert_eq!(err.reason(), "ArtifactAccessDenied");
}

#[tokio::test]
async fn another_tenant_with_wrong_credentials_is_denied_and_the_error_carries_no_secret() {
    let registry = TestRegistry::start(&[TEAM_A]).unwrap();
    let image = team_a_image(&registry).await;
    let wrong = creds(&registry, TEAM_A.0, "guessed-password");
    let err = prove_access(
        &endpoint(&registry),
        &image.repository,
        &image.digest,
        &wrong,
        &options(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, AccessError::Denied { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        !msg.contains("guessed-password") && !msg.contains(TEAM_A.0),
        "{msg}"
    );
}

#[tokio::test]
async fn another_registry_url_does_not_prove_access_to_the_digest() {
    let registry_a = TestRegistry::start(&[TEAM_A]).unwrap();
    let registry_b = TestRegistry::start(&[TEAM_B]).unwrap();
    let image = team_a_image(&registry_a).await;
    // Team B's own registry, own valid credentials: that registry has no such manifest.
    let b = creds(&registry_b, TEAM_B.0, TEAM_B.1);
    let err = prove_access(
        &endpoint(&registry_b),
        &image.repository,
        &image.digest,
        &b,
        &options(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, AccessError::NotFound { .. }), "{err}");
    // Team B's credentials are not valid at team A's registry either.
    let b_at_a = creds(&registry_a, TEAM_B.0, TEAM_B.1);
    let err = prove_access(
        &endpoint(&registry_a),
        &image.repository,
        &image.digest,
        &b_at_a,
        &options(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, AccessError::Denied { .. }), "{err}");
}

#[tokio::test]
async fn a_registry_without_the_digest_answers_not_found() {
    let registry = TestRegistry::start(&[TEAM_A, TEAM_B]).unwrap();
    let image = team_a_image(&registry).await;
    let b = creds(&registry, TEAM_B.0, TEAM_B.1);
    // Same registry, B may pull, but B's repository never had that digest.
    registry
        .push_image("team-b/app", "v1", "amd64", "team b")
        .await
        .unwrap();
    let err = prove_access(
        &endpoint(&registry),
        "team-b/app",
        &image.digest,
        &b,
        &options(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, AccessError::NotFound { .. }), "{err}");
    assert_eq!(err.reason(), "ArtifactNotFound");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn an_opaque_secret_is_refused_and_never_sent() {
    let registry = TestRegistry::start(&[TEAM_A]).unwrap();
    // Database credentials that happen to be valid at the registry: still refused.
    let opaque = SecretBuilder::opaque()
        .entry("username", TEAM_A.0)
        .entry("password", TEAM_A.1)
        .build();
    let err = RegistryCredentials::from_secret(&opaque, endpoint(&registry).host()).unwrap_err();
    assert!(
        matches!(err, CredentialsError::UnsupportedSecretType { .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("spec.registry.credentialsSecretRef"),
        "{err}"
    );
}

#[tokio::test]
async fn plain_http_is_refused_without_insecure() {
    let registry = TestRegistry::start(&[TEAM_A]).unwrap();
    let err = RegistryEndpoint::parse(&registry.url(), false).unwrap_err();
    assert_eq!(err, AccessError::PlainHttpRefused);
}

#[tokio::test]
async fn a_basic_auth_secret_also_proves_access() {
    let registry = TestRegistry::start(&[TEAM_A]).unwrap();
    let image = team_a_image(&registry).await;
    let secret = SecretBuilder::basic_auth(TEAM_A.0, TEAM_A.1).build();
    let a = RegistryCredentials::from_secret(&secret, endpoint(&registry).host()).unwrap();
    prove_access(
        &endpoint(&registry),
        &image.repository,
        &image.digest,
        &a,
        &options(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn tags_resolve_to_the_pushed_digests_and_manifests_are_fetched_verified() {
    let registry = TestRegistry::start(&[TEAM_A]).unwrap();
    let image = team_a_image(&registry).await;
    let index = registry.push_index("team-a/multi", "latest").await.unwrap();
    let a = creds(&registry, TEAM_A.0, TEAM_A.1);
    let ep = endpoint(&registry);

    assert_eq!(
        resolve_tag(&ep, &image.repository, "v1", &a, &options())
            .await
            .unwrap(),
        image.digest
    );
    assert_eq!(
        resolve_tag(&ep, "team-a/multi", "latest", &a, &options())
            .await
            .unwrap(),
        index.digest
    );

    let fetched = fetch_manifest(&ep, "team-a/multi", "latest", &a, &options())
        .await
        .unwrap();
    assert_eq!(fetched.body, index.index);
    assert_eq!(fetched.digest, index.digest);
    assert_eq!(
        fetched.media_type,
        "application/vnd.oci.image.index.v1+json"
    );
    let parsed: serde_json::Value = serde_json::from_slice(&fetched.body).unwrap();
    let manifests = parsed["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 3);
    assert_eq!(manifests[2]["digest"], index.attestation_digest.as_str());

    let by_digest = fetch_manifest(
        &ep,
        "team-a/multi",
        &index.platform_digests[1],
        &a,
        &options(),
    )
    .await
    .unwrap();
    assert_eq!(by_digest.digest, index.platform_digests[1]);
    assert_eq!(
        by_digest.media_type,
        "application/vnd.oci.image.manifest.v1+json"
    );

    let small = AccessOptions {
        max_manifest_bytes: 100,
        ..options()
    };
    let err = fetch_manifest(&ep, "team-a/multi", "latest", &a, &small)
        .await
        .unwrap_err();
    assert!(
        matches!(err, AccessError::TooLarge { limit: 100, .. }),
        "{err}"
    );

    let err = resolve_tag(&ep, "team-a/multi", "missing", &a, &options())
        .await
        .unwrap_err();
    assert!(matches!(err, AccessError::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn a_stopped_registry_is_unreachable_and_transient() {
    let registry = TestRegistry::start(&[TEAM_A]).unwrap();
    let ep = endpoint(&registry);
    drop(registry);
    let digest = sha256(b"x");
    let err = prove_access(
        &ep,
        "team-a/private",
        &digest,
        &RegistryCredentials::Anonymous,
        &options(),
    )
    .await
    .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.reason(), "RegistryUnreachable");
}

// --- A registry with a Bearer-token service, and hostile answers -------------------------

const TOKEN: &str = "issued-token-123";

#[derive(Clone)]
struct Fake {
    port: u16,
    manifest: Arc<Vec<u8>>,
    token_requests: Arc<AtomicUsize>,
}

async fn v2(State(fake): State<Fake>) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            format!(
                "Bearer realm=\"http://127.0.0.1:{}/token\",service=\"fake\"",
                fake.port
            ),
        )],
    )
        .into_response()
}

async fn token(State(fake): State<Fake>, headers: HeaderMap) -> Response {
    fake.token_requests.fetch_add(1, Ordering::SeqCst);
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("robot:right")
    );
    let hostile = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("robot:hostile")
    );
    let sent = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if sent == Some(&expected) {
        axum::Json(serde_json::json!({ "token": TOKEN })).into_response()
    } else if sent == Some(&hostile) {
        // A token no HTTP header can carry: the OCI client's own requests would panic on it.
        axum::Json(serde_json::json!({ "token": "line\nbreak" })).into_response()
    } else {
        StatusCode::UNAUTHORIZED.into_response()
    }
}

async fn manifest(
    State(fake): State<Fake>,
    Path((repository, reference)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {TOKEN}"))
    {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        MANIFEST_MEDIA_TYPES.iter().all(|m| accept.contains(m)),
        "{accept}"
    );
    let body = fake.manifest.as_ref().clone();
    let digest = sha256(&body);
    match repository.as_str() {
        "team/app" if reference == digest || reference == "v1" => (
            [
                (
                    header::CONTENT_TYPE,
                    "application/vnd.oci.image.manifest.v1+json".to_owned(),
                ),
                (
                    header::HeaderName::from_static("docker-content-digest"),
                    digest,
                ),
            ],
            body,
        )
            .into_response(),
        // Endless body without a length: must be cut off at the limit.
        "hostile/endless" => {
            let chunk = axum::body::Bytes::from(vec![b' '; 64 * 1024]);
            let stream = futures::stream::repeat(chunk).map(Ok::<_, std::io::Error>);
            Response::new(Body::from_stream(stream))
        }
        // A body that is not the digest asked for.
        "hostile/swapped" => body.into_response(),
        // A redirect to somewhere else: never followed.
        "hostile/redirect" => (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, "http://127.0.0.1:1/steal")],
        )
            .into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn fake_registry() -> (Fake, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let fake = Fake {
        port,
        manifest: Arc::new(
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#
                .to_vec(),
        ),
        token_requests: Arc::new(AtomicUsize::new(0)),
    };
    let app = Router::new()
        .route("/v2/", get(v2))
        .route("/token", get(token))
        .route(
            "/v2/{ns}/{name}/manifests/{reference}",
            get(
                |state: State<Fake>,
                 Path((ns, name, reference)): Path<(String, String, String)>,
                 headers: HeaderMap| async move {
                    manifest(state, Path((format!("{ns}/{name}"), reference)), headers).await
                },
            ),
        )
        .with_state(fake.clone());
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (fake, server)
}

fn fake_endpoint(fake: &Fake) -> RegistryEndpoint {
    RegistryEndpoint::parse(&format!("http://127.0.0.1:{}", fake.port), true).unwrap()
}

fn robot(password: &str) -> RegistryCredentials {
    RegistryCredentials::Basic {
        username: "robot".into(),
        password: password.into(),
    }
}

#[tokio::test]
async fn the_bearer_token_flow_proves_access_only_with_the_right_credentials() {
    let (fake, server) = fake_registry().await;
    let digest = sha256(&fake.manifest);
    let ep = fake_endpoint(&fake);
    prove_access(&ep, "team/app", &digest, &robot("right"), &options())
        .await
        .unwrap();
    assert_eq!(
        resolve_tag(&ep, "team/app", "v1", &robot("right"), &options())
            .await
            .unwrap(),
        digest
    );
    for wrong in [robot("wrong"), RegistryCredentials::Anonymous] {
        let err = prove_access(&ep, "team/app", &digest, &wrong, &options())
            .await
            .unwrap_err();
        assert!(matches!(err, AccessError::Denied { .. }), "{err}");
    }
    assert!(fake.token_requests.load(Ordering::SeqCst) >= 4);
    // A `registrytoken` from a Docker config is sent as the bearer token itself.
    let token = RegistryCredentials::Bearer {
        token: TOKEN.into(),
    };
    prove_access(&ep, "team/app", &digest, &token, &options())
        .await
        .unwrap();
    server.abort();
}

#[tokio::test]
async fn hostile_registry_answers_are_bounded_verified_and_not_followed() {
    let (fake, server) = fake_registry().await;
    let ep = fake_endpoint(&fake);
    let right = robot("right");
    let small = AccessOptions {
        max_manifest_bytes: 1024 * 1024,
        ..options()
    };
    let err = fetch_manifest(&ep, "hostile/endless", "v1", &right, &small)
        .await
        .unwrap_err();
    assert!(matches!(err, AccessError::TooLarge { .. }), "{err}");

    let wanted = sha256(b"something else");
    let err = fetch_manifest(&ep, "hostile/swapped", &wanted, &right, &options())
        .await
        .unwrap_err();
    assert!(matches!(err, AccessError::DigestMismatch { .. }), "{err}");

    let err = prove_access(&ep, "team/app", &wanted, &robot("hostile"), &options())
        .await
        .unwrap_err();
    assert!(matches!(err, AccessError::InvalidToken { .. }), "{err}");
    assert_eq!(err.reason(), "RegistryMisbehaving");

    let err = prove_access(&ep, "hostile/redirect", &wanted, &right, &options())
        .await
        .unwrap_err();
    assert!(
        matches!(err, AccessError::UnexpectedStatus { status: 307, .. }),
        "{err}"
    );
    server.abort();
}
