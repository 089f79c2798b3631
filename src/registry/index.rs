//! Image indexes (OCI image index, Docker manifest list): which of their child manifests a
//! request scans. Pure: the caller fetched the index (bounded in size, digest verified) and
//! passes its bytes and the request's `spec.platforms`.
//!
//! Attestation manifests (BuildKit's `unknown/unknown` entries, annotated
//! `vnd.docker.reference.type: attestation-manifest`) are never scanned: they are not images.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::api::ArtifactMimeType;

/// One child manifest to scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    /// `os/architecture[/variant]`; made unique within the index (a repeated platform gets
    /// `@` and 12 hex digits of its digest).
    pub platform: String,
    pub digest: String,
    /// A single-image manifest type (never an index).
    pub media_type: ArtifactMimeType,
}

/// Why an index cannot be scanned as asked. Each names what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error(
        "the image index {digest} is not a valid OCI image index or Docker manifest list ({reason}); check spec.artifact"
    )]
    Invalid { digest: String, reason: String },
    #[error(
        "the image index {digest} lists another index ({child}) for platform {platform}; nested indexes are not scanned: name a platform's manifest or a flat index in spec.artifact"
    )]
    NestedIndex {
        digest: String,
        child: String,
        platform: String,
    },
    #[error(
        "the image index {digest} lists {child} for platform {platform} as {media_type:?}, which is not an image manifest; scanners consume OCI and Docker v2 image manifests"
    )]
    UnsupportedChild {
        digest: String,
        child: String,
        platform: String,
        media_type: String,
    },
    #[error(
        "the image index {digest} has {count} platforms to scan ({platforms}), more than the {limit} the operator scans for one request (--max-platforms); list the ones to scan in spec.platforms"
    )]
    TooManyPlatforms {
        digest: String,
        count: usize,
        limit: usize,
        platforms: String,
    },
    #[error("spec.platforms: the image index {digest} has none of {wanted}; it has: {available}")]
    NoMatchingPlatform {
        digest: String,
        wanted: String,
        available: String,
    },
}

impl IndexError {
    /// A condition reason, one per case a user acts on differently.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Invalid { .. } => "InvalidIndex",
            Self::NestedIndex { .. } => "NestedIndex",
            Self::UnsupportedChild { .. } => "UnsupportedMediaType",
            Self::TooManyPlatforms { .. } => "TooManyPlatforms",
            Self::NoMatchingPlatform { .. } => "NoMatchingPlatform",
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    manifests: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    #[serde(default)]
    media_type: Option<String>,
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Platform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

impl Entry {
    fn platform(&self) -> String {
        match &self.platform {
            None => "unknown/unknown".to_owned(),
            Some(p) => {
                let part = |s: &str| {
                    if s.is_empty() {
                        "unknown".to_owned()
                    } else {
                        s.to_ascii_lowercase()
                    }
                };
                let mut label = format!("{}/{}", part(&p.os), part(&p.architecture));
                if let Some(variant) = p.variant.as_deref().filter(|v| !v.is_empty()) {
                    label.push('/');
                    label.push_str(&variant.to_ascii_lowercase());
                }
                label
            }
        }
    }

    fn is_attestation(&self) -> bool {
        self.annotations
            .get("vnd.docker.reference.type")
            .is_some_and(|t| t == "attestation-manifest")
            || self.platform() == "unknown/unknown"
    }
}

/// Whether a `spec.platforms` entry names `platform`: exactly, or without a variant for
/// every variant (`linux/arm64` matches `linux/arm64/v8`).
fn wanted_matches(wanted: &str, platform: &str) -> bool {
    let wanted = wanted.to_ascii_lowercase();
    platform == wanted
        || platform
            .strip_prefix(wanted.as_str())
            .is_some_and(|rest| rest.starts_with('/') && wanted.matches('/').count() == 1)
}

/// The children of the index `digest` (its bytes `body`) to scan: those `wanted` names (all
/// but attestations when empty), at most `limit` of them, each an image manifest.
pub fn select(
    digest: &str,
    body: &[u8],
    wanted: &[String],
    limit: usize,
) -> Result<Vec<Child>, IndexError> {
    let invalid = |reason: String| IndexError::Invalid {
        digest: digest.to_owned(),
        reason,
    };
    let index: Index = serde_json::from_slice(body).map_err(|e| invalid(e.to_string()))?;
    for entry in &index.manifests {
        crate::identity::Digest::parse(&entry.digest)
            .map_err(|_| invalid(format!("{:?} is not a digest", cut(&entry.digest))))?;
    }
    let images: Vec<&Entry> = index
        .manifests
        .iter()
        .filter(|e| !e.is_attestation())
        .collect();
    if images.is_empty() {
        return Err(invalid(
            "it lists no image manifest, only attestations or nothing".into(),
        ));
    }
    let chosen: Vec<&Entry> = if wanted.is_empty() {
        images.clone()
    } else {
        images
            .iter()
            .copied()
            .filter(|e| wanted.iter().any(|w| wanted_matches(w, &e.platform())))
            .collect()
    };
    if chosen.is_empty() {
        let mut available: Vec<String> = images.iter().map(|e| e.platform()).collect();
        available.dedup();
        return Err(IndexError::NoMatchingPlatform {
            digest: digest.to_owned(),
            wanted: wanted.join(", "),
            available: available.join(", "),
        });
    }
    if chosen.len() > limit {
        return Err(IndexError::TooManyPlatforms {
            digest: digest.to_owned(),
            count: chosen.len(),
            limit,
            platforms: chosen
                .iter()
                .map(|e| e.platform())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let mut children: Vec<Child> = Vec::with_capacity(chosen.len());
    for entry in chosen {
        let mut platform = entry.platform();
        let declared = entry.media_type.as_deref().unwrap_or_default();
        let media_type = match ArtifactMimeType::from_content_type(declared) {
            Some(t) if t.is_index() => {
                return Err(IndexError::NestedIndex {
                    digest: digest.to_owned(),
                    child: entry.digest.clone(),
                    platform,
                });
            }
            Some(t) => t,
            None => {
                return Err(IndexError::UnsupportedChild {
                    digest: digest.to_owned(),
                    child: entry.digest.clone(),
                    platform,
                    media_type: cut(declared),
                });
            }
        };
        if children.iter().any(|c| c.digest == entry.digest) {
            continue;
        }
        if children.iter().any(|c| c.platform == platform) {
            let hex = entry.digest.split(':').nth(1).unwrap_or_default();
            platform = format!("{platform}@{}", hex.get(..12).unwrap_or(hex));
        }
        children.push(Child {
            platform,
            digest: entry.digest.clone(),
            media_type,
        });
    }
    Ok(children)
}

/// At most 128 characters of registry-supplied text, for messages.
fn cut(s: &str) -> String {
    s.chars().take(128).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OCI: &str = "application/vnd.oci.image.manifest.v1+json";

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    /// The shape BuildKit pushes: two platforms and an attestation manifest.
    fn buildkit_index() -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"mediaType": OCI, "digest": d('a'), "size": 1,
                 "platform": {"os": "linux", "architecture": "amd64"}},
                {"mediaType": OCI, "digest": d('b'), "size": 1,
                 "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                {"mediaType": OCI, "digest": d('c'), "size": 1,
                 "platform": {"os": "unknown", "architecture": "unknown"},
                 "annotations": {"vnd.docker.reference.type": "attestation-manifest",
                                 "vnd.docker.reference.digest": d('a')}},
            ],
        }))
        .unwrap()
    }

    fn platforms(children: &[Child]) -> Vec<&str> {
        children.iter().map(|c| c.platform.as_str()).collect()
    }

    #[test]
    fn every_platform_but_the_attestation_is_scanned_by_default() {
        let children = select(&d('f'), &buildkit_index(), &[], 8).unwrap();
        assert_eq!(platforms(&children), ["linux/amd64", "linux/arm64/v8"]);
        assert_eq!(children[0].digest, d('a'));
        assert_eq!(children[1].media_type, ArtifactMimeType::OciImageManifest);
    }

    #[test]
    fn a_platform_filter_without_variant_matches_every_variant() {
        let only_arm = select(&d('f'), &buildkit_index(), &["linux/arm64".into()], 8).unwrap();
        assert_eq!(platforms(&only_arm), ["linux/arm64/v8"]);
        let exact = select(&d('f'), &buildkit_index(), &["linux/amd64".into()], 8).unwrap();
        assert_eq!(platforms(&exact), ["linux/amd64"]);
        let wrong_variant = select(&d('f'), &buildkit_index(), &["linux/arm64/v7".into()], 8);
        assert!(matches!(
            wrong_variant,
            Err(IndexError::NoMatchingPlatform { .. })
        ));
    }

    #[test]
    fn a_filter_naming_nothing_in_the_index_lists_what_there_is() {
        let err = select(&d('f'), &buildkit_index(), &["windows/amd64".into()], 8).unwrap_err();
        assert_eq!(err.reason(), "NoMatchingPlatform");
        let text = err.to_string();
        assert!(text.contains("spec.platforms"), "{text}");
        assert!(text.contains("linux/amd64, linux/arm64/v8"), "{text}");
        assert!(
            !text.contains("unknown"),
            "attestations are not offered: {text}"
        );
    }

    #[test]
    fn more_platforms_than_the_limit_stall_and_say_how_to_choose() {
        let err = select(&d('f'), &buildkit_index(), &[], 1).unwrap_err();
        assert_eq!(err.reason(), "TooManyPlatforms");
        assert!(err.to_string().contains("spec.platforms"), "{err}");
        assert!(err.to_string().contains("--max-platforms"), "{err}");
        // Choosing fewer fits.
        assert!(select(&d('f'), &buildkit_index(), &["linux/amd64".into()], 1).is_ok());
    }

    #[test]
    fn a_nested_index_or_an_unknown_child_type_is_refused_with_its_reason() {
        let nested = serde_json::to_vec(&serde_json::json!({"manifests": [
            {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": d('a'),
             "platform": {"os": "linux", "architecture": "amd64"}},
        ]}))
        .unwrap();
        let err = select(&d('f'), &nested, &[], 8).unwrap_err();
        assert_eq!(err.reason(), "NestedIndex");
        let odd = serde_json::to_vec(&serde_json::json!({"manifests": [
            {"mediaType": "application/vnd.example.thing+json", "digest": d('a'),
             "platform": {"os": "linux", "architecture": "amd64"}},
        ]}))
        .unwrap();
        let err = select(&d('f'), &odd, &[], 8).unwrap_err();
        assert_eq!(err.reason(), "UnsupportedMediaType");
        assert!(err.to_string().contains("vnd.example.thing"), "{err}");
    }

    #[test]
    fn garbage_and_bad_child_digests_are_invalid_never_a_panic() {
        for body in [
            &b"not json"[..],
            b"{\"manifests\": 3}",
            b"{\"manifests\": [{\"digest\": \"sha256:short\"}]}",
            b"[]",
            b"{\"manifests\": []}",
        ] {
            let err = select(&d('f'), body, &[], 8).unwrap_err();
            assert_eq!(err.reason(), "InvalidIndex", "{err}");
        }
    }

    #[test]
    fn a_repeated_platform_gets_a_digest_suffix_so_labels_stay_unique() {
        let body = serde_json::to_vec(&serde_json::json!({"manifests": [
            {"mediaType": OCI, "digest": d('a'), "platform": {"os": "windows", "architecture": "amd64"}},
            {"mediaType": OCI, "digest": d('b'), "platform": {"os": "windows", "architecture": "amd64"}},
            {"mediaType": OCI, "digest": d('b'), "platform": {"os": "windows", "architecture": "amd64"}},
        ]}))
        .unwrap();
        let children = select(&d('f'), &body, &[], 8).unwrap();
        assert_eq!(
            platforms(&children),
            ["windows/amd64", "windows/amd64@bbbbbbbbbbbb"]
        );
    }
}
