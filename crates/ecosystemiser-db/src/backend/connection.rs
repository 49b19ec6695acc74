//! [`EcoConnection`]: a pooled or a direct connection behind one type.

use std::ops::{Deref, DerefMut};

use hive_db_core::PooledConnection;
use hive_db_core::rusqlite::Connection;

use crate::direct::DirectConnection;

#[derive(Debug)]
pub(super) enum Conn {
    Pooled(PooledConnection),
    Direct(DirectConnection),
}

/// A connection of an [`EcoDb`](super::EcoDb). It derefs to [`Connection`]; dropping it returns it to the
/// shared pool, or closes it and frees its direct-connection permit.
#[derive(Debug)]
pub struct EcoConnection(pub(super) Conn);

impl Deref for EcoConnection {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        match &self.0 {
            Conn::Pooled(c) => c,
            Conn::Direct(c) => c,
        }
    }
}

impl DerefMut for EcoConnection {
    fn deref_mut(&mut self) -> &mut Connection {
        match &mut self.0 {
            Conn::Pooled(c) => c,
            Conn::Direct(c) => c,
        }
    }
}
