//! Contract tests of the scanner adapter client and the development adapter.
//!
//! Every request the client sends and every answer the development adapter gives is recorded by
//! a small proxy and validated against the OpenAPI documents of the specification (v1.2, and
//! v1.1/v1.0 for the MIME types they declare), loaded from `tests/fixtures/harbor-scanner-adapter`.
//! A canned server then plays each status code of the specification to check how the client
//! classifies it.
//!
//! One module per section: [`spec`] (the OpenAPI documents), [`proxy`] (the recording proxy),
//! [`helpers`], [`conformance`], [`canned`] (one answer per status code), [`faults`] (faults,
//! authentication, TLS, caching and the adapter's own controls).

mod canned;
mod conformance;
mod faults;
mod helpers;
mod proxy;
mod spec;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::{Value, json};

use devscanner::{
    self, DevAuth, DevScanner, DevScannerConfig, DevScannerHandle, DevSpec, DevTls, Endpoint,
    FaultKind, FaultRule,
};
use scanreport_operator::api::{ScannerAuth, ScannerAuthType};
use scanreport_operator::controller::credentials::adapter_credentials;
use scanreport_operator::identity::{Digest, MimeType};
use scanreport_operator::scanner::wire::mime;
use scanreport_operator::scanner::{
    AdapterClient, AdapterCredentials, AdapterMetadata, ApiLevel, ClientOptions, MetadataCache,
    RegistryAuthorization, Report, ReportPoll, ScanHandle, ScanSubmission, ScannerError,
};

pub(crate) const REPORT_TYPES: [&str; 4] = [
    mime::VULN_REPORT_1_1,
    mime::HARBOR_VULN_REPORT_1_0,
    mime::RAW_VULN_REPORT,
    mime::SBOM_REPORT_1_0,
];

use helpers::*;
use proxy::*;
use spec::*;
