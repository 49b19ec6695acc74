//! PostgreSQL databases in the registry (cargo feature `postgres`): a [`Pool`] over our own
//! r2d2 manager of `postgres::Client`s for the primary and one per read replica, typed
//! `read` (to a replica within the lag bound, else the primary) and `write` (a transaction
//! per write on the primary, re-run on serialization failure or deadlock), the snapshot and
//! the health probe. No writer lane: the server orders concurrent writers itself.
//!
//! - `client`: the pooled client, closed off the caller's thread, and `off_runtime`;
//! - `config`: [`PgConfig`], and the connection string parsed and shown without a password;
//! - `server`: what a server says about itself, and the refusals waiting does not fix;
//! - `manager`: the r2d2 manager, the return rules and the SQLSTATE classes;
//! - `guard`: [`PgConnection`], the guard of a checked-out client;
//! - `replica`: a read replica's pool and state, and the lag from the primary's positions;
//! - `monitor`: the thread that measures the servers;
//! - `handle`: [`PgHandle`], the public face with typed `read` and `write`.
//!
//! (Over 500 lines: `PgDatabase` is one idea, a PostgreSQL database's pools and how a call
//! reaches them: replica or primary, a write's attempts and retries, the probe, close.)

mod client;
mod config;
mod guard;
mod handle;
mod manager;
mod monitor;
mod probe;
mod replica;
mod server;

use std::hash::{BuildHasher, RandomState};
use std::panic::Location;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use postgres::{Client, Transaction};

pub(crate) use client::off_runtime;
pub use config::PgConfig;
pub use guard::PgConnection;
pub use handle::PgHandle;

use crate::clock::Stamp;
use crate::error::{Error, Result};
use crate::name::DbName;
use crate::pool::{CloseReport, DbInfo, Pool, PoolShared};
use crate::stats::{CloseReason, DbCounters, DbSnapshot, PgFacts};
use manager::{PgManager, breaks_connection, pg_error, refused_as_a_write, retryable};
use monitor::Servers;

/// One registered PostgreSQL database: its primary's pool, its replicas and their monitor.
pub(crate) struct PgDatabase {
    pool: Pool<PgManager>,
    servers: Arc<Servers>,
    /// How the primary's pool connects (hosts, `target_session_attrs`, timeouts), for
    /// clients of their own outside it.
    connect_config: postgres::Config,
    /// Connects of such clients under way (see `manager::connect_within_timeout`).
    connects: Arc<std::sync::atomic::AtomicUsize>,
    /// The connection strings as registered (they may hold passwords: never shown), to tell
    /// a repeated registration from a conflicting one.
    urls: Vec<String>,
    write_retries: u32,
    retry_backoff: Duration,
}

impl std::fmt::Debug for PgDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the connection strings: they may hold passwords.
        f.debug_struct("PgDatabase")
            .field("db", &self.info().name)
            .field("target", &self.info().path)
            .field("replicas", &self.servers.replicas.len())
            .finish_non_exhaustive()
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        self.servers.stop_and_wait();
    }
}

/// The longest a read waits for a replica's connection before it goes to the primary: a
/// replica that cannot hand one out at once is no help to a read.
const REPLICA_WAIT: Duration = Duration::from_millis(250);

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
    /// Parses `url` and the replicas' strings, builds the pools, checks each server is what
    /// it is registered as, waits for the primary's `min_idle` connections, and starts the
    /// monitor.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`], [`Error::InvalidUrl`], [`Error::Refused`] (a server that
    /// cannot be what it is registered as, or refuses us for good), or [`Error::Timeout`]
    /// (with the last connect error) when `min_idle` connections are not open within
    /// `connection_timeout`.
    pub(crate) fn open(
        name: &DbName,
        url: &str,
        config: PgConfig,
        counters: Arc<DbCounters>,
    ) -> Result<Self> {
        config.validate(name)?;
        let target = config::parse(name, url, &config.pool)?;
        let replica_targets = config
            .replicas
            .iter()
            .map(|r| config::parse(name, r, &config.pool))
            .collect::<Result<Vec<_>>>()?;
        let pool_of = |target: config::Target| {
            let shared = Arc::new(PoolShared::new(DbInfo::on_server(
                name.clone(),
                target.shown.into(),
                config.pool.clone(),
                Arc::clone(&counters),
            )));
            let manager = PgManager::new(Arc::clone(&shared), target.config);
            Pool::build(manager, shared)
        };
        let primary_config = target.config.clone();
        let pool = pool_of(target);
        let replicas = replica_targets
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                let client = t.config.clone();
                replica::Replica::new(pool_of(t), client, counters.replica_reads(i))
            })
            .collect();
        let servers = Arc::new(Servers::new(
            Arc::clone(pool.shared()),
            &primary_config,
            replicas,
            config.max_replica_lag,
            config.monitor_interval,
        ));
        let probes = servers.first_round()?;
        pool.wait_for_min_idle()?;
        servers.start(probes).map_err(|source| Error::Io {
            db: name.clone(),
            op: "start the monitor thread of",
            path: pool.info().path.clone(),
            source,
        })?;
        let mut urls = vec![url.to_owned()];
        let connect_config = primary_config;
        urls.extend(config.replicas);
        Ok(Self {
            pool,
            servers,
            connect_config,
            connects: Arc::default(),
            urls,
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

    /// Whether `url` and `replicas` are the connection strings this database was
    /// registered with.
    pub(crate) fn registered_as(&self, url: &str, replicas: &[String]) -> bool {
        self.urls.first().is_some_and(|u| u == url) && self.urls[1..] == *replicas
    }

    /// A client of the primary, waiting up to `connection_timeout`.
    pub(crate) fn checkout(&self, site: &'static Location<'static>) -> Result<PgConnection> {
        let start = Instant::now();
        let deadline = crate::clock::deadline(start, self.info().config.connection_timeout);
        checkout_from(&self.pool, start, deadline, site)
    }

    /// Our error for the client's. One that says the connection can no longer be trusted
    /// closes it, and makes the pool's other connections suspect: the server may be gone
    /// (restarted, failed over), and each is checked before its next use.
    fn error(&self, conn: &mut PgConnection, op: &'static str, e: postgres::Error) -> Error {
        if breaks_connection(&e) {
            conn.discard();
            self.pool.shared().suspect_all();
        }
        pg_error(&self.info().name, op, e)
    }

    /// A client of the primary of its own, outside the pool, within `connection_timeout`.
    pub(crate) fn connect(&self) -> Result<Client> {
        manager::connect_within_timeout(self.info(), &self.connect_config, &self.connects)
    }

    /// A replica to read from: the next in turn that is up and within the lag bound.
    #[inline]
    fn pick_replica(&self) -> Option<&replica::Replica> {
        let replicas = &self.servers.replicas;
        if replicas.is_empty() {
            return None;
        }
        // The exact clock, not the coarse one: this bounds how stale a read may be, and the
        // coarse clock lags by up to its tick (more when its thread is starved), which reads
        // served past the bound once took. A network read costs far more than the clock.
        let now = Stamp::of(Instant::now());
        let first = self.servers.next.fetch_add(1, Relaxed);
        let found = (0..replicas.len())
            .filter_map(|i| replicas.get(first.wrapping_add(i) % replicas.len()))
            .find(|r| r.eligible(now, self.servers.max_lag));
        if found.is_none() {
            self.servers
                .counters()
                .replica_fallbacks
                .fetch_add(1, Relaxed);
        }
        found
    }

    /// A client of `replica` within [`REPLICA_WAIT`], or `None` (the replica marked down when
    /// it could not connect).
    fn replica_client(
        &self,
        replica: &replica::Replica,
        site: &'static Location<'static>,
    ) -> Option<PgConnection> {
        let start = Instant::now();
        let wait = self.info().config.connection_timeout.min(REPLICA_WAIT);
        match checkout_from(&replica.pool, start, start + wait, site) {
            Ok(conn) => Some(conn),
            Err(e) => {
                if !matches!(
                    &e,
                    Error::Timeout {
                        last_error: None,
                        ..
                    }
                ) {
                    replica.down(crate::error::error_chain(&e));
                }
                self.servers
                    .counters()
                    .replica_fallbacks
                    .fetch_add(1, Relaxed);
                None
            }
        }
    }

    pub(crate) fn read<T>(
        &self,
        site: &'static Location<'static>,
        mut f: impl FnMut(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T> {
        if let Some(replica) = self.pick_replica()
            && let Some(mut conn) = self.replica_client(replica, site)
        {
            replica.count_read();
            match f(&mut conn) {
                Ok(v) => return Ok(v),
                // A write in the read: the caller's error. Not a broken replica, and not to be
                // run again on the primary, where the write would take effect.
                Err(e) if refused_as_a_write(&e) => {
                    return Err(pg_error(&self.info().name, "read", e));
                }
                // The replica broke the connection, or cancelled the read for a conflict
                // with its replay: the primary answers instead.
                Err(e) if breaks_connection(&e) || retryable(&e).is_some() => {
                    if breaks_connection(&e) {
                        conn.discard();
                        replica.down(crate::error::error_chain(&e));
                    }
                    self.servers
                        .counters()
                        .replica_fallbacks
                        .fetch_add(1, Relaxed);
                }
                Err(e) => return Err(pg_error(&self.info().name, "read", e)),
            }
        }
        self.read_primary(site, f)
    }

    pub(crate) fn read_primary<T>(
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
        if let Some(replica) = self.pick_replica()
            && let Some(mut conn) = self.replica_client(replica, site)
        {
            replica.count_read();
            return f(&mut conn);
        }
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
                // PostgreSQL answers `COMMIT` in a transaction an error aborted (one `f`
                // swallowed) with a rollback and no error: the write would be `Ok` with
                // nothing committed. `SELECT 1` fails there (25P02) and stops the batch
                // before `COMMIT`, in the same round trip. Committed, the transaction is done:
                // forgetting it skips the rollback its drop would send.
                Ok(value) => match tx.batch_execute("SELECT 1; COMMIT") {
                    Ok(()) => {
                        std::mem::forget(tx);
                        Ok(value)
                    }
                    Err(e) => Err(Failure::Own(("commit", e))),
                },
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
                    self.pool.shared().suspect_all();
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
        // Saturating: a `retry_backoff` near `Duration::MAX` must not panic here.
        Duration::try_from_secs_f64(base.as_secs_f64() * factor).unwrap_or(Duration::MAX)
    }

    /// Refuses new checkouts at once, on the primary and every replica.
    pub(crate) fn mark_closed(&self) {
        self.pool.mark_closed();
        for replica in &self.servers.replicas {
            replica.pool.mark_closed();
        }
    }

    /// Stops the monitor and closes the replicas' pools, then the primary's (see
    /// `Pool::close`); the report covers them all.
    pub(crate) fn close(&self, deadline: Instant) -> CloseReport {
        self.servers.stop();
        let mut still_out = Vec::new();
        for replica in &self.servers.replicas {
            still_out.extend(replica.pool.close(deadline).still_out);
        }
        let mut report = self.pool.close(deadline);
        report.still_out.extend(still_out);
        // Its own connections too, once the pools' are closed.
        self.servers.stop_and_wait();
        report
    }

    /// The database's snapshot, now, with its servers as last measured.
    pub(crate) fn snapshot(&self) -> DbSnapshot {
        let mut snapshot = self.pool.snapshot(0);
        if snapshot.open {
            snapshot.postgres = Some(self.servers.facts());
        }
        snapshot
    }

    /// Its servers as last measured.
    pub(crate) fn facts(&self) -> PgFacts {
        self.servers.facts()
    }

    /// The health probe: a client within what is left of `timeout`, a round trip bounded by
    /// it (`Client::is_valid`), then `SELECT 1`.
    pub(crate) fn probe(&self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        let deadline = crate::clock::deadline(start, timeout);
        let mut conn = checkout_from(&self.pool, start, deadline, Location::caller())?;
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        if let Err(e) = conn.is_valid(left) {
            // Whatever failed (a timeout is not a broken connection to `error`), the client
            // goes without its reset: a `DISCARD ALL` on a server that stopped answering
            // would hold this thread, and the connection, with no bound.
            conn.discard();
            return Err(self.error(&mut conn, "validate", e));
        }
        conn.query_one("SELECT 1", &[])
            .map(drop)
            .map_err(|e| self.error(&mut conn, "SELECT 1", e))
    }
}

/// A client of `pool` for a caller that began to ask at `start`, waiting until `deadline`. A
/// connection last known good before the pool's connections became suspect (see
/// [`PoolShared::suspect_all`]) is checked first with a round trip, and closed if it fails.
fn checkout_from(
    pool: &Pool<PgManager>,
    start: Instant,
    deadline: Instant,
    site: &'static Location<'static>,
) -> Result<PgConnection> {
    loop {
        let mut conn = pool.checkout_raw_until(start, deadline, site)?;
        let suspect = pool
            .shared()
            .suspect_since()
            .is_some_and(|since| conn.trusted_at <= since);
        if suspect {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(10));
            let timeout = left.min(pool.info().config.connection_timeout);
            if let Err(e) = conn.conn.is_valid(timeout) {
                tracing::debug!(db = %pool.info().name, id = conn.id, error = %e, "suspect connection failed its check; closed");
                conn.discard = Some(CloseReason::ValidationFailed);
                continue;
            }
            conn.trusted_at = Stamp::of(Instant::now());
        }
        return Ok(PgConnection::new(conn));
    }
}
