//! The scenarios: checkout, point reads (1 and N threads), write contention, a mixed load
//! and reads spread over several databases, each comparing the registry's paths with the
//! baselines'.

use std::path::PathBuf;

use hive_db_core::{DbConfig, DbName, Registry, open_connection};

use super::baselines::{deadpool, deadpool_reads, r2d2, r2d2_write, serial_raw_write};
use super::fixtures::{Setup, point_read, three_inserts};
use super::harness::{Bench, Candidate, Summary, compare, pooled_reads, stateless};
use crate::measure::{Rng, Timing, run};

/// MiB, for the WAL sizes printed.
const MIB: f64 = 1024.0 * 1024.0;

pub(super) fn checkout(bench: &mut Bench, setup: &Setup) -> anyhow::Result<()> {
    let (db, path) = setup.database("checkout", 100)?;
    let timing = Timing::Batched(64);
    let registry = &setup.registry;
    let handle = registry.handle(&db)?;
    let r2d2_default = r2d2(setup, &path, true)?;
    let r2d2_nocheck = r2d2(setup, &path, false)?;
    let paths: Vec<Candidate<'_>> = vec![
        stateless("registry get", 1, timing, |_| registry.get(&db).map(drop)),
        stateless("registry handle", 1, timing, |_| handle.get().map(drop)),
        stateless("r2d2 default", 1, timing, |_| r2d2_default.get().map(drop)),
        stateless("r2d2 no check", 1, timing, |_| r2d2_nocheck.get().map(drop)),
    ];
    compare(bench, "checkout", 1, Summary::Latency, paths)
}

pub(super) fn point_reads(bench: &mut Bench, setup: &Setup) -> anyhow::Result<()> {
    let rows = bench.args.rows;
    let (db, path) = setup.database("point_read", rows)?;
    let registry = &setup.registry;
    let r2d2_default = r2d2(setup, &path, true)?;
    let r2d2_nocheck = r2d2(setup, &path, false)?;
    let handle = registry.handle(&db)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(bench.args.threads.max(1))
        .enable_all()
        .build()?;
    // deadpool's connections close through the runtime: keep it entered until they are gone.
    let _entered = runtime.enter();
    let deadpool = deadpool(setup, &path)?;
    let config = setup.config.clone();
    for threads in [1, bench.args.threads] {
        let none = Timing::None;
        let paths: Vec<Candidate<'_>> = vec![
            (
                "raw connection",
                Box::new(|d| {
                    run(
                        threads,
                        d,
                        none,
                        |_| setup.raw(&db, &path),
                        |c, rng| point_read(c, rng, rows),
                    )
                }),
            ),
            stateless("registry read", threads, none, |rng| {
                registry.read(&db, |c| point_read(c, rng, rows))
            }),
            pooled_reads("registry get", threads, rows, || Ok(registry.get(&db)?)),
            pooled_reads("registry handle", threads, rows, || Ok(handle.get()?)),
            pooled_reads("r2d2 default", threads, rows, || Ok(r2d2_default.get()?)),
            pooled_reads("r2d2 no check", threads, rows, || Ok(r2d2_nocheck.get()?)),
            (
                "deadpool-sqlite",
                Box::new(|d| deadpool_reads(&runtime, &deadpool, threads, d, rows)),
            ),
            stateless(
                "connect per op",
                threads,
                none,
                |rng| -> anyhow::Result<()> {
                    // The old service's way: open, every PRAGMA (journal_mode too), query, close.
                    let conn = open_connection(&db, &path, &config)?;
                    let _: String =
                        conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
                    Ok(point_read(&conn, rng, rows)?)
                },
            ),
        ];
        compare(bench, "point_read", threads, Summary::Throughput, paths)?;
    }
    Ok(())
}

/// `write_contention`'s serial ceiling: one thread on one raw connection, whatever the
/// scenario's thread count.
pub(super) const SERIAL_RAW: &str = "serial raw, 1 thread";

/// One write transaction through the registry's writer lane.
fn registry_write(registry: &Registry, db: &DbName, rng: &mut Rng) -> anyhow::Result<()> {
    Ok(registry.write(db, |tx| three_inserts(tx, rng))?)
}

pub(super) fn write_contention(bench: &mut Bench, setup: &Setup) -> anyhow::Result<()> {
    let threads = bench.args.threads;
    let (db, _) = setup.database("writes_registry", 0)?;
    let registry = &setup.registry;
    let (r2d2_db, path) = setup.database("writes_r2d2", 0)?;
    let (single_db, _) = setup.database_with(
        "writes_single",
        0,
        DbConfig {
            group_commit_max_writers: 1,
            ..setup.config.clone()
        },
    )?;
    let pool = r2d2(setup, &path, true)?;
    let (serial_db, serial_path) = setup.database("writes_serial", 0)?;
    let each = Timing::Each;
    let paths: Vec<Candidate<'_>> = vec![
        stateless("registry write", threads, each, |rng| {
            registry_write(registry, &db, rng)
        }),
        stateless("registry, 1 per tx", threads, each, |rng| {
            registry_write(registry, &single_db, rng)
        }),
        stateless("r2d2 + busy_timeout", threads, each, |rng| {
            r2d2_write(&pool, rng)
        }),
        (
            SERIAL_RAW,
            Box::new(|d| {
                run(
                    1,
                    d,
                    each,
                    |_| setup.raw(&serial_db, &serial_path),
                    serial_raw_write,
                )
            }),
        ),
    ];
    compare(bench, "write_contention", threads, Summary::Tail, paths)?;
    // How far each WAL grew: a checkpoint that never completes under steady writes lets it
    // grow without bound, which throughput alone does not show.
    let wal = |db: &DbName| -> anyhow::Result<u64> { Ok(registry.db_stats(db)?.sqlite.wal_bytes) };
    let (registry_wal, r2d2_wal) = (wal(&db)?, wal(&r2d2_db)?);
    bench.write_wal_bytes = Some((registry_wal, r2d2_wal));
    let totals = registry.db_stats(&db)?.totals;
    let per_batch = totals.commits as f64 / totals.write_transactions.max(1) as f64;
    bench.writers_per_batch = Some(per_batch);
    if !bench.args.json {
        println!(
            "{:<17} registry write: {per_batch:.2} writers per commit",
            ""
        );
        println!(
            "{:<17} WAL file after all rounds: registry {:.1} MiB, r2d2 {:.1} MiB",
            "",
            registry_wal as f64 / MIB,
            r2d2_wal as f64 / MIB
        );
    }
    Ok(())
}

pub(super) fn mixed(bench: &mut Bench, setup: &Setup) -> anyhow::Result<()> {
    let threads = bench.args.threads;
    let rows = bench.args.rows;
    let (db, _) = setup.database("mixed_registry", rows)?;
    let registry = &setup.registry;
    let (_, path) = setup.database("mixed_r2d2", rows)?;
    let pool = r2d2(setup, &path, true)?;
    let each = Timing::Each;
    let paths: Vec<Candidate<'_>> = vec![
        stateless("registry", threads, each, |rng| {
            if rng.next() % 5 == 0 {
                registry_write(registry, &db, rng)
            } else {
                Ok(registry.read(&db, |c| point_read(c, rng, rows))?)
            }
        }),
        stateless("r2d2 + busy_timeout", threads, each, |rng| {
            if rng.next() % 5 == 0 {
                r2d2_write(&pool, rng)
            } else {
                let conn = pool.get()?;
                Ok(point_read(&conn, rng, rows)?)
            }
        }),
    ];
    compare(bench, "mixed", threads, Summary::Tail, paths)
}

pub(super) fn multi_db(bench: &mut Bench, setup: &Setup) -> anyhow::Result<()> {
    let threads = bench.args.threads;
    let rows = bench.args.rows;
    let dbs: Vec<(DbName, PathBuf)> = (0..4)
        .map(|i| setup.database(&format!("multi_{i}"), rows))
        .collect::<anyhow::Result<_>>()?;
    let registry = &setup.registry;
    let none = Timing::None;
    let dbs = &dbs;
    let paths: Vec<Candidate<'_>> = vec![
        (
            "raw connection",
            Box::new(|d| {
                run(
                    threads,
                    d,
                    none,
                    |_| {
                        dbs.iter()
                            .map(|(db, path)| setup.raw(db, path))
                            .collect::<anyhow::Result<Vec<_>>>()
                    },
                    |conns, rng| {
                        let i = (rng.next() % 4) as usize;
                        point_read(&conns[i], rng, rows)
                    },
                )
            }),
        ),
        stateless("registry get", threads, none, |rng| -> anyhow::Result<()> {
            let (db, _) = &dbs[(rng.next() % 4) as usize];
            let conn = registry.get(db)?;
            Ok(point_read(&conn, rng, rows)?)
        }),
    ];
    compare(bench, "multi_db", threads, Summary::Throughput, paths)
}
