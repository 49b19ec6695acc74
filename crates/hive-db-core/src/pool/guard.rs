//! `PooledConnection`: the public guard of a checked-out connection.

use std::ops::{Deref, DerefMut};

use rusqlite::Connection;

use super::manager::HiveManager;
use crate::name::DbName;
use crate::stats::CloseReason;

/// A connection checked out of a pool. It derefs to [`rusqlite::Connection`]; dropping it
/// returns it to the pool, unless it is dirty (see the crate docs), in which case it is closed.
///
/// The registry keeps two hooks on pooled connections: a WAL hook (automatic checkpoints) and
/// a commit hook (see [`WriteTx`](crate::WriteTx)). Hooks set through this guard replace
/// them and are themselves replaced the next time the connection runs a `write`.
pub struct PooledConnection {
    pub(super) conn: r2d2::PooledConnection<HiveManager>,
}

impl std::fmt::Debug for PooledConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledConnection")
            .field("db", self.conn.shared.name())
            .field("id", &self.conn.id)
            .finish_non_exhaustive()
    }
}

impl PooledConnection {
    /// The database this connection belongs to.
    pub fn db(&self) -> &DbName {
        self.conn.shared.name()
    }

    /// Which pool this connection belongs to, as a number: the same for every connection of
    /// one open pool, and equal to its [`Pool::key`](super::Pool::key).
    #[inline]
    pub(crate) fn pool_key(&self) -> usize {
        std::sync::Arc::as_ptr(&self.conn.shared).addr()
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
        self.conn.check_in();
        // `self.conn` drops next: r2d2 asks `has_broken`, then pools or closes it.
    }
}
