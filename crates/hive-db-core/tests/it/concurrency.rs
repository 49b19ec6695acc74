//! Real threads against small pools.

use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use hive_db_core::DbConfig;

use crate::support::{TestResult, config, connection_id, count_rows, create_table, fixture};

/// Bug caught: a pool that waits the full acquire timeout for an idle connection before
/// opening a new one, so it stayed at `min_idle`. Here `max_size` borrowers must hold a
/// connection at the same time; a pool that does not grow makes them time out.
#[test]
fn pool_grows_on_demand_to_max_size() -> TestResult {
    let max = 8;
    let f = fixture(
        "growing",
        DbConfig {
            max_size: max,
            min_idle: 1,
            connection_timeout: Duration::from_secs(3),
            ..config()
        },
    )?;
    let barrier = Arc::new(Barrier::new(max as usize));
    let handles: Vec<_> = (0..max)
        .map(|_| {
            let (registry, name, barrier) =
                (f.registry.clone(), f.name.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || -> hive_db_core::Result<()> {
                let conn = registry.get(&name)?;
                // Everyone holds a connection at once before anyone lets go.
                barrier.wait();
                drop(conn);
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().expect("borrower thread")?;
    }
    let stats = f.registry.db_stats(&f.name)?;
    assert_eq!(stats.live, max);
    assert!(stats.totals.connections_created >= u64::from(max));
    assert_eq!(
        stats.totals.acquire_timeouts + stats.totals.writer_timeouts,
        0
    );
    Ok(())
}

/// 12 threads on a pool of 3: every operation completes, no connection is used by two
/// threads at once, and the pool never exceeds `max_size`.
#[test]
fn more_threads_than_connections() -> TestResult {
    let max = 3;
    let threads = 12;
    let f = fixture(
        "crowded",
        DbConfig {
            max_size: max,
            min_idle: 1,
            connection_timeout: Duration::from_secs(20),
            ..config()
        },
    )?;
    create_table(&f)?;
    let in_use: Arc<Mutex<Vec<usize>>> = Arc::default();
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (registry, name, in_use, barrier) = (
                f.registry.clone(),
                f.name.clone(),
                Arc::clone(&in_use),
                Arc::clone(&barrier),
            );
            std::thread::spawn(move || -> anyhow::Result<()> {
                barrier.wait();
                for i in 0..40 {
                    if i % 4 == 0 {
                        registry.write(&name, |tx| {
                            tx.execute("INSERT INTO t (v) VALUES (?1)", [t as i64])?;
                            Ok(())
                        })?;
                    } else {
                        let conn = registry.get(&name)?;
                        let id = connection_id(&conn);
                        {
                            let mut used = in_use.lock().expect("lock");
                            assert!(!used.contains(&id), "connection {id} handed out twice");
                            assert!(used.len() < max as usize, "more than max_size out");
                            used.push(id);
                        }
                        std::thread::yield_now();
                        in_use.lock().expect("lock").retain(|x| *x != id);
                        drop(conn);
                    }
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().expect("worker thread")?;
    }
    assert_eq!(count_rows(&f)?, (threads * 10) as i64);
    let stats = f.registry.db_stats(&f.name)?;
    assert!(stats.live <= max);
    assert_eq!(
        stats.totals.acquire_timeouts + stats.totals.writer_timeouts,
        0
    );
    assert_eq!(stats.totals.busy_errors, 0);
    Ok(())
}

/// Writers are served in the order they arrive at the lane.
#[test]
fn writer_lane_is_fifo_through_the_registry() -> TestResult {
    let f = fixture("fifo", config())?;
    create_table(&f)?;
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    // The first writer holds the lane until told to go.
    let first = {
        let (registry, name) = (f.registry.clone(), f.name.clone());
        std::thread::spawn(move || {
            registry.write_with(&name, move |tx| -> anyhow::Result<()> {
                tx.execute("INSERT INTO t (v) VALUES (0)", [])?;
                entered_tx.send(())?;
                release_rx.recv()?;
                Ok(())
            })
        })
    };
    entered_rx.recv()?;
    let mut queued = Vec::new();
    for i in 1..=6 {
        let (registry, name) = (f.registry.clone(), f.name.clone());
        queued.push(std::thread::spawn(move || {
            registry.write(&name, |tx| {
                tx.execute("INSERT INTO t (v) VALUES (?1)", [i])?;
                Ok(())
            })
        }));
        // Wait until writer i is in the queue before starting writer i + 1.
        let registry = f.registry.clone();
        let name = f.name.clone();
        assert!(crate::support::eventually(
            Duration::from_secs(5),
            move || { registry.db_stats(&name).is_ok_and(|s| s.writer_queue == i) }
        ));
    }
    release_tx.send(())?;
    first.join().expect("first writer")?;
    for h in queued {
        h.join().expect("queued writer")?;
    }
    let order: Vec<i64> = f.registry.read(&f.name, |c| {
        let mut stmt = c.prepare("SELECT v FROM t ORDER BY id")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()
    })?;
    assert_eq!(order, (0..=6).collect::<Vec<i64>>());
    Ok(())
}

/// Readers do not wait behind the writer lane.
#[test]
fn readers_do_not_queue_behind_writers() -> TestResult {
    let f = fixture("readers", config())?;
    create_table(&f)?;
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let writer = {
        let (registry, name) = (f.registry.clone(), f.name.clone());
        std::thread::spawn(move || {
            registry.write_with(&name, move |tx| -> anyhow::Result<_> {
                tx.execute("INSERT INTO t (v) VALUES (1)", [])?;
                entered_tx.send(())?;
                release_rx.recv()?;
                Ok(())
            })
        })
    };
    entered_rx.recv()?;
    // The writer is inside its transaction; a read proceeds and sees the committed state.
    assert_eq!(count_rows(&f)?, 0);
    release_tx.send(())?;
    writer.join().expect("writer")?;
    assert_eq!(count_rows(&f)?, 1);
    Ok(())
}

/// Bug caught: a write from inside a `read` whose thread holds every connection of the pool
/// waited for the writer lane first, holding that connection, while the writer holding the
/// lane waited for it: both waited out the connection timeout, and the innocent writer
/// failed. It must fail at once (it could never get a connection), and free the writer.
#[test]
fn a_write_inside_a_read_holding_every_connection_fails_at_once() -> TestResult {
    use hive_db_core::{Error, Reentry};
    let timeout = Duration::from_secs(10);
    let f = Arc::new(fixture(
        "write_in_read",
        DbConfig {
            max_size: 1,
            min_idle: 0,
            connection_timeout: timeout,
            ..config()
        },
    )?);
    create_table(&f)?;
    let in_read = Arc::new(Barrier::new(2));
    let start = std::time::Instant::now();
    let reader = {
        let (f, in_read) = (Arc::clone(&f), Arc::clone(&in_read));
        std::thread::spawn(move || {
            let mut inner = None;
            f.registry.read(&f.name, |_| {
                in_read.wait();
                // The writer below takes the lane and waits for this connection meanwhile.
                std::thread::sleep(Duration::from_millis(200));
                inner = Some(
                    f.registry
                        .write(&f.name, |tx| tx.execute("INSERT INTO t (v) VALUES (1)", [])),
                );
                Ok(())
            })?;
            anyhow::Ok(inner)
        })
    };
    in_read.wait();
    let outer = f
        .registry
        .write(&f.name, |tx| tx.execute("INSERT INTO t (v) VALUES (2)", []));
    let inner = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))??;
    assert!(
        matches!(
            inner,
            Some(Err(Error::Reentrant {
                call: Reentry::Connection,
                ..
            }))
        ),
        "{inner:?}"
    );
    outer?;
    assert!(start.elapsed() < timeout / 2, "took {:?}", start.elapsed());
    assert_eq!(count_rows(&f)?, 1);
    Ok(())
}
