//! One registered database: its pool, its writer lane and its checkpoint state, with
//! `read`, `write` (group commit through the lane) and its snapshot.
//!
//! (Over 500 lines: a write's whole way through the lane, from the wait or the lent closure
//! to the commit or the broken batch, is one path and is kept in one place; about 110 lines
//! are its unit tests.)

use std::panic::Location;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::batch::{Batch, BatchFailure, CommitSlot, Member, WriteTx, exec_cached, rollback};
use crate::checkpoint::Checkpoints;
use crate::clock::deadline;
use crate::error::{Error, Reentry, Result, extended_code, is_busy_code};
use crate::lane::{LaneTimeout, LaneTurn, Offered, WriterLane};
use crate::pool::{CloseReport, DbInfo, Pool, PooledConnection};
use crate::read_keeper::ReadKeeper;
use crate::reentry::{connections_held, enter, inside_write, outside_closures};
use crate::stats::DbSnapshot;
use crate::wal::commit_deferring_checkpoint;

/// A writer's turn in the lane, with the open batch handed over with it, or the lane's
/// timeout.
pub(crate) type Acquired<'a> = Result<(LaneTurn<'a, Batch>, Option<Batch>), LaneTimeout>;

/// How a writer's closure went, with the slot where its commit is settled when it joined
/// the batch.
pub(crate) type Ran<T, E> = (Member<T, E>, Option<Arc<CommitSlot>>);

/// The longest a background checkpoint pass waits for a connection of its database, on a
/// checkpointer thread that every database's passes share.
const PASS_CHECKOUT_WAIT: Duration = Duration::from_millis(200);

/// One database's pool, writer lane and checkpoint state.
#[derive(Debug)]
pub(crate) struct Database {
    info: Arc<DbInfo>,
    /// The lock keeper of its callers' reads (see `keeper.rs`); before the pool, so that a
    /// database dropped without closing closes it first.
    read_keeper: ReadKeeper,
    pool: Pool,
    lane: WriterLane<Batch>,
    checkpoints: Arc<Checkpoints>,
}

impl Database {
    /// Opens the pool of a database that `prepare_database` has prepared.
    ///
    /// # Errors
    ///
    /// Those of opening its `min_idle` connections.
    pub(crate) fn open(info: Arc<DbInfo>) -> Result<Arc<Self>> {
        let checkpoints = Arc::new(Checkpoints::new(Arc::clone(&info)));
        let db = Arc::new(Self {
            pool: Pool::open(Arc::clone(&info))?,
            lane: WriterLane::default(),
            read_keeper: ReadKeeper::new(&info, &checkpoints),
            checkpoints,
            info,
        });
        // The background checkpoint's connection, checked out when its job starts; a
        // closed or dropped database gives none, nor one whose connections all stay busy
        // for `PASS_CHECKOUT_WAIT` (the catch-up step then copies the WAL in the lane). It
        // looks for an idle one now and then rather than wait as callers do: a pass is no
        // caller, and must not show in the waiting callers, their waits or their timeouts.
        let weak = Arc::downgrade(&db);
        db.checkpoints.set_checkout(Box::new(move |site| {
            let db = weak.upgrade()?;
            let start = Instant::now();
            let until = deadline(
                start,
                db.info.config.connection_timeout.min(PASS_CHECKOUT_WAIT),
            );
            loop {
                match db.pool.try_checkout(site) {
                    Ok(Some(conn)) => return Some(conn),
                    Ok(None) if Instant::now() < until => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    _ => return None,
                }
            }
        }));
        Ok(db)
    }

    /// The database's facts.
    #[inline]
    pub(crate) fn info(&self) -> &Arc<DbInfo> {
        &self.info
    }

    /// An idle connection now, or `None` without waiting.
    #[inline]
    pub(crate) fn try_checkout(
        &self,
        site: &'static Location<'static>,
    ) -> Result<Option<PooledConnection>> {
        self.pool.try_checkout(site)
    }

    /// A connection, waiting up to `connection_timeout`.
    #[inline]
    pub(crate) fn checkout(&self, site: &'static Location<'static>) -> Result<PooledConnection> {
        match self.pool.try_checkout(site)? {
            Some(conn) => Ok(conn),
            None => self.checkout_waiting(site),
        }
    }

    /// A connection for a caller whose fast path found none idle: waits up to
    /// `connection_timeout`, unless it could only wait for its own thread.
    pub(crate) fn checkout_waiting(
        &self,
        site: &'static Location<'static>,
    ) -> Result<PooledConnection> {
        self.refuse_waiting_for_itself()?;
        self.pool.checkout(site)
    }

    /// A connection for a caller that began to ask at `start`, waiting until `deadline`.
    pub(crate) fn checkout_until(
        &self,
        start: Instant,
        deadline: Instant,
        site: &'static Location<'static>,
    ) -> Result<PooledConnection> {
        if let Some(conn) = self.pool.try_checkout(site)? {
            return Ok(conn);
        }
        self.refuse_waiting_for_itself()?;
        self.pool.checkout_until(start, deadline, site)
    }

    /// `Err` when waiting for a connection could only wait for this thread: its closures of
    /// this database hold every connection of the pool.
    fn refuse_waiting_for_itself(&self) -> Result<()> {
        let held = connections_held(self.pool.key());
        if held > 0 && held >= self.info().config.max_size as usize {
            return Err(Error::Reentrant {
                db: self.info().name.clone(),
                call: Reentry::Connection,
            });
        }
        Ok(())
    }

    /// The database's writer lane, for the async writer, which queues in it without waiting.
    #[cfg(feature = "async")]
    pub(crate) fn lane(&self) -> &WriterLane<Batch> {
        &self.lane
    }

    /// The writer lane until `deadline`, without taking over an open transaction: for a
    /// probe of the write lock.
    pub(crate) fn hold_lane(&self, deadline: Instant) -> Option<LaneTurn<'_, Batch>> {
        self.lane.acquire_plain(deadline).ok()
    }

    /// Before a caller's checkout (`get`, `read`): says that a call came, for the clock's
    /// tick, which tends the database's lock keeper (see `keeper.rs`).
    #[inline]
    pub(crate) fn before_read(&self) {
        self.read_keeper.before_read();
    }

    /// Runs `f` on a pooled connection; its SQLite error comes back naming the database.
    #[inline]
    pub(crate) fn read<T>(
        &self,
        site: &'static Location<'static>,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        self.before_read();
        let conn = self.checkout(site)?;
        let _inside = enter(conn.pool_key(), false);
        f(&conn).map_err(|e| self.info().sqlite_error("read", e))
    }

    /// Runs `f` on a connection if one is idle now, on this thread; gives `f` back when none
    /// is (the async reads' inline mode).
    #[cfg(feature = "async")]
    pub(crate) fn read_if_idle<T, E, F>(
        &self,
        site: &'static Location<'static>,
        f: F,
    ) -> std::result::Result<Result<T, E>, F>
    where
        E: From<Error>,
        F: FnOnce(&Connection) -> Result<T, E>,
    {
        self.before_read();
        match self.pool.try_checkout(site) {
            Ok(Some(conn)) => {
                let _inside = enter(conn.pool_key(), false);
                Ok(f(&conn))
            }
            Ok(None) => Err(f),
            Err(e) => Ok(Err(e.into())),
        }
    }

    /// The database's automatic checkpoints, which lock keepers stand back for.
    #[cfg(feature = "async")]
    pub(crate) fn checkpoints(&self) -> &Arc<Checkpoints> {
        &self.checkpoints
    }

    /// Runs `f` on a pooled connection, for closures of an application's error type.
    pub(crate) fn read_with<T, E>(
        &self,
        site: &'static Location<'static>,
        f: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<Error>,
    {
        self.before_read();
        let conn = self.checkout(site)?;
        let _inside = enter(conn.pool_key(), false);
        f(&conn)
    }

    /// [`Database::read_with`] for an async reader thread: without the database's lock
    /// keeper (the reader threads have keepers of their own), for a read made at `start`,
    /// which may have waited in its queue: its connection is waited for only until
    /// `deadline` (the call's), and a timeout reports the call's whole wait. The acquire
    /// histogram times the connection's wait alone, as for a write.
    #[cfg(feature = "async")]
    pub(crate) fn read_on_pool_until<T, E>(
        &self,
        start: Instant,
        deadline: Instant,
        site: &'static Location<'static>,
        f: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<Error>,
    {
        let conn = self
            .checkout_until(Instant::now(), deadline, site)
            .map_err(|mut e| {
                if let Error::Timeout { waited, .. } = &mut e {
                    *waited = start.elapsed();
                }
                e
            })?;
        let _inside = enter(conn.pool_key(), false);
        f(&conn)
    }

    /// [`Database::write_with`] for a closure that returns rusqlite's errors: they come back
    /// naming the database, with SQLite's extended code.
    pub(crate) fn write<T: Send>(
        &self,
        site: &'static Location<'static>,
        f: impl FnOnce(&WriteTx<'_>) -> rusqlite::Result<T> + Send,
    ) -> Result<T> {
        self.write_with(site, |tx| {
            f(tx).map_err(|e| self.info().sqlite_error("write", e))
        })
    }

    /// Runs `f` in the database's write transaction, after waiting for the writer lane: a
    /// `BEGIN IMMEDIATE` transaction, shared with the writers queued behind (group commit,
    /// see `batch.rs`). `f`'s work commits on `Ok` (and this returns once it has), and is
    /// rolled back on `Err` or panic.
    ///
    /// While it waits, `f` is lent to the lane: the writer holding the lane may run it on its
    /// own thread, in its batch (see `lane.rs`). Not when this thread is inside a closure of
    /// the registry already: `f` would lose what the thread holds (its connections, for the
    /// reentry checks), so it waits for the lane as before and runs here.
    pub(crate) fn write_with<T, E, F>(&self, site: &'static Location<'static>, f: F) -> Result<T, E>
    where
        T: Send,
        E: From<Error> + Send,
        F: FnOnce(&WriteTx<'_>) -> Result<T, E> + Send,
    {
        if !outside_closures() {
            return self.write_local_with(site, f);
        }
        let start = self.may_write()?;
        let deadline = deadline(start, self.info().config.connection_timeout);
        let (member, slot) = self.write_lent(start, deadline, site, f)?;
        self.returned(member, slot)
    }

    /// [`Database::write_local_with`] for a closure of rusqlite's error type.
    pub(crate) fn write_local<T>(
        &self,
        site: &'static Location<'static>,
        f: impl FnOnce(&WriteTx<'_>) -> rusqlite::Result<T>,
    ) -> Result<T> {
        self.write_local_with(site, |tx| {
            f(tx).map_err(|e| self.info().sqlite_error("write", e))
        })
    }

    /// [`Database::write_with`] for a closure that runs on this thread whatever happens: it
    /// waits for the lane without lending `f`, so it needs none of the `Send` bounds. It
    /// joins the same batches, in the same order.
    pub(crate) fn write_local_with<T, E>(
        &self,
        site: &'static Location<'static>,
        f: impl FnOnce(&WriteTx<'_>) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<Error>,
    {
        let start = self.may_write()?;
        let deadline = deadline(start, self.info().config.connection_timeout);
        let acquired = self.lane.acquire(deadline);
        let (member, slot) = self.write_in_turn(start, deadline, acquired, site, f)?;
        self.returned(member, slot)
    }

    /// The start of a write, refused with [`Error::Reentrant`] when this thread's closures
    /// hold the writer lane of this database already, or every one of its connections (it
    /// could only wait for itself).
    ///
    /// The second is checked before the write waits for the lane, not only when it needs a
    /// connection: a write from inside a `read` holds that read's connection while it waits
    /// for the lane, and the writer holding the lane may be waiting for that very connection
    /// (in a pool of one, always), each until its timeout, where failing at once frees both.
    fn may_write(&self) -> Result<Instant> {
        if inside_write(self.pool.key()) {
            return Err(Error::Reentrant {
                db: self.info().name.clone(),
                call: Reentry::Write,
            });
        }
        self.refuse_waiting_for_itself()?;
        Ok(Instant::now())
    }

    /// What a write returns once its closure ran: its value once its commit is settled (when
    /// it joined a batch), its error, or its panic resumed.
    fn returned<T, E: From<Error>>(
        &self,
        member: Member<T, E>,
        slot: Option<Arc<CommitSlot>>,
    ) -> Result<T, E> {
        match member {
            Member::Done(Ok(value)) => {
                let timeout = self.info().config.connection_timeout;
                match slot.map(|s| s.wait(&self.info().name, timeout)) {
                    Some(Ok(())) | None => Ok(value),
                    Some(Err(failure)) => Err(failure.into_error(&self.info().name).into()),
                }
            }
            Member::Done(Err(err)) => Err(err),
            // Converted here, on the writer's own thread: an application's `From<Error>` that
            // panics panics its own caller, not the lane holder that ran its closure.
            Member::Failed(err) => Err(err.into()),
            Member::Panicked(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Waits for the writer lane lending `f`: runs it here if the lane comes to this thread,
    /// else returns how it went on the holder's thread. The closure runs in the caller's
    /// tracing span either way.
    fn write_lent<T, E, F>(
        &self,
        start: Instant,
        deadline: Instant,
        site: &'static Location<'static>,
        f: F,
    ) -> Result<Ran<T, E>, E>
    where
        T: Send,
        E: From<Error> + Send,
        F: FnOnce(&WriteTx<'_>) -> Result<T, E> + Send,
    {
        let mut f = Some(f);
        let mut ran: Option<Ran<T, E>> = None;
        let offered = {
            let me = std::thread::current();
            let span = tracing::Span::current();
            let mut job = |batch: &mut Batch| -> bool {
                let Some(f) = f.take() else {
                    unreachable!("a lent write runs once")
                };
                let _span = span.enter();
                self.info().counters.writer_wait.record(start.elapsed());
                let (member, slot) = self.run_in_batch(batch, me.clone(), f);
                // A writer that joined the batch is woken by its commit; the others now.
                let wake = slot.is_none();
                ran = Some((member, slot));
                wake
            };
            self.lane.offer(deadline, &mut job)
        };
        match offered {
            Ok(Offered::Turn(turn, inherited)) => {
                let Some(f) = f.take() else {
                    unreachable!("the lane came to a writer whose closure ran elsewhere")
                };
                self.write_in_turn(start, deadline, Ok((turn, inherited)), site, f)
            }
            // `None`: the holder's thread unwound in the pool's own code before the closure
            // returned, so its batch, and this writer's work with it, did not commit.
            Ok(Offered::Ran) => Ok(ran.unwrap_or_else(|| {
                let err = BatchFailure::abandoned().into_error(&self.info().name);
                (Member::Failed(err), None)
            })),
            Err(timeout) => Err(self.lane_timeout(start, timeout).into()),
        }
    }

    /// The error of a writer that waited for the lane from `start` until its deadline,
    /// counted.
    fn lane_timeout(&self, start: Instant, timeout: LaneTimeout) -> Error {
        self.info().counters.writer_timeouts.fetch_add(1, Relaxed);
        Error::WriterLaneTimeout {
            db: self.info().name.clone(),
            waited: start.elapsed(),
            queued: timeout.queued,
        }
    }

    /// The part of a write from its turn in the writer lane (`acquired`, asked for at `start`
    /// until `deadline`) to the pass or commit of its batch: runs `f` in the batch and returns
    /// how it went, with the slot where its commit is settled when it joined the batch. A
    /// failed or panicked `f` is counted as a rollback here. Shared by `write_with` and the
    /// async writer, which serves several places in the lane from one thread.
    pub(crate) fn write_in_turn<T, E>(
        &self,
        start: Instant,
        deadline: Instant,
        acquired: Acquired<'_>,
        site: &'static Location<'static>,
        f: impl FnOnce(&WriteTx<'_>) -> Result<T, E>,
    ) -> Result<Ran<T, E>, E>
    where
        E: From<Error>,
    {
        let (turn, inherited) = acquired.map_err(|t| self.lane_timeout(start, t))?;
        let now = Instant::now();
        self.info()
            .counters
            .writer_wait
            .record(now.saturating_duration_since(start));
        let mut batch = match inherited {
            // Closed while this writer queued: the work already in the batch was accepted
            // before, and commits; this writer's is refused, as any write after `close`.
            Some(batch) if self.pool.is_closed() => {
                self.commit(batch, turn);
                return Err(Error::Closed {
                    db: self.info().name.clone(),
                }
                .into());
            }
            Some(batch) => batch,
            None => {
                // The last write's connection first, its cache warm (see the method).
                let conn = match self.pool.try_checkout_writer(site)? {
                    Some(conn) => conn,
                    // The connection's wait is timed from here (its histogram), but a
                    // timeout reports the write's whole wait, the lane's part included: the
                    // deadline is the write's, and the caller waited that long.
                    None => self.checkout_until(now, deadline, site).map_err(|mut e| {
                        if let Error::Timeout { waited, .. } = &mut e {
                            *waited = start.elapsed();
                        }
                        e
                    })?,
                };
                self.pool.note_writer(&conn);
                Batch::begin(conn).map_err(|e| self.sqlite_error("begin immediate", e))?
            }
        };
        let ran = self.run_in_batch(&mut batch, std::thread::current(), f);
        self.end_turn(batch, turn);
        Ok(ran)
    }

    /// Runs a writer's closure in `batch`, on this thread, for the writer on `waiter`'s
    /// thread; a closure that failed or panicked is counted as a rollback.
    fn run_in_batch<T, E>(
        &self,
        batch: &mut Batch,
        waiter: std::thread::Thread,
        f: impl FnOnce(&WriteTx<'_>) -> Result<T, E>,
    ) -> Ran<T, E> {
        let (member, slot) = {
            let _inside = enter(self.pool.key(), true);
            batch.run(&self.info().name, waiter, f)
        };
        if !matches!(member, Member::Done(Ok(_))) {
            self.info().counters.rollbacks.fetch_add(1, Relaxed);
        }
        (member, slot)
    }

    /// Ends a turn in the lane that holds `batch`: abandons it if broken, passes it on to the
    /// next writer if it may grow, commits it otherwise.
    ///
    /// Before that, while the batch may grow, it runs the closures the writers at the front
    /// of the queue lent (`write_lent`), here, one after another: no hand-off per writer. Not
    /// when this thread is inside a closure of the registry: a lent closure would run with
    /// what this thread holds counted as its own.
    pub(crate) fn end_turn(&self, mut batch: Batch, turn: LaneTurn<'_, Batch>) {
        let config = &self.info().config;
        if outside_closures() {
            while !batch.is_broken() && batch.can_grow(config) && !self.pool.is_closed() {
                let Some(job) = turn.claim() else { break };
                job.run(&mut batch);
            }
        }
        if batch.is_broken() {
            self.abandon(batch, turn);
        } else if batch.can_grow(config) {
            if let Err((turn, batch)) = turn.pass(batch) {
                self.commit(batch, turn);
            }
        } else {
            self.commit(batch, turn);
        }
    }

    /// Commits `batch` and tells every writer in it how the commit went: after passing the
    /// lane on, or, when a checkpoint is due, before running it (which passes the lane on).
    fn commit(&self, batch: Batch, turn: LaneTurn<'_, Batch>) {
        let counters = &self.info().counters;
        let (mut conn, waiting) = batch.finish();
        let (committed, wal_frames) = commit_deferring_checkpoint(|| exec_cached(&conn, "COMMIT"));
        let n = waiting.len() as u64;
        let outcome = match committed {
            Ok(()) => {
                counters.commits.fetch_add(n, Relaxed);
                if n > 0 {
                    counters.transactions.fetch_add(1, Relaxed);
                }
                Ok(())
            }
            Err(e) => {
                let failure = BatchFailure::from_sqlite("commit", &e);
                counters.count_commit_failure(
                    failure.clone().into_error(&self.info().name).to_string(),
                );
                self.count_if_busy(&e);
                counters.rollbacks.fetch_add(n, Relaxed);
                rollback(&mut conn);
                Err(failure)
            }
        };
        let settle = |waiting: Vec<Arc<CommitSlot>>| {
            for slot in waiting {
                slot.settle(outcome.clone());
            }
        };
        if let (Some(frames), Ok(())) = (wal_frames, &outcome) {
            // The writers' work has committed: tell them before a checkpoint that may hold
            // this thread for a while.
            settle(waiting);
            self.checkpoints.after_commit(conn, turn, frames);
        } else {
            drop(conn);
            drop(turn);
            settle(waiting);
        }
    }

    /// Ends a batch whose transaction broke: rolls back, passes the lane on, and fails every
    /// writer in it.
    fn abandon(&self, batch: Batch, turn: LaneTurn<'_, Batch>) {
        let busy = batch.hit_busy();
        let (conn, waiting) = batch.abandon();
        drop(conn);
        drop(turn);
        let counters = &self.info().counters;
        if busy {
            counters.busy.fetch_add(1, Relaxed);
        }
        counters.rollbacks.fetch_add(waiting.len() as u64, Relaxed);
        let failure = BatchFailure::abandoned();
        // With no writer's work in it, nothing was lost: not a failed transaction.
        if !waiting.is_empty() {
            counters.count_abandoned_transaction();
        }
        for slot in waiting {
            slot.settle(Err(failure.clone()));
        }
    }

    /// Wraps a rusqlite error with the database's name, counting it if it is a busy one.
    pub(crate) fn sqlite_error(&self, op: &'static str, e: rusqlite::Error) -> Error {
        self.count_if_busy(&e);
        self.info().sqlite_error(op, e)
    }

    /// Counts `e` in `busy_errors` if SQLite reported the database busy or locked.
    fn count_if_busy(&self, e: &rusqlite::Error) {
        if extended_code(e).is_some_and(is_busy_code) {
            self.info().counters.busy.fetch_add(1, Relaxed);
        }
    }

    /// Refuses new checkouts and writes at once; see [`Database::close`] for the rest.
    pub(crate) fn mark_closed(&self) {
        self.pool.mark_closed();
    }

    /// Closes the pool (see [`Pool::close`]); `started` is when the caller's close began.
    pub(crate) fn close(&self, started: Instant, deadline: Instant) -> CloseReport {
        self.read_keeper.close(started, deadline);
        self.pool.close(deadline)
    }

    /// Marks its read keeper as being opened on a maintenance thread, or no longer (for
    /// tests).
    #[cfg(test)]
    pub(crate) fn set_keeper_opening(&self, opening: bool) {
        self.read_keeper.set_opening(opening);
    }

    /// The database's snapshot, now.
    pub(crate) fn snapshot(&self) -> DbSnapshot {
        let queued = u32::try_from(self.lane.queued()).unwrap_or(u32::MAX);
        self.pool.snapshot(queued)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::DbConfig;
    use crate::name::DbName;
    use crate::open::prepare_database;

    type TestResult = anyhow::Result<()>;

    fn database(
        name: &str,
        config: DbConfig,
    ) -> anyhow::Result<(tempfile::TempDir, Arc<Database>)> {
        let dir = tempfile::tempdir()?;
        let name = DbName::new(name)?;
        let config = DbConfig {
            create_if_missing: true,
            ..config
        };
        let prepared = prepare_database(&name, &dir.path().join("db.sqlite"), &config)?;
        let db = Database::open(DbInfo::new(name, prepared, config, Arc::default()))?;
        Ok((dir, db))
    }

    /// Makes table `b` for 8 KiB blobs, each write of one about three WAL frames.
    fn create_blobs(db: &Database, site: &'static Location<'static>) -> TestResult {
        db.write(site, |tx| {
            tx.execute_batch("CREATE TABLE b (id INTEGER PRIMARY KEY, data BLOB)")?;
            Ok(())
        })?;
        Ok(())
    }

    /// Writes one 8 KiB blob into `b`, in a transaction of its own.
    fn write_blob(db: &Database, site: &'static Location<'static>) -> TestResult {
        let blob = [1u8; 8 * 1024];
        db.write(site, |tx| {
            tx.execute("INSERT INTO b (data) VALUES (?1)", [&blob[..]])?;
            Ok(())
        })?;
        Ok(())
    }

    /// Bug caught: a write that waited for the lane most of its timeout and then for a
    /// connection until its deadline reported only the connection's part as its wait (the
    /// error said "no connection within 500ms" on a 2 s timeout the caller had waited out).
    #[test]
    fn a_write_timing_out_for_a_connection_reports_its_whole_wait() -> TestResult {
        let timeout = Duration::from_secs(2);
        let (_dir, db) = database(
            "whole-wait",
            DbConfig {
                max_size: 1,
                min_idle: 1,
                connection_timeout: timeout,
                ..DbConfig::default()
            },
        )?;
        let site = Location::caller();
        let _only = db.checkout(site)?;
        let turn = db
            .hold_lane(Instant::now() + Duration::from_secs(30))
            .ok_or_else(|| anyhow::anyhow!("the lane of an idle database was not free"))?;
        let written = std::thread::scope(|s| {
            let writer = s.spawn(|| db.write(site, |_tx| Ok(())));
            std::thread::sleep(Duration::from_millis(1500));
            drop(turn);
            writer.join()
        });
        match written {
            Ok(Err(Error::Timeout { waited, .. })) => assert!(
                waited >= timeout,
                "the write waited out its {timeout:?} but reported {waited:?}"
            ),
            other => panic!("expected a connection timeout, got {other:?}"),
        }
        Ok(())
    }

    /// Bug caught: once a writer's wait for a slow background checkpoint pass timed out,
    /// every later commit waited a whole `connection_timeout` again while holding the lane:
    /// about one batch per timeout, and the queued writers timing out behind it.
    #[test]
    fn a_slow_checkpoint_pass_is_waited_for_once() -> TestResult {
        let (_dir, db) = database(
            "slow-ckpt",
            DbConfig {
                connection_timeout: Duration::from_millis(100),
                ..DbConfig::default()
            },
        )?;
        db.checkpoints
            .set_first_pass_hook(Arc::new(|| std::thread::sleep(Duration::from_secs(30))));
        let site = Location::caller();
        create_blobs(&db, site)?;
        // About three frames a write: the WAL passes 4000 frames (the slow pass starts) and
        // then 16,000 (the first writer there waits 100 ms for it, in vain) well within 30 s.
        let start = Instant::now();
        for _ in 0..6500 {
            write_blob(&db, site)?;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the slow pass ended before the writes did; the test proves nothing"
        );
        assert_eq!(db.checkpoints.first_pass_waits(), 1);
        Ok(())
    }

    /// Bug caught: the connection a background checkpoint pass took from the write that
    /// made it due kept that write's checkout: the pass's time counted as the write's hold,
    /// the leak scanner blamed the write's call site, and `close` listed the connection as
    /// borrowed there long after the write had returned.
    #[test]
    fn a_checkpoint_pass_holds_its_connection_under_its_own_name() -> TestResult {
        let (_dir, db) = database(
            "ckpt-site",
            DbConfig {
                leak_threshold: Some(Duration::from_millis(50)),
                ..DbConfig::default()
            },
        )?;
        let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let hook_started = Arc::clone(&started);
        db.checkpoints.set_first_pass_hook(Arc::new(move || {
            hook_started.store(true, Relaxed);
            std::thread::sleep(Duration::from_secs(2));
        }));
        let site = Location::caller();
        create_blobs(&db, site)?;
        for _ in 0..6500 {
            if started.load(Relaxed) {
                break;
            }
            write_blob(&db, site)?;
        }
        assert!(started.load(Relaxed), "no checkpoint pass started");
        let now = Instant::now();
        let report = db.close(now, now + Duration::from_millis(200));
        let [out] = report.still_out.as_slice() else {
            panic!("the pass's connection is not listed: {report:?}");
        };
        assert!(
            out.checked_out_at.contains("checkpoint.rs"),
            "held under {}",
            out.checked_out_at
        );
        Ok(())
    }

    /// A first-pass hook that counts the passes and holds each one (but those `free` lets
    /// go) until `free` is set: the test decides when a pass copies.
    fn held_passes(
        db: &Database,
    ) -> (
        Arc<std::sync::atomic::AtomicU32>,
        Arc<std::sync::atomic::AtomicU32>,
    ) {
        let started = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let free = Arc::new(std::sync::atomic::AtomicU32::new(u32::MAX));
        let (hook_started, hook_free) = (Arc::clone(&started), Arc::clone(&free));
        db.checkpoints.set_first_pass_hook(Arc::new(move || {
            let n = hook_started.fetch_add(1, Relaxed) + 1;
            let deadline = Instant::now() + Duration::from_secs(10);
            while n > hook_free.load(Relaxed) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }));
        free.store(0, Relaxed);
        (started, free)
    }

    /// Two databases whose first passes hold both checkpointer threads (every database's)
    /// until this drops.
    struct CheckpointersHeld(
        Vec<(
            tempfile::TempDir,
            Arc<Database>,
            Arc<std::sync::atomic::AtomicU32>,
        )>,
    );

    impl CheckpointersHeld {
        fn new(prefix: &str) -> anyhow::Result<Self> {
            let site = Location::caller();
            let mut held = Vec::new();
            for n in 1..=2 {
                let (dir, db) = database(&format!("{prefix}-{n}"), DbConfig::default())?;
                let (started, free) = held_passes(&db);
                create_blobs(&db, site)?;
                while started.load(Relaxed) == 0 {
                    write_blob(&db, site)?;
                }
                held.push((dir, db, free));
            }
            Ok(Self(held))
        }
    }

    impl Drop for CheckpointersHeld {
        fn drop(&mut self) {
            for (_, _, free) in &self.0 {
                free.store(u32::MAX, Relaxed);
            }
        }
    }

    /// Makes table `b` and writes blobs until a first checkpoint pass is due (its job
    /// started, or waiting for a thread).
    fn until_a_pass_is_due(db: &Database, site: &'static Location<'static>) -> TestResult {
        create_blobs(db, site)?;
        while db.checkpoints.step() != crate::checkpoint::Step::FirstPass {
            write_blob(db, site)?;
        }
        Ok(())
    }

    /// Bug caught: a background pass's job carried the connection of the write that made it
    /// due, and kept it while it waited for a checkpointer thread behind other databases'
    /// passes: a pool of one served no read or write meanwhile, each timing out.
    #[test]
    fn a_pass_waiting_for_a_checkpointer_thread_holds_no_connection() -> TestResult {
        let site = Location::caller();
        let let_go = CheckpointersHeld::new("ckpt-busy-a")?;
        let config = DbConfig {
            max_size: 1,
            min_idle: 1,
            connection_timeout: Duration::from_millis(500),
            ..DbConfig::default()
        };
        let (_dir, db) = database("ckpt-one", config)?;
        let started = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let hook_started = Arc::clone(&started);
        db.checkpoints.set_first_pass_hook(Arc::new(move || {
            hook_started.fetch_add(1, Relaxed);
        }));
        until_a_pass_is_due(&db, site)?;
        // Its pass waits for a thread; the pool's one connection serves meanwhile.
        let read = db.read(site, |c| {
            c.query_row("SELECT count(*) FROM b", [], |r| r.get::<_, i64>(0))
        });
        let waiting = started.load(Relaxed) == 0;
        drop(let_go);
        assert!(
            waiting,
            "the pass did not wait for a thread; the test proves nothing"
        );
        assert!(read? > 0);
        first_pass_ended(&db);
        assert_eq!(
            started.load(Relaxed),
            1,
            "the pass ran once a thread was free"
        );
        Ok(())
    }

    /// Bug caught (in the fix above): a pass that found no idle connection within its wait
    /// counted as a caller's acquire timeout, and showed among the waiting callers, though
    /// no caller waited.
    #[test]
    fn a_pass_without_a_connection_is_no_callers_timeout() -> TestResult {
        let site = Location::caller();
        let let_go = CheckpointersHeld::new("ckpt-busy-b")?;
        let config = DbConfig {
            max_size: 1,
            min_idle: 1,
            ..DbConfig::default()
        };
        let (_dir, db) = database("ckpt-none", config)?;
        until_a_pass_is_due(&db, site)?;
        // The application holds the pool's one connection while the pass looks for one.
        let held = db.checkout(site)?;
        drop(let_go);
        first_pass_ended(&db);
        drop(held);
        let totals = db.info().counters.totals();
        assert_eq!(totals.acquire_timeouts, 0, "{totals:?}");
        assert_eq!(totals.acquires_waited, 0, "{totals:?}");
        Ok(())
    }

    /// Waits until the first pass has ended.
    fn first_pass_ended(db: &Database) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while db.checkpoints.step() == crate::checkpoint::Step::FirstPass {
            assert!(Instant::now() < deadline, "the first pass never ended");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Bug caught: after a pause in the writes, the background pass copied the whole WAL,
    /// the next writer restarted it, and when it reached the threshold again the catch-up
    /// step copied that whole new WAL inside the lane (a 40 ms write, every other checkpoint
    /// of a bursty load) instead of a background pass.
    #[test]
    fn after_a_pause_the_next_checkpoint_runs_in_the_background() -> TestResult {
        let (_dir, db) = database("burst", DbConfig::default())?;
        let (started, free) = held_passes(&db);
        let site = Location::caller();
        create_blobs(&db, site)?;
        while started.load(Relaxed) == 0 {
            write_blob(&db, site)?;
        }
        // More frames before the held pass copies: the new WAL reaches the threshold with
        // fewer than the pass saw.
        for _ in 0..100 {
            write_blob(&db, site)?;
        }
        free.store(u32::MAX, Relaxed);
        // A pause in the load: the background pass copies the whole WAL meanwhile.
        first_pass_ended(&db);
        let counters = &db.info().counters;
        let before = counters.checkpoints.load(Relaxed);
        let mut writes = 0;
        while counters.checkpoints.load(Relaxed) == before {
            write_blob(&db, site)?;
            writes += 1;
            assert!(writes < 100_000, "no checkpoint after the pause");
        }
        // That checkpoint came from a second background pass (its job counts itself before
        // its first checkpoint), not from one run inside the lane by the writer that found
        // it due (which counts no pass).
        assert!(
            started.load(Relaxed) >= 2,
            "the checkpoint after the pause ran inside the lane"
        );
        Ok(())
    }

    /// The WAL's frames now, from the WAL index (`mxFrame`, bytes 16 to 20 of `-shm`).
    fn wal_frames(dir: &std::path::Path) -> anyhow::Result<u32> {
        let shm = std::fs::read(dir.join("db.sqlite-shm"))?;
        let bytes: [u8; 4] = shm
            .get(16..20)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| anyhow::anyhow!("no WAL index"))?;
        Ok(u32::from_ne_bytes(bytes))
    }

    /// Bug caught (in a fix for the one above): a first pass that copied every frame while
    /// the next batch was already open left no catch-up step, so that batch committed on a
    /// WAL not started again, and the next writers too: the WAL went on to four times its
    /// threshold, where writers wait for a pass holding the lane. The catch-up inside the
    /// lane copies the open batch's frames and lets the next writer start the WAL again.
    #[test]
    fn a_pass_beside_an_open_batch_still_lets_the_wal_start_again() -> TestResult {
        let (dir, db) = database("beside", DbConfig::default())?;
        let (started, free) = held_passes(&db);
        let site = Location::caller();
        create_blobs(&db, site)?;
        while started.load(Relaxed) == 0 {
            write_blob(&db, site)?;
        }
        let (open_tx, open_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|s| -> TestResult {
            let db = &db;
            let batch = s.spawn(move || {
                db.write_local(site, move |tx| {
                    tx.execute("INSERT INTO b (data) VALUES (?1)", [&[2u8; 8 * 1024][..]])?;
                    let _ = open_tx.send(());
                    let _ = go_rx.recv();
                    Ok(())
                })
            });
            open_rx.recv()?;
            // The held pass copies everything committed, beside the open batch; later
            // passes stay held.
            free.store(1, Relaxed);
            first_pass_ended(db);
            go_tx.send(())?;
            batch
                .join()
                .map_err(|_| anyhow::anyhow!("the batch panicked"))??;
            Ok(())
        })?;
        let before = wal_frames(dir.path())?;
        write_blob(&db, site)?;
        let after = wal_frames(dir.path())?;
        free.store(u32::MAX, Relaxed);
        assert!(
            after < before,
            "the WAL did not start again: {before} frames, then {after}"
        );
        Ok(())
    }

    /// Bug caught: the catch-up checkpoint pass running while an async reader's lock keeper
    /// holds a read transaction (it does not end the keepers' holds first): it cannot copy
    /// the frames written after the keeper's hold, the WAL is not left fully copied, and the
    /// next writer does not start it again; under a steady load the WAL then grows to the
    /// hard limit of four thresholds each time. The keeper here never lets go by itself.
    #[cfg(feature = "async")]
    #[test]
    fn the_catch_up_pass_ends_keepers_holds_and_leaves_the_wal_to_start_again() -> TestResult {
        use std::sync::Mutex;

        use crate::checkpoint::{LetGo, Step};
        use crate::sync::lock;

        /// A keeper that holds until let go.
        struct Sim(Mutex<Option<rusqlite::Connection>>);
        impl LetGo for Sim {
            fn let_go(&self) {
                if let Some(conn) = lock(&self.0).take() {
                    conn.execute_batch("COMMIT")
                        .expect("a read transaction ends");
                }
            }
        }

        let (_dir, db) = database("keeper-ckpt", DbConfig::default())?;
        let site = Location::caller();
        let info = db.info();
        create_blobs(&db, site)?;
        // The background pass waits until the test lets it go.
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let wait = Mutex::new(wait);
        db.checkpoints.set_first_pass_hook(Arc::new(move || {
            let _ = lock(&wait).recv_timeout(Duration::from_secs(10));
        }));
        while db.checkpoints.step() == Step::Idle {
            write_blob(&db, site)?;
        }
        // A reader from before the last writes: the pass copies no frame past its snapshot,
        // so it ends with frames left for the catch-up, as under a steady load.
        let reader = crate::open::open_connection(&info.name, &info.path, &info.config)?;
        reader.execute_batch("BEGIN; SELECT count(*) FROM b")?;
        for _ in 0..10 {
            write_blob(&db, site)?;
        }
        go.send(())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while db.checkpoints.step() != Step::CatchUp {
            anyhow::ensure!(Instant::now() < deadline, "the background pass never ended");
            std::thread::sleep(Duration::from_millis(1));
        }
        reader.execute_batch("COMMIT")?;
        // A keeper takes its hold, as one may while the catch-up waits for a writer.
        anyhow::ensure!(!db.checkpoints.keepers_stand_back(), "no pass runs now");
        let keeper = crate::open::open_connection(&info.name, &info.path, &info.config)?;
        keeper.execute_batch("BEGIN; SELECT count(*) FROM sqlite_schema")?;
        let keeper = Arc::new(Sim(Mutex::new(Some(keeper))));
        let as_let_go: Arc<dyn LetGo> = keeper.clone();
        db.checkpoints.add_keeper(Arc::downgrade(&as_let_go));
        // This write's commit runs the catch-up pass; the next one starts the WAL again.
        write_blob(&db, site)?;
        anyhow::ensure!(
            lock(&keeper.0).is_none(),
            "the catch-up pass left the keeper's hold"
        );
        write_blob(&db, site)?;
        let conn = crate::open::open_connection(&info.name, &info.path, &info.config)?;
        let frames: i64 = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))?;
        assert!(
            frames < 20,
            "{frames} frames in the WAL after the catch-up: it was not started again"
        );
        Ok(())
    }

    /// Reads `SELECT 1` on `db` for `period`, one after another.
    fn read_for(db: &Database, period: Duration) -> TestResult {
        let end = Instant::now() + period;
        while Instant::now() < end {
            db.read(Location::caller(), |c| {
                c.query_row("SELECT 1", [], |_| Ok(()))
            })?;
        }
        Ok(())
    }

    /// `reads` reads of `SELECT 1` on `db`, `pause` apart.
    fn read_every(db: &Database, reads: usize, pause: Duration) -> TestResult {
        for _ in 0..reads {
            db.read(Location::caller(), |c| {
                c.query_row("SELECT 1", [], |_| Ok(()))
            })?;
            std::thread::sleep(pause);
        }
        Ok(())
    }

    /// Bug caught: a database's read keeper (see `read_keeper.rs`) never opened, so `read` pays
    /// the WAL read lock's two system calls every time; or opened by the first read, or by
    /// reads too few to pay for its holds, so that such a database costs one more connection
    /// and its reads get slower.
    #[test]
    fn steady_reads_open_the_read_keeper_and_a_read_now_and_then_does_not() -> TestResult {
        let (_dir, db) = database("read-keeper", DbConfig::default())?;
        read_every(&db, 10, Duration::from_millis(30))?;
        anyhow::ensure!(
            !db.read_keeper.is_open(),
            "a read every 30 ms opened the keeper"
        );
        // About five reads a tick, every tick: fewer than pay for a keeper's holds.
        read_every(&db, 100, Duration::from_millis(1))?;
        anyhow::ensure!(
            !db.read_keeper.is_open(),
            "a read every 1 ms opened the keeper"
        );
        // About 200 ms on a quiet machine; a loaded one may starve the tick of the four
        // busy ticks in a row it waits for, so up to 5 s.
        let start = Instant::now();
        while !db.read_keeper.is_open() && start.elapsed() < Duration::from_secs(5) {
            read_for(&db, Duration::from_millis(50))?;
        }
        anyhow::ensure!(
            db.read_keeper.is_open(),
            "5 s of steady reads opened no keeper"
        );
        db.close(Instant::now(), Instant::now());
        anyhow::ensure!(!db.read_keeper.is_open(), "close left the keeper open");
        Ok(())
    }

    /// Bug caught: a lock keeper's connection configured (which reads the schema) before the
    /// file's identity was looked at, then closed as a keeper when the look failed: on a file
    /// renamed over the path as the keeper opened, that close, the file's last, copied the
    /// registered file's commits from its `-wal` into it and deleted the `-wal`.
    #[test]
    fn a_keeper_never_reads_a_file_renamed_over_the_path_as_it_opens() -> TestResult {
        let (dir, db) = database("keeper-race", DbConfig::default())?;
        let info = Arc::clone(db.info());
        let first = crate::open::open_connection(&info.name, &info.path, &info.config)?;
        // Commits kept in the `-wal`, as they are between checkpoints.
        first.execute_batch(
            "PRAGMA wal_autocheckpoint = 0;
             CREATE TABLE t (v); INSERT INTO t VALUES ('registered');",
        )?;
        let wal = dir.path().join("db.sqlite-wal");
        let renamed = info.before_open.swap_files_once(&info.path)?;
        let keeper = crate::keeper::Keeper::open(&info, db.checkpoints(), false);
        anyhow::ensure!(
            renamed.load(std::sync::atomic::Ordering::SeqCst),
            "no open tried"
        );
        anyhow::ensure!(
            keeper.is_none(),
            "a keeper opened on the file renamed over the path"
        );
        anyhow::ensure!(wal.exists(), "the registered file's -wal was deleted");
        let v: String = first.query_row("SELECT v FROM t", [], |r| r.get(0))?;
        anyhow::ensure!(v == "registered", "the registered file reads {v:?}");
        Ok(())
    }

    /// Bug caught: a read keeper that could not be opened (here: another file renamed over
    /// the path) tried again every few ticks for as long as the calls came, keeping the
    /// maintenance threads opening connections that could only be closed again.
    #[test]
    fn a_read_keeper_that_cannot_open_is_not_tried_again_at_once() -> TestResult {
        let (dir, db) = database("keeper-retry", DbConfig::default())?;
        let other = dir.path().join("other.sqlite");
        rusqlite::Connection::open(&other)?.execute_batch("PRAGMA journal_mode = WAL")?;
        std::fs::rename(&other, &db.info.path)?;
        // Opened here rather than by the tick, whose four busy ticks in a row a loaded
        // machine may not give in time; then the calls' word alone (the pool's reads would
        // fail on the replaced file), which on a quiet machine has the tick open again
        // within 40 ms without the back-off.
        db.read_keeper.open_now();
        anyhow::ensure!(
            db.read_keeper.opens_tried() == 1 && !db.read_keeper.is_open(),
            "a keeper opened on the file renamed over the path"
        );
        let end = Instant::now() + Duration::from_millis(400);
        while Instant::now() < end {
            db.read_keeper.before_read();
        }
        let tried = db.read_keeper.opens_tried();
        anyhow::ensure!(tried == 1, "{tried} keeper opens tried in 400 ms of calls");
        Ok(())
    }

    /// Bug caught: a read keeper the tick closed because its file moved (or its transaction
    /// would not end) was opened again four busy ticks later, and so every 20 ms for as long
    /// as the calls came, each open only to be refused or closed again.
    #[test]
    fn a_read_keeper_closed_for_a_moved_file_is_not_opened_again_at_once() -> TestResult {
        let (dir, db) = database("keeper-moved", DbConfig::default())?;
        db.read_keeper.open_now();
        anyhow::ensure!(db.read_keeper.is_open(), "the keeper did not open");
        let other = dir.path().join("other.sqlite");
        rusqlite::Connection::open(&other)?.execute_batch("PRAGMA journal_mode = WAL")?;
        std::fs::rename(&other, &db.info.path)?;
        // The calls' word alone: the tick looks at the file once its hold ends (within a
        // few ticks), and closes the keeper.
        let start = Instant::now();
        while db.read_keeper.is_open() && start.elapsed() < Duration::from_secs(5) {
            db.read_keeper.before_read();
        }
        anyhow::ensure!(
            !db.read_keeper.is_open(),
            "5 s of calls did not close the keeper of a replaced file"
        );
        // Without the back-off the tick opens again within 40 ms on a quiet machine.
        let tried = db.read_keeper.opens_tried();
        let end = Instant::now() + Duration::from_millis(400);
        while Instant::now() < end {
            db.read_keeper.before_read();
        }
        let again = db.read_keeper.opens_tried() - tried;
        anyhow::ensure!(again == 0, "{again} keeper opens tried in 400 ms of calls");
        Ok(())
    }

    /// Bug caught: `close` waited its own 2 s for a keeper being opened on a busy
    /// maintenance thread, whatever deadline the caller gave it; or, given no time, did not
    /// wait at all, leaving the keeper's connection to close after it returned.
    #[test]
    fn close_waits_for_an_opening_keeper_only_until_its_deadline() -> TestResult {
        let (_dir, db) = database("keeper-close", DbConfig::default())?;
        db.read_keeper.set_opening(true);
        let start = Instant::now();
        db.close(start, start);
        let took = start.elapsed();
        db.read_keeper.set_opening(false);
        anyhow::ensure!(
            took < Duration::from_secs(1),
            "close with no time to wait took {took:?}"
        );
        anyhow::ensure!(
            took >= Duration::from_millis(90),
            "close did not wait its 100 ms for the keeper being opened ({took:?})"
        );
        Ok(())
    }
}
