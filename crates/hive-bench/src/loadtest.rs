//! `cargo xtask loadtest`: the original service's concurrent transaction workload (workers each running
//! `CREATE TABLE IF NOT EXISTS`, one insert and one count per transaction) plus readers,
//! through the registry on a temporary database, then a verification: every acknowledged
//! write present once, `integrity_check` ok, nothing left checked out.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use hive_db_core::{DbConfig, DbName, Registry};

use crate::measure::{Rng, peak_rss_bytes, percentile};

/// Flags of `loadtest`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct LoadArgs {
    /// Writer threads.
    #[arg(long, default_value_t = 8)]
    pub(crate) workers: usize,
    /// Transactions each writer runs.
    #[arg(long, default_value_t = 500)]
    pub(crate) transactions: usize,
    /// Reader threads running point reads while the writers work.
    #[arg(long, default_value_t = 2)]
    pub(crate) readers: usize,
    /// Pool size (`max_size`); smaller than workers + readers exercises waiting.
    #[arg(long, default_value_t = 10)]
    pub(crate) max_size: u32,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, serde::Serialize)]
struct Outcome {
    workers: usize,
    readers: usize,
    transactions: usize,
    errors: usize,
    first_error: Option<String>,
    elapsed_secs: f64,
    transactions_per_sec: f64,
    reads: u64,
    reads_per_sec: f64,
    txn_p50_us: f64,
    txn_p99_us: f64,
    txn_p999_us: f64,
    txn_max_us: f64,
    rows_verified: usize,
    integrity_check: String,
    peak_rss_bytes: u64,
    stats: hive_db_core::DbSnapshot,
}

const TXN_SQL: &str = "CREATE TABLE IF NOT EXISTS load_test (
    id INTEGER PRIMARY KEY, worker INTEGER NOT NULL, seq INTEGER NOT NULL, payload TEXT NOT NULL,
    UNIQUE (worker, seq))";

pub(crate) fn main(args: LoadArgs) -> anyhow::Result<()> {
    ensure!(args.workers > 0, "--workers must be at least 1");
    let dir = tempfile::tempdir()?;
    let registry = Registry::new();
    let name = DbName::new("loadtest")?;
    let config = DbConfig {
        create_if_missing: true,
        max_size: args.max_size,
        min_idle: 2.min(args.max_size),
        connection_timeout: Duration::from_secs(30),
        leak_threshold: Some(Duration::from_secs(5)),
        ..DbConfig::default()
    };
    registry.register(&name, dir.path().join("loadtest.db"), config)?;
    registry.write(&name, |tx| -> anyhow::Result<()> {
        tx.execute_batch(TXN_SQL)?;
        Ok(())
    })?;
    let run = run_workload(&registry, &name, &args)?;
    let verified = verify(&registry, &name, &run)?;
    let outcome = Outcome::new(&args, &run, &verified, registry.db_stats(&name)?);
    // Checked after `close_all`, which waits for borrowed connections: right after the run
    // a background checkpoint may still hold one for a few milliseconds.
    let reports = registry.close_all(Duration::from_secs(5));
    let still_out: usize = reports.iter().map(|r| r.still_out.len()).sum();
    if args.json {
        println!("{}", serde_json::to_string(&outcome)?);
    } else {
        print_outcome(&outcome, still_out);
    }
    check(&run, &verified, still_out)
}

/// What the writers and readers did.
#[derive(Debug, Default)]
struct Workload {
    /// (worker, seq, row id) of every write that returned `Ok`.
    acknowledged: Vec<(usize, usize, i64)>,
    /// Every transaction's latency in nanoseconds, sorted.
    latencies: Vec<u64>,
    errors: Vec<String>,
    reads: u64,
    elapsed_secs: f64,
}

/// Runs `args.workers` writers and `args.readers` readers until the writers are done.
fn run_workload(registry: &Registry, name: &DbName, args: &LoadArgs) -> anyhow::Result<Workload> {
    let shared = Mutex::new(Workload::default());
    let writers_done = AtomicBool::new(false);
    let start = Instant::now();
    let (shared_ref, done) = (&shared, &writers_done);
    let reads = std::thread::scope(|scope| -> anyhow::Result<u64> {
        let readers: Vec<_> = (0..args.readers)
            .map(|r| scope.spawn(move || reader(registry, name, r, done, shared_ref)))
            .collect();
        let writers: Vec<_> = (0..args.workers)
            .map(|w| scope.spawn(move || writer(registry, name, w, args.transactions, shared_ref)))
            .collect();
        for h in writers {
            h.join().map_err(|_| anyhow::anyhow!("a writer panicked"))?;
        }
        writers_done.store(true, Relaxed);
        let mut reads = 0;
        for h in readers {
            reads += h.join().map_err(|_| anyhow::anyhow!("a reader panicked"))?;
        }
        Ok(reads)
    })?;
    let mut run = shared.into_inner().unwrap_or_else(|p| p.into_inner());
    run.reads = reads;
    run.elapsed_secs = start.elapsed().as_secs_f64();
    run.latencies.sort_unstable();
    Ok(run)
}

/// Point reads until `done`; returns how many.
fn reader(
    registry: &Registry,
    name: &DbName,
    r: usize,
    done: &AtomicBool,
    shared: &Mutex<Workload>,
) -> u64 {
    let mut rng = Rng::new(1000 + r as u64);
    let mut n = 0u64;
    while !done.load(Relaxed) {
        let result = registry.read(name, |c| -> anyhow::Result<()> {
            let mut stmt = c.prepare_cached("SELECT payload FROM load_test WHERE id = ?1")?;
            let _: Option<String> = stmt
                .query_row([rng.below(1 + n % 4096)], |row| row.get(0))
                .map(Some)
                .or_else(|e| match e {
                    hive_db_core::rusqlite::Error::QueryReturnedNoRows => Ok(None),
                    e => Err(e),
                })?;
            Ok(())
        });
        if let Err(e) = result {
            lock(shared).errors.push(format!("reader {r}: {e:#}"));
        }
        n += 1;
    }
    n
}

/// `transactions` write transactions of worker `w`, each timed.
fn writer(
    registry: &Registry,
    name: &DbName,
    w: usize,
    transactions: usize,
    shared: &Mutex<Workload>,
) {
    let mut mine = Vec::with_capacity(transactions);
    let mut times = Vec::with_capacity(transactions);
    let mut errors = Vec::new();
    for seq in 0..transactions {
        let t0 = Instant::now();
        let result = registry.write(name, |tx| -> anyhow::Result<i64> {
            tx.execute_batch(TXN_SQL)?;
            tx.prepare_cached("INSERT INTO load_test (worker, seq, payload) VALUES (?1, ?2, ?3)")?
                .execute((
                    w as i64,
                    seq as i64,
                    format!("worker {w} transaction {seq}"),
                ))?;
            let id = tx.last_insert_rowid();
            let count: i64 = tx.query_row("SELECT count(*) FROM load_test", [], |r| r.get(0))?;
            ensure!(count >= 1, "count after insert was {count}");
            Ok(id)
        });
        times.push(t0.elapsed().as_nanos() as u64);
        match result {
            Ok(id) => mine.push((w, seq, id)),
            Err(e) => errors.push(format!("worker {w}: {e:#}")),
        }
    }
    let mut shared = lock(shared);
    shared.acknowledged.extend(mine);
    shared.latencies.extend(times);
    shared.errors.extend(errors);
}

/// What the database holds after the run.
#[derive(Debug)]
struct Verified {
    /// Rows stored.
    stored: usize,
    /// Acknowledged writes not found.
    missing: usize,
    integrity: String,
}

fn verify(registry: &Registry, name: &DbName, run: &Workload) -> anyhow::Result<Verified> {
    let stored: HashSet<(i64, i64, i64)> = registry.read(name, |c| -> anyhow::Result<_> {
        let mut stmt = c.prepare("SELECT id, worker, seq FROM load_test ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    })?;
    let missing = run
        .acknowledged
        .iter()
        .filter(|(w, s, id)| !stored.contains(&(*id, *w as i64, *s as i64)))
        .count();
    let integrity: String = registry.read(name, |c| -> anyhow::Result<String> {
        Ok(c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
    })?;
    Ok(Verified {
        stored: stored.len(),
        missing,
        integrity,
    })
}

impl Outcome {
    fn new(args: &LoadArgs, run: &Workload, v: &Verified, stats: hive_db_core::DbSnapshot) -> Self {
        let pct = |q: f64| percentile(&run.latencies, q) as f64 / 1e3;
        let done = run.acknowledged.len();
        Self {
            workers: args.workers,
            readers: args.readers,
            transactions: done,
            errors: run.errors.len(),
            first_error: run.errors.first().cloned(),
            elapsed_secs: run.elapsed_secs,
            transactions_per_sec: done as f64 / run.elapsed_secs,
            reads: run.reads,
            reads_per_sec: run.reads as f64 / run.elapsed_secs,
            txn_p50_us: pct(0.5),
            txn_p99_us: pct(0.99),
            txn_p999_us: pct(0.999),
            txn_max_us: run.latencies.last().map_or(0.0, |n| *n as f64 / 1e3),
            rows_verified: done - v.missing,
            integrity_check: v.integrity.clone(),
            peak_rss_bytes: peak_rss_bytes(),
            stats,
        }
    }
}

/// Fails unless every operation succeeded, every acknowledged write is stored once, the file
/// is intact and no connection was left out.
fn check(run: &Workload, v: &Verified, still_out: usize) -> anyhow::Result<()> {
    if let Some(first) = run.errors.first() {
        bail!("{} operations failed; first: {first}", run.errors.len());
    }
    ensure!(
        v.missing == 0,
        "{} acknowledged writes are missing",
        v.missing
    );
    ensure!(
        v.stored == run.acknowledged.len(),
        "{} rows stored for {} acknowledged writes",
        v.stored,
        run.acknowledged.len()
    );
    ensure!(v.integrity == "ok", "integrity_check: {}", v.integrity);
    ensure!(
        still_out == 0,
        "{still_out} connections still checked out when the database closed"
    );
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn print_outcome(o: &Outcome, still_out: usize) {
    println!(
        "hive-db load test: {} writers x {} transactions, {} readers, optimised build",
        o.workers,
        o.transactions / o.workers.max(1),
        o.readers
    );
    println!("  elapsed            {:.2} s", o.elapsed_secs);
    println!(
        "  transactions       {} ({:.0}/s), errors {}",
        o.transactions, o.transactions_per_sec, o.errors
    );
    println!(
        "  reads              {} ({:.0}/s)",
        o.reads, o.reads_per_sec
    );
    println!(
        "  txn latency        p50 {:.0} us, p99 {:.0} us, p99.9 {:.0} us, max {:.0} us",
        o.txn_p50_us, o.txn_p99_us, o.txn_p999_us, o.txn_max_us
    );
    let s = &o.stats;
    println!(
        "  pool               live {} (max {}), created {}, acquired {}, timeouts {}, busy {}, broken {}, leaks {}",
        s.live,
        s.max_size,
        s.totals.connections_created,
        s.acquires(),
        s.totals.acquire_timeouts + s.totals.writer_timeouts,
        s.totals.busy_errors,
        s.totals.connections_closed.broken,
        s.totals.leaks
    );
    println!(
        "  acquire wait       p50 {:.1} us, p99 {:.1} us, max {:.1} us; writer-lane wait p99 {:.1} us",
        s.acquire_wait.p50_ns as f64 / 1e3,
        s.acquire_wait.p99_ns as f64 / 1e3,
        s.acquire_wait.max_ns as f64 / 1e3,
        s.writer_wait.p99_ns as f64 / 1e3
    );
    println!(
        "  peak RSS           {:.1} MiB",
        o.peak_rss_bytes as f64 / (1024.0 * 1024.0)
    );
    println!(
        "  verification       {} of {} acknowledged writes present, integrity_check {}, {} connections left out",
        o.rows_verified, o.transactions, o.integrity_check, still_out
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bug caught: the README's main job failing end to end: an acknowledged write missing, a
    /// failed operation, a damaged file, or a connection still out when the database closes.
    /// The default size, so the WAL passes SQLite's checkpoint threshold several times.
    #[test]
    fn the_default_load_test_passes_its_own_verification() -> anyhow::Result<()> {
        main(LoadArgs {
            workers: 8,
            transactions: 500,
            readers: 2,
            max_size: 10,
            json: true,
        })
    }
}
