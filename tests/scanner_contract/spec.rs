//! The specification's OpenAPI documents, loaded and resolved, and validation against them.

use super::*;

pub(crate) struct Spec {
    pub(crate) version: &'static str,
    pub(crate) doc: Value,
}

pub(crate) fn yaml_to_json(v: serde_yaml::Value) -> Value {
    match v {
        serde_yaml::Value::Null => Value::Null,
        serde_yaml::Value::Bool(b) => Value::Bool(b),
        serde_yaml::Value::Number(n) => serde_json::to_value(&n).unwrap(),
        serde_yaml::Value::String(s) => Value::String(s),
        serde_yaml::Value::Sequence(items) => items.into_iter().map(yaml_to_json).collect(),
        serde_yaml::Value::Mapping(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    // Status codes are integer keys in YAML.
                    let key = match k {
                        serde_yaml::Value::String(s) => s,
                        serde_yaml::Value::Number(n) => n.to_string(),
                        serde_yaml::Value::Bool(b) => b.to_string(),
                        other => panic!("unexpected YAML key {other:?}"),
                    };
                    (key, yaml_to_json(v))
                })
                .collect(),
        ),
        serde_yaml::Value::Tagged(t) => yaml_to_json(t.value),
    }
}

pub(crate) fn load_spec(version: &'static str) -> Spec {
    let path = format!(
        "{}/tests/fixtures/harbor-scanner-adapter/scanner-adapter-openapi-v{version}.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let doc = yaml_to_json(serde_yaml::from_str(&text).unwrap());
    assert_eq!(doc["info"]["version"], version, "{path}");
    Spec { version, doc }
}

pub(crate) fn specs() -> Vec<Spec> {
    vec![load_spec("1.2"), load_spec("1.1"), load_spec("1.0")]
}

/// Inlines `$ref: '#/components/schemas/X'` and turns OpenAPI 3.0's `nullable: true` into a
/// JSON Schema `anyOf` with null.
pub(crate) fn resolve(doc: &Value, schema: &Value, depth: usize) -> Value {
    assert!(depth < 32, "reference cycle");
    match schema {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                let name = r
                    .strip_prefix("#/components/schemas/")
                    .unwrap_or_else(|| panic!("unsupported $ref {r}"));
                let target = &doc["components"]["schemas"][name];
                assert!(!target.is_null(), "missing schema {name}");
                return resolve(doc, target, depth + 1);
            }
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                if k == "nullable" || k == "example" {
                    continue;
                }
                out.insert(k.clone(), resolve(doc, v, depth + 1));
            }
            let out = Value::Object(out);
            if map.get("nullable") == Some(&Value::Bool(true)) {
                json!({"anyOf": [out, {"type": "null"}]})
            } else {
                out
            }
        }
        Value::Array(items) => items.iter().map(|i| resolve(doc, i, depth + 1)).collect(),
        other => other.clone(),
    }
}

pub(crate) fn validate(schema: &Value, instance: &Value) -> Result<(), String> {
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .should_validate_formats(true)
        .build(schema)
        .map_err(|e| format!("bad schema: {e}"))?;
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

pub(crate) fn canonical(m: &str) -> String {
    MimeType::parse(m)
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|_| m.to_owned())
}

/// The content entry of `content` whose key is `content_type`, canonically.
pub(crate) fn content_entry<'a>(content: &'a Value, content_type: &str) -> Option<&'a Value> {
    content
        .as_object()?
        .iter()
        .find(|(k, _)| canonical(k) == canonical(content_type))
        .map(|(_, v)| v)
}

/// The instance to validate: the body as JSON, or as a JSON string for `type: string` schemas
/// (the raw report).
pub(crate) fn instance(schema: &Value, body: &[u8]) -> Result<Value, String> {
    if schema["type"] == "string" {
        return String::from_utf8(body.to_vec())
            .map(Value::String)
            .map_err(|_| "body is not UTF-8".into());
    }
    serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))
}

#[test]
pub(crate) fn the_schema_harness_rejects_nonconforming_bodies() {
    let spec = load_spec("1.2");
    let schema = |name: &str| {
        resolve(
            &spec.doc,
            &json!({"$ref": format!("#/components/schemas/{name}")}),
            0,
        )
    };
    let report = json!({
        "generated_at": "2024-01-01T00:00:00Z",
        "vulnerabilities": [{"id": "CVE-1", "severity": "High", "links": ["https://example.org/CVE-1"]}]
    });
    validate(&schema("HarborVulnerabilityReport"), &report).unwrap();
    let mut bad = report.clone();
    bad["vulnerabilities"][0]["severity"] = json!("Extreme");
    assert!(validate(&schema("HarborVulnerabilityReport"), &bad).is_err());
    let mut bad = report.clone();
    bad["generated_at"] = json!("yesterday");
    assert!(validate(&schema("HarborVulnerabilityReport"), &bad).is_err());
    let mut bad = report;
    bad["vulnerabilities"][0]["links"] = json!(["not a uri"]);
    assert!(validate(&schema("HarborVulnerabilityReport"), &bad).is_err());

    assert!(validate(&schema("ScannerAdapterMetadata"), &json!({"scanner": {}})).is_err());
    assert!(validate(&schema("ScanRequest"), &json!({"registry": {}})).is_err());
    let request = json!({"registry": {}, "artifact": {}, "enabled_capabilities": [{"type": "sbom", "parameters": null}]});
    validate(&schema("ScanRequest"), &request).unwrap();
    let mut bad = request;
    bad["enabled_capabilities"][0]["type"] = json!("malware");
    assert!(validate(&schema("ScanRequest"), &bad).is_err());
    assert!(validate(&schema("ScanResponse"), &json!({})).is_err());
}
