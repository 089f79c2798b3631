//! The Argo CD health check of docs/argocd-health.lua, run by a real Lua interpreter (Debian's
//! `lua5.4`, installed by scripts/test.sh) on ScanRequests whose conditions come from the
//! operator's own status code: compliant, violating, in progress, not yet observed.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use chrono::{DateTime, Utc};
use scanreport_operator::api::{PolicyStatus, ScanRequest, ScanRequestStatus};
use scanreport_operator::controller::status::{Overall, conditions, judged};
use scanreport_operator::policy::Verdict;
use serde_json::Value;

/// A ScanRequest at `generation` whose operator observed `observed` with `overall`.
fn sample(
    generation: i64,
    observed: i64,
    overall: &Overall,
    policy: Option<PolicyStatus>,
) -> Value {
    let now: DateTime<Utc> = "2026-12-02T06:00:00Z".parse().unwrap();
    let mut sr: ScanRequest = serde_yaml::from_str(
        "apiVersion: scanreport.io/v1alpha1\nkind: ScanRequest\nmetadata: {name: app, namespace: team-a}\n\
         spec: {scanner: trivy, registry: {url: 'https://registry.example.com'}, \
         artifact: {repository: library/nginx, digest: 'sha256:0000000000000000000000000000000000000000000000000000000000000000'}}",
    )
    .unwrap();
    sr.metadata.generation = Some(generation);
    sr.status = Some(ScanRequestStatus {
        observed_generation: Some(observed),
        conditions: conditions(&[], overall, Some(observed), now),
        policy: policy.map(Box::new),
        ..ScanRequestStatus::default()
    });
    serde_json::to_value(&sr).unwrap()
}

/// JSON as a Lua table constructor (`null` members are left out, as Argo CD's conversion does).
fn lua(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let mut out = String::from("\"");
            for byte in s.bytes() {
                match byte {
                    b'"' => out.push_str("\\\""),
                    b'\\' => out.push_str("\\\\"),
                    0x20..=0x7e => out.push(char::from(byte)),
                    other => out.push_str(&format!("\\{other:03}")),
                }
            }
            out.push('"');
            out
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(lua).collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Object(members) => {
            let members: Vec<String> = members
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("[{}] = {}", lua(&Value::String(k.clone())), lua(v)))
                .collect();
            format!("{{{}}}", members.join(", "))
        }
    }
}

/// (status, message) of the health check on `obj`.
fn health(obj: &Value) -> (String, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/argocd-health.lua");
    let program = format!(
        "obj = {}\nlocal hs = dofile({})\nio.write(hs.status, \"\\n\", hs.message or \"\")\n",
        lua(obj),
        lua(&Value::String(script.display().to_string()))
    );
    let mut child = Command::new("lua5.4")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(
            "lua5.4 runs the health check; scripts/test.sh installs it (apt-get install lua5.4)",
        );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(program.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "lua5.4 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (status, message) = text.split_once('\n').unwrap_or((&text, ""));
    (status.to_owned(), message.to_owned())
}

fn verdict(compliant: bool, message: &str) -> Verdict {
    Verdict {
        status: PolicyStatus {
            compliant,
            policy: "strict".into(),
            generation: Some(1),
            ..PolicyStatus::default()
        },
        message: message.into(),
        next_change: None,
    }
}

#[test]
fn a_compliant_request_is_healthy() {
    let v = verdict(true, "comply");
    let overall = judged(Overall::Ready, Some(&v));
    let (status, message) = health(&sample(2, 2, &overall, Some(v.status)));
    assert_eq!(status, "Healthy", "{message}");
}

#[test]
fn a_violating_request_is_degraded_and_says_which_cves() {
    let v = verdict(
        false,
        "The findings violate ScanPolicy \"strict\": 2 critical (at most 0 allowed). Worst: CVE-2024-3094 (Critical, xz-utils 5.6.0, fixed in 5.6.1)",
    );
    let overall = judged(Overall::Ready, Some(&v));
    let (status, message) = health(&sample(2, 2, &overall, Some(v.status)));
    assert_eq!(status, "Degraded");
    assert!(message.starts_with("PolicyViolation: "), "{message}");
    assert!(message.contains("CVE-2024-3094"), "{message}");
}

#[test]
fn a_scan_under_way_or_a_generation_not_yet_observed_is_progressing() {
    let scanning = Overall::Progressing {
        reason: "Scanning".into(),
        message: "Scanner \"trivy\" is scanning".into(),
        usable: false,
    };
    let (status, message) = health(&sample(1, 1, &scanning, None));
    assert_eq!(status, "Progressing");
    assert!(message.contains("is scanning"), "{message}");

    let (status, message) = health(&sample(3, 2, &Overall::Ready, None));
    assert_eq!(status, "Progressing", "{message}");
    assert!(message.contains("generation 3"), "{message}");

    let mut new = sample(1, 1, &Overall::Ready, None);
    new["status"] = Value::Null;
    assert_eq!(health(&new).0, "Progressing");
}

#[test]
fn a_stall_that_is_not_about_the_policy_is_degraded_too() {
    let stalled = Overall::Stalled {
        reason: "PolicyNotFound".into(),
        message:
            "spec.policyRef: ScanPolicy \"strict\" does not exist; create it or correct the name"
                .into(),
    };
    let (status, message) = health(&sample(1, 1, &stalled, None));
    assert_eq!(status, "Degraded");
    assert!(message.contains("spec.policyRef"), "{message}");
}
