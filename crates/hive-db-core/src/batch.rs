//! Group commit: the write transaction that queued writers share.
//!
//! The first writer to take a free writer lane checks out a connection and begins a
//! `BEGIN IMMEDIATE` transaction: a [`Batch`]. Each writer's closure runs inside a savepoint of
//! its own; then, if another writer is queued, the batch is passed on with the lane, and the
//! writer waits in a [`CommitSlot`] for the commit. The last writer of a batch (nobody queued,
//! or the batch is full or old) commits once for all and settles every slot. A writer whose
//! closure fails or panics has its savepoint rolled back and leaves the others' work intact.
//!
//! Writers run in FIFO order, one at a time, each seeing the work of those before it, and
//! either all of a batch's work commits or none does; so the outcome is that of running them
//! one after another, and each `write` still returns only after its work has committed.

use std::any::Any;
use std::ops::Deref;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::Thread;
use std::time::Instant;

use rusqlite::{Connection, ffi};

use crate::config::DbConfig;
use crate::error::{Error, extended_code};
use crate::manager::PoolShared;
use crate::name::DbName;
use crate::pool::PooledConnection;

/// What a [`Registry::write`](crate::Registry::write) closure gets: its place in the
/// database's write transaction. It derefs to the [`rusqlite::Connection`].
///
/// The transaction began with `BEGIN IMMEDIATE`. When several writers queue at once they share
/// it (group commit): each closure runs inside a savepoint of its own, in FIFO order, and sees
/// the work of the writers before it; a closure that fails or panics has its savepoint rolled
/// back; the transaction commits once for all of them, and each `write` returns only after that
/// commit. What sharing means for a closure:
///
/// - It must not end the transaction. A `COMMIT` it runs is turned into a rollback (by a
///   commit hook the registry installs on the connection for each transaction; do not
///   replace it from inside the closure); a `ROLLBACK`, or a `RELEASE` of a savepoint it did
///   not create, ends the transaction too. Either way nothing of the batch commits and every
///   writer in it gets an error.
/// - Deferred foreign-key violations (`DEFERRABLE INITIALLY DEFERRED`, or
///   `PRAGMA defer_foreign_keys`) are found at the commit, so one writer's violation fails
///   every writer in its batch, and nothing of it commits.
/// - It must not wait for another thread's `write` to the same database to return: that
///   write may be waiting for this closure's transaction to commit. (Waiting inside a
///   closure holds up every writer of the database anyway.)
///
/// Set [`DbConfig::group_commit_max_writers`](crate::DbConfig::group_commit_max_writers) to 1
/// for one transaction per `write`.
pub struct WriteTx<'a> {
    conn: &'a Connection,
}

impl Deref for WriteTx<'_> {
    type Target = Connection;
    #[inline]
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl std::fmt::Debug for WriteTx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteTx").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs one of the batch's fixed statements, prepared once per connection.
pub(crate) fn exec_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// Why a batch did not commit, for each writer waiting on it.
#[derive(Debug, Clone)]
pub(crate) struct BatchFailure {
    op: &'static str,
    code: i32,
    message: String,
}

impl BatchFailure {
    pub(crate) fn from_sqlite(op: &'static str, e: &rusqlite::Error) -> Self {
        Self {
            op,
            code: extended_code(e).unwrap_or(ffi::SQLITE_ERROR),
            message: e.to_string(),
        }
    }

    /// The transaction ended before its commit, under a writer's closure.
    pub(crate) fn abandoned() -> Self {
        Self {
            op: "commit",
            code: ffi::SQLITE_ABORT,
            message: "the shared write transaction ended before its commit: a writer's \
                      statement ended it, or SQLite rolled it back after an error"
                .to_owned(),
        }
    }

    pub(crate) fn into_error(self, db: &DbName) -> Error {
        Error::Sqlite {
            db: db.clone(),
            op: self.op,
            code: Some(self.code),
            source: rusqlite::Error::SqliteFailure(ffi::Error::new(self.code), Some(self.message)),
        }
    }
}

/// Where a writer waits for the commit of the batch its work is in.
#[derive(Debug)]
pub(crate) struct CommitSlot {
    thread: Thread,
    outcome: Mutex<Option<Result<(), BatchFailure>>>,
}

impl CommitSlot {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            thread: std::thread::current(),
            outcome: Mutex::new(None),
        })
    }

    pub(crate) fn settle(&self, outcome: Result<(), BatchFailure>) {
        *lock(&self.outcome) = Some(outcome);
        if self.thread.id() != std::thread::current().id() {
            self.thread.unpark();
        }
    }

    /// Waits for the commit. It comes once the writers after this one have run their
    /// closures: at most `group_commit_max_writers` of them, or until the batch is
    /// `group_commit_max_age` old, checked between closures. There is no giving up: the
    /// work is in the transaction, and only the commit can say whether it stays. A wait
    /// longer than `connection_timeout` is logged.
    pub(crate) fn wait(&self, shared: &PoolShared) -> Result<(), BatchFailure> {
        let start = Instant::now();
        let patience = shared.config.connection_timeout;
        let mut warned = false;
        loop {
            if let Some(outcome) = lock(&self.outcome).take() {
                return outcome;
            }
            let waited = start.elapsed();
            if !warned && waited >= patience {
                warned = true;
                tracing::warn!(db = %shared.name, ?waited,
                    "a write waits for the commit of the transaction it shares; a later \
                     writer's closure is slow or blocked");
            }
            // Spurious and stale wake-ups are possible; the loop re-checks.
            std::thread::park_timeout(patience);
        }
    }
}

/// How one writer's closure went.
pub(crate) enum Member<T, E> {
    Done(Result<T, E>),
    Panicked(Box<dyn Any + Send>),
}

/// An open `BEGIN IMMEDIATE` transaction, passed along the writer lane.
#[derive(Debug)]
pub(crate) struct Batch {
    conn: Option<PooledConnection>,
    /// Writers whose work is in the transaction, waiting for its commit.
    waiting: Vec<Arc<CommitSlot>>,
    started: Instant,
    /// The transaction ended early or a savepoint could not be set, released or rolled back:
    /// it must not take on more work or commit.
    broken: bool,
    /// Read by the connection's commit hook: while set, any commit on the connection is
    /// turned into a rollback. Set from `BEGIN` until the batch's own `COMMIT`.
    veto: Arc<AtomicBool>,
    /// A closure panicked on the connection: it is closed, not pooled, once the batch ends,
    /// as any connection whose user panicked.
    tainted: bool,
}

impl Batch {
    /// Begins the transaction on `conn`, with a commit hook that turns any commit but the
    /// batch's own into a rollback. Without it, a closure's `COMMIT` (or an autocommit
    /// statement after its `ROLLBACK`, or either from a nested `write` on another database)
    /// would commit the work of the writers before it while all of them are told it did not,
    /// and their retries would write it twice. The hook is installed for every batch, so a
    /// hook a caller set on a pooled connection cannot take its place; so is the WAL hook that
    /// reports a due checkpoint.
    pub(crate) fn begin(conn: PooledConnection) -> rusqlite::Result<Self> {
        let veto = Arc::new(AtomicBool::new(true));
        let hook = Arc::clone(&veto);
        conn.commit_hook(Some(move || hook.load(Ordering::Relaxed)))?;
        // The WAL hook that reports a due checkpoint, in case a caller replaced it.
        conn.wal_hook(Some(crate::connection::wal_hook));
        if let Err(e) = exec_cached(&conn, "BEGIN IMMEDIATE") {
            veto.store(false, Ordering::Relaxed);
            return Err(e);
        }
        Ok(Self {
            conn: Some(conn),
            waiting: Vec::new(),
            started: Instant::now(),
            broken: false,
            tainted: false,
            veto,
        })
    }

    fn conn(conn: &Option<PooledConnection>) -> &Connection {
        // Only `finish` takes the connection, and it consumes the batch.
        conn.as_deref()
            .unwrap_or_else(|| unreachable!("batch used after finish"))
    }

    /// Runs one writer's closure in a savepoint: released on `Ok`, rolled back on `Err` or
    /// panic. A closure that succeeded joins the writers waiting for the commit; its slot is
    /// returned.
    pub(crate) fn run<T, E>(
        &mut self,
        db: &DbName,
        f: impl FnOnce(&WriteTx<'_>) -> Result<T, E>,
    ) -> (Member<T, E>, Option<Arc<CommitSlot>>)
    where
        E: From<Error>,
    {
        let conn = Self::conn(&self.conn);
        if let Err(e) = exec_cached(conn, "SAVEPOINT hive_write") {
            self.broken = true;
            let err = Error::sqlite(db, "begin savepoint", e);
            return (Member::Done(Err(err.into())), None);
        }
        let result = catch_unwind(AssertUnwindSafe(|| f(&WriteTx { conn })));
        if conn.is_autocommit() {
            // The closure (or SQLite, after an error in it) ended the whole transaction.
            self.broken = true;
            return match result {
                Ok(Ok(_)) => {
                    let err = BatchFailure::abandoned().into_error(db);
                    (Member::Done(Err(err.into())), None)
                }
                Ok(Err(e)) => (Member::Done(Err(e)), None),
                Err(panic) => {
                    self.tainted = true;
                    (Member::Panicked(panic), None)
                }
            };
        }
        match result {
            Ok(Ok(value)) => match exec_cached(conn, "RELEASE hive_write") {
                Ok(()) => {
                    let slot = CommitSlot::new();
                    self.waiting.push(Arc::clone(&slot));
                    (Member::Done(Ok(value)), Some(slot))
                }
                Err(e) => {
                    self.broken = true;
                    let err = Error::sqlite(db, "release savepoint", e);
                    (Member::Done(Err(err.into())), None)
                }
            },
            Ok(Err(e)) => {
                self.undo();
                (Member::Done(Err(e)), None)
            }
            Err(panic) => {
                self.undo();
                self.tainted = true;
                (Member::Panicked(panic), None)
            }
        }
    }

    /// Rolls back the current writer's savepoint.
    fn undo(&mut self) {
        let conn = Self::conn(&self.conn);
        let undone = exec_cached(conn, "ROLLBACK TO hive_write")
            .and_then(|()| exec_cached(conn, "RELEASE hive_write"));
        if let Err(e) = undone {
            tracing::warn!(error = %e, "rolling back a writer's savepoint failed");
            self.broken = true;
        }
    }

    /// Whether the next queued writer may join this batch, under `config`'s limits.
    pub(crate) fn can_grow(&self, config: &DbConfig) -> bool {
        !self.broken
            && self.waiting.len() < config.group_commit_max_writers as usize
            && self.started.elapsed() < config.group_commit_max_age
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.broken
    }

    /// Takes the connection and the waiting writers, to commit or roll back.
    pub(crate) fn finish(mut self) -> (PooledConnection, Vec<Arc<CommitSlot>>) {
        // From here on the batch's own COMMIT, and any later user of the connection, commits.
        self.veto.store(false, Ordering::Relaxed);
        let waiting = std::mem::take(&mut self.waiting);
        let mut conn = self
            .conn
            .take()
            .unwrap_or_else(|| unreachable!("batch finished twice"));
        if self.tainted {
            conn.discard();
        }
        (conn, waiting)
    }

    /// Ends a broken batch: rolls back what is left of the transaction, discards the
    /// connection, and fails every waiting writer.
    pub(crate) fn abandon(self) -> (PooledConnection, Vec<Arc<CommitSlot>>) {
        let (mut conn, waiting) = self.finish();
        if !conn.is_autocommit()
            && let Err(e) = conn.execute_batch("ROLLBACK")
        {
            tracing::warn!(error = %e, "rolling back an abandoned batch failed");
        }
        conn.discard();
        (conn, waiting)
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.veto.store(false, Ordering::Relaxed);
        // A batch is always finished. One dropped otherwise (an unwind through the pool's
        // own code) fails its writers rather than leave them waiting; its connection, still
        // inside the transaction, is closed on return, which rolls the transaction back.
        for slot in self.waiting.drain(..) {
            slot.settle(Err(BatchFailure::abandoned()));
        }
    }
}
