//! [`PgConnection`]: the public guard of a checked-out PostgreSQL client.

use std::ops::{Deref, DerefMut};

use postgres::Client;

use super::manager::PgManager;
use crate::name::DbName;
use crate::pool::Lease;
use crate::stats::CloseReason;

/// A PostgreSQL client checked out of a pool. It derefs to [`postgres::Client`]; dropping it
/// returns it to the pool reset (`DISCARD ALL`), or closes it: when it is closed, when an
/// error marked it, when a transaction is left open, or when its thread panics.
///
/// Like every `postgres::Client`, it must not be used from inside a tokio runtime.
pub struct PgConnection {
    /// Its drop runs the return checks (the reset), then pools or closes the client.
    conn: Lease<PgManager>,
}

impl std::fmt::Debug for PgConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConnection")
            .field("db", &self.conn.shared.info().name)
            .field("id", &self.conn.id)
            .finish_non_exhaustive()
    }
}

impl PgConnection {
    pub(super) fn new(conn: Lease<PgManager>) -> Self {
        Self { conn }
    }

    /// The database this client belongs to.
    pub fn db(&self) -> &DbName {
        &self.conn.shared.info().name
    }

    /// Marks the client so that it is closed instead of pooled when dropped (after an error
    /// that says its connection can no longer be trusted, say).
    pub fn discard(&mut self) {
        self.conn.discard = Some(CloseReason::Broken);
    }
}

impl Deref for PgConnection {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.conn.conn
    }
}

impl DerefMut for PgConnection {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.conn.conn
    }
}
