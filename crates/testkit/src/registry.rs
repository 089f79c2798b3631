//! A real OCI registry for tests: Debian's `docker-registry` (Distribution 2.8) on a free
//! loopback port, with htpasswd (bcrypt) authentication and a temporary storage directory,
//! stopped when dropped. Test images are built here (a config and a tar.gz layer, or an index
//! of two platforms plus an attestation manifest) and pushed through the registry API with
//! `oci-client`.
//!
//! `DOCKER_REGISTRY` overrides the binary (default `/usr/bin/docker-registry`); the scripts
//! install the `docker-registry` and `apache2-utils` (for `htpasswd`) packages.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};
use sha2::Digest as _;

use crate::envtest::{GuardedChild, spawn_guarded};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A running registry. Users are `(name, password)` pairs of its htpasswd file.
pub struct TestRegistry {
    _child: GuardedChild,
    _dir: tempfile::TempDir,
    pub port: u16,
    users: Vec<(String, String)>,
}

/// What was pushed: digests of the manifests.
#[derive(Debug, Clone)]
pub struct PushedImage {
    pub repository: String,
    pub tag: String,
    pub digest: String,
    pub manifest: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct PushedIndex {
    pub repository: String,
    pub tag: String,
    pub digest: String,
    pub platform_digests: Vec<String>,
    pub attestation_digest: String,
    pub index: Vec<u8>,
}

impl TestRegistry {
    /// Starts a registry that admits `users` (at least one: the registry is never anonymous).
    pub fn start(users: &[(&str, &str)]) -> anyhow::Result<Self> {
        if users.is_empty() {
            bail!("a test registry needs at least one user");
        }
        let binary = std::env::var_os("DOCKER_REGISTRY")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/docker-registry"));
        if !binary.exists() {
            bail!(
                "{} is missing: install Debian's docker-registry package (scripts/test.sh does)",
                binary.display()
            );
        }
        let dir = tempfile::tempdir()?;
        let htpasswd = dir.path().join("htpasswd");
        let mut file = std::fs::File::create(&htpasswd)?;
        for (user, password) in users {
            let out = Command::new("htpasswd")
                .args(["-nbB", user, password])
                .output()
                .context("htpasswd (package apache2-utils) is needed")?;
            if !out.status.success() {
                bail!("htpasswd failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            file.write_all(String::from_utf8(out.stdout)?.trim_end().as_bytes())?;
            file.write_all(b"\n")?;
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: test-secret-{port}\n\
                 auth:\n  htpasswd:\n    realm: test-registry\n    path: {htpasswd}\n",
                storage = dir.path().join("storage").display(),
                htpasswd = htpasswd.display(),
            ),
        )?;
        let mut cmd = Command::new(&binary);
        cmd.arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // Distribution logs every 401 and 404 at error level: kept out of the test output.
            .stderr(std::fs::File::create(dir.path().join("registry.log"))?);
        let child = spawn_guarded(cmd)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("the registry did not listen on 127.0.0.1:{port} within 20s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self {
            _child: child,
            _dir: dir,
            port,
            users: users
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:<port>`: the host a Docker config entry names.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn client(&self) -> (oci_client::Client, RegistryAuth) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = oci_client::Client::new(ClientConfig {
            protocol: ClientProtocol::Http,
            ..ClientConfig::default()
        });
        let (user, password) = &self.users[0];
        (client, RegistryAuth::Basic(user.clone(), password.clone()))
    }

    async fn push_blob(
        &self,
        client: &oci_client::Client,
        reference: &Reference,
        data: Vec<u8>,
    ) -> anyhow::Result<(String, usize)> {
        let digest = sha256(&data);
        let size = data.len();
        client.push_blob(reference, data, &digest).await?;
        Ok((digest, size))
    }

    /// Pushes a one-layer image (the layer a tar.gz holding `content` as `/hello.txt`) for
    /// `architecture`, tagged `tag` in `repository`.
    pub async fn push_image(
        &self,
        repository: &str,
        tag: &str,
        architecture: &str,
        content: &str,
    ) -> anyhow::Result<PushedImage> {
        let (client, auth) = self.client();
        let reference = Reference::with_tag(self.host(), repository.into(), tag.into());
        client
            .auth(&reference, &auth, RegistryOperation::Push)
            .await?;
        let manifest = self
            .push_image_manifest(&client, &reference, architecture, content, None)
            .await?;
        let digest = client
            .push_manifest_raw(&reference, manifest.clone(), OCI_MANIFEST.parse()?)
            .await
            .map(|_| sha256(&manifest))?;
        Ok(PushedImage {
            repository: repository.into(),
            tag: tag.into(),
            digest,
            manifest,
        })
    }

    /// Uploads the config and layer of an image and returns its manifest (not pushed).
    async fn push_image_manifest(
        &self,
        client: &oci_client::Client,
        reference: &Reference,
        architecture: &str,
        content: &str,
        subject_annotations: Option<serde_json::Value>,
    ) -> anyhow::Result<Vec<u8>> {
        let tar = tar_with("hello.txt", content.as_bytes())?;
        let diff_id = sha256(&tar);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar)?;
        let layer = gz.finish()?;
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": architecture,
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }))?;
        let (config_digest, config_size) = self.push_blob(client, reference, config).await?;
        let (layer_digest, layer_size) = self.push_blob(client, reference, layer).await?;
        let mut manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest, "size": config_size,
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer_digest, "size": layer_size,
            }],
        });
        if let Some(annotations) = subject_annotations {
            manifest["annotations"] = annotations;
        }
        Ok(serde_json::to_vec(&manifest)?)
    }

    /// Pushes an index of an amd64 and an arm64 image plus a BuildKit-style attestation
    /// manifest for the amd64 one, tagged `tag`.
    pub async fn push_index(&self, repository: &str, tag: &str) -> anyhow::Result<PushedIndex> {
        let (client, auth) = self.client();
        let reference = Reference::with_tag(self.host(), repository.into(), tag.into());
        client
            .auth(&reference, &auth, RegistryOperation::Push)
            .await?;
        let mut entries = Vec::new();
        let mut platform_digests = Vec::new();
        for arch in ["amd64", "arm64"] {
            let manifest = self
                .push_image_manifest(&client, &reference, arch, &format!("hello {arch}"), None)
                .await?;
            let digest = sha256(&manifest);
            let by_digest = Reference::with_digest(self.host(), repository.into(), digest.clone());
            client
                .push_manifest_raw(&by_digest, manifest.clone(), OCI_MANIFEST.parse()?)
                .await?;
            entries.push(serde_json::json!({
                "mediaType": OCI_MANIFEST, "digest": digest, "size": manifest.len(),
                "platform": {"architecture": arch, "os": "linux"},
            }));
            platform_digests.push(digest);
        }
        let attestation = self
            .push_image_manifest(
                &client,
                &reference,
                "unknown",
                "{\"_type\":\"in-toto\"}",
                None,
            )
            .await?;
        let attestation_digest = sha256(&attestation);
        let by_digest =
            Reference::with_digest(self.host(), repository.into(), attestation_digest.clone());
        client
            .push_manifest_raw(&by_digest, attestation.clone(), OCI_MANIFEST.parse()?)
            .await?;
        entries.push(serde_json::json!({
            "mediaType": OCI_MANIFEST, "digest": attestation_digest, "size": attestation.len(),
            "platform": {"architecture": "unknown", "os": "unknown"},
            "annotations": {
                "vnd.docker.reference.type": "attestation-manifest",
                "vnd.docker.reference.digest": platform_digests[0],
            },
        }));
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries,
        }))?;
        client
            .push_manifest_raw(&reference, index.clone(), OCI_INDEX.parse()?)
            .await?;
        Ok(PushedIndex {
            repository: repository.into(),
            tag: tag.into(),
            digest: sha256(&index),
            platform_digests,
            attestation_digest,
            index,
        })
    }
}

impl TestRegistry {
    /// Pushes, tagged `tag`, an index whose only entry is the index `child` (already in
    /// `repository`) for linux/amd64: a nested index. Returns its digest.
    pub async fn push_nested_index(
        &self,
        repository: &str,
        tag: &str,
        child: &PushedIndex,
    ) -> anyhow::Result<String> {
        let (client, auth) = self.client();
        let reference = Reference::with_tag(self.host(), repository.into(), tag.into());
        client
            .auth(&reference, &auth, RegistryOperation::Push)
            .await?;
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{
                "mediaType": OCI_INDEX, "digest": child.digest, "size": child.index.len(),
                "platform": {"architecture": "amd64", "os": "linux"},
            }],
        }))?;
        client
            .push_manifest_raw(&reference, index.clone(), OCI_INDEX.parse()?)
            .await?;
        Ok(sha256(&index))
    }
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// A tar archive with one regular file.
fn tar_with(name: &str, content: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append_data(&mut header, name, content)?;
    Ok(builder.into_inner()?)
}
