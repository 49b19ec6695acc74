//! The database file deleted, renamed or replaced while its pool is open.

use std::path::Path;
use std::time::{Duration, Instant};

use hive_db_core::{DbConfig, DbName, HealthStatus, Registry};
use hive_tests::{NO_HANG, describe_any};

/// What happens to the file under the open pool.
#[derive(Debug, Clone, Copy)]
enum Swap {
    Deleted,
    Renamed,
    Replaced,
}

const SWAPS: [Swap; 3] = [Swap::Deleted, Swap::Renamed, Swap::Replaced];

/// What the registry did after the swap.
#[derive(Debug)]
struct AfterSwap {
    write: Result<(), String>,
    read: Result<i64, String>,
    health: HealthStatus,
    took: Duration,
    /// Rows in the file now at the registered path, if there is one.
    rows_at_path: Option<i64>,
}

fn rows_in(path: &Path) -> anyhow::Result<Option<i64>> {
    if !path.exists() {
        return Ok(None);
    }
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let rows = conn
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap_or(-1);
    Ok(Some(rows))
}

/// Applies `swap` to the file at `path`: removed; renamed to `moved.db` beside it; or
/// replaced (renamed over) by a database `other.db` whose table `t` holds what `rows`
/// inserts.
fn apply(swap: Swap, path: &Path, rows: &str) -> anyhow::Result<()> {
    let dir = path.parent().ok_or_else(|| anyhow::anyhow!("no folder"))?;
    match swap {
        Swap::Deleted => std::fs::remove_file(path)?,
        Swap::Renamed => std::fs::rename(path, dir.join("moved.db"))?,
        Swap::Replaced => {
            let other = dir.join("other.db");
            let conn = rusqlite::Connection::open(&other)?;
            conn.execute_batch(&format!("CREATE TABLE t (v INTEGER); {rows}"))?;
            drop(conn);
            std::fs::rename(&other, path)?;
        }
    }
    Ok(())
}

/// Registers a database with 3 rows, applies `swap` to its file, then writes a row, reads,
/// and checks health.
fn after_swap(swap: Swap) -> anyhow::Result<AfterSwap> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("x.db");
    let registry = Registry::new();
    let db = DbName::new("swapped")?;
    let config = DbConfig {
        create_if_missing: true,
        max_size: 2,
        min_idle: 2,
        connection_timeout: Duration::from_secs(1),
        busy_timeout: Duration::from_secs(1),
        validate_after_idle: Duration::ZERO,
        ..DbConfig::default()
    };
    registry.register(&db, &path, config)?;
    registry.write(&db, |tx| {
        tx.execute_batch("CREATE TABLE t (v INTEGER); INSERT INTO t VALUES (1), (2), (3);")?;
        Ok(())
    })?;
    apply(swap, &path, "")?;
    std::thread::sleep(Duration::from_millis(5));
    let start = Instant::now();
    let write = registry
        .write_with(&db, |tx| -> anyhow::Result<_> {
            tx.execute("INSERT INTO t VALUES (4)", [])?;
            Ok(())
        })
        .map_err(|e| describe_any(&e));
    let read = registry
        .read_with(&db, |c| -> anyhow::Result<_> {
            Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?)
        })
        .map_err(|e| describe_any(&e));
    let health = registry.health(Duration::from_secs(2)).status;
    let took = start.elapsed();
    registry.close_all(Duration::from_secs(2));
    Ok(AfterSwap {
        write,
        read,
        health,
        took,
        rows_at_path: rows_in(&path)?,
    })
}

/// Bug caught: a pool whose file was deleted, renamed or replaced hanging or panicking, or
/// creating a new empty database at the old path after a delete or rename (a reconnect with
/// `SQLITE_OPEN_CREATE`) and carrying on there.
#[test]
fn a_swapped_file_never_hangs_and_no_empty_database_appears() -> anyhow::Result<()> {
    for swap in SWAPS {
        let after = after_swap(swap)?;
        assert!(after.took < NO_HANG, "{swap:?}: {after:?}");
        if matches!(swap, Swap::Deleted | Swap::Renamed) {
            assert_eq!(after.rows_at_path, None, "{swap:?}: {after:?}");
        }
    }
    Ok(())
}

/// Bug caught: writes going on silently into an unlinked or renamed file (lost when the
/// process ends, or landing in a file the operator moved away) and health reporting the
/// database Healthy; and a replacement file taking on the registered database's rows through
/// the `-wal` left at the path. The file's identity should be checked (on validation and in
/// health) and a changed one reported with a typed error.
#[test]
fn a_swapped_file_is_detected() -> anyhow::Result<()> {
    for swap in SWAPS {
        let after = after_swap(swap)?;
        assert!(after.write.is_err(), "{swap:?}: write went on: {after:?}");
        assert!(
            after.read.is_err(),
            "{swap:?}: read a file no longer at its path: {after:?}"
        );
        assert_ne!(after.health, HealthStatus::Healthy, "{swap:?}: {after:?}");
        if matches!(swap, Swap::Replaced) {
            // The replacement must not take on the registered database's rows (through the
            // old `-wal` left at the path).
            assert_eq!(after.rows_at_path, Some(0), "{swap:?}: {after:?}");
        }
    }
    Ok(())
}

/// Bug caught: a file renamed or replaced under an open pool that then closed at once (no
/// connection checked after going idle, which is when the changed file was noticed) lost
/// committed data. SQLite skips the last connection's checkpoint for a moved file and
/// leaves the `-wal` at the old path: the renamed file, opened on its own, had none of the
/// rows still in it, and the replacement at the path replayed them over its own content.
/// Each connection now empties its WAL into the file it has open as it closes.
#[test]
fn a_file_swapped_just_before_close_keeps_every_commit() -> anyhow::Result<()> {
    for swap in [Swap::Renamed, Swap::Replaced] {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("x.db");
        let moved = dir.path().join("moved.db");
        let registry = Registry::new();
        let db = DbName::new("swapped")?;
        let config = DbConfig {
            create_if_missing: true,
            // Validation never comes round before the close.
            validate_after_idle: Duration::from_secs(3600),
            ..DbConfig::default()
        };
        registry.register(&db, &path, config)?;
        registry.write(&db, |tx| {
            tx.execute_batch("CREATE TABLE t (v INTEGER); INSERT INTO t VALUES (1), (2), (3);")?;
            Ok(())
        })?;
        apply(swap, &path, "INSERT INTO t VALUES (42);")?;
        registry.close_all(Duration::from_secs(2));
        drop(registry);
        match swap {
            Swap::Renamed => assert_eq!(rows_in(&moved)?, Some(3), "the renamed file lost rows"),
            _ => assert_eq!(
                rows_in(&path)?,
                Some(1),
                "the replacement took on the old database's WAL"
            ),
        }
    }
    Ok(())
}
