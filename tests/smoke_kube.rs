//! Smoke tests of the CRDs in `crds/` against a real kube-apiserver (see
//! `crates/testkit/src/envtest.rs` and `docs/envtest.md`).
//!
//! Objects are written as raw JSON on purpose: the typed structs cannot
//! express invalid input, and raw JSON shows exactly what the API server
//! accepts. Reads go through the typed `ScanRequest` to check that the Rust
//! types and the CRD schema agree.

use std::{
    io::Write as _,
    process::{Output, Stdio},
    time::Duration,
};

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::{
    Client,
    api::{
        Api, ApiResource, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams,
        WatchEvent, WatchParams,
    },
    core::GroupVersionKind,
};
use scanreport_operator::api::ScanRequest;
use serde_json::{Value, json};
use testkit::{TestEnv, env, fresh_namespace};

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn scan_request_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("scanreport.io", "v1alpha1", "ScanRequest"),
        "scanrequests",
    )
}

fn dynamic_api(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &scan_request_resource())
}

fn valid_scan_request(name: &str) -> Value {
    json!({
        "apiVersion": "scanreport.io/v1alpha1",
        "kind": "ScanRequest",
        "metadata": { "name": name },
        "spec": {
            "scanner": "trivy",
            "registry": { "url": "https://registry.example.com" },
            "artifact": { "repository": "library/nginx", "digest": DIGEST },
            "reportMimeTypes": ["application/vnd.security.vulnerability.report; version=1.1"]
        }
    })
}

async fn create_json(client: &Client, ns: &str, obj: Value) -> Result<DynamicObject, kube::Error> {
    let obj: DynamicObject = serde_json::from_value(obj).expect("valid DynamicObject JSON");
    dynamic_api(client, ns)
        .create(&PostParams::default(), &obj)
        .await
}

/// Runs `kubectl <args>` with `stdin` fed in; returns the output.
fn kubectl(env: &TestEnv, args: &[&str], stdin: &str) -> Output {
    let mut child = env
        .kubectl()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running kubectl (Debian package kubernetes-client)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn describe(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn crds_are_installed_and_served() {
    let env = env().await;
    for name in [
        "scanrequests.scanreport.io",
        "scanners.scanreport.io",
        "scanpolicies.scanreport.io",
    ] {
        assert!(
            env.crds().iter().any(|c| c == name),
            "{name} not in {:?}",
            env.crds()
        );
    }
    let client = env.client();
    let resources = client
        .list_api_group_resources("scanreport.io/v1alpha1")
        .await
        .unwrap();
    let names: Vec<_> = resources
        .resources
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert!(names.contains(&"scanrequests"), "{names:?}");
    assert!(
        names.contains(&"scanrequests/status"),
        "status subresource missing: {names:?}"
    );
}

#[tokio::test]
async fn create_with_client_and_with_kubectl() {
    let env = env().await;
    let client = env.client();
    let ns = fresh_namespace(&client, "smoke-create").await;

    create_json(&client, &ns, valid_scan_request("from-client"))
        .await
        .expect("create via kube client");

    // kubectl's default validation: a 1.20 server has no server-side field
    // validation, so kubectl 1.32 validates on the client against the server's
    // own OpenAPI document, which includes this CRD's schema. That works for
    // custom resources; `--validate=false` is only needed to apply CRDs that
    // use schema fields newer than the server (see docs/envtest.md).
    let mut manifest = valid_scan_request("from-kubectl");
    manifest["metadata"]["namespace"] = json!(ns);
    let out = kubectl(env, &["apply", "-f", "-"], &manifest.to_string());
    assert!(
        out.status.success(),
        "kubectl apply failed: {}",
        describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("scanrequest.scanreport.io/from-kubectl created"),
        "{}",
        describe(&out)
    );

    // Both are visible through the typed API, and kubectl's short name works.
    let typed: Api<ScanRequest> = Api::namespaced(client.clone(), &ns);
    let mut names: Vec<String> = typed
        .list(&ListParams::default())
        .await
        .expect("typed list: Rust types must match the CRD schema")
        .items
        .into_iter()
        .filter_map(|sr| sr.metadata.name)
        .collect();
    names.sort();
    assert_eq!(names, ["from-client", "from-kubectl"]);

    let sr = typed.get("from-kubectl").await.unwrap();
    assert_eq!(sr.spec.artifact.digest.as_deref(), Some(DIGEST));
    assert_eq!(sr.spec.registry.url, "https://registry.example.com");

    let out = kubectl(env, &["get", "sr", "-n", &ns, "-o", "name"], "");
    assert!(out.status.success(), "{}", describe(&out));
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("scanrequest.scanreport.io/from-client"),
        "{listed}"
    );
}

#[tokio::test]
async fn invalid_specs_are_rejected_with_the_field_named() {
    let env = env().await;
    let client = env.client();
    let ns = fresh_namespace(&client, "smoke-invalid").await;

    type Mutation = fn(&mut Value);
    let cases: &[(&str, Mutation, &str)] = &[
        (
            "short digest",
            |o| o["spec"]["artifact"]["digest"] = json!("sha256:abc"),
            "spec.artifact.digest",
        ),
        (
            "uppercase digest",
            |o| {
                o["spec"]["artifact"]["digest"] =
                    json!(DIGEST.to_uppercase().replace("SHA256", "sha256"))
            },
            "spec.artifact.digest",
        ),
        (
            "unknown digest algorithm",
            |o| o["spec"]["artifact"]["digest"] = json!(DIGEST.replace("sha256", "md5")),
            "spec.artifact.digest",
        ),
        (
            "ftp URL",
            |o| o["spec"]["registry"]["url"] = json!("ftp://registry.example.com"),
            "spec.registry.url",
        ),
        (
            "URL without scheme",
            |o| o["spec"]["registry"]["url"] = json!("registry.example.com"),
            "spec.registry.url",
        ),
        (
            "empty reportMimeTypes",
            |o| o["spec"]["reportMimeTypes"] = json!([]),
            "spec.reportMimeTypes",
        ),
        (
            "nine reportMimeTypes",
            |o| o["spec"]["reportMimeTypes"] = json!(vec!["application/json"; 9]),
            "spec.reportMimeTypes",
        ),
        (
            "missing repository",
            |o| {
                o["spec"]["artifact"]
                    .as_object_mut()
                    .unwrap()
                    .remove("repository");
            },
            "spec.artifact.repository",
        ),
    ];

    let mut failures = Vec::new();
    for (i, (what, mutate, field)) in cases.iter().enumerate() {
        let mut obj = valid_scan_request(&format!("invalid-{i}"));
        mutate(&mut obj);
        match create_json(&client, &ns, obj).await {
            Ok(_) => failures.push(format!("{what}: accepted")),
            Err(kube::Error::Api(status)) => {
                if status.code != 422 || !status.message.contains(field) {
                    failures.push(format!(
                        "{what}: expected 422 naming {field}, got {} {:?}",
                        status.code, status.message
                    ));
                }
            }
            Err(e) => failures.push(format!("{what}: unexpected error {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    let left = dynamic_api(&client, &ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(left.items.is_empty(), "nothing invalid may be stored");
}

#[tokio::test]
async fn kubectl_reports_invalid_field() {
    let env = env().await;
    let ns = fresh_namespace(&env.client(), "smoke-kubectl-invalid").await;
    let mut manifest = valid_scan_request("bad-digest");
    manifest["metadata"]["namespace"] = json!(ns);
    manifest["spec"]["artifact"]["digest"] = json!("latest");
    // No client-side validation, so the rejection demonstrably comes from
    // the API server's schema.
    let out = kubectl(
        env,
        &["apply", "--validate=false", "-f", "-"],
        &manifest.to_string(),
    );
    assert!(
        !out.status.success(),
        "kubectl accepted a bad digest: {}",
        describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("spec.artifact.digest"),
        "{}",
        describe(&out)
    );
}

#[tokio::test]
async fn status_patch_is_seen_by_a_watch() {
    let env = env().await;
    let client = env.client();
    let ns = fresh_namespace(&client, "smoke-status").await;
    let created = create_json(&client, &ns, valid_scan_request("watched"))
        .await
        .unwrap();
    let generation = created.metadata.generation.expect("CRs have a generation");
    let rv = created.metadata.resource_version.clone().unwrap();

    let typed: Api<ScanRequest> = Api::namespaced(client.clone(), &ns);
    let mut events = typed
        .watch(
            &WatchParams::default()
                .fields("metadata.name=watched")
                .timeout(60),
            &rv,
        )
        .await
        .expect("start watch")
        .boxed();

    let status = json!({
        "status": {
            "observedGeneration": generation,
            "conditions": [{
                "type": "Ready",
                "status": "False",
                "reason": "Pending",
                "message": "waiting for the scanner",
                "lastTransitionTime": "2024-01-01T00:00:00Z",
                "observedGeneration": generation
            }]
        }
    });
    let patched = typed
        .patch_status("watched", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status patch");
    assert_eq!(
        patched.metadata.generation,
        Some(generation),
        "a status patch must not bump the generation"
    );
    let st = patched.status.expect("status stored");
    assert_eq!(st.observed_generation, Some(generation));
    assert_eq!(st.conditions.len(), 1);

    // The main resource ignores status (status subresource semantics).
    let ignored = json!({ "status": { "observedGeneration": 99 } });
    let after = typed
        .patch("watched", &PatchParams::default(), &Patch::Merge(&ignored))
        .await
        .unwrap();
    assert_eq!(
        after.status.and_then(|s| s.observed_generation),
        Some(generation)
    );

    let seen = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(ev) = events.try_next().await.expect("watch stream") {
            match ev {
                WatchEvent::Modified(sr) => {
                    if let Some(cond) = sr.status.as_ref().and_then(|s| s.conditions.first()) {
                        return (cond.type_.clone(), cond.reason.clone());
                    }
                }
                WatchEvent::Error(e) => panic!("watch error: {e:?}"),
                _ => {}
            }
        }
        panic!("watch ended without seeing the status change");
    })
    .await
    .expect("watch saw no status change within 30s");
    assert_eq!(seen, ("Ready".to_string(), "Pending".to_string()));
}

#[tokio::test]
async fn rbac_applies_to_the_unprivileged_users() {
    let env = env().await;
    let admin = env.client();
    let ns = fresh_namespace(&admin, "smoke-rbac").await;

    let users = [
        ("tester", env.tester_client()),
        ("service account", env.service_account_client(&ns, "reader")),
    ];
    for (who, client) in &users {
        match dynamic_api(client, &ns).list(&ListParams::default()).await {
            Err(kube::Error::Api(s)) if s.code == 403 => {}
            other => panic!("{who} must be forbidden before the grant, got {other:?}"),
        }
    }

    let role = Role {
        metadata: ObjectMeta {
            name: Some("scanrequest-reader".into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["scanreport.io".into()]),
            resources: Some(vec!["scanrequests".into()]),
            verbs: vec!["get".into(), "list".into(), "watch".into()],
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("scanrequest-reader".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: "scanrequest-reader".into(),
        },
        subjects: Some(vec![
            Subject {
                kind: "User".into(),
                name: testkit::TESTER_USER.into(),
                api_group: Some("rbac.authorization.k8s.io".into()),
                ..Default::default()
            },
            Subject {
                kind: "ServiceAccount".into(),
                name: "reader".into(),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
        ]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();

    for (who, client) in &users {
        // The RBAC authorizer reads roles from an informer cache, so a new
        // binding takes effect a moment after it is created.
        let what = format!("{who} may list after the grant");
        testkit::eventually(&what, Duration::from_secs(10), || async {
            dynamic_api(client, &ns)
                .list(&ListParams::default())
                .await
                .ok()
        })
        .await;
        match create_json(client, &ns, valid_scan_request("nope")).await {
            Err(kube::Error::Api(s)) if s.code == 403 => {}
            other => panic!("{who} must not create, got {other:?}"),
        }
    }

    // The tester context of the kubeconfig works for kubectl too.
    let out = kubectl(
        env,
        &[
            "--context",
            testkit::TESTER_USER,
            "get",
            "scanrequests",
            "-n",
            &ns,
        ],
        "",
    );
    assert!(out.status.success(), "{}", describe(&out));
}

/// CRDs may use schema fields newer than the test apiserver (CEL rules,
/// `selectableFields`); installing them must still work. Nothing here
/// depends on whether the server enforces them.
#[tokio::test]
async fn crds_with_newer_schema_fields_install() {
    let env = env().await;
    let client = env.client();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("widgets.yaml"),
        r#"---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.envtest.scanreport.io
spec:
  group: envtest.scanreport.io
  names: {kind: Widget, plural: widgets, singular: widget}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    selectableFields:
    - jsonPath: .spec.size
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            x-kubernetes-validations:
            - rule: self.size != 13
              message: unlucky
            properties:
              size: {type: integer, minimum: 1}
"#,
    )
    .unwrap();
    let names = testkit::install_crds_from(&client, dir.path())
        .await
        .expect("install");
    assert_eq!(names, ["widgets.envtest.scanreport.io"]);

    let ns = fresh_namespace(&client, "smoke-widgets").await;
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("envtest.scanreport.io", "v1", "Widget"),
        "widgets",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &ar);
    let widget = |name: &str, size: i64| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "envtest.scanreport.io/v1", "kind": "Widget",
            "metadata": {"name": name}, "spec": {"size": size}
        }))
        .unwrap()
    };
    api.create(&PostParams::default(), &widget("ok", 2))
        .await
        .expect("valid widget");
    // OpenAPI validation is enforced by every server version.
    match api.create(&PostParams::default(), &widget("zero", 0)).await {
        Err(kube::Error::Api(s)) if s.code == 422 && s.message.contains("spec.size") => {}
        other => panic!("minimum must be enforced, got {other:?}"),
    }
}

/// A long-running process (as the operator will be) sees the control plane
/// through `KUBECONFIG` and is stopped when its guard is dropped.
#[tokio::test]
async fn guarded_process_uses_kubeconfig_and_stops_on_drop() {
    let env = env().await;
    let client = env.client();
    let ns = fresh_namespace(&client, "smoke-guarded").await;

    let mut cmd = std::process::Command::new("kubectl");
    cmd.env("KUBECONFIG", env.kubeconfig())
        .args([
            "--cache-dir",
            &env.dir().join("kubectl-cache").display().to_string(),
        ])
        .args(["get", "scanrequests", "-n", &ns, "--watch", "-o", "name"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut guard = testkit::spawn_guarded(cmd).expect("spawn kubectl --watch");
    let pid = guard.id() as libc::pid_t;
    let stdout = guard.child().stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });

    // Created repeatedly until the watch (which may still be starting) sees one.
    let mut i = 0;
    let line = testkit::eventually("kubectl --watch output", Duration::from_secs(30), || {
        i += 1;
        let (client, ns, name) = (client.clone(), ns.clone(), format!("watched-{i}"));
        let line = rx.try_recv().ok();
        async move {
            if line.is_none() {
                create_json(&client, &ns, valid_scan_request(&name))
                    .await
                    .unwrap();
            }
            line
        }
    })
    .await;
    assert!(
        line.starts_with("scanrequest.scanreport.io/watched-"),
        "{line}"
    );

    drop(guard);
    // SAFETY: signal 0 only checks for existence; the child was reaped.
    assert_ne!(
        unsafe { libc::kill(pid, 0) },
        0,
        "kubectl must be gone after drop"
    );
}
