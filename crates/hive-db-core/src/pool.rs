//! One database's pool: checkout with validation after idle, the RAII guard, `read`, `write`
//! through the writer lane, leak scanning, close, and its snapshot.

use std::ops::{Deref, DerefMut};
use std::panic::Location;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use once_cell::sync::Lazy;
use rusqlite::Connection;
use scheduled_thread_pool::{JobHandle, ScheduledThreadPool};

use crate::batch::{Batch, BatchFailure, CommitSlot, Member, WriteTx, exec_cached};
use crate::config::DbConfig;
use crate::connection::{AUTOCHECKPOINT_FRAMES, PreparedDatabase, commit_deferring_checkpoint};
use crate::error::{Error, Result};
use crate::lane::{LaneTurn, WriterLane};
use crate::manager::{
    CheckpointStep, HiveConn, HiveManager, PoolShared, TICK, age, coarse_now, lock, stamp, tick,
    validate,
};
use crate::name::DbName;
use crate::stats::{CloseReason, DbCounters, DbSnapshot, PoolGauges};

/// The maintenance threads every pool in the process shares (connection opening, reaping,
/// leak scans). r2d2 would otherwise start three threads per pool.
static MAINTENANCE: Lazy<Arc<ScheduledThreadPool>> = Lazy::new(|| {
    Arc::new(
        ScheduledThreadPool::builder()
            .num_threads(3)
            .thread_name_pattern("hive-db-maint-{}")
            .build(),
    )
});

/// The threads that run first checkpoint passes (see `checkpoint_after_commit`), apart from
/// `MAINTENANCE`, so that a slow disk delays neither the coarse clock nor connection opening.
static CHECKPOINTER: Lazy<ScheduledThreadPool> = Lazy::new(|| {
    ScheduledThreadPool::builder()
        .num_threads(2)
        .thread_name_pattern("hive-db-ckpt-{}")
        .build()
});

/// Advances the coarse clock that checkouts read (see `manager::coarse_now`).
static TICKER: Lazy<JobHandle> = Lazy::new(|| {
    tick();
    MAINTENANCE.execute_at_fixed_rate(TICK, TICK, tick)
});

/// How long one blocking wait inside r2d2 lasts before we look for a permanent connect error.
const WAIT_SLICE: Duration = Duration::from_millis(50);

/// A connection checked out of a pool. It derefs to [`rusqlite::Connection`]; dropping it
/// returns it to the pool, unless it is dirty (see the crate docs), in which case it is closed.
///
/// The registry keeps two hooks on pooled connections: a WAL hook (automatic checkpoints) and
/// a commit hook (see [`WriteTx`](crate::WriteTx)). Hooks set through this guard replace
/// them and are themselves replaced the next time the connection runs a `write`.
pub struct PooledConnection {
    conn: r2d2::PooledConnection<HiveManager>,
}

impl std::fmt::Debug for PooledConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledConnection")
            .field("db", &self.conn.shared.name)
            .field("id", &self.conn.id)
            .finish_non_exhaustive()
    }
}

impl PooledConnection {
    /// The database this connection belongs to.
    pub fn db(&self) -> &DbName {
        &self.conn.shared.name
    }

    /// Marks the connection so that it is closed instead of pooled when dropped.
    pub fn discard(&mut self) {
        self.conn.discard = Some(CloseReason::Broken);
    }
}

impl Deref for PooledConnection {
    type Target = Connection;
    #[inline]
    fn deref(&self) -> &Connection {
        &self.conn.conn
    }
}

impl DerefMut for PooledConnection {
    #[inline]
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.conn.conn
    }
}

impl Drop for PooledConnection {
    fn drop(&mut self) {
        // No clock read here: r2d2 measures the hold (see `HoldTimer`) and `last_used` is the
        // checkout time.
        let conn = &*self.conn;
        if let Some(leak) = conn.slot.check_in() {
            tracing::info!(
                db = %conn.shared.name,
                held = ?leak.at.elapsed(),
                site = %leak.site,
                "connection reported as a possible leak was returned"
            );
        }
        // `self.conn` drops next: r2d2 asks `has_broken`, then pools or closes it.
    }
}

/// Records hold times from r2d2's check-in event, which r2d2 measures anyway.
#[derive(Debug)]
struct HoldTimer(Arc<DbCounters>);

impl r2d2::HandleEvent for HoldTimer {
    fn handle_checkin(&self, event: r2d2::event::CheckinEvent) {
        self.0.hold_time.record(event.duration());
    }
}

/// What `close` found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct CloseReport {
    /// The database.
    pub db: DbName,
    /// How long close waited for borrowed connections.
    pub waited: Duration,
    /// Connections still checked out at the deadline. Each is closed when it comes back.
    pub still_out: Vec<OutstandingConnection>,
}

/// A connection still borrowed when its pool closed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct OutstandingConnection {
    /// How long it had been held.
    pub held: Duration,
    /// Where it was checked out (`file:line:column`).
    pub checked_out_at: String,
}

/// One database's pool and writer lane.
pub(crate) struct DbPool {
    pub(crate) shared: Arc<PoolShared>,
    pool: r2d2::Pool<HiveManager>,
    pub(crate) lane: WriterLane<Batch>,
    leak_job: Option<JobHandle>,
}

impl std::fmt::Debug for DbPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbPool")
            .field("db", &self.shared.name)
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

impl Drop for DbPool {
    fn drop(&mut self) {
        // Connections still out are closed when they come back, never pooled again.
        self.shared.closed.store(true, Relaxed);
        if let Some(job) = self.leak_job.take() {
            job.cancel();
        }
    }
}

impl DbPool {
    /// Builds the pool for a database that `prepare_database` has prepared.
    pub(crate) fn open(
        name: DbName,
        prepared: PreparedDatabase,
        config: DbConfig,
        counters: Arc<DbCounters>,
    ) -> Result<Self> {
        Lazy::force(&TICKER);
        let shared = Arc::new(PoolShared::new(
            name.clone(),
            prepared.path,
            config.clone(),
            counters,
        ));
        let pool = r2d2::Pool::builder()
            .max_size(config.max_size)
            .min_idle(Some(config.min_idle))
            // Validation is ours: only after `validate_after_idle` (see `checkout`).
            .test_on_check_out(false)
            .max_lifetime(config.max_lifetime)
            .idle_timeout(config.idle_timeout)
            .connection_timeout(config.connection_timeout)
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .event_handler(Box::new(HoldTimer(Arc::clone(&shared.counters))))
            .thread_pool(Arc::clone(&MAINTENANCE))
            .build_unchecked(HiveManager::new(Arc::clone(&shared)));
        let leak_job = config
            .leak_threshold
            .map(|threshold| spawn_leak_scanner(Arc::downgrade(&shared), threshold));
        let db = Self {
            shared,
            pool,
            lane: WriterLane::default(),
            leak_job,
        };
        db.wait_for_min_idle()?;
        Ok(db)
    }

    /// Waits until `min_idle` connections are open; a permanent connect error fails at once.
    fn wait_for_min_idle(&self) -> Result<()> {
        let start = Instant::now();
        let deadline = start + self.shared.config.connection_timeout;
        loop {
            if self.pool.state().connections >= self.shared.config.min_idle {
                return Ok(());
            }
            if let Some(err) = self.permanent_connect_error(start) {
                return Err(err);
            }
            if Instant::now() >= deadline {
                return Err(self.timeout_error(self.shared.config.connection_timeout));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub(crate) fn name(&self) -> &DbName {
        &self.shared.name
    }

    pub(crate) fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Checks out a connection, waiting up to `connection_timeout`.
    #[inline]
    pub(crate) fn checkout(&self, site: &'static Location<'static>) -> Result<PooledConnection> {
        let start = Instant::now();
        self.checkout_until(start, start + self.shared.config.connection_timeout, site)
    }

    /// The fast path: an idle connection now, or `None` without waiting.
    #[inline]
    pub(crate) fn try_checkout(
        &self,
        site: &'static Location<'static>,
    ) -> Result<Option<PooledConnection>> {
        self.refuse_if_closed()?;
        let now = coarse_now();
        while let Some(conn) = self.pool.try_get() {
            if let Some(conn) = self.accept(conn, Duration::ZERO, now, site) {
                return Ok(Some(conn));
            }
        }
        Ok(None)
    }

    #[inline]
    fn refuse_if_closed(&self) -> Result<()> {
        if self.shared.is_closed() {
            return Err(Error::Closed {
                db: self.shared.name.clone(),
            });
        }
        Ok(())
    }

    fn checkout_until(
        &self,
        start: Instant,
        deadline: Instant,
        site: &'static Location<'static>,
    ) -> Result<PooledConnection> {
        let mut had_to_wait = false;
        loop {
            self.refuse_if_closed()?;
            let (conn, waited, now) = match self.pool.try_get() {
                Some(conn) => (conn, Duration::ZERO, coarse_now()),
                None => {
                    had_to_wait = true;
                    let conn = self.wait_for_connection(start, deadline)?;
                    let now = Instant::now();
                    (conn, age(start, now), stamp(now))
                }
            };
            if let Some(conn) = self.accept(conn, waited, now, site) {
                if had_to_wait {
                    self.shared.counters.acquires_waited.fetch_add(1, Relaxed);
                }
                return Ok(conn);
            }
        }
    }

    /// Validates `conn` if it sat idle too long, then hands it out; `None` if it failed.
    #[inline]
    fn accept(
        &self,
        mut conn: r2d2::PooledConnection<HiveManager>,
        waited: Duration,
        now: u64,
        site: &'static Location<'static>,
    ) -> Option<PooledConnection> {
        let shared = &*self.shared;
        let idle_ns = now.saturating_sub(conn.last_used);
        if u128::from(idle_ns) >= shared.config.validate_after_idle.as_nanos()
            && let Err(e) = validate(&conn.conn)
        {
            tracing::warn!(db = %shared.name, id = conn.id, error = %e, "connection failed validation; discarded");
            conn.discard = Some(CloseReason::ValidationFailed);
            return None;
        }
        let HiveConn {
            slot,
            last_site,
            last_used,
            ..
        } = &mut *conn;
        slot.check_out(now, site, last_site);
        // Checkout time stands in for return time: a connection held longer than the window
        // is checked once more than strictly needed, and the return path reads no clock.
        *last_used = now;
        shared.counters.acquire_wait.record(waited);
        Some(PooledConnection { conn })
    }

    /// The slow path: no idle connection. r2d2 opens one if the pool may grow, and we wait.
    fn wait_for_connection(
        &self,
        start: Instant,
        deadline: Instant,
    ) -> Result<r2d2::PooledConnection<HiveManager>> {
        let shared = &*self.shared;
        lock(&shared.waiters).push(start);
        let _waiting = scopeguard(|| {
            let mut waiters = lock(&shared.waiters);
            if let Some(i) = waiters.iter().position(|w| *w == start) {
                waiters.swap_remove(i);
            }
        });
        loop {
            self.refuse_if_closed()?;
            let now = Instant::now();
            if now >= deadline {
                shared.counters.acquire_timeouts.fetch_add(1, Relaxed);
                return Err(self.timeout_error(age(start, now)));
            }
            if let Ok(conn) = self.pool.get_timeout((deadline - now).min(WAIT_SLICE)) {
                return Ok(conn);
            }
            // A cause that waiting cannot fix fails now, not at the deadline.
            if let Some(err) = self.permanent_connect_error(start) {
                return Err(err);
            }
        }
    }

    /// The last connect error, if it happened after `since` and waiting cannot fix it.
    fn permanent_connect_error(&self, since: Instant) -> Option<Error> {
        let last = lock(&self.shared.last_error).clone()?;
        let cause = last.cause.filter(|_| last.at >= since)?;
        Some(Error::Open {
            db: self.shared.name.clone(),
            path: self.shared.path.clone(),
            cause,
            code: last.code,
            source: Some(last.message.into()),
        })
    }

    fn timeout_error(&self, waited: Duration) -> Error {
        let state = self.pool.state();
        Error::Timeout {
            db: self.shared.name.clone(),
            waited,
            total: state.connections,
            active: state.connections - state.idle_connections,
            idle: state.idle_connections,
            waiting: u32::try_from(lock(&self.shared.waiters).len()).unwrap_or(u32::MAX),
            last_error: lock(&self.shared.last_error)
                .as_ref()
                .map(|e| e.message.clone()),
        }
    }

    /// Runs `f` on a pooled connection.
    pub(crate) fn read<T, E>(
        &self,
        site: &'static Location<'static>,
        f: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<Error>,
    {
        let conn = self.checkout(site)?;
        f(&conn)
    }

    /// Runs `f` in the database's write transaction, after waiting for the writer lane: a
    /// `BEGIN IMMEDIATE` transaction, shared with the writers queued behind (group commit,
    /// see `batch.rs`). `f`'s work commits on `Ok` (and this returns once it has), and is
    /// rolled back on `Err` or panic.
    pub(crate) fn write<T, E>(
        &self,
        site: &'static Location<'static>,
        f: impl FnOnce(&WriteTx<'_>) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<Error>,
    {
        let shared = &*self.shared;
        let start = Instant::now();
        let deadline = start + shared.config.connection_timeout;
        let (turn, inherited) = self.lane.acquire(deadline).map_err(|t| {
            shared.counters.writer_timeouts.fetch_add(1, Relaxed);
            Error::WriterLaneTimeout {
                db: shared.name.clone(),
                waited: start.elapsed(),
                queued: t.queued,
            }
        })?;
        let now = Instant::now();
        shared.counters.writer_wait.record(age(start, now));
        let mut batch = match inherited {
            // Closed while this writer queued: the work already in the batch was accepted
            // before, and commits; this writer's is refused, as any write after `close`.
            Some(batch) if shared.is_closed() => {
                self.commit(batch, turn);
                return Err(Error::Closed {
                    db: shared.name.clone(),
                }
                .into());
            }
            Some(batch) => batch,
            None => {
                let conn = self.checkout_until(now, deadline, site)?;
                Batch::begin(conn).map_err(|e| self.sqlite_error("begin immediate", e))?
            }
        };
        let (member, slot) = batch.run(&shared.name, f);
        if batch.is_broken() {
            self.abandon(batch, turn);
        } else if batch.can_grow(&shared.config) {
            if let Err((turn, batch)) = turn.pass(batch) {
                self.commit(batch, turn);
            }
        } else {
            self.commit(batch, turn);
        }
        match member {
            Member::Done(Ok(value)) => match slot.map(|s| s.wait(shared)) {
                Some(Ok(())) | None => Ok(value),
                Some(Err(failure)) => Err(failure.into_error(&shared.name).into()),
            },
            Member::Done(Err(err)) => {
                shared.counters.rollbacks.fetch_add(1, Relaxed);
                Err(err)
            }
            Member::Panicked(panic) => {
                shared.counters.rollbacks.fetch_add(1, Relaxed);
                std::panic::resume_unwind(panic)
            }
        }
    }

    /// Commits `batch` and tells every writer in it how the commit went: after passing the
    /// lane on, or, when a checkpoint is due, before running it (which passes the lane on).
    fn commit(&self, batch: Batch, turn: LaneTurn<'_, Batch>) {
        let counters = &self.shared.counters;
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
                drop(self.sqlite_error("commit", e));
                counters.rollbacks.fetch_add(n, Relaxed);
                if !conn.is_autocommit() && conn.execute_batch("ROLLBACK").is_err() {
                    conn.discard();
                }
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
            checkpoint_after_commit(conn, turn, frames);
        } else {
            drop(conn);
            drop(turn);
            settle(waiting);
        }
    }

    /// Ends a batch whose transaction broke: rolls back, passes the lane on, and fails every
    /// writer in it.
    fn abandon(&self, batch: Batch, turn: LaneTurn<'_, Batch>) {
        let (conn, waiting) = batch.abandon();
        drop(conn);
        drop(turn);
        self.shared
            .counters
            .rollbacks
            .fetch_add(waiting.len() as u64, Relaxed);
        for slot in waiting {
            slot.settle(Err(BatchFailure::abandoned()));
        }
    }

    fn sqlite_error(&self, op: &'static str, e: rusqlite::Error) -> Error {
        let err = Error::sqlite(&self.shared.name, op, e);
        if err.is_busy() {
            self.shared.counters.busy.fetch_add(1, Relaxed);
        }
        err
    }

    /// Refuses new checkouts, waits until `deadline` for borrowed connections, closes every
    /// connection that is back, and reports those still out.
    pub(crate) fn close(&self, deadline: Instant) -> CloseReport {
        let shared = &*self.shared;
        shared
            .closed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let start = Instant::now();
        loop {
            // Idle connections (and any a late connect added) are closed as they are taken.
            while let Some(conn) = self.pool.try_get() {
                drop(conn);
            }
            let slots = lock(&shared.slots);
            let now = Instant::now();
            let settled = slots.is_empty()
                && shared.connecting.load(std::sync::atomic::Ordering::SeqCst) == 0;
            if settled || now >= deadline {
                let still_out: Vec<_> = slots
                    .iter()
                    .filter_map(|s| s.checkout())
                    .map(|c| OutstandingConnection {
                        held: age(c.at, now),
                        checked_out_at: c.site.to_string(),
                    })
                    .collect();
                drop(slots);
                for out in &still_out {
                    tracing::warn!(db = %shared.name, held = ?out.held, site = %out.checked_out_at,
                        "connection still borrowed when its pool closed; it will be closed when returned");
                }
                tracing::info!(db = %shared.name, still_out = still_out.len(), "pool closed");
                return CloseReport {
                    db: shared.name.clone(),
                    waited: age(start, now),
                    still_out,
                };
            }
            let wait = (deadline - now).min(Duration::from_millis(10));
            drop(
                shared
                    .slots_changed
                    .wait_timeout(slots, wait)
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
        }
    }

    pub(crate) fn snapshot(&self) -> DbSnapshot {
        let shared = &*self.shared;
        let gauges = (!shared.is_closed()).then(|| {
            let state = self.pool.state();
            let (waiting, oldest) = {
                let waiters = lock(&shared.waiters);
                (waiters.len(), waiters.iter().min().copied())
            };
            PoolGauges {
                live: state.connections,
                idle: state.idle_connections,
                waiting: u32::try_from(waiting).unwrap_or(u32::MAX),
                maxwait: oldest.map_or(Duration::ZERO, |at| at.elapsed()),
                writer_queue: u32::try_from(self.lane.queued()).unwrap_or(u32::MAX),
            }
        });
        shared
            .counters
            .snapshot(&shared.name, &shared.path, &shared.config, gauges)
    }

    /// A connection for the health check, waiting at most `timeout`.
    pub(crate) fn checkout_within(
        &self,
        timeout: Duration,
        site: &'static Location<'static>,
    ) -> Result<PooledConnection> {
        let start = Instant::now();
        self.checkout_until(start, start + timeout, site)
    }

    pub(crate) fn counters(&self) -> &DbCounters {
        &self.shared.counters
    }

    #[cfg(test)]
    pub(crate) fn r2d2_state(&self) -> r2d2::State {
        self.pool.state()
    }
}

fn spawn_leak_scanner(shared: Weak<PoolShared>, threshold: Duration) -> JobHandle {
    let period = (threshold / 2).clamp(Duration::from_millis(5), Duration::from_secs(1));
    MAINTENANCE.execute_at_fixed_rate(period, period, move || {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let now = Instant::now();
        let slots: Vec<_> = lock(&shared.slots).clone();
        for leak in slots.iter().filter_map(|s| s.report_leak(now, threshold)) {
            shared.counters.leaks.fetch_add(1, Relaxed);
            tracing::warn!(
                db = %shared.name,
                held = ?age(leak.at, now),
                site = %leak.site,
                "connection held longer than the leak threshold"
            );
        }
    })
}

/// Runs `f` when dropped.
pub(crate) fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// The automatic checkpoint of a `write` whose commit left the WAL at or past
/// [`AUTOCHECKPOINT_FRAMES`], in two passes.
///
/// A checkpoint spends most of its time in fsync, flushing the WAL. Run inside the lane (as
/// SQLite's own hook would run it, inside the commit), it stalls every queued writer for that
/// long. Run outside, it never catches up with writers that keep appending, so the WAL is
/// never emptied and restarted, and grows without bound. So the first pass runs on a
/// checkpointer thread, concurrently with the writers, and flushes and copies the bulk (see
/// [`first_pass`]); this writer returns at once. The next writer that finds a checkpoint due
/// runs the second pass inside the lane, where nothing can be appended: it copies only what
/// was written during the last of the first pass's checkpoints and leaves the WAL fully copied, so the writer after it starts the WAL again from
/// the beginning.
fn checkpoint_after_commit<P>(conn: PooledConnection, turn: LaneTurn<'_, P>, wal_frames: i32) {
    let shared = Arc::clone(&conn.conn.shared);
    let mut step = CheckpointStep::load(&shared.checkpoint_step);
    if step == CheckpointStep::FirstPass
        && wal_frames >= WAL_FRAMES_LIMIT
        && !shared.checkpoint_overdue.load(Relaxed)
    {
        // The writers outrun the background pass. Hold the lane, so nothing more is
        // appended, until it finishes; then catch up here. The WAL stays bounded, at the
        // cost of the writers queued meanwhile, as under SQLite's own checkpoint.
        step = wait_for_first_pass(&shared);
    }
    match step {
        CheckpointStep::Idle => {
            CheckpointStep::FirstPass.store(&shared.checkpoint_step);
            drop(turn);
            // The connection goes with the job and returns to the pool when it is done.
            CHECKPOINTER.execute(move || {
                let done = Arc::clone(&shared);
                // Even if the job unwinds, the next due writer must find the catch-up step,
                // or no `write` would checkpoint this database again.
                let _next = scopeguard(move || {
                    let _signal = lock(&done.checkpoint_lock);
                    CheckpointStep::CatchUp.store(&done.checkpoint_step);
                    done.checkpoint_overdue.store(false, Relaxed);
                    done.checkpoint_done.notify_all();
                });
                #[cfg(test)]
                if let Some(hook) = lock(&shared.first_pass_hook).clone() {
                    hook();
                }
                first_pass(&shared, &conn);
                drop(conn);
            });
        }
        CheckpointStep::CatchUp => {
            checkpoint(&shared, &conn);
            CheckpointStep::Idle.store(&shared.checkpoint_step);
            drop(conn);
            drop(turn);
        }
        // The first pass is still running.
        CheckpointStep::FirstPass => {
            drop(conn);
            drop(turn);
        }
    }
}

/// WAL size, in frames, past which a writer waits for the background checkpoint pass
/// instead of going on appending: four times SQLite's auto-checkpoint size.
const WAL_FRAMES_LIMIT: i32 = 4 * AUTOCHECKPOINT_FRAMES;

/// Waits, for at most the pool's `connection_timeout`, until the first pass has finished;
/// returns the step it leaves. If the pass is not done by then, no writer waits for it again
/// until it is: the writers go on, and the WAL grows past the limit for that while.
fn wait_for_first_pass(shared: &PoolShared) -> CheckpointStep {
    #[cfg(test)]
    shared.first_pass_waits.fetch_add(1, Relaxed);
    let deadline = Instant::now() + shared.config.connection_timeout;
    let mut signal = lock(&shared.checkpoint_lock);
    loop {
        let step = CheckpointStep::load(&shared.checkpoint_step);
        if step != CheckpointStep::FirstPass {
            return step;
        }
        let now = Instant::now();
        if now >= deadline {
            shared.checkpoint_overdue.store(true, Relaxed);
            tracing::warn!(db = %shared.name,
                "the background checkpoint is slower than the writers; they go on meanwhile");
            return step;
        }
        signal = shared
            .checkpoint_done
            .wait_timeout(signal, deadline - now)
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0;
    }
}

/// Frames a background pass may leave for the catch-up pass inside the lane.
const CATCH_UP_FRAMES: i64 = 100;
/// Background passes at most, before the catch-up pass is left to do the rest.
const FIRST_PASSES: usize = 8;

/// The first, background pass: passive checkpoints, repeated while the writers appended more
/// than [`CATCH_UP_FRAMES`] during the previous one, so the pass inside the lane stays short.
fn first_pass(shared: &PoolShared, conn: &Connection) {
    let mut copied_before = None;
    for _ in 0..FIRST_PASSES {
        let Some(copied) = checkpoint(shared, conn) else {
            return;
        };
        // Frames this pass copied (none if a writer restarted the WAL meanwhile).
        if copied_before.is_some_and(|before: i64| copied.saturating_sub(before) <= CATCH_UP_FRAMES)
        {
            return;
        }
        copied_before = Some(copied);
    }
}

/// A passive checkpoint, as SQLite's automatic one: it copies what it can without waiting for
/// readers or writers. Returns how many of the WAL's frames have been copied to the database
/// (by this checkpoint and those before it since the WAL last restarted), or `None` if it
/// failed.
fn checkpoint(shared: &PoolShared, conn: &Connection) -> Option<i64> {
    let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    });
    match result {
        Ok((busy, wal_frames, copied)) => {
            shared.counters.checkpoints.fetch_add(1, Relaxed);
            tracing::trace!(db = %shared.name, busy, wal_frames, copied, "checkpoint");
            Some(copied)
        }
        Err(e) => {
            tracing::debug!(db = %shared.name, error = %e, "checkpoint failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};

    use super::*;
    use crate::registry::Registry;

    type TestResult = anyhow::Result<()>;

    fn registry(
        name: &str,
        config: DbConfig,
    ) -> anyhow::Result<(tempfile::TempDir, Registry, DbName)> {
        let dir = tempfile::tempdir()?;
        let registry = Registry::new();
        let name = DbName::new(name)?;
        let config = DbConfig {
            create_if_missing: true,
            ..config
        };
        registry.register(&name, dir.path().join("db.sqlite"), config)?;
        Ok((dir, registry, name))
    }

    /// Bug caught: a panic inside connect escaping into r2d2's worker, which leaks the
    /// pending slot for good (verified with r2d2 0.8.10), so the pool can never reach
    /// max_size again.
    #[test]
    fn a_panicking_connect_is_an_error_and_frees_its_slot() -> TestResult {
        let max = 3;
        let (_dir, registry, name) = registry(
            "panic-connect",
            DbConfig {
                max_size: max,
                min_idle: 0,
                connection_timeout: Duration::from_secs(10),
                ..DbConfig::default()
            },
        )?;
        let pool = registry.pool_for_test(&name)?;
        let panics_left = Arc::new(AtomicU32::new(3));
        let hook_panics = Arc::clone(&panics_left);
        *lock(&pool.shared.connect_hook) = Some(Arc::new(move |_conn| {
            if hook_panics
                .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                panic!("injected connect panic");
            }
            Ok(())
        }));
        // Every slot can be held at once once connects stop panicking.
        let held: Vec<_> = (0..max)
            .map(|_| registry.get(&name))
            .collect::<Result<_, _>>()?;
        assert_eq!(panics_left.load(SeqCst), 0);
        assert_eq!(pool.r2d2_state().connections, max);
        let totals = registry.db_stats(&name)?.totals;
        assert_eq!(totals.connect_errors, 3);
        drop(held);
        Ok(())
    }

    /// Installs a hook that can poison connections; the returned function makes every
    /// connection opened so far fail each statement (interrupted), and later ones work.
    fn poison_hook(pool: &DbPool) -> impl Fn() + use<> {
        let generation = Arc::new(AtomicU64::new(0));
        let created = Arc::new(AtomicU64::new(0));
        let hook_gen = Arc::clone(&generation);
        let hook_created = Arc::clone(&created);
        *lock(&pool.shared.connect_hook) = Some(Arc::new(move |conn| {
            let mine = hook_created.fetch_add(1, SeqCst);
            let current = Arc::clone(&hook_gen);
            // Every statement of a connection made before the poisoning is interrupted.
            conn.progress_handler(1, Some(move || current.load(SeqCst) > mine))?;
            Ok(())
        }));
        move || generation.store(created.load(SeqCst), SeqCst)
    }

    /// Bug caught: a stale connection handed out unchecked after sitting idle, or the live
    /// count drifting when failed connections are replaced (seed defect 3).
    #[test]
    fn idle_connections_are_validated_and_replaced_exactly() -> TestResult {
        let (_dir, registry, name) = registry(
            "validate",
            DbConfig {
                max_size: 4,
                min_idle: 0,
                validate_after_idle: Duration::ZERO,
                ..DbConfig::default()
            },
        )?;
        let pool = registry.pool_for_test(&name)?;
        let poison = poison_hook(&pool);
        // Three connections (r2d2 may open one more in the background) go idle.
        let held: Vec<_> = (0..3)
            .map(|_| registry.get(&name))
            .collect::<Result<_, _>>()?;
        drop(held);
        std::thread::sleep(Duration::from_millis(50));
        let idle_before = pool.r2d2_state().idle_connections;
        assert!(idle_before >= 3);
        poison();
        let conn = registry.get(&name)?;
        let one: i64 = conn.query_row("SELECT 1", [], |r| r.get(0))?;
        assert_eq!(one, 1, "a poisoned connection was handed out");
        drop(conn);
        let s = registry.db_stats(&name)?;
        // Every idle connection was poisoned: each failed its check before a fresh one came.
        assert_eq!(
            s.totals.connections_closed.validation_failed,
            u64::from(idle_before),
            "{s:#?}"
        );
        assert_eq!(
            s.totals.connections_created - s.totals.connections_closed.total(),
            u64::from(s.live)
        );
        assert_eq!(pool.r2d2_state().connections, s.live);
        assert_eq!(lock(&pool.shared.slots).len() as u32, s.live);
        Ok(())
    }

    /// A one-connection pool whose connection the returned function can poison.
    fn single_poisonable(
        name: &str,
        window: Duration,
    ) -> anyhow::Result<(tempfile::TempDir, Registry, DbName, impl Fn())> {
        let (dir, registry, name) = registry(
            name,
            DbConfig {
                max_size: 1,
                min_idle: 1,
                validate_after_idle: window,
                ..DbConfig::default()
            },
        )?;
        let pool = registry.pool_for_test(&name)?;
        let poison = poison_hook(&pool);
        // Replace the connection opened before the hook with one the hook can poison.
        registry.get(&name)?.discard();
        Ok((dir, registry, name, poison))
    }

    /// Bug caught: `last_used` never refreshed, so a connection in steady use is validated
    /// again and again once it is older than the window.
    #[test]
    fn a_checkout_restarts_the_validation_window() -> TestResult {
        let window = Duration::from_millis(200);
        let (_dir, registry, name, poison) = single_poisonable("window", window)?;
        std::thread::sleep(window + Duration::from_millis(50));
        // Idle past the window: validated (and passes), and the window restarts now.
        drop(registry.get(&name)?);
        poison();
        let conn = registry.get(&name)?;
        assert!(
            conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .is_err(),
            "not the poisoned connection"
        );
        assert_eq!(
            registry
                .db_stats(&name)?
                .totals
                .connections_closed
                .validation_failed,
            0
        );
        Ok(())
    }

    /// Bug caught: a stale connection handed out unchecked because the clock checkouts read
    /// (the coarse clock) stopped advancing.
    #[test]
    fn a_connection_idle_past_the_window_is_validated() -> TestResult {
        let window = Duration::from_millis(100);
        let (_dir, registry, name, poison) = single_poisonable("idle-window", window)?;
        drop(registry.get(&name)?);
        poison();
        std::thread::sleep(window * 3);
        let conn = registry.get(&name)?;
        let one: i64 = conn.query_row("SELECT 1", [], |r| r.get(0))?;
        assert_eq!(
            one, 1,
            "the poisoned connection was handed out without a check"
        );
        assert_eq!(
            registry
                .db_stats(&name)?
                .totals
                .connections_closed
                .validation_failed,
            1
        );
        Ok(())
    }

    /// Bug caught: validating on every checkout (r2d2's default, half the point-read speed)
    /// instead of only after `validate_after_idle`.
    #[test]
    fn recently_used_connections_skip_validation() -> TestResult {
        let (_dir, registry, name) = registry(
            "no-validate",
            DbConfig {
                max_size: 2,
                min_idle: 0,
                validate_after_idle: Duration::from_secs(3600),
                ..DbConfig::default()
            },
        )?;
        let pool = registry.pool_for_test(&name)?;
        let poison = poison_hook(&pool);
        drop(registry.get(&name)?);
        poison();
        // Handed out unchecked: the poison shows only when the caller runs a statement.
        let conn = registry.get(&name)?;
        assert!(
            conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .is_err()
        );
        assert_eq!(
            registry
                .db_stats(&name)?
                .totals
                .connections_closed
                .validation_failed,
            0
        );
        Ok(())
    }

    /// Bug caught: once a writer's wait for a slow background checkpoint pass timed out,
    /// every later commit waited a whole `connection_timeout` again while holding the lane:
    /// about one batch per timeout, and the queued writers timing out behind it.
    #[test]
    fn a_slow_checkpoint_pass_is_waited_for_once() -> TestResult {
        let (_dir, registry, name) = registry(
            "slow-ckpt",
            DbConfig {
                connection_timeout: Duration::from_millis(100),
                ..DbConfig::default()
            },
        )?;
        let pool = registry.pool_for_test(&name)?;
        *lock(&pool.shared.first_pass_hook) =
            Some(Arc::new(|| std::thread::sleep(Duration::from_secs(10))));
        registry.write(&name, |tx| -> anyhow::Result<()> {
            tx.execute_batch("CREATE TABLE b (id INTEGER PRIMARY KEY, data BLOB)")?;
            Ok(())
        })?;
        // About three frames a write: the WAL passes 1000 frames (the slow pass starts) and
        // then 4000 (the first writer there waits 100 ms for it, in vain) well within 10 s.
        let blob = vec![1u8; 8 * 1024];
        let start = Instant::now();
        for _ in 0..1800 {
            registry.write(&name, |tx| -> anyhow::Result<()> {
                tx.execute("INSERT INTO b (data) VALUES (?1)", [&blob])?;
                Ok(())
            })?;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the slow pass ended before the writes did; the test proves nothing"
        );
        assert_eq!(pool.shared.first_pass_waits.load(Relaxed), 1);
        Ok(())
    }
}
