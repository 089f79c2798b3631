//! What the aggregator and `kubectl` learn about the API before they use it: discovery (legacy
//! `APIGroupList`/`APIGroup`/`APIResourceList`, and the aggregated `apidiscovery.k8s.io/v2`
//! form the aggregator asks for first) and the OpenAPI documents (v3 for `kubectl explain` and
//! validation, v2 for older clients), generated from the Rust types with schemars.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    APIGroup, APIGroupList, APIResource, APIResourceList, GroupVersionForDiscovery,
};
use kube::core::discovery::v2::{
    APIGroupDiscovery, APIGroupDiscoveryList, APIResourceDiscovery, APIVersionDiscovery,
    GroupVersionKind,
};
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

use super::names::Kind;
use super::objects::{API_VERSION, GROUP, ReportObject, VERSION};

/// The media type of aggregated discovery, as the aggregator asks for it and wants it back.
pub const AGGREGATED_V2: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

pub const VERBS: [&str; 3] = ["get", "list", "watch"];

/// Whether an `Accept` header asks for aggregated discovery v2.
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let params: Vec<&str> = part.split(';').map(str::trim).collect();
        params.contains(&"g=apidiscovery.k8s.io")
            && params.contains(&"v=v2")
            && params.contains(&"as=APIGroupDiscoveryList")
    })
}

fn group_version() -> GroupVersionForDiscovery {
    GroupVersionForDiscovery {
        group_version: API_VERSION.to_owned(),
        version: VERSION.to_owned(),
    }
}

fn with_type(value: Value, api_version: &str, kind: &str) -> Value {
    let mut map = match value {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    map.insert("apiVersion".into(), json!(api_version));
    map.insert("kind".into(), json!(kind));
    Value::Object(map)
}

fn group() -> APIGroup {
    APIGroup {
        name: GROUP.to_owned(),
        preferred_version: Some(group_version()),
        server_address_by_client_cidrs: None,
        versions: vec![group_version()],
    }
}

pub fn api_group() -> Value {
    with_type(
        serde_json::to_value(group()).unwrap_or_default(),
        "v1",
        "APIGroup",
    )
}

pub fn api_group_list() -> Value {
    let list = APIGroupList {
        groups: vec![group()],
    };
    with_type(
        serde_json::to_value(list).unwrap_or_default(),
        "v1",
        "APIGroupList",
    )
}

pub fn api_resource_list() -> Value {
    let resources = Kind::ALL
        .into_iter()
        .map(|k| APIResource {
            name: k.plural().to_owned(),
            singular_name: k.singular().to_owned(),
            namespaced: true,
            kind: k.kind().to_owned(),
            verbs: VERBS.iter().map(|v| (*v).to_owned()).collect(),
            short_names: Some(k.short_names().iter().map(|s| (*s).to_owned()).collect()),
            categories: Some(vec!["scanreport".to_owned()]),
            group: None,
            version: None,
            storage_version_hash: None,
        })
        .collect();
    let list = APIResourceList {
        group_version: API_VERSION.to_owned(),
        resources,
    };
    with_type(
        serde_json::to_value(list).unwrap_or_default(),
        "v1",
        "APIResourceList",
    )
}

pub fn aggregated_discovery() -> Value {
    let resources = Kind::ALL
        .into_iter()
        .map(|k| APIResourceDiscovery {
            resource: Some(k.plural().to_owned()),
            response_kind: Some(GroupVersionKind {
                group: Some(GROUP.to_owned()),
                version: Some(VERSION.to_owned()),
                kind: Some(k.kind().to_owned()),
            }),
            scope: Some("Namespaced".to_owned()),
            singular_resource: Some(k.singular().to_owned()),
            verbs: VERBS.iter().map(|v| (*v).to_owned()).collect(),
            short_names: k.short_names().iter().map(|s| (*s).to_owned()).collect(),
            categories: vec!["scanreport".to_owned()],
            subresources: Vec::new(),
        })
        .collect();
    let list = APIGroupDiscoveryList {
        metadata: None,
        items: vec![APIGroupDiscovery {
            metadata: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(GROUP.to_owned()),
                ..Default::default()
            }),
            versions: vec![APIVersionDiscovery {
                version: Some(VERSION.to_owned()),
                resources,
                freshness: Some("Current".to_owned()),
            }],
        }],
    };
    with_type(
        serde_json::to_value(list).unwrap_or_default(),
        "apidiscovery.k8s.io/v2",
        "APIGroupDiscoveryList",
    )
}

/// Schema name of a kind in the OpenAPI documents, in the reverse-domain style Kubernetes uses.
fn schema_name(kind: &str) -> String {
    format!("io.scanreport.reports.{VERSION}.{kind}")
}

/// The component schemas: every definition schemars produced for the object type, plus one
/// schema per kind and list kind carrying `x-kubernetes-group-version-kind`, by which
/// `kubectl explain` finds them. `prefix` is where references point.
fn schemas(settings: SchemaSettings, prefix: &str) -> Map<String, Value> {
    let mut generator = settings.into_generator();
    let object = generator.subschema_for::<ReportObject>();
    let mut defs = generator.take_definitions(true);
    let object = object.as_value().clone();
    for kind in Kind::ALL {
        let mut one = object.clone();
        // `subschema_for` gives a reference to the shared definition; resolve it to copy it.
        if let Some(name) = one.get("$ref").and_then(Value::as_str)
            && let Some(def) = name.rsplit('/').next().and_then(|n| defs.get(n))
        {
            one = def.clone();
        }
        if let Value::Object(map) = &mut one {
            map.insert(
                "description".into(),
                json!(match kind {
                    Kind::Vulnerability =>
                        "A stored vulnerability report that a ScanRequest in this namespace references (read-only, served from PostgreSQL).",
                    Kind::Sbom =>
                        "A stored SBOM report that a ScanRequest in this namespace references (read-only, served from PostgreSQL).",
                }),
            );
            map.insert("x-kubernetes-group-version-kind".into(), gvk(kind.kind()));
        }
        defs.insert(schema_name(kind.kind()), one);
        defs.insert(
            schema_name(kind.list_kind()),
            json!({
                "type": "object",
                "description": format!("A list of {}.", kind.plural()),
                "required": ["items"],
                "properties": {
                    "apiVersion": { "type": "string" },
                    "kind": { "type": "string" },
                    "metadata": { "type": "object", "x-kubernetes-preserve-unknown-fields": true },
                    "items": {
                        "type": "array",
                        "items": { "$ref": format!("{prefix}{}", schema_name(kind.kind())) },
                    },
                },
                "x-kubernetes-group-version-kind": gvk(kind.list_kind()),
            }),
        );
    }
    defs
}

fn gvk(kind: &str) -> Value {
    json!([{ "group": GROUP, "version": VERSION, "kind": kind }])
}

fn paths(prefix: &str) -> Value {
    let mut paths = Map::new();
    for kind in Kind::ALL {
        // `kubectl explain` finds the kind of a resource by the operation's GVK.
        let op = |action: &str, schema: &str| {
            json!({ "get": {
                "operationId": format!("{action}{}", kind.kind()),
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": { "group": GROUP, "version": VERSION, "kind": kind.kind() },
                "responses": { "200": { "description": "OK", "content": { "application/json": {
                    "schema": { "$ref": format!("{prefix}{}", schema_name(schema)) } } } } },
            } })
        };
        let base = format!(
            "/apis/{API_VERSION}/namespaces/{{namespace}}/{}",
            kind.plural()
        );
        paths.insert(base.clone(), op("list", kind.list_kind()));
        paths.insert(format!("{base}/{{name}}"), op("get", kind.kind()));
        paths.insert(
            format!("/apis/{API_VERSION}/{}", kind.plural()),
            op("list", kind.list_kind()),
        );
    }
    Value::Object(paths)
}

/// The OpenAPI v3 document of the group version.
pub fn openapi_v3() -> Value {
    let prefix = "#/components/schemas/";
    json!({
        "openapi": "3.0.0",
        "info": { "title": "scanreport-operator report API", "version": VERSION },
        "paths": paths(prefix),
        "components": { "schemas": schemas(SchemaSettings::openapi3(), prefix) },
    })
}

/// The OpenAPI v3 index, pointing at [`openapi_v3`] with a hash of its content (the
/// aggregator caches by it).
pub fn openapi_v3_index(document: &[u8]) -> Value {
    let hash = hex::encode_upper(Sha256::digest(document));
    json!({ "paths": { format!("apis/{API_VERSION}"): {
        "serverRelativeURL": format!("/openapi/v3/apis/{API_VERSION}?hash={hash}")
    } } })
}

/// The Swagger 2.0 document, for clients that still read `/openapi/v2`.
pub fn openapi_v2() -> Value {
    let prefix = "#/definitions/";
    let settings = SchemaSettings::draft07().with(|s| {
        s.meta_schema = None;
    });
    let definitions = schemas(settings, prefix);
    json!({
        "swagger": "2.0",
        "info": { "title": "scanreport-operator report API", "version": VERSION },
        "paths": {},
        "definitions": definitions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_aggregated_accept_header_is_recognised() {
        assert!(wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
        ));
        assert!(!wants_aggregated("application/json"));
        assert!(!wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
        ));
    }

    #[test]
    fn discovery_lists_both_kinds_read_only() {
        let list = api_resource_list();
        assert_eq!(list["kind"], "APIResourceList");
        assert_eq!(list["groupVersion"], "reports.scanreport.io/v1alpha1");
        let names: Vec<&str> = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["vulnerabilityreports", "sbomreports"]);
        assert_eq!(
            list["resources"][0]["verbs"],
            json!(["get", "list", "watch"])
        );
        let v2 = aggregated_discovery();
        assert_eq!(v2["kind"], "APIGroupDiscoveryList");
        assert_eq!(v2["items"][0]["metadata"]["name"], GROUP);
        assert_eq!(
            v2["items"][0]["versions"][0]["resources"][0]["responseKind"]["kind"],
            "VulnerabilityReport"
        );
    }

    #[test]
    fn every_reference_in_the_openapi_documents_resolves() {
        for (doc, prefix, defs) in [
            (openapi_v3(), "#/components/schemas/", "/components/schemas"),
            (openapi_v2(), "#/definitions/", "/definitions"),
        ] {
            let text = doc.to_string();
            let schemas = doc.pointer(defs).unwrap().as_object().unwrap();
            for part in text.split("\"$ref\":\"").skip(1) {
                let target = part.split('"').next().unwrap();
                let name = target.strip_prefix(prefix).unwrap_or_else(|| {
                    panic!("{target} does not point into {prefix}");
                });
                assert!(schemas.contains_key(name), "{name} is not defined");
            }
            let kind = &schemas["io.scanreport.reports.v1alpha1.VulnerabilityReport"];
            assert_eq!(
                kind["x-kubernetes-group-version-kind"][0]["kind"],
                "VulnerabilityReport"
            );
            assert!(kind.pointer("/properties/report").is_some(), "{kind}");
        }
    }
}
