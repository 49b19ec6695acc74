//! The schema on PostgreSQL: the same numbered versions as SQLite's ([`SCHEMA_VERSION`]),
//! recorded in the one-row table `ecosystemiser_schema_version`, each step in a transaction
//! of its own that first locks that row (`SELECT .. FOR UPDATE`), so two processes migrating
//! at once never both apply a step: the second waits, then finds the step done. A row lock,
//! not an advisory lock, so engines that speak PostgreSQL without advisory locks work too.
//!
//! No step drops anything: each is `CREATE .. IF NOT EXISTS` / `ADD COLUMN IF NOT EXISTS`, so
//! what someone added (a column, index, trigger or view) stays. A database whose version is
//! newer than this code is refused before anything is written to it.

use hive_db_core::postgres::error::SqlState;
use hive_db_core::{DbName, PgHandle};

use super::SCHEMA_VERSION;
use crate::error::{Error, Result};

/// The table that holds the version; one row, `id = 1`.
pub(crate) const VERSION_TABLE: &str = "ecosystemiser_schema_version";

/// The steps, oldest first: step N brings the database to version N.
const STEPS: [&str; SCHEMA_VERSION] = [
    include_str!("pg/v1.sql"),
    include_str!("pg/v2.sql"),
    include_str!("pg/v3.sql"),
    include_str!("pg/v4.sql"),
];

const BOOTSTRAP: &str = "CREATE TABLE IF NOT EXISTS ecosystemiser_schema_version (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        version BIGINT NOT NULL
    );
    INSERT INTO ecosystemiser_schema_version (id, version) VALUES (1, 0)
        ON CONFLICT DO NOTHING";

/// How often the bootstrap is tried when another process creates the version table at the
/// same moment (PostgreSQL's `IF NOT EXISTS` is not safe against a concurrent create).
const BOOTSTRAP_ATTEMPTS: u32 = 5;

fn too_new(pg: &PgHandle, found: i64) -> Error {
    Error::SchemaTooNew {
        db: pg.name().clone(),
        path: pg.target().to_path_buf(),
        found,
        known: SCHEMA_VERSION,
    }
}

/// The recorded version: `None` when there is no version table yet.
///
/// # Errors
///
/// The core's errors.
fn recorded(pg: &PgHandle) -> hive_db_core::Result<Option<i64>> {
    pg.read_primary(|c| {
        let exists: bool = c
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&VERSION_TABLE])?
            .try_get(0)?;
        if !exists {
            return Ok(None);
        }
        let row = c.query_opt(
            "SELECT version FROM ecosystemiser_schema_version WHERE id = 1",
            &[],
        )?;
        row.map(|r| r.try_get(0)).transpose()
    })
}

/// The recorded version, 0 when there is none (the integration status's probe).
///
/// # Errors
///
/// The core's errors.
pub(crate) fn read_version(pg: &PgHandle) -> hive_db_core::Result<i64> {
    Ok(recorded(pg)?.unwrap_or(0))
}

/// Migrates the database to [`SCHEMA_VERSION`], one transaction per step.
///
/// # Errors
///
/// [`Error::SchemaTooNew`] (nothing written); [`Error::MigrationStep`] naming the version
/// whose step failed (rolled back; the earlier steps stay); the core's errors.
pub(crate) fn migrate(pg: &PgHandle) -> Result<()> {
    let db = pg.name();
    if let Some(found) = recorded(pg)?
        && found > SCHEMA_VERSION as i64
    {
        return Err(too_new(pg, found));
    }
    bootstrap(pg)?;
    for (i, sql) in STEPS.iter().enumerate() {
        let step = i + 1;
        let wrap = |source: Error| Error::MigrationStep {
            db: db.clone(),
            target: pg.target().to_path_buf(),
            version: step,
            source: Box::new(source),
        };
        pg.write_with(|tx| -> Result<()> {
            let found: i64 = tx
                .query_one(
                    "SELECT version FROM ecosystemiser_schema_version WHERE id = 1 FOR UPDATE",
                    &[],
                )
                .and_then(|r| r.try_get(0))
                .map_err(|e| Error::pg(db, "lock the schema version", e))?;
            if found > SCHEMA_VERSION as i64 {
                return Err(too_new(pg, found));
            }
            if found >= step as i64 {
                return Ok(());
            }
            tx.batch_execute(sql)
                .map_err(|e| Error::pg(db, "apply a migration step", e))?;
            tx.execute(
                "UPDATE ecosystemiser_schema_version SET version = $1 WHERE id = 1",
                &[&(step as i64)],
            )
            .map_err(|e| Error::pg(db, "record the schema version", e))?;
            Ok(())
        })
        .map_err(|e| match e {
            e @ Error::SchemaTooNew { .. } => e,
            e => wrap(e),
        })?;
    }
    Ok(())
}

/// Creates the version table with its row, unless there.
fn bootstrap(pg: &PgHandle) -> Result<()> {
    let db: &DbName = pg.name();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = pg.write_with(|tx| {
            tx.batch_execute(BOOTSTRAP)
                .map_err(|e| Error::pg(db, "create the schema version table", e))
        });
        match result {
            Err(Error::Postgres {
                code: Some(ref c), ..
            }) if attempt < BOOTSTRAP_ATTEMPTS
                && (c == SqlState::UNIQUE_VIOLATION.code()
                    || c == SqlState::DUPLICATE_TABLE.code()) =>
            {
                continue;
            }
            other => return other,
        }
    }
}
