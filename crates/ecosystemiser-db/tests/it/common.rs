//! Helpers: databases in temporary folders or on a private PostgreSQL server, on every
//! backend; and the macro that runs one contract test on each of them.

use std::path::Path;

use ecosystemiser_db::{DB_NAME, EcoDb, Settings};
use hive_db_core::{DbConfig, DbName, PgConfig, Registry};

/// Settings for `file` in `dir`, with small pools so tests stay light.
pub(crate) fn settings(dir: &Path, file: &str) -> Settings {
    let mut s = Settings::new(dir.join(file));
    s.db = small_pool();
    s
}

fn small_pool() -> DbConfig {
    DbConfig {
        max_size: 4,
        min_idle: 1,
        ..DbConfig::default()
    }
}

/// The backends the crate can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// SQLite through a registry the application hands over.
    Pooled,
    /// SQLite through the fallback.
    Direct,
    /// PostgreSQL: `ecosystemiser` registered by URL (a fresh database on the harness's
    /// server), found by `EcoDb::with_registry`.
    Postgres,
}

/// A PostgreSQL configuration with a small pool, for tests.
pub(crate) fn pg_config() -> PgConfig {
    PgConfig {
        pool: small_pool(),
        ..PgConfig::default()
    }
}

/// A registry with `ecosystemiser` registered for `url`.
pub(crate) fn pg_registry(url: &str) -> anyhow::Result<Registry> {
    let registry = Registry::new();
    registry.register_postgres(&DbName::new(DB_NAME)?, url, pg_config())?;
    Ok(registry)
}

/// A database of `kind` for `file` in `dir` (a fresh PostgreSQL database for
/// [`Kind::Postgres`]); the registry (if any) is returned to keep it.
pub(crate) fn open(
    kind: Kind,
    dir: &Path,
    file: &str,
) -> anyhow::Result<(EcoDb, Option<Registry>)> {
    let s = settings(dir, file);
    Ok(match kind {
        Kind::Pooled => {
            let registry = Registry::new();
            (EcoDb::with_registry(&registry, &s)?, Some(registry))
        }
        Kind::Direct => (EcoDb::direct(&s)?, None),
        Kind::Postgres => {
            let registry = pg_registry(&hive_pg_harness::server()?.fresh_db()?)?;
            (EcoDb::with_registry(&registry, &s)?, Some(registry))
        }
    })
}

/// Both SQLite backends, for tests of SQLite's own behaviour.
pub(crate) const BOTH: [Kind; 2] = [Kind::Pooled, Kind::Direct];

/// One number from `db` by plain SQL: `sqlite` (parameter `?1`) on SQLite, `pg` (parameter
/// `$1`) on PostgreSQL, with `key` bound. The tests' own look at the tables.
pub(crate) fn count_of(
    db: &EcoDb,
    sqlite: &str,
    pg: &str,
    key: Option<&str>,
) -> anyhow::Result<i64> {
    match db.engine() {
        hive_db_core::Backend::Postgres => Ok(db.postgres()?.read_primary(|c| {
            let row = match key {
                Some(key) => c.query_one(pg, &[&key])?,
                None => c.query_one(pg, &[])?,
            };
            row.try_get(0)
        })?),
        _ => Ok(db.read(|c| match key {
            Some(key) => c.query_row(sqlite, [key], |r| r.get(0)),
            None => c.query_row(sqlite, [], |r| r.get(0)),
        })?),
    }
}

/// Instantiates a contract test once per backend: `sqlite_pooled`, `sqlite_direct` and
/// `postgres` (skipped with one line where the server's programs are missing, unless
/// `CI=true`), in a module named after the test. The doc comment, which names the bug the
/// test catches, goes on each instance.
macro_rules! contract_test {
    ($(#[doc = $doc:literal])* fn $name:ident($kind:ident: Kind) -> anyhow::Result<()> $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn run($kind: $crate::common::Kind) -> anyhow::Result<()> $body

            $(#[doc = $doc])*
            #[test]
            fn sqlite_pooled() -> anyhow::Result<()> {
                run($crate::common::Kind::Pooled)
            }

            $(#[doc = $doc])*
            #[test]
            fn sqlite_direct() -> anyhow::Result<()> {
                run($crate::common::Kind::Direct)
            }

            $(#[doc = $doc])*
            #[test]
            fn postgres() -> anyhow::Result<()> {
                hive_pg_harness::require_postgres!();
                run($crate::common::Kind::Postgres)
            }
        }
    };
}
pub(crate) use contract_test;

/// Empties every EcoSystemiser table of `db` (for property tests that reuse one database
/// between cases).
pub(crate) fn empty(db: &EcoDb) -> anyhow::Result<()> {
    let tables = ecosystemiser_db::TABLES.join(", ");
    match db.engine() {
        hive_db_core::Backend::Postgres => db
            .postgres()?
            .write(|tx| tx.batch_execute(&format!("TRUNCATE {tables} RESTART IDENTITY CASCADE")))?,
        _ => db.transaction(|c| {
            for table in ecosystemiser_db::TABLES.iter().rev() {
                c.execute(&format!("DELETE FROM {table}"), [])?;
            }
            Ok(())
        })?,
    }
    Ok(())
}
