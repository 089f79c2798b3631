//! Delegated authentication, as every aggregated API server does it: the kube-apiserver's
//! aggregator connects with its front-proxy client certificate and names the user in request
//! headers. The CA that signs that certificate, the names it may carry and the header names
//! come from the `extension-apiserver-authentication` ConfigMap in `kube-system`, which the
//! kube-apiserver publishes ([`FrontProxy::from_config_map`]).
//!
//! A request counts as authenticated only when its TLS connection presented a certificate that
//! chains to that CA (checked by rustls during the handshake) and whose common name is allowed.
//! Everything else, including identity headers sent straight to our port, is refused with 401.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::HeaderMap;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The ConfigMap the kube-apiserver publishes for extension API servers.
pub const CONFIG_MAP: &str = "extension-apiserver-authentication";

#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    #[error(
        "ConfigMap {CONFIG_MAP} has no requestheader-client-ca-file: start the kube-apiserver with --requestheader-client-ca-file and the --proxy-client-* flags, so the aggregator can reach the report API"
    )]
    NoRequestHeaderCa,
    #[error(
        "ConfigMap {CONFIG_MAP}: {key} is not a JSON list of strings ({reason}); it is written by the kube-apiserver, check its --requestheader-* flags"
    )]
    BadList { key: &'static str, reason: String },
    #[error(
        "ConfigMap {CONFIG_MAP}: requestheader-client-ca-file holds no usable certificate: {0}"
    )]
    BadCa(String),
    #[error(
        "the request came without a front-proxy client certificate: call the report API through the Kubernetes API server"
    )]
    NoClientCertificate,
    #[error("the client certificate's common name {0:?} is not in requestheader-allowed-names")]
    NameNotAllowed(String),
    #[error("the front proxy sent no user name")]
    NoUser,
}

/// The identity the aggregator vouches for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct User {
    pub name: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// What the TLS handshake learnt of the client: the common name of a certificate that chains
/// to the request-header CA, when one was presented.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    pub verified_common_name: Option<String>,
}

/// The request-header authentication settings.
#[derive(Debug, Clone)]
pub struct FrontProxy {
    pub roots: Arc<RootCertStore>,
    /// Common names the front-proxy certificate may carry; empty: any the CA signed.
    pub allowed_names: Vec<String>,
    pub username_headers: Vec<String>,
    pub uid_headers: Vec<String>,
    pub group_headers: Vec<String>,
    pub extra_prefixes: Vec<String>,
    /// The CA bundle text, to notice when it changes.
    pub ca_pem: String,
}

impl FrontProxy {
    pub fn from_config_map(data: &BTreeMap<String, String>) -> Result<Self, AuthnError> {
        let ca_pem = data
            .get("requestheader-client-ca-file")
            .filter(|s| !s.trim().is_empty())
            .ok_or(AuthnError::NoRequestHeaderCa)?
            .clone();
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            let cert = cert.map_err(|e| AuthnError::BadCa(e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| AuthnError::BadCa(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(AuthnError::BadCa("no PEM certificate found".into()));
        }
        let list = |key: &'static str, default: &[&str]| -> Result<Vec<String>, AuthnError> {
            match data.get(key).filter(|s| !s.trim().is_empty()) {
                None => Ok(default.iter().map(|s| (*s).to_owned()).collect()),
                Some(text) => serde_json::from_str(text).map_err(|e| AuthnError::BadList {
                    key,
                    reason: e.to_string(),
                }),
            }
        };
        Ok(Self {
            roots: Arc::new(roots),
            allowed_names: list("requestheader-allowed-names", &[])?,
            username_headers: list("requestheader-username-headers", &["X-Remote-User"])?,
            uid_headers: list("requestheader-uid-headers", &[])?,
            group_headers: list("requestheader-group-headers", &["X-Remote-Group"])?,
            extra_prefixes: list("requestheader-extra-headers-prefix", &["X-Remote-Extra-"])?,
            ca_pem,
        })
    }

    /// The user of a request on a connection whose handshake gave `peer`.
    pub fn identify(&self, peer: &Peer, headers: &HeaderMap) -> Result<User, AuthnError> {
        let name = peer
            .verified_common_name
            .as_deref()
            .ok_or(AuthnError::NoClientCertificate)?;
        if !self.allowed_names.is_empty() && !self.allowed_names.iter().any(|n| n == name) {
            return Err(AuthnError::NameNotAllowed(name.to_owned()));
        }
        let first = |names: &[String]| {
            names.iter().find_map(|h| {
                headers
                    .get(h.as_str())
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
                    .filter(|v| !v.is_empty())
            })
        };
        let user = first(&self.username_headers).ok_or(AuthnError::NoUser)?;
        let uid = first(&self.uid_headers);
        let groups = self
            .group_headers
            .iter()
            .flat_map(|h| headers.get_all(h.as_str()))
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect();
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (key, value) in headers {
            let key = key.as_str();
            let Some(rest) = self.extra_prefixes.iter().find_map(|p| {
                key.get(..p.len())
                    .filter(|head| head.eq_ignore_ascii_case(p))
                    .map(|_| &key[p.len()..])
            }) else {
                continue;
            };
            if let Ok(value) = value.to_str() {
                extra
                    .entry(percent_decode(rest).to_ascii_lowercase())
                    .or_default()
                    .push(value.to_owned());
            }
        }
        Ok(User {
            name: user,
            uid,
            groups,
            extra,
        })
    }
}

/// Extra keys are percent-encoded by the front proxy (a key may hold `/`).
fn percent_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("k={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| text.to_owned())
}

/// The common name of a DER certificate.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    parsed
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ca() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    fn proxy(extra: &[(&str, &str)]) -> FrontProxy {
        let mut data = BTreeMap::from([
            ("requestheader-client-ca-file".to_owned(), ca()),
            (
                "requestheader-allowed-names".to_owned(),
                r#"["front-proxy-client"]"#.to_owned(),
            ),
        ]);
        for (k, v) in extra {
            data.insert((*k).to_owned(), (*v).to_owned());
        }
        FrontProxy::from_config_map(&data).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn peer(cn: &str) -> Peer {
        Peer {
            verified_common_name: Some(cn.to_owned()),
        }
    }

    #[test]
    fn the_front_proxy_names_the_user_groups_and_extras() {
        let p = proxy(&[]);
        let user = p
            .identify(
                &peer("front-proxy-client"),
                &headers(&[
                    ("X-Remote-User", "alice"),
                    ("X-Remote-Group", "team-a"),
                    ("X-Remote-Group", "system:authenticated"),
                    ("X-Remote-Extra-Scopes%2fA", "read"),
                ]),
            )
            .unwrap();
        assert_eq!(user.name, "alice");
        assert_eq!(user.groups, ["team-a", "system:authenticated"]);
        assert_eq!(user.extra["scopes/a"], ["read"]);
    }

    #[test]
    fn identity_headers_without_the_proxy_certificate_are_refused() {
        let p = proxy(&[]);
        let h = headers(&[("X-Remote-User", "system:admin")]);
        assert!(matches!(
            p.identify(&Peer::default(), &h),
            Err(AuthnError::NoClientCertificate)
        ));
        assert!(matches!(
            p.identify(&peer("someone-else"), &h),
            Err(AuthnError::NameNotAllowed(_))
        ));
        assert!(matches!(
            p.identify(&peer("front-proxy-client"), &HeaderMap::new()),
            Err(AuthnError::NoUser)
        ));
    }

    #[test]
    fn custom_header_names_from_the_config_map_are_used() {
        let p = proxy(&[
            ("requestheader-username-headers", r#"["X-Who"]"#),
            ("requestheader-group-headers", r#"["X-Teams"]"#),
        ]);
        let user = p
            .identify(
                &peer("front-proxy-client"),
                &headers(&[("X-Who", "bob"), ("X-Teams", "b"), ("X-Remote-User", "eve")]),
            )
            .unwrap();
        assert_eq!(user.name, "bob");
        assert_eq!(user.groups, ["b"]);
    }

    #[test]
    fn a_config_map_without_the_request_header_ca_is_a_clear_error() {
        let e = FrontProxy::from_config_map(&BTreeMap::new()).unwrap_err();
        assert!(
            e.to_string().contains("--requestheader-client-ca-file"),
            "{e}"
        );
        let bad = BTreeMap::from([
            ("requestheader-client-ca-file".to_owned(), ca()),
            ("requestheader-allowed-names".to_owned(), "front".to_owned()),
        ]);
        let e = FrontProxy::from_config_map(&bad).unwrap_err();
        assert!(e.to_string().contains("requestheader-allowed-names"), "{e}");
    }
}
