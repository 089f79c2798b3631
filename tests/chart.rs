//! The Helm chart's copies of the CRDs never drift from `crds/` (which a test of its own keeps
//! equal to the Rust types). The rest of the chart is checked by scripts/chart-check.sh.

use std::collections::BTreeMap;

use std::path::Path;

fn yaml_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("read CRD file"))
        })
        .collect()
}

#[test]
fn chart_crds_are_copies_of_crds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ours = yaml_files(&root.join("crds"));
    let chart = yaml_files(&root.join("charts/scanreport-operator/crds"));
    assert!(!ours.is_empty(), "no CRDs in crds/");
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        chart.keys().collect::<Vec<_>>(),
        "the chart's crds/ must hold the same files as crds/; run: cp crds/*.yaml charts/scanreport-operator/crds/"
    );
    for (name, bytes) in &ours {
        assert!(
            chart[name] == *bytes,
            "charts/scanreport-operator/crds/{name} differs from crds/{name}; run: cp crds/*.yaml charts/scanreport-operator/crds/"
        );
    }
}
