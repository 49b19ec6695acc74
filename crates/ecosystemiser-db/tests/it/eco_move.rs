//! `eco-move` as a person runs it, on the original code's files: the binary, a private
//! PostgreSQL server, the exit status and what the target holds afterwards.

use std::path::Path;
use std::process::Command;

use ecosystemiser_db::{EcoDb, Runs};
use hive_db_core::rusqlite::Connection;
use hive_pg_harness::{require_postgres, server};

use crate::common::{pg_config, pg_registry};

const PY_SCHEMA: &str = include_str!("../fixtures/original/schema.sql");
const PY_EVENTS_BUS: &str = include_str!("../fixtures/original/events_bus.sql");
const PY_COMPONENTS: &str = include_str!("../fixtures/original/components.sql");
const PY_DATA: &str = include_str!("../fixtures/original/data.sql");
const PY_EVENTS_BUS_DATA: &str = include_str!("../fixtures/original/events_bus_data.sql");
const PY_COMPONENTS_DATA: &str = include_str!("../fixtures/original/components_data.sql");

/// A file as the original code left it: its schemas and rows, in rollback-journal mode.
fn original(path: &Path) -> anyhow::Result<()> {
    let conn = Connection::open(path)?;
    for sql in [
        PY_SCHEMA,
        PY_EVENTS_BUS,
        PY_COMPONENTS,
        PY_DATA,
        PY_EVENTS_BUS_DATA,
        PY_COMPONENTS_DATA,
    ] {
        conn.execute_batch(sql)?;
    }
    Ok(())
}

/// Runs eco-move; its exit code and standard error.
fn eco_move(from: &Path, to: &str) -> anyhow::Result<(i32, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_eco-move"))
        .args(["--from"])
        .arg(from)
        .args(["--to", to])
        .output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Rows of `table` on the target.
fn target_rows(url: &str, table: &str) -> anyhow::Result<i64> {
    let registry = pg_registry(url)?;
    let pg = registry.postgres(&hive_db_core::DbName::new(ecosystemiser_db::DB_NAME)?)?;
    let n = pg.read_primary(|c| {
        c.query_one(&format!("SELECT count(*) FROM {table}"), &[])?
            .try_get(0)
    })?;
    Ok(n)
}

/// Bug caught: a file of the original code (an older schema, a rollback journal, the
/// original's tables) refused or moved without its rows, or written to by the move (its
/// journal mode switched, its schema adopted in place).
#[test]
fn an_original_file_moves_whole_and_untouched() -> anyhow::Result<()> {
    require_postgres!();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("original.db");
    original(&path)?;
    let before = std::fs::read(&path)?;
    let url = server()?.fresh_db()?;
    let (code, stderr) = eco_move(&path, &url)?;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(std::fs::read(&path)?, before, "the source changed");
    assert!(!dir.path().join("original.db-wal").exists());

    let source = Connection::open(&path)?;
    let count = |table: &str| -> anyhow::Result<i64> {
        Ok(source.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?)
    };
    for table in ["simulations", "ecosystemiser_events"] {
        assert!(count(table)? > 0, "the fixture has no {table}");
        assert_eq!(target_rows(&url, table)?, count(table)?, "{table}");
    }
    // The repository's own components table moves as library specs, beside the library's.
    assert!(count("components")? > 0);
    assert_eq!(
        target_rows(&url, "component_specs")?,
        count("component_specs")? + count("components")?
    );
    // The moved runs read back through the data layer on PostgreSQL.
    let registry = hive_db_core::Registry::new();
    let db = EcoDb::with_postgres(&registry, &url, pg_config())?;
    assert!(Runs::new(&db).optimization("opt-1")?.is_some());
    Ok(())
}

/// Bug caught: a column someone added to the source left behind by the move (its values
/// lost on the server), or the refusal leaving rows in the target; an index someone added
/// not mentioned.
#[test]
fn a_column_someone_added_is_refused_by_name_and_nothing_moves() -> anyhow::Result<()> {
    require_postgres!();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("original.db");
    original(&path)?;
    let conn = Connection::open(&path)?;
    conn.execute_batch(
        "CREATE INDEX my_own_index ON simulations (solver_type);
         ALTER TABLE simulations ADD COLUMN my_notes TEXT DEFAULT 'kept';",
    )?;
    drop(conn);
    let url = server()?.fresh_db()?;
    let (code, stderr) = eco_move(&path, &url)?;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("my_notes"), "{stderr}");
    assert!(stderr.contains("index my_own_index"), "{stderr}");
    assert_eq!(target_rows(&url, "simulations")?, 0);
    Ok(())
}
