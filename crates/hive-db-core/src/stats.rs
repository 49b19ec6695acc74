//! Per-database counters kept by the registry, and the plain snapshots read from them.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::backend::Backend;
use crate::config::DbConfig;
use crate::histogram::{Histogram, LatencySummary};
use crate::name::DbName;
pub use crate::server_facts::{PgFacts, ReplicaSnapshot, ReplicaStatus, ServerFacts};
pub use crate::sqlite_build::SqliteBuild;
use crate::sync::lock;

/// Why a connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// Returned while its thread panicked, inside a transaction, or after a failed rollback.
    Broken,
    /// Failed the `SELECT 1` check before checkout.
    ValidationFailed,
    /// Older than `max_lifetime`.
    Lifetime,
    /// Idle longer than `idle_timeout`.
    IdleTimeout,
    /// Its pool was closed.
    PoolClosed,
    /// Returned with its session changed: a PRAGMA that sets something, a temporary object, an
    /// attached database.
    SessionChanged,
}

/// Cumulative counters for one database name. The registry keeps them across close and
/// re-register, so totals never go backwards while the process runs.
#[derive(Debug, Default)]
pub(crate) struct DbCounters {
    pub(crate) created: AtomicU64,
    pub(crate) connect_errors: AtomicU64,
    pub(crate) closed_broken: AtomicU64,
    pub(crate) closed_validation: AtomicU64,
    pub(crate) closed_lifetime: AtomicU64,
    pub(crate) closed_idle: AtomicU64,
    pub(crate) closed_pool_closed: AtomicU64,
    pub(crate) closed_session_changed: AtomicU64,
    pub(crate) acquires_waited: AtomicU64,
    pub(crate) acquire_timeouts: AtomicU64,
    pub(crate) writer_timeouts: AtomicU64,
    pub(crate) busy: AtomicU64,
    pub(crate) leaks: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) rollbacks: AtomicU64,
    pub(crate) checkpoints: AtomicU64,
    pub(crate) transactions: AtomicU64,
    pub(crate) commit_failures: AtomicU64,
    pub(crate) write_retries: AtomicU64,
    /// Async calls: dropped before their work started, dropped while it ran, refused with a
    /// full queue; and the calls waiting in the read and write queues now.
    pub(crate) async_cancelled_before_start: AtomicU64,
    pub(crate) async_cancelled_after_start: AtomicU64,
    pub(crate) async_queue_full: AtomicU64,
    pub(crate) async_read_queued: AtomicU64,
    pub(crate) async_write_queued: AtomicU64,
    /// PostgreSQL: reads served by each replica, by its place in the registration's list
    /// (its `server` label, `replica1` on), and reads a replica could not take that went to
    /// the primary. Here rather than on the database's servers, so that they carry on across
    /// close and re-register as the others do.
    #[cfg(feature = "postgres")]
    pub(crate) replica_reads: Mutex<Vec<std::sync::Arc<AtomicU64>>>,
    #[cfg(feature = "postgres")]
    pub(crate) replica_fallbacks: AtomicU64,
    /// The last write transaction whose `COMMIT` failed, for health.
    last_commit_failure: Mutex<Option<CommitFailure>>,
    pub(crate) acquire_wait: Histogram,
    pub(crate) hold_time: Histogram,
    pub(crate) writer_wait: Histogram,
}

/// A write transaction that did not commit.
#[derive(Debug, Clone)]
pub(crate) struct CommitFailure {
    /// When.
    pub(crate) at: Instant,
    /// `commits` when it failed: a larger count now means a commit has worked since.
    pub(crate) commits_before: u64,
    /// The error its writers got.
    pub(crate) error: String,
}

/// The state of a pool's connections now.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PoolGauges {
    pub(crate) live: u32,
    pub(crate) idle: u32,
    pub(crate) waiting: u32,
    pub(crate) maxwait: Duration,
    pub(crate) held_past_leak_threshold: u32,
}

/// What an open database adds to its counters in a snapshot; a closed one has none.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Gauges {
    pub(crate) pool: PoolGauges,
    pub(crate) writer_queue: u32,
}

impl DbCounters {
    /// The read counter of the replica at `index` in the registration's list, made at its
    /// first use (kept for the name's life, whatever server holds that place later).
    #[cfg(feature = "postgres")]
    pub(crate) fn replica_reads(&self, index: usize) -> std::sync::Arc<AtomicU64> {
        let mut reads = crate::sync::lock(&self.replica_reads);
        while reads.len() <= index {
            reads.push(std::sync::Arc::default());
        }
        std::sync::Arc::clone(&reads[index])
    }

    pub(crate) fn count_close(&self, reason: CloseReason) {
        match reason {
            CloseReason::Broken => &self.closed_broken,
            CloseReason::ValidationFailed => &self.closed_validation,
            CloseReason::Lifetime => &self.closed_lifetime,
            CloseReason::IdleTimeout => &self.closed_idle,
            CloseReason::PoolClosed => &self.closed_pool_closed,
            CloseReason::SessionChanged => &self.closed_session_changed,
        }
        .fetch_add(1, Relaxed);
    }

    /// Counts a write transaction that did not commit.
    pub(crate) fn count_abandoned_transaction(&self) {
        self.commit_failures.fetch_add(1, Relaxed);
    }

    /// Counts a write transaction whose `COMMIT` failed, and keeps it for health; its writers
    /// got `error`.
    pub(crate) fn count_commit_failure(&self, error: String) {
        self.commit_failures.fetch_add(1, Relaxed);
        *lock(&self.last_commit_failure) = Some(CommitFailure {
            at: Instant::now(),
            commits_before: self.commits.load(Relaxed),
            error,
        });
    }

    /// The last write transaction that did not commit, if any.
    pub(crate) fn last_commit_failure(&self) -> Option<CommitFailure> {
        lock(&self.last_commit_failure).clone()
    }

    pub(crate) fn totals(&self) -> Totals {
        Totals {
            acquires_waited: self.acquires_waited.load(Relaxed),
            acquire_timeouts: self.acquire_timeouts.load(Relaxed),
            writer_timeouts: self.writer_timeouts.load(Relaxed),
            connections_created: self.created.load(Relaxed),
            connect_errors: self.connect_errors.load(Relaxed),
            connections_closed: ClosedTotals {
                broken: self.closed_broken.load(Relaxed),
                validation_failed: self.closed_validation.load(Relaxed),
                max_lifetime: self.closed_lifetime.load(Relaxed),
                idle_timeout: self.closed_idle.load(Relaxed),
                pool_closed: self.closed_pool_closed.load(Relaxed),
                session_changed: self.closed_session_changed.load(Relaxed),
            },
            busy_errors: self.busy.load(Relaxed),
            leaks: self.leaks.load(Relaxed),
            commits: self.commits.load(Relaxed),
            rollbacks: self.rollbacks.load(Relaxed),
            write_transactions: self.transactions.load(Relaxed),
            checkpoints: self.checkpoints.load(Relaxed),
            failed_transactions: self.commit_failures.load(Relaxed),
            write_retries: self.write_retries.load(Relaxed),
            async_cancelled_before_start: self.async_cancelled_before_start.load(Relaxed),
            async_cancelled_after_start: self.async_cancelled_after_start.load(Relaxed),
            async_queue_full: self.async_queue_full.load(Relaxed),
        }
    }

    /// The snapshot of database `name` of `backend` at `path`: these counters, the file
    /// sizes (SQLite), and `gauges` when its pool is open (`None` when closed).
    pub(crate) fn snapshot(
        &self,
        name: &DbName,
        backend: Backend,
        path: &Path,
        config: &DbConfig,
        gauges: Option<Gauges>,
    ) -> DbSnapshot {
        let file_len = |p: &Path| match backend {
            Backend::Sqlite => std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
            Backend::Postgres => 0,
        };
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let g = gauges.unwrap_or_default();
        DbSnapshot {
            name: name.clone(),
            backend,
            path: path.to_path_buf(),
            open: gauges.is_some(),
            max_size: config.max_size,
            min_idle: config.min_idle,
            live: g.pool.live,
            idle: g.pool.idle,
            waiting: g.pool.waiting,
            maxwait_ns: u64::try_from(g.pool.maxwait.as_nanos()).unwrap_or(u64::MAX),
            held_past_leak_threshold: g.pool.held_past_leak_threshold,
            writer_queue: g.writer_queue,
            async_read_queue: gauge(&self.async_read_queued, gauges.is_some()),
            async_write_queue: gauge(&self.async_write_queued, gauges.is_some()),
            totals: self.totals(),
            acquire_wait: self.acquire_wait.summary(),
            hold_time: self.hold_time.summary(),
            writer_wait: self.writer_wait.summary(),
            sqlite: SqliteFacts {
                file_bytes: file_len(path),
                wal_bytes: file_len(Path::new(&wal)),
            },
            postgres: None,
        }
    }
}

/// A queue length kept in the counters, as a snapshot's gauge: 0 for a closed database.
fn gauge(queued: &AtomicU64, open: bool) -> u32 {
    if open {
        u32::try_from(queued.load(Relaxed)).unwrap_or(u32::MAX)
    } else {
        0
    }
}

/// Connections closed, by reason, since the process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct ClosedTotals {
    /// Returned while panicking, inside an open transaction, or after a failed rollback.
    pub broken: u64,
    /// Failed the check before checkout.
    pub validation_failed: u64,
    /// Reached `max_lifetime`.
    pub max_lifetime: u64,
    /// Idle longer than `idle_timeout`.
    pub idle_timeout: u64,
    /// Closed with their pool.
    pub pool_closed: u64,
    /// Returned with their session changed through SQL, so as not to hand the change on: a
    /// PRAGMA that sets something, a temporary table, index, view or trigger, an attached
    /// database (see `PooledConnection`). Absent from snapshots of older versions, where it
    /// reads as 0.
    #[serde(default)]
    pub session_changed: u64,
}

impl ClosedTotals {
    /// All closed connections.
    pub fn total(&self) -> u64 {
        self.broken
            + self.validation_failed
            + self.max_lifetime
            + self.idle_timeout
            + self.pool_closed
            + self.session_changed
    }
}

/// Cumulative counters for one database since the process started (they survive close and
/// re-register). Readers compute rates from the difference of two snapshots.
///
/// Successful acquires are [`DbSnapshot::acquire_wait`]'s `count`, and writes that took the
/// writer lane are [`DbSnapshot::writer_wait`]'s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Totals {
    /// Successful acquires that found no idle connection and had to wait for one to be
    /// returned or opened (pgx's `EmptyAcquireCount`).
    pub acquires_waited: u64,
    /// Acquires that gave up at `connection_timeout`.
    pub acquire_timeouts: u64,
    /// `write` calls that gave up waiting for the writer lane at `connection_timeout`.
    pub writer_timeouts: u64,
    /// Connections opened.
    pub connections_created: u64,
    /// Failed attempts to open a connection.
    pub connect_errors: u64,
    /// Connections closed, by reason.
    pub connections_closed: ClosedTotals,
    /// SQLITE_BUSY / SQLITE_LOCKED errors the registry saw.
    pub busy_errors: u64,
    /// Holds longer than `leak_threshold`.
    pub leaks: u64,
    /// `write` calls whose work committed.
    pub commits: u64,
    /// `write` calls whose work was rolled back (the closure failed or panicked, or the
    /// transaction it shared did not commit).
    pub rollbacks: u64,
    /// SQLite write transactions `write` committed. Queued writers share one (group commit),
    /// so `commits / write_transactions` is the mean number of writers per transaction.
    pub write_transactions: u64,
    /// Passive checkpoints run after `write` commits that left the WAL at or past the
    /// auto-checkpoint size (4000 frames); see docs/ARCHITECTURE.md.
    pub checkpoints: u64,
    /// SQLite write transactions of `write` that did not commit: `COMMIT` failed (a full
    /// disk, an I/O error) or the transaction ended before it with writers' work in it; those
    /// writers got `BatchFailed`. `health` reports a database not Healthy for a while after a failed
    /// `COMMIT` (an error inside the transaction is the closure's, and says nothing of the
    /// database).
    #[serde(default)]
    pub failed_transactions: u64,
    /// PostgreSQL `write` transactions re-run after the server reported a serialization
    /// failure or a deadlock (SQLSTATE 40001, 40P01); always 0 for SQLite. Absent from
    /// snapshots of older versions, where it reads as 0.
    #[serde(default)]
    pub write_retries: u64,
    /// Async calls (cargo feature `async`) whose future was dropped before their work
    /// started: the work was skipped. Absent from older snapshots, where it reads as 0.
    #[serde(default)]
    pub async_cancelled_before_start: u64,
    /// Async calls whose future was dropped while their work ran: it ran to its end and
    /// committed or rolled back as it would have. Absent from older snapshots (0).
    #[serde(default)]
    pub async_cancelled_after_start: u64,
    /// Async calls refused with `QueueFull`. Absent from older snapshots (0).
    #[serde(default)]
    pub async_queue_full: u64,
}

/// Facts about the database file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct SqliteFacts {
    /// Size of the database file in bytes.
    pub file_bytes: u64,
    /// Size of the `-wal` file in bytes (0 when absent).
    pub wal_bytes: u64,
}

/// `path` as JSON text, lossily: a Unix file name may be any bytes, and serde's own
/// serializer refuses one that is not UTF-8, which failed the whole snapshot (`/stats`
/// answered 500 for every database because of one file's name).
fn lossy_path<S: serde::Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

/// One database, now: its pool's state, cumulative counters and latency histograms.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct DbSnapshot {
    /// The database.
    pub name: DbName,
    /// The engine it runs on. Absent from snapshots of older versions, where it reads as
    /// SQLite.
    #[serde(default)]
    pub backend: Backend,
    /// Its file; for PostgreSQL, the server and database as `postgres://user@host:port/db`
    /// (never a password). In JSON, a path that is not UTF-8 has U+FFFD for what is not.
    #[serde(serialize_with = "lossy_path")]
    pub path: PathBuf,
    /// True while registered and open (up); false once closed (down). A closed database
    /// has no connections and keeps its counters.
    pub open: bool,
    /// `max_size` of its configuration.
    pub max_size: u32,
    /// `min_idle` of its configuration.
    pub min_idle: u32,
    /// Connections open, checked out or idle. Checked out: [`DbSnapshot::active`].
    pub live: u32,
    /// Connections idle in the pool.
    pub idle: u32,
    /// Callers waiting for a connection (pending).
    pub waiting: u32,
    /// How long the oldest caller still waiting for a connection has waited, in nanoseconds
    /// (pgbouncer's `maxwait`); 0 when nobody waits.
    pub maxwait_ns: u64,
    /// Connections checked out for longer than `leak_threshold` now, as of the leak
    /// scanner's last pass (every half threshold, at most 1 s); 0 without a threshold.
    /// `totals.leaks` counts every such checkout since start. Absent from snapshots of
    /// older versions, where it reads as 0.
    #[serde(default)]
    pub held_past_leak_threshold: u32,
    /// Writers queued for the writer lane, the one writing not included.
    pub writer_queue: u32,
    /// Async reads (cargo feature `async`) waiting for a reader thread. Absent from older
    /// snapshots, where it reads as 0.
    #[serde(default)]
    pub async_read_queue: u32,
    /// Async writes whose work has not started yet: queued for the writer lane, behind the
    /// writers in `writer_queue` with them. Absent from older snapshots (0).
    #[serde(default)]
    pub async_write_queue: u32,
    /// Cumulative counters.
    pub totals: Totals,
    /// Time from asking for a connection to having it, for every successful acquire.
    pub acquire_wait: LatencySummary,
    /// Time connections were held, from checkout to return, on the coarse clock that
    /// checkouts read (it advances every 5 ms): every hold is counted, one shorter than that
    /// shows as 0 or 5 ms, so only the longer ones' quantiles are exact to 5 ms.
    pub hold_time: LatencySummary,
    /// Time `write` callers waited for the writer lane.
    pub writer_wait: LatencySummary,
    /// The database file (zeros for PostgreSQL).
    pub sqlite: SqliteFacts,
    /// For a PostgreSQL database: its servers, as last measured. `None` for SQLite, and in
    /// snapshots of older versions.
    #[serde(default)]
    pub postgres: Option<PgFacts>,
}

impl DbSnapshot {
    /// Connections checked out: `live - idle`.
    pub fn active(&self) -> u32 {
        self.live.saturating_sub(self.idle)
    }

    /// Successful acquires since the process started.
    pub fn acquires(&self) -> u64 {
        self.acquire_wait.count
    }
}

/// The version of the snapshot format, [`RegistrySnapshot::schema_version`]. It changes when
/// a field is removed or changes meaning; new fields may appear without a change.
pub const SNAPSHOT_SCHEMA_VERSION: u32 = 1;

/// Every database in a registry, now, sorted by name. It is the wire format another process
/// reads (JSON through serde): [`schema_version`](Self::schema_version) says which.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct RegistrySnapshot {
    /// [`SNAPSHOT_SCHEMA_VERSION`] of the code that took it.
    pub schema_version: u32,
    /// When it was taken: milliseconds since the Unix epoch (wall clock).
    pub taken_at_unix_ms: u64,
    /// How long the process had been using hive-db-core when it was taken, in milliseconds
    /// (since its first `Registry`). Counters start at zero then, so a smaller uptime than in
    /// an earlier snapshot means a restart.
    pub uptime_ms: u64,
    /// When the process started using hive-db-core (its first `Registry`), in milliseconds
    /// since the Unix epoch, as the wall clock read then. It stays the same for the
    /// process's life, whatever the wall clock does later, so another value in a later
    /// snapshot from the same address means another process. `None` in snapshots of older
    /// versions.
    #[serde(default)]
    pub started_at_unix_ms: Option<u64>,
    /// One entry per database name, open or closed.
    pub databases: Vec<DbSnapshot>,
    /// How the process's SQLite was compiled (`None` in snapshots of older versions).
    #[serde(default)]
    pub sqlite_build: Option<SqliteBuild>,
}

impl RegistrySnapshot {
    /// A snapshot of `databases`, taken now.
    pub(crate) fn now(mut databases: Vec<DbSnapshot>, sqlite_build: SqliteBuild) -> Self {
        databases.sort_by(|a, b| a.name.cmp(&b.name));
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self {
            schema_version: SNAPSHOT_SCHEMA_VERSION,
            taken_at_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, ms),
            uptime_ms: ms(crate::clock::uptime()),
            started_at_unix_ms: Some(crate::clock::started_at_unix_ms()),
            databases,
            sqlite_build: Some(sqlite_build),
        }
    }

    /// The entry for `name`, if any.
    pub fn get(&self, name: &str) -> Option<&DbSnapshot> {
        self.databases.iter().find(|d| d.name.as_str() == name)
    }
}
