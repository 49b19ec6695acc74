//! The r2d2 manager of PostgreSQL clients: connect bounded by the connect timeout, validation
//! bounded by `Client::is_valid`, and the return rules (a client goes back only clean: not
//! closed, not marked by a connection-class error, no transaction open, session reset), with
//! the SQLSTATE classes that decide them.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::mpsc;
use std::time::Duration;

use postgres::NoTls;

use super::client::PgClient;
use crate::error::{Error, Result};
use crate::pool::{DbInfo, Engine, HiveConn, PoolShared, connect_guarded};

/// A pooled PostgreSQL client.
pub(super) type PgConn = HiveConn<PgClient>;

/// Connects of one pool that may be under way at once, each on a thread of its own: one
/// whose server never answers is given up after `connection_timeout`, its thread left to end
/// when the server answers or the connection drops; past this many, a connect fails at once.
const MAX_CONNECTS_UNDER_WAY: usize = 3;

/// The r2d2 manager for one PostgreSQL database.
pub(crate) struct PgManager {
    shared: Arc<PoolShared>,
    config: postgres::Config,
    /// Connect threads started and not ended.
    under_way: Arc<AtomicUsize>,
}

impl std::fmt::Debug for PgManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgManager")
            .field("db", &self.shared.info().name)
            .finish_non_exhaustive()
    }
}

impl PgManager {
    pub(super) fn new(shared: Arc<PoolShared>, config: postgres::Config) -> Self {
        Self {
            shared,
            config,
            under_way: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A new client, within `connection_timeout` whatever the server does
    /// ([`connect_within_timeout`]).
    fn connect_within_timeout(&self) -> Result<PgClient> {
        connect_within_timeout(self.shared.info(), &self.config, &self.under_way).map(PgClient::new)
    }
}

/// What resets a returned client's session: settings, temporary tables, prepared statements,
/// listeners, advisory locks. It fails inside a transaction block (open or failed), which is
/// how a transaction left open is found.
const RESET: &str = "DISCARD ALL";

impl r2d2::ManageConnection for PgManager {
    type Connection = PgConn;
    type Error = Error;

    fn connect(&self) -> Result<PgConn> {
        let shared = &self.shared;
        connect_guarded(shared, || self.connect_within_timeout(), |e| e)
    }

    fn is_valid(&self, conn: &mut PgConn) -> Result<()> {
        conn.conn
            .is_valid(self.shared.info().config.connection_timeout)
            .map_err(|e| pg_error(&self.shared.info().name, "validate", e))
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.has_broken(<Self as Engine>::broken_on_return)
    }
}

impl Engine for PgManager {
    type Conn = PgClient;

    /// Attempts every 500 ms at most while a server is away: writes resume within that of a
    /// restart's end or a standby's promotion.
    const RECONNECT_CAP: Option<Duration> = Some(Duration::from_secs(1));

    /// Two threads per server's pool (connections open two at a time, as a pool refills
    /// after a failover): a stopped server's connects (each up to `connection_timeout`)
    /// wait there, not on the threads SQLite's pools and the other servers' share.
    const OWN_CONNECT_THREADS: usize = 2;

    fn validate_idle(conn: &mut PgConn) -> std::result::Result<(), String> {
        let timeout = conn.shared.info().config.connection_timeout;
        conn.conn.is_valid(timeout).map_err(|e| e.to_string())
    }

    fn broken_on_return(conn: &mut PgConn) -> bool {
        let skip = conn.discard.is_some() || std::thread::panicking() || conn.shared.is_closed();
        let dirty = if skip {
            None
        } else if conn.conn.is_closed() {
            Some("after its server connection closed")
        } else if let Err(e) = conn.conn.batch_execute(RESET) {
            tracing::debug!(db = %conn.shared.info().name, id = conn.id, error = %e, "session reset failed");
            Some("with a transaction open or a session that could not be reset")
        } else {
            // The reset dropped the server's prepared statements, the client's cached type
            // lookups among them.
            conn.conn.clear_type_cache();
            // And `UNLISTEN *`; but notifications the client had received already wait in
            // its own buffer, where the next borrower would read another's (a tenant's
            // channel, say). Emptied after the reset, whose round trip may bring more;
            // `iter` only reads what is buffered, it never waits.
            let mut notifications = conn.conn.notifications();
            let mut left = notifications.iter();
            while let Ok(Some(_)) = postgres::fallible_iterator::FallibleIterator::next(&mut left) {
            }
            None
        };
        conn.broken_on_return(dirty)
    }
}

/// A new client of `config`'s server for `info`'s database, within its `connection_timeout`
/// whatever the server does. The client's own `connect_timeout` bounds only the TCP connect:
/// a server whose postmaster is stopped (`SIGSTOP`, a hung host) still has its kernel accept
/// the connection and acknowledge what is sent, and the startup exchange then waits for
/// good. So the connect runs on a thread of its own; given up on, that thread ends when the
/// server answers or the connection drops, and `under_way` (its threads not ended) keeps more
/// than [`MAX_CONNECTS_UNDER_WAY`] from piling up.
///
/// # Errors
///
/// [`Error::Io`] (timed out) when the server did not answer in time or too many connects
/// wait for it; the connect's own error otherwise ([`connect_error`]).
pub(super) fn connect_within_timeout(
    info: &DbInfo,
    config: &postgres::Config,
    under_way: &Arc<AtomicUsize>,
) -> Result<postgres::Client> {
    let bound = info.config.connection_timeout;
    let stalled = |why: String| Error::Io {
        db: info.name.clone(),
        op: "cannot connect to",
        path: info.path.clone(),
        source: std::io::Error::new(std::io::ErrorKind::TimedOut, why),
    };
    if under_way.fetch_add(1, SeqCst) >= MAX_CONNECTS_UNDER_WAY {
        under_way.fetch_sub(1, SeqCst);
        return Err(stalled(format!(
            "{MAX_CONNECTS_UNDER_WAY} connects are still waiting for the server to answer \
             their startup"
        )));
    }
    let (tx, rx) = mpsc::sync_channel(1);
    let config = config.clone();
    let ending = Arc::clone(under_way);
    let spawned = std::thread::Builder::new()
        .name("hive-pg-connect".to_owned())
        .spawn(move || {
            let _ended = crate::sync::defer(|| {
                ending.fetch_sub(1, SeqCst);
            });
            // Given up on, the client is dropped here, which closes it.
            let _ = tx.send(config.connect(NoTls));
        });
    if let Err(source) = spawned {
        under_way.fetch_sub(1, SeqCst);
        return Err(Error::Io {
            db: info.name.clone(),
            op: "cannot start a thread to connect to",
            path: info.path.clone(),
            source,
        });
    }
    match rx.recv_timeout(bound) {
        Ok(connected) => connected.map_err(|e| connect_error(info, e)),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(stalled(format!(
            "the server did not finish a connection's startup within {bound:?} (it accepted \
             the TCP connection: a stopped or hung server process?)"
        ))),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(stalled(
            "the connect's thread ended without an answer".to_owned(),
        )),
    }
}

/// A connect error as ours: [`Error::Refused`] when waiting cannot fix it (a refused login, a
/// missing database, a server that wants TLS), else [`Error::Postgres`].
pub(super) fn connect_error(info: &DbInfo, e: postgres::Error) -> Error {
    match super::server::refusal(&e) {
        Some(cause) => Error::Refused {
            db: info.name.clone(),
            target: info.path.clone(),
            cause,
            code: e.code().map(|c| c.code().to_owned()),
            source: Some(Box::new(e)),
        },
        None => pg_error(&info.name, "connect", e),
    }
}

/// The client's error as ours, naming the database, with the SQLSTATE.
pub(super) fn pg_error(db: &crate::name::DbName, op: &'static str, e: postgres::Error) -> Error {
    Error::Postgres {
        db: db.clone(),
        op,
        code: e.code().map(|c| c.code().to_owned()),
        source: e,
    }
}

/// The SQLSTATE of `e`, if the server sent one.
fn sqlstate(e: &postgres::Error) -> Option<&str> {
    e.code().map(postgres::error::SqlState::code)
}

/// Whether `e` says the connection can no longer be trusted, so it must be closed at once,
/// never handed on: the client is closed, its socket failed, or the server reported a connection exception
/// (class 08), a shutdown (57P01 admin, 57P02 crash, 57P03 cannot connect now), or a
/// read-only transaction (25006: a standby, after a switchover).
pub(super) fn breaks_connection(e: &postgres::Error) -> bool {
    e.is_closed()
        || io_failure(e)
        || sqlstate(e).is_some_and(|code| {
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "25006")
        })
}

/// Whether `e` is the socket's own failure (a reset, a broken pipe, a timeout of
/// `tcp_user_timeout`), with no word from the server: the connection is gone as surely as
/// when the client saw it close.
fn io_failure(e: &postgres::Error) -> bool {
    if e.code().is_some() {
        return false;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Whether `e` is a standby refusing a write (25006, read-only transaction). On the primary
/// that means the server was demoted (see [`breaks_connection`]); on a replica it is the
/// closure's own doing, a write in a read, and the replica is as well as ever.
pub(super) fn refused_as_a_write(e: &postgres::Error) -> bool {
    sqlstate(e) == Some("25006")
}

/// The SQLSTATE if `e` is a serialization failure (40001) or a deadlock (40P01): the
/// transaction may succeed if run again.
pub(super) fn retryable(e: &postgres::Error) -> Option<&str> {
    sqlstate(e).filter(|code| matches!(*code, "40001" | "40P01"))
}
