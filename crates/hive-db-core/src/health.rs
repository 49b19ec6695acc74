//! Health checks: the databases shared among a bounded set of threads, each check cut to
//! what is left of the timeout.

use std::panic::Location;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::clock::deadline;
use crate::database::Database;
use crate::error::{Error, Result, error_chain, extended_code, is_corruption_code};
use crate::name::DbName;
#[cfg(feature = "postgres")]
use crate::pg::PgDatabase;
use crate::pool::{CORRUPTION_MEMORY, CloseReport, DbInfo, PooledConnection};
use crate::stats::{DbSnapshot, PgFacts};

/// An open database of either engine, as health checks and `close` see it.
#[derive(Debug, Clone)]
pub(crate) enum OpenDb {
    Sqlite(Arc<Database>),
    #[cfg(feature = "postgres")]
    Postgres(Arc<PgDatabase>),
}

impl OpenDb {
    /// The database's facts.
    pub(crate) fn info(&self) -> &Arc<DbInfo> {
        match self {
            Self::Sqlite(db) => db.info(),
            #[cfg(feature = "postgres")]
            Self::Postgres(db) => db.info(),
        }
    }

    /// Closes its pool (see `Pool::close`); `started` is when the caller's close began.
    pub(crate) fn close(&self, started: Instant, deadline: Instant) -> CloseReport {
        match self {
            Self::Sqlite(db) => db.close(started, deadline),
            #[cfg(feature = "postgres")]
            Self::Postgres(db) => db.close(deadline),
        }
    }

    /// For a PostgreSQL database, its servers as last measured.
    fn postgres_facts(&self) -> Option<PgFacts> {
        match self {
            Self::Sqlite(_) => None,
            #[cfg(feature = "postgres")]
            Self::Postgres(db) => Some(db.facts()),
        }
    }

    fn check(&self, timeout: Duration) -> Outcome {
        match self {
            Self::Sqlite(db) => check_one(db, timeout),
            #[cfg(feature = "postgres")]
            Self::Postgres(db) => check_postgres(db, timeout),
        }
    }
}

/// How a database, or the whole registry, is doing.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Answered in time with room to spare.
    Healthy,
    /// Answered, but slowly (over half the timeout), with writes blocked by a lock held
    /// elsewhere, with callers queued at a full pool, or with a write transaction that failed
    /// to commit within the last minute though one has committed since.
    Degraded,
    /// Did not answer in time, answered with an error, or the last write transaction, within
    /// the last minute, failed to commit (a full disk, an I/O error).
    Unhealthy,
}

/// One database's health.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct DbHealth {
    /// The database.
    pub name: DbName,
    /// Its status.
    pub status: HealthStatus,
    /// Time to get a connection and read the schema.
    pub latency: Duration,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// For a PostgreSQL database: its servers (version, standby or not, connections of
    /// `max_connections`, each replica's state and lag) as last measured. `None` for SQLite.
    #[serde(default)]
    pub postgres: Option<PgFacts>,
}

/// Every open database's health, and the worst of them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct HealthReport {
    /// The worst status of any database; `Healthy` for an empty registry.
    pub status: HealthStatus,
    /// One entry per open database, sorted by name.
    pub databases: Vec<DbHealth>,
    /// How long the whole check took.
    pub elapsed: Duration,
    /// Facts about the process that do not change any database's status but that an
    /// operator should know: today, how the process's SQLite differs from the build hive-db
    /// is tested with ([`SqliteBuild::deviations`](crate::SqliteBuild::deviations)).
    #[serde(default)]
    pub notes: Vec<String>,
}

/// How long a write transaction that failed to commit keeps a database from being Healthy.
const COMMIT_FAILURE_MEMORY: Duration = Duration::from_secs(60);

/// How long damage `integrity_check` found counts as found, before health checks again
/// (while calls keep meeting corruption errors): a repair (`REINDEX`, a restored page) shows
/// within this long.
const RECHECK_DAMAGE: Duration = Duration::from_secs(5);

/// A little more than `timeout`, for threads to report back.
const REPORT_GRACE: Duration = Duration::from_millis(200);

/// Most threads one `health` call runs checks on; they share the databases between them.
const WORKERS: usize = 16;

pub(crate) fn check_all(pools: Vec<OpenDb>, timeout: Duration) -> HealthReport {
    let start = Instant::now();
    let end = deadline(start, timeout);
    let names: Vec<DbName> = pools.iter().map(|p| p.info().name.clone()).collect();
    let pools = Arc::new(pools);
    let next = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel();
    let mut started = 0;
    let mut spawn_error = None;
    for _ in 0..names.len().min(WORKERS) {
        let (pools, next, tx) = (Arc::clone(&pools), Arc::clone(&next), tx.clone());
        let spawned = std::thread::Builder::new()
            .name("hive-db-health".to_owned())
            .spawn(move || {
                // Each check gets what is left of the timeout; one that gets nothing is not run.
                loop {
                    let i = next.fetch_add(1, Relaxed);
                    let Some(pool) = pools.get(i) else { break };
                    let left = end.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    // A panic in a check is that database's error, said as one, and the
                    // thread goes on to the next (it was reported as "no answer").
                    let result =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pool.check(left)))
                            .unwrap_or_else(|panic| {
                                Err(format!(
                                    "the check panicked: {}",
                                    crate::sync::panic_message(&*panic)
                                ))
                            });
                    // The receiver may have given up on us; that is fine.
                    if tx.send((i, result)).is_err() {
                        break;
                    }
                }
            });
        match spawned {
            Ok(_) => started += 1,
            Err(e) => spawn_error = Some(format!("cannot start a health-check thread: {e}")),
        }
    }
    if started == 0
        && let Some(error) = spawn_error
    {
        for i in 0..names.len() {
            let _ = tx.send((i, Err(error.clone())));
        }
    }
    drop(tx);
    let mut results: Vec<Option<Outcome>> = vec![None; names.len()];
    let deadline = deadline(start, timeout.saturating_add(REPORT_GRACE));
    for _ in 0..names.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((i, r)) => results[i] = Some(r),
            Err(_) => break,
        }
    }
    let databases: Vec<DbHealth> = names
        .into_iter()
        .zip(results)
        .map(|(name, r)| match r {
            Some(Ok((latency, note))) => DbHealth {
                name,
                status: if note.is_some() || latency > timeout / 2 {
                    HealthStatus::Degraded
                } else {
                    HealthStatus::Healthy
                },
                latency,
                error: note,
                postgres: None,
            },
            Some(Err(error)) => DbHealth {
                name,
                status: HealthStatus::Unhealthy,
                latency: start.elapsed(),
                error: Some(error),
                postgres: None,
            },
            None => DbHealth {
                name,
                status: HealthStatus::Unhealthy,
                latency: start.elapsed(),
                error: Some(format!("no answer within {timeout:?}")),
                postgres: None,
            },
        })
        .zip(pools.iter())
        .map(|(health, pool)| DbHealth {
            postgres: pool.postgres_facts(),
            ..health
        })
        .collect();
    HealthReport {
        status: databases
            .iter()
            .map(|d| d.status)
            .max()
            .unwrap_or(HealthStatus::Healthy),
        databases,
        notes: crate::open::sqlite_build()
            .deviations()
            .into_iter()
            .map(str::to_owned)
            .collect(),
        elapsed: start.elapsed(),
    }
}

/// The latency and, for a degraded pool, why; or the error.
type Outcome<T = (Duration, Option<String>)> = std::result::Result<T, String>;

/// A connection and a schema read; then the writer lane, a connection again and a write-lock
/// probe (`BEGIN IMMEDIATE; ROLLBACK`), with SQLite's busy timeout cut to the time left, so a
/// database locked by another process cannot hold the check past `timeout`.
///
/// The lane is taken before the second connection, in the order every writer takes them: a
/// probe holding a connection while it waits for the lane would wait for a writer that holds
/// the lane and waits for a connection (every other one busy), each until the probe's
/// deadline, and the report would blame the lane.
fn check_one(pool: &Database, timeout: Duration) -> Outcome {
    let start = Instant::now();
    let deadline = deadline(start, timeout);
    let db = &pool.info().name;
    // At most SQLite's largest busy timeout (milliseconds in an `i32`, about 24.8 days):
    // past it rusqlite panics, on the check's thread, and the report blamed the database.
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(1), crate::config::MAX_BUSY_TIMEOUT)
    };
    let site = Location::caller();
    pool.info().check_file().map_err(|e| error_chain(&e))?;
    let before = pool.snapshot();
    // Runs `probe` on a connection, which goes back with the pool's busy timeout, or is
    // discarded if that cannot be set or the probe left a transaction open.
    let with_conn = |probe: &dyn Fn(&mut PooledConnection) -> Result<Option<String>>| {
        let mut conn = pool
            .checkout_until(start, deadline, site)
            .map_err(|e| error_chain(&e))?;
        let result = conn
            .busy_timeout(left())
            .map_err(|e| Error::sqlite(db, "set busy_timeout", e))
            .and_then(|()| probe(&mut conn));
        if !conn.is_autocommit() || conn.busy_timeout(pool.info().config.busy_timeout).is_err() {
            conn.discard();
        }
        drop(conn);
        result.map_err(|e| error_chain(&e))
    };
    with_conn(&|conn| {
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(|e| Error::sqlite(db, "read schema", e))?;
        Ok(None)
    })?;
    let unconfirmed = match pool.info().corruption() {
        Some(c) if c.at.elapsed() < CORRUPTION_MEMORY => {
            let damaged = |found: &str| {
                format!(
                    "the file is damaged: a call {:.0?} ago failed with {}{found}",
                    c.at.elapsed(),
                    c.error
                )
            };
            if c.confirmed_at.is_some_and(|t| t.elapsed() < RECHECK_DAMAGE) {
                return Err(damaged(""));
            }
            // A call got a corruption error, maybe from another file (an attached one, a
            // connection of its own): `integrity_check` of this one says whether it is
            // damaged, within what is left of the timeout; once per error, and again now
            // and then while damage found stays in memory, to see a repair. Not
            // `quick_check`, which does not compare indexes with their tables: an index
            // pointing at rows its table lacks fails every read through it and passes that.
            let damage = with_conn(&|conn| integrity_check(conn, deadline))?;
            match damage.as_deref() {
                Some("ok") => {
                    pool.info().checked_corruption(c.at, false);
                    None
                }
                Some(found) => {
                    pool.info().checked_corruption(c.at, true);
                    return Err(damaged(&format!("; integrity_check: {found}")));
                }
                // Found damaged before, and not found sound since.
                None if c.confirmed_at.is_some() => return Err(damaged("")),
                None => Some(format!(
                    "a call {:.0?} ago failed with {}; integrity_check did not finish in time",
                    c.at.elapsed(),
                    c.error
                )),
            }
        }
        _ => None,
    };
    let note = match pool.hold_lane(deadline) {
        None => Some("writes blocked: the writer lane stayed busy".to_owned()),
        Some(turn) => {
            let note = with_conn(
                &|conn| match conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;") {
                    Ok(()) => Ok(None),
                    Err(e) => {
                        let e = pool.sqlite_error("take the write lock", e);
                        if e.is_busy() {
                            Ok(Some(format!("writes blocked: {}", error_chain(&e))))
                        } else {
                            Err(e)
                        }
                    }
                },
            );
            drop(turn);
            note?
        }
    };
    let saturated = saturation(&before);
    let failing = recent_commit_failure(pool)?;
    Ok((
        start.elapsed(),
        note.or(failing).or(unconfirmed).or(saturated),
    ))
}

/// `PRAGMA main.integrity_check`'s first findings on `conn`, joined (`ok` for a sound file),
/// or `None` when it did not finish by `deadline`.
fn integrity_check(conn: &mut PooledConnection, deadline: Instant) -> Result<Option<String>> {
    conn.progress_handler(1000, Some(move || Instant::now() >= deadline))
        .map_err(|e| conn.info().sqlite_error("bound integrity_check", e))?;
    let rows = conn
        .prepare("PRAGMA main.integrity_check(3)")
        .and_then(|mut stmt| {
            stmt.query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        });
    if conn.progress_handler(0, None::<fn() -> bool>).is_err() {
        // Its next borrower must not inherit the bound.
        conn.discard();
    }
    match rows {
        Ok(rows) => Ok(Some(rows.join("; "))),
        Err(e) if extended_code(&e) == Some(rusqlite::ffi::SQLITE_INTERRUPT) => Ok(None),
        // Damage that stops the check itself is its finding.
        Err(e) if extended_code(&e).is_some_and(is_corruption_code) => Ok(Some(e.to_string())),
        Err(e) => Err(conn.info().sqlite_error("integrity_check", e)),
    }
}

/// A note when callers wait at a full pool.
fn saturation(before: &DbSnapshot) -> Option<String> {
    (before.waiting > 0 && before.active() >= before.max_size).then(|| {
        format!(
            "pool saturated: {} of {} connections busy, {} callers waiting",
            before.active(),
            before.max_size,
            before.waiting
        )
    })
}

/// A client within `timeout`, then a round trip bounded by what is left of it and `SELECT 1`;
/// then what the monitor last saw: a replica not taking reads, a primary it could not reach,
/// a server near `max_connections` each make the database degraded.
#[cfg(feature = "postgres")]
fn check_postgres(db: &PgDatabase, timeout: Duration) -> Outcome {
    let start = Instant::now();
    let before = db.snapshot();
    db.probe(timeout).map_err(|e| error_chain(&e))?;
    let mut notes: Vec<String> = saturation(&before).into_iter().collect();
    notes.extend(postgres_notes(&db.facts()));
    Ok((
        start.elapsed(),
        (!notes.is_empty()).then(|| notes.join("; ")),
    ))
}

/// What about a PostgreSQL database's servers makes it degraded, one line each.
#[cfg(feature = "postgres")]
fn postgres_notes(facts: &PgFacts) -> Vec<String> {
    let mut notes = facts.primary_notes();
    notes.extend(facts.replica_notes());
    notes
}

/// A note if a `COMMIT` failed within [`COMMIT_FAILURE_MEMORY`], and an error if no write
/// has committed since: the probe's rollback cannot see a full disk.
fn recent_commit_failure(pool: &Database) -> Outcome<Option<String>> {
    let counters = &pool.info().counters;
    let Some(failure) = counters.last_commit_failure() else {
        return Ok(None);
    };
    let ago = failure.at.elapsed();
    if ago >= COMMIT_FAILURE_MEMORY {
        return Ok(None);
    }
    if counters.commits.load(Relaxed) == failure.commits_before {
        return Err(format!(
            "writes fail: the last write transaction, {ago:.0?} ago, did not commit: {}",
            failure.error
        ));
    }
    Ok(Some(format!(
        "{} write transactions did not commit, the last {ago:.0?} ago: {}",
        counters.commit_failures.load(Relaxed),
        failure.error
    )))
}
