//! A reader thread's lock keeper: a connection of the thread's own, outside the pool, that
//! holds a read transaction while the thread serves calls, so that the calls' own read
//! transactions find the WAL's read lock already taken in this process.
//!
//! SQLite's unix VFS keeps one set of POSIX locks per file per process, and counts how many of
//! the process's connections hold each read lock of the WAL index: only the first takes it
//! from the kernel (`fcntl`), only the last gives it back. A connection reading alone pays
//! both system calls for every read transaction, which is most of a point read's cost (2.2 us
//! a read alone against 0.8 us beside a held transaction, one connection on one thread of
//! the 2-core machine that measured it). With the keeper holding the lock that the calls'
//! transactions take, those two calls are skipped.
//!
//! What a call sees does not change: its statements run on a pooled connection, and each of
//! its read transactions starts at the newest commit, as without the keeper. The keeper's own
//! snapshot is read by nothing. What it holds back is checkpointing: no checkpoint copies
//! past the keeper's snapshot, none copies at all while the keeper reads the database file
//! (the WAL was fully copied when it began), and the WAL is not started again from the
//! beginning while it holds one of the read marks. So it lets go often: after
//! [`CALLS_PER_HOLD`] calls or at the coarse clock's next tick (every 5 ms), whichever comes
//! first, when its thread parks, and at once when an automatic checkpoint of the database is
//! under way, taking no new hold until that checkpoint is done. Its busy timeout is zero: a
//! hold that cannot be taken at once is skipped, never waited for.

use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;

use crate::clock::{Stamp, coarse_now};
use crate::database::Database;
use crate::open::open_connection;

/// Calls one hold serves at most before the keeper lets go and takes a new one, so that the
/// snapshot it holds stays close to the newest commit.
const CALLS_PER_HOLD: u32 = 64;

/// What starts the keeper's read transaction: a read of the schema's root page, which every
/// database has.
const READ: &str = "SELECT max(rowid) FROM sqlite_schema";

/// One reader thread's keeper (see the module docs).
pub(super) struct Keeper {
    db: Arc<Database>,
    conn: Connection,
    /// A read transaction is open (and counted in the database's checkpoints).
    held: bool,
    /// Calls served by the current hold.
    calls: u32,
    /// The coarse clock's reading when the current hold was taken.
    since: Stamp,
    /// The coarse clock's reading when a hold could not be taken: not tried again before
    /// the next tick.
    failed_at: Option<Stamp>,
}

impl Keeper {
    /// The keeper of a reader thread of `db`, or `None` (logged) when it cannot be opened: the
    /// thread then serves its calls without one.
    pub(super) fn open(db: &Arc<Database>) -> Option<Self> {
        let info = db.info();
        let opened = open_connection(&info.name, &info.path, &info.config).and_then(|conn| {
            conn.busy_timeout(Duration::ZERO)
                .map_err(|e| info.sqlite_error("open", e))?;
            Ok(conn)
        });
        match opened {
            Ok(conn) => Some(Self {
                db: Arc::clone(db),
                conn,
                held: false,
                calls: 0,
                since: coarse_now(),
                failed_at: None,
            }),
            Err(e) => {
                tracing::debug!(db = %info.name, error = %e, "a reader thread's lock keeper could not be opened; reads go on without it");
                None
            }
        }
    }

    /// Before a call: a hold, taken anew when the current one has served its calls or its
    /// tick; none while the database's automatic checkpoint wants the keepers out of its way.
    /// `false` when the keeper should be closed: the file at the database's path is no
    /// longer the one it has open, or its transaction could not be ended.
    pub(super) fn before_call(&mut self) -> bool {
        if self.db.checkpoints().keepers_stand_back() {
            return self.release();
        }
        let now = coarse_now();
        if self.held && self.calls < CALLS_PER_HOLD && now == self.since {
            self.calls += 1;
            return true;
        }
        if self.failed_at == Some(now) {
            return true;
        }
        if !self.release() {
            return false;
        }
        // Looked at once per hold: a keeper of a replaced or removed file would only keep
        // that file open.
        if self.db.info().check_file().is_err() {
            return false;
        }
        if !self.db.checkpoints().keeper_holds() {
            return true;
        }
        self.held = self.hold().is_ok();
        if !self.held {
            self.db.checkpoints().keeper_let_go();
        }
        self.failed_at = (!self.held).then_some(now);
        self.calls = 1;
        self.since = now;
        // A hold that failed and still left a transaction open: closed.
        self.held || self.conn.is_autocommit()
    }

    /// Opens the read transaction; on failure (`SQLITE_BUSY`, with a zero busy timeout)
    /// leaves none open.
    fn hold(&self) -> rusqlite::Result<()> {
        self.conn.prepare_cached("BEGIN")?.execute([])?;
        let read = self
            .conn
            .prepare_cached(READ)
            .and_then(|mut s| s.query_row([], |_| Ok(())));
        if read.is_err() {
            let _ = self
                .conn
                .prepare_cached("ROLLBACK")
                .and_then(|mut s| s.execute([]));
        }
        read
    }

    /// Lets go of the hold, if any. `false` when the transaction is still open after.
    pub(super) fn release(&mut self) -> bool {
        if std::mem::take(&mut self.held) {
            // Ending a read transaction fails only with the connection broken; rolled back
            // then, and the keeper closed if even that leaves it open.
            if self
                .conn
                .prepare_cached("COMMIT")
                .and_then(|mut s| s.execute([]))
                .is_err()
            {
                let _ = self
                    .conn
                    .prepare_cached("ROLLBACK")
                    .and_then(|mut s| s.execute([]));
            }
            self.db.checkpoints().keeper_let_go();
        }
        self.conn.is_autocommit()
    }
}

impl Drop for Keeper {
    /// Ends the transaction before the count says so (closing the connection would end it
    /// too, but only after).
    fn drop(&mut self) {
        let _ = self.release();
    }
}
