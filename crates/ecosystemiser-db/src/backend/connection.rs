//! [`EcoConnection`]: a connection of the shared or the private registry's pool.

use std::ops::{Deref, DerefMut};

use hive_db_core::PooledConnection;
use hive_db_core::rusqlite::Connection;

/// A connection of an [`EcoDb`](super::EcoDb). It derefs to [`Connection`]; dropping it
/// returns it to its pool (the shared registry's or the fallback's private one).
#[derive(Debug)]
pub struct EcoConnection(pub(super) PooledConnection);

impl Deref for EcoConnection {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.0
    }
}

impl DerefMut for EcoConnection {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.0
    }
}
