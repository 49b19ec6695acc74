//! `Registry`: the named pools of one process, behind a cheap cloneable handle.
//!
//! (About 600 lines: one short method per call of the public API, for both engines, each
//! with its docs; split, the facade would be scattered over files.)

use std::panic::Location;
use std::path::Path;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use std::time::{Duration, Instant};

use rusqlite::Connection;

#[cfg(feature = "async")]
use crate::asynch::{AsyncConfig, AsyncDb, AsyncHandle, DbFuture};
#[cfg(feature = "postgres")]
use crate::backend::Backend;
use crate::batch::WriteTx;
use crate::clock::deadline;
use crate::config::DbConfig;
use crate::database::Database;
use crate::error::{Error, Result};
use crate::health::{self, HealthReport, OpenDb};
use crate::name::{DbName, NameMap};
use crate::open::{FileId, prepare_database, resolve_path, sqlite_build};
#[cfg(feature = "postgres")]
use crate::pg::{PgConfig, PgDatabase, PgHandle, off_runtime};
use crate::pool::{CloseReport, DbInfo, PooledConnection};
use crate::reentry::enter;
use crate::stats::{DbSnapshot, RegistrySnapshot};
use crate::sync::lock;

#[derive(Clone)]
enum Entry {
    Open(Arc<Database>),
    #[cfg(feature = "postgres")]
    Postgres(Arc<PgDatabase>),
    /// A closed database's facts, kept for its snapshot and for its counters to carry on.
    Closed(Arc<DbInfo>),
}

impl Entry {
    fn snapshot(&self) -> DbSnapshot {
        match self {
            Self::Open(db) => db.snapshot(),
            #[cfg(feature = "postgres")]
            Self::Postgres(db) => db.snapshot(),
            Self::Closed(info) => info.snapshot(None),
        }
    }
}

#[derive(Default)]
struct Inner {
    /// Read on every checkout without a lock; replaced whole (under `changing`) on the rare
    /// register and close.
    entries: ArcSwap<NameMap<Entry>>,
    /// Serialises changes to `entries`; opening a file happens under it, lookups never wait
    /// for it.
    changing: Mutex<()>,
    /// The async sides of open databases, made on their first async call (under
    /// `sides_changing`) and taken out when they close.
    #[cfg(feature = "async")]
    sides: ArcSwap<NameMap<Arc<AsyncDb>>>,
    /// Serialises changes to `sides`. Not `changing`: a first async call runs on the
    /// caller's thread, usually an executor's, and `changing` is held while another thread
    /// registers a database (opening files, connecting to servers), which would block the
    /// executor that long. Nothing slow happens under this one.
    #[cfg(feature = "async")]
    sides_changing: Mutex<()>,
}

/// The registry of named database pools: SQLite files, and PostgreSQL databases with the
/// `postgres` feature. Cloning it is cheap; every clone is the same registry.
///
/// Dropping the last clone closes every pool without waiting; use [`Registry::close_all`] to
/// wait for borrowed connections.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl Default for Registry {
    fn default() -> Self {
        // The snapshot's uptime counts from the first registry.
        crate::clock::start();
        Self {
            inner: Arc::default(),
        }
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries = self.inner.entries.load();
        let mut names: Vec<_> = entries.keys().map(DbName::as_str).collect();
        names.sort_unstable();
        f.debug_struct("Registry")
            .field("databases", &names)
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces `entries` with `change` applied to a copy. Callers hold `changing`.
    fn update_entries(&self, change: impl FnOnce(&mut NameMap<Entry>)) {
        let mut entries = NameMap::clone(&self.inner.entries.load());
        change(&mut entries);
        self.inner.entries.store(Arc::new(entries));
    }

    /// Registers `name` for the SQLite file at `path` and opens its pool (`min_idle`
    /// connections, WAL switched on once beforehand).
    ///
    /// Registering the same name for the same file again does nothing; a closed name can be
    /// registered again, for any file, and its counters carry on.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for unworkable settings; [`Error::NameConflict`] when the name
    /// is registered for another file; [`Error::PathInUse`] when the file is registered under
    /// another name (two names would mean two writer lanes for one file); [`Error::Open`],
    /// [`Error::JournalMode`] or [`Error::Io`] when the file cannot be used. On error nothing
    /// is registered.
    pub fn register(&self, name: &DbName, path: impl AsRef<Path>, config: DbConfig) -> Result<()> {
        let path = path.as_ref();
        config.validate(name)?;
        // Read (and warned about, if it differs from the tested build) once per process.
        sqlite_build();
        let requested = resolve_path(name, path)?;
        let _changing = lock(&self.inner.changing);
        let counters = {
            let entries = self.inner.entries.load();
            let existing = match entries.get(name) {
                Some(Entry::Open(db)) if db.info().path == requested => return Ok(()),
                Some(Entry::Open(db)) => Some(db.info()),
                #[cfg(feature = "postgres")]
                Some(Entry::Postgres(pg)) => Some(pg.info()),
                _ => None,
            };
            if let Some(existing) = existing {
                return Err(Error::NameConflict {
                    db: name.clone(),
                    existing: existing.path.clone(),
                    requested,
                });
            }
            // The same file through another path (a hard link, a mount) is the same file.
            let id = FileId::of(&requested).ok();
            if let Some((other, _)) = entries.iter().find(|(n, e)| {
                matches!(e, Entry::Open(p)
                    if (p.info().path == requested || (id.is_some() && p.info().file_id == id)) && *n != name)
            }) {
                return Err(Error::PathInUse {
                    db: name.clone(),
                    path: requested,
                    registered_as: other.clone(),
                });
            }
            match entries.get(name) {
                Some(Entry::Closed(info)) => Arc::clone(&info.counters),
                _ => Arc::default(),
            }
        };
        // The resolved path, not the caller's: through `new/../x.db` the caller's made a
        // folder `new` that nobody asked for on its way to `new/..`.
        let prepared = prepare_database(name, &requested, &config)?;
        let db = Database::open(DbInfo::new(name.clone(), prepared, config, counters))?;
        self.add(name, &db.info().path, Entry::Open(Arc::clone(&db)));
        Ok(())
    }

    /// Puts a newly opened database in the map. Callers hold `changing`.
    fn add(&self, name: &DbName, shown: &Path, entry: Entry) {
        tracing::info!(db = %name, path = %shown.display(), "database registered");
        self.update_entries(|entries| {
            entries.insert(name.clone(), entry);
        });
    }

    /// Registers `name` for the PostgreSQL database at `url` (`postgres://`, `postgresql://`,
    /// or libpq's `key=value` pairs, as `postgres::Config` parses them) and opens its pool,
    /// waiting up to `connection_timeout` for `min_idle` connections. Connections go through
    /// [`PgHandle`], from [`Registry::postgres`].
    ///
    /// The password in `url` is never shown: errors, logs, snapshots and metrics show the
    /// database as `postgres://user@host:port/db`. Registering the same name with the same
    /// `url` again does nothing; a closed name can be registered again, for either engine,
    /// and its counters carry on.
    ///
    /// The PostgreSQL client runs a tokio runtime of its own per connection, so this connects
    /// on a thread of its own: it may be called from async code (an `async fn main`), where
    /// the client would panic. Every [`PgHandle`] method must still run outside any tokio
    /// runtime (see [`PgHandle`]). Dropping or closing the registry is safe anywhere.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`]; [`Error::InvalidUrl`] naming the database (never quoting the
    /// string); [`Error::NameConflict`] when the name is registered for a SQLite file or
    /// other URLs; [`Error::Refused`] when a server refuses for good (a login, a missing
    /// database, a server that lets this connection in only over TLS) or is not what it is
    /// registered as (a primary that cannot take writes, a replica that is not a standby:
    /// each server is measured once before this returns); [`Error::Timeout`], with the last
    /// connect error (a refused connection, too many connections), when `min_idle`
    /// connections cannot be opened in time. On error nothing is registered.
    ///
    /// Read replicas, failover and what each promises: `PgConfig::replicas` and
    /// docs/SCALING.md.
    #[cfg(feature = "postgres")]
    pub fn register_postgres(&self, name: &DbName, url: &str, config: PgConfig) -> Result<()> {
        let requested = PgDatabase::shown_of(name, url, &config)?;
        let _changing = lock(&self.inner.changing);
        let counters = {
            let entries = self.inner.entries.load();
            let conflict = |existing: &Path| Error::NameConflict {
                db: name.clone(),
                existing: existing.to_path_buf(),
                requested,
            };
            match entries.get(name) {
                Some(Entry::Postgres(pg)) if pg.registered_as(url, &config.replicas) => {
                    return Ok(());
                }
                Some(Entry::Postgres(pg)) => return Err(conflict(&pg.info().path)),
                Some(Entry::Open(db)) => return Err(conflict(&db.info().path)),
                Some(Entry::Closed(info)) => Arc::clone(&info.counters),
                None => Arc::default(),
            }
        };
        let db = Arc::new(off_runtime(|| {
            PgDatabase::open(name, url, config, counters)
        })?);
        self.add(name, &db.info().path, Entry::Postgres(Arc::clone(&db)));
        Ok(())
    }

    /// The PostgreSQL database `name`: typed `read` and `write` with `postgres` clients.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownDatabase`], [`Error::Closed`], or [`Error::WrongBackend`] for a SQLite
    /// database.
    #[cfg(feature = "postgres")]
    pub fn postgres(&self, name: &DbName) -> Result<PgHandle> {
        match self.inner.entries.load().get(name) {
            Some(Entry::Postgres(db)) => Ok(PgHandle(Arc::clone(db))),
            Some(Entry::Open(_)) => Err(Error::WrongBackend {
                db: name.clone(),
                call: "postgres",
                expected: Backend::Postgres,
                actual: Backend::Sqlite,
            }),
            Some(Entry::Closed(_)) => Err(Error::Closed { db: name.clone() }),
            None => Err(Error::UnknownDatabase { db: name.clone() }),
        }
    }

    fn pool(&self, name: &DbName) -> Result<Arc<Database>> {
        lookup(&self.inner.entries.load(), name).map(Arc::clone)
    }

    /// A connection of `name` for a caller (`get`, `read`): a word to the database's lock
    /// keeper that a call came (see `keeper.rs`), the fast path under the lock-free map
    /// guard, the waiting path on an owned handle to the pool.
    #[inline]
    fn checkout(
        &self,
        name: &DbName,
        site: &'static Location<'static>,
    ) -> Result<PooledConnection> {
        let entries = self.inner.entries.load();
        let pool = lookup(&entries, name)?;
        pool.before_read();
        if let Some(conn) = pool.try_checkout(site)? {
            return Ok(conn);
        }
        let pool = Arc::clone(pool);
        drop(entries);
        pool.checkout_waiting(site)
    }

    /// A handle on one database that skips the name lookup on every call (for hot loops).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownDatabase`] or [`Error::Closed`].
    pub fn handle(&self, name: &DbName) -> Result<DbHandle> {
        self.pool(name).map(DbHandle)
    }

    /// Checks out a connection of `name`, waiting up to its `connection_timeout`. The caller's
    /// location is recorded for leak reports.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownDatabase`], [`Error::Closed`], [`Error::Timeout`] (with the pool's
    /// counts), or [`Error::Open`] when connections cannot be opened for a permanent cause.
    #[inline]
    #[track_caller]
    pub fn get(&self, name: &DbName) -> Result<PooledConnection> {
        self.checkout(name, Location::caller())
    }

    /// Runs `f` with a connection of `name`. An error `f` returns comes back as
    /// [`Error::Sqlite`] naming the database, with SQLite's extended code.
    ///
    /// `f` may call the registry again, for this database or another. A call that could only
    /// wait for a closure this thread is running fails at once with [`Error::Reentrant`]: a
    /// connection of `name` when the closures running on this thread hold all of its
    /// connections (a pool of one, say), also a `write` (before it waits for the writer
    /// lane, whose holder may be waiting for that connection), and, inside a
    /// [`Registry::write`], another `write` of the same database.
    ///
    /// A `write` of `name` from inside `f` holds `f`'s connection while it waits for the
    /// writer lane. When every connection is so held by threads each waiting for the lane,
    /// the writer holding it waits for a connection until `connection_timeout`: writes from
    /// inside reads of the same database are best kept for pools larger than the threads
    /// that make them.
    ///
    /// For a closure of an application's own error type, see [`Registry::read_with`].
    ///
    /// # Errors
    ///
    /// Those of [`Registry::get`] (and [`Error::Reentrant`], see above), and
    /// [`Error::Sqlite`] for the error `f` returns.
    #[inline]
    #[track_caller]
    pub fn read<T>(
        &self,
        name: &DbName,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let conn = self.checkout(name, Location::caller())?;
        let _inside = enter(conn.pool_key(), false);
        f(&conn).map_err(|e| conn.info().sqlite_error("read", e))
    }

    /// [`Registry::read`] for a closure of the caller's own error type `E`, which the
    /// registry's errors convert into (`anyhow::Error` does, or an application error with a
    /// `From<hive_db_core::Error>`). `f`'s error comes back as it was.
    ///
    /// # Errors
    ///
    /// Those of [`Registry::get`], converted into `E`, and whatever `f` returns.
    #[track_caller]
    pub fn read_with<T, E>(
        &self,
        name: &DbName,
        f: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<Error>,
    {
        let conn = self.checkout(name, Location::caller())?;
        let _inside = enter(conn.pool_key(), false);
        f(&conn)
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction of `name`, after waiting in the database's
    /// writer lane (FIFO). `f`'s work commits when it returns `Ok`, and `write` returns once it
    /// has; it is rolled back when `f` returns `Err` or panics (the panic then continues). An
    /// error `f` returns comes back as [`Error::Sqlite`] naming the database.
    ///
    /// Writers queued at once share one transaction, each one's work undone alone if it fails
    /// (group commit): see [`WriteTx`] for what that means for `f`, and
    /// [`DbConfig::group_commit_max_writers`] to turn it off.
    ///
    /// `f` runs holding the database's writer lane and a connection. It may call the registry
    /// again, but a `write` of the same database from inside it can only wait for itself, and
    /// fails at once with [`Error::Reentrant`]; so does asking for a connection of it when
    /// this thread's closures hold them all (see [`Registry::read`]). Reads of the same
    /// database see `f`'s uncommitted work only through `f`'s own transaction.
    ///
    /// `f` may run on another writer's thread: while this call waits in the lane, the writer
    /// holding it runs the closures queued behind it one after another, on its own thread
    /// (in the same order, each undone alone), rather than waking each writer in turn.
    /// Hence `f`, its value and its error must be `Send`. This call still returns only once
    /// `f`'s work has committed, `f`'s panic still reaches this caller, and `f` runs in this
    /// caller's `tracing` span; but thread-locals `f` reads are the other thread's. A `write`
    /// made from inside another `read` or `write` closure always runs `f` on its own thread.
    ///
    /// For a closure of an application's own error type, see [`Registry::write_with`]; for one
    /// that must run on this thread (not `Send`), [`Registry::write_local`].
    ///
    /// # Errors
    ///
    /// Those of [`Registry::get`]; [`Error::WriterLaneTimeout`]; [`Error::Reentrant`];
    /// [`Error::Sqlite`] when the transaction cannot begin or commit, or for the error `f`
    /// returns; [`Error::BatchFailed`] when the transaction shared with other writers failed.
    #[track_caller]
    pub fn write<T: Send>(
        &self,
        name: &DbName,
        f: impl FnOnce(&WriteTx<'_>) -> rusqlite::Result<T> + Send,
    ) -> Result<T> {
        let site = Location::caller();
        self.pool(name)?.write(site, f)
    }

    /// [`Registry::write`] for a closure of the caller's own error type `E`, which the
    /// registry's errors convert into. `f`'s error comes back as it was (and its work is
    /// rolled back).
    ///
    /// # Errors
    ///
    /// Those of [`Registry::write`] other than `f`'s, converted into `E`, and whatever `f`
    /// returns.
    #[track_caller]
    pub fn write_with<T, E>(
        &self,
        name: &DbName,
        f: impl FnOnce(&WriteTx<'_>) -> Result<T, E> + Send,
    ) -> Result<T, E>
    where
        T: Send,
        E: From<Error> + Send,
    {
        let site = Location::caller();
        self.pool(name)?.write_with(site, f)
    }

    /// [`Registry::write`] for a closure that must run on this thread, as
    /// `tokio::task::spawn_local` is for a future that must: one that captures what cannot
    /// cross threads (an `Rc`, a `RefCell`'s borrow, a non-`Send` handle) or reads this
    /// thread's thread-locals. It waits in the same writer lane, in the same FIFO order, and
    /// joins the same batches, but `f` is never lent to the writer holding the lane: when its
    /// turn comes the lane is handed to this thread, which costs that hand-off (a wake-up) where
    /// [`Registry::write`] usually costs none.
    ///
    /// For a closure of an application's own error type, see [`Registry::write_local_with`].
    ///
    /// # Errors
    ///
    /// As [`Registry::write`].
    #[track_caller]
    pub fn write_local<T>(
        &self,
        name: &DbName,
        f: impl FnOnce(&WriteTx<'_>) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let site = Location::caller();
        self.pool(name)?.write_local(site, f)
    }

    /// [`Registry::write_local`] for a closure of the caller's own error type `E`, as
    /// [`Registry::write_with`] is for [`Registry::write`].
    ///
    /// # Errors
    ///
    /// As [`Registry::write_with`].
    #[track_caller]
    pub fn write_local_with<T, E>(
        &self,
        name: &DbName,
        f: impl FnOnce(&WriteTx<'_>) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<Error>,
    {
        let site = Location::caller();
        self.pool(name)?.write_local_with(site, f)
    }

    /// Every database, open or closed, sorted by name.
    pub fn stats(&self) -> RegistrySnapshot {
        // Copied out first: a snapshot reads the files' sizes, not under the map's guard.
        let entries: Vec<(DbName, Entry)> = self
            .inner
            .entries
            .load()
            .iter()
            .map(|(name, e)| (name.clone(), e.clone()))
            .collect();
        RegistrySnapshot::now(
            entries.iter().map(|(_, e)| e.snapshot()).collect(),
            sqlite_build().clone(),
        )
    }

    /// One database's snapshot.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownDatabase`].
    pub fn db_stats(&self, name: &DbName) -> Result<DbSnapshot> {
        let entry = self.inner.entries.load().get(name).cloned();
        entry
            .map(|e| e.snapshot())
            .ok_or_else(|| Error::UnknownDatabase { db: name.clone() })
    }

    /// Checks every open database at once, on up to 16 threads that share them: a connection
    /// and a read of the schema, then the writer lane, a connection and a probe of the write
    /// lock, with SQLite's busy timeout cut to what is left of `timeout` (on PostgreSQL, a
    /// client and a round trip). Returns within about `timeout` whatever any one database
    /// does.
    ///
    /// A SQLite database is also Unhealthy for ten minutes after one of its calls got a
    /// corruption error (`SQLITE_CORRUPT`, `SQLITE_NOTADB`) and `PRAGMA integrity_check` then
    /// found its file damaged (run within `timeout`, once per such error and then at most
    /// every 5 s while calls keep meeting the damage, so a repair shows; Degraded while a
    /// first check has not finished): the probe reads only the schema's page, and damage
    /// elsewhere shows
    /// in the errors the calls get. Those of `read`, `write` and their async forms count; an
    /// error a `*_with` closure turned into its own type, or one met on a connection from
    /// [`Registry::get`], the registry does not see.
    pub fn health(&self, timeout: Duration) -> HealthReport {
        health::check_all(self.open_databases(), timeout)
    }

    fn open_databases(&self) -> Vec<OpenDb> {
        let mut open: Vec<_> = self
            .inner
            .entries
            .load()
            .values()
            .filter_map(|e| match e {
                Entry::Open(db) => Some(OpenDb::Sqlite(Arc::clone(db))),
                #[cfg(feature = "postgres")]
                Entry::Postgres(db) => Some(OpenDb::Postgres(Arc::clone(db))),
                Entry::Closed(_) => None,
            })
            .collect();
        open.sort_by(|a, b| a.info().name.cmp(&b.info().name));
        open
    }

    /// Takes `name` out of service and moves it to closed: returns its open database.
    fn retire(&self, name: &DbName) -> Result<OpenDb> {
        let _changing = lock(&self.inner.changing);
        let entries = self.inner.entries.load();
        // Refuse new checkouts at once, before anyone waits.
        let (open, closed) = match entries.get(name) {
            Some(Entry::Open(db)) => {
                db.mark_closed();
                let closed = Entry::Closed(Arc::clone(db.info()));
                (OpenDb::Sqlite(Arc::clone(db)), closed)
            }
            #[cfg(feature = "postgres")]
            Some(Entry::Postgres(db)) => {
                db.mark_closed();
                let closed = Entry::Closed(Arc::clone(db.info()));
                (OpenDb::Postgres(Arc::clone(db)), closed)
            }
            Some(Entry::Closed(_)) => return Err(Error::Closed { db: name.clone() }),
            None => return Err(Error::UnknownDatabase { db: name.clone() }),
        };
        drop(entries);
        self.update_entries(|entries| {
            entries.insert(name.clone(), closed);
        });
        #[cfg(feature = "async")]
        self.retire_async(name);
        Ok(open)
    }

    /// Closes `name`: new checkouts fail at once with [`Error::Closed`]; borrowed connections
    /// are waited for up to `timeout`; every connection is closed, and any returned later is
    /// closed on return, never pooled. The report lists those still out at the deadline.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownDatabase`], or [`Error::Closed`] if it is closed already.
    pub fn close(&self, name: &DbName, timeout: Duration) -> Result<CloseReport> {
        let started = Instant::now();
        Ok(self
            .retire(name)?
            .close(started, deadline(started, timeout)))
    }

    /// Closes every open database, all against one deadline `timeout` from now.
    pub fn close_all(&self, timeout: Duration) -> Vec<CloseReport> {
        let started = Instant::now();
        let deadline = deadline(started, timeout);
        let open: Vec<_> = self
            .open_databases()
            .iter()
            .filter_map(|db| self.retire(&db.info().name).ok())
            .collect();
        open.iter().map(|db| db.close(started, deadline)).collect()
    }
}

/// The async API (cargo feature `async`): the same calls as the sync ones, returning
/// futures. See [`AsyncHandle`] for the contracts and [`DbFuture`] for cancellation.
#[cfg(feature = "async")]
impl Registry {
    /// The async calls of `name`, without the name lookup on each call. Starts the
    /// database's async side with [`AsyncConfig::default`] if it has none yet.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownDatabase`], [`Error::Closed`], [`Error::Io`] when its writer thread
    /// cannot start.
    pub fn async_handle(&self, name: &DbName) -> Result<AsyncHandle> {
        self.async_side(name, None).map(AsyncHandle)
    }

    /// [`Registry::async_handle`], starting the async side with `config`.
    ///
    /// # Errors
    ///
    /// Those of [`Registry::async_handle`], and [`Error::InvalidConfig`] for a zero count or
    /// when the side runs already with other settings.
    pub fn async_handle_with(&self, name: &DbName, config: AsyncConfig) -> Result<AsyncHandle> {
        self.async_side(name, Some(config)).map(AsyncHandle)
    }

    /// [`Registry::read`] as a future: `f` runs on a reader thread of `name`
    /// ([`AsyncHandle::read`]).
    ///
    /// # Errors
    ///
    /// As [`AsyncHandle::read`], and those of [`Registry::async_handle`], all through the
    /// future.
    #[track_caller]
    pub fn read_async<T, F>(&self, name: &DbName, f: F) -> DbFuture<T>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let site = std::panic::Location::caller();
        self.with_side(name, |side| {
            let info = Arc::clone(side.database().info());
            side.read(site, move |conn| {
                f(conn).map_err(|e| info.sqlite_error("read", e))
            })
        })
    }

    /// [`Registry::read_with`] as a future ([`AsyncHandle::read_with`]).
    ///
    /// # Errors
    ///
    /// As [`AsyncHandle::read_with`], and those of [`Registry::async_handle`].
    #[track_caller]
    pub fn read_async_with<T, E, F>(&self, name: &DbName, f: F) -> DbFuture<T, E>
    where
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        let site = std::panic::Location::caller();
        self.with_side(name, |side| side.read(site, f))
    }

    /// [`Registry::read_async`], run at once on the calling thread when a connection of
    /// `name` is idle ([`AsyncHandle::read_inline`]).
    ///
    /// # Errors
    ///
    /// As [`AsyncHandle::read_inline`], and those of [`Registry::async_handle`].
    #[track_caller]
    pub fn read_async_inline<T, F>(&self, name: &DbName, f: F) -> DbFuture<T>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let site = std::panic::Location::caller();
        self.with_side(name, |side| {
            let info = Arc::clone(side.database().info());
            side.read_inline(site, move |conn| {
                f(conn).map_err(|e| info.sqlite_error("read", e))
            })
        })
    }

    /// [`Registry::write`] as a future: `f` runs in `name`'s writer lane, in the place the
    /// call takes there now ([`AsyncHandle::write`]).
    ///
    /// # Errors
    ///
    /// As [`AsyncHandle::write`], and those of [`Registry::async_handle`].
    #[track_caller]
    pub fn write_async<T, F>(&self, name: &DbName, f: F) -> DbFuture<T>
    where
        F: FnOnce(&WriteTx<'_>) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let site = std::panic::Location::caller();
        self.with_side(name, |side| {
            let info = Arc::clone(side.database().info());
            side.write(site, move |tx| {
                f(tx).map_err(|e| info.sqlite_error("write", e))
            })
        })
    }

    /// [`Registry::write_with`] as a future ([`AsyncHandle::write_with`]).
    ///
    /// # Errors
    ///
    /// As [`AsyncHandle::write_with`], and those of [`Registry::async_handle`].
    #[track_caller]
    pub fn write_async_with<T, E, F>(&self, name: &DbName, f: F) -> DbFuture<T, E>
    where
        F: FnOnce(&WriteTx<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        let site = std::panic::Location::caller();
        self.with_side(name, |side| side.write(site, f))
    }

    /// Calls `call` with `name`'s async side, under the lock-free map's guard when it runs
    /// already; a lookup error is the future's.
    fn with_side<T, E: From<Error>>(
        &self,
        name: &DbName,
        call: impl FnOnce(&AsyncDb) -> DbFuture<T, E>,
    ) -> DbFuture<T, E> {
        if let Some(side) = self.inner.sides.load().get(name) {
            return call(side);
        }
        match self.async_side(name, None) {
            Ok(side) => call(&side),
            Err(err) => DbFuture::ready(Err(err.into())),
        }
    }

    /// `name`'s async side, started with `config` (or the defaults) if it has none.
    fn async_side(&self, name: &DbName, config: Option<AsyncConfig>) -> Result<Arc<AsyncDb>> {
        let existing = |side: &Arc<AsyncDb>| match config {
            Some(config) if config != *side.config() => Err(Error::InvalidConfig {
                db: name.clone(),
                reason: format!(
                    "its async side runs already with other settings ({:?})",
                    side.config()
                ),
            }),
            _ => Ok(Arc::clone(side)),
        };
        if let Some(side) = self.inner.sides.load().get(name) {
            return existing(side);
        }
        let _changing = lock(&self.inner.sides_changing);
        if let Some(side) = self.inner.sides.load().get(name) {
            return existing(side);
        }
        // Looked up under `sides_changing`: `retire` marks the entry closed before it takes
        // that lock to remove the side, so a side made for a database being closed is
        // either refused here or removed by `retire` right after.
        let side = Arc::new(AsyncDb::start(
            self.pool(name)?,
            config.unwrap_or_default(),
        )?);
        let mut sides = NameMap::clone(&self.inner.sides.load());
        sides.insert(name.clone(), Arc::clone(&side));
        self.inner.sides.store(Arc::new(sides));
        Ok(side)
    }

    /// Closes `name`'s async side, if it has one: its calls not started resolve to
    /// [`Error::Closed`]. Callers hold `changing`, and have marked the entry closed.
    fn retire_async(&self, name: &DbName) {
        let side = {
            let _changing = lock(&self.inner.sides_changing);
            let sides = self.inner.sides.load();
            let Some(side) = sides.get(name).cloned() else {
                return;
            };
            drop(sides);
            let mut sides = NameMap::clone(&self.inner.sides.load());
            sides.remove(name);
            self.inner.sides.store(Arc::new(sides));
            side
        };
        side.close();
    }
}

#[inline]
fn lookup<'a>(entries: &'a NameMap<Entry>, name: &DbName) -> Result<&'a Arc<Database>> {
    match entries.get(name) {
        Some(Entry::Open(pool)) => Ok(pool),
        #[cfg(feature = "postgres")]
        Some(Entry::Postgres(_)) => Err(Error::WrongBackend {
            db: name.clone(),
            call: "a SQLite call",
            expected: Backend::Sqlite,
            actual: Backend::Postgres,
        }),
        Some(Entry::Closed(_)) => Err(Error::Closed { db: name.clone() }),
        None => Err(Error::UnknownDatabase { db: name.clone() }),
    }
}

/// One open database of a registry, without the name lookup. Cloning is cheap.
///
/// A handle keeps working until its database is closed; after that it fails with
/// [`Error::Closed`], even if the name is registered again (take a new handle then).
#[derive(Clone)]
pub struct DbHandle(Arc<Database>);

impl std::fmt::Debug for DbHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("DbHandle")
            .field(&self.0.info().name)
            .finish()
    }
}

impl DbHandle {
    /// The database's name.
    pub fn name(&self) -> &DbName {
        &self.0.info().name
    }

    /// The database's canonical path.
    pub fn path(&self) -> &Path {
        &self.0.info().path
    }

    /// Like [`Registry::get`].
    ///
    /// # Errors
    ///
    /// As [`Registry::get`].
    #[inline]
    #[track_caller]
    pub fn get(&self) -> Result<PooledConnection> {
        self.0.before_read();
        self.0.checkout(Location::caller())
    }

    /// Like [`Registry::read`].
    ///
    /// # Errors
    ///
    /// As [`Registry::read`].
    #[inline]
    #[track_caller]
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        self.0.read(Location::caller(), f)
    }

    /// Like [`Registry::read_with`].
    ///
    /// # Errors
    ///
    /// As [`Registry::read_with`].
    #[track_caller]
    pub fn read_with<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        self.0.read_with(Location::caller(), f)
    }

    /// Like [`Registry::write`].
    ///
    /// # Errors
    ///
    /// As [`Registry::write`].
    #[track_caller]
    pub fn write<T: Send>(
        &self,
        f: impl FnOnce(&WriteTx<'_>) -> rusqlite::Result<T> + Send,
    ) -> Result<T> {
        self.0.write(Location::caller(), f)
    }

    /// Like [`Registry::write_with`].
    ///
    /// # Errors
    ///
    /// As [`Registry::write_with`].
    #[track_caller]
    pub fn write_with<T: Send, E: From<Error> + Send>(
        &self,
        f: impl FnOnce(&WriteTx<'_>) -> Result<T, E> + Send,
    ) -> Result<T, E> {
        self.0.write_with(Location::caller(), f)
    }

    /// Like [`Registry::write_local`].
    ///
    /// # Errors
    ///
    /// As [`Registry::write_local`].
    #[track_caller]
    pub fn write_local<T>(&self, f: impl FnOnce(&WriteTx<'_>) -> rusqlite::Result<T>) -> Result<T> {
        self.0.write_local(Location::caller(), f)
    }

    /// Like [`Registry::write_local_with`].
    ///
    /// # Errors
    ///
    /// As [`Registry::write_local_with`].
    #[track_caller]
    pub fn write_local_with<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&WriteTx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.0.write_local_with(Location::caller(), f)
    }

    /// The database's snapshot.
    pub fn stats(&self) -> DbSnapshot {
        self.0.snapshot()
    }
}

#[cfg(test)]
mod tests;
