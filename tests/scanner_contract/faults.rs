//! Faults, authentication, TLS and caching against the development adapter.

use super::*;

#[tokio::test]
pub(crate) async fn transient_faults_then_success() {
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
pub(crate) async fn malformed_answers_are_permanent() {
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
pub(crate) async fn a_lost_scan_is_resubmitted() {
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
pub(crate) async fn timeouts_and_refused_connections_are_transient() {
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
pub(crate) async fn adapter_authentication() {
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

pub(crate) struct TestPki {
    pub(crate) ca_pem: String,
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
}

pub(crate) fn test_pki() -> TestPki {
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
pub(crate) async fn tls_with_a_private_ca() {
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
pub(crate) async fn metadata_cache_honours_its_ttl() {
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
pub(crate) async fn dev_adapter_http_controls() {
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
