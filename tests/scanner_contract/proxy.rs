//! A recording proxy between the client and an adapter, and the check of every exchange
//! against the specification.

use super::*;

#[derive(Clone, Debug)]
pub(crate) struct Exchange {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    pub(crate) req_headers: HeaderMap,
    pub(crate) req_body: Bytes,
    pub(crate) status: u16,
    pub(crate) resp_headers: HeaderMap,
    pub(crate) resp_body: Bytes,
}

#[derive(Clone)]
pub(crate) struct Recorder {
    pub(crate) upstream: String,
    pub(crate) http: reqwest::Client,
    pub(crate) log: Arc<Mutex<Vec<Exchange>>>,
}

/// A reqwest client for test plumbing: ring provider, no redirects.
pub(crate) fn plain_http() -> reqwest::Client {
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

pub(crate) async fn forward(State(r): State<Recorder>, req: Request) -> Response {
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

pub(crate) struct Served {
    pub(crate) base: String,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) async fn serve(app: Router) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Served { base, task }
}

pub(crate) async fn recorder(upstream: &str) -> (Served, Arc<Mutex<Vec<Exchange>>>) {
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
pub(crate) fn check_exchange(specs: &[Spec], ex: &Exchange) -> BTreeSet<&'static str> {
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
