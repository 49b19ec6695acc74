//! The backend of the EcoSystemiser database: the shared registry's pool named
//! `ecosystemiser`, or bounded direct connections; chosen once, then used the same way.

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hive_db_core::rusqlite::Connection;
use hive_db_core::{DbConfig, DbName, PooledConnection, Registry, immediate_transaction};
use once_cell::sync::{Lazy, OnceCell};

use crate::direct::{self, DirectConnection, DirectPool, DirectStats};
use crate::error::{Error, Result, Through};
use crate::path::db_path_from_lookup;
use crate::schema;

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

/// The variable that sets [`Settings::direct_max_connections`].
pub const DIRECT_MAX_VAR: &str = "ECOSYSTEMISER_DIRECT_MAX_CONNECTIONS";

/// How the EcoSystemiser database is opened. Plain data: build it with [`Settings::new`] or
/// [`Settings::from_env`] and change fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settings {
    /// The database file. [`Settings::from_env`] takes [`ecosystemiser_db_path`](crate::ecosystemiser_db_path). Its folder
    /// is created (0700) and the file (0600) when missing.
    pub path: PathBuf,
    /// Pool and connection settings, used for the registry's pool and for every direct
    /// connection alike. `create_if_missing` is always turned on. Default
    /// [`DbConfig::default`]; [`Settings::from_env`] reads [`DbConfig::from_env`].
    pub db: DbConfig,
    /// The most direct connections open at once. Default `None`: `db.max_size` (10 by
    /// default), the size the registry's pool would have; `ECOSYSTEMISER_DIRECT_MAX_CONNECTIONS`
    /// overrides it in [`Settings::from_env`].
    pub direct_max_connections: Option<u32>,
    /// The longest wait for a direct connection when all are in use, before
    /// [`Error::DirectTimeout`]. Default `None`: `db.connection_timeout` (5 s by default).
    pub direct_acquire_timeout: Option<Duration>,
}

impl Settings {
    /// Defaults for the file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            db: DbConfig::default(),
            direct_max_connections: None,
            direct_acquire_timeout: None,
        }
    }

    /// The path from [`ecosystemiser_db_path`](crate::ecosystemiser_db_path), the pool settings from
    /// [`DbConfig::from_env`], and `ECOSYSTEMISER_DIRECT_MAX_CONNECTIONS` if set.
    ///
    /// # Errors
    ///
    /// Those of [`ecosystemiser_db_path`](crate::ecosystemiser_db_path) and [`DbConfig::from_env`]; [`Error::InvalidEnv`]
    /// when `ECOSYSTEMISER_DIRECT_MAX_CONNECTIONS` is not a whole number of at least 1.
    pub fn from_env() -> Result<Self> {
        let mut s = Self::from_lookup(|var| std::env::var(var).ok())?;
        // Read again as an OS string: a path need not be UTF-8.
        s.path = crate::path::ecosystemiser_db_path()?;
        Ok(s)
    }

    /// Like [`Settings::from_env`], reading variables through `lookup` (for tests and for
    /// configuration that comes from elsewhere).
    ///
    /// # Errors
    ///
    /// As [`Settings::from_env`].
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut s = Self::new(db_path_from_lookup(|var| lookup(var).map(PathBuf::from))?);
        s.db = DbConfig::from_lookup(&lookup)?;
        if let Some(v) = lookup(DIRECT_MAX_VAR) {
            let n: u32 = v.trim().parse().map_err(|_| Error::InvalidEnv {
                var: DIRECT_MAX_VAR,
                reason: "not a whole number",
            })?;
            if n == 0 {
                return Err(Error::InvalidEnv {
                    var: DIRECT_MAX_VAR,
                    reason: "zero: at least one connection is needed",
                });
            }
            s.direct_max_connections = Some(n);
        }
        Ok(s)
    }

    fn db_config(&self) -> DbConfig {
        DbConfig {
            create_if_missing: true,
            ..self.db.clone()
        }
    }
}

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

/// What [`EcoDb::integration_status`] found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct IntegrationStatus {
    /// The backend in use.
    pub backend: BackendKind,
    /// Why it is in use.
    pub reason: BackendReason,
    /// The database file.
    pub path: PathBuf,
    /// True only when the backend is the shared pool and the probe went through it.
    pub shared_pool_in_use: bool,
    /// True when the probe query (`SELECT 1` and the schema version) succeeded.
    pub probe_ok: bool,
    /// The schema version the probe read.
    pub schema_version: Option<i64>,
    /// The probe's error, when it failed.
    pub probe_error: Option<String>,
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
                .write(&self.inner.name, |tx| f(tx).map_err(Through::Caller))
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

    /// Which backend is in use and why, and whether a probe query through it succeeds. It
    /// reports the shared pool as in use only when the probe went through it.
    pub fn integration_status(&self) -> IntegrationStatus {
        let probe = self.read(|conn| -> Result<i64> {
            conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .and_then(|_| conn.pragma_query_value(None, "user_version", |r| r.get(0)))
                .map_err(|e| Error::sqlite(&self.inner.name, "probe", e))
        });
        let backend = self.backend();
        IntegrationStatus {
            backend,
            reason: self.inner.reason,
            path: self.inner.path.clone(),
            shared_pool_in_use: backend == BackendKind::SharedPool && probe.is_ok(),
            probe_ok: probe.is_ok(),
            schema_version: probe.as_ref().ok().copied(),
            probe_error: probe.err().map(|e| error_chain(&e)),
        }
    }
}

/// `e` and its sources, joined with `: `.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

#[derive(Debug)]
enum Conn {
    Pooled(PooledConnection),
    Direct(DirectConnection),
}

/// A connection of an [`EcoDb`]. It derefs to [`Connection`]; dropping it returns it to the
/// shared pool, or closes it and frees its direct-connection permit.
#[derive(Debug)]
pub struct EcoConnection(Conn);

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

static PROCESS_DB: OnceCell<EcoDb> = OnceCell::new();

/// The process's EcoSystemiser database, opened on first use with [`Settings::from_env`] and
/// [`EcoDb::from_process`]: the installed registry's pool when one is installed by then,
/// else direct connections. The choice is made once per process; a failed first open is
/// not remembered, so a later call tries again.
///
/// # Errors
///
/// Those of [`Settings::from_env`] and [`EcoDb::from_process`].
pub fn ecosystemiser_db() -> Result<&'static EcoDb> {
    PROCESS_DB.get_or_try_init(|| EcoDb::from_process(&Settings::from_env()?))
}

/// The process database if it has been opened, without opening it.
pub(crate) fn process_db_if_open() -> Option<&'static EcoDb> {
    PROCESS_DB.get()
}

/// A connection of the process's database ([`ecosystemiser_db`], [`EcoDb::connection`]).
///
/// # Errors
///
/// Those of [`ecosystemiser_db`] and [`EcoDb::connection`].
#[track_caller]
pub fn ecosystemiser_connection() -> Result<EcoConnection> {
    ecosystemiser_db()?.connection()
}

/// Runs `f` in one `BEGIN IMMEDIATE` transaction of the process's database
/// ([`ecosystemiser_db`], [`EcoDb::transaction`]).
///
/// # Errors
///
/// Those of [`ecosystemiser_db`], converted into `E`, and of [`EcoDb::transaction`].
#[track_caller]
pub fn ecosystemiser_transaction<T, E: From<Error>>(
    f: impl FnOnce(&Connection) -> Result<T, E>,
) -> Result<T, E> {
    ecosystemiser_db()?.transaction(f)
}

/// [`EcoDb::integration_status`] of the process's database (the successor of
/// `validate_hive_integration`).
///
/// # Errors
///
/// Those of [`ecosystemiser_db`], when the database cannot be opened at all.
pub fn integration_status() -> Result<IntegrationStatus> {
    Ok(ecosystemiser_db()?.integration_status())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bug caught: the constant name failing DbName's rules (the Lazy would panic).
    #[test]
    fn the_name_is_valid() {
        assert_eq!(ECO_NAME.as_str(), DB_NAME);
    }

    /// Bug caught: the settings variables read under the wrong names, a bad value replaced
    /// by a default instead of reported.
    #[test]
    fn settings_from_variables() -> Result<()> {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let s = Settings::from_lookup(vars(&[
            ("ECOSYSTEMISER_DB_PATH", "/srv/eco.db"),
            ("ECOSYSTEMISER_DIRECT_MAX_CONNECTIONS", "3"),
            ("HIVE_DB_MAX_CONNECTIONS", "7"),
        ]))?;
        assert_eq!(s.path, PathBuf::from("/srv/eco.db"));
        assert_eq!((s.direct_max_connections, s.db.max_size), (Some(3), 7));
        let s = Settings::from_lookup(vars(&[("HOME", "/home/u")]))?;
        assert_eq!(s.direct_max_connections, None);
        for bad in ["0", "many"] {
            let r = Settings::from_lookup(move |k| match k {
                "HOME" => Some("/home/u".to_owned()),
                "ECOSYSTEMISER_DIRECT_MAX_CONNECTIONS" => Some(bad.to_owned()),
                _ => None,
            });
            assert!(
                matches!(
                    r,
                    Err(Error::InvalidEnv {
                        var: DIRECT_MAX_VAR,
                        ..
                    })
                ),
                "{bad}"
            );
        }
        Ok(())
    }

    /// Bug caught: a handle that cannot be shared between threads.
    #[test]
    fn handles_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<EcoDb>();
        check::<Error>();
    }
}
