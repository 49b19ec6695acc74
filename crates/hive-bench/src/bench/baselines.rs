//! The pools the registry is measured against: r2d2 (with and without its check on every
//! checkout) and deadpool-sqlite. They open their own connections, which is why the tidy test
//! lets this file do so.

use std::path::Path;
use std::time::Duration;

use hive_db_core::configure_connection;
use hive_db_core::rusqlite::TransactionBehavior;
use r2d2_sqlite::SqliteConnectionManager;

use super::fixtures::{POINT_READ, Setup, three_inserts};
use crate::measure::{Measured, Rng};

/// An r2d2 pool on `path` with the registry's settings, checking every checkout if `check`.
pub(super) fn r2d2(
    setup: &Setup,
    path: &Path,
    check: bool,
) -> anyhow::Result<r2d2::Pool<SqliteConnectionManager>> {
    let config = setup.config.clone();
    let manager =
        SqliteConnectionManager::file(path).with_init(move |c| configure_connection(c, &config));
    Ok(r2d2::Pool::builder()
        .max_size(setup.config.max_size)
        .test_on_check_out(check)
        .connection_timeout(setup.config.connection_timeout)
        .build(manager)?)
}

/// A plain r2d2 pool on `path` with every r2d2 and r2d2_sqlite default (none of the
/// registry's PRAGMAs): the load test's `--compare` baseline.
pub(crate) fn r2d2_defaults(path: &Path) -> anyhow::Result<r2d2::Pool<SqliteConnectionManager>> {
    Ok(r2d2::Pool::new(SqliteConnectionManager::file(path))?)
}

/// One write transaction on an r2d2 connection, waiting in SQLite's busy handler.
pub(super) fn r2d2_write(
    pool: &r2d2::Pool<SqliteConnectionManager>,
    rng: &mut Rng,
) -> anyhow::Result<()> {
    let mut conn = pool.get()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    three_inserts(&tx, rng)?;
    Ok(tx.commit()?)
}

/// One write on a raw connection of its own: the serial ceiling (one thread, one transaction
/// per write, no pool, no lane, no contention).
pub(super) fn serial_raw_write(
    conn: &mut hive_db_core::rusqlite::Connection,
    rng: &mut Rng,
) -> hive_db_core::rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    three_inserts(&tx, rng)?;
    tx.commit()
}

/// A deadpool-sqlite pool on `path` (its connections close through `runtime`).
pub(super) fn deadpool(setup: &Setup, path: &Path) -> anyhow::Result<deadpool_sqlite::Pool> {
    Ok(deadpool_sqlite::Config {
        path: path.to_path_buf(),
        pool: Some(deadpool_sqlite::PoolConfig::new(
            setup.config.max_size as usize,
        )),
    }
    .create_pool(deadpool_sqlite::Runtime::Tokio1)?)
}

/// deadpool-sqlite's way: an async checkout, then `interact` hops to a blocking thread.
pub(super) fn deadpool_reads(
    runtime: &tokio::runtime::Runtime,
    pool: &deadpool_sqlite::Pool,
    tasks: usize,
    duration: Duration,
    rows: u64,
) -> anyhow::Result<Measured> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = std::time::Instant::now();
    runtime.block_on(async {
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let (pool, stop, ops, errors) = (
                    pool.clone(),
                    Arc::clone(&stop),
                    Arc::clone(&ops),
                    Arc::clone(&errors),
                );
                tokio::spawn(async move {
                    let mut seed = Rng::new(t as u64 + 1);
                    while !stop.load(Relaxed) {
                        let id = seed.below(rows);
                        let result = match pool.get().await {
                            Ok(obj) => obj
                                .interact(move |c| {
                                    let mut stmt = c.prepare_cached(POINT_READ)?;
                                    stmt.query_row([id], |r| r.get::<_, String>(0))
                                })
                                .await
                                .map_err(|e| e.to_string())
                                .and_then(|r| r.map_err(|e| e.to_string())),
                            Err(e) => Err(e.to_string()),
                        };
                        ops.fetch_add(1, Relaxed);
                        if result.is_err() {
                            errors.fetch_add(1, Relaxed);
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(duration).await;
        stop.store(true, Relaxed);
        for h in handles {
            let _ = h.await;
        }
    });
    Ok(Measured::from_counts(
        ops.load(Relaxed),
        errors.load(Relaxed),
        start.elapsed().as_secs_f64(),
    ))
}
