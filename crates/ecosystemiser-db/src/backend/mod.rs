//! The backend of the EcoSystemiser database: always a hive-db-core registry's pool named
//! `ecosystemiser`: the shared registry's, or the fallback's private one; chosen once, then
//! used the same way. The engine is the registry's: a SQLite file, or a PostgreSQL database
//! when the name is registered as one (the fallback is SQLite's only). The settings, the
//! connection type, the integration status and the process-wide database have files of
//! their own.

mod connection;
mod direct;
mod process;
mod settings;
mod status;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hive_db_core::rusqlite::{self, Connection};
use hive_db_core::{DbConfig, DbName, Registry};
use once_cell::sync::Lazy;

use crate::error::{Error, Result};
use crate::schema;

pub use connection::EcoConnection;
pub(crate) use process::process_db_if_open;
pub use process::{
    ecosystemiser_connection, ecosystemiser_db, ecosystemiser_transaction, integration_status,
};
pub use settings::{DIRECT_MAX_VAR, Settings};
pub use status::IntegrationStatus;

/// The name of the EcoSystemiser database in a registry.
pub const DB_NAME: &str = "ecosystemiser";

/// `DB_NAME` as a [`DbName`], built once.
pub(crate) static ECO_NAME: Lazy<DbName> = Lazy::new(|| {
    #[expect(
        clippy::unwrap_used,
        reason = "a constant, valid name; a unit test checks it"
    )]
    DbName::new(DB_NAME).unwrap()
});

/// Which backend an [`EcoDb`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum BackendKind {
    /// The pool named `ecosystemiser` in a hive-db-core registry the application has.
    SharedPool,
    /// The fallback: the pool of a private registry of ecosystemiser-db's own, bounded by
    /// [`Settings::direct_max_connections`]. Always SQLite: direct connections are a SQLite
    /// feature.
    Direct,
}

/// Why an [`EcoDb`] uses its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum BackendReason {
    /// A process-wide registry was installed (`hive_db_core::global::install`).
    GlobalRegistryInstalled,
    /// No process-wide registry was installed, so the fallback.
    NoGlobalRegistry,
    /// The application handed over a registry of its own ([`EcoDb::with_registry`]).
    GivenRegistry,
    /// The application asked for the fallback ([`EcoDb::direct`]).
    GivenDirect,
}

impl BackendReason {
    fn describe(self) -> &'static str {
        match self {
            Self::GlobalRegistryInstalled => "a process-wide registry is installed",
            Self::NoGlobalRegistry => "no process-wide registry is installed",
            Self::GivenRegistry => "the application gave a registry",
            Self::GivenDirect => "the application asked for direct connections",
        }
    }

    /// The backend this reason chooses.
    pub fn backend(self) -> BackendKind {
        match self {
            Self::GlobalRegistryInstalled | Self::GivenRegistry => BackendKind::SharedPool,
            Self::NoGlobalRegistry | Self::GivenDirect => BackendKind::Direct,
        }
    }
}

#[derive(Debug)]
struct Inner {
    /// The file (canonical), or on PostgreSQL the server's target
    /// (`postgres://user@host:port/db`, never a password).
    path: PathBuf,
    /// The PostgreSQL database, when `ecosystemiser` is registered as one; `None` on SQLite.
    #[cfg(feature = "postgres")]
    pg: Option<hive_db_core::PgHandle>,
    /// The shared registry, or the fallback's private one (which this owns: dropping the last
    /// clone of the database closes its pool).
    registry: Registry,
    reason: BackendReason,
}

/// The EcoSystemiser database: a connection and a transaction entry point over whichever
/// registry was chosen, with the schema migrated to the newest version on open. Cloning is
/// cheap; every clone is the same database. `Send + Sync`.
#[derive(Debug, Clone)]
pub struct EcoDb {
    inner: Arc<Inner>,
}

/// Counters of an [`EcoDb`]'s backend: the core's snapshot of its pool, whichever registry
/// holds it.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub enum BackendStats {
    /// The shared pool's snapshot.
    SharedPool(Box<hive_db_core::DbSnapshot>),
    /// The fallback's snapshot (its `max_size` is the fallback's bound).
    Direct(Box<hive_db_core::DbSnapshot>),
}

impl EcoDb {
    /// The database on the pool named `ecosystemiser` in `registry`, registered with
    /// `settings.path` if it is not yet (registering the same file again does nothing).
    ///
    /// # Errors
    ///
    /// [`Error::NotADatabase`](crate::Error::NotADatabase),
    /// [`Error::SchemaTooNew`](crate::Error::SchemaTooNew) or
    /// [`Error::Migration`](crate::Error::Migration) for the file; the registry's errors
    /// ([`Error::Core`](crate::Error::Core)), among them a name conflict when `ecosystemiser` is
    /// registered for another file.
    pub fn with_registry(registry: &Registry, settings: &Settings) -> Result<Self> {
        Self::pooled(registry, settings, BackendReason::GivenRegistry)
    }

    /// The database on the fallback: a private registry of its own, whose pool is bounded by
    /// [`Settings::direct_max_connections`] and waits at most [`Settings::direct_acquire_timeout`].
    /// Its pool closes when the last clone is dropped.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) for a limit of zero connections or a
    /// zero wait (nothing is created then); as [`EcoDb::with_registry`].
    pub fn direct(settings: &Settings) -> Result<Self> {
        Self::open_direct(settings, BackendReason::GivenDirect)
    }

    /// The installed process-wide registry's pool when there is one, else the fallback.
    ///
    /// # Errors
    ///
    /// As [`EcoDb::with_registry`] and [`EcoDb::direct`].
    pub fn from_process(settings: &Settings) -> Result<Self> {
        match hive_db_core::global::get() {
            Some(registry) => {
                Self::pooled(registry, settings, BackendReason::GlobalRegistryInstalled)
            }
            None => Self::open_direct(settings, BackendReason::NoGlobalRegistry),
        }
    }

    /// The database on a PostgreSQL server: registers `ecosystemiser` in `registry` for
    /// `url` (registering the same URL again does nothing), then migrates it. The same
    /// [`EcoDb`] as [`EcoDb::with_registry`] finds when the name is registered that way.
    ///
    /// # Errors
    ///
    /// The registry's errors ([`Error::Core`](crate::Error::Core): a bad URL, a server that
    /// refuses, a name registered for something else); those of the migration
    /// ([`Error::SchemaTooNew`](crate::Error::SchemaTooNew),
    /// [`Error::MigrationStep`](crate::Error::MigrationStep)).
    #[cfg(feature = "postgres")]
    pub fn with_postgres(
        registry: &Registry,
        url: &str,
        config: hive_db_core::PgConfig,
    ) -> Result<Self> {
        registry.register_postgres(&ECO_NAME, url, config)?;
        Self::pooled_postgres(registry, BackendReason::GivenRegistry)
    }

    /// The database on the PostgreSQL entry `ecosystemiser` of `registry`, migrated.
    #[cfg(feature = "postgres")]
    fn pooled_postgres(registry: &Registry, reason: BackendReason) -> Result<Self> {
        let handle = registry.postgres(&ECO_NAME)?;
        let path = handle.target().to_path_buf();
        schema::pg::migrate(&handle)?;
        tracing::info!(db = %ECO_NAME.as_str(), target = %path.display(),
            reason = reason.describe(), "EcoSystemiser uses the shared registry's PostgreSQL pool");
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                pg: Some(handle),
                registry: registry.clone(),
                reason,
            }),
        })
    }

    fn pooled(registry: &Registry, settings: &Settings, reason: BackendReason) -> Result<Self> {
        // The engine is the registry's choice: a PostgreSQL entry under the name is used as
        // it is; otherwise the SQLite file of `settings`.
        #[cfg(feature = "postgres")]
        if registry.postgres(&ECO_NAME).is_ok() {
            return Self::pooled_postgres(registry, reason);
        }
        let db = Self::open(registry.clone(), settings, settings.db_config(), reason)?;
        tracing::info!(db = %ECO_NAME.as_str(), path = %db.path().display(),
            reason = reason.describe(), "EcoSystemiser uses the shared registry's pool");
        Ok(db)
    }

    fn open_direct(settings: &Settings, reason: BackendReason) -> Result<Self> {
        let config = direct::config(settings)?;
        let db = Self::open(Registry::new(), settings, config, reason)?;
        direct::warn_once(reason.describe(), db.path());
        Ok(db)
    }

    /// Checks the file, migrates it, and registers it in `registry`.
    ///
    /// An existing file is migrated on the connection it was checked on, in its own journal
    /// mode, before the registry switches it to WAL: a migration that refuses leaves the
    /// file byte for byte as it was, and not registered, so nothing reaches it by name. A
    /// new file is migrated once registered; if that fails, the name this call registered
    /// is closed again. A name the registry has open already is migrated through its pool
    /// only: a connection of our own on its path would not be checked against the file the
    /// registry has (a file renamed over the path would be read, and closed, with the
    /// registered file's `-wal`).
    fn open(
        registry: Registry,
        settings: &Settings,
        config: DbConfig,
        reason: BackendReason,
    ) -> Result<Self> {
        let name = &*ECO_NAME;
        config.validate(name)?;
        let registered_before = registry.handle(name).is_ok();
        if !registered_before
            && let Some(mut conn) = schema::inspect(name, &settings.path, &config)?
        {
            schema::migrate(name, &settings.path, &mut conn)?;
        }
        registry.register(name, &settings.path, config)?;
        let path = registry.handle(name)?.path().to_path_buf();
        let migrated = registry
            .get(name)
            .map_err(Error::from)
            .and_then(|mut conn| schema::migrate(name, &path, &mut conn));
        if let Err(e) = migrated {
            if !registered_before {
                let _ = registry.close(name, Duration::from_secs(1));
            }
            return Err(e);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                #[cfg(feature = "postgres")]
                pg: None,
                registry,
                reason,
            }),
        })
    }

    /// The PostgreSQL database, when this one is on PostgreSQL.
    #[cfg(feature = "postgres")]
    pub(crate) fn pg(&self) -> Option<&hive_db_core::PgHandle> {
        self.inner.pg.as_ref()
    }

    /// The engine the database is on: SQLite, or PostgreSQL when the registry names
    /// `ecosystemiser` as a PostgreSQL database.
    pub fn engine(&self) -> hive_db_core::Backend {
        #[cfg(feature = "postgres")]
        if self.inner.pg.is_some() {
            return hive_db_core::Backend::Postgres;
        }
        hive_db_core::Backend::Sqlite
    }

    /// The PostgreSQL handle, for plain SQL on a database on PostgreSQL (the counterpart of
    /// [`EcoDb::read`] and [`EcoDb::transaction`], which are SQLite's).
    ///
    /// # Errors
    ///
    /// [`Error::WrongEngine`](crate::Error::WrongEngine) when the database is on SQLite.
    #[cfg(feature = "postgres")]
    pub fn postgres(&self) -> Result<hive_db_core::PgHandle> {
        self.inner
            .pg
            .clone()
            .ok_or_else(|| crate::error::Error::WrongEngine {
                db: ECO_NAME.clone(),
                call: "EcoDb::postgres",
                needs: hive_db_core::Backend::Postgres,
                actual: hive_db_core::Backend::Sqlite,
            })
    }

    /// The database's name (`ecosystemiser`).
    pub fn name(&self) -> &DbName {
        &ECO_NAME
    }

    /// The database file (canonical); on PostgreSQL, the server's target
    /// (`postgres://user@host:port/db`, never a password).
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The backend in use.
    pub fn backend(&self) -> BackendKind {
        self.inner.reason.backend()
    }

    /// Why that backend is in use.
    pub fn reason(&self) -> BackendReason {
        self.inner.reason
    }

    /// A connection, for reads or for work that manages its own transactions. Dropping it returns
    /// it to its pool.
    ///
    /// # Errors
    ///
    /// The pool's errors ([`Error::Core`](crate::Error::Core)): among them
    /// `hive_db_core::Error::Timeout` naming the database when every connection stays in use for
    /// the bounded wait, and `hive_db_core::Error::Open` with `OpenCause::FileChanged` when the
    /// file was replaced; `hive_db_core::Error::WrongBackend` on PostgreSQL (see
    /// [`EcoDb::engine`]; plain SQL goes through `EcoDb::postgres` there). So do
    /// [`EcoDb::read`], [`EcoDb::transaction`] and their `_with` forms.
    #[track_caller]
    pub fn connection(&self) -> Result<EcoConnection> {
        Ok(EcoConnection(self.inner.registry.get(&ECO_NAME)?))
    }

    /// Runs `f` with a connection (as [`EcoDb::connection`]). An error `f` returns comes back as
    /// [`Error::Core`](crate::Error::Core) holding the core's `Sqlite` error, which names the
    /// database.
    ///
    /// For a closure of another error type, see [`EcoDb::read_with`].
    ///
    /// # Errors
    ///
    /// Those of [`EcoDb::connection`], and `f`'s, as above.
    #[track_caller]
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        Ok(self.inner.registry.read(&ECO_NAME, f)?)
    }

    /// [`EcoDb::read`] for a closure of the caller's own error type `E`, which the core's errors
    /// convert into ([`Error`](crate::Error) does, and so does `anyhow::Error`). `f`'s error comes
    /// back as it was.
    ///
    /// # Errors
    ///
    /// Those of [`EcoDb::connection`], converted into `E`, and whatever `f` returns.
    #[track_caller]
    pub fn read_with<T, E: From<hive_db_core::Error>>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        self.inner.registry.read_with(&ECO_NAME, f)
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction: its work commits when it returns `Ok` (and
    /// `transaction` returns once it has), and is rolled back when it returns `Err` or panics (the
    /// panic then continues). An error `f` returns comes back as
    /// [`Error::Core`](crate::Error::Core) holding the core's `Sqlite` error, which names the
    /// database.
    ///
    /// This is the registry's `write`, on either backend: writers wait in the database's FIFO lane
    /// and queued ones share one commit, each one's work undone alone; `f` must not run `COMMIT`,
    /// `ROLLBACK` or `BEGIN` itself (see `hive_db_core::WriteTx`).
    ///
    /// For a closure of another error type, see [`EcoDb::transaction_with`].
    ///
    /// # Errors
    ///
    /// Those of [`EcoDb::connection`], the core's errors when the transaction cannot begin or
    /// commit, and `f`'s, all as [`Error::Core`](crate::Error::Core).
    #[track_caller]
    pub fn transaction<T: Send>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send,
    ) -> Result<T> {
        Ok(self.inner.registry.write(&ECO_NAME, |tx| f(tx))?)
    }

    /// [`EcoDb::transaction`] for a closure of the caller's own error type `E`, which the core's
    /// errors convert into ([`Error`](crate::Error) does, and so does `anyhow::Error`). `f`'s error
    /// comes back as it was (and its work is rolled back).
    ///
    /// # Errors
    ///
    /// Those of [`EcoDb::transaction`] other than `f`'s, converted into `E`, and whatever `f`
    /// returns.
    #[track_caller]
    pub fn transaction_with<T: Send, E: From<hive_db_core::Error> + Send>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, E> + Send,
    ) -> Result<T, E> {
        self.inner.registry.write_with(&ECO_NAME, |tx| f(tx))
    }

    /// The reads of the async calls: `f` runs on a reader thread of the database (the
    /// private registry's too, for direct connections).
    ///
    /// # Errors
    ///
    /// [`Error::WrongEngine`](crate::Error::WrongEngine) on PostgreSQL, whose pools have no
    /// async side; the future carries the others.
    #[cfg(feature = "async")]
    #[track_caller]
    pub(crate) fn read_async_with<T, F>(
        &self,
        call: &'static str,
        f: F,
    ) -> Result<hive_db_core::DbFuture<T, crate::error::Error>>
    where
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.sqlite_only(call)?;
        Ok(self.inner.registry.read_async_with(&ECO_NAME, f))
    }

    /// The writes of the async calls: `f` runs in the database's writer lane, in one
    /// transaction committed when it returns `Ok`.
    ///
    /// # Errors
    ///
    /// As [`EcoDb::read_async_with`].
    #[cfg(feature = "async")]
    #[track_caller]
    pub(crate) fn write_async_with<T, F>(
        &self,
        call: &'static str,
        f: F,
    ) -> Result<hive_db_core::DbFuture<T, crate::error::Error>>
    where
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.sqlite_only(call)?;
        Ok(self.inner.registry.write_async_with(&ECO_NAME, |tx| f(tx)))
    }

    /// [`Error::WrongEngine`](crate::Error::WrongEngine) for `call` on PostgreSQL.
    #[cfg(feature = "async")]
    fn sqlite_only(&self, call: &'static str) -> Result<()> {
        #[cfg(feature = "postgres")]
        if self.inner.pg.is_some() {
            return Err(crate::error::Error::WrongEngine {
                db: ECO_NAME.clone(),
                call,
                needs: hive_db_core::Backend::Sqlite,
                actual: hive_db_core::Backend::Postgres,
            });
        }
        #[cfg(not(feature = "postgres"))]
        let _ = call;
        Ok(())
    }

    /// The backend's counters: the core's snapshot of the pool.
    ///
    /// # Errors
    ///
    /// [`Error::Core`](crate::Error::Core) when the shared pool's database is no longer in its
    /// registry.
    pub fn stats(&self) -> Result<BackendStats> {
        let snapshot = Box::new(self.inner.registry.db_stats(&ECO_NAME)?);
        Ok(match self.backend() {
            BackendKind::SharedPool => BackendStats::SharedPool(snapshot),
            BackendKind::Direct => BackendStats::Direct(snapshot),
        })
    }
}

/// Runs `f` with a client of the PostgreSQL primary: repository reads see every write that
/// has returned, as on SQLite (replicas are for the application's own `PgHandle::read`).
///
/// # Errors
///
/// The pool's errors, and `f`'s.
#[cfg(feature = "postgres")]
#[track_caller]
pub(crate) fn read_primary<T>(
    pg: &hive_db_core::PgHandle,
    f: impl FnOnce(&mut hive_db_core::postgres::Client) -> Result<T>,
) -> Result<T> {
    let mut client = pg.get()?;
    f(&mut client)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bug caught: the constant name failing DbName's rules (the Lazy would panic).
    #[test]
    fn the_name_is_valid() {
        assert_eq!(ECO_NAME.as_str(), DB_NAME);
    }

    /// Bug caught: a handle that cannot be shared between threads.
    #[test]
    fn handles_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<EcoDb>();
        check::<crate::Error>();
    }
}
