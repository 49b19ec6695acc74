//! `AsyncHandle`: the async calls of one database, where their contracts are written.

use std::panic::Location;
use std::sync::Arc;

use rusqlite::Connection;

use crate::asynch::oneshot::DbFuture;
use crate::asynch::side::{AsyncConfig, AsyncDb};
use crate::batch::WriteTx;
use crate::error::Error;
use crate::name::DbName;
use crate::stats::DbSnapshot;

/// The async calls of one database (cargo feature `async`), from
/// [`Registry::async_handle`](crate::Registry::async_handle). Cloning is cheap.
///
/// Each call returns a [`DbFuture`] at once, without blocking, on any executor: the closure
/// runs on the database's own threads (or, for [`AsyncHandle::read_inline`], on the calling
/// thread when a connection is idle), never on the executor's. The call is queued when it is
/// made; see [`DbFuture`] for what dropping the future does.
///
/// Writes go through the database's writer lane with the sync writes: the same FIFO order
/// (a write takes its place in the lane when the call is made), the same group commit (a
/// shared transaction, each write's work undone alone, [`WriteTx`]), and `Ok` only after the
/// commit.
///
/// A panicking closure is its own caller's error, [`Error::Panicked`]: its work is rolled
/// back, its connection closed, and the database's threads carry on. Closing the database
/// resolves every call not started to [`Error::Closed`]. A full queue refuses a call at once
/// with [`Error::QueueFull`] (see [`AsyncConfig`]). A call whose future was dropped before it
/// started keeps its place in the queue, and counts toward that limit, until the database's
/// thread comes to it and skips it.
///
/// A closure must not wait for another async call of the same database: a write waiting for
/// a write would wait for itself (the writer runs one closure at a time), and a read may too
/// when every reader thread waits so. Nor for a call of another database whose closures may
/// wait for this one's: two writer threads each waiting for the other never finish, and no
/// timeout ends the wait (a queued call's deadline is checked by the thread that waits).
/// Waits across databases belong in the caller's async code, between calls.
#[derive(Clone)]
pub struct AsyncHandle(pub(crate) Arc<AsyncDb>);

impl std::fmt::Debug for AsyncHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AsyncHandle").field(self.name()).finish()
    }
}

impl AsyncHandle {
    /// The database's name.
    pub fn name(&self) -> &DbName {
        &self.0.database().info().name
    }

    /// The settings its async side runs with.
    pub fn config(&self) -> AsyncConfig {
        *self.0.config()
    }

    /// Runs `f` with a connection on one of the database's reader threads, as
    /// [`Registry::read`](crate::Registry::read) does; an error `f` returns comes back as
    /// [`Error::Sqlite`] naming the database.
    ///
    /// # Errors
    ///
    /// Those of [`Registry::read`](crate::Registry::read), [`Error::QueueFull`],
    /// [`Error::Panicked`], and [`Error::Closed`] when the database closes first.
    #[track_caller]
    pub fn read<T, F>(&self, f: F) -> DbFuture<T>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let info = Arc::clone(self.0.database().info());
        self.0.read(Location::caller(), move |conn| {
            f(conn).map_err(|e| info.sqlite_error("read", e))
        })
    }

    /// [`AsyncHandle::read`] for a closure of the caller's own error type, which the
    /// registry's errors convert into.
    ///
    /// # Errors
    ///
    /// Those of [`AsyncHandle::read`] other than `f`'s, converted into `E`, and whatever `f`
    /// returns.
    #[track_caller]
    pub fn read_with<T, E, F>(&self, f: F) -> DbFuture<T, E>
    where
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        self.0.read(Location::caller(), f)
    }

    /// [`AsyncHandle::read`], but run at once on the calling thread when a connection is
    /// idle now (the future is then ready); else queued for a reader thread. For short
    /// statements, where a hand-off to another thread costs more than the statement: the
    /// calling thread (an executor's) is held while `f` runs.
    ///
    /// # Errors
    ///
    /// As [`AsyncHandle::read`].
    #[track_caller]
    pub fn read_inline<T, F>(&self, f: F) -> DbFuture<T>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let info = Arc::clone(self.0.database().info());
        self.0.read_inline(Location::caller(), move |conn| {
            f(conn).map_err(|e| info.sqlite_error("read", e))
        })
    }

    /// Runs `f` in the database's write transaction, in its turn in the writer lane, as
    /// [`Registry::write`](crate::Registry::write) does: `f`'s work commits when it returns
    /// `Ok`, and the future resolves once it has; it is rolled back when `f` returns `Err` or
    /// panics. An error `f` returns comes back as [`Error::Sqlite`] naming the database.
    ///
    /// # Errors
    ///
    /// Those of [`Registry::write`](crate::Registry::write) (the lane's timeout counts from
    /// the call), [`Error::QueueFull`], [`Error::Panicked`], and [`Error::Closed`] when the
    /// database closes before the write starts.
    #[track_caller]
    pub fn write<T, F>(&self, f: F) -> DbFuture<T>
    where
        F: FnOnce(&WriteTx<'_>) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let info = Arc::clone(self.0.database().info());
        self.0.write(Location::caller(), move |tx| {
            f(tx).map_err(|e| info.sqlite_error("write", e))
        })
    }

    /// [`AsyncHandle::write`] for a closure of the caller's own error type. `f`'s error comes
    /// back as it was (and its work is rolled back).
    ///
    /// # Errors
    ///
    /// Those of [`AsyncHandle::write`] other than `f`'s, converted into `E`, and whatever `f`
    /// returns.
    #[track_caller]
    pub fn write_with<T, E, F>(&self, f: F) -> DbFuture<T, E>
    where
        F: FnOnce(&WriteTx<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        self.0.write(Location::caller(), f)
    }

    /// The database's snapshot, with its async queues.
    pub fn stats(&self) -> DbSnapshot {
        self.0.database().snapshot()
    }
}
