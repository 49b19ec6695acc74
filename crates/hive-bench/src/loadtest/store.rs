//! Where the operations run: the registry, or for `--compare` one of the two ways the
//! registry replaces (a connection opened per operation, or plain r2d2 with its defaults).

use std::path::PathBuf;

use hive_db_core::rusqlite::{Connection, TransactionBehavior};
use hive_db_core::{DbConfig, DbHandle, DbName, immediate_transaction, open_connection};
use r2d2_sqlite::SqliteConnectionManager;

use crate::loadtest::eco::Eco;

/// Read and write access to the load test's databases, by index (0 is `ecosystemiser`,
/// then the application databases).
pub(crate) trait Store: Sync {
    /// Runs `f` with a connection of database `db`.
    fn read<T>(
        &self,
        db: usize,
        f: impl FnOnce(&Connection) -> anyhow::Result<T>,
    ) -> anyhow::Result<T>;

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction of database `db`: `Ok` only once `f`'s
    /// work has committed; rolled back when `f` fails.
    fn write<T>(
        &self,
        db: usize,
        f: impl FnOnce(&Connection) -> anyhow::Result<T>,
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
}

impl Path {
    /// The label in reports.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Path::Registry => "registry",
            Path::ConnectPerOp => "connect per op",
            Path::R2d2 => "r2d2 defaults",
        }
    }
}

/// The registry, through a handle per database (no name lookup per operation).
#[derive(Debug)]
pub(crate) struct RegistryStore {
    handles: Vec<DbHandle>,
    eco: Eco,
}

impl RegistryStore {
    /// `handles` in store order, and the repositories on the registry's `ecosystemiser`.
    pub(crate) fn new(handles: Vec<DbHandle>, eco: Eco) -> Self {
        Self { handles, eco }
    }
}

impl Store for RegistryStore {
    fn read<T>(
        &self,
        db: usize,
        f: impl FnOnce(&Connection) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        self.handles[db].read_with(f)
    }

    fn write<T>(
        &self,
        db: usize,
        f: impl FnOnce(&Connection) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        self.handles[db].write_with(|tx| f(tx))
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
        f: impl FnOnce(&Connection) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let (_, conn) = self.open(db)?;
        f(&conn)
    }

    fn write<T>(
        &self,
        db: usize,
        f: impl FnOnce(&Connection) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let (name, mut conn) = self.open(db)?;
        immediate_transaction(name, &mut conn, |tx| f(tx))
    }

    fn eco(&self) -> anyhow::Result<&Eco> {
        anyhow::bail!("the data layer keeps its own connections: it does not run connect-per-op")
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
        f: impl FnOnce(&Connection) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let conn = self.pools[db].get()?;
        f(&conn)
    }

    fn write<T>(
        &self,
        db: usize,
        f: impl FnOnce(&Connection) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let mut conn = self.pools[db].get()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = f(&tx)?;
        tx.commit()?;
        Ok(value)
    }

    fn eco(&self) -> anyhow::Result<&Eco> {
        anyhow::bail!("the data layer runs on the registry or on direct connections, not on r2d2")
    }
}
