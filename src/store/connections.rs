//! The store's PostgreSQL connections: a fixed budget, each handed from one statement to the
//! next without a round trip in between.
//!
//! sqlx's pool pings every connection it takes back (a `Sync` and its answer) before another
//! statement may use it: one more round trip, a spawned task and a server wake-up per
//! statement. On one hot tuple that cost the upsert 15–24% of pgbench's rate
//! (docs/benchmarks.md, "Report upsert"). Here a connection goes back to the idle list as it is
//! when its statement finished, and is closed instead when the statement failed on the
//! connection itself, or never finished (its future was dropped: a cancelled reconcile), which
//! is what the ping guarded against.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{Semaphore, SemaphorePermit};

/// An idle connection older than this is closed rather than reused: the server or a firewall
/// may have dropped it meanwhile (sqlx's default idle timeout).
const MAX_IDLE: Duration = Duration::from_secs(600);

/// A connection is closed after this long, so that the server's per-session caches (plans,
/// PL/pgSQL functions) do not grow for the life of the operator (sqlx's default max lifetime).
const MAX_LIFETIME: Duration = Duration::from_secs(1800);

struct Idle {
    conn: PgConnection,
    opened: Instant,
    since: Instant,
}

pub(crate) struct Connections {
    options: PgConnectOptions,
    /// Idle connections; the newest last, so the warmest is reused.
    idle: Mutex<Vec<Idle>>,
    /// One permit per connection that may be open.
    slots: Semaphore,
    acquire_timeout: Duration,
}

impl Connections {
    pub(crate) fn new(options: PgConnectOptions, max: u32, acquire_timeout: Duration) -> Self {
        Self {
            options,
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(usize::try_from(max.max(1)).unwrap_or(1)),
            acquire_timeout,
        }
    }

    /// A connection for one statement: an idle one, or a new one while the budget allows.
    /// Waits at most the acquire timeout for a free slot and a new connection together
    /// (`PoolTimedOut`); `PoolClosed` after [`Connections::close`].
    pub(crate) async fn acquire(&self) -> Result<Lease<'_>, sqlx::Error> {
        let deadline = tokio::time::Instant::now() + self.acquire_timeout;
        let slot = tokio::time::timeout_at(deadline, self.slots.acquire())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let reused = loop {
            let popped = self.idle.lock().ok().and_then(|mut idle| idle.pop());
            match popped {
                Some(i) if i.since.elapsed() < MAX_IDLE && i.opened.elapsed() < MAX_LIFETIME => {
                    break Some((i.conn, i.opened));
                }
                // Too old: close it and look again.
                Some(i) => close_later(i.conn),
                None => break None,
            }
        };
        let (conn, opened) = match reused {
            Some(reused) => reused,
            // A server that accepts but never answers must not hold the slot for ever.
            None => (
                tokio::time::timeout_at(deadline, self.options.connect())
                    .await
                    .map_err(|_| sqlx::Error::PoolTimedOut)??,
                Instant::now(),
            ),
        };
        Ok(Lease {
            conn: Some(conn),
            opened,
            owner: self,
            _slot: slot,
            reusable: false,
        })
    }

    /// Refuses new leases and closes the idle connections; leased ones close when returned.
    pub(crate) async fn close(&self) {
        self.slots.close();
        let idle = match self.idle.lock() {
            Ok(mut idle) => std::mem::take(&mut *idle),
            Err(_) => Vec::new(),
        };
        for i in idle {
            // Closing is a courtesy to the server; a failure changes nothing here.
            let _ = i.conn.close().await;
        }
    }
}

/// Closes a connection in the background (the server then ends its backend at once, instead of
/// when it notices the socket is gone); outside a runtime it is just dropped.
fn close_later(conn: PgConnection) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            let _ = conn.close().await;
        });
    }
}

/// One statement's use of a connection. It goes back to the idle list only after
/// [`Lease::settle`] saw a result that leaves the connection usable.
pub(crate) struct Lease<'a> {
    conn: Option<PgConnection>,
    opened: Instant,
    owner: &'a Connections,
    _slot: SemaphorePermit<'a>,
    reusable: bool,
}

impl Lease<'_> {
    /// The connection (`drop` alone takes it, so this never fails while the lease lives).
    pub(crate) fn conn(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        self.conn.as_mut().ok_or(sqlx::Error::PoolClosed)
    }

    /// The connection is usable for the next statement.
    pub(crate) fn keep(&mut self) {
        self.reusable = true;
    }

    /// Records how the statement ended: a database error (a constraint, a timeout the server
    /// enforced) leaves the connection usable; an I/O, TLS or protocol failure does not.
    pub(crate) fn settle<T>(&mut self, result: &Result<T, sqlx::Error>) {
        self.reusable = match result {
            Ok(_) => true,
            Err(e) => !matches!(
                e,
                sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::Protocol(_)
                    | sqlx::Error::WorkerCrashed
                    | sqlx::Error::PoolClosed
            ),
        };
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if !self.reusable || self.owner.slots.is_closed() {
            close_later(conn);
            return;
        }
        match self.owner.idle.lock() {
            Ok(mut idle) => idle.push(Idle {
                conn,
                opened: self.opened,
                since: Instant::now(),
            }),
            Err(_) => close_later(conn),
        }
    }
}

/// Runs one statement on a leased connection of `$store`: `on_conn!(self, c => query.fetch_one(c))`.
/// Evaluates to the statement's `Result<_, sqlx::Error>`; failing to get a connection is one of
/// those errors too.
macro_rules! on_conn {
    ($store:expr, $c:ident => $run:expr) => {
        async {
            let mut lease = $store.connections.acquire().await?;
            let result = match lease.conn() {
                Ok($c) => $run.await,
                Err(e) => Err(e),
            };
            lease.settle(&result);
            result
        }
        .await
    };
}
pub(crate) use on_conn;
