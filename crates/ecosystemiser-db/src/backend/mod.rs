//! The backend of the EcoSystemiser database: the shared registry's pool named
//! `ecosystemiser`, or bounded direct connections; chosen once, then used the same way.
//! The settings, the connection type, the integration status and the process-wide database
//! have files of their own.

mod connection;
mod process;
mod settings;
mod status;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hive_db_core::rusqlite::Connection;
use hive_db_core::{DbName, Registry, immediate_transaction};
use once_cell::sync::Lazy;

use crate::direct::{self, DirectPool, DirectStats};
use crate::error::{Error, Result, Through};
use crate::schema;

use connection::Conn;

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
    /// The pool named `ecosystemiser` in a hive-db-core registry.
    SharedPool,
    /// Direct connections, bounded by a semaphore.
    Direct,
}

/// Why an [`EcoDb`] uses its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum BackendReason {
    /// A process-wide registry was installed (`hive_db_core::global::install`).
    GlobalRegistryInstalled,
    /// No process-wide registry was installed, so direct connections.
    NoGlobalRegistry,
    /// The application handed over a registry of its own ([`EcoDb::with_registry`]).
    GivenRegistry,
    /// The application asked for direct connections ([`EcoDb::direct`]).
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
}

#[derive(Debug)]
enum Backend {
    Pooled(Registry),
    Direct(Arc<DirectPool>),
}

#[derive(Debug)]
struct Inner {
    name: DbName,
    path: PathBuf,
    backend: Backend,
    reason: BackendReason,
}

/// The EcoSystemiser database: a connection and a transaction entry point over whichever
/// backend was chosen, with the schema migrated to the newest version on open. Cloning is
/// cheap; every clone is the same database. `Send + Sync`.
#[derive(Debug, Clone)]
pub struct EcoDb {
    inner: Arc<Inner>,
}

/// Counters of an [`EcoDb`]'s backend.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub enum BackendStats {
    /// The shared pool's snapshot.
    SharedPool(Box<hive_db_core::DbSnapshot>),
    /// The direct connections' counters.
    Direct(DirectStats),
}

impl EcoDb {
    /// The database on the pool named `ecosystemiser` in `registry`, registered with
    /// `settings.path` if it is not yet (registering the same file again does nothing).
    ///
    /// # Errors
    ///
    /// [`Error::NotADatabase`], [`Error::SchemaTooNew`] or [`Error::Migration`] for the file;
    /// the registry's errors ([`Error::Core`]), among them a name conflict when `ecosystemiser`
    /// is registered for another file.
    pub fn with_registry(registry: &Registry, settings: &Settings) -> Result<Self> {
        Self::pooled(registry, settings, BackendReason::GivenRegistry)
    }

    /// The database on direct connections (see [`Settings::direct_max_connections`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a limit of zero connections or a zero wait (nothing is
    /// created then); as [`EcoDb::with_registry`]; the core's errors for a file it cannot
    /// prepare.
    pub fn direct(settings: &Settings) -> Result<Self> {
        Self::open_direct(settings, BackendReason::GivenDirect)
    }

    /// The installed process-wide registry's pool when there is one, else direct
    /// connections.
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

    fn pooled(registry: &Registry, settings: &Settings, reason: BackendReason) -> Result<Self> {
        let name = ECO_NAME.clone();
        let config = settings.db_config();
        schema::inspect(&name, &settings.path, &config)?;
        registry.register(&name, &settings.path, config)?;
        let path = registry.handle(&name)?.path().to_path_buf();
        {
            let mut conn = registry.get(&name)?;
            schema::migrate(&name, &path, &mut conn)?;
        }
        tracing::info!(db = %name, path = %path.display(), reason = reason.describe(),
            "EcoSystemiser uses the shared registry's pool");
        Ok(Self::from_parts(
            name,
            path,
            Backend::Pooled(registry.clone()),
            reason,
        ))
    }

    fn open_direct(settings: &Settings, reason: BackendReason) -> Result<Self> {
        let name = ECO_NAME.clone();
        let config = settings.db_config();
        config.validate(&name)?;
        let limit = settings.direct_max_connections.unwrap_or(config.max_size);
        let wait = settings
            .direct_acquire_timeout
            .unwrap_or(config.connection_timeout);
        if limit == 0 || wait.is_zero() {
            return Err(Error::InvalidInput {
                what: "direct connection settings",
                value: format!("{limit} connections, {wait:?} wait"),
                reason: "need at least one connection and a wait longer than zero",
            });
        }
        schema::inspect(&name, &settings.path, &config)?;
        let prepared = hive_db_core::prepare_database(&name, &settings.path, &config)?;
        let path = prepared.path;
        let pool = Arc::new(DirectPool::new(
            name.clone(),
            path.clone(),
            config,
            limit,
            wait,
        ));
        {
            let mut conn = pool.checkout()?;
            schema::migrate(&name, &path, &mut conn)?;
        }
        direct::warn_once(reason.describe(), &path);
        Ok(Self::from_parts(name, path, Backend::Direct(pool), reason))
    }

    fn from_parts(name: DbName, path: PathBuf, backend: Backend, reason: BackendReason) -> Self {
        Self {
            inner: Arc::new(Inner {
                name,
                path,
                backend,
                reason,
            }),
        }
    }

    /// The database's name (`ecosystemiser`).
    pub fn name(&self) -> &DbName {
        &self.inner.name
    }

    /// The database file (canonical).
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The backend in use.
    pub fn backend(&self) -> BackendKind {
        match self.inner.backend {
            Backend::Pooled(_) => BackendKind::SharedPool,
            Backend::Direct(_) => BackendKind::Direct,
        }
    }

    /// Why that backend is in use.
    pub fn reason(&self) -> BackendReason {
        self.inner.reason
    }

    /// A connection, for reads or for work that manages its own transactions. Dropping it
    /// returns it to the pool or closes it (freeing its direct-connection permit).
    ///
    /// # Errors
    ///
    /// The pool's errors ([`Error::Core`], a timeout among them), or
    /// [`Error::DirectTimeout`] when every direct connection stays in use for the bounded
    /// wait.
    #[track_caller]
    pub fn connection(&self) -> Result<EcoConnection> {
        Ok(EcoConnection(match &self.inner.backend {
            Backend::Pooled(registry) => Conn::Pooled(registry.get(&self.inner.name)?),
            Backend::Direct(pool) => Conn::Direct(pool.checkout()?),
        }))
    }

    /// Runs `f` with a connection (as [`EcoDb::connection`]).
    ///
    /// # Errors
    ///
    /// Those of [`EcoDb::connection`], converted into `E`, and whatever `f` returns.
    #[track_caller]
    pub fn read<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        let conn = self.connection()?;
        f(&conn)
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction: its work commits when it returns `Ok`
    /// (and `transaction` returns once it has), and is rolled back when it returns `Err` or
    /// panics (the panic then continues).
    ///
    /// On the shared pool this is the registry's `write`: writers wait in the database's
    /// FIFO lane and queued ones share one commit, each in a savepoint of its own; `f` must
    /// not run `COMMIT`, `ROLLBACK` or `BEGIN` itself (see `hive_db_core::WriteTx`).
    ///
    /// # Errors
    ///
    /// Those of [`EcoDb::connection`], the core's errors when the transaction cannot begin or
    /// commit, all converted into `E`, and whatever `f` returns.
    #[track_caller]
    pub fn transaction<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        match &self.inner.backend {
            Backend::Pooled(registry) => registry
                .write_with(&self.inner.name, |tx| f(tx).map_err(Through::Caller))
                .map_err(Through::into_caller),
            Backend::Direct(pool) => {
                let mut conn = pool.checkout()?;
                immediate_transaction(&self.inner.name, &mut conn, |tx| {
                    f(tx).map_err(Through::Caller)
                })
                .map_err(Through::into_caller)
            }
        }
    }

    /// The backend's counters.
    ///
    /// # Errors
    ///
    /// [`Error::Core`] when the shared pool's database is no longer in its registry.
    pub fn stats(&self) -> Result<BackendStats> {
        Ok(match &self.inner.backend {
            Backend::Pooled(registry) => {
                BackendStats::SharedPool(Box::new(registry.db_stats(&self.inner.name)?))
            }
            Backend::Direct(pool) => BackendStats::Direct(pool.stats()),
        })
    }
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
        check::<Error>();
    }
}
