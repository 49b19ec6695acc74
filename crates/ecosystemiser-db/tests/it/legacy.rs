//! The deprecated shims still work. Those that use the process database run in a child
//! process of this test binary, so that `ECOSYSTEMISER_DB_PATH` points into a temporary
//! folder and the process-wide choice of backend can be made both ways.

use std::process::Command;

use ecosystemiser_db::{BackendKind, BackendReason, Error};
use hive_db_core::rusqlite::Connection;

const MODE: &str = "ECOSYSTEMISER_DB_TEST_CHILD";

/// Bug caught: a shim that ignores the path it is given, or whose transaction does not
/// commit / roll back like the new entry point.
#[test]
#[expect(deprecated, reason = "the shims under test")]
fn path_shims_honour_the_path() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let a = dir.path().join("a.db");
    let b = dir.path().join("b.db");
    ecosystemiser_db::ecosystemiser_transaction_at(&a, |c| {
        c.execute_batch("CREATE TABLE marker (x); INSERT INTO marker VALUES (1)")
            .map_err(anyhow::Error::from)
    })?;
    let failed = ecosystemiser_db::ecosystemiser_transaction_at(&a, |c| -> anyhow::Result<()> {
        c.execute("INSERT INTO marker VALUES (2)", [])?;
        anyhow::bail!("deliberate")
    });
    assert!(failed.is_err());
    let conn = ecosystemiser_db::get_db_connection(Some(&a))?;
    let n: i64 = conn.query_row("SELECT count(*) FROM marker", [], |r| r.get(0))?;
    assert_eq!(n, 1);
    drop(conn);
    let other = ecosystemiser_db::get_db_connection(Some(&b))?;
    let tables: i64 = other.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE name = 'marker'",
        [],
        |r| r.get(0),
    )?;
    assert_eq!(tables, 0);
    // The files were made with the full schema by the shims.
    let v: i64 = Connection::open(&b)?.pragma_query_value(None, "user_version", |r| r.get(0))?;
    assert_eq!(v, ecosystemiser_db::SCHEMA_VERSION as i64);
    Ok(())
}

fn run_child(mode: &str) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("data").join("eco.db");
    let out = Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "legacy::process_shims_child",
            "--ignored",
            "--test-threads=1",
        ])
        .env(MODE, mode)
        .env("ECOSYSTEMISER_DB_PATH", &db)
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .output()?;
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child {mode} failed:\n{text}");
    assert!(
        text.contains("1 passed"),
        "child {mode} did not run:\n{text}"
    );
    assert!(db.exists());
    Ok(())
}

/// Bug caught: the process-database shims broken, or the process backend chosen wrongly
/// (claiming the shared pool without a registry, or missing an installed one).
#[test]
fn process_shims_work_on_direct_connections() -> anyhow::Result<()> {
    run_child("direct")
}

/// Bug caught: as above, with a registry installed before first use.
#[test]
fn process_shims_work_on_the_installed_registry() -> anyhow::Result<()> {
    run_child("registry")
}

/// Run by the two tests above in a child process with the environment set.
#[test]
#[ignore = "run in a child process by process_shims_*"]
#[expect(deprecated, reason = "the shims under test")]
fn process_shims_child() -> anyhow::Result<()> {
    let mode = std::env::var(MODE)?;
    let registry = hive_db_core::Registry::new();
    if mode == "registry" {
        hive_db_core::global::install(registry.clone())?;
    }
    assert!(ecosystemiser_db::validate_hive_integration());
    let status = ecosystemiser_db::integration_status()?;
    let expected = if mode == "registry" {
        (
            BackendKind::SharedPool,
            BackendReason::GlobalRegistryInstalled,
            true,
        )
    } else {
        (BackendKind::Direct, BackendReason::NoGlobalRegistry, false)
    };
    assert_eq!(
        (status.backend(), status.reason, status.shared_pool_in_use()),
        expected
    );
    assert_eq!(status.probe, Ok(ecosystemiser_db::SCHEMA_VERSION as i64));

    let path = std::path::PathBuf::from(std::env::var("ECOSYSTEMISER_DB_PATH")?);
    ecosystemiser_db::ecosystemiser_transaction_at(&path, |c| {
        c.execute_batch("CREATE TABLE marker (x); INSERT INTO marker VALUES (7)")
            .map_err(anyhow::Error::from)
    })?;
    let conn = ecosystemiser_db::get_db_connection(None)?;
    let x: i64 = conn.query_row("SELECT x FROM marker", [], |r| r.get(0))?;
    assert_eq!(x, 7);
    drop(conn);

    let pool = ecosystemiser_db::ConnectionPool::new(3);
    assert_eq!(pool.pool_size(), 3);
    let c = pool.get_connection()?;
    let one: i64 = c.query_row("SELECT 1", [], |r| r.get(0))?;
    assert_eq!(one, 1);
    pool.return_connection(c);
    pool.close_all();
    assert!(matches!(
        pool.get_connection(),
        Err(Error::PoolClosed { .. })
    ));
    let shared = ecosystemiser_db::get_connection_pool().get_connection()?;
    drop(shared);

    if mode == "registry" {
        // The transaction went through the registry's writer lane.
        let stats = registry.db_stats(&hive_db_core::DbName::new("ecosystemiser")?)?;
        assert!(stats.totals.commits >= 1);
    }
    println!("child {mode} ok");
    Ok(())
}

/// Bug caught: the shims keep the database they opened for a path in a process-wide list;
/// once the file at that path was deleted (or replaced by another), every later call on
/// the path failed for good on the old file's pool, or wrote into the deleted file.
#[test]
#[expect(deprecated, reason = "the shims under test")]
fn a_path_whose_file_was_replaced_gets_the_new_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let a = dir.path().join("replaced.db");
    ecosystemiser_db::ecosystemiser_transaction_at(&a, |c| {
        c.execute_batch("CREATE TABLE marker (x); INSERT INTO marker VALUES (1)")
            .map_err(anyhow::Error::from)
    })?;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = a.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    // Another file at the path, with no marker table.
    let fresh = ecosystemiser_db::get_db_connection(Some(&a));
    let fresh = match fresh {
        Ok(c) => c,
        Err(e) => anyhow::bail!("the path's new file could not be used: {e}"),
    };
    let tables: i64 = fresh.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE name = 'marker'",
        [],
        |r| r.get(0),
    )?;
    assert_eq!(tables, 0, "the connection is still on the deleted file");
    drop(fresh);
    ecosystemiser_db::ecosystemiser_transaction_at(&a, |c| {
        c.execute_batch("CREATE TABLE marker2 (x)")
            .map_err(anyhow::Error::from)
    })?;
    let check = Connection::open(&a)?;
    let n: i64 = check.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE name = 'marker2'",
        [],
        |r| r.get(0),
    )?;
    assert_eq!(n, 1, "the write went to the deleted file");
    Ok(())
}
