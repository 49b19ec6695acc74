//! The fallback (a private registry) is bounded, counted, and notices a replaced file (that
//! it carries the shared pool's settings is in `parity.rs`).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use ecosystemiser_db::{BackendStats, EcoDb, Error};
use hive_db_core::{DbSnapshot, OpenCause};

use crate::common::settings;

fn direct_stats(db: &EcoDb) -> anyhow::Result<Box<DbSnapshot>> {
    match db.stats()? {
        BackendStats::Direct(s) => Ok(s),
        other => anyhow::bail!("not direct: {other:?}"),
    }
}

fn small(dir: &std::path::Path, limit: u32) -> anyhow::Result<EcoDb> {
    let mut s = settings(dir, "eco.db");
    s.direct_max_connections = Some(limit);
    s.direct_acquire_timeout = Some(Duration::from_millis(50));
    // Every connection open from the start, so no checkout below the bound waits for one.
    s.db.min_idle = limit;
    Ok(EcoDb::direct(&s)?)
}

/// Bug caught: the fallback opening connections beyond its bound (say, the private pool given
/// `db.max_size` instead of `direct_max_connections`), waiting forever, or failing with an
/// error that does not name the database; counters that do not move.
#[test]
fn at_the_bound_a_checkout_waits_then_times_out_naming_the_database() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = small(dir.path(), 2)?;
    let a = db.connection()?;
    let b = db.connection()?;
    let started = std::time::Instant::now();
    let err = db.connection().err();
    assert!(started.elapsed() >= Duration::from_millis(50), "no wait");
    assert!(
        matches!(err, Some(Error::Core(hive_db_core::Error::Timeout { active: 2, ref db, .. }))
            if db.as_str() == "ecosystemiser"),
        "{err:?}"
    );
    let s = direct_stats(&db)?;
    assert_eq!((s.max_size, s.live, s.idle), (2, 2, 0));
    assert_eq!(
        (s.totals.acquires_waited, s.totals.acquire_timeouts),
        (0, 1)
    );
    drop(a);
    let c = db.connection()?;
    drop((b, c));
    let s = direct_stats(&db)?;
    assert_eq!((s.live, s.idle), (2, 2));
    assert_eq!(s.totals.connections_created, 2);
    Ok(())
}

/// Bug caught: a connection kept for reuse while inside a transaction (the next user would
/// find someone else's uncommitted work and locks), or one kept after a panic.
#[test]
fn only_clean_connections_are_kept() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = small(dir.path(), 2)?;
    let conn = db.connection()?;
    conn.execute_batch("CREATE TABLE t (x); BEGIN; INSERT INTO t VALUES (1);")?;
    drop(conn);
    let s = direct_stats(&db)?;
    assert_eq!(s.totals.connections_closed.broken, 1);
    let conn = db.connection()?;
    assert!(conn.is_autocommit());
    let rows: i64 = conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?;
    assert_eq!(rows, 0);
    drop(conn);
    let panicked = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let _conn = db.connection();
                panic!("deliberate");
            })
            .join()
            .is_err()
    });
    assert!(panicked);
    let s = direct_stats(&db)?;
    assert_eq!((s.totals.connections_closed.broken, s.active()), (2, 0));
    Ok(())
}

/// Bug caught: more threads than the bound holding connections at once under contention, or
/// a connection lost when a transaction panics (the pool would shrink until nothing runs).
#[test]
fn threads_never_exceed_the_bound_and_panics_give_connections_back() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut s = settings(dir.path(), "eco.db");
    s.direct_max_connections = Some(2);
    s.direct_acquire_timeout = Some(Duration::from_secs(30));
    let db = EcoDb::direct(&s)?;
    db.transaction(|c| c.execute_batch("CREATE TABLE t (x INTEGER)"))?;
    let barrier = Arc::new(Barrier::new(6));
    let (holding, most) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let db = db.clone();
            let barrier = Arc::clone(&barrier);
            let (holding, most) = (Arc::clone(&holding), Arc::clone(&most));
            std::thread::spawn(move || -> anyhow::Result<()> {
                barrier.wait();
                for j in 0..20 {
                    let conn = db.connection()?;
                    let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_micros(200));
                    holding.fetch_sub(1, Ordering::SeqCst);
                    drop(conn);
                    db.transaction(|c| c.execute("INSERT INTO t VALUES (?1)", [i * 100 + j]))?;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("thread panicked"))??;
    }
    assert!(most.load(Ordering::SeqCst) <= 2, "the bound was exceeded");
    let stats = direct_stats(&db)?;
    assert!(stats.live <= 2, "{stats:?}");
    assert_eq!(stats.active(), 0);

    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = db.transaction(|c| -> hive_db_core::rusqlite::Result<()> {
            c.execute("INSERT INTO t VALUES (-1)", [])?;
            panic!("deliberate");
        });
    }));
    assert!(panicked.is_err());
    assert_eq!(direct_stats(&db)?.active(), 0);
    let (count, negative): (i64, i64) = db.read(|c| {
        c.query_row(
            "SELECT count(*), count(*) FILTER (WHERE x < 0) FROM t",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    })?;
    assert_eq!((count, negative), (120, 0));
    Ok(())
}

/// Bug caught: a zero bound accepted (every checkout would time out) or the file created
/// before the settings are refused.
#[test]
fn unworkable_settings_are_refused_before_anything_is_made() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut s = settings(dir.path(), "eco.db");
    s.direct_max_connections = Some(0);
    assert!(matches!(EcoDb::direct(&s), Err(Error::InvalidInput { .. })));
    s.direct_max_connections = None;
    s.direct_acquire_timeout = Some(Duration::ZERO);
    assert!(matches!(EcoDb::direct(&s), Err(Error::InvalidInput { .. })));
    assert!(!dir.path().join("eco.db").exists());
    Ok(())
}

/// Bug caught (the hand-written fallback had it): a database file replaced under the fallback
/// (a restore, a `mv` over it) and the idle connections it kept writing on into the old,
/// unlinked file, so the work is lost without an error. The private registry validates a
/// connection after idle and refuses with `FileChanged`.
#[test]
fn a_replaced_file_fails_with_the_cores_file_changed_error() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut s = settings(dir.path(), "eco.db");
    // Validate on every checkout, so the test needs no sleep.
    s.db.validate_after_idle = Duration::ZERO;
    let db = EcoDb::direct(&s)?;
    db.transaction(|c| c.execute_batch("CREATE TABLE t (x INTEGER)"))?;
    // Another database moved over the path.
    let other = EcoDb::direct(&settings(dir.path(), "other.db"))?;
    let other_path = other.path().to_path_buf();
    drop(other);
    std::fs::rename(&other_path, db.path())?;

    let written = db.transaction(|c| c.execute("INSERT INTO t VALUES (1)", []));
    assert!(
        matches!(
            written,
            Err(Error::Core(hive_db_core::Error::Open {
                cause: OpenCause::FileChanged,
                ref db,
                ..
            })) if db.as_str() == "ecosystemiser"
        ),
        "{written:?}"
    );
    let read = db.read(|c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)));
    assert!(
        matches!(
            read,
            Err(Error::Core(hive_db_core::Error::Open {
                cause: OpenCause::FileChanged,
                ..
            }))
        ),
        "{read:?}"
    );
    Ok(())
}
