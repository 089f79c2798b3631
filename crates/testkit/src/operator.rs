//! Runs the operator binary against the test control plane, the way a cluster would: its own
//! process, a kubeconfig, `DATABASE_URL`, JSON logs captured to a file.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use kube::Client;
use kube::api::{Api, PostParams};
use scanreport_operator::api::{ScanRequest, Scanner, ScannerSpec};

use crate::envtest::{GuardedChild, TestEnv, spawn_guarded};

pub struct Operator {
    child: Option<GuardedChild>,
    pub log: PathBuf,
    /// Where /healthz, /readyz and /metrics are served.
    pub addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

/// Flags that keep test runs quick: short queue polls and rechecks. The tests' made-up registry
/// (`registry.example.test`) cannot prove access, so they trust; tests/tenancy.rs verifies.
pub const FAST: &[&str] = &[
    "--artifact-access",
    "trust",
    "--queue-poll",
    "200ms",
    "--stall-recheck",
    "20s",
    "--metadata-ttl",
    "30s",
];

/// `SCANREPORT_OPERATOR_BIN` if set, else the `scanreport-operator` binary Cargo built for the
/// running test or bench: `target/<profile>/deps/<test>` runs, the binary is
/// `target/<profile>/scanreport-operator` (Cargo builds a package's binaries before its
/// integration tests and benches). Panics, naming the path, when it is not there.
pub fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("SCANREPORT_OPERATOR_BIN").filter(|b| !b.is_empty()) {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("path of the running test");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test runs from target/<profile>/deps");
    let bin = profile_dir.join("scanreport-operator");
    assert!(
        bin.is_file(),
        "{} is missing: run the test with `cargo test -p scanreport-operator`, which builds it, \
         or set SCANREPORT_OPERATOR_BIN",
        bin.display()
    );
    bin
}

impl Operator {
    /// Starts `scanreport-operator run` watching `namespaces` only, so that operators of tests
    /// running side by side never touch each other's objects.
    pub fn start(env: &TestEnv, database_url: &str, namespaces: &[&str], extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("operator.log");
        let file = std::fs::File::create(&log).expect("log file");
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port");
        let mut cmd = Command::new(binary());
        cmd.arg("run")
            .args(["--listen", &addr.to_string(), "--log-format", "json"])
            .args(["--namespaces", &namespaces.join(",")])
            .args(FAST)
            .args(extra)
            .env("KUBECONFIG", env.kubeconfig())
            .env("DATABASE_URL", database_url)
            .env("LOG_LEVEL", "info,scanreport_operator=debug")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file.try_clone().expect("log file"));
        let child = spawn_guarded(cmd).expect("start the operator");
        Self {
            child: Some(child),
            log,
            addr,
            _dir: dir,
        }
    }

    /// `GET path` on the operator's HTTP endpoint: (status, body), or `None` when it does not
    /// answer (yet).
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = tokio::net::TcpStream::connect(self.addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr);
        conn.write_all(request.as_bytes()).await.ok()?;
        let mut raw = String::new();
        conn.read_to_string(&mut raw).await.ok()?;
        let (head, body) = raw.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, body.to_owned()))
    }

    /// The value of one metric sample, e.g. `scanreport_leader`.
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics").await?;
        body.lines().find_map(|l| {
            l.strip_prefix(sample)?
                .strip_prefix(' ')?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
    }

    /// SIGKILL: a crash, with no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the process group the guard created.
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = child.child().wait();
        }
    }

    /// SIGTERM and wait: a graceful shutdown.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        self.child.take().and_then(|c| c.stop().ok())
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Log lines at ERROR level.
    pub fn errors(&self) -> Vec<String> {
        self.logs()
            .lines()
            .filter(|l| l.contains("\"level\":\"ERROR\""))
            .map(str::to_owned)
            .collect()
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.child().try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.logs();
            let tail: Vec<&str> = logs.lines().rev().take(40).collect();
            eprintln!("--- operator log tail ({}) ---", self.log.display());
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

pub const WAIT: Duration = Duration::from_secs(60);

/// A Scanner for the adapter at `url`, with short time-outs for tests.
pub async fn create_scanner(client: &Client, name: &str, url: &str) {
    let scanner = Scanner::new(
        name,
        ScannerSpec {
            url: url.to_owned(),
            registration_uuid: None,
            auth: None,
            ca_bundle: None,
            max_in_flight: Some(8),
            request_timeout: "2s".into(),
        },
    );
    Api::<Scanner>::all(client.clone())
        .create(&PostParams::default(), &scanner)
        .await
        .unwrap();
}

/// Creates `sr` in `ns`; a refusal fails the test.
pub async fn create(client: &Client, ns: &str, sr: &ScanRequest) {
    Api::<ScanRequest>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), sr)
        .await
        .unwrap();
}

/// The condition of `type_` in `sr`'s status, whatever its status value.
pub fn condition<'a>(
    sr: &'a ScanRequest,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    sr.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}
