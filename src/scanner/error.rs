//! Errors of the scanner adapter client, classified for the controller.
//!
//! [`ScannerError::is_transient`] says whether retrying the same call with backoff can succeed
//! without anyone changing anything (adapter down, overloaded or slow). Everything else is
//! permanent: the object should stall with the message until a person acts. Each variant is a
//! failure a user must tell apart, and each message says what to do.
//!
//! Malformed and oversized answers are permanent: the adapter sent a complete response with a
//! success status, and the next request for the same scan returns the same stored data. Retrying
//! would download up to the size cap again and again; a stalled object with a clear message
//! gets a person to fix the adapter or raise the cap, and `rescanToken` forces a new attempt.

use std::fmt;
use std::time::Duration;

/// The adapter API operation that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    Metadata,
    SubmitScan,
    FetchReport,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Metadata => "GET /api/v1/metadata",
            Self::SubmitScan => "POST /api/v1/scan",
            Self::FetchReport => "GET /api/v1/scan/{id}/report",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScannerError {
    // Configuration of the Scanner: permanent.
    #[error(
        "invalid scanner adapter URL {url:?}: {reason}; set spec.url to the adapter's http(s) base URL, such as https://trivy-adapter.trivy:8443"
    )]
    InvalidUrl { url: String, reason: String },
    #[error("invalid spec.caBundle: {reason}; it must hold one or more PEM `CERTIFICATE` blocks")]
    InvalidCaBundle { reason: String },
    #[error("cannot set up the HTTP client for {url}: {detail}")]
    ClientSetup { url: String, detail: String },
    #[error(
        "TLS with the scanner adapter at {url} failed: {detail}; check that the adapter serves HTTPS at this URL and that spec.caBundle holds the CA that signed its certificate"
    )]
    Tls { url: String, detail: String },
    #[error(
        "the scanner adapter at {url} rejected the credentials ({operation} answered HTTP {status}); check spec.auth and the keys of its Secret"
    )]
    Unauthorized {
        url: String,
        operation: Operation,
        status: u16,
    },

    // What the adapter can do: permanent.
    #[error(
        "the scanner adapter does not offer report MIME type {mime_type} (it produces: {offered}); request one of those in the ScanRequest's reportMimeTypes"
    )]
    ReportMimeTypeNotOffered { mime_type: String, offered: String },
    #[error(
        "the scanner adapter cannot scan artifacts of MIME type {mime_type} for reports of {report_mime_type} (it consumes: {consumed})"
    )]
    ArtifactMimeTypeNotConsumed {
        mime_type: String,
        report_mime_type: String,
        consumed: String,
    },
    #[error(
        "the scanner adapter has no capability to handle this request ({operation} answered HTTP 501): {message}; request a report MIME type the Scanner's status.adapter.capabilities lists"
    )]
    Unsupported {
        operation: Operation,
        message: String,
    },

    // The request: permanent.
    #[error(
        "the scanner adapter rejected the request as invalid ({operation} answered HTTP {status}): {message}; check the ScanRequest's registry, artifact and report MIME types"
    )]
    InvalidRequest {
        operation: Operation,
        status: u16,
        message: String,
    },

    // The adapter's answer does not follow the specification: permanent.
    #[error(
        "{operation} answered HTTP {status}, which the scanner adapter API does not define here{}; check that spec.url points at a scanner adapter",
        message_suffix(message)
    )]
    UnexpectedStatus {
        operation: Operation,
        status: u16,
        message: String,
    },
    #[error(
        "{operation} answered Content-Type {received:?} where the scanner adapter API requires {expected}; the adapter does not follow the specification, or spec.url points elsewhere"
    )]
    UnexpectedContentType {
        operation: Operation,
        expected: String,
        received: String,
    },
    #[error(
        "{operation} answered malformed data: {reason}; the adapter does not follow the specification (set a new rescanToken to retry after fixing it)"
    )]
    MalformedResponse {
        operation: Operation,
        reason: String,
    },
    #[error(
        "{operation} answered more than {limit} bytes, the response size limit; raise the limit or check the adapter (set a new rescanToken to retry)"
    )]
    ResponseTooLarge { operation: Operation, limit: u64 },

    // Transient: retry with backoff.
    #[error(
        "cannot connect to the scanner adapter at {url}: {detail}; check that the adapter is running and reachable (retrying)"
    )]
    Connect { url: String, detail: String },
    #[error(
        "{operation} timed out after {timeout:?}; the adapter is slow or unreachable, raise spec.requestTimeout if it is just slow (retrying)"
    )]
    Timeout {
        operation: Operation,
        timeout: Duration,
    },
    #[error(
        "the scanner adapter failed ({operation} answered HTTP {status}){} (retrying)",
        message_suffix(message)
    )]
    Server {
        operation: Operation,
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("the scanner adapter is rate limiting ({operation} answered HTTP 429) (retrying)")]
    RateLimited {
        operation: Operation,
        retry_after: Option<Duration>,
    },
    #[error("{operation} failed while transferring data: {detail} (retrying)")]
    Transport {
        operation: Operation,
        detail: String,
    },
}

fn message_suffix(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

impl ScannerError {
    /// `true` when retrying the same call with backoff can succeed without a change by anyone:
    /// connection failures, timeouts, 5xx other than 501, 429 and interrupted transfers.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. }
                | Self::Timeout { .. }
                | Self::Server { .. }
                | Self::RateLimited { .. }
                | Self::Transport { .. }
        )
    }

    /// The adapter's `Retry-After`, when it sent one with a 429 or 5xx.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Server { retry_after, .. } | Self::RateLimited { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// A short machine-readable reason, for condition reasons and metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidUrl { .. } => "InvalidURL",
            Self::InvalidCaBundle { .. } => "InvalidCABundle",
            Self::ClientSetup { .. } => "ClientSetup",
            Self::Tls { .. } => "TLSError",
            Self::Unauthorized { .. } => "Unauthorized",
            Self::ReportMimeTypeNotOffered { .. } => "ReportMimeTypeNotOffered",
            Self::ArtifactMimeTypeNotConsumed { .. } => "ArtifactMimeTypeNotConsumed",
            Self::Unsupported { .. } => "Unsupported",
            Self::InvalidRequest { .. } => "InvalidRequest",
            Self::UnexpectedStatus { .. } => "UnexpectedStatus",
            Self::UnexpectedContentType { .. } => "UnexpectedContentType",
            Self::MalformedResponse { .. } => "MalformedResponse",
            Self::ResponseTooLarge { .. } => "ResponseTooLarge",
            Self::Connect { .. } => "ConnectError",
            Self::Timeout { .. } => "Timeout",
            Self::Server { .. } => "AdapterError",
            Self::RateLimited { .. } => "RateLimited",
            Self::Transport { .. } => "TransportError",
        }
    }
}
