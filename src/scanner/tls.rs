//! TLS of the adapter client: rustls with the `ring` provider (as kube uses), the web PKI roots
//! plus a Scanner's CA bundle, and telling TLS failures that retrying cannot fix.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::error::ScannerError;

/// The rustls client configuration: `ring`, web PKI roots plus the Scanner's CA bundle.
pub(super) fn tls_config(ca_bundle: Option<&str>) -> Result<rustls::ClientConfig, ScannerError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(bundle) = ca_bundle.filter(|b| !b.trim().is_empty()) {
        let invalid = |reason: String| ScannerError::InvalidCaBundle { reason };
        let mut added = 0usize;
        for cert in CertificateDer::pem_slice_iter(bundle.as_bytes()) {
            let cert = cert.map_err(|e| invalid(format!("cannot parse PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| invalid(format!("not a usable CA certificate: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(invalid("no `CERTIFICATE` block found".into()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ScannerError::InvalidCaBundle {
            reason: format!("TLS set-up failed: {e}"),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // reqwest leaves ALPN of a preconfigured config alone.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A TLS failure that retrying will not fix (certificate, protocol or plain-HTTP peer), with its
/// description.
pub(super) fn tls_failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        let rustls_err = err.downcast_ref::<rustls::Error>().or_else(|| {
            err.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(r) = rustls_err {
            return matches!(
                r,
                rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::UnsupportedNameType
                    | rustls::Error::PeerIncompatible(_)
                    | rustls::Error::InvalidMessage(_)
                    | rustls::Error::InvalidCertRevocationList(_)
            )
            .then(|| r.to_string());
        }
        // io::Error::source skips the error it wraps; hyper nests io errors two deep.
        current = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}
