//! Group commit: writers queued at once share one SQLite transaction, each in a savepoint of
//! its own. Every `write` that returned `Ok` must have committed, every other must have left
//! nothing behind, and nobody may wait forever when the shared transaction breaks.

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use hive_db_core::rusqlite::params;
use hive_db_core::{DbConfig, Registry};

use crate::support::{TestResult, config, eventually, fixture};

fn create_log(f: &crate::support::Fixture) -> TestResult {
    f.registry.write(&f.name, |tx| -> anyhow::Result<()> {
        tx.execute_batch(
            "CREATE TABLE log (thread INTEGER NOT NULL, seq INTEGER NOT NULL, \
             PRIMARY KEY (thread, seq))",
        )?;
        Ok(())
    })
}

fn logged(f: &crate::support::Fixture) -> anyhow::Result<BTreeSet<(i64, i64)>> {
    f.registry
        .read(&f.name, |c| -> anyhow::Result<BTreeSet<(i64, i64)>> {
            let mut stmt = c.prepare("SELECT thread, seq FROM log")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
}

/// Bug caught: in a shared transaction, a failed or panicking writer's rows committed with
/// the others' (savepoint not rolled back), or its failure undid the rows of the writers
/// before it, or a writer told `Ok` whose rows never committed, or told `Ok` before the
/// shared transaction committed. Each closure holds the lane
/// briefly, so writers queue and batches form; the test checks that they did.
#[test]
fn every_ok_write_commits_and_no_failed_one_does() -> TestResult {
    let f = Arc::new(fixture("group", config())?);
    create_log(&f)?;
    let (threads, writes) = (8_i64, 60_i64);
    let barrier = Arc::new(Barrier::new(threads as usize));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (f, barrier) = (Arc::clone(&f), Arc::clone(&barrier));
            std::thread::spawn(move || -> anyhow::Result<Vec<(i64, i64)>> {
                barrier.wait();
                let mut ok = Vec::new();
                for seq in 0..writes {
                    let outcome = catch_unwind(AssertUnwindSafe(|| {
                        f.registry.write(&f.name, |tx| -> anyhow::Result<()> {
                            tx.execute(
                                "INSERT INTO log (thread, seq) VALUES (?1, ?2)",
                                params![t, seq],
                            )?;
                            std::thread::sleep(Duration::from_micros(200));
                            match (t + seq) % 7 {
                                3 => anyhow::bail!("writer {t}/{seq} changed its mind"),
                                5 => panic!("writer {t}/{seq} panicked"),
                                _ => Ok(()),
                            }
                        })
                    }));
                    if let Ok(Ok(())) = outcome {
                        // `write` returned, so its rows are committed: another connection
                        // sees them now, not only once the batch's last writer commits.
                        let seen: i64 = f.registry.read(&f.name, |c| -> anyhow::Result<i64> {
                            Ok(c.query_row(
                                "SELECT count(*) FROM log WHERE thread = ?1 AND seq = ?2",
                                params![t, seq],
                                |r| r.get(0),
                            )?)
                        })?;
                        anyhow::ensure!(seen == 1, "write {t}/{seq} returned Ok before its commit");
                        ok.push((t, seq));
                    }
                }
                Ok(ok)
            })
        })
        .collect();
    let mut told_ok = BTreeSet::new();
    for h in handles {
        told_ok.extend(h.join().expect("writer thread")?);
    }
    let expected: BTreeSet<(i64, i64)> = (0..threads)
        .flat_map(|t| (0..writes).map(move |seq| (t, seq)))
        .filter(|(t, seq)| !matches!((t + seq) % 7, 3 | 5))
        .collect();
    assert_eq!(
        told_ok, expected,
        "every writer whose closure succeeded is told Ok"
    );
    assert_eq!(
        logged(&f)?,
        expected,
        "exactly the Ok writes are in the table"
    );

    let totals = f.registry.db_stats(&f.name)?.totals;
    let attempted = (threads * writes) as u64 + 1;
    assert_eq!(totals.commits + totals.rollbacks, attempted);
    assert_eq!(totals.commits, expected.len() as u64 + 1);
    assert!(
        totals.transactions < totals.commits,
        "no batch formed: {} transactions for {} commits",
        totals.transactions,
        totals.commits
    );
    Ok(())
}

fn spawn_writer(
    registry: &Registry,
    name: &hive_db_core::DbName,
    seq: i64,
    end_transaction: bool,
) -> std::thread::JoinHandle<anyhow::Result<()>> {
    let (registry, name) = (registry.clone(), name.clone());
    std::thread::spawn(move || {
        registry.write(&name, |tx| -> anyhow::Result<()> {
            tx.execute("INSERT INTO log (thread, seq) VALUES (1, ?1)", [seq])?;
            if end_transaction {
                // Against the contract: ends the transaction it shares with writer 0.
                tx.execute_batch("ROLLBACK")?;
            }
            Ok(())
        })
    })
}

/// Bug caught: a writer's closure that ends the shared transaction (here with `ROLLBACK`)
/// leaves the writers before it waiting forever for a commit that never comes, or tells them
/// `Ok` though their rows were rolled back; or the lane stays stuck for the writers after.
#[test]
fn a_writer_that_ends_the_shared_transaction_fails_its_batch_but_nobody_hangs() -> TestResult {
    // A batch that never ages out, so writer 0's transaction is passed on however slowly
    // this machine runs the test.
    let f = fixture(
        "group_broken",
        DbConfig {
            group_commit_max_age: Duration::from_secs(60),
            ..config()
        },
    )?;
    create_log(&f)?;
    let queued = |n: u32| {
        let (registry, name) = (f.registry.clone(), f.name.clone());
        eventually(Duration::from_secs(5), move || {
            registry.db_stats(&name).is_ok_and(|s| s.writer_queue == n)
        })
    };
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let first = {
        let (registry, name) = (f.registry.clone(), f.name.clone());
        std::thread::spawn(move || {
            registry.write(&name, |tx| -> anyhow::Result<()> {
                tx.execute("INSERT INTO log (thread, seq) VALUES (1, 0)", [])?;
                go_rx.recv()?;
                Ok(())
            })
        })
    };
    assert!(eventually(Duration::from_secs(5), || {
        f.registry.db_stats(&f.name).is_ok_and(|s| s.active == 1)
    }));
    let breaker = spawn_writer(&f.registry, &f.name, 1, true);
    assert!(queued(1), "writer 1 queued");
    let after = spawn_writer(&f.registry, &f.name, 2, false);
    assert!(queued(2), "writer 2 queued");
    go_tx.send(())?;

    let first = first.join().expect("writer 0");
    let breaker = breaker.join().expect("writer 1");
    let after = after.join().expect("writer 2");
    let err = first.expect_err("writer 0's rows were rolled back by writer 1");
    let err = err
        .downcast_ref::<hive_db_core::Error>()
        .expect("a registry error");
    assert_eq!(err.db(), Some(&f.name));
    assert!(breaker.is_err(), "writer 1 ended its own transaction");
    assert!(after.is_ok(), "writer 2 runs in a fresh transaction");
    assert_eq!(logged(&f)?, BTreeSet::from([(1, 2)]));
    Ok(())
}
