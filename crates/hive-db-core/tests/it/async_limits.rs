//! The async API's bounds where its threads are busy: a write queued behind a long closure
//! on the writer thread, reads queued behind each other's connection waits, and `close`
//! with a queued call whose closure panics as it is dropped.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use hive_db_core::{DbConfig, Error};

use crate::asynch::{PATIENCE, hold_lane, hold_reader, insert, log_fixture, tags, with_readers};
use crate::support::{TestResult, config};

/// Bug caught: an async write queued behind another async write's closure, which runs on
/// the writer thread, waited for as long as that closure ran (3 s here) and then ran,
/// though its lane wait is bounded by `connection_timeout` from the call as a sync write's
/// is: only the thread checked a queued call's deadline, and it was busy.
#[test]
fn an_async_write_behind_a_long_async_closure_times_out_at_its_deadline() -> TestResult {
    let f = log_fixture(
        "async-deadline",
        DbConfig {
            connection_timeout: Duration::from_millis(300),
            ..config()
        },
    )?;
    let h = f.registry.async_handle(&f.name)?;
    let (started_tx, started) = mpsc::channel();
    let long = h.write(move |tx| {
        tx.execute("INSERT INTO log (tag) VALUES ('long')", [])?;
        let _ = started_tx.send(());
        std::thread::sleep(Duration::from_secs(3));
        Ok(())
    });
    started.recv_timeout(PATIENCE)?;
    let before = f.registry.db_stats(&f.name)?.totals.writer_timeouts;
    let t = Instant::now();
    let queued = h.write(insert("queued"));
    let got = futures_executor::block_on(queued);
    let waited = t.elapsed();
    assert!(
        matches!(got, Err(Error::WriterLaneTimeout { .. })),
        "{got:?} after {waited:?}"
    );
    // 300 ms and a tick or two; 3 s without the bound.
    assert!(waited < Duration::from_millis(2000), "waited {waited:?}");
    futures_executor::block_on(long)?;
    // The expired call gave its place up unused, and the writer still serves.
    futures_executor::block_on(h.write(insert("after")))?;
    assert_eq!(tags(&f)?, ["long", "after"]);
    let stats = f.registry.db_stats(&f.name)?;
    assert_eq!(stats.totals.writer_timeouts, before + 1);
    assert_eq!(stats.async_write_queue, 0);
    Ok(())
}

/// Bug caught: async reads queued while every connection was out each waited a whole
/// `connection_timeout` of their own once a reader thread took them, so the fourth of four
/// failed after four timeouts, its error naming one.
#[test]
fn queued_async_reads_wait_one_timeout_from_their_call() -> TestResult {
    let f = log_fixture(
        "async-read-deadline",
        DbConfig {
            connection_timeout: Duration::from_millis(300),
            max_size: 1,
            min_idle: 0,
            ..config()
        },
    )?;
    let h = with_readers(&f, 1)?;
    let held = f.registry.get(&f.name)?;
    let t = Instant::now();
    let reads: Vec<_> = (0..4)
        .map(|_| h.read(|c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))))
        .collect();
    for read in reads {
        match futures_executor::block_on(read) {
            Err(Error::Timeout { waited, .. }) => {
                assert!(waited >= Duration::from_millis(250), "{waited:?}");
            }
            other => panic!("{other:?}"),
        }
    }
    let waited = t.elapsed();
    drop(held);
    // One timeout and some scheduling; 1.2 s when each read waited its own.
    assert!(
        waited < Duration::from_millis(900),
        "four reads took {waited:?}"
    );
    Ok(())
}

/// A value whose drop panics (unless its thread is unwinding already).
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("a closure's value panicked as it was dropped");
        }
    }
}

/// Bug caught: `close` emptied the read queue without catching a panic in the drop of a
/// queued read's closure (the caller's code), so the panic unwound out of
/// `Registry::close`, half done: the async writer was never closed (a queued write waited
/// for the lane until its timeout instead of `Closed`), nor was the pool, and a second
/// `close` found the database closed already.
#[test]
fn close_survives_a_queued_read_whose_closure_panics_as_it_is_dropped() -> TestResult {
    let f = log_fixture("async-drop-panic", config())?;
    let h = with_readers(&f, 1)?;
    // The one reader thread busy, and the lane held by a sync writer.
    let (release_read, busy_read) = hold_reader(&h)?;
    let (release_lane, holder) = hold_lane(&f, "holder")?;
    let queued_write = h.write(insert("queued"));
    let bomb = PanicsOnDrop;
    let queued_read = h.read(move |_| {
        let _keep = &bomb;
        Ok(())
    });
    let closed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        f.registry.close(&f.name, Duration::from_millis(200))
    }));
    assert!(closed.is_ok(), "close panicked");
    let t = Instant::now();
    let write = futures_executor::block_on(queued_write);
    assert!(
        matches!(write, Err(Error::Closed { .. })) && t.elapsed() < Duration::from_secs(1),
        "the queued write: {write:?} after {:?}",
        t.elapsed()
    );
    // Its own closure's panic, as for any panic of the caller's code on the database's side.
    let read = futures_executor::block_on(queued_read);
    assert!(matches!(read, Err(Error::Panicked { .. })), "{read:?}");
    drop(release_read);
    drop(release_lane);
    let _ = futures_executor::block_on(busy_read);
    let _ = holder.join();
    Ok(())
}
