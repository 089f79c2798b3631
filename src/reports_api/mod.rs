//! The report API: `reports.scanreport.io/v1alpha1`, an aggregated API that serves the stored
//! reports as read-only, namespaced Kubernetes objects, so teams read their findings with
//! `kubectl` under the cluster's RBAC while the bodies stay in PostgreSQL.
//!
//! ```text
//!  kubectl ──► kube-apiserver ──(aggregator: front-proxy client cert + X-Remote-User/Group)──►
//!      report API (this module, on every replica)
//!        ├─ authn   the front-proxy certificate, checked against kube-system's
//!        │          extension-apiserver-authentication ConfigMap
//!        ├─ authz   SubjectAccessReview per verb/namespace/resource (cached 10 s)
//!        ├─ feed    one ScanRequest watch → which reports each request references
//!        └─ store   metadata from the columns (list), the body streamed in pieces (get)
//! ```
//!
//! * [`names`]: kinds, object names and labels (pure).
//! * [`objects`]: the served objects and `kubectl get` tables (pure).
//! * [`selector`]: label and field selectors (pure).
//! * [`discovery`]: discovery documents and OpenAPI v2/v3 (pure).
//! * [`authn`], [`authz`]: delegated authentication and authorization.
//! * [`feed`]: the shared ScanRequest view and the watch events.
//! * [`server`]: the request handler.
//! * [`tls`]: serving certificates, client-certificate TLS, the accept loop.

pub mod authn;
pub mod authz;
pub mod discovery;
pub mod feed;
pub mod names;
pub mod objects;
pub mod selector;
pub mod server;
pub mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

use crate::store::Store;
use authn::FrontProxy;
use tls::Serving;

/// Flags of the report API (part of `scanreport-operator run`).
#[derive(Debug, Clone, clap::Args)]
pub struct ReportApiConfig {
    /// Serve the aggregated report API (reports.scanreport.io) over TLS on this address. Every
    /// replica serves it, the leader and the standbys alike: it only reads.
    #[arg(long = "report-api-listen", env = "REPORT_API_LISTEN")]
    pub api_listen: Option<SocketAddr>,
    /// PEM serving certificate (chain) of the report API. Without it (and the key) the
    /// operator makes a self-signed one and patches its CA into the APIService's caBundle,
    /// which suits one replica.
    #[arg(
        long = "report-api-tls-cert-file",
        env = "REPORT_API_TLS_CERT_FILE",
        requires = "api_tls_key_file"
    )]
    pub api_tls_cert_file: Option<PathBuf>,
    /// PEM private key of the serving certificate.
    #[arg(
        long = "report-api-tls-key-file",
        env = "REPORT_API_TLS_KEY_FILE",
        requires = "api_tls_cert_file"
    )]
    pub api_tls_key_file: Option<PathBuf>,
    /// The APIService whose caBundle a self-signed certificate's CA is patched into.
    #[arg(
        long = "report-api-apiservice",
        default_value = "v1alpha1.reports.scanreport.io"
    )]
    pub apiservice: String,
    /// Namespace of the extension-apiserver-authentication ConfigMap.
    #[arg(
        long = "report-api-authentication-namespace",
        default_value = "kube-system"
    )]
    pub authentication_namespace: String,
    /// Report bodies streamed at once (each holds a database connection while it streams).
    #[arg(long = "report-api-max-body-streams", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub max_body_streams: u16,
    /// Size of one piece of a streamed body, in KiB (the memory a body stream holds is two).
    #[arg(long = "report-api-body-chunk-kib", default_value_t = 256, value_parser = clap::value_parser!(u16).range(4..=8192))]
    pub body_chunk_kib: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportApiError {
    #[error(
        "cannot listen on {addr} for the report API: {source}; pick a free address with --report-api-listen"
    )]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(
        "cannot read APIService {name}: {source}; create it (the chart does) or pass --report-api-tls-cert-file and --report-api-tls-key-file"
    )]
    ApiService {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "cannot patch the caBundle of APIService {name}: {source}; the operator needs patch on apiservices, or pass certificate files"
    )]
    PatchCaBundle {
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Binds the listener now (a taken port fails start-up) and returns the server future.
pub async fn serve(
    config: &ReportApiConfig,
    addr: SocketAddr,
    client: kube::Client,
    store: Store,
    namespaces: &[String],
    shutdown: CancellationToken,
) -> Result<impl std::future::Future<Output = ()> + use<>, ReportApiError> {
    let serving = match (&config.api_tls_cert_file, &config.api_tls_key_file) {
        (Some(cert), Some(key)) => Serving::from_files(cert, key)?,
        _ => self_signed(&client, &config.apiservice).await?,
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ReportApiError::Listen { addr, source })?;
    tracing::info!(%addr, "serving the report API (reports.scanreport.io/v1alpha1)");

    let (proxy_tx, proxy_rx) = watch::channel::<Option<Arc<FrontProxy>>>(None);
    let (tls_tx, tls_rx) = watch::channel(None);
    tokio::spawn(load_front_proxy(
        client.clone(),
        config.authentication_namespace.clone(),
        serving,
        proxy_tx,
        tls_tx,
        shutdown.clone(),
    ));

    let v3 = discovery::openapi_v3().to_string();
    let state = Arc::new(server::ApiState {
        feed: feed::Feed::start(client.clone(), store.clone(), namespaces, shutdown.clone()),
        store,
        authn: proxy_rx,
        authz: authz::Authorizer::new(client),
        bodies: Arc::new(Semaphore::new(usize::from(config.max_body_streams))),
        body_chunk: usize::from(config.body_chunk_kib) * 1024,
        openapi_v3_index: Bytes::from(discovery::openapi_v3_index(v3.as_bytes()).to_string()),
        openapi_v3: Bytes::from(v3),
        openapi_v2: Bytes::from(discovery::openapi_v2().to_string()),
    });
    let router = Router::new().fallback(server::handle).with_state(state);
    let limits = crate::http::Limits {
        header_read_timeout: Duration::from_secs(10),
        // Watches may be quiet for long; they end by their own timeout (at most 1 h).
        idle_timeout: Duration::from_secs(3660),
        max_connections: 512,
    };
    Ok(tls::serve(
        listener,
        router,
        tls_rx,
        shutdown.cancelled_owned(),
        limits,
    ))
}

/// A self-signed serving certificate for the APIService's Service, whose CA goes into the
/// APIService's `caBundle`.
async fn self_signed(client: &kube::Client, name: &str) -> Result<Serving, ReportApiError> {
    use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
    let api: Api<APIService> = Api::all(client.clone());
    let service = api
        .get(name)
        .await
        .map_err(|source| ReportApiError::ApiService {
            name: name.to_owned(),
            source,
        })?;
    let mut hosts = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    if let Some(svc) = service.spec.as_ref().and_then(|s| s.service.as_ref()) {
        let (svc_name, ns) = (
            svc.name.clone().unwrap_or_default(),
            svc.namespace.clone().unwrap_or_default(),
        );
        // The aggregator checks the certificate for <service>.<namespace>.svc.
        hosts.push(format!("{svc_name}.{ns}.svc"));
        hosts.push(format!("{svc_name}.{ns}.svc.cluster.local"));
    }
    let serving = Serving::self_signed(&hosts)?;
    let ca = serving.ca_pem.clone().unwrap_or_default();
    let patch = serde_json::json!({ "spec": { "caBundle": base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD, ca.as_bytes()) } });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| ReportApiError::PatchCaBundle {
            name: name.to_owned(),
            source,
        })?;
    tracing::info!(apiservice = %name, "patched the self-signed report API CA into the APIService");
    Ok(serving)
}

/// Loads the front-proxy settings, then checks every minute for a changed CA.
async fn load_front_proxy(
    client: kube::Client,
    namespace: String,
    serving: Serving,
    proxy_tx: watch::Sender<Option<Arc<FrontProxy>>>,
    tls_tx: watch::Sender<Option<Arc<rustls::ServerConfig>>>,
    shutdown: CancellationToken,
) {
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let mut last_ca = String::new();
    loop {
        let delay = match api.get(authn::CONFIG_MAP).await {
            Ok(cm) => {
                let data: BTreeMap<String, String> = cm.data.unwrap_or_default();
                match FrontProxy::from_config_map(&data) {
                    Ok(proxy) if proxy.ca_pem == last_ca => Duration::from_secs(60),
                    Ok(proxy) => match tls::server_config(&serving, &proxy) {
                        Ok(config) => {
                            last_ca = proxy.ca_pem.clone();
                            tls_tx.send_replace(Some(config));
                            proxy_tx.send_replace(Some(Arc::new(proxy)));
                            tracing::info!("report API: front-proxy CA loaded");
                            Duration::from_secs(60)
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "report API: cannot build the TLS configuration");
                            Duration::from_secs(10)
                        }
                    },
                    Err(e) => {
                        tracing::error!(error = %e, "report API: front-proxy settings unusable");
                        Duration::from_secs(10)
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, namespace = %namespace, configmap = authn::CONFIG_MAP,
                    "report API: cannot read the front-proxy settings; the operator needs the extension-apiserver-authentication-reader Role in kube-system");
                Duration::from_secs(10)
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}
