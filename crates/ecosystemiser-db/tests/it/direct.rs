//! The direct fallback is bounded, counted, and cleans up after failures.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use ecosystemiser_db::{BackendStats, DirectStats, EcoDb, Error};

use crate::common::settings;

fn direct_stats(db: &EcoDb) -> anyhow::Result<DirectStats> {
    match db.stats()? {
        BackendStats::Direct(s) => Ok(s),
        other => anyhow::bail!("not direct: {other:?}"),
    }
}

fn small(dir: &std::path::Path, limit: u32) -> anyhow::Result<EcoDb> {
    let mut s = settings(dir, "eco.db");
    s.direct_max_connections = Some(limit);
    s.direct_acquire_timeout = Some(Duration::from_millis(50));
    Ok(EcoDb::direct(&s)?)
}

/// Bug caught: the fallback opening connections without bound, waiting forever, or failing
/// with an error that names neither the database nor the cause; counters that do not move.
#[test]
fn at_the_limit_a_checkout_times_out_with_a_typed_error() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = small(dir.path(), 2)?;
    let a = db.connection()?;
    let b = db.connection()?;
    let err = db.connection().err();
    assert!(
        matches!(err, Some(Error::DirectTimeout { in_use: 2, limit: 2, ref db, .. }) if db.as_str() == "ecosystemiser"),
        "{err:?}"
    );
    let s = direct_stats(&db)?;
    assert_eq!((s.limit, s.in_use, s.peak_in_use), (2, 2, 2));
    assert_eq!((s.acquires_waited, s.timeouts), (1, 1));
    drop(a);
    let c = db.connection()?;
    drop((b, c));
    let s = direct_stats(&db)?;
    assert_eq!((s.in_use, s.idle), (0, 2));
    // The migration's connection is reused, one more is opened; `c` reuses `a`'s.
    assert_eq!(s.opened_total, 2);
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
    assert_eq!((s.closed_dirty, s.idle), (1, 0));
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
    assert_eq!((s.closed_dirty, s.in_use), (2, 0));
    Ok(())
}

/// Bug caught: the semaphore letting more than its size through under contention, or a
/// permit lost when a transaction panics (the pool would shrink until nothing can run).
#[test]
fn threads_never_exceed_the_limit_and_panics_free_permits() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut s = settings(dir.path(), "eco.db");
    s.direct_max_connections = Some(2);
    s.direct_acquire_timeout = Some(Duration::from_secs(30));
    let db = EcoDb::direct(&s)?;
    db.transaction(|c| {
        c.execute_batch("CREATE TABLE t (x INTEGER)")
            .map_err(anyhow::Error::from)
    })?;
    let barrier = Arc::new(Barrier::new(6));
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let db = db.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || -> anyhow::Result<()> {
                barrier.wait();
                for j in 0..20 {
                    db.transaction(|c| -> anyhow::Result<()> {
                        c.execute("INSERT INTO t VALUES (?1)", [i * 100 + j])?;
                        Ok(())
                    })?;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("thread panicked"))??;
    }
    let stats = direct_stats(&db)?;
    assert!(stats.peak_in_use <= 2, "{stats:?}");
    assert_eq!(stats.in_use, 0);

    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = db.transaction(|c| -> anyhow::Result<()> {
            c.execute("INSERT INTO t VALUES (-1)", [])?;
            panic!("deliberate");
        });
    }));
    assert!(panicked.is_err());
    assert_eq!(direct_stats(&db)?.in_use, 0);
    let (count, negative): (i64, i64) = db.read(|c| {
        c.query_row(
            "SELECT count(*), count(*) FILTER (WHERE x < 0) FROM t",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(anyhow::Error::from)
    })?;
    assert_eq!((count, negative), (120, 0));
    Ok(())
}

/// Bug caught: a zero limit accepted (every checkout would time out) or the file created
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
