//! Which kind a report MIME type is served as, the object names, and the labels: pure
//! functions of the ScanRequest name and the report, so every replica and every request
//! derives the same name for the same report.
//!
//! A report object is named `<scanrequest>-<format>`, where the format is a short word for the
//! MIME type (`vuln`, `harbor`, `raw`, `sbom`, or `r` plus 8 hex digits of its hash for any other
//! type). A ScanRequest name too long for that is cut and given 8 hex digits of its own hash,
//! so names stay unique and within the 253 characters Kubernetes allows.

use std::collections::BTreeMap;

use sha2::{Digest as _, Sha256};

use crate::identity::MimeType;
use crate::scanner::wire::mime;

pub const LABEL_SCANREQUEST: &str = "scanreport.io/scanrequest";
pub const LABEL_REPORT_ID: &str = "scanreport.io/report-id";
pub const LABEL_DIGEST_HASH: &str = "scanreport.io/digest-hash";

/// Longest object name (a DNS subdomain) and label value Kubernetes accepts.
const MAX_NAME: usize = 253;
const MAX_LABEL_VALUE: usize = 63;

/// The kinds served by the report API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Vulnerability,
    Sbom,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Vulnerability, Kind::Sbom];

    pub fn kind(self) -> &'static str {
        match self {
            Self::Vulnerability => "VulnerabilityReport",
            Self::Sbom => "SbomReport",
        }
    }

    pub fn list_kind(self) -> &'static str {
        match self {
            Self::Vulnerability => "VulnerabilityReportList",
            Self::Sbom => "SbomReportList",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Self::Vulnerability => "vulnerabilityreports",
            Self::Sbom => "sbomreports",
        }
    }

    pub fn singular(self) -> &'static str {
        match self {
            Self::Vulnerability => "vulnerabilityreport",
            Self::Sbom => "sbomreport",
        }
    }

    pub fn short_names(self) -> &'static [&'static str] {
        match self {
            Self::Vulnerability => &["vulns", "vuln"],
            Self::Sbom => &["sbom", "sboms"],
        }
    }

    pub fn from_plural(plural: &str) -> Option<Kind> {
        Self::ALL.into_iter().find(|k| k.plural() == plural)
    }

    /// The kind a report MIME type is served as: SBOM types as `SbomReport`, every other type
    /// (the vulnerability reports and the adapter's raw format) as `VulnerabilityReport`.
    pub fn of(mime_type: &MimeType) -> Kind {
        if mime_type.essence().contains("sbom") {
            Kind::Sbom
        } else {
            Kind::Vulnerability
        }
    }
}

/// The short word for a report MIME type in object names.
pub fn format_word(mime_type: &MimeType) -> String {
    let known = [
        (mime::VULN_REPORT_1_1, "vuln"),
        (mime::HARBOR_VULN_REPORT_1_0, "harbor"),
        (mime::RAW_VULN_REPORT, "raw"),
        (mime::SBOM_REPORT_1_0, "sbom"),
    ];
    known
        .iter()
        .find(|(m, _)| MimeType::parse(m).is_ok_and(|m| &m == mime_type))
        .map(|(_, word)| (*word).to_owned())
        .unwrap_or_else(|| format!("r{}", short_hash(mime_type.as_str(), 8)))
}

/// The object name of the report of `mime_type` that ScanRequest `scan_request` references:
/// `<scanrequest>-<format>`, and for one platform of an image index
/// `<scanrequest>-<format>-<platform>` (e.g. `web-vuln-linux-arm64-v8`).
pub fn object_name(scan_request: &str, platform: Option<&str>, mime_type: &MimeType) -> String {
    let mut word = format_word(mime_type);
    if let Some(platform) = platform {
        word.push('-');
        word.push_str(&platform_slug(platform));
    }
    let full = format!("{scan_request}-{word}");
    if full.len() <= MAX_NAME {
        return full;
    }
    // <cut name>-<8 hex>-<word>: the hash keeps two long names with one prefix apart.
    let keep = MAX_NAME.saturating_sub(word.len() + 10);
    format!(
        "{}-{}-{word}",
        cut(scan_request, keep),
        short_hash(scan_request, 8)
    )
}

/// A platform (`os/architecture[/variant][@digest prefix]`) as a name part: lowercase
/// letters, digits and single `-`, at most 64 characters.
fn platform_slug(platform: &str) -> String {
    let mut slug = String::with_capacity(platform.len());
    for c in platform.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    cut(&slug, 64).trim_matches('-').to_owned()
}

/// The `scanreport.io/scanrequest` label value: the name, or for a name longer than a label
/// value may be, its first 54 characters and 8 hex digits of its hash.
pub fn scan_request_label(scan_request: &str) -> String {
    if scan_request.len() <= MAX_LABEL_VALUE {
        return scan_request.to_owned();
    }
    format!(
        "{}-{}",
        cut(scan_request, MAX_LABEL_VALUE - 9),
        short_hash(scan_request, 8)
    )
}

/// The `scanreport.io/digest-hash` label value: 16 hex digits of SHA-256 of the digest text
/// (a digest itself does not fit a label value).
pub fn digest_hash(digest: &str) -> String {
    short_hash(digest, 16)
}

pub fn labels(scan_request: &str, report_id: &str, digest: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            LABEL_SCANREQUEST.to_owned(),
            scan_request_label(scan_request),
        ),
        (LABEL_REPORT_ID.to_owned(), report_id.to_owned()),
        (LABEL_DIGEST_HASH.to_owned(), digest_hash(digest)),
    ])
}

fn short_hash(text: &str, hex_digits: usize) -> String {
    let mut hex = hex::encode(Sha256::digest(text.as_bytes()));
    hex.truncate(hex_digits);
    hex
}

/// At most `max` bytes of a name (names are ASCII), without a trailing `-` or `.`.
fn cut(name: &str, max: usize) -> &str {
    let end = name
        .char_indices()
        .map(|(i, c)| i + c.len_utf8())
        .take_while(|&end| end <= max)
        .last()
        .unwrap_or(0);
    name[..end].trim_end_matches(['-', '.'])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mt(s: &str) -> MimeType {
        MimeType::parse(s).unwrap()
    }

    #[test]
    fn known_report_types_get_readable_names() {
        assert_eq!(
            object_name("nginx", None, &mt(mime::VULN_REPORT_1_1)),
            "nginx-vuln"
        );
        assert_eq!(
            object_name("nginx", None, &mt(mime::HARBOR_VULN_REPORT_1_0)),
            "nginx-harbor"
        );
        assert_eq!(
            object_name("nginx", None, &mt(mime::RAW_VULN_REPORT)),
            "nginx-raw"
        );
        assert_eq!(
            object_name("nginx", None, &mt(mime::SBOM_REPORT_1_0)),
            "nginx-sbom"
        );
    }

    #[test]
    fn any_spelling_of_a_mime_type_gives_the_same_name() {
        let a = object_name(
            "web",
            None,
            &mt("application/vnd.security.vulnerability.report; version=1.1"),
        );
        let b = object_name(
            "web",
            None,
            &mt("Application/VND.Security.Vulnerability.Report;Version=\"1.1\""),
        );
        assert_eq!(a, b);
    }

    #[test]
    fn an_unknown_report_type_gets_a_stable_hashed_word() {
        let name = object_name("web", None, &mt("application/x-custom+json; version=2"));
        assert!(name.starts_with("web-r"), "{name}");
        assert_eq!(name.len(), "web-r".len() + 8);
        assert_eq!(
            name,
            object_name("web", None, &mt("application/x-custom+json; version=2"))
        );
        assert_ne!(
            name,
            object_name("web", None, &mt("application/x-custom+json; version=3"))
        );
    }

    #[test]
    fn long_scan_request_names_stay_valid_and_distinct() {
        let a = format!("{}a", "x".repeat(252));
        let b = format!("{}b", "x".repeat(252));
        let vuln = mt(mime::VULN_REPORT_1_1);
        let (na, nb) = (object_name(&a, None, &vuln), object_name(&b, None, &vuln));
        assert!(
            na.len() <= 253 && nb.len() <= 253,
            "{} {}",
            na.len(),
            nb.len()
        );
        assert_ne!(na, nb);
        assert!(na.ends_with("-vuln"));
        let (la, lb) = (scan_request_label(&a), scan_request_label(&b));
        assert!(la.len() <= 63 && lb.len() <= 63);
        assert_ne!(la, lb);
        assert_eq!(scan_request_label("nginx"), "nginx");
    }

    #[test]
    fn platform_reports_carry_the_platform_after_the_format() {
        let vuln = mt(mime::VULN_REPORT_1_1);
        assert_eq!(
            object_name("web", Some("linux/arm64/v8"), &vuln),
            "web-vuln-linux-arm64-v8"
        );
        assert_eq!(
            object_name("web", Some("windows/amd64@0123456789ab"), &vuln),
            "web-vuln-windows-amd64-0123456789ab"
        );
        assert_ne!(
            object_name("web", Some("linux/amd64"), &vuln),
            object_name("web", Some("linux/arm64"), &vuln)
        );
        let long = "x".repeat(253);
        let name = object_name(&long, Some("linux/amd64"), &vuln);
        assert!(
            name.len() <= 253 && name.ends_with("-vuln-linux-amd64"),
            "{name}"
        );
    }

    #[test]
    fn sbom_types_are_sbom_reports_and_the_rest_vulnerability_reports() {
        assert_eq!(Kind::of(&mt(mime::SBOM_REPORT_1_0)), Kind::Sbom);
        assert_eq!(Kind::of(&mt(mime::VULN_REPORT_1_1)), Kind::Vulnerability);
        assert_eq!(Kind::of(&mt(mime::RAW_VULN_REPORT)), Kind::Vulnerability);
        assert_eq!(
            Kind::from_plural("vulnerabilityreports"),
            Some(Kind::Vulnerability)
        );
        assert_eq!(Kind::from_plural("scanrequests"), None);
    }

    #[test]
    fn the_digest_hash_is_a_valid_label_value() {
        let h = digest_hash(&format!("sha256:{}", "a".repeat(64)));
        assert_eq!(h.len(), 16);
        assert!(h.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
