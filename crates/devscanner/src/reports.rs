//! Deterministic reports: vulnerabilities planned from the digest alone, rendered in every
//! report format the adapter produces.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use scanreport_operator::api::SeveritySummary;
use scanreport_operator::identity::Digest;
use scanreport_operator::scanner::wire::{self, mime};

use crate::*;

/// Severities of the specification's `Severity` enum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Severity {
    Unknown,
    Negligible,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "Unknown",
            Self::Negligible => "Negligible",
            Self::Low => "Low",
            Self::Medium => "Medium",
            Self::High => "High",
            Self::Critical => "Critical",
        }
    }
}

struct PlannedVuln {
    id: String,
    package: &'static str,
    version: &'static str,
    fix_version: Option<String>,
    severity: Severity,
    score_tenths: Option<u64>,
    vector: Option<&'static str>,
    cwe: &'static str,
    description: String,
}

/// splitmix64, seeded from the digest: the digest is already a hash.
struct Rng(u64);

impl Rng {
    fn for_digest(digest: &Digest) -> Self {
        let hex = digest.as_str().split_once(':').map_or("", |(_, h)| h);
        let seed = u64::from_str_radix(hex.get(..16).unwrap_or("0"), 16).unwrap_or(0);
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

const PACKAGES: &[(&str, &str, &str)] = &[
    ("openssl", "3.0.11-1~deb12u2", "Apache-2.0"),
    ("libssl3", "3.0.11-1~deb12u2", "Apache-2.0"),
    ("libc6", "2.36-9+deb12u4", "LGPL-2.1"),
    ("libc-bin", "2.36-9+deb12u4", "LGPL-2.1"),
    ("zlib1g", "1:1.2.13.dfsg-1", "Zlib"),
    ("curl", "7.88.1-10+deb12u5", "curl"),
    ("libcurl4", "7.88.1-10+deb12u5", "curl"),
    ("libxml2", "2.9.14+dfsg-1.3~deb12u1", "MIT"),
    ("perl-base", "5.36.0-7+deb12u1", "GPL-1.0-or-later"),
    ("tar", "1.34+dfsg-1.2+deb12u1", "GPL-3.0-or-later"),
    ("libgnutls30", "3.7.9-2+deb12u2", "LGPL-2.1-or-later"),
    ("libsqlite3-0", "3.40.1-2", "blessing"),
    ("ncurses-base", "6.4-4", "X11"),
    ("login", "1:4.13+dfsg1-1+b1", "BSD-3-Clause"),
    ("passwd", "1:4.13+dfsg1-1+b1", "BSD-3-Clause"),
    ("coreutils", "9.1-1", "GPL-3.0-or-later"),
    ("util-linux", "2.38.1-5+b1", "GPL-2.0-or-later"),
    ("libgcrypt20", "1.10.1-3", "LGPL-2.1-or-later"),
    ("libtasn1-6", "4.19.0-2", "LGPL-2.1-or-later"),
    ("libkrb5-3", "1.20.1-2+deb12u1", "MIT"),
    ("libsystemd0", "252.22-1~deb12u1", "LGPL-2.1-or-later"),
    ("apt", "2.6.1", "GPL-2.0-or-later"),
    ("bash", "5.2.15-2+b2", "GPL-3.0-or-later"),
    ("libpcre2-8-0", "10.42-1", "BSD-3-Clause"),
    ("libexpat1", "2.5.0-1", "MIT"),
    ("libcap2", "1:2.66-4", "BSD-3-Clause"),
    ("gzip", "1.12-1", "GPL-3.0-or-later"),
    ("libldap-2.5-0", "2.5.13+dfsg-5", "OLDAP-2.8"),
    ("libnghttp2-14", "1.52.0-1+deb12u1", "MIT"),
    ("libpam0g", "1.5.2-6+deb12u1", "BSD-3-Clause"),
    ("libzstd1", "1.5.4+dfsg2-5", "BSD-3-Clause"),
    ("liblzma5", "5.4.1-0.2", "0BSD"),
];

const FLAWS: &[&str] = &[
    "A heap-based buffer overflow",
    "An out-of-bounds read",
    "A use-after-free",
    "An integer overflow",
    "Improper input validation",
    "A NULL pointer dereference",
    "A race condition",
    "Uncontrolled resource consumption",
];
const PLACES: &[&str] = &[
    "the certificate parser",
    "the HTTP header handling",
    "the archive extraction code",
    "the regular expression engine",
    "the DNS resolver",
    "the compression routines",
    "the locale handling",
    "the authentication module",
];
const IMPACTS: &[&str] = &[
    "cause a denial of service (crash)",
    "execute arbitrary code",
    "read sensitive memory",
    "bypass intended access restrictions",
    "escalate privileges",
    "corrupt memory",
];
const VECTORS_OF_ATTACK: &[&str] = &[
    "a crafted file",
    "a malicious network packet",
    "specially crafted input",
    "a long string",
    "a crafted certificate",
];
const CWES: &[&str] = &[
    "CWE-787", "CWE-125", "CWE-416", "CWE-190", "CWE-20", "CWE-476", "CWE-362", "CWE-400",
];

fn cvss_vector(severity: Severity) -> Option<&'static str> {
    Some(match severity {
        Severity::Critical => "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
        Severity::High => "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H",
        Severity::Medium => "CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:U/C:L/I:L/A:L",
        Severity::Low => "CVSS:3.1/AV:L/AC:H/PR:L/UI:N/S:U/C:L/I:N/A:N",
        Severity::Negligible => "CVSS:3.1/AV:L/AC:H/PR:H/UI:R/S:U/C:N/I:N/A:L",
        Severity::Unknown => return None,
    })
}

/// The vulnerabilities of an artifact: 12 to 40, a spread of severities, a pure function of the
/// digest.
fn plan(digest: &Digest) -> Vec<PlannedVuln> {
    let mut rng = Rng::for_digest(digest);
    let count = 12 + rng.below(29);
    (0..count)
        .map(|i| {
            let roll = rng.below(100);
            let severity = match roll {
                0..8 => Severity::Critical,
                8..28 => Severity::High,
                28..63 => Severity::Medium,
                63..88 => Severity::Low,
                88..94 => Severity::Negligible,
                _ => Severity::Unknown,
            };
            let (package, version, _) = rng.pick(PACKAGES);
            let fix_version = (rng.below(100) < 55).then(|| bump(version, rng.below(5) + 1));
            let score_tenths = match severity {
                Severity::Critical => Some(90 + rng.below(11)),
                Severity::High => Some(70 + rng.below(20)),
                Severity::Medium => Some(40 + rng.below(30)),
                Severity::Low => Some(10 + rng.below(30)),
                Severity::Negligible => Some(1 + rng.below(9)),
                Severity::Unknown => None,
            };
            let id = format!(
                "CVE-{}-{}",
                2017 + rng.below(8),
                10_000 + rng.below(40_000) + i
            );
            let description = format!(
                "{} in {} of {package} before {} allows remote attackers to {} via {}.",
                rng.pick(FLAWS),
                rng.pick(PLACES),
                fix_version.as_deref().unwrap_or("the latest release"),
                rng.pick(IMPACTS),
                rng.pick(VECTORS_OF_ATTACK),
            );
            PlannedVuln {
                id,
                package,
                version,
                fix_version,
                severity,
                score_tenths,
                vector: cvss_vector(severity),
                cwe: rng.pick(CWES),
                description,
            }
        })
        .collect()
}

fn bump(version: &str, n: u64) -> String {
    match version.rsplit_once("deb12u") {
        Some((head, tail)) if tail.chars().all(|c| c.is_ascii_digit()) => {
            let current: u64 = tail.parse().unwrap_or(0);
            format!("{head}deb12u{}", current + n)
        }
        _ => format!("{version}+deb12u{n}"),
    }
}

/// The severity summary a client should compute from this adapter's vulnerability reports for
/// `digest` (Negligible counts as none).
pub fn expected_summary(digest: &Digest) -> SeveritySummary {
    let mut s = SeveritySummary::default();
    for v in plan(digest) {
        match v.severity {
            Severity::Critical => s.critical += 1,
            Severity::High => s.high += 1,
            Severity::Medium => s.medium += 1,
            Severity::Low => s.low += 1,
            Severity::Negligible => s.none += 1,
            Severity::Unknown => s.unknown += 1,
        }
        if v.fix_version.is_some() {
            s.fixable += 1;
        }
    }
    s
}

/// One vulnerability this adapter reports for a digest, in every vulnerability format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedVulnerability {
    pub id: String,
    pub package: String,
    pub version: String,
    /// As the report spells it: `Critical`, `High`, `Medium`, `Low`, `Negligible`, `Unknown`.
    pub severity: &'static str,
    pub fix_version: Option<String>,
}

/// The vulnerabilities of this adapter's vulnerability reports for `digest`, in report order,
/// so that tests can name exact CVE ids.
pub fn expected_vulnerabilities(digest: &Digest) -> Vec<ExpectedVulnerability> {
    plan(digest)
        .into_iter()
        .map(|v| ExpectedVulnerability {
            id: v.id,
            package: v.package.to_owned(),
            version: v.version.to_owned(),
            severity: v.severity.as_str(),
            fix_version: v.fix_version,
        })
        .collect()
}

pub(crate) fn scanner_json() -> Value {
    json!({
        "name": SCANNER_NAME,
        "vendor": SCANNER_VENDOR,
        "version": env!("CARGO_PKG_VERSION"),
    })
}

fn artifact_json(artifact: &wire::Artifact) -> Value {
    let mut a = json!({
        "repository": artifact.repository,
        "digest": artifact.digest,
        "mime_type": artifact.mime_type,
    });
    if let Some(tag) = &artifact.tag {
        a["tag"] = json!(tag);
    }
    a
}

/// The report body for `mime_type` (one of [`Shared::produces`]).
pub(crate) fn render_report(
    mime_type: &str,
    digest: &Digest,
    artifact: &wire::Artifact,
    generated_at: chrono::DateTime<chrono::Utc>,
) -> String {
    let generated_at = generated_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let vulns = plan(digest);
    let body = match mime_type {
        mime::SBOM_REPORT_1_0 => sbom_report(digest, artifact, &generated_at, &vulns),
        mime::RAW_VULN_REPORT => raw_report(artifact, &vulns),
        other => harbor_report(
            artifact,
            &generated_at,
            &vulns,
            other == mime::VULN_REPORT_1_1,
        ),
    };
    body.to_string()
}

fn harbor_report(
    artifact: &wire::Artifact,
    generated_at: &str,
    vulns: &[PlannedVuln],
    v1_1: bool,
) -> Value {
    let highest = vulns
        .iter()
        .map(|v| v.severity)
        .max()
        .unwrap_or(Severity::Unknown);
    let items: Vec<Value> = vulns
        .iter()
        .map(|v| {
            let mut item = json!({
                "id": v.id,
                "package": v.package,
                "version": v.version,
                "severity": v.severity.as_str(),
                "description": v.description,
                "links": [
                    format!("https://security-tracker.debian.org/tracker/{}", v.id),
                    format!("https://nvd.nist.gov/vuln/detail/{}", v.id),
                ],
            });
            if let Some(fix) = &v.fix_version {
                item["fix_version"] = json!(fix);
            }
            if v1_1 {
                let mut cvss = json!({});
                if let Some(t) = v.score_tenths {
                    cvss["score_v3"] = json!(t as f64 / 10.0);
                }
                if let Some(vector) = v.vector {
                    cvss["vector_v3"] = json!(vector);
                }
                item["preferred_cvss"] = cvss;
                item["cwe_ids"] = json!([v.cwe]);
                item["vendor_attributes"] = json!({
                    "data_source": "debian",
                    "primary_url": format!("https://avd.aquasec.com/nvd/{}", v.id.to_lowercase()),
                });
            }
            item
        })
        .collect();
    json!({
        "generated_at": generated_at,
        "artifact": artifact_json(artifact),
        "scanner": scanner_json(),
        "severity": highest.as_str(),
        "vulnerabilities": items,
    })
}

/// A Trivy-like vendor report.
fn raw_report(artifact: &wire::Artifact, vulns: &[PlannedVuln]) -> Value {
    let target = format!("{}@{} (debian 12.5)", artifact.repository, artifact.digest);
    let items: Vec<Value> = vulns
        .iter()
        .map(|v| {
            json!({
                "VulnerabilityID": v.id,
                "PkgName": v.package,
                "InstalledVersion": v.version,
                "FixedVersion": v.fix_version.clone().unwrap_or_default(),
                "Severity": v.severity.as_str().to_uppercase(),
                "Title": v.description,
            })
        })
        .collect();
    json!({
        "SchemaVersion": 2,
        "ArtifactName": format!("{}@{}", artifact.repository, artifact.digest),
        "ArtifactType": "container_image",
        "Results": [{
            "Target": target,
            "Class": "os-pkgs",
            "Type": "debian",
            "Vulnerabilities": items,
        }],
    })
}

/// A `HarborSbomReport` carrying a CycloneDX 1.5 document.
fn sbom_report(
    digest: &Digest,
    artifact: &wire::Artifact,
    generated_at: &str,
    vulns: &[PlannedVuln],
) -> Value {
    let mut rng = Rng::for_digest(digest);
    let mut names: BTreeSet<&str> = vulns.iter().map(|v| v.package).collect();
    for (name, _, _) in PACKAGES {
        if rng.below(100) < 60 {
            names.insert(name);
        }
    }
    let components: Vec<Value> = PACKAGES
        .iter()
        .filter(|(name, _, _)| names.contains(name))
        .map(|(name, version, license)| {
            let purl = format!("pkg:deb/debian/{name}@{version}?arch=amd64&distro=debian-12.5");
            json!({
                "bom-ref": purl,
                "type": "library",
                "name": name,
                "version": version,
                "purl": purl,
                "licenses": [{"license": {"id": license}}],
            })
        })
        .collect();
    let refs: Vec<Value> = components.iter().map(|c| c["bom-ref"].clone()).collect();
    let serial = uuid::Uuid::new_v5(
        &scanreport_operator::identity::NAMESPACE,
        digest.as_str().as_bytes(),
    );
    let sbom = json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": format!("urn:uuid:{serial}"),
        "version": 1,
        "metadata": {
            "timestamp": generated_at,
            "tools": {"components": [{"type": "application", "name": SCANNER_NAME, "version": env!("CARGO_PKG_VERSION")}]},
            "component": {
                "bom-ref": digest.as_str(),
                "type": "container",
                "name": artifact.repository,
                "version": digest.as_str(),
            },
        },
        "components": components,
        "dependencies": [{"ref": digest.as_str(), "dependsOn": refs}],
    });
    json!({
        "generated_at": generated_at,
        "artifact": artifact_json(artifact),
        "scanner": scanner_json(),
        "media_type": mime::SBOM_CYCLONEDX_JSON,
        "sbom": sbom,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use scanreport_operator::scanner::summary::severity_summary;

    fn digest(c: char) -> Digest {
        Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
    }

    fn artifact(d: &Digest) -> wire::Artifact {
        wire::Artifact {
            repository: "library/nginx".into(),
            digest: d.as_str().into(),
            tag: Some("1.25".into()),
            mime_type: mime::OCI_IMAGE_MANIFEST.into(),
        }
    }

    #[test]
    fn reports_are_deterministic_and_agree() {
        let t = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        for c in ['a', 'b', '7'] {
            let d = digest(c);
            let a = artifact(&d);
            let v11 = render_report(mime::VULN_REPORT_1_1, &d, &a, t);
            assert_eq!(v11, render_report(mime::VULN_REPORT_1_1, &d, &a, t));
            let v10 = render_report(mime::HARBOR_VULN_REPORT_1_0, &d, &a, t);
            let expected = expected_summary(&d);
            for body in [&v11, &v10] {
                let value: Value = serde_json::from_str(body).unwrap();
                assert_eq!(severity_summary(&value).unwrap(), expected);
            }
            assert!((12..=40).contains(&expected.total()), "{expected:?}");
            // A realistic size.
            assert!((5_000..40_000).contains(&v11.len()), "{}", v11.len());
            let raw: Value =
                serde_json::from_str(&render_report(mime::RAW_VULN_REPORT, &d, &a, t)).unwrap();
            assert_eq!(
                raw["Results"][0]["Vulnerabilities"]
                    .as_array()
                    .unwrap()
                    .len() as i64,
                expected.total()
            );
        }
        assert_ne!(
            expected_summary(&digest('a')),
            expected_summary(&digest('b'))
        );
    }

    #[test]
    fn the_expected_vulnerabilities_are_those_of_the_report() {
        let d = digest('a');
        let t = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let body: Value =
            serde_json::from_str(&render_report(mime::VULN_REPORT_1_1, &d, &artifact(&d), t))
                .unwrap();
        let items = body["vulnerabilities"].as_array().unwrap();
        let expected = expected_vulnerabilities(&d);
        assert_eq!(items.len(), expected.len());
        for (item, v) in items.iter().zip(&expected) {
            assert_eq!(item["id"], v.id.as_str());
            assert_eq!(item["package"], v.package.as_str());
            assert_eq!(item["severity"], v.severity);
            assert_eq!(item["fix_version"].as_str(), v.fix_version.as_deref());
        }
    }

    #[test]
    fn sbom_is_cyclonedx() {
        let d = digest('c');
        let t = chrono::Utc::now();
        let sbom: Value =
            serde_json::from_str(&render_report(mime::SBOM_REPORT_1_0, &d, &artifact(&d), t))
                .unwrap();
        assert_eq!(sbom["media_type"], mime::SBOM_CYCLONEDX_JSON);
        assert_eq!(sbom["sbom"]["bomFormat"], "CycloneDX");
        assert!(sbom["sbom"]["components"].as_array().unwrap().len() >= 10);
    }

    #[test]
    fn fix_versions_bump() {
        assert_eq!(bump("2.36-9+deb12u4", 2), "2.36-9+deb12u6");
        assert_eq!(bump("9.1-1", 1), "9.1-1+deb12u1");
    }
}
