//! The command line: CRD generation matches `crds/`, report ids match the documented contract.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_scanreport-operator"))
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = bin().args(args).output().expect("run scanreport-operator");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn committed_crds_match_the_generated_ones() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let generated = scanreport_operator::api::crds_yaml().unwrap();
    let mut committed: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    committed.sort();
    let expected: Vec<_> = generated.iter().map(|(n, _)| format!("{n}.yaml")).collect();
    assert_eq!(committed, expected, "crds/ holds exactly one file per CRD");
    for (name, yaml) in &generated {
        let on_disk = std::fs::read_to_string(dir.join(format!("{name}.yaml"))).unwrap();
        assert!(
            on_disk == *yaml,
            "crds/{name}.yaml is stale: regenerate with `cargo run -- crds --dir crds`"
        );
    }
    let (ok, stdout, _) = run(&["crds"]);
    assert!(ok);
    assert_eq!(
        stdout,
        generated
            .iter()
            .map(|(_, y)| y.as_str())
            .collect::<String>()
    );
}

#[test]
fn report_id_reproduces_the_check_values() {
    let digest = format!("sha256:{}", "a".repeat(64));
    let (ok, out, _) = run(&["report-id", "--digest", &digest, "--scanner", "trivy"]);
    assert!(ok);
    assert_eq!(out.trim(), "55f3e644-2f08-55e3-8eb9-31b82c35f4b3");
    let (ok, out, _) = run(&[
        "report-id",
        "--digest",
        &digest.to_uppercase().replace("SHA256", "sha256"),
        "--registration-uuid",
        "17748D4E-7FD6-5309-9B80-06F1B6427570",
        "--mime-type",
        "Application/Vnd.Security.Vulnerability.Report;  Version=\"1.1\"",
    ]);
    assert!(ok);
    assert_eq!(out.trim(), "55f3e644-2f08-55e3-8eb9-31b82c35f4b3");
}

#[test]
fn report_id_rejects_bad_input_with_a_clear_error() {
    let (ok, out, err) = run(&["report-id", "--digest", "sha256:abc", "--scanner", "trivy"]);
    assert!(!ok);
    assert!(out.is_empty());
    assert!(
        err.contains("invalid digest") && err.contains("64 hex"),
        "{err}"
    );
    let digest = format!("sha256:{}", "a".repeat(64));
    let (ok, _, err) = run(&[
        "report-id",
        "--digest",
        &digest,
        "--scanner",
        "trivy",
        "--mime-type",
        "garbage",
    ]);
    assert!(!ok);
    assert!(err.contains("invalid MIME type"), "{err}");
    let (ok, _, err) = run(&["report-id", "--digest", &digest]);
    assert!(!ok, "one of --scanner / --registration-uuid is required");
    assert!(
        err.contains("--scanner") || err.contains("--registration-uuid"),
        "{err}"
    );
}

#[test]
fn migrate_without_a_database_url_says_what_to_do() {
    let out = bin()
        .arg("migrate")
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("DATABASE_URL is not set"));
}
