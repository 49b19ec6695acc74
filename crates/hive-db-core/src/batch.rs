//! Group commit: the write transaction that queued writers share; and, for plain
//! connections, [`immediate_transaction`], the same transaction shape without the sharing.
//!
//! The first writer to take a free writer lane checks out a connection and begins a
//! `BEGIN IMMEDIATE` transaction: a [`Batch`]. Each writer's closure runs inside a savepoint
//! of its own when an earlier writer's work is in the transaction; then, if another writer is
//! queued, the batch is passed on with the lane, and the writer waits in a [`CommitSlot`] for
//! the commit. The last writer of a batch (nobody queued, or the batch is full or old) commits
//! once for all and settles every slot. A writer whose closure fails or panics has its
//! savepoint rolled back and leaves the others' work intact; one with no work before it (the
//! first, or the first after failed ones) has no savepoint: the transaction, which holds
//! nothing else, is rolled back and begun again. So a write nobody shares a transaction with
//! pays for no savepoint (two more statements, and a copy of every page it changes).
//!
//! Writers run in FIFO order, one at a time, each seeing the work of those before it, and
//! either all of a batch's work commits or none does; so the outcome is that of running them
//! one after another, and each `write` still returns only after its work has committed.
//!
//! (Over 500 lines: the long [`WriteTx`] contract, the first writer's undo without a
//! savepoint, and the plain transaction's test.)

use std::any::Any;
use std::ops::Deref;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::Thread;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::config::DbConfig;
use crate::error::{Error, extended_code, is_busy_code};
use crate::lane::spin_until;
use crate::name::DbName;
use crate::pool::PooledConnection;
use crate::sync::lock;
use crate::wal::wal_hook;

/// What a [`Registry::write`](crate::Registry::write) closure gets: its place in the
/// database's write transaction. It derefs to the [`rusqlite::Connection`].
///
/// The transaction began with `BEGIN IMMEDIATE`. When several writers queue at once they share
/// it (group commit): the closures run in FIFO order, each seeing the work of the writers
/// before it, and inside a savepoint of its own when their work is in the transaction; a
/// closure that fails or panics has its work rolled back (its savepoint, or, with no work
/// before it, the transaction, which then begins again); the transaction commits once for all
/// of them, and each `write` returns only after that commit. What sharing means for a
/// closure:
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

/// Runs one of the batch's fixed statements, prepared once per connection.
pub(crate) fn exec_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// Why a batch did not commit, for each writer waiting on it: what SQLite said, kept as
/// data (a `rusqlite::Error` cannot be cloned for every writer, and inventing one would claim
/// an error SQLite never returned to them).
#[derive(Debug, Clone)]
pub(crate) struct BatchFailure {
    op: &'static str,
    code: Option<i32>,
    reason: String,
}

impl BatchFailure {
    pub(crate) fn from_sqlite(op: &'static str, e: &rusqlite::Error) -> Self {
        Self {
            op,
            code: extended_code(e),
            reason: e.to_string(),
        }
    }

    /// The transaction ended before its commit, under a writer's closure.
    pub(crate) fn abandoned() -> Self {
        Self {
            op: "commit",
            code: None,
            reason: "it ended before its commit: a writer's statement ended it, or SQLite \
                     rolled it back after an error"
                .to_owned(),
        }
    }

    pub(crate) fn into_error(self, db: &DbName) -> Error {
        Error::BatchFailed {
            db: db.clone(),
            op: self.op,
            code: self.code,
            reason: self.reason,
        }
    }
}

/// How long a writer spins for its batch's commit before it parks.
const COMMIT_SPIN: Duration = Duration::from_micros(30);

/// Where a writer waits for the commit of the batch its work is in.
#[derive(Debug)]
pub(crate) struct CommitSlot {
    thread: Thread,
    outcome: Mutex<Option<Result<(), BatchFailure>>>,
    /// Set after `outcome`, for a waiter that spins.
    settled: AtomicBool,
}

impl CommitSlot {
    fn new(thread: Thread) -> Arc<Self> {
        Arc::new(Self {
            thread,
            outcome: Mutex::new(None),
            settled: AtomicBool::new(false),
        })
    }

    pub(crate) fn settle(&self, outcome: Result<(), BatchFailure>) {
        *lock(&self.outcome) = Some(outcome);
        self.settled.store(true, Ordering::Release);
        if self.thread.id() != std::thread::current().id() {
            self.thread.unpark();
        }
    }

    /// The commit's outcome if it has been settled, without waiting: for the async writer,
    /// which watches many slots from one thread (the thread that made them, so `settle`
    /// unparks it).
    #[cfg(feature = "async")]
    pub(crate) fn try_take(&self) -> Option<Result<(), BatchFailure>> {
        lock(&self.outcome).take()
    }

    /// Waits for the commit. It comes once the writers after this one have run their
    /// closures: at most `group_commit_max_writers` of them, or until the batch is
    /// `group_commit_max_age` old, checked between closures. There is no giving up: the
    /// work is in the transaction, and only the commit can say whether it stays. A wait
    /// longer than `patience` (the database's `connection_timeout`) is logged.
    pub(crate) fn wait(&self, db: &DbName, patience: Duration) -> Result<(), BatchFailure> {
        let start = Instant::now();
        let mut warned = false;
        // The commit usually comes within microseconds: the writers after this one are
        // running. Waking from a park costs more than that on a virtual machine.
        spin_until(start + COMMIT_SPIN, || self.settled.load(Ordering::Acquire));
        loop {
            if let Some(outcome) = lock(&self.outcome).take() {
                return outcome;
            }
            let waited = start.elapsed();
            if !warned && waited >= patience {
                warned = true;
                tracing::warn!(db = %db, ?waited,
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
    /// What the closure returned.
    Done(Result<T, E>),
    /// The registry's own error for this writer (a savepoint that could not be set or
    /// released, a transaction the closure ended). Left unconverted: the closure may have
    /// run on the lane holder's thread, and the writer's error type's `From<Error>` is the
    /// application's code, which runs on the writer's own thread (a panic in it is that
    /// writer's, not the holder's).
    Failed(Error),
    /// The closure panicked.
    Panicked(Box<dyn Any + Send>),
}

/// An open `BEGIN IMMEDIATE` transaction, passed along the writer lane.
#[derive(Debug)]
pub(crate) struct Batch {
    conn: Option<PooledConnection>,
    /// Writers whose work is in the transaction, waiting for its commit. Only a writer whose
    /// closure succeeded joins, and a failed writer's work is undone (or the batch broken),
    /// so while this is empty the transaction holds no work that must stay.
    waiting: Vec<Arc<CommitSlot>>,
    started: Instant,
    /// The transaction ended early, a savepoint could not be set, released or rolled back,
    /// or the transaction could not begin again after a first writer's rollback: it must not
    /// take on more work or commit.
    broken: bool,
    /// That last begin failed because another connection held the database (a busy error),
    /// for the database's count of those.
    busy: bool,
    /// Read by the connection's commit hook: while set, any commit on the connection is
    /// turned into a rollback. Set from `BEGIN` until the batch's own `COMMIT`.
    veto: Arc<AtomicBool>,
    /// Set by the connection's rollback hook when the whole transaction rolls back: a
    /// closure ended it (and may have begun another in its place, which without a savepoint
    /// of its own to release would go unnoticed), or SQLite did after an error. Cleared when
    /// the batch begins the transaction again itself.
    rolled_back: Arc<AtomicBool>,
    /// A closure panicked on the connection: it is closed, not pooled, once the batch ends,
    /// as any connection whose user panicked.
    tainted: bool,
}

impl Batch {
    /// Begins the transaction on `conn`, with a commit hook that turns any commit but the
    /// batch's own into a rollback. Without it, a closure's `COMMIT` (or an autocommit
    /// statement after its `ROLLBACK`, or either from a nested `write` on another database)
    /// would commit the work of the writers before it while all of them are told it did not,
    /// and their retries would write it twice. And with a rollback hook that tells the batch
    /// its transaction ended. The hooks are installed for every batch, so a hook a caller set
    /// on a pooled connection cannot take their place; so is the WAL hook that reports a due
    /// checkpoint.
    pub(crate) fn begin(conn: PooledConnection) -> rusqlite::Result<Self> {
        let veto = Arc::new(AtomicBool::new(true));
        let hook = Arc::clone(&veto);
        conn.commit_hook(Some(move || hook.load(Ordering::Relaxed)))?;
        let rolled_back = Arc::new(AtomicBool::new(false));
        let hook = Arc::clone(&rolled_back);
        conn.rollback_hook(Some(move || hook.store(true, Ordering::Relaxed)))?;
        // The WAL hook that reports a due checkpoint, in case a caller replaced it.
        conn.wal_hook(Some(wal_hook));
        if let Err(e) = exec_cached(&conn, "BEGIN IMMEDIATE") {
            veto.store(false, Ordering::Relaxed);
            return Err(e);
        }
        Ok(Self {
            conn: Some(conn),
            waiting: Vec::new(),
            started: Instant::now(),
            broken: false,
            busy: false,
            tainted: false,
            veto,
            rolled_back,
        })
    }

    fn conn(conn: &Option<PooledConnection>) -> &Connection {
        // Only `finish` takes the connection, and it consumes the batch.
        conn.as_deref()
            .unwrap_or_else(|| unreachable!("batch used after finish"))
    }

    /// Runs one writer's closure, its work undone on `Err` or panic: in a savepoint, released
    /// on `Ok`, when the work of writers before it is in the transaction; for the first
    /// writer, whose transaction holds nothing else, without one (its work is undone by
    /// rolling the transaction back and beginning it again). A closure that succeeded joins
    /// the writers waiting for the commit; its slot is returned, and `waiter` (the writer's
    /// thread, not always this one) is woken when it is settled.
    pub(crate) fn run<T, E>(
        &mut self,
        db: &DbName,
        waiter: Thread,
        f: impl FnOnce(&WriteTx<'_>) -> Result<T, E>,
    ) -> (Member<T, E>, Option<Arc<CommitSlot>>) {
        let conn = Self::conn(&self.conn);
        // Only the writers that succeeded are waiting, and the others' work is undone: with
        // none, the transaction holds no work but this closure's.
        let first = self.waiting.is_empty();
        if !first && let Err(e) = exec_cached(conn, "SAVEPOINT hive_write") {
            self.broken = true;
            let err = Error::sqlite(db, "begin savepoint", e);
            return (Member::Failed(err), None);
        }
        let result = catch_unwind(AssertUnwindSafe(|| f(&WriteTx { conn })));
        if conn.is_autocommit() || self.rolled_back.load(Ordering::Relaxed) {
            // The closure (or SQLite, after an error in it) ended the whole transaction.
            self.broken = true;
            return match result {
                Ok(Ok(_)) => {
                    let err = BatchFailure::abandoned().into_error(db);
                    (Member::Failed(err), None)
                }
                Ok(Err(e)) => (Member::Done(Err(e)), None),
                Err(panic) => {
                    self.tainted = true;
                    (Member::Panicked(panic), None)
                }
            };
        }
        let release = || {
            if first {
                Ok(())
            } else {
                exec_cached(conn, "RELEASE hive_write")
            }
        };
        match result {
            Ok(Ok(value)) => match release() {
                Ok(()) => {
                    let slot = CommitSlot::new(waiter);
                    self.waiting.push(Arc::clone(&slot));
                    (Member::Done(Ok(value)), Some(slot))
                }
                Err(e) => {
                    self.broken = true;
                    let err = Error::sqlite(db, "release savepoint", e);
                    (Member::Failed(err), None)
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

    /// Undoes the current writer's work: rolls back its savepoint, or, for a writer with no
    /// work before it (which has none), the whole transaction, which then begins again for
    /// the writers after it. The lane is held, so no writer of this process can take the
    /// database meanwhile; another process may, and then the batch is broken and ends here.
    fn undo(&mut self) {
        let first = self.waiting.is_empty();
        let conn = Self::conn(&self.conn);
        let undone = if first {
            exec_cached(conn, "ROLLBACK")
        } else {
            exec_cached(conn, "ROLLBACK TO hive_write")
                .and_then(|()| exec_cached(conn, "RELEASE hive_write"))
        };
        if let Err(e) = undone {
            tracing::warn!(error = %e, "rolling back a failed writer's work failed");
            self.broken = true;
            return;
        }
        if first {
            match exec_cached(conn, "BEGIN IMMEDIATE") {
                Ok(()) => self.rolled_back.store(false, Ordering::Relaxed),
                Err(e) => {
                    tracing::warn!(error = %e, "beginning the write transaction again, after \
                        its first writer's work was rolled back, failed; the writers queued \
                        behind begin their own");
                    self.busy = extended_code(&e).is_some_and(is_busy_code);
                    self.broken = true;
                }
            }
        }
    }

    /// Whether the next queued writer may join this batch, under `config`'s limits. Not once a
    /// writer changed the connection's session: the next writer must not inherit that either.
    pub(crate) fn can_grow(&self, config: &DbConfig) -> bool {
        !self.broken
            && self.conn.as_ref().is_some_and(|c| !c.session_changed())
            && self.waiting.len() < config.group_commit_max_writers as usize
            && self.started.elapsed() < config.group_commit_max_age
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.broken
    }

    /// Whether the batch broke because another connection held the database.
    pub(crate) fn hit_busy(&self) -> bool {
        self.busy
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

    /// Ends a broken batch: rolls back what is left of the transaction and discards the
    /// connection; the caller fails every waiting writer.
    pub(crate) fn abandon(self) -> (PooledConnection, Vec<Arc<CommitSlot>>) {
        let (mut conn, waiting) = self.finish();
        rollback(&mut conn);
        conn.discard();
        (conn, waiting)
    }
}

/// Rolls back what is left of `conn`'s transaction, if it is in one; a connection whose
/// rollback fails is discarded, never pooled.
pub(crate) fn rollback(conn: &mut PooledConnection) {
    if !conn.is_autocommit()
        && let Err(e) = conn.execute_batch("ROLLBACK")
    {
        tracing::warn!(db = %conn.db(), error = %e, "rolling back a write transaction failed");
        conn.discard();
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

/// Runs `f` in one `BEGIN IMMEDIATE` transaction on a plain (not pooled) connection: commits
/// when `f` returns `Ok`, rolls back when it returns `Err` or panics. For code on a plain
/// connection from [`crate::open_connection`] (the benchmark's connect-per-operation
/// baseline), so its transactions behave as [`crate::Registry::write`]'s (which adds the
/// writer lane and group commit on top).
///
/// # Errors
///
/// `f`'s own error (after the rollback), or [`Error::Sqlite`] naming `db` when `BEGIN` or
/// `COMMIT` fails (a failed `COMMIT` is rolled back).
pub fn immediate_transaction<T, E: From<Error>>(
    db: &DbName,
    conn: &mut Connection,
    f: impl FnOnce(&rusqlite::Transaction<'_>) -> std::result::Result<T, E>,
) -> std::result::Result<T, E> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| Error::sqlite(db, "begin", e))?;
    // On `Err`, and while unwinding from a panic, dropping `tx` rolls it back.
    let value = f(&tx)?;
    tx.commit().map_err(|e| Error::sqlite(db, "commit", e))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DbConfig;
    use crate::error::Result;
    use crate::open::{open_connection, prepare_database};

    /// Bug caught: the plain-connection transaction committing a failed closure's work, leaving
    /// a panicking one's transaction open, or not taking the write lock at `BEGIN`.
    #[test]
    fn immediate_transaction_commits_only_ok() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = DbName::new("tx")?;
        let config = DbConfig {
            create_if_missing: true,
            ..DbConfig::default()
        };
        let prepared = prepare_database(&db, &dir.path().join("t.db"), &config)?;
        let mut conn = open_connection(&db, &prepared.path, &config)?;
        let other = open_connection(&db, &prepared.path, &config)?;
        other.busy_timeout(std::time::Duration::ZERO)?;
        conn.execute_batch("CREATE TABLE t (v INTEGER)")?;
        immediate_transaction(&db, &mut conn, |tx| -> Result<()> {
            // IMMEDIATE: the write lock is held from BEGIN, before any write, so another
            // writer is refused.
            let refused = other.execute_batch("BEGIN IMMEDIATE");
            assert!(refused.is_err(), "write lock not held: {refused:?}");
            tx.execute("INSERT INTO t VALUES (1)", [])
                .map_err(|e| Error::sqlite(&db, "insert", e))?;
            Ok(())
        })
        .map_err(|e: Error| anyhow::anyhow!(e))?;
        let failed: Result<()> = immediate_transaction(&db, &mut conn, |tx| {
            tx.execute("INSERT INTO t VALUES (2)", [])
                .map_err(|e| Error::sqlite(&db, "insert", e))?;
            Err(Error::Closed { db: db.clone() })
        });
        assert!(matches!(failed, Err(Error::Closed { .. })));
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _: Result<()> = immediate_transaction(&db, &mut conn, |tx| {
                tx.execute("INSERT INTO t VALUES (3)", []).ok();
                panic!("inside the transaction");
            });
        }));
        assert!(panicked.is_err());
        assert!(
            conn.is_autocommit(),
            "a panicking closure left the transaction open"
        );
        let values: Vec<i64> = conn
            .prepare("SELECT v FROM t ORDER BY v")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        assert_eq!(values, [1]);
        Ok(())
    }
}
