//! A throw-away Kubernetes control plane (etcd + kube-apiserver) for
//! integration tests, in the style of controller-runtime's `envtest`.
//!
//! One control plane is started lazily per test binary and shared by all
//! tests in it; each test gets its own namespace via [`fresh_namespace`].
//! See `docs/envtest.md` for how the binaries are obtained.
//!
//! ```ignore
//! #[tokio::test]
//! async fn something() {
//!     let env = testkit::env().await;
//!     let client = env.client();
//!     let ns = testkit::fresh_namespace(&client, "something").await;
//!     // ...
//! }
//! ```
//!
//! # Runtimes
//!
//! Every `#[tokio::test]` has its own runtime, and a `kube::Client` spawns
//! background tasks on the runtime it was created in. The shared state
//! therefore only holds plain configuration ([`kube::Config`], file paths);
//! build a client per test with [`TestEnv::client`] and friends.
//!
//! # Teardown
//!
//! Statics are never dropped, so teardown does not rely on `Drop`:
//!
//! * The processes are spawned from a dedicated thread that lives until the
//!   test process ends, with `PR_SET_PDEATHSIG = SIGKILL` (the kernel ties
//!   the death signal to the *thread* that forked the child, which is why the
//!   short-lived libtest test threads must not spawn them). If the test
//!   binary dies for any reason, including SIGKILL, the kernel kills etcd and
//!   kube-apiserver.
//! * Each child runs in its own process group, so a terminal's Ctrl-C does
//!   not reach it half-way; the group is what gets signalled on teardown.
//! * An `atexit(3)` hook, which runs when libtest returns or calls
//!   `process::exit` (also after failed tests), sends SIGTERM, waits briefly,
//!   then SIGKILLs, reaps the children and removes the temporary directory.
//! * A temporary directory left behind by a killed run (its `owner.pid` is
//!   no longer alive) is removed by the next run.
//!
//! Set `SCANREPORT_ENVTEST_KEEP=1` to keep the temporary directory (logs,
//! kubeconfig, certificates) for inspection.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    io::{self, Read as _, Seek as _, SeekFrom},
    net::{TcpListener, TcpStream},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicU32, Ordering},
        mpsc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, anyhow, bail};
use k8s_openapi::{
    api::core::v1::Namespace,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Client, Config,
    api::{Api, ObjectMeta, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};

/// User in `system:masters`; the default identity of [`TestEnv::client`].
pub const ADMIN_USER: &str = "admin";
/// Authenticated user without any RBAC grants, for authorization tests.
pub const TESTER_USER: &str = "tester";

const ADMIN_TOKEN: &str = "envtest-admin-token";
const TESTER_TOKEN: &str = "envtest-tester-token";
const DIR_PREFIX: &str = "scanreport-envtest-";
const KEEP_ENV: &str = "SCANREPORT_ENVTEST_KEEP";
const FIELD_MANAGER: &str = "scanreport-envtest";
const SERVICE_CLUSTER_IP_RANGE: &str = "10.0.0.0/24";
const START_ATTEMPTS: usize = 3;
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// The shared control plane of this test binary.
pub struct TestEnv {
    dir: PathBuf,
    assets: PathBuf,
    kubeconfig: PathBuf,
    server: String,
    server_version: String,
    admin: Config,
    tester: Config,
    crds: Vec<String>,
}

static ENV: tokio::sync::OnceCell<Result<TestEnv, String>> = tokio::sync::OnceCell::const_new();

/// The shared control plane, started on first use. Panics with the reason if
/// it cannot be started (the failure is remembered, so later tests fail fast).
pub async fn env() -> &'static TestEnv {
    match try_env().await {
        Ok(env) => env,
        Err(e) => panic!("test control plane unavailable: {e:#}"),
    }
}

/// Like [`env`], but returns the start-up error instead of panicking.
pub async fn try_env() -> anyhow::Result<&'static TestEnv> {
    let res = ENV
        .get_or_init(|| async { TestEnv::start().await.map_err(|e| format!("{e:#}")) })
        .await;
    res.as_ref().map_err(|e| anyhow!("{e}"))
}

/// Admin client for the shared control plane (convenience for
/// `env().await.client()`).
pub async fn client() -> Client {
    env().await.client()
}

impl TestEnv {
    /// Temporary directory holding logs, certificates and the kubeconfig.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Directory the `kube-apiserver` and `etcd` binaries came from.
    pub fn assets(&self) -> &Path {
        &self.assets
    }

    /// Kubeconfig with contexts `admin` (current) and `tester`; pass it to
    /// `kubectl --kubeconfig` or as `KUBECONFIG` to a spawned operator.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> &str {
        &self.server
    }

    /// `gitVersion` reported by the apiserver, e.g. `v1.20.2`.
    pub fn server_version(&self) -> &str {
        &self.server_version
    }

    /// Names of the CRDs installed from `crds/`.
    pub fn crds(&self) -> &[String] {
        &self.crds
    }

    /// Configuration of the admin user (member of `system:masters`).
    pub fn admin_config(&self) -> Config {
        self.admin.clone()
    }

    /// Configuration of the unprivileged `tester` user.
    pub fn tester_config(&self) -> Config {
        self.tester.clone()
    }

    /// Admin client. Must be called inside the test's tokio runtime.
    pub fn client(&self) -> Client {
        make_client(self.admin_config())
    }

    /// Client for the unprivileged `tester` user (only `system:authenticated`).
    pub fn tester_client(&self) -> Client {
        make_client(self.tester_config())
    }

    /// Client that authenticates as admin and impersonates `user` with the
    /// given groups (the apiserver adds `system:authenticated`).
    pub fn impersonating_client(&self, user: &str, groups: &[&str]) -> Client {
        let mut config = self.admin_config();
        config.auth_info.impersonate = Some(user.to_string());
        if !groups.is_empty() {
            config.auth_info.impersonate_groups =
                Some(groups.iter().map(|g| g.to_string()).collect());
        }
        make_client(config)
    }

    /// Client acting as the service account `namespace/name` (via
    /// impersonation; the account object itself need not exist).
    pub fn service_account_client(&self, namespace: &str, name: &str) -> Client {
        let user = format!("system:serviceaccount:{namespace}:{name}");
        let ns_group = format!("system:serviceaccounts:{namespace}");
        self.impersonating_client(
            &user,
            &["system:serviceaccounts", &ns_group, "system:authenticated"],
        )
    }

    /// `kubectl` preconfigured with this control plane's kubeconfig and a
    /// private discovery cache (so `~/.kube/cache` is neither used nor
    /// polluted). Uses `$KUBECTL` if set, else the `kubectl` built with the
    /// apiserver (same version), else the one on `PATH`.
    pub fn kubectl(&self) -> Command {
        let bundled = self.assets.join("kubectl");
        let program = std::env::var_os("KUBECTL").unwrap_or_else(|| {
            if bundled.is_file() {
                bundled.into_os_string()
            } else {
                "kubectl".into()
            }
        });
        let mut cmd = Command::new(program);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.join("kubectl-cache"));
        cmd
    }

    /// Path of the apiserver log (useful in assertion messages).
    pub fn apiserver_log(&self) -> PathBuf {
        self.dir.join("kube-apiserver.log")
    }

    async fn start() -> anyhow::Result<TestEnv> {
        let started = Instant::now();
        install_exit_hook();
        remove_stale_dirs();

        let assets = find_assets()?;
        let apiserver_bin = assets.join("kube-apiserver");
        let etcd_bin = assets.join("etcd");
        let minor = apiserver_minor_version(&apiserver_bin)?;

        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()
            .context("creating temporary directory")?
            .keep();
        fs::write(dir.join("owner.pid"), std::process::id().to_string())?;
        register_cleanup_dir(dir.clone());

        let pki = dir.join("pki");
        fs::create_dir_all(&pki)?;
        generate_pki(&pki)?;
        fs::write(
            pki.join("tokens.csv"),
            format!(
                "{ADMIN_TOKEN},{ADMIN_USER},uid-admin,\"system:masters\"\n{TESTER_TOKEN},{TESTER_USER},uid-tester\n"
            ),
        )?;

        let mut last_err = None;
        for attempt in 1..=START_ATTEMPTS {
            match start_processes(&dir, &etcd_bin, &apiserver_bin, minor).await {
                Ok((server, admin, tester, server_version)) => {
                    let kubeconfig = dir.join("kubeconfig");
                    // start_processes wrote it for this server already.
                    let crds = match install_crds(&make_client(admin.clone())).await {
                        Ok(crds) => crds,
                        Err(e) => {
                            stop_children();
                            return Err(e);
                        }
                    };
                    eprintln!(
                        "envtest: kube-apiserver {server_version} at {server} ready in {:.1?} ({} CRDs); dir {}",
                        started.elapsed(),
                        crds.len(),
                        dir.display()
                    );
                    return Ok(TestEnv {
                        dir,
                        assets,
                        kubeconfig,
                        server,
                        server_version,
                        admin,
                        tester,
                        crds,
                    });
                }
                Err(e) => {
                    eprintln!("envtest: start attempt {attempt}/{START_ATTEMPTS} failed: {e:#}");
                    stop_children();
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap())
    }
}

/// Creates a namespace `<prefix>-<unique suffix>` and returns its name.
pub async fn fresh_namespace(client: &Client, prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut clean: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    clean.truncate(40);
    let clean = clean.trim_matches('-');
    let clean = if clean.is_empty() { "test" } else { clean };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let name = format!(
        "{clean}-{}-{:x}",
        COUNTER.fetch_add(1, Ordering::Relaxed),
        (std::process::id() ^ nanos) & 0xfffff
    );
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(BTreeMap::from([(
                "scanreport.io/envtest".to_string(),
                "true".to_string(),
            )])),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
    name
}

/// Polls `check` every 100ms until it returns `Some`, or panics after
/// `timeout` with `what` in the message.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn make_client(config: Config) -> Client {
    Client::try_from(config).expect("building kube client from envtest config")
}

/// The workspace root (this crate is `crates/testkit`): `crds/` and `scripts/` live there.
fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn has_assets(dir: &Path) -> bool {
    dir.join("kube-apiserver").is_file() && dir.join("etcd").is_file()
}

/// `$KUBEBUILDER_ASSETS` if usable, otherwise whatever `scripts/envtest.sh`
/// prints (which may build and cache the binaries first).
fn find_assets() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("KUBEBUILDER_ASSETS").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        if has_assets(&dir) {
            return Ok(dir);
        }
        eprintln!(
            "envtest: KUBEBUILDER_ASSETS={} lacks kube-apiserver/etcd; asking scripts/envtest.sh",
            dir.display()
        );
    }
    let script = manifest_dir().join("scripts/envtest.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}); see its messages above",
            script.display(),
            out.status
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| PathBuf::from(l.trim()))
        .ok_or_else(|| anyhow!("{} printed no directory", script.display()))?;
    if !has_assets(&dir) {
        bail!(
            "{} printed {}, which lacks kube-apiserver/etcd",
            script.display(),
            dir.display()
        );
    }
    Ok(dir)
}

/// Minor version of the apiserver binary, to pick flags that exist in it.
fn apiserver_minor_version(bin: &Path) -> anyhow::Result<u32> {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "Kubernetes v1.20.2"
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("v1."))
        .and_then(|rest| rest.split('.').next())
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| {
            anyhow!(
                "cannot parse `{} --version` output: {text:?}",
                bin.display()
            )
        })
}

/// A CA, a serving certificate for 127.0.0.1/localhost signed by it, and an
/// ECDSA P-256 key for service-account tokens (ES256), all made in-process
/// with rcgen.
fn generate_pki(pki: &Path) -> anyhow::Result<()> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "scanreport-envtest-ca");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let server_key = KeyPair::generate()?;
    let mut server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
    server
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    server.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server.signed_by(&server_key, &issuer)?;

    let sa_key = KeyPair::generate()?;
    for (name, pem) in [
        ("ca.crt", ca_cert.pem()),
        ("server.crt", server_cert.pem()),
        ("server.key", server_key.serialize_pem()),
        ("sa.key", sa_key.serialize_pem()),
        ("sa.pub", sa_key.public_key_pem()),
    ] {
        fs::write(pki.join(name), pem).with_context(|| format!("writing {name}"))?;
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn kubeconfig_yaml(server: &str, ca: &Path) -> String {
    let ca = ca.display();
    let mut s = String::new();
    let _ = write!(
        s,
        "apiVersion: v1
kind: Config
clusters:
- name: envtest
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: {ADMIN_USER}
  user:
    token: {ADMIN_TOKEN}
- name: {TESTER_USER}
  user:
    token: {TESTER_TOKEN}
contexts:
- name: {ADMIN_USER}
  context:
    cluster: envtest
    user: {ADMIN_USER}
    namespace: default
- name: {TESTER_USER}
  context:
    cluster: envtest
    user: {TESTER_USER}
    namespace: default
current-context: {ADMIN_USER}
"
    );
    s
}

async fn start_processes(
    dir: &Path,
    etcd_bin: &Path,
    apiserver_bin: &Path,
    minor: u32,
) -> anyhow::Result<(String, Config, Config, String)> {
    let pki = dir.join("pki");
    let etcd_data = dir.join("etcd");
    let _ = fs::remove_dir_all(&etcd_data);

    // --- etcd ---
    let (client_port, peer_port) = (free_port()?, free_port()?);
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let mut etcd = Command::new(etcd_bin);
    etcd.arg("--name=envtest")
        .arg(format!("--data-dir={}", etcd_data.display()))
        .arg(format!("--listen-client-urls={client_url}"))
        .arg(format!("--advertise-client-urls={client_url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=envtest={peer_url}"))
        .arg("--initial-cluster-state=new")
        .arg("--logger=zap")
        .arg("--log-level=warn");
    spawn_child("etcd", etcd, &dir.join("etcd.log"))?;
    wait_for_port("etcd", client_port, &dir.join("etcd.log")).await?;

    // --- kube-apiserver ---
    let port = free_port()?;
    let server = format!("https://127.0.0.1:{port}");
    let p = |f: &str| pki.join(f).display().to_string();
    let mut api = Command::new(apiserver_bin);
    api.arg(format!("--etcd-servers={client_url}"))
        .arg("--bind-address=127.0.0.1")
        .arg("--advertise-address=127.0.0.1")
        .arg(format!("--secure-port={port}"))
        .arg(format!("--cert-dir={}", dir.join("cert-dir").display()))
        .arg(format!("--tls-cert-file={}", p("server.crt")))
        .arg(format!("--tls-private-key-file={}", p("server.key")))
        .arg(format!("--token-auth-file={}", p("tokens.csv")))
        .arg("--authorization-mode=RBAC")
        .arg(format!(
            "--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"
        ))
        .arg("--endpoint-reconciler-type=none")
        .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
        .arg(format!("--service-account-key-file={}", p("sa.pub")))
        .arg(format!(
            "--service-account-signing-key-file={}",
            p("sa.key")
        ))
        // There is no controller-manager to create `default` service accounts.
        .arg("--disable-admission-plugins=ServiceAccount")
        .arg("--allow-privileged=true");
    if minor < 24 {
        // Until 1.24 an insecure HTTP port (8080) is opened by default; two
        // control planes would fight over it.
        api.arg("--insecure-port=0");
    }
    let log = dir.join("kube-apiserver.log");
    spawn_child("kube-apiserver", api, &log)?;

    let kubeconfig = dir.join("kubeconfig");
    fs::write(&kubeconfig, kubeconfig_yaml(&server, &pki.join("ca.crt")))?;
    let kc = Kubeconfig::read_from(&kubeconfig)?;
    let load = |ctx: &str| {
        let kc = kc.clone();
        let opts = KubeConfigOptions {
            context: Some(ctx.to_string()),
            ..Default::default()
        };
        async move { Config::from_custom_kubeconfig(kc, &opts).await }
    };
    let admin = load(ADMIN_USER).await?;
    let tester = load(TESTER_USER).await?;

    let client = make_client(admin.clone());
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        check_alive("etcd", &dir.join("etcd.log"))?;
        check_alive("kube-apiserver", &log)?;
        // `kube::core::Request` is only used to build a plain `GET /readyz`
        // (so the tests need no direct `http` dependency).
        let readyz = kube::core::Request::new("").get("readyz", &Default::default())?;
        let last = match client.request_text(readyz).await {
            Ok(body) if body.trim() == "ok" => break,
            Ok(body) => body,
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            bail!(
                "kube-apiserver not ready after {READY_TIMEOUT:?} (last /readyz: {last})\n{}",
                log_tail(&log, 30)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let version = client.apiserver_version().await?.git_version;
    Ok((server, admin, tester, version))
}

async fn wait_for_port(name: &str, port: u16, log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        check_alive(name, log)?;
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{name} did not listen on 127.0.0.1:{port} within 30s\n{}",
                log_tail(log, 30)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    let mut f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return format!("(no log {}: {e})", path.display()),
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut buf = String::new();
    let _ = f.read_to_string(&mut buf);
    let all: Vec<&str> = buf.lines().collect();
    let tail = &all[all.len().saturating_sub(lines)..];
    format!(
        "--- last lines of {} ---\n{}",
        path.display(),
        tail.join("\n")
    )
}

/// Applies every CustomResourceDefinition in `crds/*.yaml` (server-side
/// apply) and waits until all are Established.
async fn install_crds(client: &Client) -> anyhow::Result<Vec<String>> {
    install_crds_from(client, &manifest_dir().join("crds")).await
}

/// Installs every CustomResourceDefinition found in `crd_dir/*.yaml` and
/// waits until all are Established; returns their names. Used for `crds/` at
/// start-up; tests may call it for extra CRDs.
///
/// CRDs are server-side applied. Old apiservers (1.20) refuse to apply fields
/// they do not know (`x-kubernetes-validations`, `selectableFields`: "field
/// not declared in schema"); for those the CRD is created or replaced
/// instead, which makes the server silently drop the unknown fields, exactly
/// as an old cluster would.
pub async fn install_crds_from(client: &Client, crd_dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut files: Vec<PathBuf> = fs::read_dir(crd_dir)
        .with_context(|| format!("reading {}", crd_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();

    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for file in &files {
        let text = fs::read_to_string(file)?;
        for doc in yaml_documents(&text) {
            let value: serde_json::Value =
                serde_yaml::from_str(doc).with_context(|| format!("parsing {}", file.display()))?;
            if value.is_null() {
                continue;
            }
            if value.get("kind").and_then(|k| k.as_str()) != Some("CustomResourceDefinition") {
                continue;
            }
            let crd: CustomResourceDefinition = serde_json::from_value(value)
                .with_context(|| format!("decoding CRD in {}", file.display()))?;
            let name = crd
                .metadata
                .name
                .clone()
                .ok_or_else(|| anyhow!("CRD without name in {}", file.display()))?;
            apply_crd(&api, &name, &crd)
                .await
                .with_context(|| format!("applying CRD {name} from {}", file.display()))?;
            names.push(name);
        }
    }
    if names.is_empty() {
        bail!(
            "no CustomResourceDefinitions found in {}",
            crd_dir.display()
        );
    }

    let deadline = Instant::now() + Duration::from_secs(30);
    for name in &names {
        loop {
            let crd = api.get(name).await?;
            let established = crd
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
            if established {
                break;
            }
            if Instant::now() > deadline {
                bail!("CRD {name} not Established after 30s: {:?}", crd.status);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(names)
}

async fn apply_crd(
    api: &Api<CustomResourceDefinition>,
    name: &str,
    crd: &CustomResourceDefinition,
) -> anyhow::Result<()> {
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    match api.patch(name, &pp, &Patch::Apply(crd)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.message.contains("field not declared in schema") => {
            eprintln!(
                "envtest: this apiserver does not know some fields of CRD {name}; \
                 creating/replacing it instead of server-side apply, which drops them: {}",
                s.message.replace('\n', " ")
            );
            match api.get_opt(name).await? {
                Some(existing) => {
                    let mut crd = crd.clone();
                    crd.metadata.resource_version = existing.metadata.resource_version;
                    api.replace(name, &PostParams::default(), &crd).await?;
                }
                None => {
                    api.create(&PostParams::default(), crd).await?;
                }
            }
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Splits a multi-document YAML stream at `---` lines.
fn yaml_documents(text: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim_end();
        if t == "---" || t.starts_with("--- ") || t.starts_with("---\t") {
            docs.push(&text[start..pos]);
            start = pos + line.len();
        }
        pos += line.len();
    }
    docs.push(&text[start..]);
    docs.retain(|d| {
        d.lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    });
    docs
}

// ---------------------------------------------------------------------------
// Process management
// ---------------------------------------------------------------------------

struct Managed {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

static CHILDREN: Mutex<Vec<Managed>> = Mutex::new(Vec::new());
static CLEANUP_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` on the keeper thread (see the module docs for why).
fn spawn_on_keeper(cmd: Command) -> io::Result<Child> {
    static KEEPER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("envtest-keeper".into())
            .spawn(move || {
                // The sender lives in a static, so this loop only ends with
                // the process.
                while let Ok((mut cmd, reply)) = rx.recv() {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawning envtest keeper thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    keeper
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("envtest keeper thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("envtest keeper thread is gone"))?
}

/// Spawns `cmd` in its own process group, with `PR_SET_PDEATHSIG = SIGKILL`
/// tied to the keeper thread, i.e. to the life of the test process.
fn spawn_tied(mut cmd: Command) -> io::Result<Child> {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setpgid(0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    spawn_on_keeper(cmd)
}

fn spawn_child(name: &'static str, mut cmd: Command, log: &Path) -> anyhow::Result<()> {
    let out = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let child = spawn_tied(cmd).with_context(|| format!("starting {name}"))?;
    CHILDREN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Managed {
            name,
            child,
            log: log.to_path_buf(),
        });
    Ok(())
}

/// A process started for one test (e.g. the operator binary) that is stopped
/// when the guard is dropped, also when the test panics, and killed by the
/// kernel if the test process dies.
pub struct GuardedChild {
    child: Option<Child>,
}

/// Starts `cmd` (stdio as configured by the caller) as a [`GuardedChild`].
pub fn spawn_guarded(cmd: Command) -> io::Result<GuardedChild> {
    Ok(GuardedChild {
        child: Some(spawn_tied(cmd)?),
    })
}

impl GuardedChild {
    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// The underlying child, e.g. to take its stdout or call `try_wait`.
    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("child present until drop")
    }

    /// Stops the process group (SIGTERM, 5s grace, SIGKILL) and reaps it.
    pub fn stop(mut self) -> io::Result<std::process::ExitStatus> {
        let mut child = self.child.take().expect("child present until drop");
        terminate(&mut child);
        child.wait()
    }
}

impl Drop for GuardedChild {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
    }
}

/// SIGTERM to the child's process group, up to 5s grace, then SIGKILL; reaps.
fn terminate(child: &mut Child) {
    let pgid = child.id() as libc::pid_t;
    if let Ok(None) = child.try_wait() {
        // SAFETY: plain kill(2) on the process group we created.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // SAFETY: as above; harmless if the group is already gone.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = child.wait();
}

fn check_alive(name: &str, log: &Path) -> anyhow::Result<()> {
    let mut children = CHILDREN.lock().unwrap_or_else(|e| e.into_inner());
    for m in children
        .iter_mut()
        .filter(|m| m.name == name && m.log == log)
    {
        if let Some(status) = m.child.try_wait()? {
            bail!("{name} exited early ({status})\n{}", log_tail(log, 30));
        }
    }
    Ok(())
}

/// Stops all children: SIGTERM to each process group (last started first),
/// up to 5s grace, then SIGKILL. Always reaps them.
fn stop_children() {
    stop_children_in(&mut CHILDREN.lock().unwrap_or_else(|e| e.into_inner()));
}

fn stop_children_in(children: &mut Vec<Managed>) {
    while let Some(mut m) = children.pop() {
        terminate(&mut m.child);
    }
}

fn register_cleanup_dir(dir: PathBuf) {
    CLEANUP_DIRS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(dir);
}

extern "C" fn at_exit() {
    // Never block at exit: if another thread holds a lock, leave the
    // processes to PR_SET_PDEATHSIG.
    match CHILDREN.try_lock() {
        Ok(mut children) => stop_children_in(&mut children),
        Err(std::sync::TryLockError::Poisoned(p)) => stop_children_in(&mut p.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => return,
    }
    let dirs = match CLEANUP_DIRS.try_lock() {
        Ok(mut d) => std::mem::take(&mut *d),
        Err(_) => return,
    };
    let keep = std::env::var_os(KEEP_ENV).is_some_and(|v| !v.is_empty() && v != "0");
    for dir in dirs {
        if keep {
            eprintln!("envtest: kept {}", dir.display());
        } else {
            let _ = fs::remove_dir_all(&dir);
        }
    }
}

fn install_exit_hook() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // SAFETY: registering a plain extern "C" function.
        if unsafe { libc::atexit(at_exit) } != 0 {
            eprintln!("envtest: atexit registration failed; relying on PR_SET_PDEATHSIG only");
        }
    });
}

/// Removes temporary directories of earlier runs whose owner process is gone
/// (e.g. killed with SIGKILL, so the exit hook never ran).
fn remove_stale_dirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_ours = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(DIR_PREFIX));
        if !is_ours {
            continue;
        }
        let Some(pid) = fs::read_to_string(path.join("owner.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks for existence.
        let dead = unsafe { libc::kill(pid, 0) } != 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if dead {
            let _ = fs::remove_dir_all(&path);
        }
    }
}
