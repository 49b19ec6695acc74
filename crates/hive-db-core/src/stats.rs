//! Per-database counters kept by the registry, and the plain snapshots read from them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::histogram::{Histogram, LatencySummary};
use crate::name::DbName;

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
    pub(crate) timeouts: AtomicU64,
    pub(crate) busy: AtomicU64,
    pub(crate) leaks: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) rollbacks: AtomicU64,
    pub(crate) checkpoints: AtomicU64,
    pub(crate) transactions: AtomicU64,
    pub(crate) acquire_wait: Histogram,
    pub(crate) hold_time: Histogram,
    pub(crate) writer_wait: Histogram,
}

impl DbCounters {
    pub(crate) fn count_close(&self, reason: CloseReason) {
        match reason {
            CloseReason::Broken => &self.closed_broken,
            CloseReason::ValidationFailed => &self.closed_validation,
            CloseReason::Lifetime => &self.closed_lifetime,
            CloseReason::IdleTimeout => &self.closed_idle,
            CloseReason::PoolClosed => &self.closed_pool_closed,
        }
        .fetch_add(1, Relaxed);
    }

    pub(crate) fn totals(&self) -> Totals {
        let closed = ClosedTotals {
            broken: self.closed_broken.load(Relaxed),
            validation_failed: self.closed_validation.load(Relaxed),
            max_lifetime: self.closed_lifetime.load(Relaxed),
            idle_timeout: self.closed_idle.load(Relaxed),
            pool_closed: self.closed_pool_closed.load(Relaxed),
        };
        Totals {
            acquired: self.acquire_wait.count(),
            created: self.created.load(Relaxed),
            connect_errors: self.connect_errors.load(Relaxed),
            closed,
            timeouts: self.timeouts.load(Relaxed),
            validation_failures: closed.validation_failed,
            broken: closed.broken,
            busy: self.busy.load(Relaxed),
            leaks: self.leaks.load(Relaxed),
            commits: self.commits.load(Relaxed),
            rollbacks: self.rollbacks.load(Relaxed),
            checkpoints: self.checkpoints.load(Relaxed),
            transactions: self.transactions.load(Relaxed),
        }
    }
}

/// Connections closed, by reason, since the process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
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
}

impl ClosedTotals {
    /// All closed connections.
    pub fn total(&self) -> u64 {
        self.broken
            + self.validation_failed
            + self.max_lifetime
            + self.idle_timeout
            + self.pool_closed
    }
}

/// Cumulative counters for one database since the process started (they survive close and
/// re-register).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Totals {
    /// Successful checkouts.
    pub acquired: u64,
    /// Connections opened.
    pub created: u64,
    /// Failed attempts to open a connection.
    pub connect_errors: u64,
    /// Connections closed, by reason.
    pub closed: ClosedTotals,
    /// Checkouts that timed out.
    pub timeouts: u64,
    /// Connections that failed validation (also in `closed.validation_failed`).
    pub validation_failures: u64,
    /// Connections discarded as broken (also in `closed.broken`).
    pub broken: u64,
    /// SQLITE_BUSY / SQLITE_LOCKED errors the registry saw.
    pub busy: u64,
    /// Holds longer than `leak_threshold`.
    pub leaks: u64,
    /// `write` calls whose work committed.
    pub commits: u64,
    /// `write` calls whose work was rolled back (the closure failed or panicked, or the
    /// transaction it shared did not commit).
    pub rollbacks: u64,
    /// Automatic checkpoint passes after `write` commits that left the WAL at or past
    /// SQLite's auto-checkpoint size (1000 frames); see docs/ARCHITECTURE.md.
    pub checkpoints: u64,
    /// SQLite write transactions `write` committed. Queued writers share one (group commit),
    /// so `commits / transactions` is the mean number of writers per transaction.
    pub transactions: u64,
}

/// Facts about the database file.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct SqliteFacts {
    /// Size of the database file in bytes.
    pub file_bytes: u64,
    /// Size of the `-wal` file in bytes (0 when absent).
    pub wal_bytes: u64,
    /// The journal mode SQLite reported when the database was registered.
    pub journal_mode: String,
}

/// One database's pool, now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct DbSnapshot {
    /// The database.
    pub name: DbName,
    /// Its file.
    pub path: PathBuf,
    /// False once closed.
    pub open: bool,
    /// `max_size` of its configuration.
    pub max_size: u32,
    /// `min_idle` of its configuration.
    pub min_idle: u32,
    /// Connections open (active + idle).
    pub live: u32,
    /// Connections checked out.
    pub active: u32,
    /// Connections idle in the pool.
    pub idle: u32,
    /// Callers waiting for a connection.
    pub waiting: u32,
    /// Writers queued for the writer lane, the one writing not included.
    pub writer_queue: u32,
    /// Cumulative counters.
    pub totals: Totals,
    /// Time from asking for a connection to having it.
    pub acquire_wait: LatencySummary,
    /// Time connections were held.
    pub hold_time: LatencySummary,
    /// Time `write` callers waited for the writer lane.
    pub writer_wait: LatencySummary,
    /// The database file.
    pub sqlite: SqliteFacts,
}

/// Every database in a registry, now, sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct RegistrySnapshot {
    /// One entry per database name, open or closed.
    pub databases: Vec<DbSnapshot>,
}

impl RegistrySnapshot {
    /// The entry for `name`, if any.
    pub fn get(&self, name: &str) -> Option<&DbSnapshot> {
        self.databases.iter().find(|d| d.name.as_str() == name)
    }
}
