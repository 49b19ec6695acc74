//! A writer for crash tests: commits transfers through `Registry::write` and acknowledges each.
//!
//! `crash-writer PATH SYNC RUN THREADS COMMITS GROUP` registers PATH (created if missing) with
//! `synchronous` SYNC (`normal` or `full`) and `group_commit_max_writers` GROUP, creates the
//! schema if it is missing and prints `ready`. Then THREADS threads each commit COMMITS
//! transfers (0: until killed). A transfer moves an amount from a `checking` row to a `savings`
//! row, adds one to `counter` and inserts a `ledger` row keyed `(RUN, thread, k)` that records
//! the amount, all in one `write`. After each `write` returns `Ok`, the thread prints
//! `ack RUN THREAD K` and flushes standard output, so a line on the pipe means a commit the
//! registry reported done. When every thread is done it prints `done TRANSACTIONS`, the SQLite
//! transactions the registry committed.
//!
//! Invariants a reader checks after a crash: the balances sum to `ACCOUNTS * 1000`, `savings`
//! sums to the ledger's amounts, `counter` equals the ledger's rows, and each thread's ledger
//! rows of a run are `k = 0..n` without a gap.
//!
//! Exit codes: 0 done, 1 a `write` or the setup failed (the error on standard error), 2 usage.

use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use hive_db_core::{DbConfig, DbName, Registry, Synchronous};
use hive_tests::Rng;

/// Rows in each of `checking` and `savings`.
const ACCOUNTS: i64 = 16;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(parsed) = parse(&args) else {
        eprintln!("usage: crash-writer PATH normal|full RUN THREADS COMMITS GROUP");
        return ExitCode::from(2);
    };
    match run(parsed) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("crash-writer: {err:#}");
            ExitCode::FAILURE
        }
    }
}

struct Args {
    path: String,
    synchronous: Synchronous,
    run: i64,
    threads: i64,
    commits: i64,
    group: u32,
}

fn parse(args: &[String]) -> Option<Args> {
    let [path, sync, run, threads, commits, group] = args else {
        return None;
    };
    Some(Args {
        path: path.clone(),
        synchronous: match sync.as_str() {
            "normal" => Synchronous::Normal,
            "full" => Synchronous::Full,
            _ => return None,
        },
        run: run.parse().ok()?,
        threads: threads.parse().ok()?,
        commits: commits.parse().ok()?,
        group: group.parse().ok()?,
    })
}

fn run(args: Args) -> anyhow::Result<()> {
    let registry = Registry::new();
    let db = DbName::new("crash")?;
    let config = DbConfig {
        create_if_missing: true,
        synchronous: args.synchronous,
        group_commit_max_writers: args.group,
        max_size: 4,
        busy_timeout: Duration::from_secs(10),
        connection_timeout: Duration::from_secs(10),
        ..DbConfig::default()
    };
    registry
        .register(&db, &args.path, config)
        .context("register")?;
    registry
        .write(&db, |tx| {
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS checking (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
                 CREATE TABLE IF NOT EXISTS savings (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
                 CREATE TABLE IF NOT EXISTS counter (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL);
                 CREATE TABLE IF NOT EXISTS ledger (
                     run INTEGER NOT NULL, thread INTEGER NOT NULL, k INTEGER NOT NULL,
                     amount INTEGER NOT NULL, pad BLOB NOT NULL,
                     PRIMARY KEY (run, thread, k));
                 INSERT OR IGNORE INTO counter VALUES (1, 0);",
            )?;
            for id in 0..ACCOUNTS {
                tx.execute("INSERT OR IGNORE INTO checking VALUES (?1, 1000)", [id])?;
                tx.execute("INSERT OR IGNORE INTO savings VALUES (?1, 0)", [id])?;
            }
            Ok(())
        })
        .context("create schema")?;
    let out = Arc::new(Mutex::new(std::io::stdout()));
    ack(&out, "ready")?;

    let workers: Vec<_> = (0..args.threads)
        .map(|thread| {
            let (registry, db, out) = (registry.clone(), db.clone(), Arc::clone(&out));
            let (run, commits) = (args.run, args.commits);
            std::thread::spawn(move || -> anyhow::Result<()> {
                let mut rng = Rng::from_entropy();
                let mut k = 0;
                while commits == 0 || k < commits {
                    transfer(&registry, &db, &mut rng, run, thread, k)
                        .with_context(|| format!("transfer {run} {thread} {k}"))?;
                    ack(&out, &format!("ack {run} {thread} {k}"))?;
                    k += 1;
                }
                Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker
            .join()
            .map_err(|_| anyhow::anyhow!("a writer thread panicked"))??;
    }
    let transactions = registry.db_stats(&db)?.totals.write_transactions;
    registry.close_all(Duration::from_secs(5));
    ack(&out, &format!("done {transactions}"))
}

/// One transfer, in one `write`.
fn transfer(
    registry: &Registry,
    db: &DbName,
    rng: &mut Rng,
    run: i64,
    thread: i64,
    k: i64,
) -> anyhow::Result<()> {
    let from = rng.range(0, ACCOUNTS as u64) as i64;
    let to = rng.range(0, ACCOUNTS as u64) as i64;
    let amount = rng.range(0, 21) as i64 - 10;
    // Padding makes the WAL grow, so crashes also land in checkpoints.
    let pad_len = rng.range(0, 1500) as usize;
    let pad = rng.bytes(pad_len);
    registry.write(db, |tx| {
        tx.execute(
            "UPDATE checking SET balance = balance - ?2 WHERE id = ?1",
            (from, amount),
        )?;
        tx.execute(
            "UPDATE savings SET balance = balance + ?2 WHERE id = ?1",
            (to, amount),
        )?;
        tx.execute("UPDATE counter SET n = n + 1 WHERE id = 1", [])?;
        tx.execute(
            "INSERT INTO ledger (run, thread, k, amount, pad) VALUES (?1, ?2, ?3, ?4, ?5)",
            (run, thread, k, amount, pad),
        )?;
        Ok(())
    })?;
    Ok(())
}

/// Prints one line and flushes it before returning.
fn ack(out: &Mutex<std::io::Stdout>, line: &str) -> anyhow::Result<()> {
    let out = out
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut out = out.lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}
