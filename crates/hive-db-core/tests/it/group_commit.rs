//! Group commit: writers queued at once share one SQLite transaction, each with an earlier
//! writer's work before it in a savepoint of its own. Every `write` that returned `Ok` must
//! have committed, every other must have left nothing behind, and nobody may wait forever when
//! the shared transaction breaks.

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use hive_db_core::rusqlite::params;
use hive_db_core::{DbConfig, Registry};

use crate::support::{TestResult, config, eventually, fixture};

fn create_log(f: &crate::support::Fixture) -> TestResult {
    f.registry.write(&f.name, |tx| {
        tx.execute_batch(
            "CREATE TABLE log (thread INTEGER NOT NULL, seq INTEGER NOT NULL, \
             PRIMARY KEY (thread, seq))",
        )
    })?;
    Ok(())
}

fn logged(f: &crate::support::Fixture) -> anyhow::Result<BTreeSet<(i64, i64)>> {
    Ok(f.registry.read(&f.name, |c| {
        let mut stmt = c.prepare("SELECT thread, seq FROM log")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    })?)
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
                        f.registry.write_with(&f.name, |tx| -> anyhow::Result<_> {
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
                        let seen: i64 = f.registry.read(&f.name, |c| {
                            c.query_row(
                                "SELECT count(*) FROM log WHERE thread = ?1 AND seq = ?2",
                                params![t, seq],
                                |r| r.get(0),
                            )
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
        totals.write_transactions < totals.commits,
        "no batch formed: {} transactions for {} commits",
        totals.write_transactions,
        totals.commits
    );
    Ok(())
}

/// How writer 1 breaks the contract: SQL run on its shared transaction, directly or from
/// inside a nested `read` of another database (a nested `write`'s closure must be `Send`, so it
/// cannot hold the outer transaction).
#[derive(Clone, Copy)]
enum Breach {
    Direct(&'static str),
    Nested(&'static str),
}

fn spawn_writer(
    registry: &Registry,
    name: &hive_db_core::DbName,
    seq: i64,
    breach: Option<Breach>,
) -> std::thread::JoinHandle<anyhow::Result<()>> {
    let (registry, name) = (registry.clone(), name.clone());
    std::thread::spawn(move || {
        registry.write_with(&name, |tx| -> anyhow::Result<_> {
            tx.execute("INSERT INTO log (thread, seq) VALUES (1, ?1)", [seq])?;
            // The errors SQLite may report are ignored, as a careless closure would.
            match breach {
                None => {}
                Some(Breach::Direct(sql)) => {
                    let _ = tx.execute_batch(sql);
                }
                Some(Breach::Nested(sql)) => {
                    let other = hive_db_core::DbName::new("group_other")?;
                    let _ = registry.read(&other, |_| {
                        let _ = tx.execute_batch(sql);
                        Ok(())
                    });
                }
            }
            Ok(())
        })
    })
}

/// How writer 0 of a [`HeldBatch`] ends its closure once let go.
#[derive(Debug, Clone, Copy)]
enum End {
    Ok,
    Err,
    Panic,
}

/// A database whose batches never age out, so that writer 0's transaction is passed on
/// however slowly this machine runs the test; with writer 0 inside its closure, its row
/// inserted, until `go` says how it ends.
struct HeldBatch {
    f: crate::support::Fixture,
    first: std::thread::JoinHandle<anyhow::Result<()>>,
    go: std::sync::mpsc::Sender<End>,
}

impl HeldBatch {
    fn start(name: &str) -> anyhow::Result<Self> {
        let f = fixture(
            name,
            DbConfig {
                group_commit_max_age: Duration::from_secs(60),
                ..config()
            },
        )?;
        create_log(&f)?;
        let (go, go_rx) = std::sync::mpsc::channel::<End>();
        let first = {
            let (registry, name) = (f.registry.clone(), f.name.clone());
            std::thread::spawn(move || {
                registry.write_with(&name, move |tx| -> anyhow::Result<_> {
                    tx.execute("INSERT INTO log (thread, seq) VALUES (1, 0)", [])?;
                    match go_rx.recv()? {
                        End::Ok => Ok(()),
                        End::Err => anyhow::bail!("writer 0 changed its mind"),
                        End::Panic => panic!("writer 0 panicked"),
                    }
                })
            })
        };
        anyhow::ensure!(eventually(Duration::from_secs(5), || {
            f.registry.db_stats(&f.name).is_ok_and(|s| s.active() == 1)
        }));
        Ok(Self { f, first, go })
    }

    /// Waits until `n` writers are queued behind writer 0.
    fn queued(&self, n: u32) -> bool {
        let (registry, name) = (self.f.registry.clone(), self.f.name.clone());
        eventually(Duration::from_secs(5), move || {
            registry.db_stats(&name).is_ok_and(|s| s.writer_queue == n)
        })
    }
}

/// Bug caught: a writer's closure that ends the shared transaction leaves the writers before
/// it waiting forever for a commit that never comes, or tells them they failed while their
/// rows committed (with `COMMIT`, also from inside a nested `read` of another database, or
/// an autocommit statement after `ROLLBACK`: a retry would write them twice), or `Ok` though
/// their rows were rolled back (with `ROLLBACK`); or the lane stays stuck for the writers after;
/// or the writers before it given an invented SQLite error instead of the batch's failure.
#[test]
fn a_writer_that_ends_the_shared_transaction_fails_its_batch_but_nobody_hangs() -> TestResult {
    let breaches = [
        ("ROLLBACK", Breach::Direct("ROLLBACK")),
        ("COMMIT", Breach::Direct("COMMIT")),
        ("COMMIT in a nested read", Breach::Nested("COMMIT")),
        (
            "ROLLBACK, then an autocommit INSERT",
            Breach::Direct("ROLLBACK; INSERT INTO log (thread, seq) VALUES (1, 99)"),
        ),
    ];
    for (i, (sql, breach)) in breaches.into_iter().enumerate() {
        let held = HeldBatch::start(&format!("group_broken_{i}"))?;
        let other = hive_db_core::DbName::new("group_other")?;
        held.f
            .registry
            .register(&other, held.f.dir.path().join("other.db"), config())?;
        let breaker = spawn_writer(&held.f.registry, &held.f.name, 1, Some(breach));
        assert!(held.queued(1), "writer 1 queued");
        let after = spawn_writer(&held.f.registry, &held.f.name, 2, None);
        assert!(held.queued(2), "writer 2 queued");
        held.go.send(End::Ok)?;

        let first = held.first.join().expect("writer 0");
        let breaker = breaker.join().expect("writer 1");
        let after = after.join().expect("writer 2");
        let err = first.expect_err("writer 0 shared its transaction with writer 1");
        let err = err
            .downcast_ref::<hive_db_core::Error>()
            .expect("a registry error");
        assert_eq!(err.db(), Some(&held.f.name));
        // What it is told is what happened: its batch failed under another writer. SQLite
        // returned no error to it, so none is made up as its source.
        assert!(
            matches!(
                err,
                hive_db_core::Error::BatchFailed {
                    op: "commit",
                    code: None,
                    ..
                }
            ),
            "{sql}: {err:?}"
        );
        assert!(std::error::Error::source(err).is_none(), "{sql}: {err:?}");
        assert!(
            breaker.is_err(),
            "{sql}: writer 1 ended its own transaction"
        );
        assert!(after.is_ok(), "{sql}: writer 2 runs in a fresh transaction");
        assert_eq!(
            logged(&held.f)?,
            BTreeSet::from([(1, 2)]),
            "{sql}: only writer 2's row"
        );
    }
    Ok(())
}

/// Bug caught: a writer's session change reaching the writers queued behind it in the same
/// batch, who inherit its connection without a return to the pool in between: after writer
/// 1's `PRAGMA query_only = ON`, writer 2's insert is refused. The batch must end with the
/// writer that changed the session, and its connection be closed.
#[test]
fn a_writer_that_changes_the_session_ends_its_batch() -> TestResult {
    let held = HeldBatch::start("group_session")?;
    let changer = spawn_writer(
        &held.f.registry,
        &held.f.name,
        1,
        Some(Breach::Direct("PRAGMA query_only = ON")),
    );
    assert!(held.queued(1), "writer 1 queued");
    let after = spawn_writer(&held.f.registry, &held.f.name, 2, None);
    assert!(held.queued(2), "writer 2 queued");
    held.go.send(End::Ok)?;
    held.first.join().expect("writer 0")?;
    changer.join().expect("writer 1")?;
    after.join().expect("writer 2")?;
    assert_eq!(logged(&held.f)?, BTreeSet::from([(1, 0), (1, 1), (1, 2)]));
    let totals = held.f.registry.db_stats(&held.f.name)?.totals;
    assert_eq!(totals.connections_closed.session_changed, 1, "{totals:?}");
    Ok(())
}

/// A writer inserting its row, then failing (returning `Err`) when `fail`.
fn spawn_failing_writer(
    held: &HeldBatch,
    seq: i64,
    fail: bool,
) -> std::thread::JoinHandle<anyhow::Result<()>> {
    let (registry, name) = (held.f.registry.clone(), held.f.name.clone());
    std::thread::spawn(move || {
        registry.write_with(&name, |tx| -> anyhow::Result<_> {
            tx.execute("INSERT INTO log (thread, seq) VALUES (1, ?1)", [seq])?;
            anyhow::ensure!(!fail, "writer {seq} changed its mind");
            Ok(())
        })
    })
}

/// Bug caught: the first writer of a batch runs without a savepoint, so its failure must roll
/// the transaction back and begin it again. Caught: its row committing with the writers after
/// it (not rolled back); the writers after it failing or writing outside the batch (the
/// transaction not begun again); or, were a later writer taken for the first, its failure
/// rolling back the work of the writers before it while they are told `Ok`.
#[test]
fn a_failed_first_writer_leaves_nothing_and_its_batch_goes_on() -> TestResult {
    for end in [End::Err, End::Panic] {
        let held = HeldBatch::start(&format!("group_first_{end:?}"))?;
        let writers: Vec<_> = (1..=3)
            .map(|seq| {
                let writer = spawn_failing_writer(&held, seq, seq == 2);
                assert!(held.queued(seq as u32), "{end:?}: writer {seq} queued");
                writer
            })
            .collect();
        held.go.send(end)?;
        let first = held.first.join();
        match end {
            End::Panic => assert!(first.is_err(), "writer 0's panic reached its caller"),
            _ => assert!(first.expect("writer 0").is_err(), "writer 0 failed"),
        }
        let outcomes: Vec<bool> = writers
            .into_iter()
            .map(|w| w.join().expect("a queued writer").is_ok())
            .collect();
        assert_eq!(outcomes, [true, false, true], "{end:?}: writers 1 to 3");
        assert_eq!(
            logged(&held.f)?,
            BTreeSet::from([(1, 1), (1, 3)]),
            "{end:?}: only the rows of the writers told Ok"
        );
        let totals = held.f.registry.db_stats(&held.f.name)?.totals;
        assert_eq!(
            (totals.commits, totals.rollbacks, totals.write_transactions),
            (3, 2, 2),
            "{end:?}: the table, then one batch for writers 0 to 3: {totals:?}"
        );
        // The batch began again rather than breaking (writer 1 would then begin another and
        // run the rest, with the same rows and counts as above, but writer 0's connection,
        // still healthy, would be closed as broken with the batch; a panic closes it anyway).
        assert_eq!(totals.failed_transactions, 0, "{end:?}: {totals:?}");
        let closed = u64::from(matches!(end, End::Panic));
        assert_eq!(
            totals.connections_closed.broken, closed,
            "{end:?}: {totals:?}"
        );
    }
    Ok(())
}

/// Bug caught: a writer with no work before it (so with no savepoint of its own to fail its
/// release) that ends the batch's transaction and begins another in its place is told `Ok`,
/// and the batch commits a transaction it did not begin: with plain `BEGIN`, one that holds
/// no write lock until its first write.
#[test]
fn a_first_writer_that_begins_a_transaction_of_its_own_is_refused() -> TestResult {
    let f = fixture("group_first_rebegin", config())?;
    create_log(&f)?;
    for begin in ["BEGIN", "BEGIN IMMEDIATE"] {
        let outcome = f.registry.write_with(&f.name, |tx| -> anyhow::Result<_> {
            tx.execute("INSERT INTO log (thread, seq) VALUES (1, 1)", [])?;
            tx.execute_batch(&format!(
                "ROLLBACK; {begin}; INSERT INTO log (thread, seq) VALUES (1, 2)"
            ))?;
            Ok(())
        });
        assert!(
            outcome.is_err(),
            "{begin}: the writer ended its transaction"
        );
        assert_eq!(logged(&f)?, BTreeSet::new(), "{begin}: nothing of it stays");
    }
    f.registry.write(&f.name, |tx| {
        tx.execute("INSERT INTO log (thread, seq) VALUES (1, 3)", [])
    })?;
    assert_eq!(logged(&f)?, BTreeSet::from([(1, 3)]), "writing goes on");
    // The broken batches held no other writer's work: nothing was lost.
    let totals = f.registry.db_stats(&f.name)?.totals;
    assert_eq!(totals.failed_transactions, 0, "{totals:?}");
    Ok(())
}

/// The address of the connection a closure got: the same for the same pooled connection.
fn conn_id(conn: &hive_db_core::rusqlite::Connection) -> usize {
    std::ptr::from_ref(conn).addr()
}

/// Bug caught: a write transaction beginning on the connection this thread used last
/// rather than on the one the last write transaction began on. SQLite drops a connection's
/// whole page cache once another connection has written, so every write on another thread's
/// connection reads the pages it touches again, inside the writer lane. Also caught: that
/// preference moving the thread's own place, so its reads leave the connection they had.
#[test]
fn a_write_begins_on_the_last_writers_connection_when_it_is_idle() -> TestResult {
    let f = Arc::new(fixture("group_writer_place", config())?);
    create_log(&f)?;
    let write = |f: &crate::support::Fixture, seq: i64| {
        f.registry.write(&f.name, |tx| {
            tx.execute("INSERT INTO log (thread, seq) VALUES (1, ?1)", [seq])?;
            Ok(conn_id(tx))
        })
    };
    let read = |f: &crate::support::Fixture| f.registry.read(&f.name, |c| Ok(conn_id(c)));
    // Each thread holds a connection of its own (its own place) while this one writes, so
    // the first write begins on a third connection, neither thread's own. (The bag's sweep,
    // about once a second, takes idle connections out of their places for an instant; a
    // write meeting it falls back to the usual checkout, a rare failure of this test.)
    let held = f.registry.get(&f.name)?;
    let (ids, from_other) = std::sync::mpsc::channel();
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let other = {
        let f = Arc::clone(&f);
        std::thread::spawn(move || -> anyhow::Result<()> {
            let its = f.registry.get(&f.name)?;
            ids.send(conn_id(&its))?;
            wait.recv()?;
            drop(its);
            ids.send(write(&f, 2)?)?;
            ids.send(read(&f)?)?;
            Ok(())
        })
    };
    let timeout = Duration::from_secs(20);
    let others = from_other.recv_timeout(timeout)?;
    let first = write(&f, 1)?;
    drop(held);
    go.send(())?;
    let second = from_other.recv_timeout(timeout)?;
    assert_eq!(
        second, first,
        "the second write began on the first one's connection"
    );
    let its_read = from_other.recv_timeout(timeout)?;
    other.join().expect("the other thread")?;
    assert_eq!(
        its_read, others,
        "the other thread reads on its own connection still"
    );
    assert_eq!(logged(&f)?, BTreeSet::from([(1, 1), (1, 2)]));
    Ok(())
}

/// Bug caught: a writer that was queued when its database closed writing anyway, because it
/// inherited an open transaction and never checked out a connection; or the work accepted
/// before the close lost with it.
#[test]
fn a_writer_queued_across_close_is_refused_and_the_batch_before_it_commits() -> TestResult {
    let held = HeldBatch::start("group_closed")?;
    let late = spawn_writer(&held.f.registry, &held.f.name, 1, None);
    assert!(held.queued(1), "writer 1 queued");
    let report = held
        .f
        .registry
        .close(&held.f.name, Duration::from_millis(50))?;
    assert_eq!(
        report.still_out.len(),
        1,
        "writer 0's connection is still out"
    );
    held.go.send(End::Ok)?;
    held.first.join().expect("writer 0")?;
    let late = late.join().expect("writer 1");
    let err = late.expect_err("the database closed while writer 1 queued");
    assert!(matches!(
        err.downcast_ref::<hive_db_core::Error>(),
        Some(hive_db_core::Error::Closed { .. })
    ));
    let conn = hive_db_core::rusqlite::Connection::open(held.f.path())?;
    let rows: Vec<i64> = conn
        .prepare("SELECT seq FROM log ORDER BY seq")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    assert_eq!(
        rows,
        vec![0],
        "writer 0's row committed, writer 1's never written"
    );
    Ok(())
}

/// Checks that writer 0 of a [`HeldBatch`] on `f` and writers 1 to 3 queued behind it all
/// committed their rows, in one transaction after the table's.
fn committed_in_one_batch_of_four(f: &crate::support::Fixture) -> TestResult {
    assert_eq!(logged(f)?, BTreeSet::from([(1, 0), (1, 1), (1, 2), (1, 3)]));
    let totals = f.registry.db_stats(&f.name)?.totals;
    assert_eq!(
        (totals.commits, totals.write_transactions),
        (5, 2),
        "the table, then one batch of four: {totals:?}"
    );
    Ok(())
}

/// A writer that records which thread ran its closure, on `recorded`.
fn spawn_recording_writer(
    held: &HeldBatch,
    seq: i64,
    recorded: std::sync::mpsc::Sender<(i64, std::thread::ThreadId)>,
) -> std::thread::JoinHandle<anyhow::Result<std::thread::ThreadId>> {
    let (registry, name) = (held.f.registry.clone(), held.f.name.clone());
    std::thread::spawn(move || {
        registry.write_with(&name, move |tx| -> anyhow::Result<_> {
            tx.execute("INSERT INTO log (thread, seq) VALUES (1, ?1)", [seq])?;
            recorded.send((seq, std::thread::current().id()))?;
            Ok(())
        })?;
        Ok(std::thread::current().id())
    })
}

/// Bug caught: the writer holding the lane hands it to each queued writer in turn (a wake-up
/// and a context switch per writer) instead of running the closures they lent on its own
/// thread; or runs them out of arrival order; or a writer told `Ok` before its lent work
/// committed.
#[test]
fn the_lane_holder_runs_the_queued_writers_closures_in_order() -> TestResult {
    let held = HeldBatch::start("group_lent")?;
    let (recorded, runs) = std::sync::mpsc::channel();
    let mut writers = Vec::new();
    for seq in 1..=3 {
        writers.push(spawn_recording_writer(&held, seq, recorded.clone()));
        assert!(held.queued(seq as u32), "writer {seq} queued");
    }
    held.go.send(End::Ok)?;
    held.first.join().expect("writer 0")?;
    let holder = runs.recv_timeout(Duration::from_secs(20))?;
    let mut ran = vec![holder];
    for _ in 2..=3 {
        ran.push(runs.recv_timeout(Duration::from_secs(20))?);
    }
    for w in writers {
        let own = w.join().expect("a queued writer")?;
        assert!(ran.iter().all(|&(_, t)| t != own), "ran on its own thread");
    }
    assert_eq!(ran.iter().map(|&(s, _)| s).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(
        ran.iter().all(|&(_, t)| t == holder.1),
        "one thread ran them all: {ran:?}"
    );
    committed_in_one_batch_of_four(&held.f)
}

/// Bug caught: `write_local` lending its closure to the writer holding the lane (it would run
/// on another thread, where what it captured cannot go), taking its turn out of the queue's
/// order, or running outside the batch of the writers around it; or the writer behind it
/// losing its lent closure's run.
#[test]
fn a_local_write_runs_on_its_callers_thread_in_order_and_in_the_batch() -> TestResult {
    let held = HeldBatch::start("group_local")?;
    let (recorded, runs) = std::sync::mpsc::channel();
    let before = spawn_recording_writer(&held, 1, recorded.clone());
    assert!(held.queued(1), "writer 1 queued");
    let local = {
        let (registry, name) = (held.f.registry.clone(), held.f.name.clone());
        let recorded = recorded.clone();
        std::thread::spawn(move || -> anyhow::Result<std::thread::ThreadId> {
            // Not `Send`: only a closure that runs on this thread may hold it.
            let seen = std::rc::Rc::new(std::cell::Cell::new(0));
            let inner = std::rc::Rc::clone(&seen);
            registry.write_local_with(&name, move |tx| -> anyhow::Result<_> {
                tx.execute("INSERT INTO log (thread, seq) VALUES (1, 2)", [])?;
                inner.set(2);
                recorded.send((2, std::thread::current().id()))?;
                Ok(())
            })?;
            anyhow::ensure!(seen.get() == 2, "the closure's capture was not set");
            Ok(std::thread::current().id())
        })
    };
    assert!(held.queued(2), "the local writer queued");
    let after = spawn_recording_writer(&held, 3, recorded);
    assert!(held.queued(3), "writer 3 queued");
    held.go.send(End::Ok)?;
    held.first.join().expect("writer 0")?;
    let ran = (0..3)
        .map(|_| runs.recv_timeout(Duration::from_secs(20)))
        .collect::<Result<Vec<_>, _>>()?;
    let local = local.join().expect("the local writer")?;
    for w in [before, after] {
        w.join().expect("a queued writer")?;
    }
    assert_eq!(ran.iter().map(|&(s, _)| s).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(
        ran[1].1, local,
        "the local closure ran on its caller's thread"
    );
    committed_in_one_batch_of_four(&held.f)
}

/// Bug caught: `write_local`'s SQLite error coming back without the database's name, its
/// work committed although its closure failed, or its closure run more than once.
#[test]
fn a_failed_local_write_names_its_database_and_leaves_nothing() -> TestResult {
    let f = fixture("group_local_err", config())?;
    create_log(&f)?;
    let calls = std::rc::Rc::new(std::cell::Cell::new(0));
    let counted = std::rc::Rc::clone(&calls);
    let failed = f.registry.handle(&f.name)?.write_local(move |tx| {
        counted.set(counted.get() + 1);
        tx.execute("INSERT INTO log (thread, seq) VALUES (9, 9)", [])?;
        tx.execute("INSERT INTO missing VALUES (1)", [])
    });
    assert!(
        matches!(failed, Err(hive_db_core::Error::Sqlite { ref db, .. }) if db == &f.name),
        "{failed:?}"
    );
    assert_eq!(calls.get(), 1);
    assert_eq!(
        logged(&f)?,
        BTreeSet::new(),
        "the failed write's row stayed"
    );
    Ok(())
}

/// Bug caught: a write made from inside another closure of the registry lending its closure
/// to another thread, where what its own thread holds is not counted (a nested `write` of the
/// same database would wait for itself instead of failing with `Reentrant`); or a panic in a
/// lent closure lost, or raised on the holder's thread instead of its own caller's.
#[test]
fn nested_writes_run_on_their_own_thread_and_lent_panics_reach_their_caller() -> TestResult {
    let held = HeldBatch::start("group_lent_nested")?;
    let other = hive_db_core::DbName::new("group_other")?;
    held.f
        .registry
        .register(&other, held.f.dir.path().join("other.db"), config())?;
    let panicking = {
        let (registry, name) = (held.f.registry.clone(), held.f.name.clone());
        std::thread::spawn(move || {
            let caught = catch_unwind(AssertUnwindSafe(|| {
                let _ = registry.write(&name, |tx| -> hive_db_core::rusqlite::Result<()> {
                    tx.execute("INSERT INTO log (thread, seq) VALUES (1, 2)", [])?;
                    panic!("a lent closure panics");
                });
            }));
            caught.is_err()
        })
    };
    assert!(held.queued(1), "the panicking writer queued");
    let (recorded, runs) = std::sync::mpsc::channel();
    let nested = {
        let (registry, name) = (held.f.registry.clone(), held.f.name.clone());
        std::thread::spawn(move || -> anyhow::Result<bool> {
            let own = std::thread::current().id();
            registry.read_with(&other, |_| -> anyhow::Result<_> {
                registry.write_with(&name, move |tx| -> anyhow::Result<_> {
                    tx.execute("INSERT INTO log (thread, seq) VALUES (1, 1)", [])?;
                    recorded.send(std::thread::current().id())?;
                    Ok(())
                })?;
                Ok(())
            })?;
            Ok(runs.recv_timeout(Duration::from_secs(20))? == own)
        })
    };
    assert!(held.queued(2), "the nested writer queued");
    held.go.send(End::Ok)?;
    held.first.join().expect("writer 0")?;
    assert!(
        nested.join().expect("the nested writer")?,
        "the nested write's closure ran on another thread"
    );
    assert!(
        panicking.join().expect("the panicking writer's thread"),
        "the panic did not reach its own caller"
    );
    assert_eq!(logged(&held.f)?, BTreeSet::from([(1, 0), (1, 1)]));
    Ok(())
}

/// An application error type whose conversion from the registry's error panics.
#[derive(Debug)]
struct Touchy;

impl From<hive_db_core::Error> for Touchy {
    fn from(e: hive_db_core::Error) -> Self {
        panic!("Touchy::from({e})")
    }
}

/// Bug caught: the registry's error for a queued writer whose closure ran on the lane
/// holder's thread (here, a closure that ends the shared transaction) converted into that
/// writer's error type there: an application's `From<Error>` that panics then panicked the
/// holder, a writer that did nothing wrong, whose `write` unwound with another caller's
/// panic instead of returning its batch's failure.
#[test]
fn a_lent_writers_error_conversion_runs_on_its_own_thread() -> TestResult {
    let held = HeldBatch::start("group_lent_from")?;
    let lent = {
        let (registry, name) = (held.f.registry.clone(), held.f.name.clone());
        std::thread::spawn(move || {
            let own = std::thread::current().id();
            let ran_on = Arc::new(std::sync::Mutex::new(None));
            let seen = Arc::clone(&ran_on);
            let caught = catch_unwind(AssertUnwindSafe(|| {
                registry.write_with(&name, move |tx| -> Result<(), Touchy> {
                    *seen.lock().expect("not poisoned") = Some(std::thread::current().id());
                    let _ = tx.execute_batch("ROLLBACK");
                    Ok(())
                })
            }));
            let ran_on = *ran_on.lock().expect("not poisoned");
            (caught.is_err(), ran_on.is_some_and(|t| t != own))
        })
    };
    assert!(held.queued(1), "the lent writer queued");
    held.go.send(End::Ok)?;
    let holder = held.first.join();
    let (lent_panicked, lent_ran_elsewhere) = lent.join().expect("the lent writer's thread");
    assert!(lent_ran_elsewhere, "the closure was not lent to the holder");
    let holder =
        holder.map_err(|_| anyhow::anyhow!("writer 0 unwound with the lent one's panic"))?;
    assert!(
        holder.is_err(),
        "writer 0's row was rolled back with the batch: {holder:?}"
    );
    assert!(
        lent_panicked,
        "the conversion's panic did not reach its own caller"
    );
    // Nothing of the broken batch stayed, and the lane goes on.
    assert_eq!(logged(&held.f)?, BTreeSet::new());
    held.f.registry.write(&held.f.name, |tx| {
        tx.execute("INSERT INTO log (thread, seq) VALUES (2, 0)", [])
    })?;
    assert_eq!(logged(&held.f)?, BTreeSet::from([(2, 0)]));
    Ok(())
}
