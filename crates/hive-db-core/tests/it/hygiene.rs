//! No connection is handed on dirty: returning one must neither silently roll back nor leak
//! what the caller had not committed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use hive_db_core::DbConfig;

use crate::support::{TestResult, config, count_rows, create_table, eventually, fixture};

fn single() -> DbConfig {
    DbConfig {
        max_size: 1,
        min_idle: 1,
        ..config()
    }
}

/// Bug caught: a connection returned inside an open transaction must not reach the next
/// borrower with that transaction (and its locks and uncommitted rows) still open.
#[test]
fn uncommitted_work_is_never_handed_to_the_next_borrower() -> TestResult {
    let f = fixture("dirty", single())?;
    create_table(&f)?;
    {
        let conn = f.registry.get(&f.name)?;
        conn.execute_batch("BEGIN; INSERT INTO t (v) VALUES (1);")?;
        // Returned without COMMIT or ROLLBACK.
    }
    let conn = f.registry.get(&f.name)?;
    assert!(
        conn.is_autocommit(),
        "next borrower got an open transaction"
    );
    let n: i64 = conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?;
    assert_eq!(n, 0, "uncommitted row visible to the next borrower");
    drop(conn);
    let stats = f.registry.db_stats(&f.name)?;
    assert_eq!(stats.totals.connections_closed.broken, 1);
    assert_eq!(stats.totals.connections_closed.broken, 1);
    Ok(())
}

/// A panic inside `write` rolls back, frees the lane and the slot; the pool can still reach
/// `max_size` afterwards.
#[test]
fn panic_inside_write_rolls_back_and_the_pool_recovers() -> TestResult {
    let max = 3;
    let f = fixture(
        "panicky",
        DbConfig {
            max_size: max,
            min_idle: 1,
            connection_timeout: Duration::from_secs(2),
            ..config()
        },
    )?;
    create_table(&f)?;
    for _ in 0..max + 2 {
        let r = catch_unwind(AssertUnwindSafe(|| {
            f.registry
                .write(&f.name, |tx| -> hive_db_core::rusqlite::Result<()> {
                    tx.execute("INSERT INTO t (v) VALUES (7)", [])?;
                    panic!("boom inside write");
                })
        }));
        assert!(r.is_err());
    }
    assert_eq!(count_rows(&f)?, 0, "a panicking write committed");
    // All `max` connections can be held at once: no slot leaked, lane free.
    let held: Vec<_> = (0..max)
        .map(|_| f.registry.get(&f.name))
        .collect::<Result<_, _>>()?;
    drop(held);
    f.registry.write(&f.name, |tx| {
        tx.execute("INSERT INTO t (v) VALUES (8)", [])?;
        Ok(())
    })?;
    assert_eq!(count_rows(&f)?, 1);
    let stats = f.registry.db_stats(&f.name)?;
    assert_eq!(stats.totals.connections_closed.broken, u64::from(max) + 2);
    Ok(())
}

/// `write` rolls back when the closure returns `Err`, and commits when it returns `Ok`.
#[test]
fn write_commits_on_ok_and_rolls_back_on_err() -> TestResult {
    let f = fixture("txn", config())?;
    create_table(&f)?;
    let r: anyhow::Result<()> = f.registry.write_with(&f.name, |tx| -> anyhow::Result<_> {
        tx.execute("INSERT INTO t (v) VALUES (1)", [])?;
        anyhow::bail!("caller changed its mind")
    });
    assert!(r.is_err());
    assert_eq!(count_rows(&f)?, 0);
    f.registry.write(&f.name, |tx| {
        tx.execute("INSERT INTO t (v) VALUES (2)", [])?;
        Ok(())
    })?;
    assert_eq!(count_rows(&f)?, 1);
    let totals = f.registry.db_stats(&f.name)?.totals;
    assert_eq!((totals.commits, totals.rollbacks), (2, 1));
    // One at a time, each write is its own transaction; the failed one commits none.
    assert_eq!(totals.write_transactions, 2);
    Ok(())
}

/// A connection returned by a panicking thread is discarded, not pooled.
#[test]
fn connection_dropped_during_panic_is_discarded() -> TestResult {
    let f = fixture("unwinding", single())?;
    let registry = f.registry.clone();
    let name = f.name.clone();
    let joined = std::thread::spawn(move || {
        let _conn = registry.get(&name).expect("connection");
        panic!("thread dies holding a connection");
    })
    .join();
    assert!(joined.is_err());
    assert!(eventually(Duration::from_secs(5), || {
        f.registry
            .db_stats(&f.name)
            .is_ok_and(|s| s.totals.connections_closed.broken == 1 && s.live == 1)
    }));
    drop(f.registry.get(&f.name)?);
    Ok(())
}
