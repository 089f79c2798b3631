//! Step 2b: what the artifact is, as the registry says. A tag is resolved to a digest (once,
//! and again after `spec.artifact.resolveEvery`), the digest's media type is learned, and an
//! image index is read and fanned out into one target per platform. Every digest a report
//! is shown for is proven with the request's own credentials (docs/security.md): the index
//! and each child manifest.
//!
//! The registry calls live in [`resolve`]; what to do is decided by the pure functions below
//! ([`needs_resolution`], [`notices`]), tested without a registry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kube::ResourceExt;
use kube::runtime::events::EventType;

use super::announced::Topic;
use super::context::Context;
use super::error::ReconcileError;
use crate::api::{ArtifactMimeType, ArtifactStatus, ScanRequest, ScanRequestSpec};
use crate::identity::Digest;
use crate::registry::cache::SecretVersion;
use crate::registry::content::{Content, ContentKey};
use crate::registry::{AccessOptions, ProofKey, RegistryCredentials, RegistryEndpoint, index};

/// One manifest to scan: the artifact itself, or one platform of its index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `os/architecture[/variant]` for a child of an image index.
    pub platform: Option<String>,
    pub digest: Digest,
    /// What the adapter is told the artifact is (an image manifest type).
    pub media_type: ArtifactMimeType,
}

/// The tag as last resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagState {
    pub tag: String,
    /// What it pointed to; `None` when resolving it failed beside a given digest (which is
    /// scanned regardless).
    pub digest: Option<String>,
    pub resolved_at: DateTime<Utc>,
    /// While `digest` is `None`: the notice that says why resolving failed (kept in the
    /// `TagMismatch` condition between resolutions).
    pub failure: Option<String>,
}

/// A condition that informs without stalling: present (True) only while it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub type_: &'static str,
    pub reason: &'static str,
    pub message: String,
}

pub const CONDITION_TAG_MISMATCH: &str = "TagMismatch";
pub const CONDITION_MEDIA_TYPE_MISMATCH: &str = "MediaTypeMismatch";

/// What step 2b works out.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// The digest at the top: `spec.artifact.digest`, else the tag's.
    pub digest: Digest,
    /// The media type the registry serves `digest` as; `None` without registry calls.
    pub served: Option<ArtifactMimeType>,
    pub tag: Option<TagState>,
    /// The manifests to scan, in the index's order.
    pub targets: Vec<Target>,
    pub notices: Vec<Notice>,
    /// When the tag is due to be resolved again.
    pub resolve_in: Option<Duration>,
}

impl Artifact {
    /// `status.artifact` for this artifact.
    pub fn status(&self) -> ArtifactStatus {
        ArtifactStatus {
            digest: Some(self.digest.to_string()),
            media_type: self.served.map(|t| t.as_str().to_owned()),
            tag: self.tag.as_ref().map(|t| t.tag.clone()),
            tag_digest: self.tag.as_ref().and_then(|t| t.digest.clone()),
            resolved_at: self
                .tag
                .as_ref()
                .map(|t| super::status::k8s_time(t.resolved_at)),
            platforms: self
                .targets
                .iter()
                .filter_map(|t| t.platform.clone())
                .collect(),
        }
    }
}

/// The bounds of `spec.artifact.resolveEvery`, as the CRD's CEL rule has them. The floor is
/// Flux's usual image polling interval: one `HEAD` a minute per request, which registries do
/// not count as pulls.
pub const RESOLVE_EVERY_MIN: Duration = Duration::from_secs(60);
pub const RESOLVE_EVERY_MAX: Duration = Duration::from_secs(8760 * 3600);

/// `spec.artifact.resolveEvery`, checked here too (an object stored before the rule).
pub fn parse_resolve_every(raw: &str) -> Result<Duration, ReconcileError> {
    crate::duration::parse_within(raw, RESOLVE_EVERY_MIN, RESOLVE_EVERY_MAX).map_err(|e| {
        ReconcileError::InvalidSpec {
            field: "spec.artifact.resolveEvery".into(),
            message: e.to_string(),
        }
    })
}

/// The tag state the status carries, if it is of `tag`.
pub fn previous_tag(sr: &ScanRequest, tag: &str) -> Option<TagState> {
    let artifact = sr.status.as_ref()?.artifact.as_ref()?;
    (artifact.tag.as_deref() == Some(tag)).then_some(())?;
    let failure = artifact
        .tag_digest
        .is_none()
        .then(|| {
            sr.status.as_ref()?.conditions.iter().find_map(|c| {
                (c.type_ == CONDITION_TAG_MISMATCH && c.status == "True").then(|| c.message.clone())
            })
        })
        .flatten();
    Some(TagState {
        tag: tag.to_owned(),
        digest: artifact.tag_digest.clone(),
        resolved_at: super::status::chrono_time(artifact.resolved_at.as_ref()?),
        failure,
    })
}

/// Whether the tag must be resolved now: never resolved (or another tag), the spec changed
/// since (registry, repository or credentials may differ), or `resolve_every` has passed.
pub fn needs_resolution(
    previous: Option<&TagState>,
    spec_changed: bool,
    resolve_every: Option<Duration>,
    now: DateTime<Utc>,
) -> bool {
    let Some(previous) = previous else {
        return true;
    };
    spec_changed || resolve_every.is_some_and(|every| due_in(previous, every, now).is_zero())
}

/// How long until the tag resolved in `state` is due again.
pub fn due_in(state: &TagState, every: Duration, now: DateTime<Utc>) -> Duration {
    let every = chrono::Duration::from_std(every).unwrap_or(chrono::Duration::MAX);
    match state.resolved_at.checked_add_signed(every) {
        Some(due) => (due - now).to_std().unwrap_or_default(),
        None => super::decide::MAX_REQUEUE,
    }
}

/// The informative conditions: a tag that points elsewhere than the digest scanned, and a
/// declared media type that is not what the registry serves.
pub fn notices(
    spec: &ScanRequestSpec,
    tag: Option<&TagState>,
    served: Option<ArtifactMimeType>,
) -> Vec<Notice> {
    let mut notices = Vec::new();
    if let (Some(digest), Some(tag)) = (spec.artifact.digest.as_deref(), tag) {
        let message = match (&tag.digest, &tag.failure) {
            (Some(points_to), _) if points_to != digest => Some(format!(
                "spec.artifact.tag {:?} points to {points_to} but spec.artifact.digest is {digest}; the digest is scanned. Update the tag or the digest so that they agree",
                tag.tag
            )),
            (None, Some(failure)) => Some(failure.clone()),
            _ => None,
        };
        if let Some(message) = message {
            notices.push(Notice {
                type_: CONDITION_TAG_MISMATCH,
                reason: if tag.digest.is_some() {
                    "TagPointsElsewhere"
                } else {
                    "TagNotResolved"
                },
                message,
            });
        }
    }
    if let (Some(declared), Some(served)) = (spec.artifact.mime_type, served)
        && declared != served
    {
        notices.push(Notice {
            type_: CONDITION_MEDIA_TYPE_MISMATCH,
            reason: "DeclaredMediaTypeDiffers",
            message: format!(
                "spec.artifact.mimeType is {:?} but the registry serves the artifact as {:?}, which is what is scanned; correct or remove spec.artifact.mimeType",
                declared.as_str(),
                served.as_str()
            ),
        });
    }
    notices
}

/// What one request's registry calls need.
pub struct Access<'a> {
    pub endpoint: &'a RegistryEndpoint,
    pub credentials: &'a RegistryCredentials,
    pub secret: Option<SecretVersion>,
}

/// Step 2b. With `--artifact-access=trust` no registry is called: a tag cannot be resolved
/// and an index cannot be read, so both stall unless a digest of an image manifest is given.
pub async fn resolve(
    sr: &ScanRequest,
    ctx: &Context,
    access: &Access<'_>,
    now: DateTime<Utc>,
) -> Result<Artifact, ReconcileError> {
    let spec = &sr.spec;
    let verify = ctx.config.artifact_access.requires_proof();
    let resolve_every = spec
        .artifact
        .resolve_every
        .as_deref()
        .map(parse_resolve_every)
        .transpose()?;
    let spec_changed =
        sr.status.as_ref().and_then(|s| s.observed_generation) != sr.metadata.generation;

    let tag = match spec.artifact.tag.as_deref() {
        None => None,
        Some(tag) => {
            let previous = previous_tag(sr, tag);
            if !needs_resolution(previous.as_ref(), spec_changed, resolve_every, now) {
                previous
            } else if verify {
                let resolved = crate::registry::resolve_tag(
                    access.endpoint,
                    &spec.artifact.repository,
                    tag,
                    access.credentials,
                    &ctx.access_options,
                )
                .await;
                match resolved {
                    Ok(digest) => {
                        announce_resolution(sr, ctx, tag, previous.as_ref(), &digest);
                        Some(TagState {
                            tag: tag.to_owned(),
                            digest: Some(digest),
                            resolved_at: now,
                            failure: None,
                        })
                    }
                    // Beside a given digest, the tag only informs: the digest is scanned.
                    Err(e) if !e.is_transient() && spec.artifact.digest.is_some() => {
                        Some(TagState {
                            tag: tag.to_owned(),
                            digest: None,
                            resolved_at: now,
                            failure: Some(format!(
                                "spec.artifact.tag {tag:?} could not be resolved ({e}); spec.artifact.digest {} is scanned",
                                spec.artifact.digest.as_deref().unwrap_or_default()
                            )),
                        })
                    }
                    Err(e) => return Err(ReconcileError::Access(e)),
                }
            } else if spec.artifact.digest.is_none() {
                return Err(ReconcileError::TagNeedsRegistry);
            } else {
                None
            }
        }
    };
    let raw_digest = match (
        &spec.artifact.digest,
        tag.as_ref().and_then(|t| t.digest.as_ref()),
    ) {
        (Some(digest), _) | (None, Some(digest)) => digest.clone(),
        (None, None) => return Err(ReconcileError::TagNeedsRegistry),
    };
    let digest = Digest::parse(&raw_digest).map_err(|e| ReconcileError::InvalidSpec {
        field: "spec.artifact.digest".into(),
        message: e.to_string(),
    })?;

    let (served, targets) = if verify {
        let (served, children) = inspect(sr, ctx, access, &digest).await?;
        (Some(served), children)
    } else {
        let declared = spec.artifact.mime_type.unwrap_or_default();
        if declared.is_index() {
            return Err(ReconcileError::IndexNeedsRegistry);
        }
        let single = Target {
            platform: None,
            digest: digest.clone(),
            media_type: declared,
        };
        (None, vec![single])
    };
    let notices = notices(spec, tag.as_ref(), served);
    let resolve_in = resolve_every
        .zip(tag.as_ref())
        .map(|(every, t)| due_in(t, every, now));
    Ok(Artifact {
        digest,
        served,
        tag,
        targets,
        notices,
        resolve_in,
    })
}

/// An Event whenever the tag's digest changes (the first resolution included).
fn announce_resolution(
    sr: &ScanRequest,
    ctx: &Context,
    tag: &str,
    previous: Option<&TagState>,
    digest: &str,
) {
    let before = previous.and_then(|p| p.digest.as_deref());
    // The tag too: another tag resolving to the same digest is news.
    let cached = before.map(|b| (tag, b));
    if !ctx
        .announced
        .is_news(sr, Topic::Tag, &(tag, digest), cached.as_ref())
    {
        return;
    }
    let (reason, note) = match before {
        Some(before) => (
            "TagMoved",
            format!("Tag {tag:?} moved from {before} to {digest}; scanning the new digest"),
        ),
        None => ("TagResolved", format!("Tag {tag:?} resolved to {digest}")),
    };
    ctx.event(sr, EventType::Normal, reason, digest, note);
}

/// The proof of access to `digest` and what it is: its media type, and the manifests to
/// scan (itself, or the chosen children of an index, each proven too). Proofs are cached per
/// namespace; what a digest's content is (immutable) is cached for every namespace, but used
/// only after the namespace's own proof of that digest.
async fn inspect(
    sr: &ScanRequest,
    ctx: &Context,
    access: &Access<'_>,
    digest: &Digest,
) -> Result<(ArtifactMimeType, Vec<Target>), ReconcileError> {
    let spec = &sr.spec;
    let repository = &spec.artifact.repository;
    let content_key = ContentKey::new(
        access.endpoint.host(),
        repository,
        digest.as_str(),
        &spec.platforms,
    );
    let top = proof_key(sr, access, digest.as_str());
    let known = ctx.content(&content_key);
    let content = match known {
        Some(known) if ctx.proven(&top, Instant::now()) => known,
        // A proof that expired is made again; what the digest is need not be read again.
        known => {
            let served = prove(sr, ctx, access, top, None).await?;
            let media_type = served_type(served.as_deref(), spec.artifact.mime_type, digest)?;
            match known.filter(|k| k.media_type == media_type) {
                Some(known) => known,
                None => {
                    let children = if media_type.is_index() {
                        read_index(ctx, access, repository, digest, &spec.platforms).await?
                    } else {
                        Vec::new()
                    };
                    let fresh = Arc::new(Content {
                        media_type,
                        children,
                    });
                    ctx.remember_content(content_key, fresh.clone());
                    fresh
                }
            }
        }
    };
    if !content.media_type.is_index() {
        let single = Target {
            platform: None,
            digest: digest.clone(),
            media_type: content.media_type,
        };
        return Ok((content.media_type, vec![single]));
    }
    let mut targets = Vec::with_capacity(content.children.len());
    for child in content.children.iter() {
        let child_digest =
            Digest::parse(&child.digest).map_err(|e| ReconcileError::InvalidSpec {
                field: "spec.artifact".into(),
                message: format!("the image index lists an invalid digest: {e}"),
            })?;
        let key = proof_key(sr, access, &child.digest);
        if !ctx.proven(&key, Instant::now()) {
            let served = prove(sr, ctx, access, key, Some(&child.platform)).await?;
            if let Some(t) = served
                .as_deref()
                .and_then(ArtifactMimeType::from_content_type)
                .filter(|t| t.is_index())
            {
                tracing::debug!(media_type = t.as_str(), "a child of the index is an index");
                return Err(ReconcileError::Index(index::IndexError::NestedIndex {
                    digest: digest.to_string(),
                    child: child.digest.clone(),
                    platform: child.platform.clone(),
                }));
            }
        }
        targets.push(Target {
            platform: Some(child.platform.clone()),
            digest: child_digest,
            media_type: child.media_type,
        });
    }
    Ok((content.media_type, targets))
}

/// The media type of the artifact: what the registry serves it as, or, when it sends no
/// `Content-Type`, what `spec.artifact.mimeType` declares.
fn served_type(
    served: Option<&str>,
    declared: Option<ArtifactMimeType>,
    digest: &Digest,
) -> Result<ArtifactMimeType, ReconcileError> {
    let found = match served {
        Some(content_type) => ArtifactMimeType::from_content_type(content_type),
        None => declared,
    };
    found.ok_or_else(|| ReconcileError::UnsupportedMediaType {
        digest: digest.to_string(),
        media_type: served.unwrap_or_default().chars().take(128).collect(),
    })
}

fn proof_key(sr: &ScanRequest, access: &Access<'_>, digest: &str) -> ProofKey {
    ProofKey {
        namespace: sr.namespace().unwrap_or_default(),
        registry: access.endpoint.host().to_owned(),
        repository: sr.spec.artifact.repository.clone(),
        digest: digest.to_owned(),
        secret: access.secret.clone(),
    }
}

/// `HEAD` of one digest with the request's credentials; records the proof. Returns the
/// `Content-Type` served.
async fn prove(
    sr: &ScanRequest,
    ctx: &Context,
    access: &Access<'_>,
    key: ProofKey,
    platform: Option<&str>,
) -> Result<Option<String>, ReconcileError> {
    let served = crate::registry::prove_access(
        access.endpoint,
        &sr.spec.artifact.repository,
        &key.digest,
        access.credentials,
        &ctx.access_options,
    )
    .await
    .map_err(ReconcileError::Access)?;
    tracing::debug!(registry = %key.registry, platform, "access to the artifact proven");
    ctx.record_proof(key, Instant::now());
    Ok(served)
}

/// Reads the index (at most `--max-index-size` bytes, digest verified) and chooses its
/// children.
async fn read_index(
    ctx: &Context,
    access: &Access<'_>,
    repository: &str,
    digest: &Digest,
    platforms: &[String],
) -> Result<Vec<index::Child>, ReconcileError> {
    let options = AccessOptions {
        max_manifest_bytes: ctx.config.max_index_size,
        ..ctx.access_options.clone()
    };
    let fetched = crate::registry::fetch_manifest(
        access.endpoint,
        repository,
        digest.as_str(),
        access.credentials,
        &options,
    )
    .await
    .map_err(ReconcileError::Access)?;
    index::select(
        digest.as_str(),
        &fetched.body,
        platforms,
        usize::from(ctx.config.max_platforms),
    )
    .map_err(ReconcileError::Index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::decide::tests::{at, fixture};

    fn state(digest: &str, resolved_at: DateTime<Utc>) -> TagState {
        TagState {
            tag: "1.27".into(),
            digest: Some(digest.into()),
            resolved_at,
            failure: None,
        }
    }

    #[test]
    fn a_tag_is_resolved_once_unless_resolve_every_is_set() {
        let t = state("sha256:aa", at(0));
        assert!(needs_resolution(None, false, None, at(0)));
        assert!(!needs_resolution(Some(&t), false, None, at(1_000_000)));
        let hour = Duration::from_secs(3600);
        assert!(!needs_resolution(Some(&t), false, Some(hour), at(3599)));
        assert!(needs_resolution(Some(&t), false, Some(hour), at(3600)));
        assert_eq!(due_in(&t, hour, at(600)), Duration::from_secs(3000));
    }

    #[test]
    fn a_changed_spec_resolves_the_tag_again() {
        let t = state("sha256:aa", at(0));
        assert!(needs_resolution(Some(&t), true, None, at(1)));
    }

    #[test]
    fn a_far_resolve_every_never_overflows() {
        let t = state("sha256:aa", at(0));
        assert!(!needs_resolution(
            Some(&t),
            false,
            Some(Duration::MAX),
            at(10)
        ));
        assert!(due_in(&t, Duration::MAX, at(10)) > Duration::from_secs(3600));
    }

    #[test]
    fn the_status_tag_state_is_only_reused_for_the_same_tag() {
        let sr = fixture("tag-resolved.yaml");
        let previous = previous_tag(&sr, "1.27").expect("the status has it");
        assert_eq!(previous.digest, Some(format!("sha256:{}", "1".repeat(64))));
        assert!(
            previous_tag(&sr, "1.28").is_none(),
            "another tag resolves anew"
        );
    }

    #[test]
    fn a_tag_pointing_elsewhere_than_the_digest_is_a_notice_naming_both() {
        let mut sr = fixture("tag-resolved.yaml");
        let digest = format!("sha256:{}", "2".repeat(64));
        sr.spec.artifact.digest = Some(digest.clone());
        let tag = previous_tag(&sr, "1.27");
        let found = notices(&sr.spec, tag.as_ref(), None);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].type_, CONDITION_TAG_MISMATCH);
        assert!(found[0].message.contains(&digest), "{}", found[0].message);
        // Agreeing tag and digest: no notice.
        sr.spec.artifact.digest = Some(format!("sha256:{}", "1".repeat(64)));
        assert!(notices(&sr.spec, tag.as_ref(), None).is_empty());
    }

    #[test]
    fn a_tag_that_cannot_be_resolved_beside_a_digest_informs_and_does_not_stall() {
        let mut sr = fixture("tag-resolved.yaml");
        sr.spec.artifact.digest = Some(format!("sha256:{}", "2".repeat(64)));
        let failed = TagState {
            tag: "1.27".into(),
            digest: None,
            resolved_at: at(0),
            failure: Some("spec.artifact.tag \"1.27\" could not be resolved (the registry has no manifest 1.27)".into()),
        };
        let found = notices(&sr.spec, Some(&failed), None);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].reason, "TagNotResolved");
        assert!(
            found[0].message.contains("no manifest"),
            "{}",
            found[0].message
        );
    }

    #[test]
    fn a_declared_media_type_the_registry_contradicts_is_a_notice() {
        let mut sr = fixture("tag-resolved.yaml");
        sr.spec.artifact.mime_type = Some(ArtifactMimeType::OciImageManifest);
        let found = notices(&sr.spec, None, Some(ArtifactMimeType::OciImageIndex));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].type_, CONDITION_MEDIA_TYPE_MISMATCH);
        assert!(
            found[0].message.contains("image.index"),
            "{}",
            found[0].message
        );
        // Undeclared: nothing to contradict.
        sr.spec.artifact.mime_type = None;
        assert!(notices(&sr.spec, None, Some(ArtifactMimeType::OciImageIndex)).is_empty());
    }
}
