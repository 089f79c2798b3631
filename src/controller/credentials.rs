//! Credentials from Kubernetes Secrets for the adapter: how the operator authenticates to an
//! adapter (a Scanner's `spec.auth`, whose Secret is read from `--cluster-resource-namespace`).
//! Registry credentials come from `crate::registry`, which accepts only registry Secret types.
//!
//! The parser is pure: it takes a Secret's `data` map, so it is testable alone, and the
//! scanner client only ever sees the resulting credentials. Every credential is held in a
//! [`Secret`], whose `Debug` and `Display` print `***`; errors name the Secret key that is
//! wrong, never its value.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use reqwest::header::HeaderName;

use crate::api::{ScannerAuth, ScannerAuthType};
use crate::scanner::auth::{AdapterCredentials, DEFAULT_API_KEY_HEADER, Secret};

/// Why a Secret cannot be turned into credentials. Messages name Secret keys, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error(
        "spec.auth.type is {auth_type} but no Secret was given; set spec.auth.secretRef to a Secret with the key(s) {keys}"
    )]
    MissingSecret {
        auth_type: &'static str,
        keys: &'static str,
    },
    #[error("the Secret has no key `{key}`, which {purpose} needs; add it to the Secret's data")]
    MissingKey { key: String, purpose: &'static str },
    #[error("the Secret's key `{key}` is empty; put the credential in it")]
    EmptyValue { key: String },
    #[error("the Secret's key `{key}` is not UTF-8 text; store the credential as plain text")]
    NotUtf8 { key: String },
    #[error(
        "the Secret's key `{key}` contains control characters such as a line break, which an HTTP header cannot carry; remove them (a trailing newline from `echo` is a common cause)"
    )]
    ControlCharacters { key: String },
    #[error(
        "the username in the Secret's key `{key}` contains `:`, which Basic authentication cannot carry"
    )]
    ColonInUsername { key: String },
    #[error(
        "spec.auth.header {header:?} is not a valid HTTP header name; use a token such as {DEFAULT_API_KEY_HEADER}"
    )]
    InvalidHeaderName { header: String },
}

/// Resolves the adapter credentials from a Scanner's `spec.auth` and its Secret's `data`.
///
/// `auth` absent or of type `None` needs no Secret. Keys: `username` and `password` (Basic),
/// `token` (Bearer), `apiKey` (APIKey, sent in `spec.auth.header`, by default
/// [`DEFAULT_API_KEY_HEADER`]).
pub fn adapter_credentials(
    auth: Option<&ScannerAuth>,
    data: Option<&BTreeMap<String, ByteString>>,
) -> Result<AdapterCredentials, CredentialsError> {
    let Some(auth) = auth else {
        return Ok(AdapterCredentials::None);
    };
    let need = |auth_type, keys| data.ok_or(CredentialsError::MissingSecret { auth_type, keys });
    match auth.auth_type {
        ScannerAuthType::None => Ok(AdapterCredentials::None),
        ScannerAuthType::Basic => {
            let data = need("Basic", "`username` and `password`")?;
            let purpose = "Basic authentication to the scanner adapter";
            let username = required(data, "username", purpose)?;
            if username.contains(':') {
                return Err(CredentialsError::ColonInUsername {
                    key: "username".into(),
                });
            }
            let password = required(data, "password", purpose)?;
            Ok(AdapterCredentials::Basic {
                username: Secret::new(username),
                password: Secret::new(password),
            })
        }
        ScannerAuthType::Bearer => {
            let data = need("Bearer", "`token`")?;
            let token = required(
                data,
                "token",
                "Bearer authentication to the scanner adapter",
            )?;
            Ok(AdapterCredentials::Bearer {
                token: Secret::new(token),
            })
        }
        ScannerAuthType::ApiKey => {
            let header_name = auth.header.as_deref().unwrap_or(DEFAULT_API_KEY_HEADER);
            let header = HeaderName::from_bytes(header_name.as_bytes()).map_err(|_| {
                CredentialsError::InvalidHeaderName {
                    header: header_name.to_owned(),
                }
            })?;
            let data = need("APIKey", "`apiKey`")?;
            let key = required(
                data,
                "apiKey",
                "API-key authentication to the scanner adapter",
            )?;
            Ok(AdapterCredentials::ApiKey {
                header,
                key: Secret::new(key),
            })
        }
    }
}

/// [`adapter_credentials`] from a whole Secret object.
pub fn adapter_credentials_from_secret(
    auth: Option<&ScannerAuth>,
    secret: Option<&k8s_openapi::api::core::v1::Secret>,
) -> Result<AdapterCredentials, CredentialsError> {
    let empty = BTreeMap::new();
    let data = secret.map(|s| s.data.as_ref().unwrap_or(&empty));
    adapter_credentials(auth, data)
}

fn required(
    data: &BTreeMap<String, ByteString>,
    key: &str,
    purpose: &'static str,
) -> Result<String, CredentialsError> {
    let raw = data.get(key).ok_or_else(|| CredentialsError::MissingKey {
        key: key.to_owned(),
        purpose,
    })?;
    let value = String::from_utf8(raw.0.clone()).map_err(|_| CredentialsError::NotUtf8 {
        key: key.to_owned(),
    })?;
    if value.is_empty() {
        return Err(CredentialsError::EmptyValue {
            key: key.to_owned(),
        });
    }
    check_header_safe(&value, key)?;
    Ok(value)
}

fn check_header_safe(value: &str, key: &str) -> Result<(), CredentialsError> {
    if value.chars().any(char::is_control) {
        return Err(CredentialsError::ControlCharacters {
            key: key.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::LocalSecretReference;
    use crate::scanner::RegistryAuthorization;

    fn data(pairs: &[(&str, &[u8])]) -> BTreeMap<String, ByteString> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), ByteString(v.to_vec())))
            .collect()
    }

    fn auth(auth_type: ScannerAuthType, header: Option<&str>) -> ScannerAuth {
        ScannerAuth {
            auth_type,
            secret_ref: Some(LocalSecretReference {
                name: "adapter".into(),
            }),
            header: header.map(str::to_owned),
        }
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        let creds = AdapterCredentials::Basic {
            username: Secret::new("admin"),
            password: Secret::new("hunter2"),
        };
        let debug = format!("{creds:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("admin"),
            "{debug}"
        );
        let reg = RegistryAuthorization::bearer("tok3n");
        assert!(!format!("{reg:?}").contains("tok3n"));
    }

    #[test]
    fn adapter_auth_types() {
        assert_eq!(
            adapter_credentials(None, None),
            Ok(AdapterCredentials::None)
        );
        assert_eq!(
            adapter_credentials(Some(&auth(ScannerAuthType::None, None)), None),
            Ok(AdapterCredentials::None)
        );

        let basic = adapter_credentials(
            Some(&auth(ScannerAuthType::Basic, None)),
            Some(&data(&[("username", b"admin"), ("password", b"pw")])),
        )
        .unwrap();
        let (name, value) = basic.header().unwrap();
        assert_eq!(name, reqwest::header::AUTHORIZATION);
        assert_eq!(value.to_str().unwrap(), "Basic YWRtaW46cHc=");
        assert!(value.is_sensitive());

        let bearer = adapter_credentials(
            Some(&auth(ScannerAuthType::Bearer, None)),
            Some(&data(&[("token", b"t0k")])),
        )
        .unwrap();
        assert_eq!(bearer.header().unwrap().1.to_str().unwrap(), "Bearer t0k");

        let key = adapter_credentials(
            Some(&auth(ScannerAuthType::ApiKey, None)),
            Some(&data(&[("apiKey", b"k3y")])),
        )
        .unwrap();
        let (name, value) = key.header().unwrap();
        assert_eq!(name.as_str(), "x-scanneradapter-api-key");
        assert_eq!(value.to_str().unwrap(), "k3y");

        let custom = adapter_credentials(
            Some(&auth(ScannerAuthType::ApiKey, Some("X-Api-Token"))),
            Some(&data(&[("apiKey", b"k3y")])),
        )
        .unwrap();
        assert_eq!(custom.header().unwrap().0.as_str(), "x-api-token");
    }

    #[test]
    fn adapter_auth_errors_name_the_key() {
        let err = adapter_credentials(
            Some(&auth(ScannerAuthType::Basic, None)),
            Some(&data(&[("username", b"admin")])),
        )
        .unwrap_err();
        assert!(err.to_string().contains("no key `password`"), "{err}");

        let err =
            adapter_credentials(Some(&auth(ScannerAuthType::Bearer, None)), None).unwrap_err();
        assert!(err.to_string().contains("`token`"), "{err}");

        let err = adapter_credentials(
            Some(&auth(ScannerAuthType::Bearer, None)),
            Some(&data(&[("token", b"s3cr3t\n")])),
        )
        .unwrap_err();
        assert!(matches!(err, CredentialsError::ControlCharacters { .. }));
        assert!(!err.to_string().contains("s3cr3t"));

        let err = adapter_credentials(
            Some(&auth(ScannerAuthType::ApiKey, None)),
            Some(&data(&[("apiKey", &[0xff, 0xfe])])),
        )
        .unwrap_err();
        assert!(err.to_string().contains("`apiKey` is not UTF-8"), "{err}");

        let err = adapter_credentials(
            Some(&auth(ScannerAuthType::ApiKey, Some("bad header"))),
            Some(&data(&[("apiKey", b"k")])),
        )
        .unwrap_err();
        assert!(matches!(err, CredentialsError::InvalidHeaderName { .. }));

        let err = adapter_credentials(
            Some(&auth(ScannerAuthType::Bearer, None)),
            Some(&data(&[("token", b"")])),
        )
        .unwrap_err();
        assert!(matches!(err, CredentialsError::EmptyValue { .. }));
    }
}
