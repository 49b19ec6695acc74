//! Lock keepers: a connection outside the pool that holds a read transaction while reads
//! run, so that the reads' own read transactions find the WAL's read lock already taken in
//! this process. A database's `read` calls share one (`read_keeper.rs`), opened once reads
//! keep coming; each async reader thread has one of its own (`asynch/readers.rs`).
//!
//! SQLite's unix VFS keeps one set of POSIX locks per file per process, and counts how many of
//! the process's connections hold each read lock of the WAL index: only the first takes it
//! from the kernel (`fcntl`), only the last gives it back. A connection reading alone pays
//! both system calls for every read transaction, which is most of a point read's cost (2.2 us
//! a read alone against 0.8 us beside a held transaction, one connection on one thread of
//! the 2-core machine that measured it). With the keeper holding the lock that the calls'
//! transactions take, those two calls are skipped. (After a commit the calls' transactions
//! need a newer read mark than the keeper's, and pay the calls again until its next hold.)
//!
//! What a call sees does not change: its statements run on a pooled connection, and each of
//! its read transactions starts at the newest commit, as without the keeper. The keeper's own
//! snapshot is read by nothing. What it holds back is checkpointing: no checkpoint copies
//! past the keeper's snapshot, none copies at all while the keeper reads the database file
//! (the WAL was fully copied when it began), and the WAL is not started again from the
//! beginning while it holds one of the read marks. So its holds are short, and others end
//! them when they need to, without waiting for the keeper's thread, which may be inside a
//! long call: the hold sits behind a mutex that the thread takes only to change it.
//!
//! - An async reader thread takes a new hold (at the newest commit) after `CALLS_PER_HOLD`
//!   calls or at the coarse clock's next tick, whichever comes first, and lets go when it
//!   parks. The clock's tick takes a database's read keeper's holds (see `read_keeper.rs`).
//! - The clock's tick ends every hold taken before it, so that none outlasts about two
//!   ticks (10 ms) while the clock thread runs, whatever the keeper's thread does.
//! - The registry's automatic checkpoints end every hold as their background pass starts and
//!   before their catch-up pass copies (which leaves the WAL fully copied for the next writer
//!   to start it again), and no hold is taken while either runs.
//! - Writers the registry does not order (autocommit writes on a connection from `get`,
//!   another process's) checkpoint inside their own commits, and start the WAL again only
//!   after one that found no reader's mark in the way: for them every keeper stands back for
//!   `GAP` in every [`GAP_EVERY`] (a read keeper for [`READ_GAP`], ending with it), the same window of the wall clock in every process
//!   (as each read the wall clock when it started: a process started before a step of the
//!   wall clock is out of phase with later ones).
//! - Closing the database (or its async side) closes its keepers, each with the pool's
//!   closing checkpoint when its file has moved (`Closing`).
//!
//! A keeper opens only the file registered, with the pool's identity checks; one whose file
//! has moved is closed when it would next take a hold (a reader thread's by its thread or
//! `close`, a read keeper on a maintenance thread, which the tick hands it to); until then it
//! keeps the moved file open, as an idle pooled connection does. Its busy timeout is zero:
//! a hold that cannot be taken at once is skipped (not tried again before the next tick),
//! never waited for.

use std::sync::{Arc, Mutex, Once, TryLockError, Weak};
use std::time::Duration;

use rusqlite::Connection;

use crate::checkpoint::{Checkpoints, LetGo};
use crate::clock::{Stamp, TICK, coarse_now};
use crate::open::configure_connection;
use crate::pool::{Closing, DbInfo, OpenFailed};
use crate::sync::lock;

/// Calls one hold serves at most before the keeper lets go and takes a new one, so that the
/// snapshot it holds stays close to the newest commit.
#[cfg(feature = "async")]
const CALLS_PER_HOLD: u32 = 64;

/// How long every keeper stands back together, once in every [`GAP_EVERY`]: two ticks of
/// the coarse clock, so that a tick a little late still falls in it.
#[cfg(feature = "async")]
const GAP: Duration = Duration::from_millis(10);

/// How long a read keeper stands back in every [`GAP_EVERY`] (ending with the common gap):
/// half of the time, as its holds are ended by the clock's tick alone, which runs late when
/// the machine is busy, and the common gap alone then let writers that checkpoint on their
/// own find no moment without a reader's mark (their WAL grew to 38-57 MB under load with
/// it, against 21-24 MB for the async keepers, which their own threads end).
const READ_GAP: Duration = Duration::from_millis(20);

/// How long a read keeper's hold serves before the tick takes a new one at the newest commit
/// (sooner when a stand-back or a checkpoint pass ends it): one tick. A new hold each tick
/// often finds the WAL fully copied and takes the read lock that leaves it free to start
/// again; one kept four ticks let the WAL of writers that checkpoint on their own grow to
/// 45-82 MB under a steady read load, against 19-22 MB.
const HOLD_TICKS: u64 = 1;

/// The period of the keepers' common gap: they hold at most three quarters of the time.
const GAP_EVERY: Duration = Duration::from_millis(40);

/// What starts the keeper's read transaction: a read of the schema's root page, which every
/// database has.
const READ: &str = "SELECT max(rowid) FROM sqlite_schema";

/// Whether `now` (a reading of the coarse clock) falls in the keepers' common gap: the last
/// [`GAP`] of each [`GAP_EVERY`] of the wall clock (as it read when the clock's origin was
/// set), so that the keepers of other processes on the same file stand back at the same
/// time, give or take the skew of their clocks' readings (a few milliseconds).
#[cfg(feature = "async")]
fn in_gap(now: Stamp) -> bool {
    in_last(now, GAP)
}

/// Whether `now` falls in the last `gap` of each [`GAP_EVERY`] of the wall clock (see
/// `in_gap`).
fn in_last(now: Stamp, gap: Duration) -> bool {
    let period = u64::try_from(GAP_EVERY.as_nanos()).unwrap_or(u64::MAX);
    let open = u64::try_from(GAP_EVERY.saturating_sub(gap).as_nanos()).unwrap_or(u64::MAX);
    let origin_ns = crate::clock::started_at_unix_ms().wrapping_mul(1_000_000);
    now.nanos_since(Stamp::ORIGIN).wrapping_add(origin_ns) % period >= open
}

/// A keeper (see the module docs). Shared with the database's checkpoints and the clock's
/// tick, which end its hold; used by one thread at a time to take holds.
pub(crate) struct Keeper {
    info: Arc<DbInfo>,
    checkpoints: Arc<Checkpoints>,
    state: Mutex<Hold>,
}

/// The keeper's connection and its hold.
struct Hold {
    /// `None` once closed.
    conn: Option<Box<Connection>>,
    /// A read transaction is open.
    held: bool,
    /// Calls served by the current hold (an async reader thread's keeper).
    #[cfg(feature = "async")]
    calls: u32,
    /// The coarse clock's reading when the current hold was taken.
    since: Stamp,
    /// The coarse clock's reading when a hold could not be taken: not tried again before
    /// the next tick (an async reader thread's keeper).
    #[cfg(feature = "async")]
    failed_at: Option<Stamp>,
}

impl Hold {
    /// Opens the read transaction; on failure (`SQLITE_BUSY`, with a zero busy timeout)
    /// leaves none open.
    fn take(conn: &Connection) -> rusqlite::Result<()> {
        run(conn, "BEGIN")?;
        let read = conn
            .prepare_cached(READ)
            .and_then(|mut s| s.query_row([], |_| Ok(())));
        if read.is_err() {
            let _ = run(conn, "ROLLBACK");
        }
        read
    }

    /// Ends the hold, if any, and nothing else (the clock's tick calls it): a transaction
    /// that will not end stays marked held.
    fn release_only(&mut self) {
        let Some(conn) = self.conn.as_ref().filter(|_| self.held) else {
            return;
        };
        if run(conn, "COMMIT").is_err() {
            let _ = run(conn, "ROLLBACK");
        }
        self.held = !conn.is_autocommit();
    }

    /// Ends the hold, if any. A transaction that will not end (the connection broken) closes
    /// the connection.
    fn release(&mut self, info: &DbInfo) {
        self.release_only();
        if self.held {
            self.close(info);
        }
    }

    /// Ends the hold and closes the connection (which ends a transaction that would not
    /// end), with the pool's closing checkpoint when the file at the path is no longer the
    /// one it has open.
    fn close(&mut self, info: &DbInfo) {
        self.release_only();
        self.held = false;
        if let Some(mut conn) = self.conn.take() {
            conn.closing(info);
        }
    }
}

/// Runs `sql`, a statement of the keeper's own, from the connection's statement cache.
fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// Every keeper of the process, for the clock's tick.
static ALL: Mutex<Vec<Weak<Keeper>>> = Mutex::new(Vec::new());

/// Hooks [`tick`] onto the coarse clock's tick, once per process.
static HOOKED: Once = Once::new();

impl Keeper {
    /// A keeper of the database of `info` and `checkpoints`, or `None` (logged) when none
    /// can be opened on the file registered: reads then go on without one. `threads`: an
    /// async reader thread's, whose holds [`tick`] ends (a read keeper's tick is its own).
    pub(crate) fn open(
        info: &Arc<DbInfo>,
        checkpoints: &Arc<Checkpoints>,
        threads: bool,
    ) -> Option<Arc<Self>> {
        // As the pool's connects: on the registered file only, looked at before anything
        // reads it (see `DbInfo::open_registered`); a connection refused there is dropped
        // unread, never closed as a keeper (whose close may checkpoint).
        let opened = info
            .open_registered()
            .map_err(|failed| match failed {
                OpenFailed::Sqlite(e) => info.sqlite_error("open", e),
                OpenFailed::Moved(err) => err,
            })
            .and_then(|conn| {
                let mut conn = Box::new(conn);
                if let Err(e) = configure_connection(&conn, &info.config)
                    .and_then(|()| conn.busy_timeout(Duration::ZERO))
                {
                    // It may have read (the PRAGMAs read the schema): closed as a pooled
                    // one is.
                    conn.closing(info);
                    return Err(info.sqlite_error("configure", e));
                }
                Ok(conn)
            });
        let hold = Hold {
            conn: match opened {
                Ok(conn) => Some(conn),
                Err(e) => {
                    tracing::debug!(db = %info.name, error = %e, "a lock keeper could not be opened; reads go on without it");
                    return None;
                }
            },
            held: false,
            #[cfg(feature = "async")]
            calls: 0,
            since: coarse_now(),
            #[cfg(feature = "async")]
            failed_at: None,
        };
        let keeper = Arc::new(Self {
            info: Arc::clone(info),
            checkpoints: Arc::clone(checkpoints),
            state: Mutex::new(hold),
        });
        let weak = Arc::downgrade(&keeper);
        checkpoints.add_keeper(weak.clone());
        if threads {
            lock(&ALL).push(weak);
            HOOKED.call_once(|| crate::pool::on_tick(tick));
        }
        Some(keeper)
    }

    /// Before a call, on the keeper's thread: a hold, taken anew when the current one has
    /// served its calls or its tick; none in the common gap or while an automatic checkpoint
    /// runs. `false` once the keeper is closed (its file moved, its transaction stuck, or
    /// the database or its async side closed).
    #[cfg(feature = "async")]
    pub(crate) fn before_call(&self) -> bool {
        let info = &self.info;
        let mut hold = lock(&self.state);
        if hold.conn.is_none() {
            return false;
        }
        let now = coarse_now();
        if in_gap(now) || self.checkpoints.keepers_stand_back() {
            hold.release(info);
            return hold.conn.is_some();
        }
        if hold.held && hold.calls < CALLS_PER_HOLD && now == hold.since {
            hold.calls += 1;
            return true;
        }
        if hold.failed_at == Some(now) {
            return true;
        }
        hold.release(info);
        // Looked at once per hold: a keeper of a replaced or removed file would only keep
        // that file open.
        if info.check_file().is_err() {
            hold.close(info);
            return false;
        }
        let Some(conn) = hold.conn.as_deref() else {
            return false;
        };
        hold.held = Hold::take(conn).is_ok();
        hold.failed_at = (!hold.held).then_some(now);
        hold.calls = 1;
        hold.since = now;
        true
    }

    /// The clock's tick, for a read keeper: a hold while `wanted` (calls came since the last
    /// tick), taken anew (at the newest commit) after [`HOLD_TICKS`] ticks; none otherwise,
    /// in the common gap, or while an automatic checkpoint runs. `false` when the keeper must
    /// close (its file moved, or its transaction would not end): closing is left to others,
    /// being no work for the tick. A keeper whose mutex another thread holds is left as it is.
    pub(crate) fn tend(&self, now: Stamp, wanted: bool) -> bool {
        let mut hold = match self.state.try_lock() {
            Ok(hold) => hold,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return true,
        };
        if hold.conn.is_none() {
            return false;
        }
        if !wanted || in_last(now, READ_GAP) || self.checkpoints.keepers_stand_back() {
            hold.release_only();
            return !hold.held;
        }
        let tick_ns = u64::try_from(TICK.as_nanos()).unwrap_or(u64::MAX);
        if hold.held && now.nanos_since(hold.since) < HOLD_TICKS * tick_ns {
            return true;
        }
        hold.release_only();
        // Looked at once per hold: a keeper of a replaced or removed file would only keep
        // that file open.
        if hold.held || self.info.check_file().is_err() {
            return false;
        }
        let Some(conn) = hold.conn.as_deref() else {
            return false;
        };
        hold.held = Hold::take(conn).is_ok();
        hold.since = now;
        true
    }

    /// Ends the hold (its thread is about to park). `false` once the keeper is closed.
    #[cfg(feature = "async")]
    pub(crate) fn release(&self) -> bool {
        let mut hold = lock(&self.state);
        hold.release(&self.info);
        hold.conn.is_some()
    }

    /// Ends the hold and closes the connection; calls on this keeper do nothing after.
    pub(crate) fn close(&self) {
        lock(&self.state).close(&self.info);
    }
}

impl LetGo for Keeper {
    fn let_go(&self) {
        lock(&self.state).release(&self.info);
    }
}

/// The tick's part: ends every hold taken before this tick (its thread may be inside a long
/// call). Only that, a `COMMIT` of a read transaction: the clock waits for its hooks, so
/// closing (with a checkpoint, for a moved file) is left to the keeper's thread and `close`.
/// A keeper whose thread is changing its hold right now is left for the next tick.
fn tick() {
    let keepers: Vec<Arc<Keeper>> = {
        let mut all = lock(&ALL);
        all.retain(|k| k.strong_count() > 0);
        all.iter().filter_map(Weak::upgrade).collect()
    };
    let now = coarse_now();
    for keeper in &keepers {
        let mut hold = match keeper.state.try_lock() {
            Ok(hold) => hold,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => continue,
        };
        if hold.held && hold.since < now {
            hold.release_only();
        }
    }
    // Dropped here, after every lock: a keeper whose last other owner let go meanwhile was
    // closed by that owner (its thread or `close`), so this drop only frees it.
    drop(keepers);
}

impl Drop for Keeper {
    /// Closed as `close` would: with the closing checkpoint of a moved file.
    fn drop(&mut self) {
        let info = Arc::clone(&self.info);
        match self.state.get_mut() {
            Ok(hold) => hold.close(&info),
            Err(poisoned) => poisoned.into_inner().close(&info),
        }
    }
}
