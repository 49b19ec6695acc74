//! Closing pools: borrowed connections are waited for, and closed when they come back.

use std::time::Duration;

use hive_db_core::{DbConfig, Error};

use crate::support::{TestResult, config, eventually, fixture, open_fds_under};

/// Bug caught: closing that ignores borrowed connections. After close, a borrowed connection that comes back is closed, not pooled,
/// and nothing of the database stays open.
#[test]
fn close_with_borrowed_connections_leaves_nothing_open() -> TestResult {
    let f = fixture(
        "closing",
        DbConfig {
            min_idle: 3,
            max_size: 5,
            ..config()
        },
    )?;
    let borrowed = f.registry.get(&f.name)?;
    assert!(
        open_fds_under(f.dir.path()) > 0,
        "the fd probe sees nothing"
    );
    let report = f.registry.close(&f.name, Duration::from_millis(50))?;
    assert_eq!(report.db, f.name);
    assert_eq!(report.still_out.len(), 1, "{report:?}");
    assert!(
        report.still_out[0].checked_out_at.contains("close.rs"),
        "{report:?}"
    );
    // New checkouts are refused at once.
    assert!(matches!(f.registry.get(&f.name), Err(Error::Closed { .. })));
    // The borrowed connection still works until it is returned...
    let one: i64 = borrowed.query_row("SELECT 1", [], |r| r.get(0))?;
    assert_eq!(one, 1);
    drop(borrowed);
    // ...and is then closed, with every other connection: no file of the database stays open.
    assert!(
        eventually(Duration::from_secs(5), || open_fds_under(f.dir.path()) == 0),
        "{} fds still open",
        open_fds_under(f.dir.path())
    );
    let stats = f.registry.db_stats(&f.name)?;
    assert!(!stats.open);
    assert_eq!(
        stats.totals.connections_created,
        stats.totals.connections_closed.total(),
        "{stats:?}"
    );
    assert_eq!(
        stats.totals.connections_closed.pool_closed,
        stats.totals.connections_created
    );
    Ok(())
}

/// close waits for connections returned before the deadline and reports nothing out.
#[test]
fn close_waits_for_connections_returned_in_time() -> TestResult {
    let f = fixture("waiting-close", config())?;
    let conn = f.registry.get(&f.name)?;
    let returner = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        drop(conn);
    });
    let report = f.registry.close(&f.name, Duration::from_secs(10))?;
    returner.join().expect("returner thread");
    assert!(report.still_out.is_empty(), "{report:?}");
    assert!(report.waited >= Duration::from_millis(40), "{report:?}");
    // It returned when the connection came back, not at the 10 s deadline.
    assert!(report.waited < Duration::from_secs(5), "{report:?}");
    assert_eq!(open_fds_under(f.dir.path()), 0);
    Ok(())
}

/// Idle connections are closed at once: close with nothing borrowed does not wait out its
/// deadline.
#[test]
fn close_without_borrowed_connections_returns_at_once() -> TestResult {
    let f = fixture(
        "idle-close",
        DbConfig {
            min_idle: 4,
            ..config()
        },
    )?;
    let report = f.registry.close(&f.name, Duration::from_secs(30))?;
    assert!(report.still_out.is_empty());
    assert!(report.waited < Duration::from_secs(10), "{report:?}");
    assert_eq!(open_fds_under(f.dir.path()), 0);
    let totals = f.registry.db_stats(&f.name)?.totals;
    assert_eq!(
        totals.connections_created,
        totals.connections_closed.pool_closed
    );
    Ok(())
}

/// Counters survive close and re-register; a closed name can be registered again.
#[test]
fn counters_survive_close_and_reregister() -> TestResult {
    let f = fixture("again", config())?;
    for _ in 0..3 {
        drop(f.registry.get(&f.name)?);
    }
    f.registry.close(&f.name, Duration::from_secs(1))?;
    let before_snap = f.registry.db_stats(&f.name)?;
    let (before, before_acquires) = (before_snap.totals, before_snap.acquires());
    f.registry.register(&f.name, f.path(), config())?;
    drop(f.registry.get(&f.name)?);
    let after_snap = f.registry.db_stats(&f.name)?;
    let (after, after_acquires) = (after_snap.totals, after_snap.acquires());
    assert_eq!(before_acquires, 3);
    assert_eq!(after_acquires, 4);
    assert!(after.connections_created > before.connections_created);
    Ok(())
}

/// close_all closes every database against one deadline.
#[test]
fn close_all_closes_everything() -> TestResult {
    let f = fixture("all-a", config())?;
    let b = hive_db_core::DbName::new("all-b")?;
    f.registry
        .register(&b, f.dir.path().join("b.db"), config())?;
    let held = f.registry.get(&b)?;
    let reports = f.registry.close_all(Duration::from_millis(20));
    assert_eq!(reports.len(), 2);
    let out: usize = reports.iter().map(|r| r.still_out.len()).sum();
    assert_eq!(out, 1);
    drop(held);
    assert!(eventually(Duration::from_secs(5), || open_fds_under(
        f.dir.path()
    ) == 0));
    assert!(f.registry.stats().databases.iter().all(|d| !d.open));
    Ok(())
}
