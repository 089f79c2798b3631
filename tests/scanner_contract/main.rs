//! Contract tests of the scanner adapter client and the development adapter.
//!
//! Every request the client sends and every answer the development adapter gives is recorded by
//! a small proxy and validated against the OpenAPI documents of the specification (v1.2, and
//! v1.1/v1.0 for the MIME types they declare), loaded from `tests/fixtures/harbor-scanner-adapter`.
//! A canned server then plays each status code of the specification to check how the client
//! classifies it.

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
use scanreport_operator::identity::{Digest, MimeType};
use scanreport_operator::scanner::wire::mime;
use scanreport_operator::scanner::{
    AdapterClient, AdapterCredentials, AdapterMetadata, ApiLevel, ClientOptions, MetadataCache,
    RegistryAuthorization, Report, ReportPoll, ScanHandle, ScanSubmission, ScannerError,
    adapter_credentials,
};

const REPORT_TYPES: [&str; 4] = [
    mime::VULN_REPORT_1_1,
    mime::HARBOR_VULN_REPORT_1_0,
    mime::RAW_VULN_REPORT,
    mime::SBOM_REPORT_1_0,
];

// ---------------------------------------------------------------------------------------------
// The specification.

struct Spec {
    version: &'static str,
    doc: Value,
}

fn yaml_to_json(v: serde_yaml::Value) -> Value {
    match v {
        serde_yaml::Value::Null => Value::Null,
        serde_yaml::Value::Bool(b) => Value::Bool(b),
        serde_yaml::Value::Number(n) => serde_json::to_value(&n).unwrap(),
        serde_yaml::Value::String(s) => Value::String(s),
        serde_yaml::Value::Sequence(items) => items.into_iter().map(yaml_to_json).collect(),
        serde_yaml::Value::Mapping(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    // Status codes are integer keys in YAML.
                    let key = match k {
                        serde_yaml::Value::String(s) => s,
                        serde_yaml::Value::Number(n) => n.to_string(),
                        serde_yaml::Value::Bool(b) => b.to_string(),
                        other => panic!("unexpected YAML key {other:?}"),
                    };
                    (key, yaml_to_json(v))
                })
                .collect(),
        ),
        serde_yaml::Value::Tagged(t) => yaml_to_json(t.value),
    }
}

fn load_spec(version: &'static str) -> Spec {
    let path = format!(
        "{}/tests/fixtures/harbor-scanner-adapter/scanner-adapter-openapi-v{version}.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let doc = yaml_to_json(serde_yaml::from_str(&text).unwrap());
    assert_eq!(doc["info"]["version"], version, "{path}");
    Spec { version, doc }
}

fn specs() -> Vec<Spec> {
    vec![load_spec("1.2"), load_spec("1.1"), load_spec("1.0")]
}

/// Inlines `$ref: '#/components/schemas/X'` and turns OpenAPI 3.0's `nullable: true` into a
/// JSON Schema `anyOf` with null.
fn resolve(doc: &Value, schema: &Value, depth: usize) -> Value {
    assert!(depth < 32, "reference cycle");
    match schema {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                let name = r
                    .strip_prefix("#/components/schemas/")
                    .unwrap_or_else(|| panic!("unsupported $ref {r}"));
                let target = &doc["components"]["schemas"][name];
                assert!(!target.is_null(), "missing schema {name}");
                return resolve(doc, target, depth + 1);
            }
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                if k == "nullable" || k == "example" {
                    continue;
                }
                out.insert(k.clone(), resolve(doc, v, depth + 1));
            }
            let out = Value::Object(out);
            if map.get("nullable") == Some(&Value::Bool(true)) {
                json!({"anyOf": [out, {"type": "null"}]})
            } else {
                out
            }
        }
        Value::Array(items) => items.iter().map(|i| resolve(doc, i, depth + 1)).collect(),
        other => other.clone(),
    }
}

fn validate(schema: &Value, instance: &Value) -> Result<(), String> {
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .should_validate_formats(true)
        .build(schema)
        .map_err(|e| format!("bad schema: {e}"))?;
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

fn canonical(m: &str) -> String {
    MimeType::parse(m)
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|_| m.to_owned())
}

/// The content entry of `content` whose key is `content_type`, canonically.
fn content_entry<'a>(content: &'a Value, content_type: &str) -> Option<&'a Value> {
    content
        .as_object()?
        .iter()
        .find(|(k, _)| canonical(k) == canonical(content_type))
        .map(|(_, v)| v)
}

/// The instance to validate: the body as JSON, or as a JSON string for `type: string` schemas
/// (the raw report).
fn instance(schema: &Value, body: &[u8]) -> Result<Value, String> {
    if schema["type"] == "string" {
        return String::from_utf8(body.to_vec())
            .map(Value::String)
            .map_err(|_| "body is not UTF-8".into());
    }
    serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Recording proxy.

#[derive(Clone, Debug)]
struct Exchange {
    method: String,
    path: String,
    query: Option<String>,
    req_headers: HeaderMap,
    req_body: Bytes,
    status: u16,
    resp_headers: HeaderMap,
    resp_body: Bytes,
}

#[derive(Clone)]
struct Recorder {
    upstream: String,
    http: reqwest::Client,
    log: Arc<Mutex<Vec<Exchange>>>,
}

/// A reqwest client for test plumbing: ring provider, no redirects.
fn plain_http() -> reqwest::Client {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn forward(State(r): State<Recorder>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let req_body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut out = r.http.request(
        parts.method.clone(),
        format!("{}{path_and_query}", r.upstream),
    );
    for (k, v) in &parts.headers {
        if !matches!(k.as_str(), "host" | "content-length" | "connection") {
            out = out.header(k, v);
        }
    }
    let resp = out.body(req_body.clone()).send().await.unwrap();
    let status = resp.status();
    let resp_headers = resp.headers().clone();
    let resp_body = resp.bytes().await.unwrap();
    r.log.lock().unwrap().push(Exchange {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        req_headers: parts.headers.clone(),
        req_body,
        status: status.as_u16(),
        resp_headers: resp_headers.clone(),
        resp_body: resp_body.clone(),
    });
    let mut response = (status, resp_body).into_response();
    for (k, v) in &resp_headers {
        if !matches!(
            k.as_str(),
            "content-length" | "transfer-encoding" | "connection"
        ) {
            response.headers_mut().insert(k, v.clone());
        }
    }
    response
}

struct Served {
    base: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(app: Router) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Served { base, task }
}

async fn recorder(upstream: &str) -> (Served, Arc<Mutex<Vec<Exchange>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let state = Recorder {
        upstream: upstream.to_owned(),
        http: plain_http(),
        log: log.clone(),
    };
    let app = Router::new().fallback(forward).with_state(state);
    (serve(app).await, log)
}

/// Validates one exchange against every specification version that declares it; returns the
/// versions the response was validated against. Panics with the reason when it does not conform.
fn check_exchange(specs: &[Spec], ex: &Exchange) -> BTreeSet<&'static str> {
    let what = format!("{} {} -> {}", ex.method, ex.path, ex.status);
    let rest = ex
        .path
        .strip_prefix("/api/v1")
        .unwrap_or_else(|| panic!("{what}: not under /api/v1"));
    let template = if rest.starts_with("/scan/") && rest.ends_with("/report") {
        "/scan/{scan_request_id}/report"
    } else {
        rest
    };
    let method = ex.method.to_lowercase();
    let header = |h: &HeaderMap, name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };

    // The request.
    let v12 = &specs[0];
    assert_eq!(v12.version, "1.2");
    let op12 = &v12.doc["paths"][template][&method];
    assert!(
        op12.is_object(),
        "{what}: operation not in the specification"
    );
    match (template, method.as_str()) {
        ("/scan", "post") => {
            let ct = header(&ex.req_headers, CONTENT_TYPE.as_str());
            let mut validated = 0;
            for spec in specs {
                let content = &spec.doc["paths"]["/scan"]["post"]["requestBody"]["content"];
                if let Some(entry) = content_entry(content, &ct) {
                    let schema = resolve(&spec.doc, &entry["schema"], 0);
                    let checked =
                        instance(&schema, &ex.req_body).and_then(|body| validate(&schema, &body));
                    if let Err(e) = checked {
                        // Only requests the adapter accepted must conform: some tests send
                        // invalid ones on purpose.
                        assert!(
                            ex.status >= 400,
                            "{what}: request does not conform to v{}: {e}",
                            spec.version
                        );
                    }
                    validated += 1;
                }
            }
            if ex.status < 400 {
                assert!(
                    validated > 0,
                    "{what}: request Content-Type {ct:?} not declared"
                );
            }
        }
        ("/metadata", "get") => {
            let accept = header(&ex.req_headers, ACCEPT.as_str());
            let declared = &op12["responses"]["200"]["content"];
            for item in accept.split(',') {
                assert!(
                    content_entry(declared, item.trim()).is_some(),
                    "{what}: Accept {item:?} is not a declared metadata type"
                );
            }
        }
        ("/scan/{scan_request_id}/report", "get") => {
            if ex.status < 400 {
                let accept = header(&ex.req_headers, ACCEPT.as_str());
                assert!(
                    content_entry(&op12["responses"]["200"]["content"], &accept).is_some(),
                    "{what}: Accept {accept:?} is not a declared report type"
                );
            }
            if let Some(q) = &ex.query {
                let params = op12["parameters"].as_array().unwrap();
                let sbom = params
                    .iter()
                    .find(|p| p["name"] == "sbom_media_type")
                    .unwrap();
                let allowed: Vec<&str> = sbom["enum"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap())
                    .collect();
                let url = reqwest::Url::parse(&format!("http://x/?{q}")).unwrap();
                for (k, v) in url.query_pairs() {
                    if k == "sbom_media_type" && ex.status < 400 {
                        assert!(allowed.contains(&v.as_ref()), "{what}: {v}");
                    }
                }
            }
        }
        _ => panic!("{what}: unexpected operation"),
    }

    // The response.
    let mut validated = BTreeSet::new();
    let ct = header(&ex.resp_headers, CONTENT_TYPE.as_str());
    for spec in specs {
        let op = &spec.doc["paths"][template][&method];
        let declared = &op["responses"][ex.status.to_string()];
        if !declared.is_object() {
            continue;
        }
        match declared.get("content") {
            None => {
                assert!(
                    ex.resp_body.is_empty(),
                    "{what}: body where v{} declares none",
                    spec.version
                );
                if let Some(headers) = declared.get("headers").and_then(Value::as_object) {
                    for (name, h) in headers {
                        let value = header(&ex.resp_headers, name.as_str());
                        if h["schema"]["type"] == "integer" {
                            assert!(
                                value.parse::<u64>().is_ok(),
                                "{what}: header {name} {value:?}"
                            );
                        }
                    }
                }
                validated.insert(spec.version);
            }
            Some(content) => {
                let Some(entry) = content_entry(content, &ct) else {
                    continue;
                };
                let schema = resolve(&spec.doc, &entry["schema"], 0);
                let body =
                    instance(&schema, &ex.resp_body).unwrap_or_else(|e| panic!("{what}: {e}"));
                validate(&schema, &body).unwrap_or_else(|e| {
                    panic!(
                        "{what}: response does not conform to v{}: {e}",
                        spec.version
                    )
                });
                validated.insert(spec.version);
            }
        }
    }
    if ex.status == 401 {
        // The specification declares Basic and Bearer security but no 401 body; ours is an
        // ErrorResponse.
        let schema = resolve(
            &v12.doc,
            &json!({"$ref": "#/components/schemas/ErrorResponse"}),
            0,
        );
        validate(&schema, &serde_json::from_slice(&ex.resp_body).unwrap()).unwrap();
        assert_eq!(canonical(&ct), canonical(mime::ERROR_1_0));
        return validated;
    }
    assert!(
        validated.contains("1.2"),
        "{what}: response (Content-Type {ct:?}) is not declared by v1.2"
    );
    validated
}

// ---------------------------------------------------------------------------------------------
// Helpers.

async fn json_of<T: serde::de::DeserializeOwned>(resp: reqwest::Response) -> T {
    serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap()
}

fn digest(n: u8) -> Digest {
    Digest::parse(&format!("sha256:{}", format!("{n:02x}").repeat(32))).unwrap()
}

fn submission(digest: &Digest, report: &str) -> ScanSubmission {
    ScanSubmission {
        registry_url: "https://core.harbor.domain".into(),
        registry_authorization: Some(RegistryAuthorization::basic("robot$ci", "s3cr3t-pw")),
        repository: "library/nginx".into(),
        digest: digest.clone(),
        tag: Some("1.25".into()),
        artifact_mime_type: mime::OCI_IMAGE_MANIFEST.into(),
        report_mime_type: MimeType::parse(report).unwrap(),
    }
}

fn client(base: &str) -> AdapterClient {
    AdapterClient::new(
        base,
        AdapterCredentials::None,
        None,
        ClientOptions::default(),
    )
    .unwrap()
}

fn client_with(base: &str, creds: AdapterCredentials, options: ClientOptions) -> AdapterClient {
    AdapterClient::new(base, creds, None, options).unwrap()
}

async fn dev(config: DevScannerConfig) -> DevScannerHandle {
    DevScanner::start(config).await.unwrap()
}

async fn poll_until_ready(client: &AdapterClient, handle: &ScanHandle) -> (Report, u32) {
    let mut not_ready = 0;
    for _ in 0..20 {
        match client.fetch_report(handle).await.unwrap() {
            ReportPoll::Ready(report) => return (*report, not_ready),
            ReportPoll::NotReady { retry_after } => {
                assert!(retry_after >= Duration::from_secs(1));
                not_ready += 1;
            }
            ReportPoll::ScanNotFound => panic!("scan lost"),
        }
    }
    panic!("report never ready");
}

async fn scan_and_fetch(
    client: &AdapterClient,
    meta: &AdapterMetadata,
    d: &Digest,
    report: &str,
) -> Report {
    let handle = client
        .submit_scan(meta, &submission(d, report))
        .await
        .unwrap();
    poll_until_ready(client, &handle).await.0
}

// ---------------------------------------------------------------------------------------------
// Conformance against the development adapter.

#[tokio::test]
async fn client_and_dev_adapter_conform_to_v1_2() {
    let specs = specs();
    let adapter = dev(DevScannerConfig::default()).await;
    let (proxy, log) = recorder(adapter.base_url()).await;
    let client = client(&proxy.base);

    let meta = client.metadata().await.unwrap();
    assert_eq!(meta.api_level, ApiLevel::V1_2);
    assert_eq!(meta.scanner.name, devscanner::SCANNER_NAME);
    assert_eq!(meta.offered_report_mime_types().len(), 4);

    let d = digest(0x3c);
    let expected = devscanner::expected_summary(&d);
    for report_type in REPORT_TYPES {
        let handle = client
            .submit_scan(&meta, &submission(&d, report_type))
            .await
            .unwrap();
        let (report, not_ready) = poll_until_ready(&client, &handle).await;
        assert_eq!(not_ready, 1, "one 302 per scan by default");
        assert_eq!(report.mime_type.as_str(), canonical(report_type));
        // The raw report is the scanner's own format, without `generated_at`.
        assert_eq!(
            report.generated_at.is_some(),
            report_type != mime::RAW_VULN_REPORT
        );
        assert_eq!(
            report.scanner.as_ref().map(|s| s.name.as_str()),
            (report_type != mime::RAW_VULN_REPORT).then_some(devscanner::SCANNER_NAME)
        );
        match report_type {
            mime::VULN_REPORT_1_1 | mime::HARBOR_VULN_REPORT_1_0 => {
                assert_eq!(report.summary, Some(expected), "{report_type}");
                assert!(report.size_bytes > 4_000, "{}", report.size_bytes);
            }
            mime::RAW_VULN_REPORT => {
                assert_eq!(report.summary, None);
                let items = report.body["Results"][0]["Vulnerabilities"]
                    .as_array()
                    .unwrap();
                assert_eq!(items.len() as i64, expected.total());
            }
            _ => {
                assert_eq!(report.summary, None);
                assert_eq!(report.body["media_type"], mime::SBOM_CYCLONEDX_JSON);
                assert_eq!(report.body["sbom"]["bomFormat"], "CycloneDX");
            }
        }
    }

    // Exactly one scan submission per (digest, report MIME type), each fetched once.
    let stats = adapter.stats();
    assert_eq!(stats.scans_accepted, 4);
    for report_type in REPORT_TYPES {
        assert_eq!(stats.scans_for(d.as_str(), report_type), 1, "{report_type}");
        assert_eq!(
            stats.reports_for(d.as_str(), report_type),
            1,
            "{report_type}"
        );
    }
    assert_eq!(stats.scans_with_registry_authorization, 4);

    // Every exchange conforms; the older MIME types conform to the older versions too.
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 1 + 4 * 3);
    for ex in &log {
        let versions = check_exchange(&specs, ex);
        if ex.status == 200 && ex.path.ends_with("/report") {
            let ct = canonical(ex.resp_headers[CONTENT_TYPE].to_str().unwrap());
            let expect: &[&str] = if ct == canonical(mime::SBOM_REPORT_1_0) {
                &["1.2"]
            } else if ct == canonical(mime::VULN_REPORT_1_1) {
                &["1.1", "1.2"]
            } else {
                &["1.0", "1.1", "1.2"]
            };
            assert_eq!(versions.into_iter().collect::<Vec<_>>(), expect, "{ct}");
        }
        if ex.method == "POST" {
            let ct = ex.req_headers[CONTENT_TYPE].to_str().unwrap();
            assert_eq!(canonical(ct), canonical(mime::SCAN_REQUEST_1_1));
            let body: Value = serde_json::from_slice(&ex.req_body).unwrap();
            let caps = body["enabled_capabilities"].as_array().unwrap();
            assert_eq!(caps.len(), 1, "{body}");
            assert_eq!(caps[0]["produces_mime_types"].as_array().unwrap().len(), 1);
            assert_eq!(
                ex.resp_headers[CONTENT_TYPE].to_str().unwrap(),
                mime::SCAN_RESPONSE_1_0
            );
        }
    }
    let sbom_get = log
        .iter()
        .find(|e| {
            e.req_headers
                .get(ACCEPT)
                .is_some_and(|a| a == mime::SBOM_REPORT_1_0)
        })
        .unwrap();
    assert_eq!(
        sbom_get.query.as_deref(),
        Some("sbom_media_type=application%2Fvnd.cyclonedx%2Bjson")
    );
    adapter.shutdown().await;
}

#[tokio::test]
async fn legacy_adapters_get_v1_0_requests() {
    let specs = specs();
    let adapter = dev(DevScannerConfig {
        spec: DevSpec::V1_1,
        pending_polls: 0,
        ..Default::default()
    })
    .await;
    let (proxy, log) = recorder(adapter.base_url()).await;
    let client = client(&proxy.base);
    let meta = client.metadata().await.unwrap();
    assert_eq!(meta.api_level, ApiLevel::V1_0);
    assert_eq!(meta.content_type.as_str(), mime::METADATA_1_0);

    let d = digest(0x11);
    for report_type in &REPORT_TYPES[..3] {
        let report = scan_and_fetch(&client, &meta, &d, report_type).await;
        assert_eq!(report.mime_type.as_str(), canonical(report_type));
    }
    let err = client
        .submit_scan(&meta, &submission(&d, mime::SBOM_REPORT_1_0))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ScannerError::ReportMimeTypeNotOffered { .. }),
        "{err}"
    );

    let stats = adapter.stats();
    assert_eq!(stats.scans_accepted, 3);
    // Legacy requests enable everything.
    assert_eq!(stats.scans_for(d.as_str(), "*"), 3);

    let log = log.lock().unwrap().clone();
    for ex in &log {
        let versions = check_exchange(&specs, ex);
        if ex.path.ends_with("/metadata") || ex.method == "POST" {
            assert_eq!(
                versions.into_iter().collect::<Vec<_>>(),
                ["1.0", "1.1", "1.2"],
                "{} {}",
                ex.method,
                ex.path
            );
        }
        if ex.method == "POST" {
            assert_eq!(
                ex.req_headers[CONTENT_TYPE].to_str().unwrap(),
                mime::SCAN_REQUEST_1_0
            );
            let body: Value = serde_json::from_slice(&ex.req_body).unwrap();
            assert!(body.get("enabled_capabilities").is_none(), "{body}");
            // Scan request 1.0 validates against the v1.0 schema too.
            let spec = &specs[2];
            let entry = content_entry(
                &spec.doc["paths"]["/scan"]["post"]["requestBody"]["content"],
                mime::SCAN_REQUEST_1_0,
            )
            .unwrap();
            validate(&resolve(&spec.doc, &entry["schema"], 0), &body).unwrap();
        }
    }
    adapter.shutdown().await;
}

#[tokio::test]
async fn dev_adapter_error_answers_conform() {
    let specs = specs();
    let adapter = dev(DevScannerConfig::default()).await;
    let (proxy, log) = recorder(adapter.base_url()).await;
    let http = plain_http();
    let d = digest(0x42);
    let good = json!({
        "registry": {"url": "https://core.harbor.domain"},
        "artifact": {"repository": "library/nginx", "digest": d.as_str(), "mime_type": mime::OCI_IMAGE_MANIFEST},
    });
    let post = |ct: &'static str, body: String| {
        http.post(format!("{}/api/v1/scan", proxy.base))
            .header(CONTENT_TYPE, ct)
            .header(ACCEPT, mime::SCAN_RESPONSE_1_0)
            .body(body)
            .send()
    };
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        f(&mut v);
        v.to_string()
    };
    let cases: Vec<(&str, &'static str, String, u16)> = vec![
        ("not JSON", mime::SCAN_REQUEST_1_1, "{".into(), 400),
        (
            "wrong type",
            mime::SCAN_REQUEST_1_1,
            with(&|v| v["registry"] = json!(5)),
            400,
        ),
        (
            "wrong Content-Type",
            "application/json",
            good.to_string(),
            400,
        ),
        (
            "missing digest",
            mime::SCAN_REQUEST_1_0,
            with(&|v| v["artifact"]["digest"] = json!("")),
            422,
        ),
        (
            "relative registry",
            mime::SCAN_REQUEST_1_0,
            with(&|v| v["registry"]["url"] = json!("core")),
            422,
        ),
        (
            "missing repository",
            mime::SCAN_REQUEST_1_0,
            with(&|v| v["artifact"]["repository"] = json!("")),
            422,
        ),
        (
            "bad authorization",
            mime::SCAN_REQUEST_1_0,
            with(&|v| v["registry"]["authorization"] = json!("Digest x")),
            422,
        ),
        (
            "unknown capability",
            mime::SCAN_REQUEST_1_1,
            with(&|v| v["enabled_capabilities"] = json!([{"type": "malware"}])),
            422,
        ),
        (
            "helm chart",
            mime::SCAN_REQUEST_1_0,
            with(&|v| {
                v["artifact"]["mime_type"] = json!("application/vnd.cncf.helm.config.v1+json")
            }),
            501,
        ),
        (
            "unproduced MIME",
            mime::SCAN_REQUEST_1_1,
            with(&|v| {
                v["enabled_capabilities"] = json!([{"type": "vulnerability", "produces_mime_types": [mime::SBOM_REPORT_1_0]}])
            }),
            501,
        ),
        (
            "SPDX",
            mime::SCAN_REQUEST_1_1,
            with(
                &|v| v["enabled_capabilities"] = json!([{"type": "sbom", "parameters": {"sbom_media_types": [mime::SBOM_SPDX_JSON]}}]),
            ),
            501,
        ),
        (
            "all capabilities",
            mime::SCAN_REQUEST_1_1,
            good.to_string(),
            202,
        ),
    ];
    let mut scan_id = String::new();
    for (name, ct, body, status) in cases {
        let resp = post(ct, body).await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{name}");
        if status == 202 {
            scan_id = json_of::<Value>(resp).await["id"]
                .as_str()
                .unwrap()
                .to_owned();
        }
    }

    let get = |id: &str, accept: &str, query: &str| {
        http.get(format!("{}/api/v1/scan/{id}/report{query}", proxy.base))
            .header(ACCEPT, accept.to_owned())
            .send()
    };
    let cases = [
        ("unknown id", "nope", mime::VULN_REPORT_1_1, "", 404),
        (
            "unsupported Accept",
            &scan_id[..],
            "application/pdf",
            "",
            501,
        ),
        (
            "SBOM without media type",
            &scan_id[..],
            mime::SBOM_REPORT_1_0,
            "",
            400,
        ),
        (
            "SBOM bad media type",
            &scan_id[..],
            mime::SBOM_REPORT_1_0,
            "?sbom_media_type=text%2Fplain",
            400,
        ),
        (
            "SPDX",
            &scan_id[..],
            mime::SBOM_REPORT_1_0,
            "?sbom_media_type=application%2Fspdx%2Bjson",
            501,
        ),
        ("not ready", &scan_id[..], mime::VULN_REPORT_1_1, "", 302),
        ("ready", &scan_id[..], mime::VULN_REPORT_1_1, "", 200),
    ];
    for (name, id, accept, query, status) in cases {
        let resp = get(id, accept, query).await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{name}");
    }

    // Injected server errors are ErrorResponses too.
    for ep in [Endpoint::Metadata, Endpoint::Scan, Endpoint::Report] {
        adapter
            .inject_fault(FaultRule::new(
                ep,
                FaultKind::ServerError { status: 500 },
                Some(1),
            ))
            .unwrap();
    }
    let resp = http
        .get(format!("{}/api/v1/metadata", proxy.base))
        .header(ACCEPT, mime::METADATA_1_1)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    assert_eq!(
        post(mime::SCAN_REQUEST_1_1, good.to_string())
            .await
            .unwrap()
            .status(),
        500
    );
    assert_eq!(
        get(&scan_id, mime::VULN_REPORT_1_1, "")
            .await
            .unwrap()
            .status(),
        500
    );

    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 12 + 7 + 3);
    for ex in &log {
        check_exchange(&specs, ex);
        if ex.status >= 400 && ex.status != 404 {
            let body: Value = serde_json::from_slice(&ex.resp_body).unwrap();
            assert!(!body["error"]["message"].as_str().unwrap().is_empty());
        }
    }
    let stats = adapter.stats();
    assert_eq!(stats.responses_with(Endpoint::Scan, 422), 5);
    assert_eq!(stats.responses_with(Endpoint::Scan, 400), 3);
    assert_eq!(stats.responses_with(Endpoint::Report, 404), 1);
    adapter.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// The client against canned answers, one per status code of the specification.

#[derive(Clone, Default)]
struct Canned {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// Answer with the request's headers and body as the error message.
    echo: bool,
}

#[derive(Clone, Default)]
struct CannedState {
    answers: Arc<Mutex<HashMap<&'static str, Canned>>>,
    hits: Arc<Mutex<HashMap<String, u64>>>,
}

impl CannedState {
    fn set(&self, endpoint: &'static str, canned: Canned) {
        self.answers.lock().unwrap().insert(endpoint, canned);
    }

    fn hits(&self, path: &str) -> u64 {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

async fn canned_answer(State(s): State<CannedState>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    *s.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    let endpoint = if path.ends_with("/metadata") {
        "metadata"
    } else if path.ends_with("/report") {
        "report"
    } else if path.ends_with("/scan") {
        "scan"
    } else {
        return (StatusCode::OK, "redirect target").into_response();
    };
    let Some(canned) = s.answers.lock().unwrap().get(endpoint).cloned() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let body = if canned.echo {
        let headers: Vec<String> = req
            .headers()
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("")))
            .collect();
        let body = axum::body::to_bytes(req.into_body(), usize::MAX)
            .await
            .unwrap();
        json!({"error": {"message": format!("{} {}", headers.join(" "), String::from_utf8_lossy(&body))}})
            .to_string()
            .into_bytes()
    } else {
        canned.body.clone()
    };
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = StatusCode::from_u16(canned.status).unwrap();
    for (k, v) in canned.headers {
        resp.headers_mut()
            .insert(k, HeaderValue::from_str(&v).unwrap());
    }
    resp
}

async fn canned_server() -> (Served, CannedState) {
    let state = CannedState::default();
    let app = Router::new()
        .fallback(canned_answer)
        .with_state(state.clone());
    (serve(app).await, state)
}

fn answer(status: u16, content_type: &str, body: &str) -> Canned {
    Canned {
        status,
        headers: if content_type.is_empty() {
            vec![]
        } else {
            vec![("content-type", content_type.to_owned())]
        },
        body: body.as_bytes().to_vec(),
        echo: false,
    }
}

fn error_body(message: &str) -> String {
    json!({"error": {"message": message}}).to_string()
}

fn dev_metadata() -> AdapterMetadata {
    AdapterMetadata::from_wire(
        serde_json::from_value(json!({
            "scanner": {"name": "canned", "vendor": "test", "version": "1"},
            "capabilities": [
                {"type": "vulnerability", "consumes_mime_types": [mime::OCI_IMAGE_MANIFEST],
                 "produces_mime_types": [mime::VULN_REPORT_1_1, mime::HARBOR_VULN_REPORT_1_0, mime::RAW_VULN_REPORT]},
                {"type": "sbom", "consumes_mime_types": [mime::OCI_IMAGE_MANIFEST],
                 "produces_mime_types": [mime::SBOM_REPORT_1_0]}
            ]
        }))
        .unwrap(),
        MimeType::parse(mime::METADATA_1_1).unwrap(),
    )
}

fn handle(report: &str) -> ScanHandle {
    ScanHandle {
        id: "scan-1".into(),
        report_mime_type: MimeType::parse(report).unwrap(),
        accept: report.to_owned(),
        sbom_media_type: None,
    }
}

#[tokio::test]
async fn metadata_answers_are_classified() {
    let (server, state) = canned_server().await;
    let client = client(&server.base);
    let meta_body =
        json!({"scanner": {"name": "x", "vendor": "y", "version": "z"}, "capabilities": []})
            .to_string();

    state.set("metadata", answer(200, mime::METADATA_1_0, &meta_body));
    let meta = client.metadata().await.unwrap();
    assert_eq!(meta.api_level, ApiLevel::V1_0);

    // (status, content type, body, reason, transient, text in the message)
    let cases: Vec<(u16, &str, String, &str, bool, &str)> = vec![
        (
            500,
            mime::ERROR_1_0,
            error_body("database down"),
            "AdapterError",
            true,
            "database down",
        ),
        (503, "", String::new(), "AdapterError", true, "HTTP 503"),
        (
            401,
            "",
            String::new(),
            "Unauthorized",
            false,
            "check spec.auth",
        ),
        (
            403,
            "",
            String::new(),
            "Unauthorized",
            false,
            "check spec.auth",
        ),
        (
            404,
            "text/html",
            "<h1>Not Found</h1>".into(),
            "UnexpectedStatus",
            false,
            "spec.url",
        ),
        (
            200,
            "application/json",
            meta_body.clone(),
            "UnexpectedContentType",
            false,
            "application/json",
        ),
        (
            200,
            mime::METADATA_1_1,
            "{\"scanner\":".into(),
            "MalformedResponse",
            false,
            "not adapter metadata",
        ),
        (
            200,
            mime::METADATA_1_1,
            "{\"scanner\":{}}".into(),
            "MalformedResponse",
            false,
            "capabilities",
        ),
    ];
    for (status, ct, body, reason, transient, text) in cases {
        state.set("metadata", answer(status, ct, &body));
        let err = client.metadata().await.unwrap_err();
        assert_eq!(
            (err.reason(), err.is_transient()),
            (reason, transient),
            "{status}: {err}"
        );
        assert!(err.to_string().contains(text), "{status}: {err}");
    }
}

#[tokio::test]
async fn scan_answers_are_classified() {
    let (server, state) = canned_server().await;
    let client = client(&server.base);
    let meta = dev_metadata();
    let scan = submission(&digest(1), mime::VULN_REPORT_1_1);

    state.set(
        "scan",
        answer(202, mime::SCAN_RESPONSE_1_0, r#"{"id":"abc-1"}"#),
    );
    let h = client.submit_scan(&meta, &scan).await.unwrap();
    assert_eq!(h.id, "abc-1");

    let cases: Vec<(u16, &str, String, &str, bool, &str)> = vec![
        (
            400,
            mime::ERROR_1_0,
            error_body("bad JSON"),
            "InvalidRequest",
            false,
            "bad JSON",
        ),
        (
            422,
            mime::ERROR_1_0,
            error_body("invalid digest"),
            "InvalidRequest",
            false,
            "check the ScanRequest",
        ),
        (
            500,
            mime::ERROR_1_0,
            error_body("queue full"),
            "AdapterError",
            true,
            "queue full",
        ),
        (
            501,
            mime::ERROR_1_0,
            error_body("cannot scan helm charts"),
            "Unsupported",
            false,
            "cannot scan helm charts",
        ),
        (
            502,
            "text/plain",
            "bad gateway".into(),
            "AdapterError",
            true,
            "bad gateway",
        ),
        (429, "", String::new(), "RateLimited", true, "429"),
        (
            200,
            mime::SCAN_RESPONSE_1_0,
            r#"{"id":"x"}"#.into(),
            "UnexpectedStatus",
            false,
            "HTTP 200",
        ),
        (
            202,
            "application/json",
            r#"{"id":"x"}"#.into(),
            "UnexpectedContentType",
            false,
            "scan.response",
        ),
        (
            202,
            mime::SCAN_RESPONSE_1_0,
            r#"{"id":""}"#.into(),
            "MalformedResponse",
            false,
            "`id`",
        ),
        (
            202,
            mime::SCAN_RESPONSE_1_0,
            "{}".into(),
            "MalformedResponse",
            false,
            "id",
        ),
    ];
    for (status, ct, body, reason, transient, text) in cases {
        state.set("scan", answer(status, ct, &body));
        let err = client.submit_scan(&meta, &scan).await.unwrap_err();
        assert_eq!(
            (err.reason(), err.is_transient()),
            (reason, transient),
            "{status}: {err}"
        );
        assert!(err.to_string().contains(text), "{status}: {err}");
    }

    // Retry-After of 429 and 503 is passed on, clamped.
    for (status, value, expect) in [(429, "7", 7), (503, "3600", 600)] {
        let mut canned = answer(status, "", "");
        canned.headers.push(("retry-after", value.into()));
        state.set("scan", canned);
        let err = client.submit_scan(&meta, &scan).await.unwrap_err();
        assert_eq!(
            err.retry_after(),
            Some(Duration::from_secs(expect)),
            "{err}"
        );
    }
}

#[tokio::test]
async fn report_answers_are_classified() {
    let (server, state) = canned_server().await;
    let client = client(&server.base);
    let h = handle(mime::VULN_REPORT_1_1);
    let report =
        json!({"vulnerabilities": [{"id": "CVE-1", "severity": "High", "fix_version": "2"}]})
            .to_string();

    state.set("report", answer(200, mime::VULN_REPORT_1_1, &report));
    let ReportPoll::Ready(r) = client.fetch_report(&h).await.unwrap() else {
        panic!("not ready");
    };
    assert_eq!(r.summary.unwrap().high, 1);
    assert_eq!(r.summary.unwrap().fixable, 1);

    state.set("report", answer(404, "", ""));
    assert_eq!(
        client.fetch_report(&h).await.unwrap(),
        ReportPoll::ScanNotFound
    );

    let cases: Vec<(u16, &str, String, &str, bool, &str)> = vec![
        (
            400,
            mime::ERROR_1_0,
            error_body("missing sbom_media_type"),
            "InvalidRequest",
            false,
            "missing sbom_media_type",
        ),
        (401, "", String::new(), "Unauthorized", false, "HTTP 401"),
        (
            500,
            mime::ERROR_1_0,
            error_body("scan failed"),
            "AdapterError",
            true,
            "scan failed",
        ),
        (
            501,
            mime::ERROR_1_0,
            error_body("no such format"),
            "Unsupported",
            false,
            "no such format",
        ),
        (503, "", String::new(), "AdapterError", true, "HTTP 503"),
        (
            200,
            mime::HARBOR_VULN_REPORT_1_0,
            report.clone(),
            "UnexpectedContentType",
            false,
            "vulnerability.report",
        ),
        (
            200,
            "",
            report.clone(),
            "UnexpectedContentType",
            false,
            "Content-Type \"\"",
        ),
        (
            200,
            mime::VULN_REPORT_1_1,
            "not json".into(),
            "MalformedResponse",
            false,
            "not JSON",
        ),
        (
            200,
            mime::VULN_REPORT_1_1,
            "[]".into(),
            "MalformedResponse",
            false,
            "not a JSON object",
        ),
        (
            200,
            mime::VULN_REPORT_1_1,
            r#"{"vulnerabilities": 3}"#.into(),
            "MalformedResponse",
            false,
            "not an array",
        ),
    ];
    for (status, ct, body, reason, transient, text) in cases {
        state.set("report", answer(status, ct, &body));
        let err = client.fetch_report(&h).await.unwrap_err();
        assert_eq!(
            (err.reason(), err.is_transient()),
            (reason, transient),
            "{status}: {err}"
        );
        assert!(err.to_string().contains(text), "{status}: {err}");
    }

    // A raw report is any JSON, or text kept as a JSON string.
    let raw = handle(mime::RAW_VULN_REPORT);
    state.set(
        "report",
        answer(200, mime::RAW_VULN_REPORT, "scanner says: 3 issues"),
    );
    let ReportPoll::Ready(r) = client.fetch_report(&raw).await.unwrap() else {
        panic!("not ready");
    };
    assert_eq!(r.body, json!("scanner says: 3 issues"));
    assert_eq!(r.summary, None);
}

#[tokio::test]
async fn refresh_after_is_honoured_in_full_and_clamped() {
    let (server, state) = canned_server().await;
    let client = client(&server.base);
    let h = handle(mime::VULN_REPORT_1_1);
    for (value, expect) in [
        (Some("300"), 300),
        (Some("44"), 44),
        (Some("0"), 1),
        (Some("100000"), 600),
        (Some("soon"), 5),
        (Some("-3"), 5),
        (None, 5),
    ] {
        let mut canned = answer(302, "", "");
        if let Some(v) = value {
            canned.headers.push(("refresh-after", v.into()));
        }
        state.set("report", canned);
        assert_eq!(
            client.fetch_report(&h).await.unwrap(),
            ReportPoll::NotReady {
                retry_after: Duration::from_secs(expect)
            },
            "{value:?}"
        );
    }
}

#[tokio::test]
async fn redirects_are_never_followed() {
    let (server, state) = canned_server().await;
    let client = client(&server.base);
    let target = format!("{}/elsewhere", server.base);

    let mut canned = answer(302, "", "");
    canned.headers.push(("location", target.clone()));
    canned.headers.push(("refresh-after", "2".into()));
    state.set("report", canned);
    assert_eq!(
        client
            .fetch_report(&handle(mime::VULN_REPORT_1_1))
            .await
            .unwrap(),
        ReportPoll::NotReady {
            retry_after: Duration::from_secs(2)
        }
    );

    let mut canned = answer(301, "", "");
    canned.headers.push(("location", target.clone()));
    state.set("metadata", canned);
    let err = client.metadata().await.unwrap_err();
    assert!(
        matches!(err, ScannerError::UnexpectedStatus { status: 301, .. }),
        "{err}"
    );
    assert!(!err.is_transient());

    let mut canned = answer(307, "", "");
    canned.headers.push(("location", target));
    state.set("scan", canned);
    let err = client
        .submit_scan(
            &dev_metadata(),
            &submission(&digest(2), mime::VULN_REPORT_1_1),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ScannerError::UnexpectedStatus { status: 307, .. }),
        "{err}"
    );

    assert_eq!(state.hits("/elsewhere"), 0);
}

#[tokio::test]
async fn response_size_is_capped() {
    let options = ClientOptions {
        max_response_bytes: 1024 * 1024,
        ..Default::default()
    };
    // Streamed without Content-Length: the cap trips while reading.
    let adapter = dev(DevScannerConfig {
        pending_polls: 0,
        oversize_bytes: 2 * 1024 * 1024,
        ..Default::default()
    })
    .await;
    let client = client_with(
        adapter.base_url(),
        AdapterCredentials::None,
        options.clone(),
    );
    let meta = client.metadata().await.unwrap();
    let d = digest(7);
    let h = client
        .submit_scan(&meta, &submission(&d, mime::VULN_REPORT_1_1))
        .await
        .unwrap();
    // A normal report is well under the cap.
    assert!(matches!(
        client.fetch_report(&h).await.unwrap(),
        ReportPoll::Ready(_)
    ));
    adapter
        .inject_fault(FaultRule::new(
            Endpoint::Report,
            FaultKind::Oversized,
            Some(1),
        ))
        .unwrap();
    let err = client.fetch_report(&h).await.unwrap_err();
    assert!(
        matches!(
            err,
            ScannerError::ResponseTooLarge {
                limit: 1_048_576,
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.is_transient());
    assert!(err.to_string().contains("1048576 bytes"), "{err}");
    // Just under the cap passes: the body is valid JSON padding.
    adapter.set_oversize_bytes(1024 * 1024);
    adapter
        .inject_fault(FaultRule::new(
            Endpoint::Report,
            FaultKind::Oversized,
            Some(1),
        ))
        .unwrap();
    let ReportPoll::Ready(r) = client.fetch_report(&h).await.unwrap() else {
        panic!("not ready");
    };
    assert_eq!(r.size_bytes, 1024 * 1024);
    adapter.shutdown().await;

    // With Content-Length: refused before reading.
    let (server, state) = canned_server().await;
    let client = client_with(&server.base, AdapterCredentials::None, options);
    state.set(
        "metadata",
        answer(200, mime::METADATA_1_1, &" ".repeat(1024 * 1024 + 1)),
    );
    let err = client.metadata().await.unwrap_err();
    assert!(
        matches!(err, ScannerError::ResponseTooLarge { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn credentials_never_appear_in_errors() {
    let (server, state) = canned_server().await;
    let secrets = [
        "adm1n-user",
        "p4ssw0rd-S3CRET",
        "b3arer-T0KEN-xyz",
        "ap1-K3Y-value",
    ];
    let data = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    (*k).to_owned(),
                    k8s_openapi::ByteString(v.as_bytes().to_vec()),
                )
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let auth = |t, header: Option<&str>| ScannerAuth {
        auth_type: t,
        secret_ref: None,
        header: header.map(str::to_owned),
    };
    let all_creds = [
        adapter_credentials(
            Some(&auth(ScannerAuthType::Basic, None)),
            Some(&data(&[("username", secrets[0]), ("password", secrets[1])])),
        )
        .unwrap(),
        adapter_credentials(
            Some(&auth(ScannerAuthType::Bearer, None)),
            Some(&data(&[("token", secrets[2])])),
        )
        .unwrap(),
        adapter_credentials(
            Some(&auth(ScannerAuthType::ApiKey, Some("X-Key"))),
            Some(&data(&[("apiKey", secrets[3])])),
        )
        .unwrap(),
    ];
    let registry_password = "r3gistry-PASSWORD";
    let mut scan = submission(&digest(3), mime::VULN_REPORT_1_1);
    scan.registry_authorization = Some(RegistryAuthorization::basic("robot", registry_password));
    let registry_b64 =
        base64::engine::general_purpose::STANDARD.encode(format!("robot:{registry_password}"));

    for creds in all_creds {
        let client = client_with(&server.base, creds.clone(), ClientOptions::default());
        assert!(!format!("{client:?} {creds:?}").contains("S3CRET"));
        for status in [400, 401, 422, 500, 501] {
            let echo = Canned {
                status,
                echo: true,
                ..Default::default()
            };
            state.set("metadata", echo.clone());
            state.set("scan", echo.clone());
            state.set("report", echo);
            let errors = [
                client.metadata().await.unwrap_err(),
                client
                    .submit_scan(&dev_metadata(), &scan)
                    .await
                    .unwrap_err(),
                client
                    .fetch_report(&handle(mime::VULN_REPORT_1_1))
                    .await
                    .unwrap_err(),
            ];
            for err in errors {
                let text = format!("{err} {err:?}");
                for secret in secrets
                    .iter()
                    .chain([&registry_password, &registry_b64.as_str()])
                {
                    assert!(!text.contains(secret), "{status}: {text}");
                }
            }
        }
    }
    // The echo did carry the credentials, so the scrubbing was needed.
    let err = {
        state.set(
            "scan",
            Canned {
                status: 400,
                echo: true,
                ..Default::default()
            },
        );
        client(&server.base)
            .submit_scan(&dev_metadata(), &scan)
            .await
            .unwrap_err()
    };
    assert!(err.to_string().contains("***"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Faults, authentication, TLS and caching against the development adapter.

#[tokio::test]
async fn transient_faults_then_success() {
    let adapter = dev(DevScannerConfig {
        pending_polls: 0,
        faults: vec![
            "report:503:2".parse().unwrap(),
            "scan:500:1".parse().unwrap(),
        ],
        ..Default::default()
    })
    .await;
    let client = client(adapter.base_url());
    let meta = client.metadata().await.unwrap();
    let scan = submission(&digest(9), mime::HARBOR_VULN_REPORT_1_0);
    let err = client.submit_scan(&meta, &scan).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    let h = client.submit_scan(&meta, &scan).await.unwrap();
    for _ in 0..2 {
        let err = client.fetch_report(&h).await.unwrap_err();
        assert!(
            matches!(err, ScannerError::Server { status: 503, .. }),
            "{err}"
        );
        assert!(err.is_transient());
    }
    assert!(matches!(
        client.fetch_report(&h).await.unwrap(),
        ReportPoll::Ready(_)
    ));
    let stats = adapter.stats();
    assert_eq!(stats.faults_injected, 3);
    assert_eq!(stats.scans_accepted, 1);
    adapter.shutdown().await;
}

#[tokio::test]
async fn malformed_answers_are_permanent() {
    let adapter = dev(DevScannerConfig {
        pending_polls: 0,
        ..Default::default()
    })
    .await;
    let client = client(adapter.base_url());
    let meta = client.metadata().await.unwrap();
    let scan = submission(&digest(10), mime::VULN_REPORT_1_1);
    for ep in [Endpoint::Metadata, Endpoint::Scan, Endpoint::Report] {
        adapter
            .inject_fault(FaultRule::new(ep, FaultKind::MalformedJson, Some(1)))
            .unwrap();
    }
    let err = client.metadata().await.unwrap_err();
    assert!(
        matches!(err, ScannerError::MalformedResponse { .. }) && !err.is_transient(),
        "{err}"
    );
    let err = client.submit_scan(&meta, &scan).await.unwrap_err();
    assert!(
        matches!(err, ScannerError::MalformedResponse { .. }) && !err.is_transient(),
        "{err}"
    );
    let h = client.submit_scan(&meta, &scan).await.unwrap();
    let err = client.fetch_report(&h).await.unwrap_err();
    assert!(
        matches!(err, ScannerError::MalformedResponse { .. }) && !err.is_transient(),
        "{err}"
    );
    adapter.shutdown().await;
}

#[tokio::test]
async fn a_lost_scan_is_resubmitted() {
    let adapter = dev(DevScannerConfig {
        pending_polls: 0,
        ..Default::default()
    })
    .await;
    let client = client(adapter.base_url());
    let meta = client.metadata().await.unwrap();
    let scan = submission(&digest(11), mime::VULN_REPORT_1_1);
    let h = client.submit_scan(&meta, &scan).await.unwrap();
    adapter
        .inject_fault("report:lost:1".parse().unwrap())
        .unwrap();
    assert_eq!(
        client.fetch_report(&h).await.unwrap(),
        ReportPoll::ScanNotFound
    );
    // Lost for good, as after an adapter restart.
    assert_eq!(
        client.fetch_report(&h).await.unwrap(),
        ReportPoll::ScanNotFound
    );
    let h2 = client.submit_scan(&meta, &scan).await.unwrap();
    assert_ne!(h.id, h2.id);
    assert!(matches!(
        client.fetch_report(&h2).await.unwrap(),
        ReportPoll::Ready(_)
    ));
    assert_eq!(
        adapter
            .stats()
            .scans_for(digest(11).as_str(), mime::VULN_REPORT_1_1),
        2
    );
    adapter.shutdown().await;
}

#[tokio::test]
async fn timeouts_and_refused_connections_are_transient() {
    let adapter = dev(DevScannerConfig {
        hang_for: Duration::from_secs(2),
        faults: vec!["metadata:hang:1".parse().unwrap()],
        ..Default::default()
    })
    .await;
    let options = ClientOptions {
        request_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let client = client_with(
        adapter.base_url(),
        AdapterCredentials::None,
        options.clone(),
    );
    let started = std::time::Instant::now();
    let err = client.metadata().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        matches!(err, ScannerError::Timeout { .. }) && err.is_transient(),
        "{err}"
    );
    assert!(err.to_string().contains("spec.requestTimeout"), "{err}");
    let addr = adapter.local_addr();
    adapter.shutdown().await;

    let client = client_with(&format!("http://{addr}"), AdapterCredentials::None, options);
    let err = client.metadata().await.unwrap_err();
    assert!(
        matches!(err, ScannerError::Connect { .. }) && err.is_transient(),
        "{err}"
    );
}

#[tokio::test]
async fn adapter_authentication() {
    let key = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    (*k).to_owned(),
                    k8s_openapi::ByteString(v.as_bytes().to_vec()),
                )
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let cases = [
        (
            DevAuth::Basic {
                username: "harbor".into(),
                password: "right-pw".into(),
            },
            ScannerAuth {
                auth_type: ScannerAuthType::Basic,
                secret_ref: None,
                header: None,
            },
            key(&[("username", "harbor"), ("password", "right-pw")]),
            key(&[("username", "harbor"), ("password", "wrong-pw")]),
        ),
        (
            DevAuth::Bearer {
                token: "t0ken".into(),
            },
            ScannerAuth {
                auth_type: ScannerAuthType::Bearer,
                secret_ref: None,
                header: None,
            },
            key(&[("token", "t0ken")]),
            key(&[("token", "wrong-t0ken")]),
        ),
        (
            DevAuth::ApiKey {
                header: "X-Custom-Key".into(),
                key: "k3y".into(),
            },
            ScannerAuth {
                auth_type: ScannerAuthType::ApiKey,
                secret_ref: None,
                header: Some("X-Custom-Key".into()),
            },
            key(&[("apiKey", "k3y")]),
            key(&[("apiKey", "wrong-k3y")]),
        ),
    ];
    for (dev_auth, auth, right, wrong) in cases {
        let adapter = dev(DevScannerConfig {
            auth: dev_auth,
            pending_polls: 0,
            ..Default::default()
        })
        .await;
        let creds = adapter_credentials(Some(&auth), Some(&right)).unwrap();
        let good = client_with(adapter.base_url(), creds, ClientOptions::default());
        let meta = good.metadata().await.unwrap();
        let d = digest(12);
        scan_and_fetch(&good, &meta, &d, mime::VULN_REPORT_1_1).await;

        let creds = adapter_credentials(Some(&auth), Some(&wrong)).unwrap();
        let bad = client_with(adapter.base_url(), creds, ClientOptions::default());
        for err in [
            bad.metadata().await.unwrap_err(),
            bad.submit_scan(&meta, &submission(&d, mime::VULN_REPORT_1_1))
                .await
                .unwrap_err(),
        ] {
            assert!(
                matches!(err, ScannerError::Unauthorized { status: 401, .. }),
                "{err}"
            );
            assert!(!err.is_transient());
            assert!(err.to_string().contains("check spec.auth"), "{err}");
            assert!(!err.to_string().contains("wrong"), "{err}");
        }
        let none = client(adapter.base_url());
        assert!(matches!(
            none.metadata().await.unwrap_err(),
            ScannerError::Unauthorized { .. }
        ));
        adapter.shutdown().await;
    }
}

struct TestPki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn test_pki() -> TestPki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "scanner adapter test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    TestPki {
        ca_pem: ca_cert.pem(),
        cert_pem: leaf.pem(),
        key_pem: leaf_key.serialize_pem(),
    }
}

#[tokio::test]
async fn tls_with_a_private_ca() {
    let pki = test_pki();
    let adapter = dev(DevScannerConfig {
        tls: Some(DevTls {
            cert_chain_pem: pki.cert_pem.clone(),
            key_pem: pki.key_pem.clone(),
        }),
        pending_polls: 0,
        ..Default::default()
    })
    .await;
    assert!(adapter.base_url().starts_with("https://127.0.0.1:"));

    let trusted = AdapterClient::new(
        adapter.base_url(),
        AdapterCredentials::None,
        Some(&pki.ca_pem),
        ClientOptions::default(),
    )
    .unwrap();
    let meta = trusted.metadata().await.unwrap();
    let report = scan_and_fetch(&trusted, &meta, &digest(13), mime::VULN_REPORT_1_1).await;
    assert!(report.summary.is_some());

    // Without the CA, or with another one: a permanent TLS error that names caBundle.
    let other = test_pki();
    for ca in [None, Some(other.ca_pem.as_str())] {
        let untrusted = AdapterClient::new(
            adapter.base_url(),
            AdapterCredentials::None,
            ca,
            ClientOptions::default(),
        )
        .unwrap();
        let err = untrusted.metadata().await.unwrap_err();
        assert!(matches!(err, ScannerError::Tls { .. }), "{err}");
        assert!(!err.is_transient());
        assert!(err.to_string().contains("spec.caBundle"), "{err}");
    }

    // Plain HTTP to the TLS port is not a TLS error but fails; HTTPS to a plain port is.
    let plain = dev(DevScannerConfig::default()).await;
    let https_to_plain = AdapterClient::new(
        &plain.base_url().replace("http://", "https://"),
        AdapterCredentials::None,
        Some(&pki.ca_pem),
        ClientOptions::default(),
    )
    .unwrap();
    let err = https_to_plain.metadata().await.unwrap_err();
    assert!(
        matches!(err, ScannerError::Tls { .. }) && !err.is_transient(),
        "{err}"
    );

    let err = AdapterClient::new(
        adapter.base_url(),
        AdapterCredentials::None,
        Some("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"),
        ClientOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, ScannerError::InvalidCaBundle { .. }) && !err.is_transient(),
        "{err}"
    );
    plain.shutdown().await;
    adapter.shutdown().await;
}

#[tokio::test]
async fn metadata_cache_honours_its_ttl() {
    let adapter = dev(DevScannerConfig::default()).await;
    let client = client(adapter.base_url());
    let cache = MetadataCache::new(Duration::from_millis(400));
    let first = cache.get(&client).await.unwrap();
    let second = cache.get(&client).await.unwrap();
    assert!(Arc::ptr_eq(&first, &second));
    assert_eq!(adapter.stats().metadata_requests, 1);

    tokio::time::sleep(Duration::from_millis(500)).await;
    cache.get(&client).await.unwrap();
    assert_eq!(adapter.stats().metadata_requests, 2);

    // Concurrent misses make one request.
    cache.invalidate(adapter.base_url());
    let gets = (0..5).map(|_| cache.get(&client));
    for r in futures::future::join_all(gets).await {
        r.unwrap();
    }
    assert_eq!(adapter.stats().metadata_requests, 3);

    // Failures are not cached.
    cache.invalidate(&format!("{}/", adapter.base_url()));
    adapter
        .inject_fault("metadata:500:1".parse().unwrap())
        .unwrap();
    assert!(cache.get(&client).await.unwrap_err().is_transient());
    cache.get(&client).await.unwrap();
    assert_eq!(adapter.stats().metadata_requests, 5);
    adapter.shutdown().await;
}

#[tokio::test]
async fn dev_adapter_http_controls() {
    let adapter = dev(DevScannerConfig::default()).await;
    let http = plain_http();
    let base = adapter.base_url().to_owned();

    let resp = http
        .post(format!("{base}/dev/faults"))
        .body(json!([{"endpoint": "metadata", "fault": "server_error", "status": 502, "count": 1}, "report:lost:1"]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(json_of::<Value>(resp).await.as_array().unwrap().len(), 2);
    let bad = http
        .post(format!("{base}/dev/faults"))
        .body("\"metadata:lost\"")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    let resp = http
        .post(format!("{base}/dev/config"))
        .body(r#"{"pending_polls": 3, "refresh_after_secs": 300}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(json_of::<Value>(resp).await["pending_polls"], 3);

    let client = client(&base);
    assert!(matches!(
        client.metadata().await.unwrap_err(),
        ScannerError::Server { status: 502, .. }
    ));
    let meta = client.metadata().await.unwrap();
    let d = digest(14);
    let h = client
        .submit_scan(&meta, &submission(&d, mime::VULN_REPORT_1_1))
        .await
        .unwrap();
    assert_eq!(
        client.fetch_report(&h).await.unwrap(),
        ReportPoll::ScanNotFound
    );
    let h = client
        .submit_scan(&meta, &submission(&d, mime::VULN_REPORT_1_1))
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(
            client.fetch_report(&h).await.unwrap(),
            ReportPoll::NotReady {
                retry_after: Duration::from_secs(300)
            }
        );
    }
    assert!(matches!(
        client.fetch_report(&h).await.unwrap(),
        ReportPoll::Ready(_)
    ));

    let over_http = http.get(format!("{base}/dev/stats")).send().await.unwrap();
    let over_http: devscanner::DevStats = json_of(over_http).await;
    assert_eq!(over_http, adapter.stats());
    assert_eq!(over_http.reports_not_ready, 3);
    assert_eq!(over_http.scans_for(d.as_str(), mime::VULN_REPORT_1_1), 2);
    assert_eq!(over_http.reports_for(d.as_str(), mime::VULN_REPORT_1_1), 1);

    let registry = adapter.last_scan_request().unwrap().registry;
    assert_eq!(
        registry.authorization.unwrap().expose(),
        RegistryAuthorization::basic("robot$ci", "s3cr3t-pw")
            .as_secret()
            .expose()
    );

    let resp = http.post(format!("{base}/dev/reset")).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(adapter.stats(), devscanner::DevStats::default());
    adapter.shutdown().await;
}

#[test]
fn the_schema_harness_rejects_nonconforming_bodies() {
    let spec = load_spec("1.2");
    let schema = |name: &str| {
        resolve(
            &spec.doc,
            &json!({"$ref": format!("#/components/schemas/{name}")}),
            0,
        )
    };
    let report = json!({
        "generated_at": "2024-01-01T00:00:00Z",
        "vulnerabilities": [{"id": "CVE-1", "severity": "High", "links": ["https://example.org/CVE-1"]}]
    });
    validate(&schema("HarborVulnerabilityReport"), &report).unwrap();
    let mut bad = report.clone();
    bad["vulnerabilities"][0]["severity"] = json!("Extreme");
    assert!(validate(&schema("HarborVulnerabilityReport"), &bad).is_err());
    let mut bad = report.clone();
    bad["generated_at"] = json!("yesterday");
    assert!(validate(&schema("HarborVulnerabilityReport"), &bad).is_err());
    let mut bad = report;
    bad["vulnerabilities"][0]["links"] = json!(["not a uri"]);
    assert!(validate(&schema("HarborVulnerabilityReport"), &bad).is_err());

    assert!(validate(&schema("ScannerAdapterMetadata"), &json!({"scanner": {}})).is_err());
    assert!(validate(&schema("ScanRequest"), &json!({"registry": {}})).is_err());
    let request = json!({"registry": {}, "artifact": {}, "enabled_capabilities": [{"type": "sbom", "parameters": null}]});
    validate(&schema("ScanRequest"), &request).unwrap();
    let mut bad = request;
    bad["enabled_capabilities"][0]["type"] = json!("malware");
    assert!(validate(&schema("ScanRequest"), &bad).is_err());
    assert!(validate(&schema("ScanResponse"), &json!({})).is_err());
}
