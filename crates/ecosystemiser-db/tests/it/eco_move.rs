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

/// A plain client of the target, as its owner (the test server's superuser).
fn client(url: &str) -> anyhow::Result<hive_db_core::postgres::Client> {
    Ok(hive_db_core::postgres::Client::connect(
        url,
        hive_db_core::postgres::NoTls,
    )?)
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

/// Bug caught: a table of someone else's in the target's schema (an audit log with a
/// `timestamptz` column, an extension's table) refused the whole move, though eco-move
/// never touches it; it must stay as it was.
#[test]
fn a_table_eco_move_does_not_move_is_left_alone() -> anyhow::Result<()> {
    require_postgres!();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("original.db");
    original(&path)?;
    let url = server()?.fresh_db()?;
    let mut admin = client(&url)?;
    admin.batch_execute(
        "CREATE TABLE audit_log (id serial PRIMARY KEY, at timestamptz DEFAULT now(), note text);
         INSERT INTO audit_log (note) VALUES ('kept');",
    )?;
    let (code, stderr) = eco_move(&path, &url)?;
    assert_eq!(code, 0, "{stderr}");
    assert!(target_rows(&url, "simulations")? > 0);
    let kept: i64 = admin
        .query_one("SELECT count(*) FROM audit_log", &[])?
        .try_get(0)?;
    assert_eq!(kept, 1);
    Ok(())
}

/// Bug caught: eco-move looked for the target's tables in schema `public` only, while the
/// data layer creates them in the first schema of the role's `search_path` (a schema of the
/// role's own, say): the move was refused, saying the target lacked every table it had.
#[test]
fn a_move_goes_into_the_schema_the_data_layer_uses() -> anyhow::Result<()> {
    require_postgres!();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("original.db");
    original(&path)?;
    let url = server()?.fresh_db()?;
    let db = url.rsplit('/').next().unwrap_or_default().to_owned();
    let mut admin = client(&url)?;
    admin.batch_execute(&format!(
        "DROP ROLE IF EXISTS ecomover; CREATE ROLE ecomover LOGIN;
         GRANT ALL ON DATABASE {db} TO ecomover;
         CREATE SCHEMA ecomover AUTHORIZATION ecomover;"
    ))?;
    let as_role = url.replacen("postgres@", "ecomover@", 1);
    let (code, stderr) = eco_move(&path, &as_role)?;
    assert_eq!(code, 0, "{stderr}");
    let moved: i64 = admin
        .query_one("SELECT count(*) FROM ecomover.simulations", &[])?
        .try_get(0)?;
    assert!(moved > 0);
    Ok(())
}

/// Bug caught: eco-move's snapshot (a whole copy of the database) in a folder everyone may
/// read, and left behind when SIGTERM or Ctrl-C ended the move.
#[test]
fn an_interrupted_move_leaves_no_snapshot() -> anyhow::Result<()> {
    require_postgres!();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("big.db");
    original(&path)?;
    {
        // Enough rows that the move is still under way when the signal comes.
        let conn = Connection::open(&path)?;
        conn.execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000)
             INSERT INTO ecosystemiser_events
                 (event_id, event_type, timestamp, source_component, payload, metadata)
             SELECT 'bulk-' || i, 'bulk', '2024-01-01T00:00:00Z', 'test', '{}', '{}' FROM n;",
        )?;
    }
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp)?;
    let url = server()?.fresh_db()?;
    let child = Command::new(env!("CARGO_BIN_EXE_eco-move"))
        .arg("--from")
        .arg(&path)
        .args(["--to", &url])
        .env("TMPDIR", &tmp)
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let snapshots = || -> anyhow::Result<Vec<std::path::PathBuf>> {
        Ok(std::fs::read_dir(&tmp)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let seen = loop {
        if let Some(found) = snapshots()?.into_iter().next() {
            break found;
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "no snapshot folder");
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&seen)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{}", seen.display());
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    assert!(status.success());
    let out = child.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert_eq!(snapshots()?, Vec::<std::path::PathBuf>::new(), "{stderr}");
    // Interrupted before its migration or inside its transaction: no row either way.
    let exists: bool = client(&url)?
        .query_one("SELECT to_regclass('simulations') IS NOT NULL", &[])?
        .try_get(0)?;
    if exists {
        assert_eq!(
            target_rows(&url, "simulations")?,
            0,
            "a part of the move committed"
        );
    }
    Ok(())
}

/// Bug caught: a signal that came while the move's `COMMIT` was out was answered "nothing
/// committed", though the server went on to commit the move (a retry was then refused, the
/// target holding rows, and pushed towards `--replace`).
#[test]
fn a_signal_during_the_commit_does_not_say_nothing_committed() -> anyhow::Result<()> {
    require_postgres!();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("original.db");
    original(&path)?;
    let url = server()?.fresh_db()?;
    {
        // The schema first, then a deferred trigger that holds the move's COMMIT 3 s.
        let registry = hive_db_core::Registry::new();
        let _eco = EcoDb::with_postgres(&registry, &url, pg_config())?;
        registry.close_all(std::time::Duration::from_secs(5));
    }
    let mut admin = client(&url)?;
    admin.batch_execute(
        "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF coalesce(current_setting('test.slept', true), '') = '' THEN
             PERFORM set_config('test.slept', '1', true);
             PERFORM pg_sleep(3);
           END IF;
           RETURN NULL;
         END $$;
         CREATE CONSTRAINT TRIGGER slow AFTER INSERT ON simulations
           DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit();",
    )?;
    let child = Command::new(env!("CARGO_BIN_EXE_eco-move"))
        .arg("--from")
        .arg(&path)
        .args(["--to", &url])
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let committing: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE query = 'COMMIT' AND wait_event = 'PgSleep'",
                &[],
            )?
            .try_get(0)?;
        if committing > 0 {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the move never committed"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    assert!(status.success());
    let out = child.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("may have committed"), "{stderr}");
    assert!(!stderr.contains("nothing committed"), "{stderr}");
    Ok(())
}
