//! What a development adapter serves: specification version, authentication, TLS, latency,
//! and the faults to inject per endpoint.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::*;

/// How the adapter expects clients to authenticate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum DevAuth {
    #[default]
    None,
    Basic {
        username: String,
        password: String,
    },
    Bearer {
        token: String,
    },
    ApiKey {
        header: String,
        key: String,
    },
}

/// A PEM certificate chain and private key to serve HTTPS with.
#[derive(Clone, Debug)]
pub struct DevTls {
    pub cert_chain_pem: String,
    pub key_pem: String,
}

/// Which specification version the adapter implements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DevSpec {
    /// v1.1: metadata 1.0 without capability types, scan request 1.0, vulnerability reports.
    #[value(name = "1.1")]
    V1_1,
    /// v1.2: metadata 1.1, typed capabilities including SBOM, scan request 1.0 and 1.1.
    #[default]
    #[value(name = "1.2")]
    V1_2,
}

/// An API endpoint of the adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    Metadata,
    Scan,
    Report,
}

impl Endpoint {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Metadata => "metadata",
            Self::Scan => "scan",
            Self::Report => "report",
        }
    }
}

/// A failure to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum FaultKind {
    /// Answer this 5xx status with an error body.
    ServerError { status: u16 },
    /// Wait for the configured hang time, then answer normally.
    Hang,
    /// Answer the success status and Content-Type with a truncated JSON body.
    MalformedJson,
    /// Answer the success status and Content-Type with a body of the configured oversize
    /// length (valid JSON, streamed without Content-Length).
    Oversized,
    /// Report endpoint only: forget the scan and answer 404, as after an adapter restart.
    LoseScan,
    /// A hostile or careless adapter: answer this status (400..=599) with an error message that
    /// echoes the registry URL, repository and `registry.authorization` of the scan request
    /// (the one of this call on the scan endpoint, the last one elsewhere), the Basic form
    /// decoded into its username and password.
    EchoCredentials { status: u16 },
}

/// A fault for the next `count` requests of an endpoint (every request when `count` is absent).
///
/// Command-line form: `ENDPOINT:FAULT[:COUNT]`, with ENDPOINT `metadata`, `scan` or `report` and
/// FAULT a status 500..=599, `hang`, `malformed`, `oversized`, `lost` or `echo`; e.g. `report:503:2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRule {
    pub endpoint: Endpoint,
    #[serde(flatten)]
    pub kind: FaultKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
}

impl FaultRule {
    pub fn new(endpoint: Endpoint, kind: FaultKind, count: Option<u32>) -> Self {
        Self {
            endpoint,
            kind,
            count,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), DevScannerError> {
        let invalid = |reason: &str| DevScannerError::InvalidFault {
            reason: reason.to_owned(),
        };
        match self.kind {
            FaultKind::ServerError { status } if !(500..=599).contains(&status) => {
                return Err(invalid("a server error status must be 500..=599"));
            }
            FaultKind::EchoCredentials { status } if !(400..=599).contains(&status) => {
                return Err(invalid("an echo status must be 400..=599"));
            }
            FaultKind::LoseScan if self.endpoint != Endpoint::Report => {
                return Err(invalid("`lost` applies to the report endpoint only"));
            }
            _ => {}
        }
        if self.count == Some(0) {
            return Err(invalid("the count must be at least 1"));
        }
        Ok(())
    }
}

impl FromStr for FaultRule {
    type Err = DevScannerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: String| DevScannerError::InvalidFault { reason };
        let mut parts = s.trim().split(':');
        let endpoint = match parts.next().unwrap_or_default() {
            "metadata" => Endpoint::Metadata,
            "scan" => Endpoint::Scan,
            "report" => Endpoint::Report,
            other => {
                return Err(invalid(format!(
                    "unknown endpoint {other:?} in {s:?}; expected metadata, scan or report"
                )));
            }
        };
        let kind = match parts.next().unwrap_or_default() {
            "hang" => FaultKind::Hang,
            "malformed" => FaultKind::MalformedJson,
            "oversized" => FaultKind::Oversized,
            "lost" => FaultKind::LoseScan,
            "echo" => FaultKind::EchoCredentials { status: 400 },
            other => match other.parse::<u16>() {
                Ok(status) => FaultKind::ServerError { status },
                Err(_) => {
                    return Err(invalid(format!(
                        "unknown fault {other:?} in {s:?}; expected a 5xx status, hang, malformed, oversized, lost or echo"
                    )));
                }
            },
        };
        let count = match parts.next() {
            None => None,
            Some(n) => Some(
                n.parse::<u32>()
                    .map_err(|_| invalid(format!("invalid count {n:?} in {s:?}")))?,
            ),
        };
        if parts.next().is_some() {
            return Err(invalid(format!(
                "too many parts in {s:?}; expected ENDPOINT:FAULT[:COUNT]"
            )));
        }
        let rule = Self::new(endpoint, kind, count);
        rule.validate()?;
        Ok(rule)
    }
}

/// Configuration of a development adapter.
#[derive(Clone, Debug)]
pub struct DevScannerConfig {
    pub listen: SocketAddr,
    pub spec: DevSpec,
    /// Polls answered 302 before the report is ready, per scan.
    pub pending_polls: u32,
    /// `Refresh-After` of those 302 answers, in seconds.
    pub refresh_after_secs: u64,
    pub auth: DevAuth,
    pub tls: Option<DevTls>,
    /// How long a `hang` fault waits.
    pub hang_for: Duration,
    /// Body length of an `oversized` fault.
    pub oversize_bytes: u64,
    pub faults: Vec<FaultRule>,
}

impl Default for DevScannerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            spec: DevSpec::V1_2,
            pending_polls: 1,
            refresh_after_secs: 1,
            auth: DevAuth::None,
            tls: None,
            hang_for: Duration::from_secs(30),
            oversize_bytes: 65 * 1024 * 1024,
            faults: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fault_rules_parse() {
        assert_eq!(
            "report:503:2".parse::<FaultRule>().unwrap(),
            FaultRule::new(
                Endpoint::Report,
                FaultKind::ServerError { status: 503 },
                Some(2)
            )
        );
        assert_eq!(
            "scan:hang".parse::<FaultRule>().unwrap(),
            FaultRule::new(Endpoint::Scan, FaultKind::Hang, None)
        );
        assert_eq!(
            "report:lost:1".parse::<FaultRule>().unwrap().kind,
            FaultKind::LoseScan
        );
        for bad in [
            "",
            "scan",
            "scan:404",
            "metadata:lost",
            "x:500",
            "report:500:0",
            "report:hang:1:2",
            "report:hang:x",
        ] {
            assert!(bad.parse::<FaultRule>().is_err(), "{bad}");
        }
        let json = serde_json::to_value(FaultRule::new(
            Endpoint::Metadata,
            FaultKind::ServerError { status: 500 },
            Some(1),
        ))
        .unwrap();
        assert_eq!(
            json,
            json!({"endpoint": "metadata", "fault": "server_error", "status": 500, "count": 1})
        );
        let back: FaultRule = serde_json::from_value(json).unwrap();
        assert_eq!(back.count, Some(1));
    }
}
