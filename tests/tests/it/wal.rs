//! The WAL file's size on disk after a long-running reader pinned it.

use std::path::Path;
use std::time::Duration;

use hive_db_core::{DbConfig, Registry};
use hive_tests::registry_with;

fn wal_bytes(db_path: &Path) -> u64 {
    let mut wal = db_path.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(wal).map_or(0, |m| m.len())
}

fn commit_rows(registry: &Registry, db: &hive_db_core::DbName, n: usize) -> anyhow::Result<()> {
    for _ in 0..n {
        registry.write(db, |tx| {
            tx.execute("INSERT INTO t (v) VALUES (randomblob(6000))", [])?;
            Ok(())
        })?;
    }
    Ok(())
}

/// A long reader pins the WAL while 8,000 commits go by, then lets go; 300 more commits
/// follow. Returns the WAL's size on disk at its peak and at the end.
fn pinned_then_released() -> anyhow::Result<(u64, u64)> {
    let dir = tempfile::tempdir()?;
    let (registry, db) = registry_with(
        dir.path(),
        "wal",
        DbConfig {
            max_size: 3,
            ..DbConfig::default()
        },
    )?;
    let path = dir.path().join("wal.db");
    registry.write(&db, |tx| {
        tx.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB NOT NULL)")?;
        Ok(())
    })?;
    let reader = registry.get(&db)?;
    reader.execute_batch("BEGIN")?;
    let _: i64 = reader.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?;
    commit_rows(&registry, &db, 8000)?;
    let peak = wal_bytes(&path);
    reader.execute_batch("COMMIT")?;
    drop(reader);
    commit_rows(&registry, &db, 300)?;
    // Let a background checkpoint pass finish, if there is one.
    std::thread::sleep(Duration::from_millis(200));
    commit_rows(&registry, &db, 10)?;
    let end = wal_bytes(&path);
    registry.close_all(Duration::from_secs(5));
    Ok((peak, end))
}

/// Bug caught: once a long reader lets go, checkpoints never catching up, so the WAL keeps
/// growing without bound (every later commit appended, none reusing the file).
#[test]
fn the_wal_stops_growing_once_a_long_reader_lets_go() -> anyhow::Result<()> {
    let (peak, end) = pinned_then_released()?;
    eprintln!("WAL peak {peak} bytes, after release {end} bytes");
    assert!(
        peak > 96 << 20,
        "the reader did not pin the WAL: peak {peak}"
    );
    // The 310 commits after the release append about 2.5 MB if nothing reuses the file; a
    // few of them may land before the first complete checkpoint rewinds it.
    assert!(
        end < peak + (1 << 20),
        "the WAL kept growing after the reader let go: {peak} -> {end}"
    );
    Ok(())
}

/// Bug caught: the WAL file staying at its peak size on disk for ever after a long reader
/// (SQLite rewinds it but never truncates without `journal_size_limit` or a truncating
/// checkpoint), so one slow reader costs the disk space for good.
#[test]
fn the_wal_returns_to_a_bounded_size_once_a_long_reader_lets_go() -> anyhow::Result<()> {
    let (peak, end) = pinned_then_released()?;
    // The registry's `journal_size_limit` is about 82 MB (78.6 MiB): far enough above the
    // WAL's size in steady running that an ordinary checkpoint cycle never truncates it.
    assert!(
        peak > 96 << 20,
        "the reader did not pin the WAL: peak {peak}"
    );
    assert!(
        end <= 79 << 20,
        "the WAL stayed at {end} bytes on disk (peak {peak})"
    );
    Ok(())
}
