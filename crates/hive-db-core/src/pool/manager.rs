//! Our r2d2 connection manager: connecting never panics outward, connect errors keep their
//! cause, and a connection that is dirty (returned while panicking, inside a transaction,
//! after a failed rollback, after its pool closed, or with its session changed) is discarded
//! instead of pooled.

use std::panic::{AssertUnwindSafe, Location, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use rusqlite::Connection;

use super::session;
use super::shared::PoolShared;
use super::slot::ConnSlot;
use crate::clock::Stamp;
use crate::error::{Error, OpenCause, Result};
use crate::open::{classify_open, configure_connection, open_file};
use crate::stats::CloseReason;

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// A pooled SQLite connection with what the pool needs to know about it.
pub(super) struct HiveConn {
    /// Boxed: r2d2 moves its connections by value on every checkout and return, and a
    /// `rusqlite::Connection` is about 200 bytes.
    pub(super) conn: Box<Connection>,
    /// When it was last checked out (or opened): validation is skipped if this is recent.
    pub(super) last_used: Stamp,
    /// Set when it must not go back to the pool.
    pub(super) discard: Option<CloseReason>,
    pub(super) slot: Arc<ConnSlot>,
    /// The site last written into `slot` (owner's copy, to skip rewriting the same one).
    pub(super) last_site: Option<&'static Location<'static>>,
    pub(super) shared: Arc<PoolShared>,
    pub(super) id: u64,
    /// When it reaches `max_lifetime` ([`Stamp::NEVER`] without one): a checkout from then on
    /// closes it instead of handing it out.
    pub(super) retire_at: Stamp,
}

impl std::fmt::Debug for HiveConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HiveConn")
            .field("db", &self.shared.info().name)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Drop for HiveConn {
    fn drop(&mut self) {
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
        shared.remove_slot(&self.slot);
    }
}

/// The r2d2 manager for one database.
pub(super) struct HiveManager {
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

    /// A new connection with the database's settings, watched for session changes (marked in
    /// `slot`) from then on, so the setup itself is not one.
    fn open(&self, slot: &Arc<ConnSlot>) -> rusqlite::Result<Connection> {
        #[cfg_attr(
            not(test),
            expect(unused_mut, reason = "the test hook takes it mutably")
        )]
        let mut conn = open_file(&self.shared.info().path)?;
        #[cfg(test)]
        if let Some(hook) = self.shared.connect_hook() {
            hook(&mut conn)?;
        }
        configure_connection(&conn, &self.shared.info().config)?;
        session::watch(&conn, Arc::clone(slot))?;
        Ok(conn)
    }
}

impl r2d2::ManageConnection for HiveManager {
    type Connection = HiveConn;
    type Error = Error;

    fn connect(&self) -> Result<HiveConn> {
        let shared = &self.shared;
        let _connecting = shared.connecting();
        let closed = || Error::Closed {
            db: shared.info().name.clone(),
        };
        if shared.is_closed() {
            return Err(closed());
        }
        // Never open another file at the registered path (it would take on the old `-wal`).
        // A missing file is left to SQLite, which will not create it.
        if shared.info().another_file_at_path()
            && let Err(err) = shared.info().check_file()
        {
            let detail = OpenCause::FileChanged.to_string();
            shared.record_connect_error(&err, detail, Some(OpenCause::FileChanged), None);
            return Err(err);
        }
        // A panic escaping into r2d2's worker would leak the pending slot for good.
        let slot = Arc::new(ConnSlot::default());
        match catch_unwind(AssertUnwindSafe(|| self.open(&slot))) {
            Ok(Ok(_)) if shared.is_closed() => Err(closed()),
            Ok(Ok(conn)) => {
                let id = NEXT_CONN_ID.fetch_add(1, Relaxed);
                shared.add_slot(Arc::clone(&slot));
                shared.info().counters.created.fetch_add(1, Relaxed);
                let now = Instant::now();
                tracing::debug!(db = %shared.info().name, id, "connection opened");
                Ok(HiveConn {
                    conn: Box::new(conn),
                    last_used: Stamp::of(now),
                    discard: None,
                    slot,
                    last_site: None,
                    shared: Arc::clone(shared),
                    id,
                    retire_at: shared
                        .info()
                        .config
                        .max_lifetime
                        .map_or(Stamp::NEVER, |l| Stamp::of(now).after(l)),
                })
            }
            Ok(Err(e)) => {
                let err = classify_open(
                    &shared.info().name,
                    &shared.info().path,
                    "open connection",
                    e,
                );
                // The refusal alone (SQLite's message, or the operating system's): the error
                // built from it later names the rest.
                let detail = std::error::Error::source(&err)
                    .map_or_else(|| err.to_string(), ToString::to_string);
                let (cause, code) = match &err {
                    Error::Open { cause, code, .. } => (Some(*cause), *code),
                    other => (None, other.sqlite_code()),
                };
                shared.record_connect_error(&err, detail, cause, code);
                Err(err)
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_owned());
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

    fn is_valid(&self, conn: &mut HiveConn) -> Result<()> {
        validate(&conn.conn).map_err(|e| Error::sqlite(&self.shared.info().name, "validate", e))
    }

    fn has_broken(&self, conn: &mut HiveConn) -> bool {
        if conn.discard.is_some() {
            return true;
        }
        let shared = &self.shared;
        if std::thread::panicking() {
            tracing::warn!(db = %shared.info().name, id = conn.id, "connection returned by a panicking thread; discarded");
        } else if !conn.conn.is_autocommit() {
            tracing::warn!(
                db = %shared.info().name,
                id = conn.id,
                "connection returned inside an open transaction; its uncommitted work is rolled back and the connection discarded"
            );
        } else if shared.is_closed() {
            conn.discard = Some(CloseReason::PoolClosed);
            return true;
        } else if conn.slot.session_changed() {
            tracing::debug!(
                db = %shared.info().name,
                id = conn.id,
                "connection returned with its session changed (a PRAGMA, a temporary object or an attached database); closed"
            );
            conn.discard = Some(CloseReason::SessionChanged);
            return true;
        } else {
            return false;
        }
        conn.discard = Some(CloseReason::Broken);
        true
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
