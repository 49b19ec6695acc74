//! [`PgHandle`]: the public face of a PostgreSQL database, with typed `read` and `write`.

use std::panic::Location;
use std::path::Path;
use std::sync::Arc;

use postgres::{Client, Transaction};

use super::PgDatabase;
use super::guard::PgConnection;
use crate::error::{Error, Result};
use crate::name::DbName;
use crate::stats::DbSnapshot;

/// One PostgreSQL database of a registry, from
/// [`Registry::postgres`](crate::Registry::postgres). Cloning is cheap.
///
/// Closures get the `postgres` crate's own types: a [`Client`] to read, a [`Transaction`] to
/// write. There is no writer lane: the server orders concurrent writers itself.
///
/// Each client runs its own current-thread tokio runtime, so none of these methods may be
/// called from inside a tokio runtime (an async task, or a `block_on`): the client panics
/// there. From async code, call them in `tokio::task::spawn_blocking`. Dropping a handle,
/// or the registry, is safe anywhere: pooled clients are closed on threads of their own.
///
/// What is bounded: the wait for a client (`connection_timeout`), a connect (its timeout,
/// at most `connection_timeout`), and a server host that goes away mid-call (TCP
/// `tcp_user_timeout` and keepalives, about `connection_timeout` unless the connection
/// string sets its own). What is not: a statement on a server that is up but does not
/// answer (a backend stopped or stuck, its host alive), for the sync client has no
/// client-side bound on a statement; that includes the `DISCARD ALL` that resets a client
/// as it is returned. Bound slow statements on the server (`statement_timeout`,
/// `lock_timeout` in the connection string's `options`).
///
/// A handle keeps working until its database is closed; after that it fails with
/// [`Error::Closed`], even if the name is registered again (take a new handle then).
#[derive(Clone)]
pub struct PgHandle(pub(crate) Arc<PgDatabase>);

impl std::fmt::Debug for PgHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PgHandle")
            .field(&self.0.info().name)
            .finish()
    }
}

impl PgHandle {
    /// The database's name.
    pub fn name(&self) -> &DbName {
        &self.0.info().name
    }

    /// Where it is, as `postgres://user@host:port/db`: never the password.
    pub fn target(&self) -> &Path {
        &self.0.info().path
    }

    /// Checks out a client of the primary, waiting up to `connection_timeout`. The caller's location is
    /// recorded for leak reports. On return it is reset (`DISCARD ALL`) before the next
    /// borrower gets it, or closed when that fails (a transaction left open, say).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`]; [`Error::Timeout`] naming the database, with the pool's counts and
    /// the last connect error (a server that refuses connections, say).
    #[track_caller]
    pub fn get(&self) -> Result<PgConnection> {
        self.0.checkout(Location::caller())
    }

    /// Runs `f` with a client: of a read replica that is up and within
    /// [`PgConfig::max_replica_lag`](super::PgConfig::max_replica_lag) of the primary, taken
    /// in turn, else of the primary. So `f` may see data up to that bound older than the
    /// primary's (use [`PgHandle::read_primary`] to read one's own writes). Without replicas,
    /// every read goes to the primary.
    ///
    /// **`f` may run twice.** When a replica breaks the connection during `f`, or cancels its
    /// statement for a conflict with the replay of the primary's changes (SQLSTATE 40001),
    /// the replica is skipped and `f` runs again on the primary. A read that waits more than
    /// 250 ms for a replica's connection goes to the primary too. A write in `f` that a
    /// replica refuses (read-only transaction, 25006) is `f`'s error: it is not run again on
    /// the primary, where it would write.
    ///
    /// An error `f` returns comes back as [`Error::Postgres`] naming the database, with the
    /// SQLSTATE; one that says the connection is gone (class 08, a server shutdown
    /// 57P01-57P03, or on the primary a read-only transaction 25006: it was demoted) also
    /// closes the connection instead of pooling it, and has the pool's other connections
    /// checked before their next use.
    ///
    /// # Errors
    ///
    /// Those of [`PgHandle::get`], and [`Error::Postgres`] for the error `f` returns.
    #[track_caller]
    pub fn read<T>(&self, f: impl FnMut(&mut Client) -> Result<T, postgres::Error>) -> Result<T> {
        self.0.read(Location::caller(), f)
    }

    /// [`PgHandle::read`] on the primary, always: it sees every write that has returned.
    ///
    /// # Errors
    ///
    /// Those of [`PgHandle::get`], and [`Error::Postgres`] for the error `f` returns.
    #[track_caller]
    pub fn read_primary<T>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T> {
        self.0.read_primary(Location::caller(), f)
    }

    /// [`PgHandle::read`] for a closure of the caller's own error type `E`, which the
    /// registry's errors convert into. `f` runs once, on a replica or the primary as for
    /// `read`; its error comes back as it was (the registry cannot see into it: a broken
    /// connection is found when it is returned).
    ///
    /// # Errors
    ///
    /// Those of [`PgHandle::get`], converted into `E`, and whatever `f` returns.
    #[track_caller]
    pub fn read_with<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, E>,
    ) -> Result<T, E> {
        self.0.read_with(Location::caller(), f)
    }

    /// Runs `f` in a transaction (the server's default isolation; `f` may begin with `SET
    /// TRANSACTION ISOLATION LEVEL ..`). Its work commits when `f` returns `Ok`, and `write`
    /// returns once it has; it is rolled back when `f` returns `Err` or panics. If a
    /// statement's error aborted the transaction and `f` returned `Ok` anyway, nothing can
    /// commit: `write` fails with [`Error::Postgres`] (SQLSTATE 25P02) rather than answer
    /// `Ok` for work PostgreSQL rolled back.
    ///
    /// **`f` may run more than once.** When the server fails the transaction for a
    /// serialization failure or a deadlock (SQLSTATE 40001, 40P01), in `f` or at commit, the
    /// work is rolled back and `f` runs again in a new transaction, after a pause with
    /// jitter, up to [`PgConfig::write_retries`](super::PgConfig::write_retries) times; each
    /// re-run is counted in the snapshot's `totals.write_retries`. So `f` must do nothing
    /// outside the transaction that may not be repeated, and must not keep state across
    /// runs it would not want doubled.
    ///
    /// # Errors
    ///
    /// Those of [`PgHandle::get`]; [`Error::Postgres`] when the transaction cannot begin or
    /// commit, or for the error `f` returns; [`Error::WriteConflict`] when every attempt
    /// failed for a serialization failure or deadlock.
    #[track_caller]
    pub fn write<T>(
        &self,
        f: impl FnMut(&mut Transaction<'_>) -> Result<T, postgres::Error>,
    ) -> Result<T> {
        self.0.write(Location::caller(), f)
    }

    /// [`PgHandle::write`] for a closure of the caller's own error type `E`. `f`'s error comes
    /// back as it was, and its work is rolled back; the registry cannot see into it, so only
    /// a serialization failure or deadlock reported at begin or commit re-runs `f` (return
    /// `postgres::Error` and use [`PgHandle::write`] to have those inside `f` re-run too).
    ///
    /// # Errors
    ///
    /// Those of [`PgHandle::write`] other than `f`'s, converted into `E`, and whatever `f`
    /// returns.
    #[track_caller]
    pub fn write_with<T, E: From<Error>>(
        &self,
        f: impl FnMut(&mut Transaction<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.0.write_with(Location::caller(), f)
    }

    /// A client of the primary of its own, outside the pool: for what must outlive a borrow
    /// (a `LISTEN` that waits for notifications, a long `COPY`). It connects as the pool
    /// does (the registered hosts and `target_session_attrs`, the connect timeout, the
    /// database's name as `application_name`), so the caller needs no connection string;
    /// it is not counted in the pool, not reset, and closed when dropped. Call it again to
    /// reconnect after the server dropped it.
    ///
    /// # Errors
    ///
    /// [`Error::Refused`] when the server refuses for good (a login, a missing database);
    /// [`Error::Io`] (timed out) when it did not finish the connection's startup within
    /// `connection_timeout` (a stopped or hung server accepts the TCP connection and answers
    /// nothing); [`Error::Postgres`] for another connect error.
    pub fn connect(&self) -> Result<Client> {
        self.0.connect()
    }

    /// The database's snapshot.
    pub fn stats(&self) -> DbSnapshot {
        self.0.snapshot()
    }
}
