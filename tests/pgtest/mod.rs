//! PostgreSQL for integration tests: each test gets a fresh database on the server that
//! `DATABASE_URL` names (scripts/test.sh starts a throwaway one).

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// Creates a uniquely named database and returns its URL. Fails loudly without DATABASE_URL:
/// a database test that silently skips proves nothing.
pub async fn fresh_database(prefix: &str) -> String {
    let base = std::env::var("DATABASE_URL")
        .expect("DATABASE_URL must point at PostgreSQL; run scripts/test.sh, which starts one");
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
