//! Builders for the objects tests and benches make over and over: ScanRequests and the Secrets
//! that hold registry credentials. Defaults describe a public image behind a made-up registry;
//! a test sets only what it is about.
//!
//! ```ignore
//! let sr = ScanRequestBuilder::new("app", "trivy")
//!     .registry_url(&registry.url())
//!     .insecure(true)
//!     .credentials_secret("pull")
//!     .build();
//! SecretBuilder::docker_config()
//!     .name("pull")
//!     .auth(&registry.host(), "robot", "pass")
//!     .create(&client, &ns)
//!     .await;
//! ```

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use scanreport_operator::api::{
    ArtifactMimeType, ArtifactSpec, LocalSecretReference, PolicyReference, PolicyRules,
    RegistrySpec, ScanRequest, ScanRequestSpec,
};

/// The registry of a default ScanRequest. It does not exist: an operator under test needs
/// `--artifact-access trust` for it (see [`crate::operator::FAST`]).
pub const REGISTRY_URL: &str = "https://registry.example.test";
/// The repository of a default ScanRequest.
pub const REPOSITORY: &str = "library/nginx";
/// The tag of a default ScanRequest.
pub const TAG: &str = "1.27";
/// The report MIME type of a default ScanRequest: Harbor's vulnerability report 1.1. Spelled
/// out here rather than taken from the operator, so that the tests pin the value.
pub const VULNERABILITY_REPORT: &str = "application/vnd.security.vulnerability.report; version=1.1";

/// A random `sha256:` digest.
pub fn digest() -> String {
    format!(
        "sha256:{:016x}{:016x}{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>(),
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

/// A ScanRequest for `digest` behind a registry without credentials, producing `mimes`: the
/// shorthand for the builder's most common use.
pub fn request(name: &str, scanner: &str, digest: &str, mimes: &[&str]) -> ScanRequest {
    ScanRequestBuilder::new(name, scanner)
        .digest(digest)
        .mime_types(mimes)
        .build()
}

/// A ScanRequest, from defaults: [`REGISTRY_URL`] without credentials and not insecure,
/// [`REPOSITORY`] at a random digest with tag [`TAG`], no declared media type, one
/// [`VULNERABILITY_REPORT`], no `rescanAfter` and no `rescanToken`.
#[derive(Clone, Debug)]
pub struct ScanRequestBuilder {
    name: String,
    spec: ScanRequestSpec,
}

impl ScanRequestBuilder {
    pub fn new(name: &str, scanner: &str) -> Self {
        Self {
            name: name.to_owned(),
            spec: ScanRequestSpec {
                scanner: scanner.to_owned(),
                registry: RegistrySpec {
                    url: REGISTRY_URL.to_owned(),
                    credentials_secret_ref: None,
                    insecure: false,
                },
                artifact: ArtifactSpec {
                    repository: REPOSITORY.to_owned(),
                    digest: Some(digest()),
                    tag: Some(TAG.to_owned()),
                    resolve_every: None,
                    mime_type: None,
                },
                platforms: Vec::new(),
                report_mime_types: vec![VULNERABILITY_REPORT.to_owned()],
                rescan_after: None,
                rescan_token: None,
                policy: None,
                policy_ref: None,
            },
        }
    }

    pub fn scanner(mut self, scanner: &str) -> Self {
        scanner.clone_into(&mut self.spec.scanner);
        self
    }

    pub fn registry_url(mut self, url: &str) -> Self {
        url.clone_into(&mut self.spec.registry.url);
        self
    }

    /// `spec.registry.insecure`: plain http or an unverified certificate.
    pub fn insecure(mut self, insecure: bool) -> Self {
        self.spec.registry.insecure = insecure;
        self
    }

    /// `spec.registry.credentialsSecretRef`.
    pub fn credentials_secret(mut self, name: &str) -> Self {
        self.spec.registry.credentials_secret_ref = Some(LocalSecretReference {
            name: name.to_owned(),
        });
        self
    }

    pub fn repository(mut self, repository: &str) -> Self {
        repository.clone_into(&mut self.spec.artifact.repository);
        self
    }

    pub fn digest(mut self, digest: &str) -> Self {
        self.spec.artifact.digest = Some(digest.to_owned());
        self
    }

    /// No `spec.artifact.digest`: the tag is resolved.
    pub fn no_digest(mut self) -> Self {
        self.spec.artifact.digest = None;
        self
    }

    /// `spec.artifact.resolveEvery`.
    pub fn resolve_every(mut self, every: &str) -> Self {
        self.spec.artifact.resolve_every = Some(every.to_owned());
        self
    }

    /// `spec.platforms`.
    pub fn platforms(mut self, platforms: &[&str]) -> Self {
        self.spec.platforms = platforms.iter().map(|p| (*p).to_owned()).collect();
        self
    }

    pub fn tag(mut self, tag: &str) -> Self {
        self.spec.artifact.tag = Some(tag.to_owned());
        self
    }

    pub fn no_tag(mut self) -> Self {
        self.spec.artifact.tag = None;
        self
    }

    /// `spec.artifact.mimeType`: the artifact's manifest media type.
    pub fn artifact_mime_type(mut self, mime_type: ArtifactMimeType) -> Self {
        self.spec.artifact.mime_type = Some(mime_type);
        self
    }

    /// `spec.reportMimeTypes`, in this order.
    pub fn mime_types(mut self, mimes: &[&str]) -> Self {
        self.spec.report_mime_types = mimes.iter().map(|m| (*m).to_owned()).collect();
        self
    }

    pub fn rescan_after(mut self, after: &str) -> Self {
        self.spec.rescan_after = Some(after.to_owned());
        self
    }

    pub fn rescan_token(mut self, token: &str) -> Self {
        self.spec.rescan_token = Some(token.to_owned());
        self
    }

    /// `spec.policy`: inline policy rules.
    pub fn policy(mut self, rules: PolicyRules) -> Self {
        self.spec.policy = Some(Box::new(rules));
        self
    }

    /// `spec.policyRef`: the ScanPolicy named `name`.
    pub fn policy_ref(mut self, name: &str) -> Self {
        self.spec.policy_ref = Some(PolicyReference {
            name: name.to_owned(),
        });
        self
    }

    pub fn build(self) -> ScanRequest {
        ScanRequest::new(&self.name, self.spec)
    }
}

/// A Secret of a given type with keys in `data`, as the operator reads it (the API server also
/// turns `stringData` into `data`). Start from [`SecretBuilder::docker_config`],
/// [`SecretBuilder::basic_auth`], [`SecretBuilder::opaque`] or [`SecretBuilder::of_type`].
#[derive(Clone, Debug)]
pub struct SecretBuilder {
    name: Option<String>,
    type_: String,
    data: BTreeMap<String, Vec<u8>>,
    /// The `auths` of a `.dockerconfigjson`, written into `data` by [`SecretBuilder::build`].
    docker_auths: Option<serde_json::Map<String, serde_json::Value>>,
}

impl SecretBuilder {
    /// `kubernetes.io/dockerconfigjson`; add registries with [`SecretBuilder::auth`].
    pub fn docker_config() -> Self {
        Self {
            docker_auths: Some(serde_json::Map::new()),
            ..Self::of_type("kubernetes.io/dockerconfigjson")
        }
    }

    /// `kubernetes.io/basic-auth` with `username` and `password`.
    pub fn basic_auth(username: &str, password: &str) -> Self {
        Self::of_type("kubernetes.io/basic-auth")
            .entry("username", username)
            .entry("password", password)
    }

    /// `Opaque`: no registry credential, whatever its keys.
    pub fn opaque() -> Self {
        Self::of_type("Opaque")
    }

    pub fn of_type(type_: &str) -> Self {
        Self {
            name: None,
            type_: type_.to_owned(),
            data: BTreeMap::new(),
            docker_auths: None,
        }
    }

    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// One `auths` entry of the Docker config: `host` as written (e.g. `127.0.0.1:5000` or
    /// `http://127.0.0.1:5000`), with `auth` = base64 of `user:password`. Panics unless the
    /// builder started from [`SecretBuilder::docker_config`].
    pub fn auth(mut self, host: &str, user: &str, password: &str) -> Self {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.docker_auths
            .as_mut()
            .expect("auth() is for SecretBuilder::docker_config()")
            .insert(host.to_owned(), serde_json::json!({ "auth": auth }));
        self
    }

    /// A key of `data`, stored as given.
    pub fn entry(mut self, key: &str, value: impl Into<Vec<u8>>) -> Self {
        self.data.insert(key.to_owned(), value.into());
        self
    }

    pub fn build(self) -> Secret {
        let mut data: BTreeMap<String, ByteString> = self
            .data
            .into_iter()
            .map(|(k, v)| (k, ByteString(v)))
            .collect();
        if let Some(auths) = self.docker_auths {
            let config = serde_json::json!({ "auths": auths });
            data.insert(
                ".dockerconfigjson".to_owned(),
                ByteString(config.to_string().into_bytes()),
            );
        }
        Secret {
            metadata: ObjectMeta {
                name: self.name,
                ..ObjectMeta::default()
            },
            type_: Some(self.type_),
            data: Some(data),
            ..Secret::default()
        }
    }

    /// Creates the Secret in `ns`; a refusal fails the test.
    pub async fn create(self, client: &Client, ns: &str) -> Secret {
        Api::<Secret>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &self.build())
            .await
            .unwrap()
    }
}

/// A plausible Harbor 1.1 vulnerability report of about 13 KB: 29 vulnerabilities over five
/// severities, a third with a fix version. The benchmarks' report body.
pub fn sample_vulnerability_report() -> serde_json::Value {
    let severities = ["Critical", "High", "Medium", "Low", "Unknown"];
    let vulns: Vec<_> = (0..29)
        .map(|i| {
            serde_json::json!({
                "id": format!("CVE-2026-{:05}", 1000 + i),
                "package": format!("libexample{}", i % 7),
                "version": format!("1.{}.{}", i % 5, i),
                "fix_version": if i % 3 == 0 { format!("1.{}.{}", i % 5, i + 1) } else { String::new() },
                "severity": severities[i % severities.len()],
                "description": "A crafted input can make the parser read past the end of a buffer, \
                    which lets a remote attacker crash the process or read adjacent memory.",
                "links": [format!("https://avd.example/nvd/cve-2026-{:05}", 1000 + i)],
                "cwe_ids": ["CWE-125"],
                "vendor_attributes": {"CVSS": {"nvd": {"V3Score": 7.5, "V3Vector": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H"}}}
            })
        })
        .collect();
    serde_json::json!({
        "generated_at": "2026-11-27T00:00:00Z",
        "artifact": {"repository": "library/nginx", "digest": format!("sha256:{}", "a".repeat(64)),
                     "mime_type": "application/vnd.oci.image.manifest.v1+json"},
        "scanner": {"name": "Trivy", "vendor": "Aqua Security", "version": "0.50.0"},
        "severity": "Critical",
        "vulnerabilities": vulns
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_docker_config_secret_carries_base64_user_and_password_per_host() {
        let secret = SecretBuilder::docker_config()
            .name("pull")
            .auth("127.0.0.1:5000", "robot", "pa:ss")
            .build();
        assert_eq!(secret.metadata.name.as_deref(), Some("pull"));
        assert_eq!(
            secret.type_.as_deref(),
            Some("kubernetes.io/dockerconfigjson")
        );
        let data = secret.data.unwrap();
        let config: serde_json::Value =
            serde_json::from_slice(&data[".dockerconfigjson"].0).unwrap();
        // base64("robot:pa:ss")
        assert_eq!(
            config,
            serde_json::json!({"auths": {"127.0.0.1:5000": {"auth": "cm9ib3Q6cGE6c3M="}}})
        );
    }

    #[test]
    fn a_basic_auth_secret_has_username_and_password_keys() {
        let secret = SecretBuilder::basic_auth("robot", "pass").build();
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/basic-auth"));
        let data = secret.data.unwrap();
        assert_eq!(data["username"].0, b"robot");
        assert_eq!(data["password"].0, b"pass");
        assert_eq!(data.len(), 2);
    }

    #[test]
    fn a_default_scan_request_names_a_public_image_and_one_vulnerability_report() {
        let sr = ScanRequestBuilder::new("app", "trivy").build();
        assert_eq!(sr.metadata.name.as_deref(), Some("app"));
        assert_eq!(sr.spec.scanner, "trivy");
        assert_eq!(sr.spec.registry.url, REGISTRY_URL);
        assert!(sr.spec.registry.credentials_secret_ref.is_none());
        assert!(!sr.spec.registry.insecure);
        assert_eq!(sr.spec.artifact.repository, REPOSITORY);
        assert_eq!(sr.spec.artifact.tag.as_deref(), Some(TAG));
        assert_eq!(
            sr.spec.artifact.digest.as_deref().map(str::len),
            Some("sha256:".len() + 64)
        );
        assert_eq!(
            sr.spec.artifact.mime_type, None,
            "learned from the registry"
        );
        assert_eq!(sr.spec.report_mime_types, [VULNERABILITY_REPORT]);
        assert!(sr.spec.rescan_after.is_none() && sr.spec.rescan_token.is_none());
    }

    #[test]
    fn every_setter_lands_in_its_field() {
        let sr = ScanRequestBuilder::new("app", "trivy")
            .scanner("other")
            .registry_url("http://127.0.0.1:5000")
            .insecure(true)
            .credentials_secret("pull")
            .repository("team/app")
            .digest("sha256:00")
            .no_tag()
            .artifact_mime_type(ArtifactMimeType::DockerManifestV2)
            .mime_types(&["a/b", "c/d"])
            .rescan_after("24h")
            .rescan_token("v1")
            .build();
        let spec = sr.spec;
        assert_eq!(spec.scanner, "other");
        assert_eq!(spec.registry.url, "http://127.0.0.1:5000");
        assert!(spec.registry.insecure);
        assert_eq!(
            spec.registry
                .credentials_secret_ref
                .map(|r| r.name)
                .as_deref(),
            Some("pull")
        );
        assert_eq!(spec.artifact.repository, "team/app");
        assert_eq!(spec.artifact.digest.as_deref(), Some("sha256:00"));
        assert_eq!(spec.artifact.tag, None);
        assert_eq!(
            spec.artifact.mime_type,
            Some(ArtifactMimeType::DockerManifestV2)
        );
        assert_eq!(spec.report_mime_types, ["a/b", "c/d"]);
        assert_eq!(spec.rescan_after.as_deref(), Some("24h"));
        assert_eq!(spec.rescan_token.as_deref(), Some("v1"));
    }
}
