//! Conformance of the client and the development adapter against the specification.

use super::*;

#[tokio::test]
pub(crate) async fn client_and_dev_adapter_conform_to_v1_2() {
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
                let body: serde_json::Value = serde_json::from_str(report.body.get()).unwrap();
                let items = body["Results"][0]["Vulnerabilities"].as_array().unwrap();
                assert_eq!(items.len() as i64, expected.total());
            }
            _ => {
                assert_eq!(report.summary, None);
                let body: serde_json::Value = serde_json::from_str(report.body.get()).unwrap();
                assert_eq!(body["media_type"], mime::SBOM_CYCLONEDX_JSON);
                assert_eq!(body["sbom"]["bomFormat"], "CycloneDX");
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
pub(crate) async fn legacy_adapters_get_v1_0_requests() {
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
pub(crate) async fn dev_adapter_error_answers_conform() {
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
