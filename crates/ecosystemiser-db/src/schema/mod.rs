//! The schema as numbered migrations recorded in `PRAGMA user_version` (the pending ones run
//! together in one `BEGIN IMMEDIATE` transaction, so a file is never left between versions,
//! and the version they start from is read inside it: a process that waited for another's
//! migration finds it done), and the checks made before anything is written to a file.
//!
//! Every migration is idempotent as well (`IF NOT EXISTS`, shape checks before changes), and
//! a file made by the original Python code (version 0 with its tables already there) is
//! adopted in place, ending with the schema of a fresh file. No migration drops or breaks
//! what it does not know: a column, index, trigger or view someone added stays and works as
//! it did, or the migration fails and the file is left as it was (`shape`). A file whose
//! tables lack a fresh file's columns, or declare them with another type, is refused.

mod adopt;
#[cfg(feature = "postgres")]
pub(crate) mod pg;
mod shape;

use std::path::Path;
use std::sync::OnceLock;

use hive_db_core::rusqlite::{Connection, ErrorCode, Transaction, TransactionBehavior};
use hive_db_core::{DbConfig, DbName, OpenCause, open_connection};
use rusqlite_migration::{HookError, HookResult};

use crate::error::{Error, Result};

/// The newest schema version this code knows.
pub const SCHEMA_VERSION: usize = 4;

/// Every EcoSystemiser table, parents before children: the order to copy them in (from one
/// engine to the other, say) and, reversed, to empty them. Each engine's bookkeeping is left
/// out: SQLite's `sqlite_sequence`, PostgreSQL's `ecosystemiser_schema_version` and
/// `ecosystemiser_event_order`. A test compares it with the tables of a fresh database on
/// each engine.
pub const TABLES: [&str; 13] = [
    "simulations",
    "simulation_metrics",
    "studies",
    "study_simulations",
    "analysis_runs",
    "analysis_results",
    "optimization_runs",
    "optimization_iterations",
    "component_types",
    "component_specs",
    "version_history",
    "ecosystemiser_events",
    "event_subscriptions",
];

const V1_SQL: &str = include_str!("v1.sql");
const V2_SQL: &str = include_str!("v2.sql");
const V3_SQL: &str = include_str!("v3.sql");

/// A migration step: it runs in the migration's transaction.
type Step = fn(&Transaction<'_>) -> HookResult;

/// The migrations, oldest first; version N is after the Nth.
const STEPS: [Step; SCHEMA_VERSION] = [v1, v2, v3, v4];

/// Version 1: adopt an events table of either earlier shape (with what someone added to it),
/// create whatever is missing, and copy the repository's separate `components` table into
/// the library.
fn v1(tx: &Transaction<'_>) -> HookResult {
    let legacy_events = adopt::set_aside_old_events(tx)?;
    tx.execute_batch(V1_SQL)?;
    // The set-aside table takes its indexes' names along, so `IF NOT EXISTS` skips ours of
    // the same names; version 4 creates them once the names are free again.
    if let Some(old) = legacy_events {
        adopt::copy_old_events(tx, &old)?;
    }
    adopt::copy_components_table(tx)?;
    Ok(())
}

/// Version 2: resolve duplicate default specs left by earlier code, then the indexes.
fn v2(tx: &Transaction<'_>) -> HookResult {
    adopt::resolve_duplicate_defaults(tx)?;
    tx.execute_batch(V2_SQL)?;
    Ok(())
}

/// The event indexes version 2 made and version 3 replaces: (name, its first column); the
/// second is `seq`.
const V2_EVENT_INDEXES: [(&str, &str); 4] = [
    ("idx_events_correlation_seq", "correlation_id"),
    ("idx_events_simulation_seq", "simulation_id"),
    ("idx_events_analysis_seq", "analysis_id"),
    ("idx_events_optimization_seq", "optimization_id"),
];

/// Version 3: smaller event indexes (see `v3.sql`). Each version 2 index is dropped only
/// when it is the one version 2 makes (on the events table, on its column and `seq`, neither
/// unique, partial, descending nor of another collation): version 2 skips a name that
/// exists, so an index of that name made otherwise is someone's own, and stays.
fn v3(tx: &Transaction<'_>) -> HookResult {
    for (name, column) in V2_EVENT_INDEXES {
        if shape::is_plain_index(tx, "ecosystemiser_events", name, &[column, "seq"])? {
            tx.execute_batch(&format!("DROP INDEX {name}"))?;
        }
    }
    tx.execute_batch(V3_SQL)?;
    Ok(())
}

/// The columns version 4 adds: (table, column, declaration).
const V4_COLUMNS: [(&str, &str, &str); 2] = [
    ("optimization_runs", "error_message", "TEXT"),
    ("studies", "error_message", "TEXT"),
];

/// Version 4: an error message for optimization runs and studies (a column someone added
/// under that name already is kept as it is), and the version 1 indexes that adopting the
/// schema module's events table leaves out (in version 1 here, and in files older builds
/// adopted). Every statement of version 1 is `IF NOT EXISTS`, so running it again creates
/// exactly what is missing and changes nothing else.
fn v4(tx: &Transaction<'_>) -> HookResult {
    tx.execute_batch(V1_SQL)?;
    for (table, column, declaration) in V4_COLUMNS {
        // Column names are case-insensitive in SQLite: `Error_Message` is this column.
        if !adopt::columns(tx, table)?
            .iter()
            .any(|c| c.eq_ignore_ascii_case(column))
        {
            tx.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN {column} {declaration}"
            ))?;
        }
    }
    Ok(())
}

/// A fresh database's tables' columns and its indexes, made once per process in memory.
fn fresh() -> Result<&'static shape::Fresh, HookError> {
    static FRESH: OnceLock<Result<shape::Fresh, String>> = OnceLock::new();
    let made = FRESH.get_or_init(|| {
        let make = || -> Result<shape::Fresh, HookError> {
            let name = hive_db_core::DbName::new("ecosystemiser")
                .map_err(|e| HookError::Hook(format!("cannot name the fresh database: {e}")))?;
            // SQLite opens the name `:memory:` as a private database in memory.
            let mut conn = hive_db_core::open_connection(
                &name,
                std::path::Path::new(":memory:"),
                &hive_db_core::DbConfig::default(),
            )
            .map_err(|e| HookError::Hook(format!("cannot open a fresh database: {e}")))?;
            let tx = conn.transaction()?;
            for step in STEPS {
                step(&tx)?;
            }
            // Version 4 keeps a column someone added under one of its names as it is.
            let kept = V4_COLUMNS
                .iter()
                .map(|(table, column, _)| (*table, *column));
            shape::Fresh::of(&tx, &TABLES, kept.collect())
        };
        make().map_err(|e| match e {
            HookError::Hook(message) => message,
            e => format!("{e:?}"),
        })
    });
    made.as_ref()
        .map_err(|e| HookError::Hook(format!("cannot make a fresh schema to compare: {e}")))
}

/// Checks an existing file before anything is written to it: that it is a SQLite database,
/// and that its schema is not newer than this code; returns the connection it checked on,
/// in the file's own journal mode, for the migration. A missing or empty file passes, with
/// `None` (it is created or initialised by the caller).
///
/// # Errors
///
/// [`Error::NotADatabase`] naming the path; [`Error::SchemaTooNew`]; the core's errors when
/// the file cannot be opened.
pub(crate) fn inspect(db: &DbName, path: &Path, config: &DbConfig) -> Result<Option<Connection>> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() && meta.len() > 0 => {}
        // Missing, empty, a folder or unreadable: prepare_database reports the cause.
        _ => return Ok(None),
    }
    let not_a_db = |source| Error::NotADatabase {
        db: db.clone(),
        path: path.to_path_buf(),
        source,
    };
    let conn = match open_connection(db, path, config) {
        Ok(conn) => conn,
        Err(hive_db_core::Error::Open {
            cause: OpenCause::NotADatabase,
            ..
        }) => return Err(not_a_db(None)),
        Err(e) => return Err(e.into()),
    };
    let found = user_version(&conn).map_err(|e| {
        if e.sqlite_error_code() == Some(ErrorCode::NotADatabase) {
            not_a_db(Some(e))
        } else {
            Error::sqlite(db, "read schema version", e)
        }
    })?;
    if found > SCHEMA_VERSION as i64 || found < 0 {
        return Err(Error::SchemaTooNew {
            db: db.clone(),
            path: path.to_path_buf(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    Ok(Some(conn))
}

/// The file's `PRAGMA user_version`.
pub(crate) fn user_version(conn: &Connection) -> hive_db_core::rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

/// Migrates the database on `conn` to [`SCHEMA_VERSION`], all pending migrations in one
/// `BEGIN IMMEDIATE` transaction (so nothing is half-migrated).
///
/// # Errors
///
/// [`Error::SchemaTooNew`] when the file is newer than this code; [`Error::Migration`] when a
/// migration fails or would break a view or trigger that worked before it (it is rolled
/// back), or when a table of [`TABLES`] is missing from the file, or lacks a column of a fresh
/// database or declares one with another type affinity (a file made or changed by hand):
/// refused at open, not failing at its first use.
pub(crate) fn migrate(db: &DbName, path: &Path, conn: &mut Connection) -> Result<()> {
    migrate_to(db, path, conn, SCHEMA_VERSION)?;
    let failed = |source: rusqlite_migration::Error| Error::Migration {
        db: db.clone(),
        path: path.to_path_buf(),
        source: Box::new(source),
    };
    let mut missing = Vec::new();
    for table in TABLES {
        let there: bool = conn
            .query_row(
                "SELECT count(*) > 0 FROM sqlite_schema
                 WHERE type = 'table' AND name = ?1 COLLATE NOCASE",
                [table],
                |r| r.get(0),
            )
            .map_err(|e| failed(e.into()))?;
        if !there {
            missing.push(table);
        }
    }
    if !missing.is_empty() {
        return Err(failed(rusqlite_migration::Error::Hook(format!(
            "the file is at version {SCHEMA_VERSION} but has no table {missing:?}"
        ))));
    }
    // Also for a file a migration just checked: cheap, the fresh columns are made once.
    fresh()
        .and_then(|fresh| shape::refuse_unlike_fresh(conn, fresh))
        .map_err(|e| failed(e.into()))
}

/// Migrates to `version` (for tests of each step).
///
/// The version is read once without a lock, which is enough when there is nothing to do,
/// and again inside the `BEGIN IMMEDIATE` transaction before any step runs: another process
/// may have migrated the file (or a newer build moved it past this code) while this one
/// waited for the lock, and steps run again over its work would copy back rows deleted
/// since, or write an older version over a newer one.
pub(crate) fn migrate_to(
    db: &DbName,
    path: &Path,
    conn: &mut Connection,
    version: usize,
) -> Result<()> {
    let version = version.min(SCHEMA_VERSION);
    let failed = |source: rusqlite_migration::Error| Error::Migration {
        db: db.clone(),
        path: path.to_path_buf(),
        source: Box::new(source),
    };
    let from = |found: i64| {
        usize::try_from(found)
            .ok()
            .filter(|v| *v <= SCHEMA_VERSION)
            .ok_or_else(|| Error::SchemaTooNew {
                db: db.clone(),
                path: path.to_path_buf(),
                found,
                known: SCHEMA_VERSION,
            })
    };
    if from(user_version(conn).map_err(|e| failed(e.into()))?)? >= version {
        return Ok(());
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| failed(e.into()))?;
    let start = from(user_version(&tx).map_err(|e| failed(e.into()))?)?;
    if start >= version {
        return Ok(());
    }
    let before = shape::compile(&tx).map_err(|e| failed(e.into()))?;
    for step in &STEPS[start..version] {
        step(&tx).map_err(|e| failed(e.into()))?;
    }
    shape::refuse_what_broke(&tx, &before).map_err(|e| failed(e.into()))?;
    if version == SCHEMA_VERSION {
        fresh()
            .and_then(|fresh| shape::refuse_unlike_fresh(&tx, fresh))
            .map_err(|e| failed(e.into()))?;
    }
    tx.pragma_update(None, "user_version", version as i64)
        .map_err(|e| failed(e.into()))?;
    tx.commit().map_err(|e| failed(e.into()))
}

#[cfg(test)]
mod tests;
