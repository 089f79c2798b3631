//! The client against canned answers, one per status code of the specification.

use super::*;

#[derive(Clone, Default)]
pub(crate) struct Canned {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Vec<u8>,
    /// Answer with the request's headers and body as the error message.
    pub(crate) echo: bool,
}

#[derive(Clone, Default)]
pub(crate) struct CannedState {
    pub(crate) answers: Arc<Mutex<HashMap<&'static str, Canned>>>,
    pub(crate) hits: Arc<Mutex<HashMap<String, u64>>>,
}

impl CannedState {
    fn set(&self, endpoint: &'static str, canned: Canned) {
        self.answers.lock().unwrap().insert(endpoint, canned);
    }

    fn hits(&self, path: &str) -> u64 {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

pub(crate) async fn canned_answer(State(s): State<CannedState>, req: Request) -> Response {
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

pub(crate) async fn canned_server() -> (Served, CannedState) {
    let state = CannedState::default();
    let app = Router::new()
        .fallback(canned_answer)
        .with_state(state.clone());
    (serve(app).await, state)
}

pub(crate) fn answer(status: u16, content_type: &str, body: &str) -> Canned {
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

pub(crate) fn error_body(message: &str) -> String {
    json!({"error": {"message": message}}).to_string()
}

pub(crate) fn dev_metadata() -> AdapterMetadata {
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

pub(crate) fn handle(report: &str) -> ScanHandle {
    ScanHandle {
        id: "scan-1".into(),
        report_mime_type: MimeType::parse(report).unwrap(),
        accept: report.to_owned(),
        sbom_media_type: None,
    }
}

#[tokio::test]
pub(crate) async fn metadata_answers_are_classified() {
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
pub(crate) async fn scan_answers_are_classified() {
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
pub(crate) async fn report_answers_are_classified() {
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
    assert_eq!(r.body.get(), json!("scanner says: 3 issues").to_string());
    assert_eq!(r.summary, None);
}

#[tokio::test]
pub(crate) async fn refresh_after_is_honoured_in_full_and_clamped() {
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
pub(crate) async fn redirects_are_never_followed() {
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
pub(crate) async fn response_size_is_capped() {
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
pub(crate) async fn credentials_never_appear_in_errors() {
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
