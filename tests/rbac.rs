//! The Helm chart's RBAC on a real API server.
//!
//! The chart is rendered (scripts/chart-check.sh render, the Helm v4 engine), its ServiceAccount,
//! roles and bindings are applied, and the operator binary runs with the container args and env
//! of the rendered Deployment and a kubeconfig that impersonates that ServiceAccount: it can do
//! exactly what the chart grants, nothing more.
//!
//! * With the chart's rules, the whole job (Scanner, ScanRequests with registry credentials and
//!   two report types, Events, a rescan, leader election) works without a single 403, for an
//!   all-namespaces install and for a namespaced one.
//! * Without any single (API group, resource, verb) of the rules, something a user notices fails,
//!   and the operator's log names the missing permission. The table in
//!   `every_permission_is_needed` says what; docs/deploy.md repeats it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use devscanner::{DevScanner, DevScannerConfig, DevScannerHandle};
use k8s_openapi::ByteString;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::config::Kubeconfig;
use scanreport_operator::api::{ScanPolicy, ScanPolicySpec, ScanRequest, Scanner};
use serde_json::{Value, json};
use testkit::fixtures::{ScanRequestBuilder, SecretBuilder};
use testkit::operator::{FAST, create_scanner};
use testkit::{GuardedChild, TestEnv, eventually, fresh_namespace, pgtest, spawn_guarded};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const VULN: &str = "application/vnd.security.vulnerability.report; version=1.1";
const SBOM: &str = "application/vnd.security.sbom.report+json; version=1.0";
/// How long the happy path may take.
const WAIT: Duration = Duration::from_secs(60);
/// How long a run without one permission has to show its symptom.
const SYMPTOM_WAIT: Duration = Duration::from_secs(20);
/// How long a symptom that is an absence (no status, not ready) must last to count. A complete
/// set of rules gets a ScanRequest Ready in about two seconds.
const ABSENCE_HOLD: Duration = Duration::from_secs(6);

/// An operator watching all namespaces reconciles the other tests' ScanRequests too: it runs
/// alone, the others side by side.
static CLUSTER_WIDE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

// --- the chart -------------------------------------------------------------------------------

/// The chart's manifests for `values`, as a Helm install of `release` into `namespace` would
/// create them.
fn render(values: &Value, release: &str, namespace: &str) -> Vec<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/chart-check.sh");
    let out = Command::new(&script)
        .args(["render", "--name", release, "--namespace", namespace])
        .args(["--values", &values.to_string()])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "rendering the chart failed. `scripts/chart-check.sh render` sets up its virtualenv \
         (.venv/chart-check: python3-venv from apt, helm-python-sdk and kubernetes-validate from \
         PyPI); run scripts/chart-check.sh to see what is wrong.\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the renderer prints a JSON array")
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

fn is_role(doc: &Value) -> bool {
    matches!(kind(doc), "Role" | "ClusterRole")
}

/// Every (API group, resource, verb) the rendered roles grant.
fn grants(docs: &[Value]) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for role in docs.iter().filter(|d| is_role(d)) {
        for rule in role["rules"].as_array().into_iter().flatten() {
            for group in rule["apiGroups"].as_array().into_iter().flatten() {
                for resource in rule["resources"].as_array().into_iter().flatten() {
                    for verb in rule["verbs"].as_array().into_iter().flatten() {
                        let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                        out.insert((s(group), s(resource), s(verb)));
                    }
                }
            }
        }
    }
    out
}

/// The manifests without `verb` on `group`/`resource` in any role; rules left without verbs go.
fn without(docs: &[Value], group: &str, resource: &str, verb: &str) -> Vec<Value> {
    let mut docs = docs.to_vec();
    let mut removed = 0;
    for role in docs.iter_mut().filter(|d| is_role(d)) {
        let Some(rules) = role["rules"].as_array_mut() else {
            continue;
        };
        for rule in rules.iter_mut() {
            let matches =
                rule["apiGroups"] == json!([group]) && rule["resources"] == json!([resource]);
            if let (true, Some(verbs)) = (matches, rule["verbs"].as_array_mut()) {
                let before = verbs.len();
                verbs.retain(|v| v != verb);
                removed += before - verbs.len();
            }
        }
        rules.retain(|r| r["verbs"].as_array().is_some_and(|v| !v.is_empty()));
    }
    assert!(
        removed > 0,
        "the chart grants no {verb} on {group}/{resource}"
    );
    docs
}

/// Server-side applies the ServiceAccount, roles and bindings among `docs` (the rest needs a
/// kubelet, which the test control plane does not have).
async fn apply_rbac(client: &Client, docs: &[Value]) {
    const PLURALS: &[(&str, &str)] = &[
        ("ServiceAccount", "serviceaccounts"),
        ("ClusterRole", "clusterroles"),
        ("ClusterRoleBinding", "clusterrolebindings"),
        ("Role", "roles"),
        ("RoleBinding", "rolebindings"),
    ];
    let mut applied = 0;
    for doc in docs {
        let Some((_, plural)) = PLURALS.iter().find(|(k, _)| *k == kind(doc)) else {
            continue;
        };
        let api_version = doc["apiVersion"].as_str().expect("apiVersion");
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(group, version, kind(doc)),
            plural,
        );
        let api: Api<DynamicObject> = match doc["metadata"]["namespace"].as_str() {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        api.patch(
            name(doc),
            &PatchParams::apply("scanreport-rbac-test").force(),
            &Patch::Apply(doc),
        )
        .await
        .unwrap_or_else(|e| panic!("applying {} {}: {e}", kind(doc), name(doc)));
        applied += 1;
    }
    assert!(
        applied >= 5,
        "the chart rendered only {applied} RBAC objects"
    );
}

fn deployment_container(docs: &[Value]) -> &Value {
    let deployment = docs
        .iter()
        .find(|d| kind(d) == "Deployment")
        .expect("the chart renders a Deployment");
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

fn service_account(docs: &[Value]) -> String {
    let deployment = docs.iter().find(|d| kind(d) == "Deployment").unwrap();
    deployment["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .expect("serviceAccountName")
        .to_owned()
}

fn release_name(prefix: &str) -> String {
    format!("{prefix}{:06x}", rand::random::<u32>() & 0xff_ffff)
}

// --- the operator as its pod would run it ----------------------------------------------------

/// A kubeconfig that authenticates as the control plane's admin and impersonates the
/// ServiceAccount, the way its token would authenticate in a cluster.
fn impersonating_kubeconfig(env: &TestEnv, dir: &Path, namespace: &str, sa: &str) -> PathBuf {
    let mut kubeconfig = Kubeconfig::read_from(env.kubeconfig()).expect("read the kubeconfig");
    let admin = kubeconfig
        .auth_infos
        .iter_mut()
        .find(|a| a.name == testkit::ADMIN_USER)
        .and_then(|a| a.auth_info.as_mut())
        .expect("the admin user");
    admin.impersonate = Some(format!("system:serviceaccount:{namespace}:{sa}"));
    admin.impersonate_groups = Some(vec![
        "system:serviceaccounts".into(),
        format!("system:serviceaccounts:{namespace}"),
        "system:authenticated".into(),
    ]);
    kubeconfig.current_context = Some(testkit::ADMIN_USER.into());
    let path = dir.join("kubeconfig");
    std::fs::write(&path, serde_yaml::to_string(&kubeconfig).unwrap()).unwrap();
    path
}

struct Operator {
    child: Option<GuardedChild>,
    log: PathBuf,
    port: u16,
    pod_name: String,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl Operator {
    /// Runs the binary with the rendered container's args and env, resolving the env the way
    /// the kubelet would (downward API, the database Secret), as the chart's ServiceAccount.
    async fn start(env: &TestEnv, client: &Client, docs: &[Value], release_ns: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sa = service_account(docs);
        let kubeconfig = impersonating_kubeconfig(env, dir.path(), release_ns, &sa);
        let container = deployment_container(docs);
        let pod_name = format!("{}-{:05x}", sa, rand::random::<u32>() & 0xfffff);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();

        let mut args: Vec<String> = container["args"]
            .as_array()
            .expect("container args")
            .iter()
            .map(|a| a.as_str().expect("string arg").to_owned())
            .collect();
        assert_eq!(args.first().map(String::as_str), Some("run"), "{args:?}");
        let listen = args
            .iter_mut()
            .find(|a| a.starts_with("--listen="))
            .expect("the chart passes --listen");
        // The pod's 0.0.0.0:8080, moved to a free loopback port.
        *listen = format!("--listen=127.0.0.1:{port}");
        args.extend(FAST.iter().map(|s| (*s).to_owned()));

        let log = dir.path().join("operator.log");
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_scanreport-operator"));
        cmd.args(&args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KUBECONFIG", &kubeconfig)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        for var in container["env"].as_array().expect("container env") {
            let var_name = var["name"].as_str().unwrap();
            let value = if let Some(v) = var["value"].as_str() {
                v.to_owned()
            } else if let Some(path) = var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                match path {
                    "metadata.name" => pod_name.clone(),
                    "metadata.namespace" => release_ns.to_owned(),
                    other => panic!("{var_name}: fieldRef {other} not simulated"),
                }
            } else if let Some(r) = var["valueFrom"]["secretKeyRef"].as_object() {
                let (secret, key) = (r["name"].as_str().unwrap(), r["key"].as_str().unwrap());
                let s = Api::<Secret>::namespaced(client.clone(), release_ns)
                    .get(secret)
                    .await
                    .unwrap_or_else(|e| panic!("{var_name}: Secret {secret}: {e}"));
                let ByteString(bytes) = s
                    .data
                    .unwrap_or_default()
                    .remove(key)
                    .unwrap_or_else(|| panic!("{var_name}: Secret {secret} has no key {key}"));
                String::from_utf8(bytes).unwrap()
            } else {
                panic!("{var_name}: a value source the test does not simulate: {var}");
            };
            cmd.env(var_name, value);
        }
        let child = spawn_guarded(cmd).expect("start the operator");
        Self {
            child: Some(child),
            log,
            port,
            pod_name,
            kubeconfig,
            _dir: dir,
        }
    }

    fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            let _ = child.stop();
        }
    }

    /// "running", or how the process ended.
    fn state(&mut self) -> String {
        match self.child.as_mut().map(|c| c.child().try_wait()) {
            Some(Ok(None)) => "running".into(),
            Some(Ok(Some(status))) => format!("exited ({status})"),
            Some(Err(e)) => format!("unknown ({e})"),
            None => "stopped".into(),
        }
    }

    fn raw_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log as plain text: the string values of each JSON line, without escapes, so that a
    /// message quoted inside a `{:?}` error reads as the API server wrote it.
    fn text_lines(&self) -> Vec<String> {
        fn strings(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::String(s) => out.push(s.clone()),
                Value::Number(n) => out.push(n.to_string()),
                Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
                Value::Object(o) => o.values().for_each(|v| strings(v, out)),
                _ => {}
            }
        }
        self.raw_log()
            .lines()
            .map(|line| match serde_json::from_str::<Value>(line) {
                Ok(v) => {
                    let mut parts = Vec::new();
                    strings(&v, &mut parts);
                    parts.join(" ")
                }
                Err(_) => line.to_owned(),
            })
            .map(|l| l.replace('\\', ""))
            .collect()
    }

    /// The first log line in which the API server refuses `verb` on `resource`.
    fn refusal(&self, verb: &str, resource: &str) -> Option<String> {
        let needle = format!("cannot {verb} resource \"{resource}\"");
        self.text_lines().into_iter().find(|l| l.contains(&needle))
    }

    /// Log lines that mention a 403 or Forbidden in any form.
    fn forbidden_lines(&self) -> Vec<String> {
        fn has_403(l: &str) -> bool {
            let b = l.as_bytes();
            l.match_indices("403").any(|(i, _)| {
                let before = i.checked_sub(1).map(|j| b[j]);
                let after = b.get(i + 3).copied();
                !before.is_some_and(|c| c.is_ascii_alphanumeric())
                    && !after.is_some_and(|c| c.is_ascii_alphanumeric())
            })
        }
        self.text_lines()
            .into_iter()
            .filter(|l| l.to_ascii_lowercase().contains("forbidden") || has_403(l))
            .collect()
    }

    fn error_lines(&self) -> Vec<String> {
        self.raw_log()
            .lines()
            .filter(|l| l.contains("\"level\":\"ERROR\""))
            .map(str::to_owned)
            .collect()
    }

    fn tail(&self, n: usize) -> String {
        let log = self.raw_log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// `GET /readyz` status code; `None` when nothing answers.
    async fn readyz(&self) -> Option<u16> {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .ok()?;
        stream
            .write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .ok()?;
        let mut response = String::new();
        tokio::time::timeout(Duration::from_secs(2), stream.read_to_string(&mut response))
            .await
            .ok()?
            .ok()?;
        response.split_whitespace().nth(1)?.parse().ok()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- operator log tail ({}) ---\n{}",
                self.log.display(),
                self.tail(40)
            );
        }
    }
}

// --- objects ---------------------------------------------------------------------------------

async fn database_secret(client: &Client, namespace: &str, docs: &[Value], url: &str) {
    let from = &deployment_container(docs)["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "DATABASE_URL")
        .expect("DATABASE_URL in the container env")["valueFrom"]["secretKeyRef"];
    SecretBuilder::opaque()
        .name(from["name"].as_str().unwrap())
        .entry(from["key"].as_str().unwrap(), url)
        .create(client, namespace)
        .await;
}

async fn pull_secret(client: &Client, namespace: &str) {
    SecretBuilder::basic_auth("robot", "registry-pass")
        .name("pull-secret")
        .create(client, namespace)
        .await;
}

/// A request for two report types of an artifact behind registry credentials.
async fn create_request(client: &Client, namespace: &str, scanner: &str) {
    create_request_named(client, namespace, "app", scanner, None).await;
}

async fn create_request_named(
    client: &Client,
    namespace: &str,
    name: &str,
    scanner: &str,
    policy: Option<&str>,
) {
    let mut sr = ScanRequestBuilder::new(name, scanner)
        .credentials_secret("pull-secret")
        .mime_types(&[VULN, SBOM])
        .rescan_token("v1");
    if let Some(policy) = policy {
        sr = sr.policy_ref(policy);
    }
    let sr = sr.build();
    Api::<ScanRequest>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &sr)
        .await
        .unwrap();
}

fn condition(sr: &ScanRequest, type_: &str) -> Option<(String, String)> {
    let c = sr
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.message.clone()))
}

fn is_ready(sr: &ScanRequest) -> bool {
    let current = sr.status.as_ref().and_then(|s| s.observed_generation) == sr.metadata.generation;
    current
        && condition(sr, "Ready").is_some_and(|(s, _)| s == "True")
        && condition(sr, "Reconciling").is_none()
}

async fn get_request(client: &Client, namespace: &str) -> Option<ScanRequest> {
    Api::<ScanRequest>::namespaced(client.clone(), namespace)
        .get("app")
        .await
        .ok()
}

async fn events(client: &Client, namespace: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("scanreport-operator"))
        .collect()
}

async fn scanner_status_written(client: &Client, name: &str) -> bool {
    Api::<Scanner>::all(client.clone())
        .get(name)
        .await
        .ok()
        .and_then(|s| s.status)
        .is_some_and(|s| !s.conditions.is_empty())
}

async fn clean_up(client: &Client, namespaces: &[String], scanner: &str) {
    for ns in namespaces {
        for name in ["app", "later"] {
            let _ = Api::<ScanRequest>::namespaced(client.clone(), ns)
                .delete(name, &DeleteParams::default())
                .await;
        }
    }
    for name in [scanner.to_owned(), format!("{scanner}-later")] {
        let _ = Api::<Scanner>::all(client.clone())
            .delete(&name, &DeleteParams::default())
            .await;
    }
    let _ = Api::<ScanPolicy>::all(client.clone())
        .delete(&format!("{scanner}-later"), &DeleteParams::default())
        .await;
}

// --- the tests -------------------------------------------------------------------------------

/// Installs the chart's RBAC with `values`, runs the operator as its ServiceAccount and goes
/// through a scan and a rescan in each watched namespace.
async fn whole_job_without_a_403(values_for: impl Fn(&[String]) -> Value, prefix: &str) {
    let env = testkit::env().await;
    let client = env.client();
    let release_ns = fresh_namespace(&client, &format!("{prefix}-release")).await;
    let watched = vec![
        fresh_namespace(&client, &format!("{prefix}-team-a")).await,
        fresh_namespace(&client, &format!("{prefix}-team-b")).await,
    ];
    let docs = render(&values_for(&watched), &release_name(prefix), &release_ns);
    apply_rbac(&client, &docs).await;
    let database_url = pgtest::fresh_database("rbac").await;
    database_secret(&client, &release_ns, &docs, &database_url).await;
    let adapter = DevScanner::start(DevScannerConfig::default())
        .await
        .unwrap();
    let scanner = format!("{prefix}-{:x}", rand::random::<u32>());
    create_scanner(&client, &scanner, adapter.base_url()).await;
    for ns in &watched {
        pull_secret(&client, ns).await;
        create_request(&client, ns, &scanner).await;
    }

    let mut op = Operator::start(env, &client, &docs, &release_ns).await;
    // The operator's credentials are the ServiceAccount's: it cannot, e.g., list Secrets.
    let as_operator = Client::try_from(
        kube::Config::from_custom_kubeconfig(
            Kubeconfig::read_from(&op.kubeconfig).unwrap(),
            &Default::default(),
        )
        .await
        .unwrap(),
    )
    .unwrap();
    let err = Api::<Secret>::namespaced(as_operator, &watched[0])
        .list(&ListParams::default())
        .await
        .expect_err("the operator's identity may not list Secrets");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "{err}"
    );

    let mut first = BTreeMap::new();
    for ns in &watched {
        let sr = eventually(&format!("{ns}/app to be Ready"), WAIT, || async {
            get_request(&client, ns).await.filter(is_ready)
        })
        .await;
        first.insert(ns.clone(), sr.status.unwrap());
    }
    assert!(
        adapter.stats().scans_with_registry_authorization >= 4,
        "the registry credentials reached the adapter: {:?}",
        adapter.stats()
    );
    assert!(
        scanner_status_written(&client, &scanner).await,
        "the Scanner's status is written"
    );
    let lease_name = deployment_container(&docs)["args"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|a| a.as_str()?.strip_prefix("--lease-name="))
        .expect("leader election is on by default")
        .to_owned();
    let lease = Api::<Lease>::namespaced(client.clone(), &release_ns)
        .get(&lease_name)
        .await
        .expect("the Lease exists in the release namespace");
    let holder = lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    assert!(
        holder.starts_with(&op.pod_name),
        "the Lease is held by this replica ({}): {holder:?}",
        op.pod_name
    );

    // A rescan: a new token, a newer report.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for ns in &watched {
        Api::<ScanRequest>::namespaced(client.clone(), ns)
            .patch(
                "app",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"rescanToken": "v2"}})),
            )
            .await
            .unwrap();
    }
    for ns in &watched {
        let before = &first[ns];
        eventually(&format!("{ns}/app rescanned"), WAIT, || async {
            let sr = get_request(&client, ns).await.filter(is_ready)?;
            let status = sr.status?;
            let newer = status.reports.len() == 2
                && status
                    .reports
                    .iter()
                    .zip(&before.reports)
                    .all(|(now, then)| now.generated_at > then.generated_at);
            (status.rescan_token.as_deref() == Some("v2") && newer).then_some(())
        })
        .await;
        // Events were created, and repeated ones counted (a patch of the first one).
        let events = events(&client, ns).await;
        let reasons: BTreeSet<_> = events.iter().filter_map(|e| e.reason.clone()).collect();
        assert!(
            reasons.contains("ScanSubmitted") && reasons.contains("ReportStored"),
            "{ns}: {reasons:?}"
        );
        assert!(
            events
                .iter()
                .any(|e| e.series.as_ref().is_some_and(|s| s.count >= 2)),
            "{ns}: a repeated Event is counted in its series"
        );
    }

    op.stop();
    let forbidden = op.forbidden_lines();
    assert!(forbidden.is_empty(), "403s in the log: {forbidden:#?}");
    let errors = op.error_lines();
    assert!(errors.is_empty(), "errors in the log: {errors:#?}");
    clean_up(&client, &watched, &scanner).await;
}

#[tokio::test]
async fn all_namespaces_install_works_without_a_403() {
    let _alone = CLUSTER_WIDE.write().await;
    whole_job_without_a_403(|_| json!({}), "rbac-all").await;
}

#[tokio::test]
async fn namespaced_install_works_without_a_403() {
    let _shared = CLUSTER_WIDE.read().await;
    whole_job_without_a_403(|watched| json!({"watchNamespaces": watched}), "rbac-ns").await;
}

/// What a user notices when one permission is missing.
#[derive(Debug, Clone, Copy)]
enum Symptom {
    /// The pod never becomes ready (a watch cache it waits for cannot fill) and no ScanRequest
    /// gets a status.
    NeverReady,
    /// What existed at start-up is reconciled, but a ScanRequest created later never gets a
    /// status: after its first list the operator can only retry the refused watch.
    LaterRequestsIgnored,
    /// What existed at start-up works, but a Scanner created later stays unknown: ScanRequests
    /// naming it stall with "Scanner ... does not exist".
    LaterScannersUnknown,
    /// What existed at start-up works, but a ScanPolicy created later stays unknown:
    /// ScanRequests naming it in `spec.policyRef` stall with "ScanPolicy ... does not exist".
    LaterPoliciesUnknown,
    /// ScanRequests never get a status: `kubectl get sr` shows nothing, `kubectl wait` times out.
    NoStatus,
    /// The ScanRequest says Ready=False with the refusal to read its registry credentials.
    RequestShowsForbiddenSecret,
    /// The scans complete, but `kubectl get scanner` never shows the adapter or its readiness.
    NoScannerStatus,
    /// The scans complete, but `kubectl describe sr` / `kubectl events` show no Events.
    NoEvents,
    /// The first Event of each report and reason appears; the repeats of a rescan are not
    /// counted (no series).
    RepeatsNotCounted,
    /// The operator never becomes leader, so nothing is reconciled.
    NeverLeads,
}

impl Symptom {
    /// Symptoms that are an absence must last a while to count.
    fn is_absence(self) -> bool {
        matches!(
            self,
            Self::NeverReady | Self::LaterRequestsIgnored | Self::NoStatus | Self::NeverLeads
        )
    }
}

struct Setup {
    release_ns: String,
    ns: String,
    scanner: String,
    adapter_url: String,
    /// Whether the objects created after start-up exist yet.
    later: bool,
}

/// Whether the ScanRequest stalls because its Scanner is unknown.
fn stalled_scanner_unknown(sr: &ScanRequest) -> Result<(), String> {
    match condition(sr, "Stalled") {
        Some((s, m)) if s == "True" && m.contains("does not exist") => Ok(()),
        other => Err(format!(
            "{}: Stalled condition {other:?}",
            sr.metadata.name.as_deref().unwrap_or_default()
        )),
    }
}

/// What a run shows at one moment, for the symptom at hand; `Err` says why not (yet).
async fn shows(
    symptom: Symptom,
    op: &Operator,
    client: &Client,
    s: &mut Setup,
) -> Result<(), String> {
    let sr = get_request(client, &s.ns).await.ok_or("no ScanRequest")?;
    let status = format!("{:?}", sr.status);
    let no_status = |sr: &ScanRequest| match &sr.status {
        None => Ok(()),
        Some(status) => Err(format!("the ScanRequest has a status: {status:?}")),
    };
    let ready = || {
        if is_ready(&sr) {
            Ok(())
        } else {
            Err(format!("the ScanRequest is not Ready: {status}"))
        }
    };
    let not_ready_pod = || async {
        match op.readyz().await {
            Some(200) => Err("/readyz answers 200".to_owned()),
            _ => Ok(()),
        }
    };
    match symptom {
        Symptom::NeverReady => {
            not_ready_pod().await?;
            no_status(&sr)
        }
        Symptom::LaterRequestsIgnored
        | Symptom::LaterScannersUnknown
        | Symptom::LaterPoliciesUnknown => {
            ready()?;
            let scanner = match symptom {
                Symptom::LaterScannersUnknown => format!("{}-later", s.scanner),
                _ => s.scanner.clone(),
            };
            let policy = matches!(symptom, Symptom::LaterPoliciesUnknown)
                .then(|| format!("{}-later", s.scanner));
            if !s.later {
                if scanner != s.scanner {
                    create_scanner(client, &scanner, &s.adapter_url).await;
                }
                if let Some(policy) = &policy {
                    Api::<ScanPolicy>::all(client.clone())
                        .create(
                            &PostParams::default(),
                            &ScanPolicy::new(policy, ScanPolicySpec::default()),
                        )
                        .await
                        .map_err(|e| e.to_string())?;
                }
                create_request_named(client, &s.ns, "later", &scanner, policy.as_deref()).await;
                s.later = true;
                return Err("created the later objects".into());
            }
            let later = Api::<ScanRequest>::namespaced(client.clone(), &s.ns)
                .get("later")
                .await
                .map_err(|e| e.to_string())?;
            match symptom {
                Symptom::LaterScannersUnknown | Symptom::LaterPoliciesUnknown => {
                    stalled_scanner_unknown(&later)
                }
                _ => no_status(&later),
            }
        }
        Symptom::NoStatus | Symptom::NeverLeads => no_status(&sr),
        Symptom::RequestShowsForbiddenSecret => match condition(&sr, "Ready") {
            Some((s, m))
                if s == "False" && m.contains("pull-secret") && m.contains("forbidden") =>
            {
                Ok(())
            }
            other => Err(format!("Ready condition: {other:?}")),
        },
        Symptom::NoScannerStatus => {
            ready()?;
            if scanner_status_written(client, &s.scanner).await {
                Err("the Scanner has a status".into())
            } else {
                Ok(())
            }
        }
        Symptom::NoEvents => {
            ready()?;
            let events = events(client, &s.ns).await;
            if events.is_empty() {
                Ok(())
            } else {
                Err(format!("{} Events", events.len()))
            }
        }
        Symptom::RepeatsNotCounted => {
            ready()?;
            // Each report has Events of its own; a rescan repeats them, and a repeat is a
            // PATCH of the Event's series.
            if !s.later {
                Api::<ScanRequest>::namespaced(client.clone(), &s.ns)
                    .patch(
                        "app",
                        &PatchParams::default(),
                        &Patch::Merge(serde_json::json!({"spec": {"rescanToken": "again"}})),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                s.later = true;
                return Err("forced a rescan".into());
            }
            let events = events(client, &s.ns).await;
            if events.is_empty() {
                return Err("no Events at all".into());
            }
            if events.iter().any(|e| e.series.is_some()) {
                return Err("an Event has a series".into());
            }
            Ok(())
        }
    }
}

#[tokio::test]
async fn every_permission_is_needed() {
    let _shared = CLUSTER_WIDE.read().await;
    use Symptom::*;
    // One line per (API group, resource, verb) the chart grants; docs/deploy.md has the same
    // table. The chart's namespaced install (Role per watched namespace) with leader election.
    let removals: &[(&str, &str, &str, Symptom)] = &[
        ("scanreport.io", "scanrequests", "list", NeverReady),
        (
            "scanreport.io",
            "scanrequests",
            "watch",
            LaterRequestsIgnored,
        ),
        ("scanreport.io", "scanrequests/status", "patch", NoStatus),
        // The operator waits for its Scanner cache before reconciling anything.
        ("scanreport.io", "scanners", "list", NeverReady),
        ("scanreport.io", "scanners", "watch", LaterScannersUnknown),
        ("scanreport.io", "scanners/status", "patch", NoScannerStatus),
        // Likewise for its ScanPolicy cache.
        ("scanreport.io", "scanpolicies", "list", NeverReady),
        (
            "scanreport.io",
            "scanpolicies",
            "watch",
            LaterPoliciesUnknown,
        ),
        ("", "secrets", "get", RequestShowsForbiddenSecret),
        ("events.k8s.io", "events", "create", NoEvents),
        ("events.k8s.io", "events", "patch", RepeatsNotCounted),
        ("coordination.k8s.io", "leases", "get", NeverLeads),
        ("coordination.k8s.io", "leases", "create", NeverLeads),
        ("coordination.k8s.io", "leases", "patch", NeverLeads),
    ];

    let env = testkit::env().await;
    let client = env.client();
    let database_url = pgtest::fresh_database("rbac_minimal").await;
    let adapter: DevScannerHandle = DevScanner::start(DevScannerConfig::default())
        .await
        .unwrap();

    // The table covers exactly what the chart grants.
    let probe = render(&json!({"watchNamespaces": ["team-a"]}), "probe", "scanning");
    let granted = grants(&probe);
    let listed: BTreeSet<_> = removals
        .iter()
        .map(|(g, r, v, _)| ((*g).to_owned(), (*r).to_owned(), (*v).to_owned()))
        .collect();
    assert_eq!(
        granted, listed,
        "the chart's rules and this test's table differ; every granted permission needs a line"
    );

    let setup = |tag: String| {
        let client = client.clone();
        let database_url = database_url.clone();
        let adapter_url = adapter.base_url().to_owned();
        async move {
            let release_ns = fresh_namespace(&client, &format!("min-{tag}-release")).await;
            let ns = fresh_namespace(&client, &format!("min-{tag}")).await;
            let docs = render(
                &json!({"watchNamespaces": [&ns]}),
                &release_name("min"),
                &release_ns,
            );
            database_secret(&client, &release_ns, &docs, &database_url).await;
            let scanner = format!("min-{tag}-{:x}", rand::random::<u32>());
            create_scanner(&client, &scanner, &adapter_url).await;
            pull_secret(&client, &ns).await;
            create_request(&client, &ns, &scanner).await;
            (
                docs,
                Setup {
                    release_ns,
                    ns,
                    scanner,
                    adapter_url,
                    later: false,
                },
            )
        }
    };

    // The control: all rules, Ready in the time a removal gets to show its symptom.
    let started = Instant::now();
    let (docs, s) = setup("all".into()).await;
    apply_rbac(&client, &docs).await;
    let mut op = Operator::start(env, &client, &docs, &s.release_ns).await;
    eventually("the control request to be Ready", SYMPTOM_WAIT, || async {
        get_request(&client, &s.ns).await.filter(is_ready)
    })
    .await;
    op.stop();
    assert!(
        op.forbidden_lines().is_empty(),
        "{:#?}",
        op.forbidden_lines()
    );
    clean_up(&client, std::slice::from_ref(&s.ns), &s.scanner).await;
    eprintln!("control: Ready in {:.1?}", started.elapsed());

    let mut report = Vec::new();
    for (group, resource, verb, symptom) in removals {
        let started = Instant::now();
        let tag = format!("{}-{verb}", resource.replace('/', "-"));
        let (docs, mut s) = setup(tag).await;
        apply_rbac(&client, &without(&docs, group, resource, verb)).await;
        let mut op = Operator::start(env, &client, &docs, &s.release_ns).await;

        let deadline = Instant::now() + SYMPTOM_WAIT;
        let mut since: Option<Instant> = None;
        let evidence = loop {
            let refusal = op.refusal(verb, resource);
            let visible = shows(*symptom, &op, &client, &mut s).await;
            match (&refusal, &visible) {
                (Some(line), Ok(())) => {
                    let held = since.get_or_insert_with(Instant::now).elapsed();
                    if !symptom.is_absence() || held >= ABSENCE_HOLD {
                        break line.clone();
                    }
                }
                _ => since = None,
            }
            if Instant::now() > deadline {
                panic!(
                    "without {verb} on {group}/{resource}: expected {symptom:?} within \
                     {SYMPTOM_WAIT:?}; refusal in the log: {refusal:?}; what a user sees: \
                     {visible:?}\n--- operator log tail ---\n{}",
                    op.tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let state = op.state();
        op.stop();
        clean_up(&client, std::slice::from_ref(&s.ns), &s.scanner).await;
        let line = format!(
            "without {verb:>6} on {:<32} {symptom:?} ({:.1?}, operator {state}); log: {}",
            format!("{group}/{resource}"),
            started.elapsed(),
            evidence.chars().take(160).collect::<String>()
        );
        eprintln!("{line}");
        report.push(line);
    }
    assert_eq!(report.len(), removals.len());
}
