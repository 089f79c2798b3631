//! Helpers shared by the sections.

use super::*;

pub(crate) async fn json_of<T: serde::de::DeserializeOwned>(resp: reqwest::Response) -> T {
    serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap()
}

pub(crate) fn digest(n: u8) -> Digest {
    Digest::parse(&format!("sha256:{}", format!("{n:02x}").repeat(32))).unwrap()
}

pub(crate) fn submission(digest: &Digest, report: &str) -> ScanSubmission {
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

pub(crate) fn client(base: &str) -> AdapterClient {
    AdapterClient::new(
        base,
        AdapterCredentials::None,
        None,
        ClientOptions::default(),
    )
    .unwrap()
}

pub(crate) fn client_with(
    base: &str,
    creds: AdapterCredentials,
    options: ClientOptions,
) -> AdapterClient {
    AdapterClient::new(base, creds, None, options).unwrap()
}

pub(crate) async fn dev(config: DevScannerConfig) -> DevScannerHandle {
    DevScanner::start(config).await.unwrap()
}

pub(crate) async fn poll_until_ready(client: &AdapterClient, handle: &ScanHandle) -> (Report, u32) {
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

pub(crate) async fn scan_and_fetch(
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
