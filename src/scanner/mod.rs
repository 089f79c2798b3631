//! Client of the Harbor Pluggable Scanner Adapter API (specification v1.0, v1.1 and v1.2).
//!
//! * [`wire`]: the specification's JSON bodies and MIME types.
//! * [`client`]: [`AdapterClient`] (metadata, scan submission, report polling).
//! * [`metadata`]: [`AdapterMetadata`], the capability a report targets, the scan request
//!   built from it, and the [`MetadataCache`].
//! * [`tls`]: the client's rustls configuration and TLS failure classification.
//! * [`redact`]: secrets scrubbed from adapter messages, user information from URLs.
//! * [`auth`]: adapter and registry credentials as the client holds them, wrapped so that they
//!   never print (the controller reads them from Secrets).
//! * [`summary`]: severity counts of vulnerability reports.
//! * [`error`]: [`ScannerError`], classified transient or permanent for the controller.
//!
//! The client needs no Kubernetes access: callers resolve Secrets and pass credentials in, and
//! the controller turns metadata into a Scanner's status.
//! See `docs/scanner.md` for how the client speaks the specification.

pub mod auth;
pub mod client;
pub mod error;
pub mod metadata;
pub mod redact;
pub mod summary;
pub mod tls;
pub mod wire;

pub use auth::{AdapterCredentials, RegistryAuthorization, Secret};
pub use client::{AdapterClient, ClientOptions, Report, ReportPoll, ScanHandle, ScanSubmission};
pub use error::{Operation, ScannerError};
pub use metadata::{AdapterMetadata, ApiLevel, Capability, CapabilityKind, MetadataCache};
pub use summary::severity_summary;
