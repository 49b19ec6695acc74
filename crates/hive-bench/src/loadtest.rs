//! `cargo xtask loadtest`: the original service's concurrent transaction workload (workers each running
//! `CREATE TABLE IF NOT EXISTS`, one insert and one count per transaction) plus readers,
//! through the registry on a temporary database, then a verification: every acknowledged
//! write present once, `integrity_check` ok, nothing left checked out.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use hive_db_core::{DbConfig, DbName, Registry};

use crate::measure::{Rng, peak_rss_bytes, percentile};

/// Flags of `loadtest`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Writer threads.
    #[arg(long, default_value_t = 8)]
    pub workers: usize,
    /// Transactions each writer runs.
    #[arg(long, default_value_t = 500)]
    pub transactions: usize,
    /// Reader threads running point reads while the writers work.
    #[arg(long, default_value_t = 2)]
    pub readers: usize,
    /// Pool size (`max_size`); smaller than workers + readers exercises waiting.
    #[arg(long, default_value_t = 10)]
    pub max_size: u32,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
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

pub fn main(args: LoadArgs) -> anyhow::Result<()> {
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

    let acknowledged: Mutex<Vec<(usize, usize, i64)>> = Mutex::new(Vec::new());
    let latencies: Mutex<Vec<u64>> = Mutex::new(Vec::new());
    let errors: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let writers_done = AtomicBool::new(false);
    let start = Instant::now();
    let reads = std::thread::scope(|scope| -> anyhow::Result<u64> {
        let readers: Vec<_> = (0..args.readers)
            .map(|r| {
                let (registry, name, done, errors) = (&registry, &name, &writers_done, &errors);
                scope.spawn(move || {
                    let mut rng = Rng::new(1000 + r as u64);
                    let mut n = 0u64;
                    while !done.load(Relaxed) {
                        let result = registry.read(name, |c| -> anyhow::Result<()> {
                            let mut stmt =
                                c.prepare_cached("SELECT payload FROM load_test WHERE id = ?1")?;
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
                            lock(errors).push(format!("reader {r}: {e:#}"));
                        }
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let writers: Vec<_> = (0..args.workers)
            .map(|w| {
                let (registry, name, ack, lat, errors) =
                    (&registry, &name, &acknowledged, &latencies, &errors);
                let transactions = args.transactions;
                scope.spawn(move || {
                    let mut mine = Vec::with_capacity(transactions);
                    let mut times = Vec::with_capacity(transactions);
                    for seq in 0..transactions {
                        let t0 = Instant::now();
                        let result = registry.write(name, |tx| -> anyhow::Result<i64> {
                            tx.execute_batch(TXN_SQL)?;
                            tx.prepare_cached(
                                "INSERT INTO load_test (worker, seq, payload) VALUES (?1, ?2, ?3)",
                            )?
                            .execute((
                                w as i64,
                                seq as i64,
                                format!("worker {w} transaction {seq}"),
                            ))?;
                            let id = tx.last_insert_rowid();
                            let count: i64 =
                                tx.query_row("SELECT count(*) FROM load_test", [], |r| r.get(0))?;
                            ensure!(count >= 1, "count after insert was {count}");
                            Ok(id)
                        });
                        times.push(t0.elapsed().as_nanos() as u64);
                        match result {
                            Ok(id) => mine.push((w, seq, id)),
                            Err(e) => lock(errors).push(format!("worker {w}: {e:#}")),
                        }
                    }
                    lock(ack).extend(mine);
                    lock(lat).extend(times);
                })
            })
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
    let elapsed = start.elapsed().as_secs_f64();

    // Verification.
    let acknowledged = acknowledged.into_inner().unwrap_or_else(|p| p.into_inner());
    let errors = errors.into_inner().unwrap_or_else(|p| p.into_inner());
    let stored: Vec<(i64, i64, i64)> = registry.read(&name, |c| -> anyhow::Result<_> {
        let mut stmt = c.prepare("SELECT id, worker, seq FROM load_test ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    })?;
    let stored_set: std::collections::HashSet<(i64, i64, i64)> = stored.iter().copied().collect();
    let missing = acknowledged
        .iter()
        .filter(|(w, s, id)| !stored_set.contains(&(*id, *w as i64, *s as i64)))
        .count();
    let integrity: String = registry.read(&name, |c| -> anyhow::Result<String> {
        Ok(c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
    })?;
    let stats = registry.db_stats(&name)?;
    let mut lat = latencies.into_inner().unwrap_or_else(|p| p.into_inner());
    lat.sort_unstable();
    let pct = |q: f64| percentile(&lat, q) as f64 / 1e3;
    let outcome = Outcome {
        workers: args.workers,
        readers: args.readers,
        transactions: acknowledged.len(),
        errors: errors.len(),
        first_error: errors.first().cloned(),
        elapsed_secs: elapsed,
        transactions_per_sec: acknowledged.len() as f64 / elapsed,
        reads,
        reads_per_sec: reads as f64 / elapsed,
        txn_p50_us: pct(0.5),
        txn_p99_us: pct(0.99),
        txn_p999_us: pct(0.999),
        txn_max_us: lat.last().map_or(0.0, |n| *n as f64 / 1e3),
        rows_verified: acknowledged.len() - missing,
        integrity_check: integrity.clone(),
        peak_rss_bytes: peak_rss_bytes(),
        stats: stats.clone(),
    };
    let reports = registry.close_all(Duration::from_secs(5));
    let still_out: usize = reports.iter().map(|r| r.still_out.len()).sum();

    if args.json {
        println!("{}", serde_json::to_string(&outcome)?);
    } else {
        print_outcome(&outcome, still_out);
    }
    ensure!(
        errors.is_empty(),
        "{} operations failed; first: {}",
        errors.len(),
        errors[0]
    );
    ensure!(missing == 0, "{missing} acknowledged writes are missing");
    ensure!(
        stored.len() == acknowledged.len(),
        "{} rows stored for {} acknowledged writes",
        stored.len(),
        acknowledged.len()
    );
    ensure!(integrity == "ok", "integrity_check: {integrity}");
    // Checked after `close_all`, which waits for borrowed connections: right after the run
    // a background checkpoint may still hold one for a few milliseconds.
    if still_out != 0 {
        bail!("{still_out} connections still checked out when the database closed");
    }
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
