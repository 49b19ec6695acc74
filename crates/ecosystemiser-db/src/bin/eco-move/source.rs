//! The source's side: a snapshot of the file (it is never written), brought to the current
//! schema by the data layer; what it holds beyond that schema (a column refused, indexes,
//! triggers and views listed); and a read-only connection to the snapshot.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ecosystemiser_db::EcoDb;
use hive_db_core::rusqlite::{self, Connection};
use hive_db_core::{DbConfig, DbName, Registry, open_connection};

use super::failure::{Context, Failure, fail};
use super::target::Column;

/// The original code's component table, and the columns it needs for the data layer's
/// adoption to have copied its rows into the component library (types and specs). Of that
/// shape, its rows are moved as the library's; of another, it is a table the target does
/// not know, and refused.
pub(super) const CARRIED: &str = "components";
pub(super) const CARRIED_COLUMNS: [&str; 6] = [
    "id",
    "category",
    "component_class",
    "technical_data",
    "economic_data",
    "metadata",
];

/// The temporary folders of this run, for [`remove_temporary`]: dropped, a `TempDir`
/// removes its folder, but a signal ends the process without running drops, and each left
/// a whole copy of the database behind.
static TEMPORARY: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A temporary folder only its owner may enter (the snapshot is a copy of the database,
/// which the data layer keeps owner-only), listed for [`remove_temporary`].
fn private_tempdir(prefix: &str) -> Result<tempfile::TempDir, Failure> {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .context(|| "cannot make a temporary folder".to_owned())?;
    TEMPORARY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(dir.path().to_path_buf());
    Ok(dir)
}

/// Removes this run's temporary folders (from the signal handler, as the run is ended).
pub(super) fn remove_temporary() {
    let dirs = std::mem::take(
        &mut *TEMPORARY
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Whether the source's `components` table is of the shape adoption copies.
pub(super) fn carried(source: &Connection) -> Result<bool, Failure> {
    let read = || -> rusqlite::Result<Vec<String>> {
        let mut stmt = source.prepare("SELECT name FROM pragma_table_info('components')")?;
        let names = stmt.query_map([], |r| r.get::<_, String>(0))?;
        names.collect()
    };
    let cols = read().context(|| "cannot read the source's components columns".to_owned())?;
    Ok(!cols.is_empty() && CARRIED_COLUMNS.iter().all(|n| cols.iter().any(|c| c == n)))
}

/// A snapshot of the source at `path`, brought to the current schema, in a temporary
/// folder (removed when the value drops); and the schema objects someone added to the
/// source that a move does not carry (indexes, triggers, views), by name.
pub(super) fn stage(path: &Path) -> Result<(tempfile::TempDir, PathBuf, Vec<String>), Failure> {
    if !path.is_file() {
        return fail(format!("{} is not a file", path.display()));
    }
    let dir = private_tempdir("eco-move-")?;
    let copy = dir.path().join("source.db");
    {
        let original = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .context(|| format!("cannot open {} read-only", path.display()))?;
        original
            .execute("VACUUM INTO ?1", [copy.to_string_lossy()])
            .context(|| format!("cannot take a snapshot of {}", path.display()))?;
    }
    let known = known_objects(&copy)?;
    let registry = Registry::new();
    let settings = ecosystemiser_db::Settings::new(copy.clone());
    EcoDb::with_registry(&registry, &settings).context(|| {
        format!(
            "{} is not an EcoSystemiser database the data layer adopts",
            path.display()
        )
    })?;
    registry.close_all(std::time::Duration::from_secs(5));
    Ok((dir, copy, known))
}

/// The indexes, triggers and views of the source that are not the data layer's own (it
/// names its own `idx_*`, `trg_*`, `ecosystemiser_*`, or SQLite makes them).
pub(super) fn known_objects(path: &Path) -> Result<Vec<String>, Failure> {
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .context(|| "cannot open the snapshot".to_owned())?;
    let read = || -> rusqlite::Result<Vec<String>> {
        let mut stmt = conn.prepare(
            "SELECT type || ' ' || name FROM sqlite_schema
             WHERE type IN ('index', 'trigger', 'view') AND sql IS NOT NULL
               AND tbl_name <> 'components'
             ORDER BY type, name",
        )?;
        let names = stmt.query_map([], |r| r.get::<_, String>(0))?;
        names.collect()
    };
    let all = read().context(|| "cannot list the source's schema".to_owned())?;
    // What a fresh database of the current schema has is the data layer's own.
    let fresh_dir = private_tempdir("eco-move-fresh-")?;
    let fresh = fresh_dir.path().join("fresh.db");
    let registry = Registry::new();
    EcoDb::with_registry(&registry, &ecosystemiser_db::Settings::new(fresh.clone()))
        .context(|| "cannot make a fresh database to compare with".to_owned())?;
    registry.close_all(std::time::Duration::from_secs(5));
    let fresh_conn =
        Connection::open_with_flags(&fresh, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .context(|| "cannot open the fresh database".to_owned())?;
    let own: BTreeSet<String> = {
        let mut stmt = fresh_conn
            .prepare("SELECT type || ' ' || name FROM sqlite_schema WHERE type IN ('index', 'trigger', 'view')")
            .context(|| "cannot list the fresh schema".to_owned())?;
        let names = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .context(|| "cannot list the fresh schema".to_owned())?;
        names
            .collect::<rusqlite::Result<_>>()
            .context(|| "cannot list the fresh schema".to_owned())?
    };
    Ok(all.into_iter().filter(|o| !own.contains(o)).collect())
}

/// A source column of `table` the target's `columns` do not have: refused by name.
pub(super) fn extra_columns(
    source: &Connection,
    table: &str,
    columns: &[Column],
) -> Result<(), Failure> {
    let read = || -> rusqlite::Result<Vec<String>> {
        let mut stmt = source.prepare(&format!(
            "SELECT name FROM pragma_table_info({})",
            quote(table)
        ))?;
        let names = stmt.query_map([], |r| r.get::<_, String>(0))?;
        names.collect()
    };
    let names = read().context(|| format!("cannot read the source's {table} columns"))?;
    let extra: Vec<&String> = names
        .iter()
        .filter(|n| !columns.iter().any(|c| c.name == **n))
        .collect();
    if extra.is_empty() {
        Ok(())
    } else {
        fail(format!(
            "the source's {table} has columns the target's schema does not: {extra:?} \
             (add them to the target's table first; nothing moved)"
        ))
    }
}

/// `s` as an SQL string literal.
pub(super) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The source, on a connection that refuses writes.
pub(super) fn open_source(path: &Path) -> Result<Connection, Failure> {
    if !path.is_file() {
        return fail(format!("{} is not a file", path.display()));
    }
    let name = DbName::new("ecosystemiser").context(|| "the database name".to_owned())?;
    let config = DbConfig {
        create_if_missing: false,
        ..DbConfig::default()
    };
    let conn = open_connection(&name, path, &config)
        .context(|| format!("cannot open {}", path.display()))?;
    conn.execute_batch("PRAGMA query_only = ON")
        .context(|| "cannot make the source connection read-only".to_owned())?;
    Ok(conn)
}

/// The AUTOINCREMENT high-water mark of `table` in the source (`sqlite_sequence`), if any:
/// ids below it were handed out once, even when their rows are gone.
pub(super) fn autoincrement_mark(conn: &Connection, table: &str) -> Result<Option<i64>, Failure> {
    let read = || -> rusqlite::Result<Option<i64>> {
        let exists: bool = conn.query_row(
            "SELECT count(*) > 0 FROM sqlite_schema WHERE name = 'sqlite_sequence'",
            [],
            |r| r.get(0),
        )?;
        if !exists {
            return Ok(None);
        }
        conn.query_row(
            "SELECT max(seq) FROM sqlite_sequence WHERE name = ?1",
            [table],
            |r| r.get(0),
        )
    };
    read().context(|| format!("cannot read {table}'s AUTOINCREMENT mark"))
}

/// The source's tables (SQLite's own left out).
pub(super) fn sqlite_tables(conn: &Connection) -> Result<BTreeSet<String>, Failure> {
    let read = || -> rusqlite::Result<BTreeSet<String>> {
        let mut stmt = conn.prepare(
            // `_` is LIKE's any-one-character: unescaped, a table named `sqlitebackup` was
            // taken for SQLite's own, neither moved nor refused. (SQLite reserves the
            // prefix `sqlite_` in any case, as LIKE compares.)
            "SELECT name FROM sqlite_schema
             WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
        )?;
        let names = stmt.query_map([], |r| r.get(0))?;
        names.collect()
    };
    read().context(|| "cannot list the source's tables".to_owned())
}
