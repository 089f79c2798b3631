//! Credentials as the client holds them: the adapter's ([`AdapterCredentials`]) and the
//! registry's ([`RegistryAuthorization`]), every value in a [`Secret`] whose `Debug` and
//! `Display` print `***`. Reading them from Kubernetes Secrets is the controller's job
//! (`controller::credentials`).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::header::{HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};

/// Header for API-key authentication when `spec.auth.header` is not set.
pub const DEFAULT_API_KEY_HEADER: &str = "X-ScannerAdapter-API-Key";

/// A credential, held in a [`SecretString`] (zeroed when dropped). `Debug` and `Display` print
/// `***`; [`Secret::expose`] is the only way in.
#[derive(Clone, Default)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    /// The credential itself: only for putting it on the wire.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How the client authenticates to the adapter (a Scanner's `spec.auth`, resolved).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AdapterCredentials {
    #[default]
    None,
    /// `Authorization: Basic base64(username:password)`.
    Basic { username: Secret, password: Secret },
    /// `Authorization: Bearer <token>`.
    Bearer { token: Secret },
    /// `<header>: <key>`.
    ApiKey { header: HeaderName, key: Secret },
}

impl AdapterCredentials {
    /// The header this authentication sends, marked sensitive so that it is never logged.
    pub(crate) fn header(&self) -> Option<(HeaderName, HeaderValue)> {
        let (name, value) = match self {
            Self::None => return None,
            Self::Basic { username, password } => (
                reqwest::header::AUTHORIZATION,
                basic_header_value(username.expose(), password.expose()),
            ),
            Self::Bearer { token } => (
                reqwest::header::AUTHORIZATION,
                format!("Bearer {}", token.expose()),
            ),
            Self::ApiKey { header, key } => (header.clone(), key.expose().to_owned()),
        };
        // Values were checked for header-safe characters when the credentials were built.
        let mut value = HeaderValue::from_str(&value).ok()?;
        value.set_sensitive(true);
        Some((name, value))
    }

    /// Every secret string, to scrub from adapter error messages that might echo them.
    pub(crate) fn secrets(&self) -> Vec<String> {
        match self {
            Self::None => Vec::new(),
            Self::Basic { username, password } => vec![
                username.expose().to_owned(),
                password.expose().to_owned(),
                basic_header_value(username.expose(), password.expose()),
            ],
            Self::Bearer { token } => vec![token.expose().to_owned()],
            Self::ApiKey { key, .. } => vec![key.expose().to_owned()],
        }
    }

    /// The authentication type, for logs and status.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::None => "None",
            Self::Basic { .. } => "Basic",
            Self::Bearer { .. } => "Bearer",
            Self::ApiKey { .. } => "APIKey",
        }
    }
}

/// The `registry.authorization` value of a scan request: `Basic ...` or `Bearer ...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryAuthorization(Secret);

impl RegistryAuthorization {
    pub fn basic(username: &str, password: &str) -> Self {
        Self(Secret::new(basic_header_value(username, password)))
    }

    pub fn bearer(token: &str) -> Self {
        Self(Secret::new(format!("Bearer {token}")))
    }

    pub fn as_secret(&self) -> &Secret {
        &self.0
    }

    pub fn into_secret(self) -> Secret {
        self.0
    }
}

/// `Basic base64(username:password)`.
pub(crate) fn basic_header_value(username: &str, password: &str) -> String {
    format!(
        "Basic {}",
        STANDARD.encode(format!("{username}:{password}"))
    )
}
