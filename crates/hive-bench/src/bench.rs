//! `cargo xtask bench`: the registry against a raw connection per thread, r2d2 (with and
//! without its check on every checkout), deadpool-sqlite and a connection per operation, all
//! in one process and one run, so the ratios compare like with like.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use hive_db_core::rusqlite::{Connection, TransactionBehavior};
use hive_db_core::{
    DbConfig, DbName, Registry, configure_connection, open_connection, prepare_database,
};
use r2d2_sqlite::SqliteConnectionManager;

use crate::measure::{Measured, Rng, Timing, peak_rss_bytes, run};

/// Flags of `bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Seconds one round of one measurement runs, in the write scenarios (write_contention,
    /// mixed): long enough for SQLite's busy handler to show its worst case.
    #[arg(long, default_value_t = 0.2)]
    pub seconds: f64,
    /// Rounds in the write scenarios: the paths of a scenario run in turn, this many times,
    /// and each is reported by its median round.
    #[arg(long, default_value_t = 9)]
    pub rounds: usize,
    /// Seconds of one round in the read scenarios (checkout, point_read, multi_db). Short
    /// rounds keep the two sides of a ratio close in time, so the machine's drift between
    /// them is small.
    #[arg(long, default_value_t = 0.04)]
    pub read_seconds: f64,
    /// Rounds in the read scenarios.
    #[arg(long, default_value_t = 45)]
    pub read_rounds: usize,
    /// Rows in the point-read table.
    #[arg(long, default_value_t = 10_000)]
    pub rows: u64,
    /// Threads for the multi-threaded scenarios.
    #[arg(long, default_value_t = 8)]
    pub threads: usize,
    /// Run only these scenarios (checkout, point_read, write_contention, mixed, multi_db,
    /// many_dbs).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Run only the paths whose names contain one of these (for profiling one path).
    #[arg(long, value_delimiter = ',')]
    pub paths: Vec<String>,
    /// Print every round's result on standard error.
    #[arg(long)]
    pub verbose: bool,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// One measured cell.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub scenario: &'static str,
    pub path: &'static str,
    pub threads: usize,
    #[serde(flatten)]
    pub measured: Measured,
    pub peak_rss_bytes: u64,
}

const POINT_READ: &str = "SELECT v FROM kv WHERE id = ?1";
const INSERT: &str = "INSERT INTO events (thread, seq, payload) VALUES (?1, ?2, ?3)";

struct Setup {
    dir: tempfile::TempDir,
    config: DbConfig,
    registry: Registry,
}

impl Setup {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            dir: tempfile::tempdir()?,
            config: DbConfig {
                create_if_missing: true,
                max_size: 10,
                ..DbConfig::default()
            },
            registry: Registry::new(),
        })
    }

    /// A fresh database with `rows` rows in `kv` and an empty `events` table, registered.
    fn database(&self, name: &str, rows: u64) -> anyhow::Result<(DbName, PathBuf)> {
        self.database_with(name, rows, self.config.clone())
    }

    /// Like [`Setup::database`], registered with `config`.
    fn database_with(
        &self,
        name: &str,
        rows: u64,
        config: DbConfig,
    ) -> anyhow::Result<(DbName, PathBuf)> {
        let db = DbName::new(name)?;
        let path = self.dir.path().join(format!("{name}.db"));
        let prepared = prepare_database(&db, &path, &self.config)?;
        let mut conn = open_connection(&db, &prepared.path, &self.config)?;
        let tx = conn.transaction()?;
        tx.execute_batch(
            "CREATE TABLE kv (id INTEGER PRIMARY KEY, v TEXT NOT NULL);
             CREATE TABLE events (id INTEGER PRIMARY KEY, thread INTEGER, seq INTEGER, payload TEXT);",
        )?;
        {
            let mut insert = tx.prepare("INSERT INTO kv (id, v) VALUES (?1, ?2)")?;
            for id in 1..=rows {
                insert.execute((id as i64, format!("value-{id:08}")))?;
            }
        }
        tx.commit()?;
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
        drop(conn);
        self.registry.register(&db, &prepared.path, config)?;
        Ok((db, prepared.path))
    }

    fn raw(&self, db: &DbName, path: &Path) -> anyhow::Result<Connection> {
        Ok(open_connection(db, path, &self.config)?)
    }

    fn r2d2(
        &self,
        path: &Path,
        check: bool,
    ) -> anyhow::Result<r2d2::Pool<SqliteConnectionManager>> {
        let config = self.config.clone();
        let manager = SqliteConnectionManager::file(path)
            .with_init(move |c| configure_connection(c, &config));
        Ok(r2d2::Pool::builder()
            .max_size(self.config.max_size)
            .test_on_check_out(check)
            .connection_timeout(self.config.connection_timeout)
            .build(manager)?)
    }
}

fn point_read(conn: &Connection, rng: &mut Rng, rows: u64) -> hive_db_core::rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(POINT_READ)?;
    let v: String = stmt.query_row([rng.below(rows)], |r| r.get(0))?;
    std::hint::black_box(v);
    Ok(())
}

fn three_inserts(tx: &Connection, rng: &mut Rng) -> hive_db_core::rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(INSERT)?;
    let t = (rng.next() % 1024) as i64;
    for seq in 0..3 {
        stmt.execute((t, seq, "payload-of-a-simulation-event"))?;
    }
    Ok(())
}

/// (scenario, path, threads).
type CellKey = (&'static str, &'static str, usize);

pub struct Bench {
    args: BenchArgs,
    rows: Vec<Row>,
    /// Throughput of every round, by (scenario, path, threads), in round order.
    rounds: Vec<(CellKey, Vec<f64>)>,
    /// Size of the WAL files after `write_contention`: (registry, r2d2).
    write_wal_bytes: Option<(u64, u64)>,
    many_dbs: Vec<crate::many_dbs::Step>,
}

const MIB: f64 = 1024.0 * 1024.0;

impl Bench {
    fn wants(&self, scenario: &str) -> bool {
        self.args.only.is_empty() || self.args.only.iter().any(|s| s == scenario)
    }

    fn push(
        &mut self,
        scenario: &'static str,
        path: &'static str,
        threads: usize,
        measured: Measured,
    ) {
        if !self.args.json {
            print_row(scenario, path, threads, &measured);
        }
        self.rows.push(Row {
            scenario,
            path,
            threads,
            measured,
            peak_rss_bytes: peak_rss_bytes(),
        });
    }

    /// The median over rounds of `a`'s throughput divided by `b`'s in the same round: both
    /// ran within moments of each other, so a disturbed stretch of time hits both.
    fn paired_ratio(&self, scenario: &str, a: &str, b: &str, threads: usize) -> Option<f64> {
        let get = |path: &str| {
            self.rounds
                .iter()
                .find(|((s, p, t), _)| *s == scenario && *p == path && *t == threads)
                .map(|(_, v)| v)
        };
        let (a, b) = (get(a)?, get(b)?);
        let mut ratios: Vec<f64> = a
            .iter()
            .zip(b)
            .filter(|(_, b)| **b > 0.0)
            .map(|(a, b)| a / b)
            .collect();
        if ratios.is_empty() {
            return None;
        }
        ratios.sort_by(f64::total_cmp);
        Some(ratios[ratios.len() / 2])
    }

    fn find(&self, scenario: &str, path: &str, threads: usize) -> Option<&Measured> {
        self.rows
            .iter()
            .find(|r| r.scenario == scenario && r.path == path && r.threads == threads)
            .map(|r| &r.measured)
    }
}

type Candidate<'a> = (
    &'static str,
    Box<dyn Fn(Duration) -> anyhow::Result<Measured> + 'a>,
);

/// The untimed pass each path gets before its measured rounds.
const WARM_UP: Duration = Duration::from_millis(50);

/// How many rounds a scenario runs, and how long each lasts.
#[derive(Debug, Clone, Copy)]
struct Rounds {
    count: usize,
    each: Duration,
}

impl BenchArgs {
    fn write_rounds(&self) -> Rounds {
        Rounds {
            count: self.rounds.max(1),
            each: Duration::from_secs_f64(self.seconds),
        }
    }

    fn read_rounds(&self) -> Rounds {
        Rounds {
            count: self.read_rounds.max(1),
            each: Duration::from_secs_f64(self.read_seconds),
        }
    }
}

/// How a scenario's rounds are summarised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Summary {
    /// The round with the median throughput.
    Throughput,
    /// The round with the median p50 latency.
    Latency,
    /// The median-throughput round, with the worst `max` and the sum of errors of all rounds.
    Tail,
}

/// Runs every path of a scenario `rounds` times, in a rotating order so that no path always
/// runs first or right after another, and summarises each path by its median round. Drift on
/// a shared machine hits every path alike, and one disturbed round moves no median.
fn compare(
    bench: &mut Bench,
    scenario: &'static str,
    threads: usize,
    summary: Summary,
    mut paths: Vec<Candidate<'_>>,
) -> anyhow::Result<()> {
    let plan = match summary {
        Summary::Tail => bench.args.write_rounds(),
        Summary::Throughput | Summary::Latency => bench.args.read_rounds(),
    };
    let rounds = plan.count;
    if !bench.args.paths.is_empty() {
        paths.retain(|(name, _)| bench.args.paths.iter().any(|p| name.contains(p.as_str())));
    }
    // One short untimed pass first: pools grow to the thread count, statement caches and page
    // caches fill, so no path pays its set-up inside a measured round.
    for (name, run) in &paths {
        run(WARM_UP).with_context(|| format!("{scenario} / {name} (warm-up)"))?;
    }
    let mut all: Vec<Vec<Measured>> = vec![Vec::with_capacity(rounds); paths.len()];
    for round in 0..rounds {
        for k in 0..paths.len() {
            let i = (k + round) % paths.len();
            let (name, run) = &paths[i];
            let m = run(plan.each).with_context(|| format!("{scenario} / {name}"))?;
            if bench.args.verbose {
                eprintln!(
                    "  round {round}: {scenario} / {name} / {threads}: {:.0} ops/s, p50 {} ns",
                    m.ops_per_sec, m.p50_ns
                );
            }
            all[i].push(m);
        }
    }
    for ((name, _), runs) in paths.iter().zip(&all) {
        bench.rounds.push((
            (scenario, *name, threads),
            runs.iter().map(|m| m.ops_per_sec).collect(),
        ));
    }
    for ((name, _), mut runs) in paths.iter().zip(all) {
        let worst_max = runs.iter().map(|m| m.max_ns).max().unwrap_or(0);
        let errors: u64 = runs.iter().map(|m| m.errors).sum();
        let first_error = runs.iter().find_map(|m| m.first_error.clone());
        match summary {
            Summary::Latency => runs.sort_by_key(|m| m.p50_ns),
            Summary::Throughput | Summary::Tail => {
                runs.sort_by(|a, b| a.ops_per_sec.total_cmp(&b.ops_per_sec));
            }
        }
        let mut m = runs.swap_remove(runs.len() / 2);
        if summary == Summary::Tail {
            m.max_ns = worst_max;
            m.errors = errors;
            m.first_error = first_error;
        }
        bench.push(scenario, name, threads, m);
    }
    Ok(())
}

fn print_header() {
    println!(
        "{:<17} {:<22} {:>3} {:>12} {:>10} {:>10} {:>10} {:>11} {:>7}",
        "scenario", "path", "thr", "ops/s", "p50", "p99", "p99.9", "max", "errors"
    );
}

fn fmt_ns(ns: u64) -> String {
    match ns {
        0 => "-".to_owned(),
        n if n < 10_000 => format!("{n} ns"),
        n if n < 10_000_000 => format!("{:.1} us", n as f64 / 1e3),
        n => format!("{:.1} ms", n as f64 / 1e6),
    }
}

fn print_row(scenario: &str, path: &str, threads: usize, m: &Measured) {
    println!(
        "{:<17} {:<22} {:>3} {:>12.0} {:>10} {:>10} {:>10} {:>11} {:>7}",
        scenario,
        path,
        threads,
        m.ops_per_sec,
        fmt_ns(m.p50_ns),
        fmt_ns(m.p99_ns),
        fmt_ns(m.p999_ns),
        fmt_ns(m.max_ns),
        m.errors
    );
    if let Some(e) = &m.first_error {
        println!("{:<17} first error: {e}", "");
    }
}

pub fn main(args: BenchArgs) -> anyhow::Result<()> {
    report(&measure_all(args)?)
}

/// Runs every scenario `args` asks for.
fn measure_all(args: BenchArgs) -> anyhow::Result<Bench> {
    let mut bench = Bench {
        args,
        rows: Vec::new(),
        rounds: Vec::new(),
        write_wal_bytes: None,
        many_dbs: Vec::new(),
    };
    if !bench.args.json {
        let a = &bench.args;
        println!(
            "hive-db bench: each cell the median of {} rounds of {} s (reads) or {} of {} s \
             (writes), {} rows, {} threads, optimised build",
            a.read_rounds, a.read_seconds, a.rounds, a.seconds, a.rows, a.threads
        );
        print_header();
    }
    let setup = Setup::new()?;
    if bench.wants("checkout") {
        checkout(&mut bench, &setup).context("checkout")?;
    }
    if bench.wants("point_read") {
        point_reads(&mut bench, &setup).context("point_read")?;
    }
    if bench.wants("write_contention") {
        write_contention(&mut bench, &setup).context("write_contention")?;
    }
    if bench.wants("mixed") {
        mixed(&mut bench, &setup).context("mixed")?;
    }
    if bench.wants("multi_db") {
        multi_db(&mut bench, &setup).context("multi_db")?;
    }
    if bench.wants("many_dbs") {
        let round = Duration::from_secs_f64(bench.args.read_seconds / 4.0);
        bench.many_dbs = crate::many_dbs::bench(round, bench.args.json).context("many_dbs")?;
    }
    Ok(bench)
}

fn checkout(bench: &mut Bench, setup: &Setup) -> anyhow::Result<()> {
    let (db, path) = setup.database("checkout", 100)?;
    let timing = Timing::Batched(64);
    let registry = &setup.registry;
    let handle = registry.handle(&db)?;
    let r2d2_default = setup.r2d2(&path, true)?;
    let r2d2_nocheck = setup.r2d2(&path, false)?;
    let paths: Vec<Candidate<'_>> = vec![
        stateless("registry get", 1, timing, |_| registry.get(&db).map(drop)),
        stateless("registry handle", 1, timing, |_| handle.get().map(drop)),
        stateless("r2d2 default", 1, timing, |_| r2d2_default.get().map(drop)),
        stateless("r2d2 no check", 1, timing, |_| r2d2_nocheck.get().map(drop)),
    ];
    compare(bench, "checkout", 1, Summary::Latency, paths)
}

fn point_reads(bench: &mut Bench, setup: &Setup) -> anyhow::Result<()> {
    let rows = bench.args.rows;
    let (db, path) = setup.database("point_read", rows)?;
    let registry = &setup.registry;
    let r2d2_default = setup.r2d2(&path, true)?;
    let r2d2_nocheck = setup.r2d2(&path, false)?;
    let handle = registry.handle(&db)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(bench.args.threads.max(1))
        .enable_all()
        .build()?;
    // deadpool's connections close through the runtime: keep it entered until they are gone.
    let _entered = runtime.enter();
    let deadpool = deadpool_sqlite::Config {
        path: path.clone(),
        pool: Some(deadpool_sqlite::PoolConfig::new(
            setup.config.max_size as usize,
        )),
    }
    .create_pool(deadpool_sqlite::Runtime::Tokio1)?;
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
                registry.read(&db, |c| {
                    point_read(c, rng, rows).map_err(anyhow::Error::from)
                })
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

/// A path whose operation keeps no state of its own in each thread.
fn stateless<'a, E, F>(name: &'static str, threads: usize, timing: Timing, op: F) -> Candidate<'a>
where
    E: std::fmt::Display,
    F: Fn(&mut Rng) -> Result<(), E> + Sync + 'a,
{
    (
        name,
        Box::new(move |d| run(threads, d, timing, |_| Ok(()), |_, rng| op(rng))),
    )
}

/// Point reads on connections from `get`, which checks one out of some pool.
fn pooled_reads<'a, C, G>(name: &'static str, threads: usize, rows: u64, get: G) -> Candidate<'a>
where
    C: std::ops::Deref<Target = Connection>,
    G: Fn() -> anyhow::Result<C> + Sync + 'a,
{
    (
        name,
        Box::new(move |d| {
            run(
                threads,
                d,
                Timing::None,
                |_| Ok(()),
                |_, rng| -> anyhow::Result<()> {
                    let conn = get()?;
                    Ok(point_read(&conn, rng, rows)?)
                },
            )
        }),
    )
}

/// deadpool-sqlite's way: an async checkout, then `interact` hops to a blocking thread.
fn deadpool_reads(
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

/// One write transaction through the registry's writer lane.
fn registry_write(registry: &Registry, db: &DbName, rng: &mut Rng) -> anyhow::Result<()> {
    registry.write(db, |tx| three_inserts(tx, rng).map_err(anyhow::Error::from))
}

/// One write transaction on an r2d2 connection, waiting in SQLite's busy handler.
fn r2d2_write(pool: &r2d2::Pool<SqliteConnectionManager>, rng: &mut Rng) -> anyhow::Result<()> {
    let mut conn = pool.get()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    three_inserts(&tx, rng)?;
    Ok(tx.commit()?)
}

fn write_contention(bench: &mut Bench, setup: &Setup) -> anyhow::Result<()> {
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
    let pool = setup.r2d2(&path, true)?;
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
    ];
    compare(bench, "write_contention", threads, Summary::Tail, paths)?;
    // How far each WAL grew: a checkpoint that never completes under steady writes lets it
    // grow without bound, which throughput alone does not show.
    let wal = |db: &DbName| -> anyhow::Result<u64> { Ok(registry.db_stats(db)?.sqlite.wal_bytes) };
    let (registry_wal, r2d2_wal) = (wal(&db)?, wal(&r2d2_db)?);
    bench.write_wal_bytes = Some((registry_wal, r2d2_wal));
    if !bench.args.json {
        println!(
            "{:<17} WAL file after all rounds: registry {:.1} MiB, r2d2 {:.1} MiB",
            "",
            registry_wal as f64 / MIB,
            r2d2_wal as f64 / MIB
        );
    }
    Ok(())
}

fn mixed(bench: &mut Bench, setup: &Setup) -> anyhow::Result<()> {
    let threads = bench.args.threads;
    let rows = bench.args.rows;
    let (db, _) = setup.database("mixed_registry", rows)?;
    let registry = &setup.registry;
    let (_, path) = setup.database("mixed_r2d2", rows)?;
    let pool = setup.r2d2(&path, true)?;
    let each = Timing::Each;
    let paths: Vec<Candidate<'_>> = vec![
        stateless("registry", threads, each, |rng| {
            if rng.next() % 5 == 0 {
                registry_write(registry, &db, rng)
            } else {
                registry.read(&db, |c| {
                    point_read(c, rng, rows).map_err(anyhow::Error::from)
                })
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

fn multi_db(bench: &mut Bench, setup: &Setup) -> anyhow::Result<()> {
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

/// The ratios the targets are stated in.
#[derive(Debug, Default, serde::Serialize)]
struct Ratios {
    point_read_ratio_1t: Option<f64>,
    point_read_ratio_8t: Option<f64>,
    checkout_p50_ns: Option<u64>,
    checkout_ratio_vs_r2d2_nocheck: Option<f64>,
    write_throughput_ratio: Option<f64>,
    write_throughput_ratio_one_per_tx: Option<f64>,
    write_max_latency_ratio: Option<f64>,
    write_errors: Option<u64>,
    write_wal_bytes_registry: Option<u64>,
    write_wal_bytes_r2d2: Option<u64>,
    vs_deadpool_ratio: Option<f64>,
    vs_connect_per_op_ratio: Option<f64>,
    multi_db_ratio: Option<f64>,
    mixed_throughput_ratio: Option<f64>,
    peak_rss_bytes: u64,
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// A target of the form `value >= min`, as a line of the report and whether it is met.
fn at_least(label: &str, value: Option<f64>, digits: usize, min: f64) -> Option<(String, bool)> {
    value.map(|v| (format!("{label} {v:.digits$} >= {min}"), v >= min))
}

/// A target of the form `value <= max`.
fn at_most(label: &str, value: Option<f64>, digits: usize, max: f64) -> Option<(String, bool)> {
    value.map(|v| (format!("{label} {v:.digits$} <= {max}"), v <= max))
}

fn report(bench: &Bench) -> anyhow::Result<()> {
    let t = bench.args.threads;
    let write_reg = bench.find("write_contention", "registry write", t);
    let write_r2d2 = bench.find("write_contention", "r2d2 + busy_timeout", t);
    let checkout = bench.find("checkout", "registry get", 1);
    let r = Ratios {
        point_read_ratio_1t: bench.paired_ratio("point_read", "registry get", "raw connection", 1),
        point_read_ratio_8t: bench.paired_ratio("point_read", "registry get", "raw connection", t),
        checkout_p50_ns: checkout.map(|m| m.p50_ns),
        checkout_ratio_vs_r2d2_nocheck: ratio(
            checkout.map(|m| m.p50_ns as f64),
            bench
                .find("checkout", "r2d2 no check", 1)
                .map(|m| m.p50_ns as f64),
        ),
        write_throughput_ratio: bench.paired_ratio(
            "write_contention",
            "registry write",
            "r2d2 + busy_timeout",
            t,
        ),
        write_throughput_ratio_one_per_tx: bench.paired_ratio(
            "write_contention",
            "registry, 1 per tx",
            "r2d2 + busy_timeout",
            t,
        ),
        write_max_latency_ratio: ratio(
            write_reg.map(|m| m.max_ns as f64),
            write_r2d2.map(|m| m.max_ns as f64),
        ),
        write_errors: write_reg.map(|m| m.errors),
        write_wal_bytes_registry: bench.write_wal_bytes.map(|w| w.0),
        write_wal_bytes_r2d2: bench.write_wal_bytes.map(|w| w.1),
        vs_deadpool_ratio: bench.paired_ratio("point_read", "registry get", "deadpool-sqlite", 1),
        vs_connect_per_op_ratio: bench.paired_ratio(
            "point_read",
            "registry get",
            "connect per op",
            1,
        ),
        multi_db_ratio: bench.paired_ratio("multi_db", "registry get", "raw connection", t),
        mixed_throughput_ratio: bench.paired_ratio("mixed", "registry", "r2d2 + busy_timeout", t),
        peak_rss_bytes: peak_rss_bytes(),
    };
    let targets: Vec<(String, bool)> = [
        at_least(
            "point_read registry/raw 1 thread",
            r.point_read_ratio_1t,
            2,
            0.9,
        ),
        at_least(
            &format!("point_read registry/raw {t} threads"),
            r.point_read_ratio_8t,
            2,
            0.9,
        ),
        at_most(
            "checkout p50 registry/r2d2-no-check",
            r.checkout_ratio_vs_r2d2_nocheck,
            2,
            1.2,
        ),
        at_most(
            "checkout p50 ns",
            r.checkout_p50_ns.map(|v| v as f64),
            0,
            1000.0,
        ),
        at_most(
            "write_contention registry errors",
            r.write_errors.map(|v| v as f64),
            0,
            0.0,
        ),
        at_least(
            "write throughput registry/r2d2",
            r.write_throughput_ratio,
            2,
            0.9,
        ),
        at_most(
            "write max latency registry/r2d2",
            r.write_max_latency_ratio,
            3,
            0.1,
        ),
        at_least("point_read registry/deadpool", r.vs_deadpool_ratio, 1, 5.0),
        at_least(
            "point_read registry/connect-per-op",
            r.vs_connect_per_op_ratio,
            0,
            50.0,
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    if bench.args.json {
        let mut value = serde_json::to_value(&r)?;
        value["rows"] = serde_json::to_value(&bench.rows)?;
        value["many_dbs"] = serde_json::to_value(&bench.many_dbs)?;
        value["targets_met"] = targets.iter().filter(|(_, ok)| *ok).count().into();
        value["targets_total"] = targets.len().into();
        println!("{}", serde_json::to_string(&value)?);
    } else {
        println!();
        println!("peak RSS {:.1} MiB", r.peak_rss_bytes as f64 / MIB);
        for (text, ok) in &targets {
            println!("{} {text}", if *ok { "met   " } else { "MISSED" });
        }
        println!(
            "{} of {} targets met",
            targets.iter().filter(|(_, ok)| *ok).count(),
            targets.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bug caught: a scenario or path of `cargo xtask bench` that fails to set up or errors
    /// while measuring (a wrong statement, a pool that cannot be built, an API change the
    /// bench no longer matches). Tiny rounds: this checks that everything runs, not speed.
    #[test]
    fn every_scenario_and_path_runs() -> anyhow::Result<()> {
        let bench = measure_all(BenchArgs {
            seconds: 0.01,
            rounds: 1,
            read_seconds: 0.005,
            read_rounds: 1,
            rows: 200,
            threads: 4,
            only: Vec::new(),
            paths: Vec::new(),
            verbose: false,
            json: true,
        })?;
        // checkout 4, point_read 8 paths at 1 and 4 threads, write_contention 3, mixed 2, multi_db 2.
        assert_eq!(
            bench.rows.len(),
            27,
            "one row per scenario, path and thread count"
        );
        for row in &bench.rows {
            let m = &row.measured;
            assert!(
                m.ops > 0 && m.errors == 0,
                "{} / {} / {}: {} ops, {} errors, first: {:?}",
                row.scenario,
                row.path,
                row.threads,
                m.ops,
                m.errors,
                m.first_error
            );
        }
        report(&bench)
    }
}
