//! [`Engine`]: what a pool needs of an engine beyond r2d2's manager. SQLite's is in
//! `checkout.rs`, PostgreSQL's in `crate::pg`.

use std::time::Duration;

use super::manager::{Closing, HiveConn};

/// What a pool needs of an engine beyond r2d2's manager: the check of a connection that sat
/// idle past `validate_after_idle`, and the check of a returned one.
pub(crate) trait Engine:
    r2d2::ManageConnection<Connection = HiveConn<Self::Conn>, Error = crate::error::Error>
{
    /// The engine's connection, kept in a [`HiveConn`].
    type Conn: Closing + Send + 'static;

    /// The most r2d2 waits between two attempts to open a connection after a failure is
    /// half of this (it doubles the pause from 400 ms up to that). `None`: the database's
    /// `connection_timeout`. A server that comes back (a restart, a failover) is found
    /// within that pause of its return.
    const RECONNECT_CAP: Option<Duration> = None;

    /// Threads of the pool's own that open its connections, or 0 for the threads every pool
    /// of the process shares. A server on the network can hold a connect until its timeout:
    /// on the shared threads, a few such connects would stop every other pool from opening
    /// connections meanwhile.
    const OWN_CONNECT_THREADS: usize = 0;

    /// `Err` (with why, for the log) when the idle connection must be closed, not handed out.
    fn validate_idle(conn: &mut HiveConn<Self::Conn>) -> std::result::Result<(), String>;

    /// The return check: `true`, with `discard` set, when the returned connection must be
    /// closed rather than handed out again (dirty, or its pool closed).
    fn broken_on_return(conn: &mut HiveConn<Self::Conn>) -> bool;
}
