//! Credentials from Kubernetes Secrets: how the operator authenticates to an adapter (a
//! Scanner's `spec.auth`), and how the adapter authenticates to the registry that holds the
//! artifact (a ScanRequest's `credentialsSecretRef`).
//!
//! The parsers are pure: they take a Secret's `data` map, so they are testable alone, and the
//! scanner client only ever sees the resulting credentials. Every credential is held in a
//! [`Secret`], whose `Debug` and `Display` print `***`; errors name the Secret key that is
//! wrong, never its value.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use k8s_openapi::ByteString;
use reqwest::header::HeaderName;
use serde_json::Value;

use crate::api::{ScannerAuth, ScannerAuthType};
use crate::scanner::auth::{
    AdapterCredentials, DEFAULT_API_KEY_HEADER, RegistryAuthorization, Secret,
};

/// Secret types accepted for registry credentials.
pub const SECRET_TYPE_DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";
pub const SECRET_TYPE_DOCKER_CFG: &str = "kubernetes.io/dockercfg";
pub const SECRET_TYPE_BASIC_AUTH: &str = "kubernetes.io/basic-auth";
pub const SECRET_TYPE_OPAQUE: &str = "Opaque";

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
    #[error(
        "registry credentials Secret has type {secret_type:?}; use a Secret of type {SECRET_TYPE_DOCKER_CONFIG_JSON} or {SECRET_TYPE_BASIC_AUTH}"
    )]
    UnsupportedSecretType { secret_type: String },
    #[error(
        "registry credentials Secret has neither `.dockerconfigjson` nor `username` and `password`; create it with `kubectl create secret docker-registry` or as type {SECRET_TYPE_BASIC_AUTH}"
    )]
    NoRegistryCredentials,
    #[error("the Secret's key `{key}` is not a valid Docker config: {reason}")]
    MalformedDockerConfig { key: &'static str, reason: String },
    #[error(
        "the Secret's key `{key}` has no credentials for registry host {host}; it has entries for: {hosts}"
    )]
    NoCredentialsForHost {
        key: &'static str,
        host: String,
        hosts: String,
    },
    #[error("the registry URL of the ScanRequest has no host: {reason}")]
    InvalidRegistryUrl { reason: String },
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

/// Resolves the `registry.authorization` value for an artifact in the registry at
/// `registry_url` from a ScanRequest's credentials Secret.
///
/// * `kubernetes.io/dockerconfigjson` (`.dockerconfigjson`) or `kubernetes.io/dockercfg`
///   (`.dockercfg`): the entry whose key names the registry host, with or without scheme and
///   path (`host`, `host:port`, `https://host/v1/`); `auth` (base64 `user:password`) or
///   `username` and `password` give `Basic ...`, `registrytoken` gives `Bearer ...`.
/// * `kubernetes.io/basic-auth`: `username` and `password` give `Basic ...`.
/// * `Opaque` or no type: whichever of the above keys the Secret has.
pub fn registry_authorization(
    secret_type: Option<&str>,
    data: &BTreeMap<String, ByteString>,
    registry_url: &str,
) -> Result<RegistryAuthorization, CredentialsError> {
    match secret_type.filter(|t| !t.is_empty()) {
        Some(SECRET_TYPE_DOCKER_CONFIG_JSON) => {
            docker_config(data, ".dockerconfigjson", registry_url)
        }
        Some(SECRET_TYPE_DOCKER_CFG) => docker_config(data, ".dockercfg", registry_url),
        Some(SECRET_TYPE_BASIC_AUTH) => basic_auth(data),
        None | Some(SECRET_TYPE_OPAQUE) => {
            if data.contains_key(".dockerconfigjson") {
                docker_config(data, ".dockerconfigjson", registry_url)
            } else if data.contains_key(".dockercfg") {
                docker_config(data, ".dockercfg", registry_url)
            } else if data.contains_key("username") || data.contains_key("password") {
                basic_auth(data)
            } else {
                Err(CredentialsError::NoRegistryCredentials)
            }
        }
        Some(other) => Err(CredentialsError::UnsupportedSecretType {
            secret_type: other.to_owned(),
        }),
    }
}

/// [`registry_authorization`] from a whole Secret object.
pub fn registry_authorization_from_secret(
    secret: &k8s_openapi::api::core::v1::Secret,
    registry_url: &str,
) -> Result<RegistryAuthorization, CredentialsError> {
    let empty = BTreeMap::new();
    registry_authorization(
        secret.type_.as_deref(),
        secret.data.as_ref().unwrap_or(&empty),
        registry_url,
    )
}

fn basic_auth(
    data: &BTreeMap<String, ByteString>,
) -> Result<RegistryAuthorization, CredentialsError> {
    let purpose = "Basic authentication to the registry";
    let username = required(data, "username", purpose)?;
    if username.contains(':') {
        return Err(CredentialsError::ColonInUsername {
            key: "username".into(),
        });
    }
    let password = required(data, "password", purpose)?;
    Ok(RegistryAuthorization::basic(&username, &password))
}

fn docker_config(
    data: &BTreeMap<String, ByteString>,
    key: &'static str,
    registry_url: &str,
) -> Result<RegistryAuthorization, CredentialsError> {
    let host = registry_host(registry_url)?;
    let raw = data.get(key).ok_or_else(|| CredentialsError::MissingKey {
        key: key.to_owned(),
        purpose: "registry authentication",
    })?;
    let malformed = |reason: String| CredentialsError::MalformedDockerConfig { key, reason };
    // Parsed as an untyped value and walked by hand: serde's typed errors quote the offending
    // value, which could be a password.
    let config: Value = serde_json::from_slice(&raw.0).map_err(|e| {
        malformed(format!(
            "{:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    let auths = if key == ".dockercfg" {
        config.as_object()
    } else {
        config.get("auths").and_then(Value::as_object)
    }
    .ok_or_else(|| malformed("expected an object with an `auths` object".into()))?;

    let entry = auths
        .iter()
        .find(|(k, _)| config_key_host(k).as_deref() == Some(host.as_str()))
        .or_else(|| {
            let alias = docker_hub_alias(&host)?;
            auths
                .iter()
                .find(|(k, _)| config_key_host(k).and_then(|h| docker_hub_alias(&h)) == Some(alias))
        });
    let Some((entry_key, entry)) = entry else {
        let mut hosts: Vec<&str> = auths.keys().map(String::as_str).collect();
        hosts.sort_unstable();
        return Err(CredentialsError::NoCredentialsForHost {
            key,
            host,
            hosts: if hosts.is_empty() {
                "(none)".into()
            } else {
                hosts.join(", ")
            },
        });
    };
    let field = |name: &str| -> Result<Option<&str>, CredentialsError> {
        match entry.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(malformed(format!(
                "the entry for {entry_key} has a `{name}` that is not a string"
            ))),
        }
    };
    if let Some(auth) = field("auth")? {
        let decoded = STANDARD
            .decode(auth.trim())
            .or_else(|_| STANDARD_NO_PAD.decode(auth.trim()))
            .map_err(|_| {
                malformed(format!(
                    "the `auth` of the entry for {entry_key} is not valid base64"
                ))
            })?;
        let decoded = String::from_utf8(decoded).map_err(|_| {
            malformed(format!(
                "the `auth` of the entry for {entry_key} is not UTF-8 text"
            ))
        })?;
        let (username, password) = decoded.split_once(':').ok_or_else(|| {
            malformed(format!(
                "the `auth` of the entry for {entry_key} is not base64 of `username:password`"
            ))
        })?;
        check_header_safe(username, "auth")?;
        check_header_safe(password, "auth")?;
        return Ok(RegistryAuthorization::basic(username, password));
    }
    match (field("username")?, field("password")?) {
        (Some(username), Some(password)) => {
            check_header_safe(username, "username")?;
            check_header_safe(password, "password")?;
            if username.contains(':') {
                return Err(CredentialsError::ColonInUsername {
                    key: format!("{key} username"),
                });
            }
            return Ok(RegistryAuthorization::basic(username, password));
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(malformed(format!(
                "the entry for {entry_key} has only one of `username` and `password`"
            )));
        }
        (None, None) => {}
    }
    if let Some(token) = field("registrytoken")? {
        check_header_safe(token, "registrytoken")?;
        return Ok(RegistryAuthorization::bearer(token));
    }
    Err(malformed(format!(
        "the entry for {entry_key} has no `auth`, `username`/`password` or `registrytoken`"
    )))
}

/// `host[:port]` of a registry URL, lowercase, without a default port.
fn registry_host(url: &str) -> Result<String, CredentialsError> {
    let with_scheme = if url.contains("://") {
        url.to_owned()
    } else {
        format!("https://{url}")
    };
    let parsed =
        reqwest::Url::parse(&with_scheme).map_err(|e| CredentialsError::InvalidRegistryUrl {
            reason: e.to_string(),
        })?;
    let host = parsed.host_str().filter(|h| !h.is_empty()).ok_or_else(|| {
        CredentialsError::InvalidRegistryUrl {
            reason: "no host".into(),
        }
    })?;
    let authority = match parsed.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    // Normalised like the config keys, so `http://host:443` meets a `host` key.
    config_key_host(&authority).ok_or_else(|| CredentialsError::InvalidRegistryUrl {
        reason: "no host".into(),
    })
}

/// The `host[:port]` a Docker config key names: `host`, `host:port`, `https://host/v1/`.
fn config_key_host(key: &str) -> Option<String> {
    let rest = key
        .trim()
        .strip_prefix("https://")
        .or_else(|| key.trim().strip_prefix("http://"))
        .unwrap_or(key.trim());
    let authority = rest.split('/').next()?.to_ascii_lowercase();
    if authority.is_empty() {
        return None;
    }
    let authority = authority
        .strip_suffix(":443")
        .or_else(|| authority.strip_suffix(":80"))
        .map(str::to_owned)
        .unwrap_or(authority);
    Some(authority)
}

/// Docker Hub answers to several names; `docker login` stores `https://index.docker.io/v1/`.
fn docker_hub_alias(host: &str) -> Option<&'static str> {
    matches!(
        host,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
    .then_some("docker.io")
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
    use crate::api::NamespacedSecretReference;

    fn data(pairs: &[(&str, &[u8])]) -> BTreeMap<String, ByteString> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), ByteString(v.to_vec())))
            .collect()
    }

    fn auth(auth_type: ScannerAuthType, header: Option<&str>) -> ScannerAuth {
        ScannerAuth {
            auth_type,
            secret_ref: Some(NamespacedSecretReference {
                namespace: "ns".into(),
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

    fn dockerconfig(json: &str) -> BTreeMap<String, ByteString> {
        data(&[(".dockerconfigjson", json.as_bytes())])
    }

    fn expose(r: Result<RegistryAuthorization, CredentialsError>) -> String {
        r.unwrap().as_secret().expose().to_owned()
    }

    #[test]
    fn docker_config_matches_the_registry_host() {
        // base64("robot$ci:pa:ss")
        let auth = STANDARD.encode("robot$ci:pa:ss");
        let json = format!(
            r#"{{"auths":{{"other.example":{{"auth":"eDp5"}},"https://Core.Harbor.Domain/v1/":{{"auth":"{auth}"}}}}}}"#
        );
        let got = expose(registry_authorization(
            Some(SECRET_TYPE_DOCKER_CONFIG_JSON),
            &dockerconfig(&json),
            "https://core.harbor.domain",
        ));
        assert_eq!(got, format!("Basic {auth}"));

        let json = r#"{"auths":{"reg.example:5000":{"username":"u","password":"p"}}}"#;
        let got = expose(registry_authorization(
            Some(SECRET_TYPE_DOCKER_CONFIG_JSON),
            &dockerconfig(json),
            "http://reg.example:5000/some/path",
        ));
        assert_eq!(got, "Basic dTpw");

        let json = r#"{"auths":{"reg.example:443":{"registrytoken":"tok"}}}"#;
        let got = expose(registry_authorization(
            None,
            &dockerconfig(json),
            "https://reg.example",
        ));
        assert_eq!(got, "Bearer tok");

        let json = r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"}}}"#;
        let got = expose(registry_authorization(
            Some(SECRET_TYPE_DOCKER_CONFIG_JSON),
            &dockerconfig(json),
            "https://registry-1.docker.io",
        ));
        assert_eq!(got, "Basic dTpw");

        let legacy = data(&[(".dockercfg", br#"{"reg.example":{"auth":"dTpw"}}"#)]);
        let got = expose(registry_authorization(
            Some(SECRET_TYPE_DOCKER_CFG),
            &legacy,
            "https://reg.example",
        ));
        assert_eq!(got, "Basic dTpw");
    }

    #[test]
    fn basic_auth_secret() {
        let got = expose(registry_authorization(
            Some(SECRET_TYPE_BASIC_AUTH),
            &data(&[("username", b"u"), ("password", b"p")]),
            "https://reg.example",
        ));
        assert_eq!(got, "Basic dTpw");
        let got = expose(registry_authorization(
            Some(SECRET_TYPE_OPAQUE),
            &data(&[("username", b"u"), ("password", b"p")]),
            "https://reg.example",
        ));
        assert_eq!(got, "Basic dTpw");
    }

    #[test]
    fn registry_errors_never_contain_secret_bytes() {
        let secret = "hunter2-S3CRET";
        let b64 = STANDARD.encode(format!("user:{secret}"));
        let cases: Vec<(Option<&str>, BTreeMap<String, ByteString>)> = vec![
            // Not JSON at all, with the secret in it.
            (
                Some(SECRET_TYPE_DOCKER_CONFIG_JSON),
                dockerconfig(&format!("{{\"auths\": {secret}")),
            ),
            // Typed wrong: a number where a string belongs, next to the secret.
            (
                Some(SECRET_TYPE_DOCKER_CONFIG_JSON),
                dockerconfig(&format!(
                    r#"{{"auths":{{"reg.example":{{"username":"{secret}","password":12}}}}}}"#
                )),
            ),
            // `auth` that is not base64.
            (
                Some(SECRET_TYPE_DOCKER_CONFIG_JSON),
                dockerconfig(&format!(
                    r#"{{"auths":{{"reg.example":{{"auth":"{secret}!"}}}}}}"#
                )),
            ),
            // `auth` that decodes to something without a colon.
            (
                Some(SECRET_TYPE_DOCKER_CONFIG_JSON),
                dockerconfig(&format!(
                    r#"{{"auths":{{"reg.example":{{"auth":"{}"}}}}}}"#,
                    STANDARD.encode(secret)
                )),
            ),
            // Credentials only for another host.
            (
                Some(SECRET_TYPE_DOCKER_CONFIG_JSON),
                dockerconfig(&format!(
                    r#"{{"auths":{{"other.example":{{"auth":"{b64}"}}}}}}"#
                )),
            ),
            // A password with a newline.
            (
                Some(SECRET_TYPE_BASIC_AUTH),
                data(&[
                    ("username", b"u"),
                    ("password", format!("{secret}\n").as_bytes()),
                ]),
            ),
            // Only one half.
            (
                Some(SECRET_TYPE_BASIC_AUTH),
                data(&[("password", secret.as_bytes())]),
            ),
            (
                Some("kubernetes.io/tls"),
                data(&[("tls.key", secret.as_bytes())]),
            ),
            (None, data(&[("token", secret.as_bytes())])),
        ];
        for (ty, data) in cases {
            let err = registry_authorization(ty, &data, "https://reg.example").unwrap_err();
            let text = format!("{err} {err:?}");
            assert!(!text.contains(secret), "{text}");
            assert!(!text.contains(&b64), "{text}");
            assert!(!text.contains("aHVudGVy"), "{text}");
        }
    }

    #[test]
    fn docker_config_errors_are_helpful() {
        let json = r#"{"auths":{"a.example":{"auth":"dTpw"},"b.example":{"auth":"dTpw"}}}"#;
        let err =
            registry_authorization(None, &dockerconfig(json), "https://reg.example").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the Secret's key `.dockerconfigjson` has no credentials for registry host reg.example; it has entries for: a.example, b.example"
        );
        let err = registry_authorization(
            Some(SECRET_TYPE_DOCKER_CONFIG_JSON),
            &BTreeMap::new(),
            "https://reg.example",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("no key `.dockerconfigjson`"),
            "{err}"
        );
    }

    #[test]
    fn config_keys_normalise() {
        assert_eq!(
            config_key_host("https://Reg.Example:443/v1/").as_deref(),
            Some("reg.example")
        );
        assert_eq!(
            config_key_host("reg.example:5000").as_deref(),
            Some("reg.example:5000")
        );
        assert_eq!(config_key_host("http://").as_deref(), None);
        assert_eq!(
            registry_host("reg.example:5000/x").unwrap(),
            "reg.example:5000"
        );
        assert_eq!(
            registry_host("https://REG.example:443").unwrap(),
            "reg.example"
        );
    }
}
