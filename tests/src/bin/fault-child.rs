//! A child process for fault tests: runs one scenario that may hang, abort, or need limits or
//! another user, and reports what it saw as `key value` lines on standard output (errors as
//! [`hive_tests::describe`] words), so the parent can bound, kill and judge it.
//!
//! - `register BAD GOOD`: registers GOOD (created), then BAD (not created); prints
//!   `bad <ok|error>`; when BAD registered, `use <ok|error>` for a read, an integrity check and
//!   a write on it; then `good <ok|error>` for a write and read on GOOD.
//! - `create PATH`: registers PATH (created) and commits one row, so that `-wal` and `-shm`
//!   exist; prints `mode-db`, `mode-wal`, `mode-shm`, `mode-folder` (PATH's folder) and
//!   `mode-outer` (that folder's folder) in octal, then `created`.
//!
//! Exit codes: 0 the scenario ran (whatever it found), 1 it could not run, 2 usage.

use std::os::unix::fs::PermissionsExt;
use std::process::ExitCode;
use std::time::Duration;

use hive_db_core::{DbConfig, DbName, Registry};
use hive_tests::{describe, describe_any};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["register", bad, good] => register(bad, good),
        ["create", path] => create(path),
        _ => {
            eprintln!("usage: fault-child register BAD GOOD | create PATH");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("fault-child: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn created() -> DbConfig {
    DbConfig {
        create_if_missing: true,
        ..quick()
    }
}

/// Short timeouts: a scenario that waits fails within seconds.
fn quick() -> DbConfig {
    DbConfig {
        connection_timeout: Duration::from_secs(2),
        busy_timeout: Duration::from_secs(1),
        ..DbConfig::default()
    }
}

/// A word for the result of using a database: `ok` or the error.
fn outcome(result: anyhow::Result<()>) -> String {
    match result {
        Ok(()) => "ok".to_owned(),
        Err(err) => match err
            .chain()
            .find_map(|e| e.downcast_ref::<rusqlite::Error>())
        {
            Some(rusqlite::Error::SqliteFailure(e, _)) => {
                format!("sqlite:{}", e.extended_code)
            }
            _ => describe_any(&err),
        },
    }
}

fn use_db(registry: &Registry, db: &DbName) -> anyhow::Result<()> {
    registry.write(db, |tx| -> anyhow::Result<()> {
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS probe (v INTEGER); INSERT INTO probe VALUES (1);",
        )?;
        Ok(())
    })?;
    registry.read(db, |c| -> anyhow::Result<()> {
        let n: i64 = c.query_row("SELECT count(*) FROM probe", [], |r| r.get(0))?;
        anyhow::ensure!(n > 0, "probe row missing");
        Ok(())
    })
}

fn register(bad: &str, good: &str) -> anyhow::Result<()> {
    let registry = Registry::new();
    let good_db = DbName::new("good")?;
    registry.register(&good_db, good, created())?;
    use_db(&registry, &good_db)?;
    let bad_db = DbName::new("bad")?;
    match registry.register(&bad_db, bad, quick()) {
        Ok(()) => {
            println!("bad ok");
            let used = registry
                .read(&bad_db, |c| -> anyhow::Result<()> {
                    let integrity: String =
                        c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
                    anyhow::ensure!(integrity == "ok", "integrity_check: {integrity}");
                    let tables: Vec<String> = c
                        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table'")?
                        .query_map([], |r| r.get(0))?
                        .collect::<Result<_, _>>()?;
                    for table in tables {
                        c.query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |r| {
                            r.get::<_, i64>(0)
                        })?;
                    }
                    Ok(())
                })
                .and_then(|()| use_db(&registry, &bad_db));
            println!("use {}", outcome(used));
        }
        Err(err) => println!("bad {}", describe(&err)),
    }
    println!("good {}", outcome(use_db(&registry, &good_db)));
    registry.close_all(Duration::from_secs(2));
    Ok(())
}

fn create(path: &str) -> anyhow::Result<()> {
    let registry = Registry::new();
    let db = DbName::new("created")?;
    registry.register(&db, path, created())?;
    use_db(&registry, &db)?;
    // The pool is open, so `-wal` and `-shm` exist now (closing may remove them).
    let path = std::path::Path::new(path);
    let wal = format!("{}-wal", path.display());
    let shm = format!("{}-shm", path.display());
    let parent = path.parent().unwrap_or(path);
    let grandparent = parent.parent().unwrap_or(parent);
    for (what, file) in [
        ("db", path),
        ("wal", wal.as_ref()),
        ("shm", shm.as_ref()),
        ("folder", parent),
        ("outer", grandparent),
    ] {
        let mode = std::fs::metadata(file)?.permissions().mode() & 0o7777;
        println!("mode-{what} {mode:o}");
    }
    println!("created");
    registry.close_all(Duration::from_secs(2));
    Ok(())
}
