//! A database's lock keeper for its callers' reads (see docs/ARCHITECTURE.md, "The lock
//! keeper"): a connection of the registry's own that holds a read transaction while `get`
//! and `read` calls keep coming, so that theirs skip the WAL read lock's system calls. What
//! must hold whatever it does: reads see every commit before them, nothing is held once
//! reads stop, a replaced file is never opened or changed, and closing closes it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, Instant};

use hive_db_core::rusqlite::params;
use hive_db_core::{DbConfig, DbName, Registry};

use crate::support::{
    Fixture, TestResult, config, count_t, fixture, open_fds_under, replace_with_one_row,
    replacement_kept, stop_and_join, three_rows, truncate_checkpoint,
};

/// Long enough for the keeper to open (it opens after about 20 ms of steady reads) and to
/// take a few holds.
const STEADY: Duration = Duration::from_millis(200);

/// A fixture with `t(v)` holding `rows` rows.
fn with_rows(name: &str, rows: i64) -> anyhow::Result<Fixture> {
    let f = fixture(name, config())?;
    f.registry.write(&f.name, |tx| {
        tx.execute_batch("CREATE TABLE t (v INTEGER)")?;
        for v in 0..rows {
            tx.execute("INSERT INTO t VALUES (?1)", params![v])?;
        }
        Ok(())
    })?;
    Ok(f)
}

/// `read`s one after another for `period`, alternating with `get`s.
fn read_steadily(registry: &Registry, name: &DbName, period: Duration) -> TestResult {
    let end = Instant::now() + period;
    while Instant::now() < end {
        registry.read(name, count_t)?;
        count_t(&*registry.get(name)?)?;
    }
    Ok(())
}

/// Bug caught: the read keeper's hold outliving the reads that took it (the clock's tick
/// not ending it): no checkpoint could copy what was written after the hold, nor start the
/// WAL again, for as long as reads paused. Also, through the open files: no keeper opened
/// by steady reads.
#[test]
fn once_reads_stop_the_keeper_holds_no_read_transaction() -> TestResult {
    let f = with_rows("keeper_idle", 20)?;
    read_steadily(&f.registry, &f.name, Duration::from_millis(5))?;
    let before = open_fds_under(f.dir.path());
    // About 20 ms on a quiet machine; a loaded one may starve the clock's tick of the busy
    // ticks in a row it waits for, so up to 5 s.
    let start = Instant::now();
    let mut during = before;
    while during <= before && start.elapsed() < Duration::from_secs(5) {
        read_steadily(&f.registry, &f.name, STEADY)?;
        during = open_fds_under(f.dir.path());
    }
    assert!(
        during > before,
        "steady reads opened no keeper: {before} open files before them, {during} after"
    );
    // Frames past the keeper's last hold, then no more reads: a few ticks later, every
    // TRUNCATE checkpoint over about 140 ms (three and a half periods of the keepers'
    // common gap, so a keeper still taking holds outside it would show) gets through.
    f.registry
        .write(&f.name, |tx| tx.execute_batch("INSERT INTO t VALUES (-1)"))?;
    std::thread::sleep(Duration::from_millis(50));
    // A row before each, so that each has frames to copy: a keeper holding the read lock
    // of a fully copied WAL would not stop it.
    let results: Vec<(i64, i64, i64)> = (0..20)
        .map(|_| {
            let wrote = f
                .registry
                .write(&f.name, |tx| tx.execute_batch("INSERT INTO t VALUES (-2)"));
            let result = match wrote {
                Ok(()) => truncate_checkpoint(&f).unwrap_or((1, -1, -1)),
                Err(_) => (1, -2, -2),
            };
            std::thread::sleep(Duration::from_millis(7));
            result
        })
        .collect();
    assert!(
        results.iter().all(|r| r.0 == 0 && r.1 == r.2),
        "TRUNCATE checkpoints once reads stopped, (busy, frames, copied): {results:?}; \
         something still holds a read transaction"
    );
    assert_eq!(f.registry.read(&f.name, count_t)?, 41);
    Ok(())
}

/// Bug caught: a read beside the keeper's transaction seeing the keeper's snapshot instead
/// of the newest commit (a read run on the keeper's connection, or the keeper's hold taken
/// on the caller's). Two threads keep reads coming while this one commits row after row;
/// each read made after a commit returned must count that row.
#[test]
fn reads_beside_the_keeper_see_every_commit_before_them() -> TestResult {
    let f = Arc::new(with_rows("keeper_fresh", 0)?);
    let stop = Arc::new(AtomicBool::new(false));
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let (f, stop) = (Arc::clone(&f), Arc::clone(&stop));
            std::thread::spawn(move || -> TestResult {
                while !stop.load(SeqCst) {
                    read_steadily(&f.registry, &f.name, Duration::from_millis(1))?;
                }
                Ok(())
            })
        })
        .collect();
    let checked = (|| -> TestResult {
        read_steadily(&f.registry, &f.name, STEADY)?;
        for written in 1..=300_i64 {
            f.registry
                .write(&f.name, |tx| tx.execute_batch("INSERT INTO t VALUES (1)"))?;
            let seen = f.registry.read(&f.name, count_t)?;
            assert_eq!(
                seen, written,
                "a read after commit {written} saw {seen} rows"
            );
            let seen = count_t(&*f.registry.get(&f.name)?)?;
            assert_eq!(
                seen, written,
                "a `get` after commit {written} saw {seen} rows"
            );
        }
        Ok(())
    })();
    stop_and_join(&stop, busy)?;
    checked
}

/// Bug caught: the keeper opened on whatever file is at the database's path (without the
/// pool's identity checks) once the one it had was replaced, or closed without the pool's
/// closing checkpoint: the replacement took on the old database's `-wal` and, as that
/// connection closed, had it copied in (three rows where it had one). Reads keep coming
/// before and after the replacement, so the keeper notices the move, closes, and is asked
/// to open again. (Either defence alone keeps the replacement as it was here; the test
/// fails with both gone.)
#[test]
fn the_keeper_never_opens_a_file_that_replaced_the_registered_one() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (registry, name) = three_rows(dir.path(), config())?;
    read_steadily(&registry, &name, STEADY)?;
    replace_with_one_row(dir.path(), "")?;
    // Errors are expected here (the pool's own checks refuse the moved file's connections).
    let _ = read_steadily(&registry, &name, STEADY);
    registry.close_all(Duration::from_secs(2));
    drop(registry);
    replacement_kept(dir.path())
}

/// Bug caught: closing a database that is read steadily leaving its keeper open (the file
/// stays open after `close`, and the keeper's hold can keep the pool's closing checkpoint
/// of a moved file from emptying the WAL, which the replacement then takes on).
#[test]
fn closing_a_database_read_steadily_closes_its_keeper() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (registry, name) = three_rows(
        dir.path(),
        DbConfig {
            validate_after_idle: Duration::from_secs(3600),
            ..config()
        },
    )?;
    let registry = Arc::new(registry);
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (registry, name, stop) = (Arc::clone(&registry), name.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            // Until closed: its errors after `close` are expected.
            while !stop.load(SeqCst) {
                if read_steadily(&registry, &name, Duration::from_millis(1)).is_err() {
                    break;
                }
            }
        })
    };
    std::thread::sleep(STEADY);
    replace_with_one_row(dir.path(), "PRAGMA journal_mode = WAL;")?;
    // A handle keeps the database itself alive past `close_all`, as an application's may.
    let handle = registry.handle(&name)?;
    registry.close_all(Duration::from_secs(2));
    let open = open_fds_under(dir.path());
    drop(handle);
    stop.store(true, SeqCst);
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reading thread panicked"))?;
    assert_eq!(open, 0, "files of the database still open after close_all");
    drop(registry);
    replacement_kept(dir.path())
}

/// Bug caught: calls on a closed database (refused, through a handle kept past `close`)
/// opening a keeper on its file, which then stays open. (Two defences: the tick opens none
/// for a closed database, and one opened meanwhile closes as it finds the database closed;
/// the test fails with both gone.)
#[test]
fn calls_on_a_closed_database_open_no_keeper() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (registry, name) = three_rows(dir.path(), config())?;
    let handle = registry.handle(&name)?;
    registry.close_all(Duration::from_secs(2));
    let end = Instant::now() + STEADY;
    while Instant::now() < end {
        assert!(handle.read(count_t).is_err(), "a read of a closed database");
        assert!(handle.get().is_err(), "a connection of a closed database");
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        open_fds_under(dir.path()),
        0,
        "files of the closed database open after calls on it"
    );
    Ok(())
}
