//! PostgreSQL point reads: one private server on loopback (hive-pg-harness), a table of
//! `rows` rows, and a read by primary key through the registry, a client per thread,
//! r2d2_postgres and deadpool-postgres, at 1 and N threads.
//!
//! Every contender runs the same statement the same way, `query_typed_one`: one round trip
//! (parse, bind and execute together) and nothing cached, because the registry resets each
//! returned client's session (`DISCARD ALL`), which drops any statement prepared on it. The
//! path `raw + reset` is a client per thread that also runs that reset after every read: the
//! registry's round trips without its pool, so the report shows where the registry's time
//! goes.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use hive_db_core::postgres::types::Type;
use hive_db_core::postgres::{Client, NoTls};
use hive_db_core::{DbConfig, DbName, PgConfig};
use hive_pg_harness::Server;
use r2d2_postgres::PostgresConnectionManager;

use super::fixtures::Setup;
use super::harness::{Bench, Candidate, Summary, compare, stateless};
use crate::measure::{Measured, Rng, Timing, run};

/// The scenario's name, as `--only` takes it.
pub(super) const SCENARIO: &str = "pg_point_read";
/// The paths, as the report pairs them.
pub(super) const RAW: &str = "pg raw client";
pub(super) const REGISTRY: &str = "pg registry read";
pub(super) const R2D2: &str = "pg r2d2_postgres";
pub(super) const DEADPOOL: &str = "pg deadpool-postgres";
pub(super) const RAW_RESET: &str = "pg raw + reset";

const POINT_READ: &str = "SELECT v FROM kv WHERE id = $1";
/// What the registry runs on every returned client.
const RESET: &str = "DISCARD ALL";

/// Thread `t`'s client of `clients` (of the path `path`).
fn client<'a>(
    path: &str,
    clients: &'a [Mutex<Client>],
    t: usize,
) -> anyhow::Result<MutexGuard<'a, Client>> {
    clients
        .get(t)
        .and_then(|c| c.try_lock().ok())
        .ok_or_else(|| anyhow::anyhow!("{path}: no client for thread {t}"))
}

/// One point read of a random row.
fn point_read(
    client: &mut Client,
    rng: &mut Rng,
    rows: u64,
) -> Result<(), hive_db_core::postgres::Error> {
    let row = client.query_typed_one(POINT_READ, &[(&rng.below(rows), Type::INT8)])?;
    std::hint::black_box(row.try_get::<_, String>(0)?);
    Ok(())
}

/// A private server with database of `rows` rows in `kv`; its URL.
fn server(rows: u64) -> anyhow::Result<(Server, String)> {
    let server = Server::start()?;
    let url = server.fresh_db()?;
    let mut client = Client::connect(&url, NoTls)?;
    client.batch_execute(&format!(
        "CREATE TABLE kv (id bigint PRIMARY KEY, v text NOT NULL);
         INSERT INTO kv SELECT g, 'value-' || lpad(g::text, 8, '0')
           FROM generate_series(1, {rows}) g"
    ))?;
    // Apart: VACUUM refuses the implicit transaction of several statements.
    client.batch_execute("VACUUM ANALYZE kv")?;
    Ok((server, url))
}

/// Runs the scenario, or says on stderr why not (the server's programs missing) unless
/// `CI=true`.
pub(super) fn point_reads(bench: &mut Bench, setup: &Setup) -> anyhow::Result<()> {
    if !hive_pg_harness::available()? {
        return Ok(());
    }
    let rows = bench.args.rows;
    let threads_max = bench.args.threads.max(1);
    let (_server, url) = server(rows).context("starting the server")?;
    let pool_size = 10;

    let db = DbName::new(SCENARIO)?;
    let config = PgConfig {
        pool: DbConfig {
            max_size: pool_size,
            min_idle: pool_size,
            // Registering waits for all ten connections (each a SCRAM handshake): over 5 s
            // once, with the whole test suite running beside it. No read waits for one.
            connection_timeout: Duration::from_secs(30),
            ..DbConfig::default()
        },
        ..PgConfig::default()
    };
    setup.registry.register_postgres(&db, &url, config)?;
    let handle = setup.registry.postgres(&db)?;
    // r2d2_postgres with every default of r2d2 (its size 10, a check on every checkout) and
    // of the manager.
    let r2d2 = r2d2::Pool::new(PostgresConnectionManager::new(url.parse()?, NoTls))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads_max)
        .enable_all()
        .build()?;
    // deadpool's connections end through the runtime: keep it entered until they are gone.
    let _entered = runtime.enter();
    let deadpool = deadpool_postgres::Config {
        url: Some(url.clone()),
        ..deadpool_postgres::Config::default()
    }
    .create_pool(
        Some(deadpool_postgres::Runtime::Tokio1),
        deadpool_postgres::tokio_postgres::NoTls,
    )?;
    // A client per thread, kept across rounds as a pool keeps its own (a new one would pay
    // a cold server process in the measured rounds).
    let clients = |n: usize| -> anyhow::Result<Vec<Mutex<Client>>> {
        (0..n)
            .map(|_| Ok(Mutex::new(Client::connect(&url, NoTls)?)))
            .collect()
    };
    let raw = clients(threads_max)?;
    let raw_reset = clients(threads_max)?;
    for threads in [1, bench.args.threads] {
        let none = Timing::None;
        let (raw, raw_reset, handle, r2d2, runtime, deadpool) =
            (&raw, &raw_reset, &handle, &r2d2, &runtime, &deadpool);
        let paths: Vec<Candidate<'_>> = vec![
            (
                RAW,
                Box::new(move |d| {
                    run(
                        threads,
                        d,
                        none,
                        |t| client(RAW, raw, t),
                        |c, rng| point_read(c, rng, rows),
                    )
                }),
            ),
            stateless(REGISTRY, threads, none, move |rng| {
                handle.read(|c| point_read(c, rng, rows))
            }),
            stateless(R2D2, threads, none, move |rng| -> anyhow::Result<()> {
                let mut client = r2d2.get()?;
                Ok(point_read(&mut client, rng, rows)?)
            }),
            (
                DEADPOOL,
                Box::new(move |d| deadpool_reads(runtime, deadpool, threads, d, rows)),
            ),
            (
                RAW_RESET,
                Box::new(move |d| {
                    run(
                        threads,
                        d,
                        none,
                        |t| client(RAW_RESET, raw_reset, t),
                        |c, rng| {
                            point_read(c, rng, rows)?;
                            c.batch_execute(RESET)
                        },
                    )
                }),
            ),
        ];
        compare(bench, SCENARIO, threads, Summary::Throughput, paths)?;
    }
    setup
        .registry
        .close(&db, std::time::Duration::from_secs(5))?;
    Ok(())
}

/// deadpool-postgres's way: an async checkout, then the read on tokio-postgres, on `tasks`
/// tasks of `runtime`.
fn deadpool_reads(
    runtime: &tokio::runtime::Runtime,
    pool: &deadpool_postgres::Pool,
    tasks: usize,
    duration: std::time::Duration,
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
                    let mut rng = Rng::new(t as u64 + 1);
                    while !stop.load(Relaxed) {
                        let id = rng.below(rows);
                        let ok = match pool.get().await {
                            Ok(client) => client
                                .query_typed_one(POINT_READ, &[(&id, Type::INT8)])
                                .await
                                .and_then(|row| row.try_get::<_, String>(0))
                                .map(std::hint::black_box)
                                .is_ok(),
                            Err(_) => false,
                        };
                        ops.fetch_add(1, Relaxed);
                        if !ok {
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
