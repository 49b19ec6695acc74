//! Our r2d2 connection manager: connecting never panics outward, connect errors keep their
//! cause, and a connection that is dirty (returned while panicking, inside a transaction,
//! after a failed rollback, after its pool closed, or with its session changed by its
//! borrower) is discarded instead of pooled.

use std::panic::{AssertUnwindSafe, Location, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use rusqlite::Connection;

use super::info::{DbInfo, OpenFailed};
use super::session;
use super::shared::{Permanent, PoolShared};
use super::slot::ConnSlot;
use crate::clock::{Stamp, coarse_now};
use crate::error::{Error, Result};
use crate::open::{classify_open, configure_connection};
use crate::stats::CloseReason;

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// What an engine's connection does as its pool closes it, just before it is dropped.
pub(crate) trait Closing {
    /// Called once, as the pooled connection holding it is dropped.
    fn closing(&mut self, info: &DbInfo);
}

impl Closing for Box<Connection> {
    /// When the file at the path is no longer the one this connection has open (renamed,
    /// replaced, deleted), copies the WAL into the file it has open and empties it first.
    /// SQLite skips the last connection's checkpoint for a moved file and leaves the `-wal`
    /// at the old path: the renamed file lost the commits still in it, and whatever file
    /// came to the path (a restore by `mv`) replayed them over its own content. One `stat`
    /// per close; connections close rarely.
    fn closing(&mut self, info: &DbInfo) {
        if info.check_file().is_err() {
            // A short wait for readers and writers to let go, not the pool's busy timeout:
            // `close_all` with a long read still out would otherwise wait that long for
            // each connection it closes. A checkpoint that cannot finish here is finished
            // by the next connection to close.
            let _ = self.busy_timeout(std::time::Duration::from_millis(100));
            let _ = self.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        }
    }
}

/// A pooled connection (SQLite's by default; the `postgres` feature's pool keeps its clients
/// in it too) with what the pool needs to know about it.
pub(crate) struct HiveConn<C: Closing = Box<Connection>> {
    /// Boxed for SQLite: r2d2 moves its connections by value on every checkout and return,
    /// and a `rusqlite::Connection` is about 200 bytes.
    pub(crate) conn: C,
    /// When it was last checked out (or opened): validation is skipped if this is recent.
    pub(crate) last_used: Stamp,
    /// Set when it must not go back to the pool.
    pub(crate) discard: Option<CloseReason>,
    pub(crate) slot: Arc<ConnSlot>,
    /// The site last written into `slot` (owner's copy, to skip rewriting the same one).
    pub(crate) last_site: Option<&'static Location<'static>>,
    pub(crate) shared: Arc<PoolShared>,
    pub(crate) id: u64,
    /// When it was last known good: opened, or passed a check since. A connection known good
    /// only before [`PoolShared::suspect_since`] is checked before its next checkout.
    pub(crate) trusted_at: Stamp,
    /// When it reaches `max_lifetime` ([`Stamp::NEVER`] without one): a checkout from then on
    /// closes it instead of handing it out.
    pub(crate) retire_at: Stamp,
    /// Set when the bag hands r2d2 a connection its return checks found clean: r2d2's
    /// `has_broken` then skips the engine's check (PostgreSQL's is a round trip).
    pub(crate) checked_clean: bool,
    /// Takes the slot out of the pool's list when dropped: after `conn`, which is declared
    /// first and so dropped first (see [`Leaving`]).
    _leaving: Leaving,
}

/// Takes a connection's slot out of its pool's list, for `close`'s wait, once the connection
/// itself is closed. Taken out before, `close` returned while a connection dropped on
/// another thread (the background checkpoint's, say) was still closing: SQLite's close of
/// the last connection copies the WAL into the file and deletes it, so the file was still
/// being written after `close` had returned and reported nothing out.
struct Leaving {
    shared: Arc<PoolShared>,
    slot: Arc<ConnSlot>,
}

impl Drop for Leaving {
    fn drop(&mut self) {
        self.shared.remove_slot(&self.slot);
    }
}

impl<C: Closing> std::fmt::Debug for HiveConn<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HiveConn")
            .field("db", &self.shared.info().name)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl<C: Closing> HiveConn<C> {
    /// A connection just opened for the pool of `shared`: counted, given a slot and an id.
    pub(crate) fn opened(conn: C, shared: &Arc<PoolShared>) -> Self {
        let id = NEXT_CONN_ID.fetch_add(1, Relaxed);
        let slot = shared.add_slot();
        shared.info().counters.created.fetch_add(1, Relaxed);
        let now = Instant::now();
        tracing::debug!(db = %shared.info().name, id, "connection opened");
        Self {
            conn,
            last_used: Stamp::of(now),
            discard: None,
            slot: Arc::clone(&slot),
            last_site: None,
            shared: Arc::clone(shared),
            id,
            trusted_at: Stamp::of(now),
            retire_at: shared
                .info()
                .config
                .max_lifetime
                .map_or(Stamp::NEVER, |l| Stamp::of(now).after(l)),
            checked_clean: false,
            _leaving: Leaving {
                shared: Arc::clone(shared),
                slot: Arc::clone(&slot),
            },
        }
    }

    /// Marks the checkout over in the connection's slot (the lease's drop), records how long
    /// it was held, on the coarse clock (a return reads no clock), and notes the return of one
    /// reported as a possible leak.
    #[inline]
    pub(crate) fn check_in(&self) {
        let (held, leak) = self.slot.check_in(coarse_now());
        if let Some(held) = held {
            self.shared.info().counters.hold_time.record(held);
        }
        if let Some(leak) = leak {
            tracing::info!(
                db = %self.shared.info().name,
                held = ?leak.at.elapsed(),
                site = %leak.site,
                "connection reported as a possible leak was returned"
            );
        }
    }

    /// r2d2's `has_broken` for every engine: the engine's return check `check`, unless the bag
    /// ran it already on this return (then only the checks that cost nothing).
    pub(crate) fn has_broken(&mut self, check: impl FnOnce(&mut Self) -> bool) -> bool {
        if std::mem::take(&mut self.checked_clean) {
            return self.broken_on_return(None);
        }
        check(self)
    }

    /// `true`, with the reason set, when the connection must not go back to the pool for a
    /// reason that does not depend on the engine: its thread panics, or its pool is closed.
    /// `dirty` names an engine's own reason (an open transaction, say), logged as broken.
    pub(crate) fn broken_on_return(&mut self, dirty: Option<&str>) -> bool {
        if self.discard.is_some() {
            return true;
        }
        let shared = &self.shared;
        if std::thread::panicking() {
            tracing::warn!(db = %shared.info().name, id = self.id, "connection returned by a panicking thread; discarded");
        } else if let Some(why) = dirty {
            tracing::warn!(db = %shared.info().name, id = self.id, "connection returned {why}; discarded");
        } else if shared.is_closed() {
            self.discard = Some(CloseReason::PoolClosed);
            return true;
        } else if self.slot.session_changed() {
            tracing::debug!(
                db = %shared.info().name,
                id = self.id,
                "connection returned with its session changed (a PRAGMA, a temporary object or an attached database); closed"
            );
            self.discard = Some(CloseReason::SessionChanged);
            return true;
        } else {
            return false;
        }
        self.discard = Some(CloseReason::Broken);
        true
    }
}

impl<C: Closing> Drop for HiveConn<C> {
    fn drop(&mut self) {
        self.slot.mark_closing();
        self.conn.closing(self.shared.info());
        let shared = &self.shared;
        let reason = self.discard.unwrap_or_else(|| {
            if shared.is_closed() {
                CloseReason::PoolClosed
            } else if Stamp::of(Instant::now()) >= self.retire_at {
                CloseReason::Lifetime
            } else {
                CloseReason::IdleTimeout
            }
        });
        shared.info().counters.count_close(reason);
        tracing::debug!(db = %shared.info().name, id = self.id, ?reason, "connection closed");
        // The slot leaves the pool's list with `_leaving`, once `conn` is closed.
    }
}

/// The r2d2 manager for one database.
pub(crate) struct HiveManager {
    shared: Arc<PoolShared>,
}

impl std::fmt::Debug for HiveManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HiveManager")
            .field("db", &self.shared.info().name)
            .finish_non_exhaustive()
    }
}

impl HiveManager {
    pub(super) fn new(shared: Arc<PoolShared>) -> Self {
        Self { shared }
    }

    /// A new connection with the database's settings, on the registered file (see
    /// [`DbInfo::open_registered`]).
    fn open(&self) -> std::result::Result<Box<Connection>, OpenFailed> {
        let info = self.shared.info();
        let mut conn = Box::new(info.open_registered()?);
        #[cfg(test)]
        let injected = self
            .shared
            .connect_hook()
            .map_or(Ok(()), |hook| hook(&mut conn));
        #[cfg(not(test))]
        let injected = Ok(());
        let configured = injected.and_then(|()| configure_connection(&conn, &info.config));
        if let Err(e) = configured {
            // It may have read (the PRAGMAs read the schema): closed as a pooled one is.
            conn.closing(info);
            return Err(OpenFailed::Sqlite(e));
        }
        Ok(conn)
    }
}

impl r2d2::ManageConnection for HiveManager {
    type Connection = HiveConn;
    type Error = Error;

    fn connect(&self) -> Result<HiveConn> {
        let shared = &self.shared;
        // Never a connection on another file at the registered path (it would take on the
        // old `-wal`): `open` looks. A missing file is left to SQLite, which will not create
        // it.
        let conn = connect_guarded(
            shared,
            || self.open(),
            |failed| match failed {
                OpenFailed::Sqlite(e) => classify_open(
                    &shared.info().name,
                    &shared.info().path,
                    "open connection",
                    e,
                ),
                OpenFailed::Moved(err) => err,
            },
        )?;
        // Watched from now on, so the registry's own setup is not a session change.
        session::watch(&conn.conn, Arc::clone(&conn.slot))
            .map_err(|e| Error::sqlite(&shared.info().name, "watch the session", e))?;
        Ok(conn)
    }

    fn is_valid(&self, conn: &mut HiveConn) -> Result<()> {
        validate(&conn.conn).map_err(|e| Error::sqlite(&self.shared.info().name, "validate", e))
    }

    fn has_broken(&self, conn: &mut HiveConn) -> bool {
        conn.has_broken(Self::return_check)
    }
}

impl HiveManager {
    /// SQLite's return check (`Engine::broken_on_return`).
    #[inline]
    pub(super) fn return_check(conn: &mut HiveConn) -> bool {
        // Asked only when nothing else marked it; both are cheap reads of the connection's
        // state. A transaction still open outside autocommit is a `BEGIN` not ended; one
        // open inside it is a statement still running (stepped, then leaked with
        // `mem::forget`), which holds a read transaction: the next borrower would read
        // that old snapshot, and no checkpoint could pass it.
        let dirty = if conn.discard.is_some() {
            None
        } else if !conn.conn.is_autocommit() {
            Some("inside an open transaction (its uncommitted work is rolled back)")
        } else if !matches!(
            conn.conn.transaction_state(None::<&str>),
            Ok(rusqlite::TransactionState::None)
        ) {
            Some("with a statement still running (its read transaction open)")
        } else {
            None
        };
        conn.broken_on_return(dirty)
    }
}

/// Opens a connection of the pool of `shared` with `open`, and `failed` turns its error into
/// ours: counted as a connect in progress (for `close`), refused once the pool is closed, a
/// panic in `open` turned into an error (one escaping into r2d2's worker would leak the pending
/// slot for good), and a failure recorded for the callers that wait.
pub(crate) fn connect_guarded<C: Closing, E>(
    shared: &Arc<PoolShared>,
    open: impl FnOnce() -> std::result::Result<C, E>,
    failed: impl FnOnce(E) -> Error,
) -> Result<HiveConn<C>> {
    let _connecting = shared.connecting();
    let closed = || Error::Closed {
        db: shared.info().name.clone(),
    };
    if shared.is_closed() {
        return Err(closed());
    }
    match catch_unwind(AssertUnwindSafe(open)) {
        Ok(Ok(mut conn)) if shared.is_closed() => {
            conn.closing(shared.info());
            Err(closed())
        }
        Ok(Ok(conn)) => Ok(HiveConn::opened(conn, shared)),
        Ok(Err(e)) => {
            let err = failed(e);
            // The refusal alone (SQLite's message, the server's, or the operating system's):
            // the error built from it later names the rest.
            let detail = match &err {
                // The client's message is a heading ("error connecting to server"); the
                // cause under it says what happened.
                #[cfg(feature = "postgres")]
                Error::Postgres { source, .. } => crate::error::error_chain(source),
                // Our own refusal (a file renamed over the path): its cause says it all.
                Error::Open {
                    cause,
                    source: None,
                    ..
                } => cause.to_string(),
                _ => std::error::Error::source(&err)
                    .map_or_else(|| err.to_string(), ToString::to_string),
            };
            let (cause, code) = match &err {
                Error::Open { cause, code, .. } => (Some(Permanent::File(*cause)), *code),
                Error::Refused { cause, code, .. } => {
                    (Some(Permanent::Server(*cause, code.clone())), None)
                }
                other => (None, other.sqlite_code()),
            };
            shared.record_connect_error(&err, detail, cause, code);
            Err(err)
        }
        Err(panic) => {
            let message = crate::sync::panic_message(&*panic);
            let detail = format!("opening a connection panicked: {message}");
            let err = Error::ConnectPanicked {
                db: shared.info().name.clone(),
                message,
            };
            shared.record_connect_error(&err, detail, None, None);
            Err(err)
        }
    }
}

/// The check a connection idle for longer than `validate_after_idle` passes before checkout.
pub(super) fn validate(conn: &Connection) -> rusqlite::Result<()> {
    conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
        .map(drop)
}

#[cfg(test)]
mod tests {
    /// Bug caught: the connection stored inline again. r2d2 moves every pooled connection by
    /// value on each checkout and return, and profiles showed those copies (over 300 bytes
    /// with the connection inline) in the point-read path.
    #[test]
    fn a_pooled_connection_is_cheap_to_move() {
        let pooled = std::mem::size_of::<r2d2::PooledConnection<super::HiveManager>>();
        assert!(pooled <= 192, "r2d2's pooled connection is {pooled} bytes");
        assert!(std::mem::size_of::<super::HiveConn>() <= 96);
    }
}
