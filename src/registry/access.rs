//! Proof of access to an artifact, tag resolution and a bounded manifest fetch, against the
//! registry a ScanRequest names, with that request's credentials.
//!
//! The registry's challenge (Basic, or a Bearer token from the realm it names) is handled by
//! `oci-client`. The manifest requests themselves are made here with a client that follows no
//! redirect and reads at most [`AccessOptions::max_manifest_bytes`], because the registry is
//! chosen by a tenant and may be hostile. Every call builds its own clients: `oci-client`
//! keeps credentials and tokens per registry host, which must never serve another request.
//!
//! Errors name the registry host and repository (the request's own) and never a credential or
//! a response body.

use std::panic::AssertUnwindSafe;
use std::sync::Once;
use std::time::Duration;

use futures::FutureExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use sha2::Digest as _;

use super::credentials::RegistryCredentials;

/// Media types asked for when reading a manifest: image manifests and indexes, OCI and Docker.
pub const MANIFEST_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// The registry URL field, as error messages quote it.
const URL_FIELD: &str = "spec.registry.url";

/// Limits of one registry call.
#[derive(Debug, Clone)]
pub struct AccessOptions {
    pub connect_timeout: Duration,
    /// Bound on the whole call, challenge and token request included.
    pub timeout: Duration,
    /// Largest manifest or index body [`fetch_manifest`] reads.
    pub max_manifest_bytes: usize,
    pub user_agent: &'static str,
}

impl Default for AccessOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(20),
            // The distribution registry refuses manifests above 4 MiB.
            max_manifest_bytes: 4 * 1024 * 1024,
            user_agent: concat!("scanreport-operator/", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// A registry base URL, checked: `https://`, or `http://` only when `insecure` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryEndpoint {
    plain_http: bool,
    insecure: bool,
    /// `host[:port]` as written in the URL, lowercased.
    authority: String,
}

impl RegistryEndpoint {
    /// Parses `spec.registry.url`. `insecure` (`spec.registry.insecure`) allows `http://` and
    /// an unverified TLS certificate for the operator's own calls to this registry.
    pub fn parse(url: &str, insecure: bool) -> Result<Self, AccessError> {
        let invalid = |reason: &str| AccessError::InvalidUrl {
            reason: reason.to_owned(),
        };
        let parsed = url::Url::parse(url.trim()).map_err(|e| AccessError::InvalidUrl {
            reason: e.to_string(),
        })?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(invalid(
                "it contains a user name or password; put credentials in a Secret named by spec.registry.credentialsSecretRef",
            ));
        }
        let plain_http = match parsed.scheme() {
            "https" => false,
            "http" if insecure => true,
            "http" => return Err(AccessError::PlainHttpRefused),
            _ => {
                return Err(invalid(
                    "the scheme must be https:// (or http:// with spec.registry.insecure: true)",
                ));
            }
        };
        if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() {
            return Err(invalid(
                "it has a path or query; give only the scheme, host and port (the repository goes in spec.artifact.repository)",
            ));
        }
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| invalid("it has no host"))?;
        let authority = match parsed.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        }
        .to_ascii_lowercase();
        Ok(Self {
            plain_http,
            insecure,
            authority,
        })
    }

    /// `host[:port]`: the key for Docker config entries and for the proof cache.
    pub fn host(&self) -> &str {
        &self.authority
    }

    fn reference(&self, repository: &str, reference: &str) -> Reference {
        if reference.contains(':') {
            Reference::with_digest(
                self.authority.clone(),
                repository.to_owned(),
                reference.to_owned(),
            )
        } else {
            Reference::with_tag(
                self.authority.clone(),
                repository.to_owned(),
                reference.to_owned(),
            )
        }
    }

    fn manifest_url(&self, api_host: &str, repository: &str, reference: &str) -> String {
        let scheme = if self.plain_http { "http" } else { "https" };
        format!("{scheme}://{api_host}/v2/{repository}/manifests/{reference}")
    }
}

/// Why a registry call failed. [`AccessError::reason`] gives a condition reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error(
        "{URL_FIELD} is plain http://; set spec.registry.insecure: true to allow an unencrypted registry, or use https://"
    )]
    PlainHttpRefused,
    #[error("{URL_FIELD} is not a usable registry URL: {reason}")]
    InvalidUrl { reason: String },
    #[error(
        "spec.artifact.repository {repository:?} is not a repository name; use lowercase path components such as `team/app`"
    )]
    InvalidRepository { repository: String },
    #[error(
        "{reference:?} is neither a digest (`sha256:` + 64 hex characters) nor a tag; fix spec.artifact"
    )]
    InvalidReference { reference: String },
    #[error(
        "the registry {registry} denied access to {repository} (HTTP {status}) to credentials of kind {credentials}; name a Secret in spec.registry.credentialsSecretRef that may pull this repository"
    )]
    Denied {
        registry: String,
        repository: String,
        status: u16,
        credentials: &'static str,
    },
    #[error(
        "the registry {registry} has no manifest {reference} in {repository}; check spec.registry.url, spec.artifact.repository and the digest"
    )]
    NotFound {
        registry: String,
        repository: String,
        reference: String,
    },
    #[error("cannot reach the registry {registry}: {reason}; the operator retries")]
    Unreachable { registry: String, reason: String },
    #[error(
        "TLS with the registry {registry} failed: {reason}; give it a certificate the operator trusts, or set spec.registry.insecure: true"
    )]
    Tls { registry: String, reason: String },
    #[error(
        "the registry {registry} answered HTTP {status} for {repository}; check that {URL_FIELD} is an OCI distribution registry"
    )]
    UnexpectedStatus {
        registry: String,
        repository: String,
        status: u16,
    },
    #[error(
        "the manifest {reference} in {repository} is larger than {limit} bytes; the operator refuses to read it"
    )]
    TooLarge {
        repository: String,
        reference: String,
        limit: usize,
    },
    #[error(
        "the registry {registry} served content for {expected} whose digest is {actual}; the registry is misbehaving or tampered with"
    )]
    DigestMismatch {
        registry: String,
        expected: String,
        actual: String,
    },
    #[error(
        "the registry {registry} sent no valid Docker-Content-Digest for {reference}; check that {URL_FIELD} is an OCI distribution registry"
    )]
    MissingDigest { registry: String, reference: String },
    #[error(
        "the token service of the registry {registry} issued a token the operator cannot use; check that {URL_FIELD} is an OCI distribution registry"
    )]
    InvalidToken { registry: String },
    #[error(
        "the registry client failed unexpectedly talking to {registry}; the operator retries (please report this)"
    )]
    ClientPanicked { registry: String },
}

impl AccessError {
    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::ClientPanicked { .. })
    }

    /// A reason for a status condition, one per case a user acts on differently.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::PlainHttpRefused
            | Self::InvalidUrl { .. }
            | Self::InvalidRepository { .. }
            | Self::InvalidReference { .. } => "InvalidRegistry",
            Self::Denied { .. } => "ArtifactAccessDenied",
            Self::NotFound { .. } => "ArtifactNotFound",
            Self::Unreachable { .. } | Self::ClientPanicked { .. } => "RegistryUnreachable",
            Self::Tls { .. } => "RegistryTlsFailed",
            Self::UnexpectedStatus { .. }
            | Self::DigestMismatch { .. }
            | Self::MissingDigest { .. }
            | Self::InvalidToken { .. } => "RegistryMisbehaving",
            Self::TooLarge { .. } => "ManifestTooLarge",
        }
    }
}

/// A manifest or index as the registry served it.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// `Content-Type` of the response (empty when the registry sent none).
    pub media_type: String,
    /// `sha256:` digest of `body`.
    pub digest: String,
    pub body: Vec<u8>,
}

/// Proves that the registry serves `repository@digest` to `credentials`:
/// `HEAD /v2/<repository>/manifests/<digest>`. `Ok` means the request may see reports of
/// this digest; it holds the `Content-Type` the registry serves the manifest as, if any.
pub async fn prove_access(
    endpoint: &RegistryEndpoint,
    repository: &str,
    digest: &str,
    credentials: &RegistryCredentials,
    options: &AccessOptions,
) -> Result<Option<String>, AccessError> {
    check_digest(digest)?;
    let session = Session::open(endpoint, repository, digest, credentials, options).await?;
    let response = session.send(Method::HEAD, digest).await?;
    // A registry names the content by its canonical algorithm, which may differ from the one
    // asked for; only a digest of the same algorithm can contradict the request.
    let same_algorithm = |served: &str| served.split(':').next() == digest.split(':').next();
    if let Some(served) = header_digest(&response)
        && same_algorithm(&served)
        && served != digest
    {
        return Err(AccessError::DigestMismatch {
            registry: endpoint.host().to_owned(),
            expected: digest.to_owned(),
            actual: served,
        });
    }
    Ok(response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_owned))
}

/// The digest `repository:tag` points to now, from the `Docker-Content-Digest` of a HEAD; a
/// registry that omits it has the manifest read (bounded) and hashed.
pub async fn resolve_tag(
    endpoint: &RegistryEndpoint,
    repository: &str,
    tag: &str,
    credentials: &RegistryCredentials,
    options: &AccessOptions,
) -> Result<String, AccessError> {
    check_tag(tag)?;
    let session = Session::open(endpoint, repository, tag, credentials, options).await?;
    let response = session.send(Method::HEAD, tag).await?;
    if let Some(digest) = header_digest(&response) {
        return Ok(digest);
    }
    if response.headers().contains_key("docker-content-digest") {
        return Err(AccessError::MissingDigest {
            registry: endpoint.host().to_owned(),
            reference: tag.to_owned(),
        });
    }
    Ok(session.get_bounded(tag).await?.digest)
}

/// Reads the manifest or index `reference` (a tag or a digest) of `repository`, at most
/// `options.max_manifest_bytes`. A body fetched by digest is checked against that digest.
pub async fn fetch_manifest(
    endpoint: &RegistryEndpoint,
    repository: &str,
    reference: &str,
    credentials: &RegistryCredentials,
    options: &AccessOptions,
) -> Result<FetchedManifest, AccessError> {
    if reference.contains(':') {
        check_digest(reference)?;
    } else {
        check_tag(reference)?;
    }
    let session = Session::open(endpoint, repository, reference, credentials, options).await?;
    session.get_bounded(reference).await
}

/// One call's HTTP client and `Authorization`, after the registry's challenge.
struct Session<'a> {
    endpoint: &'a RegistryEndpoint,
    repository: &'a str,
    credentials: &'a RegistryCredentials,
    http: reqwest::Client,
    /// The host the API is served on (Docker Hub's differs from `docker.io`).
    api_host: String,
    authorization: Option<SecretString>,
    deadline: tokio::time::Instant,
    max_bytes: usize,
}

impl<'a> Session<'a> {
    async fn open(
        endpoint: &'a RegistryEndpoint,
        repository: &'a str,
        reference: &str,
        credentials: &'a RegistryCredentials,
        options: &AccessOptions,
    ) -> Result<Session<'a>, AccessError> {
        check_repository(repository)?;
        install_crypto_provider();
        let deadline = tokio::time::Instant::now() + options.timeout;
        let registry = endpoint.host().to_owned();
        let oci_reference = endpoint.reference(repository, reference);
        let api_host = oci_reference.resolve_registry().to_owned();

        let config = ClientConfig {
            protocol: if endpoint.plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            accept_invalid_certificates: endpoint.insecure,
            connect_timeout: Some(options.connect_timeout),
            read_timeout: Some(options.timeout),
            user_agent: options.user_agent,
            ..ClientConfig::default()
        };
        let oci = oci_client::Client::try_from(config).map_err(|e| oci_error(&registry, e))?;
        let auth = match credentials {
            RegistryCredentials::Anonymous => RegistryAuth::Anonymous,
            RegistryCredentials::Basic { username, password } => RegistryAuth::Basic(
                username.expose_secret().to_owned(),
                password.expose_secret().to_owned(),
            ),
            RegistryCredentials::Bearer { token } => {
                RegistryAuth::Bearer(token.expose_secret().to_owned())
            }
        };
        // The challenge is parsed and the token requested from a realm the registry names:
        // input of a tenant's choosing, so a panic in there must not end the process.
        let challenge = AssertUnwindSafe(oci.auth(&oci_reference, &auth, RegistryOperation::Pull))
            .catch_unwind();
        let token = match tokio::time::timeout_at(deadline, challenge).await {
            Err(_) => {
                return Err(AccessError::Unreachable {
                    registry,
                    reason: "timed out during the authentication challenge".into(),
                });
            }
            Ok(Err(_panic)) => return Err(AccessError::ClientPanicked { registry }),
            Ok(Ok(Err(OciDistributionError::AuthenticationFailure(_)))) => {
                return Err(AccessError::Denied {
                    registry,
                    repository: repository.to_owned(),
                    status: StatusCode::UNAUTHORIZED.as_u16(),
                    credentials: credentials.kind(),
                });
            }
            Ok(Ok(Err(e))) => return Err(oci_error(&registry, e)),
            Ok(Ok(Ok(token))) => token,
        };
        let authorization = match (token, credentials) {
            (Some(token), _) => Some(SecretString::from(format!("Bearer {token}"))),
            // No token: the registry asked for Basic, or nothing at all.
            (None, RegistryCredentials::Basic { username, password }) => {
                use base64::Engine;
                let pair = format!("{}:{}", username.expose_secret(), password.expose_secret());
                Some(SecretString::from(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                )))
            }
            (None, RegistryCredentials::Bearer { token }) => Some(SecretString::from(format!(
                "Bearer {}",
                token.expose_secret()
            ))),
            (None, RegistryCredentials::Anonymous) => None,
        };

        let http = reqwest::Client::builder()
            .tls_danger_accept_invalid_certs(endpoint.insecure)
            // A redirect could carry the request to a host of the registry's choosing.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(options.connect_timeout)
            .timeout(options.timeout)
            .user_agent(options.user_agent)
            .build()
            .map_err(|e| transport_error(&registry, &e))?;
        Ok(Session {
            endpoint,
            repository,
            credentials,
            http,
            api_host,
            authorization,
            deadline,
            max_bytes: options.max_manifest_bytes,
        })
    }

    fn registry(&self) -> String {
        self.endpoint.host().to_owned()
    }

    /// Sends a manifest request and maps a non-200 status to its error.
    async fn send(
        &self,
        method: Method,
        reference: &str,
    ) -> Result<reqwest::Response, AccessError> {
        let url = self
            .endpoint
            .manifest_url(&self.api_host, self.repository, reference);
        let mut request = self
            .http
            .request(method, url)
            .header(ACCEPT, MANIFEST_MEDIA_TYPES.join(", "));
        if let Some(authorization) = &self.authorization {
            // Credentials with control characters are refused when read from the Secret, so
            // only a token the registry issued can fail here.
            let mut value = HeaderValue::from_str(authorization.expose_secret()).map_err(|_| {
                AccessError::InvalidToken {
                    registry: self.registry(),
                }
            })?;
            value.set_sensitive(true);
            request = request.header(AUTHORIZATION, value);
        }
        let response = tokio::time::timeout_at(self.deadline, request.send())
            .await
            .map_err(|_| AccessError::Unreachable {
                registry: self.registry(),
                reason: "timed out".into(),
            })?
            .map_err(|e| transport_error(&self.registry(), &e))?;
        let status = response.status();
        match status {
            StatusCode::OK => Ok(response),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(AccessError::Denied {
                registry: self.registry(),
                repository: self.repository.to_owned(),
                status: status.as_u16(),
                credentials: self.credentials.kind(),
            }),
            StatusCode::NOT_FOUND => Err(AccessError::NotFound {
                registry: self.registry(),
                repository: self.repository.to_owned(),
                reference: reference.to_owned(),
            }),
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                Err(AccessError::Unreachable {
                    registry: self.registry(),
                    reason: format!("HTTP {}", s.as_u16()),
                })
            }
            s => Err(AccessError::UnexpectedStatus {
                registry: self.registry(),
                repository: self.repository.to_owned(),
                status: s.as_u16(),
            }),
        }
    }

    /// `GET` of a manifest, reading at most `max_bytes`; a digest reference is verified.
    async fn get_bounded(&self, reference: &str) -> Result<FetchedManifest, AccessError> {
        let too_large = || AccessError::TooLarge {
            repository: self.repository.to_owned(),
            reference: reference.to_owned(),
            limit: self.max_bytes,
        };
        let mut response = self.send(Method::GET, reference).await?;
        let declared = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > self.max_bytes as u64) {
            return Err(too_large());
        }
        let media_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let mut body = Vec::new();
        loop {
            let chunk = tokio::time::timeout_at(self.deadline, response.chunk())
                .await
                .map_err(|_| AccessError::Unreachable {
                    registry: self.registry(),
                    reason: "timed out reading the manifest".into(),
                })?
                .map_err(|e| transport_error(&self.registry(), &e))?;
            let Some(chunk) = chunk else { break };
            if body.len().saturating_add(chunk.len()) > self.max_bytes {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&body)));
        if reference.starts_with("sha256:") && digest != reference {
            return Err(AccessError::DigestMismatch {
                registry: self.registry(),
                expected: reference.to_owned(),
                actual: digest,
            });
        }
        if let Some(sha512) = reference.strip_prefix("sha512:") {
            let actual = hex::encode(sha2::Sha512::digest(&body));
            if actual != sha512 {
                return Err(AccessError::DigestMismatch {
                    registry: self.registry(),
                    expected: reference.to_owned(),
                    actual: format!("sha512:{actual}"),
                });
            }
            return Ok(FetchedManifest {
                media_type,
                digest: reference.to_owned(),
                body,
            });
        }
        Ok(FetchedManifest {
            media_type,
            digest,
            body,
        })
    }
}

/// reqwest needs a process-wide rustls provider (the project uses `ring` only).
fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means another part of the process installed one first, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A valid `Docker-Content-Digest` of the response, if any.
fn header_digest(response: &reqwest::Response) -> Option<String> {
    let value = response
        .headers()
        .get("docker-content-digest")?
        .to_str()
        .ok()?;
    check_digest(value).ok()?;
    Some(value.to_owned())
}

/// `sha256:` + 64 or `sha512:` + 128 lowercase hex characters.
fn check_digest(digest: &str) -> Result<(), AccessError> {
    let hex_len = match digest.split_once(':') {
        Some(("sha256", hex)) => (hex.len() == 64).then_some(hex),
        Some(("sha512", hex)) => (hex.len() == 128).then_some(hex),
        _ => None,
    };
    match hex_len {
        Some(hex) if hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => Ok(()),
        _ => Err(AccessError::InvalidReference {
            reference: digest.to_owned(),
        }),
    }
}

/// An OCI tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
fn check_tag(tag: &str) -> Result<(), AccessError> {
    let mut bytes = tag.bytes();
    let ok = tag.len() <= 128
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(AccessError::InvalidReference {
            reference: tag.to_owned(),
        })
    }
}

/// An OCI repository name: `/`-separated lowercase alphanumeric components joined by `.`,
/// `_`, `__` or `-`; it goes into a URL path, so nothing else may pass.
fn check_repository(repository: &str) -> Result<(), AccessError> {
    let component_ok = |c: &str| {
        let bytes = c.as_bytes();
        let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        edge(bytes.first())
            && edge(bytes.last())
            && bytes.iter().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            })
    };
    if repository.len() <= 255 && repository.split('/').all(component_ok) {
        Ok(())
    } else {
        Err(AccessError::InvalidRepository {
            repository: repository.to_owned(),
        })
    }
}

/// A transport failure: TLS problems are permanent, the rest is worth a retry.
fn transport_error(registry: &str, error: &reqwest::Error) -> AccessError {
    if let Some(reason) = tls_failure(error) {
        return AccessError::Tls {
            registry: registry.to_owned(),
            reason,
        };
    }
    // reqwest's Display names the URL, which holds no credentials (refused in the URL).
    let reason = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "cannot connect".to_owned()
    } else {
        "the connection failed".to_owned()
    };
    AccessError::Unreachable {
        registry: registry.to_owned(),
        reason,
    }
}

/// Errors of the challenge step that are not an authentication failure.
fn oci_error(registry: &str, error: OciDistributionError) -> AccessError {
    match error {
        OciDistributionError::RequestError(e) => transport_error(registry, &e),
        OciDistributionError::RegistryTokenDecodeError(_) => AccessError::InvalidToken {
            registry: registry.to_owned(),
        },
        OciDistributionError::ServerError { code, .. } if code >= 500 => AccessError::Unreachable {
            registry: registry.to_owned(),
            reason: format!("HTTP {code}"),
        },
        // Bodies and tokens are never quoted: they come from the registry.
        _ => AccessError::Unreachable {
            registry: registry.to_owned(),
            reason: "the authentication challenge failed".into(),
        },
    }
}

/// The description of a rustls failure in `error`'s source chain, if any.
fn tls_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(err) = current {
        let rustls_err = err.downcast_ref::<rustls::Error>().or_else(|| {
            err.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(r) = rustls_err {
            return Some(r.to_string());
        }
        current = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_needs_the_insecure_flag() {
        assert_eq!(
            RegistryEndpoint::parse("http://reg.example:5000", false),
            Err(AccessError::PlainHttpRefused)
        );
        let msg = AccessError::PlainHttpRefused.to_string();
        assert!(msg.contains("spec.registry.insecure"), "{msg}");
        let endpoint = RegistryEndpoint::parse("http://Reg.Example:5000/", true).unwrap();
        assert_eq!(endpoint.host(), "reg.example:5000");
        assert!(RegistryEndpoint::parse("https://reg.example", false).is_ok());
    }

    #[test]
    fn registry_urls_with_credentials_paths_or_other_schemes_are_refused() {
        for url in [
            "https://user:pw@reg.example",
            "https://reg.example/v2/team",
            "ftp://reg.example",
            "reg.example",
            "https://reg.example/?a=b",
        ] {
            let err = RegistryEndpoint::parse(url, true).unwrap_err();
            assert!(
                matches!(err, AccessError::InvalidUrl { .. }),
                "{url}: {err}"
            );
            assert!(!err.to_string().contains("pw"), "{err}");
        }
    }

    #[test]
    fn references_and_repositories_are_validated_before_they_reach_a_url() {
        assert!(check_digest(&format!("sha256:{}", "a".repeat(64))).is_ok());
        assert!(check_digest(&format!("sha512:{}", "0".repeat(128))).is_ok());
        assert!(check_digest(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(check_digest("sha256:../../x").is_err());
        assert!(check_tag("v1.2_3-rc").is_ok());
        assert!(check_tag("-x").is_err());
        assert!(check_tag("a/b").is_err());
        assert!(check_tag(&"a".repeat(129)).is_err());
        assert!(check_repository("team/app.web-1").is_ok());
        for bad in [
            "",
            "Team/app",
            "team//app",
            "team/../app",
            "team/app?x",
            "a/-b",
        ] {
            assert!(check_repository(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_error_has_a_reason_and_only_transport_errors_are_transient() {
        let unreachable = AccessError::Unreachable {
            registry: "r".into(),
            reason: "x".into(),
        };
        assert!(unreachable.is_transient());
        assert_eq!(unreachable.reason(), "RegistryUnreachable");
        let denied = AccessError::Denied {
            registry: "r".into(),
            repository: "p".into(),
            status: 401,
            credentials: "anonymous",
        };
        assert!(!denied.is_transient());
        assert_eq!(denied.reason(), "ArtifactAccessDenied");
        // The kind of credentials survives redaction (no scheme word followed by a space).
        let basic = AccessError::Denied {
            registry: "r".into(),
            repository: "p".into(),
            status: 401,
            credentials: "basic",
        };
        let shown = crate::redact::Redactor::default().scrub(&basic.to_string());
        assert!(shown.contains("kind basic;"), "{shown}");
        assert!(
            denied
                .to_string()
                .contains("spec.registry.credentialsSecretRef")
        );
    }
}
