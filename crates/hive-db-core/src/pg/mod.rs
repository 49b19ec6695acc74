//! PostgreSQL databases in the registry (cargo feature `postgres`): a [`Pool`] over our own
//! r2d2 manager of `postgres::Client`s, typed `read` and `write` (a transaction per write,
//! re-run on serialization failure or deadlock), the snapshot and the health probe. No writer
//! lane: the server orders concurrent writers itself.
//!
//! - `config`: [`PgConfig`], and the connection string parsed and shown without a password;
//! - `manager`: the r2d2 manager, the return rules and the SQLSTATE classes;
//! - `guard`: [`PgConnection`], the guard of a checked-out client;
//! - `handle`: [`PgHandle`], the public face with typed `read` and `write`.

mod config;
mod guard;
mod handle;
mod manager;

use std::hash::{BuildHasher, RandomState};
use std::panic::Location;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use postgres::{Client, Transaction};

pub use config::PgConfig;
pub use guard::PgConnection;
pub use handle::PgHandle;

use crate::error::{Error, Result};
use crate::name::DbName;
use crate::pool::{DbInfo, Pool, PoolShared};
use crate::stats::{DbCounters, DbSnapshot};
use manager::{PgManager, breaks_connection, pg_error, retryable};

/// One registered PostgreSQL database.
pub(crate) struct PgDatabase {
    pool: Pool<PgManager>,
    /// The connection string as registered (it may hold a password: never shown), to tell a
    /// repeated registration from a conflicting one.
    url: String,
    write_retries: u32,
    retry_backoff: Duration,
}

impl std::fmt::Debug for PgDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the connection string: it may hold a password.
        f.debug_struct("PgDatabase")
            .field("db", &self.info().name)
            .field("target", &self.info().path)
            .finish_non_exhaustive()
    }
}

/// How a write attempt failed: the registry's own step (begin, commit) or the closure.
enum Failure<E, O = Error> {
    Own(O),
    Closure(Seen, E),
}

/// What the registry could see of a closure's error.
#[derive(Default)]
struct Seen {
    /// The SQLSTATE makes the transaction worth running again.
    retry: bool,
    /// The error says the connection can no longer be trusted.
    breaks: bool,
}

impl PgDatabase {
    /// Parses `url`, builds the pool and waits for its `min_idle` connections.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`], [`Error::InvalidUrl`], or [`Error::Timeout`] (with the last
    /// connect error) when `min_idle` connections are not open within `connection_timeout`.
    pub(crate) fn open(
        name: &DbName,
        url: &str,
        config: PgConfig,
        counters: Arc<DbCounters>,
    ) -> Result<Self> {
        config.pool.validate(name)?;
        let target = config::parse(name, url, &config.pool)?;
        let shared = Arc::new(PoolShared::new(DbInfo::on_server(
            name.clone(),
            target.shown.into(),
            config.pool,
            counters,
        )));
        let manager = PgManager::new(Arc::clone(&shared), target.config);
        let pool = Pool::build(manager, shared);
        pool.wait_for_min_idle()?;
        Ok(Self {
            pool,
            url: url.to_owned(),
            write_retries: config.write_retries,
            retry_backoff: config.retry_backoff,
        })
    }

    /// What `url` is shown as (see [`PgHandle::target`]), for errors before registering it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`].
    pub(crate) fn shown_of(name: &DbName, url: &str, config: &PgConfig) -> Result<PathBuf> {
        config::parse(name, url, &config.pool).map(|t| t.shown.into())
    }

    /// The database's facts; its `path` is `postgres://user@host:port/db`, never the
    /// password.
    pub(crate) fn info(&self) -> &Arc<DbInfo> {
        self.pool.info()
    }

    /// Whether `url` is the connection string this database was registered with.
    pub(crate) fn registered_as(&self, url: &str) -> bool {
        self.url == url
    }

    /// A client, waiting up to `connection_timeout`.
    pub(crate) fn checkout(&self, site: &'static Location<'static>) -> Result<PgConnection> {
        self.pool.checkout_raw(site).map(PgConnection::new)
    }

    /// A client for a caller that began to ask at `start`, waiting until `deadline`.
    fn checkout_until(
        &self,
        start: Instant,
        deadline: Instant,
        site: &'static Location<'static>,
    ) -> Result<PgConnection> {
        self.pool
            .checkout_raw_until(start, deadline, site)
            .map(PgConnection::new)
    }

    /// Our error for the client's, marking the connection for closing if the error says it
    /// can no longer be trusted.
    fn error(&self, conn: &mut PgConnection, op: &'static str, e: postgres::Error) -> Error {
        if breaks_connection(&e) {
            conn.discard();
        }
        pg_error(&self.info().name, op, e)
    }

    pub(crate) fn read<T>(
        &self,
        site: &'static Location<'static>,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T> {
        let mut conn = self.checkout(site)?;
        f(&mut conn).map_err(|e| self.error(&mut conn, "read", e))
    }

    pub(crate) fn read_with<T, E: From<Error>>(
        &self,
        site: &'static Location<'static>,
        f: impl FnOnce(&mut Client) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self.checkout(site)?;
        f(&mut conn)
    }

    pub(crate) fn write<T>(
        &self,
        site: &'static Location<'static>,
        mut f: impl FnMut(&mut Transaction<'_>) -> Result<T, postgres::Error>,
    ) -> Result<T> {
        let outcome = self.run_write(site, |tx| {
            f(tx).map_err(|e| {
                let seen = Seen {
                    retry: retryable(&e).is_some(),
                    breaks: breaks_connection(&e),
                };
                (seen, pg_error(&self.info().name, "write", e))
            })
        });
        match outcome {
            Ok(v) => Ok(v),
            Err((attempts, Failure::Own(e) | Failure::Closure(_, e))) => {
                Err(self.gave_up(attempts, e))
            }
        }
    }

    pub(crate) fn write_with<T, E: From<Error>>(
        &self,
        site: &'static Location<'static>,
        mut f: impl FnMut(&mut Transaction<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        match self.run_write(site, |tx| f(tx).map_err(|e| (Seen::default(), e))) {
            Ok(v) => Ok(v),
            Err((attempts, Failure::Own(e))) => Err(self.gave_up(attempts, e).into()),
            Err((_, Failure::Closure(_, e))) => Err(e),
        }
    }

    /// A retryable error after the last attempt becomes [`Error::WriteConflict`].
    fn gave_up(&self, attempts: u32, e: Error) -> Error {
        match e {
            Error::Postgres {
                code: Some(code),
                source,
                ..
            } if retryable(&source).is_some() && attempts > 1 => Error::WriteConflict {
                db: self.info().name.clone(),
                attempts,
                code,
                source,
            },
            other => other,
        }
    }

    /// Runs `f` in a transaction, committed on `Ok`, rolled back on `Err`; run again (after a
    /// pause with jitter) when the server fails it for a serialization failure or deadlock, up
    /// to `write_retries` times. `f`'s error carries what the registry can see of it.
    fn run_write<T, E>(
        &self,
        site: &'static Location<'static>,
        mut f: impl FnMut(&mut Transaction<'_>) -> Result<T, (Seen, E)>,
    ) -> Result<T, (u32, Failure<E>)> {
        let counters = &self.info().counters;
        let mut attempt = 1;
        loop {
            let mut conn = self
                .checkout(site)
                .map_err(|e| (attempt, Failure::Own(e)))?;
            let failure = match self.attempt(&mut conn, &mut f) {
                Ok(v) => {
                    counters.commits.fetch_add(1, Relaxed);
                    counters.transactions.fetch_add(1, Relaxed);
                    return Ok(v);
                }
                Err(failure) => failure,
            };
            counters.rollbacks.fetch_add(1, Relaxed);
            drop(conn);
            let again = match &failure {
                Failure::Own(Error::Postgres { source, .. }) => retryable(source).is_some(),
                Failure::Closure(seen, _) => seen.retry,
                Failure::Own(_) => false,
            };
            if !again || attempt > self.write_retries {
                return Err((attempt, failure));
            }
            counters.write_retries.fetch_add(1, Relaxed);
            std::thread::sleep(self.backoff(attempt));
            attempt += 1;
        }
    }

    /// One run of `f` in a transaction of `conn`.
    fn attempt<T, E>(
        &self,
        conn: &mut PgConnection,
        f: &mut impl FnMut(&mut Transaction<'_>) -> Result<T, (Seen, E)>,
    ) -> Result<T, Failure<E>> {
        // Errors are classified once the transaction has let go of the client.
        let outcome = match conn.transaction() {
            Err(e) => Err(Failure::Own(("begin", e))),
            Ok(mut tx) => match f(&mut tx) {
                Ok(value) => tx
                    .commit()
                    .map(|()| value)
                    .map_err(|e| Failure::Own(("commit", e))),
                Err((seen, e)) => {
                    // A failed rollback leaves the transaction open: the return's reset
                    // finds it and closes the connection.
                    let _ = tx.rollback();
                    Err(Failure::Closure(seen, e))
                }
            },
        };
        outcome.map_err(|failure| match failure {
            Failure::Own((op, e)) => Failure::Own(self.error(conn, op, e)),
            Failure::Closure(seen, e) => {
                if seen.breaks {
                    conn.discard();
                }
                Failure::Closure(seen, e)
            }
        })
    }

    /// The pause before re-run `attempt + 1`: `retry_backoff` doubled per attempt, times a
    /// random factor between 0.5 and 1.5.
    fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .retry_backoff
            .saturating_mul(1 << attempt.saturating_sub(1).min(16));
        let random = RandomState::new().hash_one(Instant::now());
        let factor = 0.5 + (random % 1024) as f64 / 1024.0;
        base.mul_f64(factor)
    }

    /// Its pool, for close.
    pub(crate) fn pool(&self) -> &Pool<PgManager> {
        &self.pool
    }

    /// The database's snapshot, now.
    pub(crate) fn snapshot(&self) -> DbSnapshot {
        self.pool.snapshot(0)
    }

    /// The health probe: a client within what is left of `timeout`, a round trip bounded by
    /// it (`Client::is_valid`), then `SELECT 1`.
    pub(crate) fn probe(&self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        let deadline = crate::clock::deadline(start, timeout);
        let mut conn = self.checkout_until(start, deadline, Location::caller())?;
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        conn.is_valid(left)
            .map_err(|e| self.error(&mut conn, "validate", e))?;
        conn.query_one("SELECT 1", &[])
            .map(drop)
            .map_err(|e| self.error(&mut conn, "SELECT 1", e))
    }
}
