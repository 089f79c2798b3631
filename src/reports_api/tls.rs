//! TLS for the report API: the serving certificate (from files, or self-signed with its CA
//! patched into the APIService), the rustls configuration that asks for the front proxy's
//! client certificate, and the bounded accept loop (the same limits as the health listener,
//! plus a handshake deadline).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::sync::{Semaphore, watch};

use super::authn::{FrontProxy, Peer, common_name};
use crate::http::{Limits, Tracked, idle};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "cannot read {path}: {source}; check --report-api-tls-cert-file and --report-api-tls-key-file"
    )]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM {what}: {reason}")]
    Pem {
        path: String,
        what: &'static str,
        reason: String,
    },
    #[error("cannot make a self-signed serving certificate: {0}")]
    SelfSigned(String),
    #[error("the serving certificate and key do not make a TLS configuration: {0}")]
    Config(String),
}

/// The serving certificate chain and key.
pub struct Serving {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The CA that signed a self-signed chain, PEM (for the APIService's `caBundle`).
    pub ca_pem: Option<String>,
}

impl Serving {
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| TlsError::Read {
                path: p.display().to_string(),
                source,
            })
        };
        let (cert_pem, key_pem) = (read(cert)?, read(key)?);
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem {
                path: cert.display().to_string(),
                what: "certificate",
                reason: e.to_string(),
            })?;
        if chain.is_empty() {
            return Err(TlsError::Pem {
                path: cert.display().to_string(),
                what: "certificate",
                reason: "none found".into(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
            path: key.display().to_string(),
            what: "private key",
            reason: e.to_string(),
        })?;
        Ok(Self {
            chain,
            key,
            ca_pem: None,
        })
    }

    /// A fresh CA and a serving certificate for `hosts` (DNS names or IP addresses) signed by it.
    pub fn self_signed(hosts: &[String]) -> Result<Self, TlsError> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let err = |e: rcgen::Error| TlsError::SelfSigned(e.to_string());
        let ca_key = KeyPair::generate().map_err(err)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.distinguished_name
            .push(DnType::CommonName, "scanreport-operator report API CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().map_err(err)?;
        let mut leaf = CertificateParams::new(hosts.to_vec()).map_err(err)?;
        leaf.distinguished_name
            .push(DnType::CommonName, "scanreport-operator report API");
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = leaf.signed_by(&key, &issuer).map_err(err)?;
        let key = PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|e| TlsError::SelfSigned(e.to_string()))?;
        Ok(Self {
            chain: vec![cert.der().clone(), ca_cert.der().clone()],
            key,
            ca_pem: Some(ca_cert.pem()),
        })
    }
}

/// The rustls configuration: our serving certificate, and a client certificate asked for and
/// checked against the request-header CA. A client without one still connects, so that it
/// gets a readable 401 instead of a failed handshake.
pub fn server_config(serving: &Serving, proxy: &FrontProxy) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        WebPkiClientVerifier::builder_with_provider(proxy.roots.clone(), provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(serving.chain.clone(), serving.key.clone_key())
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `router` over TLS on `listener` until `shutdown`. Each connection takes the newest
/// configuration from `configs` (a changed request-header CA applies to new connections) and
/// hands the verified client certificate's common name to the router as [`Peer`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    configs: watch::Receiver<Option<Arc<ServerConfig>>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    limits: Limits,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a connection on the report API listener");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!("report API listener at its connection cap; closing a new connection");
            continue;
        };
        let Some(config) = configs.borrow().clone() else {
            // Not ready to serve yet: the front-proxy CA is not loaded.
            continue;
        };
        let router = router.clone();
        tokio::spawn(async move {
            let _permit = permit;
            connection(stream, remote, config, router, limits).await;
        });
    }
}

async fn connection(
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    config: Arc<ServerConfig>,
    router: Router,
    limits: Limits,
) {
    let (tracked, activity, started) = Tracked::new(stream);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let tls = match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(tracked)).await
    {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, %remote, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%remote, "TLS handshake timed out");
            return;
        }
    };
    let peer = Peer {
        verified_common_name: tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(common_name),
    };
    let service = TowerToHyperService::new(router.layer(Extension(peer)));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let served = builder.serve_connection(TokioIo::new(tls), service);
    tokio::select! {
        result = served => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "report API connection ended");
            }
        }
        () = idle(activity, started, limits.idle_timeout) => {
            tracing::debug!("closing an idle report API connection");
        }
    }
}
