//! `PooledConnection`: the public guard of a checked-out connection.

use std::ops::{Deref, DerefMut};

use rusqlite::Connection;

use super::Lease;
use super::manager::HiveManager;
use crate::name::DbName;
use crate::stats::CloseReason;

/// A connection checked out of a pool. It derefs to [`rusqlite::Connection`]; dropping it
/// returns it to the pool, unless it is dirty (see the crate docs), in which case it is closed.
///
/// A connection whose session was changed through SQL is dirty too, so that the next borrower
/// gets the configured settings: a PRAGMA that sets something (`PRAGMA query_only = ON`,
/// `PRAGMA foreign_keys = OFF`, `PRAGMA busy_timeout = 0`, ...), a temporary table, index,
/// view or trigger, `ATTACH` or `DETACH`. Read-only PRAGMAs (`PRAGMA user_version`,
/// `PRAGMA table_info(t)`), maintenance (`PRAGMA optimize`, `PRAGMA wal_checkpoint`) and
/// writes of the file's header (`PRAGMA user_version = 3`) are not. The check is SQLite's
/// authorizer, which sees a statement when it is prepared. Changes made through rusqlite's
/// own methods rather than SQL ([`Connection::busy_timeout`], `set_db_config`, limits,
/// functions) are not seen: restore them, or call [`discard`](Self::discard).
/// One change is refused outright ("not authorized"): taking the file out of WAL mode
/// (`PRAGMA journal_mode = DELETE`), which outlives the connection.
///
/// The registry keeps three hooks on pooled connections: a WAL hook (automatic checkpoints), a
/// commit hook (see [`WriteTx`](crate::WriteTx)) and the authorizer. Hooks set through this
/// guard replace them; the first two are replaced again the next time the connection runs a
/// `write`. Replace the authorizer only on a connection you then discard.
pub struct PooledConnection {
    /// Its drop returns the connection (see `bag.rs`).
    pub(super) conn: Lease<HiveManager>,
}

impl std::fmt::Debug for PooledConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledConnection")
            .field("db", &self.conn.shared.info().name)
            .field("id", &self.conn.id)
            .finish_non_exhaustive()
    }
}

impl PooledConnection {
    /// The database this connection belongs to.
    pub fn db(&self) -> &DbName {
        &self.conn.shared.info().name
    }

    /// Which pool this connection belongs to, as a number: the same for every connection of
    /// one open pool, and equal to its [`Pool::key`](super::Pool::key).
    /// The facts of the connection's database.
    pub(crate) fn info(&self) -> &std::sync::Arc<super::DbInfo> {
        self.conn.shared.info()
    }

    #[inline]
    pub(crate) fn pool_key(&self) -> usize {
        std::sync::Arc::as_ptr(&self.conn.shared).addr()
    }

    /// Marks the connection so that it is closed instead of pooled when dropped.
    pub fn discard(&mut self) {
        self.conn.discard = Some(CloseReason::Broken);
    }

    /// Whether a statement prepared on it changed what its next user would inherit (see the
    /// type's docs); it is then closed when dropped.
    #[inline]
    pub(crate) fn session_changed(&self) -> bool {
        self.conn.slot.session_changed()
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
