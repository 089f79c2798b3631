//! Registry credentials of a ScanRequest, read from a Kubernetes Secret.
//!
//! Only Secret types made for registry credentials are accepted: a Secret of any other type
//! (say an `Opaque` one with database `username`/`password` keys) is never sent to a registry,
//! because the request's author names the registry URL. Docker config entries are matched to
//! the registry host the way Docker and containerd do. Values are held in [`SecretString`];
//! errors name Secret keys and registry hosts, never values.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

/// The ScanRequest field that names the credentials Secret, as error messages quote it.
pub const SECRET_REF_FIELD: &str = "spec.registry.credentialsSecretRef";

pub const TYPE_DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";
pub const TYPE_DOCKER_CFG: &str = "kubernetes.io/dockercfg";
pub const TYPE_BASIC_AUTH: &str = "kubernetes.io/basic-auth";

/// Credentials for one registry.
#[derive(Clone, Default)]
pub enum RegistryCredentials {
    /// No Secret: the registry is asked anonymously.
    #[default]
    Anonymous,
    /// A username and password, sent as Basic auth or to the registry's token service.
    Basic {
        username: SecretString,
        password: SecretString,
    },
    /// A registry bearer token (`registrytoken` of a Docker config entry).
    Bearer { token: SecretString },
}

impl fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}

impl RegistryCredentials {
    /// `anonymous`, `basic` or `bearer`: safe to log.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Anonymous => "anonymous",
            Self::Basic { .. } => "basic",
            Self::Bearer { .. } => "bearer",
        }
    }

    /// Every secret value these credentials hold, for [`crate::redact::Redactor`]: usernames
    /// too, since a robot account's name tells another tenant whose registry this is.
    pub fn secrets(&self) -> Vec<&str> {
        match self {
            Self::Anonymous => Vec::new(),
            Self::Basic { username, password } => {
                vec![username.expose_secret(), password.expose_secret()]
            }
            Self::Bearer { token } => vec![token.expose_secret()],
        }
    }

    /// The credentials for `registry_host` (`host[:port]`, as [`registry_host`] returns) from
    /// a Secret of an accepted type.
    pub fn from_secret(secret: &Secret, registry_host: &str) -> Result<Self, CredentialsError> {
        let name = secret.metadata.name.clone().unwrap_or_default();
        let empty = BTreeMap::new();
        let data = secret.data.as_ref().unwrap_or(&empty);
        Self::from_parts(&name, secret.type_.as_deref(), data, registry_host)
    }

    /// [`Self::from_secret`] on a Secret's parts: its name, type and `data`.
    pub fn from_parts(
        secret_name: &str,
        secret_type: Option<&str>,
        data: &BTreeMap<String, ByteString>,
        registry_host: &str,
    ) -> Result<Self, CredentialsError> {
        let secret = secret_name.to_owned();
        match secret_type {
            Some(TYPE_DOCKER_CONFIG_JSON) => {
                docker_config(&secret, data, ".dockerconfigjson", registry_host)
            }
            Some(TYPE_DOCKER_CFG) => docker_config(&secret, data, ".dockercfg", registry_host),
            Some(TYPE_BASIC_AUTH) => {
                let username = text(&secret, data, "username")?;
                let password = text(&secret, data, "password")?;
                basic(&secret, "username", username, password)
            }
            other => Err(CredentialsError::UnsupportedSecretType {
                secret,
                secret_type: other.unwrap_or("Opaque").to_owned(),
            }),
        }
    }
}

/// Why a Secret yields no registry credentials. Messages name keys and hosts, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error(
        "{SECRET_REF_FIELD}: Secret {secret} has type {secret_type}; registry credentials are read only from Secrets of type {TYPE_DOCKER_CONFIG_JSON}, {TYPE_DOCKER_CFG} or {TYPE_BASIC_AUTH}: create one (e.g. `kubectl create secret docker-registry`) and name it here"
    )]
    UnsupportedSecretType { secret: String, secret_type: String },
    #[error("{SECRET_REF_FIELD}: Secret {secret} has no key `{key}`; add it to the Secret's data")]
    MissingKey { secret: String, key: String },
    #[error(
        "{SECRET_REF_FIELD}: the key `{key}` of Secret {secret} is empty or not UTF-8 text; store the credential as plain text"
    )]
    NotText { secret: String, key: String },
    #[error(
        "{SECRET_REF_FIELD}: the key `{key}` of Secret {secret} contains control characters such as a line break, which HTTP cannot carry; remove them (a trailing newline from `echo` is a common cause)"
    )]
    ControlCharacters { secret: String, key: String },
    #[error(
        "{SECRET_REF_FIELD}: the username in the key `{key}` of Secret {secret} contains `:`, which Basic authentication cannot carry; use the account's real name"
    )]
    ColonInUsername { secret: String, key: String },
    #[error(
        "{SECRET_REF_FIELD}: the key `{key}` of Secret {secret} is not a valid Docker config ({reason}); recreate it with `kubectl create secret docker-registry`"
    )]
    MalformedDockerConfig {
        secret: String,
        key: &'static str,
        reason: String,
    },
    #[error(
        "{SECRET_REF_FIELD}: the key `{key}` of Secret {secret} has no entry for the registry host {host} (entries: {hosts}); add an entry for exactly that host[:port]"
    )]
    NoEntryForHost {
        secret: String,
        key: &'static str,
        host: String,
        hosts: String,
    },
    #[error(
        "{SECRET_REF_FIELD}: the entry for {host} in Secret {secret} holds only an `identitytoken`, which the operator cannot exchange; use a username and password or a `registrytoken`"
    )]
    IdentityTokenOnly { secret: String, host: String },
}

/// `host[:port]` of a registry URL or Docker config key: scheme and path dropped, host
/// lowercased, port kept as written (Docker and containerd match the port exactly).
pub fn registry_host(url_or_key: &str) -> Option<String> {
    let trimmed = url_or_key.trim();
    let rest = trimmed
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(trimmed);
    let authority = rest.split('/').next()?;
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    Some(authority.to_ascii_lowercase())
}

/// Docker Hub answers to several names; `docker login` stores `https://index.docker.io/v1/`.
fn docker_hub(host: &str) -> bool {
    matches!(
        host,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
}

fn text<'a>(
    secret: &str,
    data: &'a BTreeMap<String, ByteString>,
    key: &str,
) -> Result<&'a str, CredentialsError> {
    let raw = data.get(key).ok_or_else(|| CredentialsError::MissingKey {
        secret: secret.to_owned(),
        key: key.to_owned(),
    })?;
    std::str::from_utf8(&raw.0)
        .ok()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| CredentialsError::NotText {
            secret: secret.to_owned(),
            key: key.to_owned(),
        })
}

fn basic(
    secret: &str,
    key: &str,
    username: &str,
    password: &str,
) -> Result<RegistryCredentials, CredentialsError> {
    for value in [username, password] {
        if value.chars().any(char::is_control) {
            return Err(CredentialsError::ControlCharacters {
                secret: secret.to_owned(),
                key: key.to_owned(),
            });
        }
    }
    if username.contains(':') {
        return Err(CredentialsError::ColonInUsername {
            secret: secret.to_owned(),
            key: key.to_owned(),
        });
    }
    Ok(RegistryCredentials::Basic {
        username: SecretString::from(username),
        password: SecretString::from(password),
    })
}

fn docker_config(
    secret: &str,
    data: &BTreeMap<String, ByteString>,
    key: &'static str,
    host: &str,
) -> Result<RegistryCredentials, CredentialsError> {
    let raw = data.get(key).ok_or_else(|| CredentialsError::MissingKey {
        secret: secret.to_owned(),
        key: key.to_owned(),
    })?;
    let malformed = |reason: String| CredentialsError::MalformedDockerConfig {
        secret: secret.to_owned(),
        key,
        reason,
    };
    // Walked as an untyped value: serde's typed errors quote the offending value, which could
    // be a password. The JSON error's position is safe to show.
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

    let host = host.to_ascii_lowercase();
    let exact = auths
        .iter()
        .find(|(k, _)| registry_host(k).as_deref() == Some(host.as_str()));
    let entry = exact.or_else(|| {
        docker_hub(&host)
            .then(|| {
                auths
                    .iter()
                    .find(|(k, _)| registry_host(k).is_some_and(|h| docker_hub(&h)))
            })
            .flatten()
    });
    let Some((entry_key, entry)) = entry else {
        let mut hosts: Vec<String> = auths.keys().filter_map(|k| registry_host(k)).collect();
        hosts.sort_unstable();
        return Err(CredentialsError::NoEntryForHost {
            secret: secret.to_owned(),
            key,
            host,
            hosts: if hosts.is_empty() {
                "none".into()
            } else {
                hosts.join(", ")
            },
        });
    };
    let entry_host = registry_host(entry_key).unwrap_or_default();
    let field = |name: &str| -> Result<Option<&str>, CredentialsError> {
        match entry.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(malformed(format!(
                "the entry for {entry_host} has a `{name}` that is not a string"
            ))),
        }
    };
    if let Some(auth) = field("auth")? {
        let decoded = STANDARD
            .decode(auth.trim())
            .or_else(|_| STANDARD_NO_PAD.decode(auth.trim()))
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| {
                malformed(format!(
                    "the `auth` of the entry for {entry_host} is not base64 of UTF-8 text"
                ))
            })?;
        let (username, password) = decoded.split_once(':').ok_or_else(|| {
            malformed(format!(
                "the `auth` of the entry for {entry_host} is not base64 of `username:password`"
            ))
        })?;
        return basic(secret, key, username, password);
    }
    match (field("username")?, field("password")?) {
        (Some(username), Some(password)) => return basic(secret, key, username, password),
        (Some(_), None) | (None, Some(_)) => {
            return Err(malformed(format!(
                "the entry for {entry_host} has only one of `username` and `password`"
            )));
        }
        (None, None) => {}
    }
    if let Some(token) = field("registrytoken")? {
        if token.chars().any(char::is_control) {
            return Err(CredentialsError::ControlCharacters {
                secret: secret.to_owned(),
                key: key.to_owned(),
            });
        }
        return Ok(RegistryCredentials::Bearer {
            token: SecretString::from(token),
        });
    }
    if field("identitytoken")?.is_some() {
        return Err(CredentialsError::IdentityTokenOnly {
            secret: secret.to_owned(),
            host: entry_host,
        });
    }
    Err(malformed(format!(
        "the entry for {entry_host} has no `auth`, `username`/`password` or `registrytoken`"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(key: &str, value: &str) -> BTreeMap<String, ByteString> {
        BTreeMap::from([(key.to_owned(), ByteString(value.as_bytes().to_vec()))])
    }

    fn dockerconfig(json: &str) -> BTreeMap<String, ByteString> {
        data(".dockerconfigjson", json)
    }

    fn basic_of(creds: &RegistryCredentials) -> (String, String) {
        match creds {
            RegistryCredentials::Basic { username, password } => (
                username.expose_secret().to_owned(),
                password.expose_secret().to_owned(),
            ),
            other => panic!("expected basic credentials, got {other:?}"),
        }
    }

    fn auth(user: &str, pass: &str) -> String {
        STANDARD.encode(format!("{user}:{pass}"))
    }

    #[test]
    fn only_registry_secret_types_are_accepted_and_the_error_names_the_field() {
        let pairs = BTreeMap::from([
            ("username".to_owned(), ByteString(b"db".to_vec())),
            ("password".to_owned(), ByteString(b"hunter2".to_vec())),
        ]);
        for secret_type in [
            Some("Opaque"),
            None,
            Some("kubernetes.io/service-account-token"),
        ] {
            let err = RegistryCredentials::from_parts("db", secret_type, &pairs, "reg.example")
                .unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(err, CredentialsError::UnsupportedSecretType { .. }),
                "{msg}"
            );
            assert!(msg.contains(SECRET_REF_FIELD), "{msg}");
            assert!(msg.contains(TYPE_DOCKER_CONFIG_JSON), "{msg}");
            assert!(msg.contains(TYPE_DOCKER_CFG), "{msg}");
            assert!(msg.contains(TYPE_BASIC_AUTH), "{msg}");
            assert!(!msg.contains("hunter2"), "{msg}");
        }
        let creds =
            RegistryCredentials::from_parts("db", Some(TYPE_BASIC_AUTH), &pairs, "r").unwrap();
        assert_eq!(basic_of(&creds), ("db".into(), "hunter2".into()));
    }

    #[test]
    fn docker_config_entries_match_the_exact_host_and_port_with_or_without_scheme() {
        let json = format!(
            r#"{{"auths":{{
                "https://reg.example:5000/v1/":{{"auth":"{}"}},
                "reg.example":{{"username":"plain","password":"p1"}},
                "http://other.example":{{"auth":"{}"}}
            }}}}"#,
            auth("withport", "p2"),
            auth("other", "p3")
        );
        let cfg = dockerconfig(&json);
        let get = |host: &str| {
            RegistryCredentials::from_parts("s", Some(TYPE_DOCKER_CONFIG_JSON), &cfg, host)
        };
        assert_eq!(basic_of(&get("reg.example:5000").unwrap()).0, "withport");
        assert_eq!(basic_of(&get("REG.example").unwrap()).0, "plain");
        assert_eq!(basic_of(&get("other.example").unwrap()).1, "p3");
        // A different port is a different registry.
        let err = get("reg.example:443").unwrap_err();
        assert!(
            matches!(err, CredentialsError::NoEntryForHost { .. }),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("reg.example:443") && msg.contains("other.example"),
            "{msg}"
        );
        assert!(!msg.contains("p1") && !msg.contains("withport"), "{msg}");
        // A suffix or prefix of a host is not that host.
        assert!(get("example").is_err());
        assert!(get("evil-reg.example").is_err());
    }

    #[test]
    fn docker_hub_alias_matches_every_docker_hub_name() {
        let json = format!(
            r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{}"}}}}}}"#,
            auth("hubuser", "hubpass")
        );
        let cfg = dockerconfig(&json);
        for host in ["docker.io", "index.docker.io", "registry-1.docker.io"] {
            let creds =
                RegistryCredentials::from_parts("s", Some(TYPE_DOCKER_CONFIG_JSON), &cfg, host)
                    .unwrap();
            assert_eq!(basic_of(&creds).0, "hubuser");
        }
        assert!(
            RegistryCredentials::from_parts("s", Some(TYPE_DOCKER_CONFIG_JSON), &cfg, "quay.io")
                .is_err()
        );
    }

    #[test]
    fn legacy_dockercfg_and_registry_tokens_are_read() {
        let cfg = data(
            ".dockercfg",
            &format!(
                r#"{{"reg.example":{{"auth":"{}"}}}}"#,
                auth("u", "p:with:colons")
            ),
        );
        let creds =
            RegistryCredentials::from_parts("s", Some(TYPE_DOCKER_CFG), &cfg, "reg.example")
                .unwrap();
        assert_eq!(basic_of(&creds), ("u".into(), "p:with:colons".into()));

        let cfg = dockerconfig(r#"{"auths":{"reg.example":{"registrytoken":"tok"}}}"#);
        let creds = RegistryCredentials::from_parts(
            "s",
            Some(TYPE_DOCKER_CONFIG_JSON),
            &cfg,
            "reg.example",
        )
        .unwrap();
        assert_eq!(creds.kind(), "bearer");
        assert_eq!(creds.secrets(), vec!["tok"]);

        let cfg = dockerconfig(r#"{"auths":{"reg.example":{"identitytoken":"refresh"}}}"#);
        let err = RegistryCredentials::from_parts(
            "s",
            Some(TYPE_DOCKER_CONFIG_JSON),
            &cfg,
            "reg.example",
        )
        .unwrap_err();
        assert!(
            matches!(err, CredentialsError::IdentityTokenOnly { .. }),
            "{err}"
        );
    }

    #[test]
    fn malformed_secrets_give_errors_without_secret_values() {
        let cases: Vec<(Option<&str>, BTreeMap<String, ByteString>)> = vec![
            (
                Some(TYPE_DOCKER_CONFIG_JSON),
                dockerconfig(r#"{"auths":{"reg.example":{"auth":"s3cr3t!!"}}}"#),
            ),
            (
                Some(TYPE_DOCKER_CONFIG_JSON),
                dockerconfig(r#"{"auths": "s3cr3t"}"#),
            ),
            (
                Some(TYPE_DOCKER_CONFIG_JSON),
                dockerconfig(r#"{"auths":{"reg.example":{"password":"s3cr3t"}}}"#),
            ),
            (
                Some(TYPE_DOCKER_CONFIG_JSON),
                dockerconfig(r#"{"auths":{"reg.example":{"auth":"s3cr3t"#),
            ),
            (Some(TYPE_DOCKER_CONFIG_JSON), data("other", "s3cr3t")),
            (Some(TYPE_BASIC_AUTH), data("username", "s3cr3t")),
            (
                Some(TYPE_DOCKER_CONFIG_JSON),
                dockerconfig(&format!(
                    r#"{{"auths":{{"reg.example":{{"auth":"{}"}}}}}}"#,
                    auth("user", "s3cr3t\n")
                )),
            ),
            (
                Some(TYPE_DOCKER_CONFIG_JSON),
                dockerconfig(r#"{"auths":{"reg.example":{"username":"a:b","password":"s3cr3t"}}}"#),
            ),
        ];
        for (secret_type, data) in cases {
            let err = RegistryCredentials::from_parts("creds", secret_type, &data, "reg.example")
                .unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(SECRET_REF_FIELD), "{msg}");
            assert!(msg.contains("creds"), "{msg}");
            assert!(!msg.contains("s3cr3t"), "{msg}");
        }
    }

    #[test]
    fn credentials_never_print_their_values() {
        let creds = RegistryCredentials::Basic {
            username: "robot".into(),
            password: "pw".into(),
        };
        assert_eq!(format!("{creds:?}"), "basic");
    }

    #[test]
    fn registry_host_drops_scheme_and_path_and_refuses_userinfo() {
        assert_eq!(
            registry_host("https://Reg.Example:5000/v2/").as_deref(),
            Some("reg.example:5000")
        );
        assert_eq!(registry_host("reg.example").as_deref(), Some("reg.example"));
        assert_eq!(registry_host("https://user:pw@reg.example"), None);
        assert_eq!(registry_host("https://"), None);
    }
}
