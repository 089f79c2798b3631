//! PostgreSQL for integration tests: each test gets a fresh database on the server that
//! `DATABASE_URL` names (scripts/test.sh starts a throwaway one).

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// Creates a uniquely named database and returns its URL. Fails loudly without DATABASE_URL:
/// a database test that silently skips proves nothing.
pub async fn fresh_database(prefix: &str) -> String {
    let base = std::env::var("DATABASE_URL").expect(
        "DATABASE_URL must point at PostgreSQL; scripts/test.sh and scripts/bench.sh start one",
    );
    let opts: PgConnectOptions = base.parse().expect("DATABASE_URL parses");
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let mut admin = opts.connect().await.expect("connect to DATABASE_URL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut admin)
        .await
        .expect("create test database");
    admin.close().await.ok();
    let (head, tail) = match base.split_once('?') {
        Some((h, t)) => (h.to_owned(), format!("?{t}")),
        None => (base.clone(), String::new()),
    };
    let root = head.rsplit_once('/').map_or(head.as_str(), |(r, _)| r);
    format!("{root}/{name}{tail}")
}

/// [`fresh_database`] with the operator's migrations applied, as a running operator expects.
pub async fn migrated_database(prefix: &str) -> String {
    use scanreport_operator::store::{PoolConfig, Store};
    let url = fresh_database(prefix).await;
    let store = Store::connect(&url, &PoolConfig::default())
        .await
        .expect("connect to the test database");
    store.migrate().await.expect("migrate the test database");
    store.close().await;
    url
}

/// A PostgreSQL cluster of a test's own, for tests that stop and start the server.
pub struct PgCluster {
    dir: tempfile::TempDir,
    pub port: u16,
}

impl PgCluster {
    const BIN: &'static str = "/usr/lib/postgresql/15/bin";

    fn as_owner(program: &str) -> std::process::Command {
        // PostgreSQL refuses to run as root; scripts/test.sh runs as root in CI.
        if unsafe { libc::geteuid() } == 0 {
            let mut cmd = std::process::Command::new("runuser");
            cmd.args(["-u", "postgres", "--", program]);
            cmd
        } else {
            std::process::Command::new(program)
        }
    }

    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("scanreport-pgtest")
            .tempdir()
            .expect("temp dir");
        if unsafe { libc::geteuid() } == 0 {
            let status = std::process::Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success());
        }
        let data = dir.path().join("data");
        let out = Self::as_owner(&format!("{}/initdb", Self::BIN))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "--no-sync"])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let cluster = Self { dir, port };
        cluster.resume();
        cluster
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg_ctl(&self, args: &[&str]) -> std::process::Output {
        let data = self.dir.path().join("data");
        Self::as_owner(&format!("{}/pg_ctl", Self::BIN))
            .arg("-D")
            .arg(&data)
            .args(args)
            .output()
            .expect("run pg_ctl")
    }

    /// Starts (again) on the same port.
    pub fn resume(&self) {
        let data = self.dir.path().join("data");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            data.display()
        );
        let log = data.join("server.log");
        let out = self.pg_ctl(&[
            "-w",
            "-t",
            "60",
            "-l",
            &log.to_string_lossy(),
            "-o",
            &opts,
            "start",
        ]);
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops at once, as a crash or an outage would.
    pub fn halt(&self) {
        let out = self.pg_ctl(&["-w", "-m", "immediate", "stop"]);
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-w", "-m", "immediate", "stop"]);
    }
}
