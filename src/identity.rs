//! Deterministic report identity: the public contract shared with other tools.
//!
//! A report is identified by the tuple (digest, registration UUID, report MIME type). Harbor gives
//! each report a random UUID and races on the tuple's unique constraint; we derive the id from the
//! tuple instead, so every writer computes the same primary key and one upsert settles any race.
//!
//! * Namespace UUID: UUIDv5(DNS, `"scanreport.io"`) = [`NAMESPACE`].
//! * Report id: UUIDv5([`NAMESPACE`], `digest + "\n" + registration_uuid + "\n" + canonical_mime`).
//! * Default scanner registration: UUIDv5([`NAMESPACE`], `"scanner:" + scanner_name`).

use std::fmt;

use uuid::Uuid;

/// UUIDv5(DNS namespace, "scanreport.io"). Checked by a unit test.
pub const NAMESPACE: Uuid = Uuid::from_u128(0x2fc52dc7_e6a3_5021_8b83_eb6b8b0781d5);

/// Why an identity input was rejected. Messages name the input and the expected form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "invalid MIME type {input:?}: {reason}; expected `type/subtype` optionally followed by `; name=value` parameters"
    )]
    MimeType { input: String, reason: &'static str },
    #[error(
        "invalid digest {input:?}: expected `sha256:` followed by 64 hex characters or `sha512:` followed by 128 hex characters"
    )]
    Digest { input: String },
    #[error(
        "invalid registration UUID {input:?}: expected a UUID such as 17748d4e-7fd6-5309-9b80-06f1b6427570"
    )]
    RegistrationUuid { input: String },
    #[error("invalid scanner name {input:?}: must not be empty")]
    ScannerName { input: String },
}

/// A MIME type in canonical form. Construct with [`MimeType::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MimeType(String);

impl MimeType {
    /// Canonicalises a MIME type: lowercase `type/subtype`, then each parameter as `; name=value`
    /// with the name lowercased and the value trimmed and unquoted, parameters sorted by name.
    /// A value that is not a plain token after unquoting stays quoted so the form is unambiguous.
    pub fn parse(input: &str) -> Result<Self, IdentityError> {
        let err = |reason| IdentityError::MimeType {
            input: input.to_owned(),
            reason,
        };
        let mut parts = split_params(input).map_err(err)?.into_iter();
        let essence = parts.next().unwrap_or_default();
        let (ty, sub) = essence.split_once('/').ok_or(err("missing `/`"))?;
        let (ty, sub) = (ty.trim(), sub.trim());
        if !is_restricted_name(ty) || !is_restricted_name(sub) {
            return Err(err("type and subtype must be non-empty tokens"));
        }
        let mut params: Vec<(String, String)> = Vec::new();
        for raw in parts {
            let (name, value) = raw.split_once('=').ok_or(err("parameter without `=`"))?;
            let name = name.trim().to_ascii_lowercase();
            if !is_token(&name) {
                return Err(err("parameter name must be a token"));
            }
            let value = unquote(value.trim()).ok_or(err("malformed parameter value"))?;
            if value.is_empty() {
                return Err(err("empty parameter value"));
            }
            if params.iter().any(|(n, _)| *n == name) {
                return Err(err("duplicate parameter"));
            }
            params.push((name, value));
        }
        params.sort();
        let mut out = format!("{}/{}", ty.to_ascii_lowercase(), sub.to_ascii_lowercase());
        for (name, value) in params {
            out.push_str("; ");
            out.push_str(&name);
            out.push('=');
            if is_token(&value) {
                out.push_str(&value);
            } else {
                out.push('"');
                out.push_str(&value.replace('\\', "\\\\").replace('"', "\\\""));
                out.push('"');
            }
        }
        Ok(Self(out))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `type/subtype` without parameters.
    pub fn essence(&self) -> &str {
        self.0.split(';').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for MimeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for MimeType {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// An artifact digest in canonical form (`sha256:` + 64 hex or `sha512:` + 128 hex, lowercase).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    pub fn parse(input: &str) -> Result<Self, IdentityError> {
        let lower = input.trim().to_ascii_lowercase();
        let ok = match lower.split_once(':') {
            Some(("sha256", hex)) => hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
            Some(("sha512", hex)) => hex.len() == 128 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
            _ => false,
        };
        if ok {
            Ok(Self(lower))
        } else {
            Err(IdentityError::Digest {
                input: input.to_owned(),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses a registration UUID in any form `uuid` accepts; it is used lowercase and hyphenated.
pub fn parse_registration_uuid(input: &str) -> Result<Uuid, IdentityError> {
    Uuid::parse_str(input.trim()).map_err(|_| IdentityError::RegistrationUuid {
        input: input.to_owned(),
    })
}

/// The registration UUID of a Scanner that has no `spec.registrationUUID`: stable across deletes
/// and re-applies, so GitOps round trips keep every report id.
pub fn default_registration_uuid(scanner_name: &str) -> Result<Uuid, IdentityError> {
    if scanner_name.trim().is_empty() {
        return Err(IdentityError::ScannerName {
            input: scanner_name.to_owned(),
        });
    }
    Ok(Uuid::new_v5(
        &NAMESPACE,
        format!("scanner:{scanner_name}").as_bytes(),
    ))
}

/// The deterministic report id of the tuple (digest, registration UUID, report MIME type).
pub fn report_id(digest: &Digest, registration_uuid: &Uuid, mime_type: &MimeType) -> Uuid {
    let name = format!(
        "{}\n{}\n{}",
        digest.as_str(),
        registration_uuid.hyphenated(),
        mime_type.as_str()
    );
    Uuid::new_v5(&NAMESPACE, name.as_bytes())
}

/// The tuple a report is stored under: (digest, scanner registration UUID, report MIME type).
/// One key type for the store, the scan jobs and the controller.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReportKey {
    pub digest: Digest,
    pub registration_uuid: Uuid,
    pub mime_type: MimeType,
}

impl ReportKey {
    /// The report's deterministic id.
    pub fn report_id(&self) -> Uuid {
        report_id(&self.digest, &self.registration_uuid, &self.mime_type)
    }
}

/// RFC 2045 token: visible ASCII except tspecials.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b))
}

/// RFC 6838 restricted-name, used for type and subtype.
fn is_restricted_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && s.len() <= 127
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
}

/// Splits on `;` outside quoted strings. Empty segments (a trailing `;`) are dropped.
fn split_params(input: &str) -> Result<Vec<String>, &'static str> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut escaped) = (false, false);
    for c in input.chars() {
        if !c.is_ascii() || (c.is_ascii_control() && c != '\t') {
            return Err("contains non-ASCII or control characters");
        }
        match (c, quoted, escaped) {
            (_, true, true) => escaped = false,
            ('\\', true, false) => escaped = true,
            ('"', _, false) => quoted = !quoted,
            (';', false, _) => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if quoted {
        return Err("unterminated quoted string");
    }
    parts.push(cur);
    let mut iter = parts.into_iter();
    let essence = iter.next().unwrap_or_default();
    let mut out = vec![essence];
    out.extend(iter.filter(|p| !p.trim().is_empty()));
    Ok(out)
}

/// Removes surrounding quotes and backslash escapes; `None` for a malformed quoted string or a
/// bare value that is not a token.
fn unquote(v: &str) -> Option<String> {
    let Some(inner) = v.strip_prefix('"') else {
        return is_token(v).then(|| v.to_owned());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const VULN: &str = "application/vnd.security.vulnerability.report; version=1.1";

    #[test]
    fn namespace_is_uuidv5_of_dns_name() {
        assert_eq!(
            NAMESPACE,
            Uuid::new_v5(&Uuid::NAMESPACE_DNS, b"scanreport.io")
        );
        assert_eq!(
            NAMESPACE.to_string(),
            "2fc52dc7-e6a3-5021-8b83-eb6b8b0781d5"
        );
    }

    #[test]
    fn check_values_from_the_contract() {
        let reg = default_registration_uuid("trivy").unwrap();
        assert_eq!(reg.to_string(), "17748d4e-7fd6-5309-9b80-06f1b6427570");
        let digest = Digest::parse(&format!("sha256:{}", "a".repeat(64))).unwrap();
        let id = report_id(&digest, &reg, &MimeType::parse(VULN).unwrap());
        assert_eq!(id.to_string(), "55f3e644-2f08-55e3-8eb9-31b82c35f4b3");
    }

    #[test]
    fn mime_types_canonicalise() {
        for input in [
            "application/vnd.security.vulnerability.report;version=1.1",
            "Application/Vnd.Security.Vulnerability.Report;  Version=\"1.1\"",
            " application/vnd.security.vulnerability.report ; version = 1.1 ;",
        ] {
            assert_eq!(MimeType::parse(input).unwrap().as_str(), VULN, "{input}");
        }
        assert_eq!(
            MimeType::parse("application/vnd.scanner.adapter.vuln.report.raw")
                .unwrap()
                .as_str(),
            "application/vnd.scanner.adapter.vuln.report.raw"
        );
        assert_eq!(
            MimeType::parse("a/b; Z=1; a=\"x y\"").unwrap().as_str(),
            "a/b; a=\"x y\"; z=1"
        );
    }

    #[test]
    fn garbage_mime_types_are_rejected() {
        for input in [
            "",
            "application",
            "/json",
            "application/",
            "app lication/json",
            "application/json; version",
            "application/json; version=",
            "application/json; version=\"1.1",
            "application/json; v=1; V=2",
            "application/json; =1",
            "appl\u{e9}cation/json",
            "application/json\n",
        ] {
            let err = MimeType::parse(input).unwrap_err();
            assert!(
                err.to_string().contains("invalid MIME type"),
                "{input:?}: {err}"
            );
        }
    }

    #[test]
    fn digests() {
        let hex = "AB".repeat(32);
        assert_eq!(
            Digest::parse(&format!("SHA256:{hex}")).unwrap().as_str(),
            format!("sha256:{}", hex.to_lowercase())
        );
        assert!(Digest::parse(&format!("sha512:{}", "0".repeat(128))).is_ok());
        for bad in [
            "sha256:abc".to_owned(),
            format!("sha256:{}", "g".repeat(64)),
            format!("sha384:{}", "a".repeat(96)),
            format!("sha512:{}", "a".repeat(64)),
            "a".repeat(64),
        ] {
            assert!(Digest::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn registration_uuid_is_normalised() {
        let upper = "17748D4E-7FD6-5309-9B80-06F1B6427570";
        assert_eq!(
            parse_registration_uuid(upper).unwrap().to_string(),
            upper.to_lowercase()
        );
        assert!(parse_registration_uuid("trivy").is_err());
        assert!(default_registration_uuid(" ").is_err());
    }

    fn token() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9][a-zA-Z0-9.+-]{0,12}"
    }

    proptest! {
        #[test]
        fn canonical_form_is_a_fixed_point(
            ty in token(), sub in token(),
            params in proptest::collection::btree_map("[a-zA-Z][a-zA-Z0-9]{0,6}", "[a-zA-Z0-9.]{1,8}", 0..4),
            quote in any::<bool>(), spaces in 0usize..3,
        ) {
            let pad = " ".repeat(spaces);
            let mut input = format!("{ty}/{sub}");
            let mut lower_names = std::collections::BTreeSet::new();
            for (n, v) in &params {
                prop_assume!(lower_names.insert(n.to_ascii_lowercase()));
                if quote {
                    input.push_str(&format!(";{pad}{n}{pad}={pad}\"{v}\""));
                } else {
                    input.push_str(&format!(";{pad}{n}={v}{pad}"));
                }
            }
            let canon = MimeType::parse(&input).unwrap();
            prop_assert_eq!(MimeType::parse(canon.as_str()).unwrap(), canon.clone());
            prop_assert_eq!(MimeType::parse(&input.to_uppercase()).map(|m| m.essence().to_owned()).unwrap(),
                canon.essence().to_owned());
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,64}") {
            let _ = MimeType::parse(&s);
            let _ = Digest::parse(&s);
        }

        #[test]
        fn report_ids_differ_per_tuple(a in "[0-9a-f]{64}", b in "[0-9a-f]{64}") {
            prop_assume!(a != b);
            let reg = default_registration_uuid("trivy").unwrap();
            let mime = MimeType::parse(VULN).unwrap();
            let da = Digest::parse(&format!("sha256:{a}")).unwrap();
            let db = Digest::parse(&format!("sha256:{b}")).unwrap();
            prop_assert_ne!(report_id(&da, &reg, &mime), report_id(&db, &reg, &mime));
            prop_assert_eq!(report_id(&da, &reg, &mime), report_id(&da, &reg, &mime));
        }
    }
}
