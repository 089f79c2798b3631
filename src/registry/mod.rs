//! Registry access for tenant isolation: before a ScanRequest may see or share a report, the
//! operator proves that the request's own registry, with the request's own credentials, serves
//! the artifact (see docs/security.md).
//!
//! * [`credentials`]: registry credentials from a Kubernetes Secret of an accepted type,
//!   matched to the registry host; held in [`secrecy`] types.
//! * [`access`]: the proof (`HEAD /v2/<repository>/manifests/<digest>`), tag resolution and a
//!   size-bounded manifest fetch, through the Basic and Bearer-token challenge flows.
//! * [`cache`]: successful proofs, bounded in size and time.
//! * [`index`]: which child manifests of an image index a request scans (pure).
//! * [`content`]: what a digest's content is, bounded in size.
//!
//! [`ArtifactAccess`] is the `--artifact-access` mode that decides whether proofs are made.

pub mod access;
pub mod cache;
pub mod content;
pub mod credentials;
pub mod index;

pub use access::{
    AccessError, AccessOptions, FetchedManifest, RegistryEndpoint, fetch_manifest, prove_access,
    resolve_tag,
};
pub use cache::{ProofCache, ProofKey};
pub use credentials::{CredentialsError, RegistryCredentials};

/// `--artifact-access`: whether a request must prove access to its artifact before it may use a
/// stored report, join a scan in flight or start one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ArtifactAccess {
    /// Prove access with the request's own registry and credentials (multi-tenant clusters).
    #[default]
    Verify,
    /// Trust every request: any namespace may read the report of any digest it names. Only for
    /// single-tenant clusters whose operator cannot reach the registries.
    Trust,
}

impl ArtifactAccess {
    /// Whether a proof of access is required before a report is shown or shared.
    pub fn requires_proof(self) -> bool {
        matches!(self, Self::Verify)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn artifact_access_defaults_to_verify_and_parses_both_modes() {
        assert_eq!(ArtifactAccess::default(), ArtifactAccess::Verify);
        assert!(ArtifactAccess::default().requires_proof());
        assert_eq!(
            ArtifactAccess::from_str("trust", false),
            Ok(ArtifactAccess::Trust)
        );
        assert!(!ArtifactAccess::Trust.requires_proof());
        assert_eq!(
            ArtifactAccess::from_str("verify", false),
            Ok(ArtifactAccess::Verify)
        );
        assert!(ArtifactAccess::from_str("none", false).is_err());
    }
}
