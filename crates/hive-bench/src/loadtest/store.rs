//! Where the operations run: the registry (on SQLite files or PostgreSQL databases), or for
//! `--compare` one of the ways the registry replaces (a connection opened per operation, or
//! plain r2d2 with its defaults, over r2d2_sqlite or r2d2_postgres), and the serial ceiling
//! (one raw connection per database, one worker).

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};

use hive_db_core::postgres::{Client, NoTls, Transaction};
use hive_db_core::rusqlite::{Connection, TransactionBehavior};
use hive_db_core::{DbConfig, DbHandle, DbName, PgHandle, immediate_transaction, open_connection};
use r2d2_postgres::PostgresConnectionManager;
use r2d2_sqlite::SqliteConnectionManager;

use crate::loadtest::eco::Eco;

/// The engine the load test's databases are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Backend {
    /// SQLite files in one folder.
    Sqlite,
    /// Databases of one PostgreSQL server.
    Postgres,
}

/// A connection to read with, in its engine's own type: each operation keeps its SQL for
/// both engines side by side and picks by this.
pub(crate) enum Read<'a> {
    Sqlite(&'a Connection),
    Pg(&'a mut Client),
}

/// A transaction to write in, in its engine's own type.
pub(crate) enum Write<'a, 't> {
    Sqlite(&'a Connection),
    Pg(&'a mut Transaction<'t>),
}

/// Read and write access to the load test's databases, by index (0 is `ecosystemiser`,
/// then the application databases).
pub(crate) trait Store: Sync {
    /// Runs `f` with a connection of database `db`.
    fn read<T>(
        &self,
        db: usize,
        f: impl FnOnce(Read<'_>) -> anyhow::Result<T>,
    ) -> anyhow::Result<T>;

    /// Runs `f` in one transaction of database `db` (`BEGIN IMMEDIATE` on SQLite, the
    /// server's default isolation on PostgreSQL): `Ok` only once `f`'s work has committed;
    /// rolled back when `f` fails. `f` may run again after a failed attempt (PostgreSQL's
    /// deadlock or serialization failure at commit), so it keeps no state across runs.
    fn write<T: Send>(
        &self,
        db: usize,
        f: impl FnMut(Write<'_, '_>) -> anyhow::Result<T> + Send,
    ) -> anyhow::Result<T>;

    /// The data layer's repositories on the `ecosystemiser` database, on this path.
    ///
    /// # Errors
    ///
    /// On a path the data layer cannot run on.
    fn eco(&self) -> anyhow::Result<&Eco>;
}

/// The way the operations reach SQLite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Path {
    /// The hive-db registry: pools, writer lane, group commit.
    Registry,
    /// `open_connection` (the registry's own PRAGMAs), the operation, close: the original
    /// system's fallback.
    ConnectPerOp,
    /// r2d2 + r2d2_sqlite with their defaults, `BEGIN IMMEDIATE` for writes.
    R2d2,
    /// r2d2 + r2d2_postgres 0.18 with their defaults, a plain transaction for writes.
    R2d2Postgres,
    /// One raw connection per database, one worker: the serial ceiling (no pool, no lane).
    SerialRaw,
}

impl Path {
    /// The label in reports.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Path::Registry => "registry",
            Path::ConnectPerOp => "connect per op",
            Path::R2d2 => "r2d2 defaults",
            Path::R2d2Postgres => "r2d2_postgres",
            Path::SerialRaw => "serial raw",
        }
    }
}

/// A handle on one database of the registry, of either engine.
#[derive(Debug, Clone)]
pub(crate) enum Handle {
    Sqlite(DbHandle),
    Pg(PgHandle),
}

impl Handle {
    /// The database's name.
    pub(crate) fn name(&self) -> &DbName {
        match self {
            Handle::Sqlite(h) => h.name(),
            Handle::Pg(h) => h.name(),
        }
    }
}

/// The registry, through a handle per database (no name lookup per operation).
#[derive(Debug)]
pub(crate) struct RegistryStore {
    handles: Vec<Handle>,
    eco: Eco,
}

impl RegistryStore {
    /// `handles` in store order, and the repositories on the registry's `ecosystemiser`.
    pub(crate) fn new(handles: Vec<Handle>, eco: Eco) -> Self {
        Self { handles, eco }
    }
}

impl Store for RegistryStore {
    fn read<T>(
        &self,
        db: usize,
        f: impl FnOnce(Read<'_>) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        match &self.handles[db] {
            Handle::Sqlite(h) => h.read_with(|c| f(Read::Sqlite(c))),
            Handle::Pg(h) => h.read_with(|c| f(Read::Pg(c))),
        }
    }

    fn write<T: Send>(
        &self,
        db: usize,
        mut f: impl FnMut(Write<'_, '_>) -> anyhow::Result<T> + Send,
    ) -> anyhow::Result<T> {
        match &self.handles[db] {
            Handle::Sqlite(h) => h.write_with(|tx| f(Write::Sqlite(tx))),
            Handle::Pg(h) => h.write_with(|tx| f(Write::Pg(tx))),
        }
    }

    fn eco(&self) -> anyhow::Result<&Eco> {
        Ok(&self.eco)
    }
}

/// A connection opened, configured and closed for every operation.
#[derive(Debug)]
pub(crate) struct ConnectPerOpStore {
    databases: Vec<(DbName, PathBuf)>,
    config: DbConfig,
}

impl ConnectPerOpStore {
    /// The files of `databases` (store order), opened with `config`'s PRAGMAs.
    pub(crate) fn new(databases: Vec<(DbName, PathBuf)>, config: DbConfig) -> Self {
        Self { databases, config }
    }

    fn open(&self, db: usize) -> anyhow::Result<(&DbName, Connection)> {
        let (name, path) = &self.databases[db];
        Ok((name, open_connection(name, path, &self.config)?))
    }
}

impl Store for ConnectPerOpStore {
    fn read<T>(
        &self,
        db: usize,
        f: impl FnOnce(Read<'_>) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let (_, conn) = self.open(db)?;
        f(Read::Sqlite(&conn))
    }

    fn write<T: Send>(
        &self,
        db: usize,
        mut f: impl FnMut(Write<'_, '_>) -> anyhow::Result<T> + Send,
    ) -> anyhow::Result<T> {
        let (name, mut conn) = self.open(db)?;
        immediate_transaction(name, &mut conn, |tx| f(Write::Sqlite(tx)))
    }

    fn eco(&self) -> anyhow::Result<&Eco> {
        anyhow::bail!("the data layer keeps its own connections: it does not run connect-per-op")
    }
}

/// One raw connection per database (the registry's PRAGMAs), kept for the whole run, for one
/// worker: the serial ceiling. The mutex only makes the store `Sync`; with one worker it is
/// never contended.
#[derive(Debug)]
pub(crate) struct SerialRawStore {
    conns: Vec<(DbName, Mutex<Connection>)>,
}

impl SerialRawStore {
    /// Opens a connection to each of `databases` (store order) with `config`'s PRAGMAs.
    ///
    /// # Errors
    ///
    /// When a connection cannot be opened.
    pub(crate) fn new(
        databases: Vec<(DbName, PathBuf)>,
        config: &DbConfig,
    ) -> anyhow::Result<Self> {
        let conns = databases
            .into_iter()
            .map(|(name, path)| {
                let conn = open_connection(&name, &path, config)?;
                Ok((name, Mutex::new(conn)))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { conns })
    }

    fn conn(&self, db: usize) -> (&DbName, MutexGuard<'_, Connection>) {
        let (name, conn) = &self.conns[db];
        (name, conn.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Store for SerialRawStore {
    fn read<T>(
        &self,
        db: usize,
        f: impl FnOnce(Read<'_>) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let (_, conn) = self.conn(db);
        f(Read::Sqlite(&conn))
    }

    fn write<T: Send>(
        &self,
        db: usize,
        mut f: impl FnMut(Write<'_, '_>) -> anyhow::Result<T> + Send,
    ) -> anyhow::Result<T> {
        let (name, mut conn) = self.conn(db);
        immediate_transaction(name, &mut conn, |tx| f(Write::Sqlite(tx)))
    }

    fn eco(&self) -> anyhow::Result<&Eco> {
        anyhow::bail!(
            "the data layer runs on the registry or on direct connections, not on raw ones"
        )
    }
}

/// One r2d2 pool per database, every setting r2d2's and r2d2_sqlite's default.
#[derive(Debug)]
pub(crate) struct R2d2Store {
    pools: Vec<r2d2::Pool<SqliteConnectionManager>>,
}

impl R2d2Store {
    /// Builds the pools (r2d2 opens its `min_idle`, by default `max_size` = 10, at once).
    ///
    /// # Errors
    ///
    /// When a pool cannot open its connections.
    pub(crate) fn new(paths: &[PathBuf]) -> anyhow::Result<Self> {
        let pools = paths
            .iter()
            .map(|p| crate::bench::baselines::r2d2_defaults(p))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { pools })
    }
}

impl Store for R2d2Store {
    fn read<T>(
        &self,
        db: usize,
        f: impl FnOnce(Read<'_>) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let conn = self.pools[db].get()?;
        f(Read::Sqlite(&conn))
    }

    fn write<T: Send>(
        &self,
        db: usize,
        mut f: impl FnMut(Write<'_, '_>) -> anyhow::Result<T> + Send,
    ) -> anyhow::Result<T> {
        let mut conn = self.pools[db].get()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = f(Write::Sqlite(&tx))?;
        tx.commit()?;
        Ok(value)
    }

    fn eco(&self) -> anyhow::Result<&Eco> {
        anyhow::bail!("the data layer runs on the registry or on direct connections, not on r2d2")
    }
}

/// One r2d2 pool per PostgreSQL database, every setting r2d2's and r2d2_postgres's default.
#[derive(Debug)]
pub(crate) struct R2d2PgStore {
    pools: Vec<r2d2::Pool<PostgresConnectionManager<NoTls>>>,
}

impl R2d2PgStore {
    /// Builds a pool for each of `urls` (r2d2 opens its `min_idle`, by default `max_size` =
    /// 10, at once).
    ///
    /// # Errors
    ///
    /// When a URL does not parse or a pool cannot open its connections.
    pub(crate) fn new(urls: &[String]) -> anyhow::Result<Self> {
        let pools = urls
            .iter()
            .map(|url| {
                let manager = PostgresConnectionManager::new(url.parse()?, NoTls);
                Ok(r2d2::Pool::new(manager)?)
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { pools })
    }
}

impl Store for R2d2PgStore {
    fn read<T>(
        &self,
        db: usize,
        f: impl FnOnce(Read<'_>) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let mut conn = self.pools[db].get()?;
        f(Read::Pg(&mut conn))
    }

    fn write<T: Send>(
        &self,
        db: usize,
        mut f: impl FnMut(Write<'_, '_>) -> anyhow::Result<T> + Send,
    ) -> anyhow::Result<T> {
        let mut conn = self.pools[db].get()?;
        let mut tx = conn.transaction()?;
        let value = f(Write::Pg(&mut tx))?;
        tx.commit()?;
        Ok(value)
    }

    fn eco(&self) -> anyhow::Result<&Eco> {
        anyhow::bail!("the data layer runs on the registry, not on r2d2_postgres")
    }
}
