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

use super::{SCHEMA_VERSION, TABLES};
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

/// The longest a migration step, or the bootstrap, waits for a lock (`lock_timeout`): for
/// the version row held by another migrator, or a table a step alters held by a long
/// transaction. Past it the step fails with SQLSTATE 55P03, naming the database, instead of
/// holding the application's start for as long as the other holds on.
/// (Two seconds in this crate's unit tests, which wait it out.)
const LOCK_WAIT: &str = if cfg!(test) {
    "SET LOCAL lock_timeout = '2s'"
} else {
    "SET LOCAL lock_timeout = '30s'"
};

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

/// The recorded version: `None` when there is no version table yet. Its read waits for a
/// lock on the version table (someone's `LOCK TABLE`, an `ALTER` in an open transaction) at
/// most [`LOCK_WAIT`], as the steps do, then fails with SQLSTATE 55P03.
///
/// # Errors
///
/// The core's errors.
fn recorded(pg: &PgHandle) -> hive_db_core::Result<Option<i64>> {
    pg.read_primary(|c| {
        let mut tx = c.transaction()?;
        tx.batch_execute(LOCK_WAIT)?;
        let exists: bool = tx
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&VERSION_TABLE])?
            .try_get(0)?;
        if !exists {
            return Ok(None);
        }
        let row = tx.query_opt(
            "SELECT version FROM ecosystemiser_schema_version WHERE id = 1",
            &[],
        )?;
        let version = row.map(|r| r.try_get(0)).transpose()?;
        tx.commit()?;
        Ok(version)
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
    match recorded(pg)? {
        Some(found) if found > SCHEMA_VERSION as i64 || found < 0 => {
            return Err(too_new(pg, found));
        }
        // Nothing to do, and no lock to take: the version only grows.
        Some(found) if found == SCHEMA_VERSION as i64 => return tables_present(pg),
        _ => {}
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
            tx.batch_execute(LOCK_WAIT)
                .map_err(|e| Error::pg(db, "bound the migration's lock waits", e))?;
            let found: i64 = tx
                .query_one(
                    "SELECT version FROM ecosystemiser_schema_version WHERE id = 1 FOR UPDATE",
                    &[],
                )
                .and_then(|r| r.try_get(0))
                .map_err(|e| Error::pg(db, "lock the schema version", e))?;
            if found > SCHEMA_VERSION as i64 || found < 0 {
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
    tables_present(pg)
}

/// The columns of the tables of `$1` (as `search_path` finds them): (table, column).
const COLUMNS: &str = "SELECT t, a.attname::text FROM unnest($1::text[]) AS t
     JOIN pg_attribute a ON a.attrelid = to_regclass(t)
     WHERE a.attnum > 0 AND NOT a.attisdropped";

/// The indexes made by `CREATE INDEX` (not those behind a key or `UNIQUE` constraint) on the
/// tables of `$1`: (index, table).
const INDEXES: &str = "SELECT c.relname::text, t FROM unnest($1::text[]) AS t
     JOIN pg_index i ON i.indrelid = to_regclass(t)
     JOIN pg_class c ON c.oid = i.indexrelid
     WHERE NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)";

/// The indexes of `$1` (index names, as `search_path` finds them): (index, its table).
const INDEX_TABLES: &str = "SELECT n, t.relname::text FROM unnest($1::text[]) AS n
     JOIN pg_index i ON i.indexrelid = to_regclass(n)
     JOIN pg_class t ON t.oid = i.indrelid";

/// (table, column) or (index, table) pairs.
type Pairs = Vec<(String, String)>;

/// Rows of two text columns.
fn pairs(
    rows: Vec<hive_db_core::postgres::Row>,
) -> std::result::Result<Pairs, hive_db_core::postgres::Error> {
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// What a fresh database has: each table's columns, and each index's table.
#[derive(Debug)]
struct Fresh {
    columns: Pairs,
    indexes: Pairs,
}

/// The fresh schema's facts: every step run in a savepoint in the session's temporary
/// schema, read, and rolled back (so nothing is written, and a role that may not create in
/// the database's schema can still be checked). Worked out once per process: the steps are
/// this code's.
fn fresh(pg: &PgHandle) -> Result<&'static Fresh> {
    static FRESH: std::sync::OnceLock<Fresh> = std::sync::OnceLock::new();
    if let Some(fresh) = FRESH.get() {
        return Ok(fresh);
    }
    let db = pg.name();
    let tables: Vec<&str> = TABLES.to_vec();
    let fresh = pg.write_with(|tx| -> Result<Fresh> {
        let mut scratch = tx
            .savepoint("ecosystemiser_fresh")
            .map_err(|e| Error::pg(db, "begin the fresh schema's savepoint", e))?;
        let facts = (|| {
            scratch.batch_execute("SET LOCAL search_path = pg_temp")?;
            for sql in STEPS {
                scratch.batch_execute(sql)?;
            }
            Ok(Fresh {
                columns: pairs(scratch.query(COLUMNS, &[&tables])?)?,
                indexes: pairs(scratch.query(INDEXES, &[&tables])?)?,
            })
        })()
        .map_err(|e| Error::pg(db, "work out the fresh schema", e));
        scratch
            .rollback()
            .map_err(|e| Error::pg(db, "roll the fresh schema back", e))?;
        facts
    })?;
    Ok(FRESH.get_or_init(|| fresh))
}

/// `Err(Migration)` naming what the database lacks of a fresh one: a table of [`TABLES`]
/// (dropped by hand at the newest version), a column of one (a table someone made before
/// the data layer, which `CREATE TABLE IF NOT EXISTS` then skipped), or an index of the data
/// layer's name that is on another table (someone's own, which `CREATE INDEX IF NOT EXISTS`
/// then skipped). Refused at open, as on SQLite, not failing at first use. Columns, indexes
/// and tables someone added are no concern.
fn tables_present(pg: &PgHandle) -> Result<()> {
    let tables: Vec<&str> = TABLES.to_vec();
    let missing: Vec<String> = pg
        .read_primary(|c| {
            c.query(
                "SELECT t FROM unnest($1::text[]) AS t WHERE to_regclass(t) IS NULL",
                &[&tables],
            )?
            .iter()
            .map(|r| r.try_get(0))
            .collect()
        })
        .map_err(Error::from)?;
    if !missing.is_empty() {
        return Err(unlike_fresh(
            pg,
            format!("the database is at version {SCHEMA_VERSION} but has no table {missing:?}"),
        ));
    }
    // A session that may create nothing, not even a temporary table (a read-only
    // transaction default), cannot work out the fresh schema; its database opened before
    // this check was made, and still does, with a warning.
    let fresh = match fresh(pg) {
        Ok(fresh) => fresh,
        Err(e) => {
            tracing::warn!(db = %pg.name(), error = %e, "could not compare the database's tables with a fresh schema's; opened without that check");
            return Ok(());
        }
    };
    let index_names: Vec<&str> = fresh.indexes.iter().map(|(i, _)| i.as_str()).collect();
    let (columns, indexes): (Pairs, Pairs) = pg
        .read_primary(|c| {
            Ok((
                pairs(c.query(COLUMNS, &[&tables])?)?,
                pairs(c.query(INDEX_TABLES, &[&index_names])?)?,
            ))
        })
        .map_err(Error::from)?;
    let mut wrong: Vec<String> = fresh
        .columns
        .iter()
        .filter(|column| !columns.contains(column))
        .map(|(table, column)| format!("{table} has no column {column}"))
        .collect();
    for (index, table) in &fresh.indexes {
        if let Some((_, theirs)) = indexes.iter().find(|(i, _)| i == index)
            && theirs != table
        {
            wrong.push(format!(
                "index {index} is on table {theirs}, where the data layer needs its own on \
                 {table} (rename the other index)"
            ));
        }
    }
    if wrong.is_empty() {
        return Ok(());
    }
    Err(unlike_fresh(
        pg,
        format!(
            "the database's tables are not the data layer's: {}",
            wrong.join("; ")
        ),
    ))
}

/// The open's refusal of a database unlike a fresh one, for `why`.
fn unlike_fresh(pg: &PgHandle, why: String) -> Error {
    Error::Migration {
        db: pg.name().clone(),
        path: pg.target().to_path_buf(),
        source: Box::new(rusqlite_migration::Error::Hook(why)),
    }
}

/// Creates the version table with its row, unless there.
fn bootstrap(pg: &PgHandle) -> Result<()> {
    let db: &DbName = pg.name();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = pg.write_with(|tx| {
            tx.batch_execute(LOCK_WAIT)
                .map_err(|e| Error::pg(db, "bound the migration's lock waits", e))?;
            tx.batch_execute(BOOTSTRAP)
                .map_err(|e| Error::pg(db, "create the schema version table", e))
        });
        match result {
            Err(Error::Postgres {
                code: Some(ref c), ..
            }) if attempt < BOOTSTRAP_ATTEMPTS
                && (c == SqlState::UNIQUE_VIOLATION.code()
                    || c == SqlState::DUPLICATE_TABLE.code()
                    // Two sessions creating the table at once: the loser may trip over the
                    // winner's row type instead ("type ... already exists").
                    || c == SqlState::DUPLICATE_OBJECT.code()) =>
            {
                continue;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use hive_db_core::postgres::{Client, NoTls};
    use hive_db_core::{DbConfig, PgConfig, Registry};

    use super::*;

    /// A database of the test server, migrated once, and another session holding its
    /// version row as a migrator in the middle of a step does.
    fn migrated_and_held(version: i64) -> anyhow::Result<(String, Client, Registry, PgHandle)> {
        let url = hive_pg_harness::server()?.fresh_db()?;
        let registry = Registry::new();
        let name = DbName::new("eco-pg-lock")?;
        let config = PgConfig {
            pool: DbConfig {
                max_size: 2,
                min_idle: 0,
                ..DbConfig::default()
            },
            ..PgConfig::default()
        };
        registry.register_postgres(&name, &url, config)?;
        let pg = registry.postgres(&name)?;
        migrate(&pg)?;
        let mut holder = Client::connect(&url, NoTls)?;
        holder.execute(
            "UPDATE ecosystemiser_schema_version SET version = $1",
            &[&version],
        )?;
        holder.batch_execute(
            "BEGIN; SELECT version FROM ecosystemiser_schema_version WHERE id = 1 FOR UPDATE",
        )?;
        Ok((url, holder, registry, pg))
    }

    /// `migrate` on a thread; its result, or `None` if it has not returned within 20 s.
    fn migrate_within_20s(pg: PgHandle) -> Option<Result<()>> {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(migrate(&pg));
        });
        rx.recv_timeout(Duration::from_secs(20)).ok()
    }

    /// Bug caught: every open locked the version row, even of a database already at the
    /// newest version, with no bound on the wait: a session holding the row (a migrator
    /// that hung, a psql left in a transaction) held every application start for as long.
    #[test]
    fn a_current_database_opens_while_another_holds_the_version_row() -> anyhow::Result<()> {
        hive_pg_harness::require_postgres!();
        let (_url, _holder, _registry, pg) = migrated_and_held(SCHEMA_VERSION as i64)?;
        match migrate_within_20s(pg) {
            Some(result) => result?,
            None => panic!("the open waited for the held version row"),
        }
        Ok(())
    }

    /// Bug caught: every open read the version table with no bound on its lock wait, so a
    /// session holding a lock on the table (`LOCK TABLE`, an `ALTER` left in an open
    /// transaction) held every application start for as long, even of a current database.
    #[test]
    fn an_open_waiting_for_a_locked_version_table_gives_up_with_a_typed_error() -> anyhow::Result<()>
    {
        hive_pg_harness::require_postgres!();
        let (_url, mut holder, _registry, pg) = migrated_and_held(SCHEMA_VERSION as i64)?;
        holder.batch_execute("LOCK TABLE ecosystemiser_schema_version IN ACCESS EXCLUSIVE MODE")?;
        match migrate_within_20s(pg) {
            Some(Err(Error::Core(hive_db_core::Error::Postgres { code: Some(c), .. })))
                if c == "55P03" => {}
            Some(other) => panic!("expected a lock timeout, got {other:?}"),
            None => panic!("the open waited for the locked version table past its bound"),
        }
        Ok(())
    }

    /// Bug caught: a step waited for the version row without a bound. It must give up at
    /// the lock wait with a typed error naming the step and the SQLSTATE (55P03).
    #[test]
    fn a_step_waiting_for_the_version_row_gives_up_with_a_typed_error() -> anyhow::Result<()> {
        hive_pg_harness::require_postgres!();
        let (_url, _holder, _registry, pg) = migrated_and_held(3)?;
        match migrate_within_20s(pg) {
            Some(Err(Error::MigrationStep { source, .. })) => assert!(
                matches!(&*source, Error::Postgres { code: Some(c), .. } if c == "55P03"),
                "{source:?}"
            ),
            Some(other) => panic!("expected a lock timeout, got {other:?}"),
            None => panic!("the step waited for the held version row past its bound"),
        }
        Ok(())
    }
}
