//! Statistics, leak detection and health.

use std::time::{Duration, Instant};

use hive_db_core::{DbConfig, DbName, HealthStatus, PooledConnection, Registry, RegistrySnapshot};

use crate::support::{TestResult, config, create_table, eventually, fixture};

/// Shared handles are usable from any thread.
#[test]
fn handles_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}
    assert_send_sync::<Registry>();
    assert_send_sync::<hive_db_core::DbHandle>();
    assert_send_sync::<hive_db_core::RegistrySnapshot>();
    assert_send::<PooledConnection>();
}

/// Bug caught: the live counter drifting upward when connections were replaced. After a
/// burst of checkouts, dirty returns and panics, every connection opened is either live or
/// counted as closed, and live/active/idle agree.
#[test]
fn counters_stay_exact_through_broken_connections() -> TestResult {
    let f = fixture(
        "exact",
        DbConfig {
            max_size: 4,
            min_idle: 2,
            ..config()
        },
    )?;
    create_table(&f)?;
    for i in 0..20 {
        let conn = f.registry.get(&f.name)?;
        if i % 3 == 0 {
            conn.execute_batch("BEGIN; INSERT INTO t (v) VALUES (1);")?;
        }
    }
    let settled = eventually(Duration::from_secs(5), || {
        let s = f.registry.db_stats(&f.name).expect("stats");
        s.totals.connections_created - s.totals.connections_closed.total() == u64::from(s.live)
            && s.idle <= s.live
            && s.active() == 0
    });
    let s = f.registry.db_stats(&f.name)?;
    assert!(settled, "{s:#?}");
    assert_eq!(s.totals.connections_closed.broken, 7);
    assert!(s.live <= s.max_size);
    // 1 write + 20 gets + 1 read of the stats' own check? No: stats do not check out.
    assert_eq!(s.acquires(), 21);
    assert_eq!(s.hold_time.count, 21);
    Ok(())
}

/// Bug caught: hold times taken from the wrong moment (the connection's opening, or its
/// previous checkout) or not recorded at all, now that a return reads the coarse clock.
#[test]
fn a_hold_is_timed_from_its_checkout_to_its_return() -> TestResult {
    let f = fixture("hold", config())?;
    // The connection was opened, and checked out once, long before the timed hold.
    drop(f.registry.get(&f.name)?);
    std::thread::sleep(Duration::from_millis(200));
    let before = f.registry.db_stats(&f.name)?.hold_time;
    let conn = f.registry.get(&f.name)?;
    std::thread::sleep(Duration::from_millis(60));
    drop(conn);
    let after = f.registry.db_stats(&f.name)?.hold_time;
    assert_eq!(after.count, before.count + 1);
    let held = Duration::from_nanos(after.sum_ns - before.sum_ns);
    // The coarse clock is at most a few ticks of 5 ms off; the upper bound is loose because
    // a loaded machine may oversleep, never because the hold was timed from earlier.
    assert!(
        held >= Duration::from_millis(45) && held < Duration::from_millis(200),
        "{held:?}"
    );
    Ok(())
}

/// Bug caught: a leak check that can never fire. A hold past the threshold is
/// counted once, with the checkout site, and the return is seen.
#[test]
fn a_long_hold_is_reported_as_a_leak_once() -> TestResult {
    let f = fixture(
        "leaky",
        DbConfig {
            leak_threshold: Some(Duration::from_millis(30)),
            ..config()
        },
    )?;
    let held = f.registry.get(&f.name)?;
    assert!(
        eventually(Duration::from_secs(5), || f
            .registry
            .db_stats(&f.name)
            .is_ok_and(|s| s.totals.leaks == 1)),
        "leak never reported"
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        f.registry.db_stats(&f.name)?.totals.leaks,
        1,
        "reported twice"
    );
    drop(held);
    // Short holds are not leaks.
    for _ in 0..10 {
        drop(f.registry.get(&f.name)?);
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(f.registry.db_stats(&f.name)?.totals.leaks, 1);
    Ok(())
}

/// Bug caught: a leak that stays reported after the connection came back (only the
/// cumulative count kept), so a monitor reading the snapshot says "degraded" for ever; or
/// the gauge never counting a connection held past the threshold now.
#[test]
fn the_held_past_threshold_gauge_follows_the_leak_and_its_return() -> TestResult {
    let f = fixture(
        "leak-gauge",
        DbConfig {
            leak_threshold: Some(Duration::from_millis(30)),
            ..config()
        },
    )?;
    let held = [f.registry.get(&f.name)?, f.registry.get(&f.name)?];
    let gauge = |n| {
        eventually(Duration::from_secs(5), || {
            f.registry
                .db_stats(&f.name)
                .is_ok_and(|s| s.held_past_leak_threshold == n)
        })
    };
    assert!(
        gauge(2),
        "two connections held past the threshold not counted"
    );
    assert_eq!(f.registry.db_stats(&f.name)?.totals.leaks, 2);
    drop(held);
    assert!(gauge(0), "the gauge stayed up after both came back");
    assert_eq!(
        f.registry.db_stats(&f.name)?.totals.leaks,
        2,
        "the count is cumulative"
    );
    Ok(())
}

/// Bug caught: a snapshot field that serialises but does not read back (or reads back
/// different), a missing schema version or clock, file facts left at zero, or a snapshot of
/// an older version (no backend, no write retries) that no longer reads.
#[test]
fn snapshot_round_trips_through_json() -> TestResult {
    let f = fixture("facts", config())?;
    create_table(&f)?;
    // Holds are timed on the 5 ms coarse clock: one of 30 ms shows in the sum.
    let conn = f.registry.get(&f.name)?;
    std::thread::sleep(Duration::from_millis(30));
    drop(conn);
    let closed = DbName::new("gone")?;
    f.registry
        .register(&closed, f.dir.path().join("gone.db"), config())?;
    drop(f.registry.get(&closed)?);
    f.registry.close(&closed, Duration::from_secs(1))?;
    let snap = f.registry.stats();
    let db = snap.get("facts").expect("registered database in stats");
    assert!(
        db.sqlite.file_bytes > 0 && db.sqlite.wal_bytes > 0,
        "{db:#?}"
    );
    assert!(db.open && db.live > 0);
    assert_eq!(db.acquires(), db.acquire_wait.count);
    assert!(db.hold_time.count > 0 && db.hold_time.sum_ns > 0);
    let gone = snap.get("gone").expect("closed database in stats");
    assert!(
        !gone.open && gone.live == 0 && gone.acquires() == 1,
        "{gone:#?}"
    );
    assert_eq!(snap.schema_version, hive_db_core::SNAPSHOT_SCHEMA_VERSION);
    // 2020-01-01 in Unix milliseconds: the wall clock, not the process clock.
    assert!(snap.taken_at_unix_ms > 1_577_836_800_000);

    let json = serde_json::to_string(&snap)?;
    let back: RegistrySnapshot = serde_json::from_str(&json)?;
    assert_eq!(back, snap);
    let value: serde_json::Value = serde_json::from_str(&json)?;
    assert_eq!(value["databases"][0]["name"], "facts");
    assert_eq!(value["databases"][0]["max_size"], 10);
    assert_eq!(value["databases"][0]["backend"], "sqlite");
    // A snapshot from a version before `held_past_leak_threshold`, `backend` and
    // `write_retries` still reads: as 0, SQLite, 0.
    let mut older = value.clone();
    for db in older["databases"].as_array_mut().into_iter().flatten() {
        for field in ["held_past_leak_threshold", "backend"] {
            db.as_object_mut()
                .and_then(|d| d.remove(field))
                .ok_or_else(|| anyhow::anyhow!("no {field} in {db}"))?;
        }
        db["totals"]
            .as_object_mut()
            .and_then(|t| t.remove("write_retries"))
            .ok_or_else(|| anyhow::anyhow!("no write_retries in {db}"))?;
    }
    let back: RegistrySnapshot = serde_json::from_value(older)?;
    let facts = back.get("facts").expect("facts in the older snapshot");
    assert_eq!(facts.held_past_leak_threshold, 0);
    assert_eq!(facts.backend, hive_db_core::Backend::Sqlite);
    assert_eq!(facts.totals.write_retries, 0);
    Ok(())
}

/// Bug caught: a name read from another process's snapshot that skips validation (a path or
/// URI smuggled in as a database name).
#[test]
fn a_deserialised_name_is_validated() -> TestResult {
    let ok: DbName = serde_json::from_str("\"inventory\"")?;
    assert_eq!(ok.as_str(), "inventory");
    for bad in ["\"../etc/passwd\"", "\"\"", "\":memory:\""] {
        assert!(
            serde_json::from_str::<DbName>(bad).is_err(),
            "{bad} accepted"
        );
    }
    Ok(())
}

/// Bug caught: `acquires_waited` counting every acquire (or none), or the age of the oldest
/// waiter taken from the newest one, or left behind after the waiters got their connection.
#[test]
fn waits_for_a_connection_are_counted_and_aged() -> TestResult {
    let f = fixture(
        "saturated",
        DbConfig {
            max_size: 1,
            min_idle: 1,
            connection_timeout: Duration::from_secs(30),
            ..config()
        },
    )?;
    // Writes check out through the waiting path's entry; with a connection idle, none waits.
    for _ in 0..5 {
        f.registry.write(&f.name, |_tx| Ok(()))?;
    }
    let held = f.registry.get(&f.name)?;
    let waiting = |n: u32| {
        eventually(Duration::from_secs(10), || {
            f.registry.db_stats(&f.name).is_ok_and(|s| s.waiting == n)
        })
    };
    std::thread::scope(|scope| -> TestResult {
        let first = scope.spawn(|| f.registry.get(&f.name).map(drop));
        assert!(waiting(1), "the first waiter never queued");
        let first_seen = Instant::now();
        std::thread::sleep(Duration::from_millis(50));
        let second = scope.spawn(|| f.registry.get(&f.name).map(drop));
        assert!(waiting(2), "the second waiter never queued");
        let oldest_at_least = first_seen.elapsed();
        let s = f.registry.db_stats(&f.name)?;
        assert!(
            u128::from(s.maxwait_ns) >= oldest_at_least.as_nanos(),
            "maxwait {} ns is younger than the first waiter ({oldest_at_least:?})",
            s.maxwait_ns
        );
        assert_eq!(s.totals.acquires_waited, 0, "counted before it got one");
        drop(held);
        first.join().expect("first waiter")?;
        second.join().expect("second waiter")?;
        Ok(())
    })?;
    let s = f.registry.db_stats(&f.name)?;
    assert_eq!((s.waiting, s.maxwait_ns), (0, 0));
    assert_eq!(s.totals.acquires_waited, 2, "{s:#?}");
    assert_eq!(s.acquires(), 8);
    Ok(())
}

/// Bug caught: a health check that holds a registry-wide lock while waiting, or has no
/// latency or overall status. Here another connection holds one database's write lock, with a
/// 60 s busy timeout configured; the check still ends near its own timeout, reports writes
/// blocked on that database only, and the overall status is the worst of the two.
#[test]
fn health_is_bounded_per_database_when_one_is_locked() -> TestResult {
    let f = fixture(
        "locked",
        DbConfig {
            busy_timeout: Duration::from_secs(60),
            ..config()
        },
    )?;
    create_table(&f)?;
    let fine = DbName::new("fine")?;
    f.registry
        .register(&fine, f.dir.path().join("fine.db"), config())?;

    let locker = rusqlite::Connection::open(f.path())?;
    locker.execute_batch("BEGIN IMMEDIATE; INSERT INTO t (v) VALUES (1);")?;
    let start = Instant::now();
    let report = f.registry.health(Duration::from_millis(300));
    let elapsed = start.elapsed();
    assert!(elapsed < Duration::from_secs(10), "health took {elapsed:?}");
    let locked = report
        .databases
        .iter()
        .find(|d| d.name.as_str() == "locked")
        .expect("locked db");
    let other = report
        .databases
        .iter()
        .find(|d| d.name.as_str() == "fine")
        .expect("fine db");
    assert_eq!(locked.status, HealthStatus::Degraded, "{report:#?}");
    assert!(
        locked
            .error
            .as_deref()
            .is_some_and(|e| e.contains("writes blocked")),
        "{report:#?}"
    );
    assert_eq!(other.status, HealthStatus::Healthy, "{report:#?}");
    assert_eq!(report.status, HealthStatus::Degraded);
    // The registry is not blocked meanwhile, and reads of the locked database still work.
    drop(f.registry.get(&fine)?);
    assert_eq!(crate::support::count_rows(&f)?, 0);
    locker.execute_batch("ROLLBACK")?;
    drop(locker);
    let report = f.registry.health(Duration::from_secs(2));
    assert_eq!(report.status, HealthStatus::Healthy, "{report:#?}");
    // The health check put the configured busy timeout back on every connection it used.
    for _ in 0..3 {
        let conn = f.registry.get(&f.name)?;
        let busy: i64 = conn.pragma_query_value(None, "busy_timeout", |r| r.get(0))?;
        assert_eq!(busy, 60_000);
    }
    Ok(())
}

/// An exhausted pool is unhealthy, and the check gives up at its own timeout rather than the
/// pool's (much longer) connection timeout.
#[test]
fn health_reports_an_exhausted_pool_within_its_timeout() -> TestResult {
    let f = fixture(
        "exhausted-health",
        DbConfig {
            max_size: 1,
            min_idle: 1,
            connection_timeout: Duration::from_secs(60),
            ..config()
        },
    )?;
    let _held = f.registry.get(&f.name)?;
    let start = Instant::now();
    let report = f.registry.health(Duration::from_millis(200));
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(report.status, HealthStatus::Unhealthy, "{report:#?}");
    let error = report.databases[0].error.as_deref().unwrap_or_default();
    assert!(error.contains("active 1"), "{error}");
    Ok(())
}

/// Bug caught: the health probe held a connection while it waited for the writer lane, and a
/// writer held the lane while it waited for a connection: with every other connection busy
/// (here the pool has one) each waited for the other until the probe's deadline, the write
/// stalled, and the database was reported degraded with "the writer lane stayed busy".
#[test]
fn health_and_a_writer_never_wait_for_each_other() -> TestResult {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    let f = Arc::new(fixture(
        "health-and-writer",
        DbConfig {
            max_size: 1,
            min_idle: 1,
            connection_timeout: Duration::from_secs(30),
            ..config()
        },
    )?);
    create_table(&f)?;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (f, stop) = (Arc::clone(&f), Arc::clone(&stop));
        std::thread::spawn(move || -> anyhow::Result<Duration> {
            let mut slowest = Duration::ZERO;
            while !stop.load(SeqCst) {
                let start = Instant::now();
                f.registry
                    .write(&f.name, |tx| tx.execute("INSERT INTO t (v) VALUES (1)", []))?;
                slowest = slowest.max(start.elapsed());
            }
            Ok(slowest)
        })
    };
    // With the bug most checks run into the writer and last their whole 5 s.
    // Other notes may come and go with the writer (a full pool while a checkpoint pass
    // holds the only connection): what must never be seen is a check that waited for the
    // lane, or one that failed.
    let degraded = (0..10)
        .map(|_| f.registry.health(Duration::from_secs(5)))
        .find(|report| {
            report.status == HealthStatus::Unhealthy
                || report.elapsed >= Duration::from_secs(4)
                || report.databases.iter().any(|d| {
                    d.error
                        .as_deref()
                        .is_some_and(|e| e.contains("writer lane stayed busy"))
                })
        });
    stop.store(true, SeqCst);
    let slowest = writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    assert!(degraded.is_none(), "{degraded:#?}");
    assert!(
        slowest < Duration::from_secs(4),
        "a write waited {slowest:?}"
    );
    Ok(())
}

/// An empty registry is healthy; a closed database is not checked.
#[test]
fn health_of_empty_and_closed() -> TestResult {
    let registry = Registry::new();
    assert_eq!(
        registry.health(Duration::from_millis(100)).status,
        HealthStatus::Healthy
    );
    let f = fixture("shut", config())?;
    f.registry.close(&f.name, Duration::ZERO)?;
    let report = f.registry.health(Duration::from_millis(100));
    assert!(report.databases.is_empty());
    Ok(())
}

/// Bug caught: a database whose file is damaged past its first page reported Healthy (the
/// probe reads only the schema's page) while every read of the damaged table failed with
/// SQLITE_CORRUPT, so `/health` and db-monitor said healthy, exit 0. A corruption error a
/// call got makes health Unhealthy, through the sync and the async calls.
#[test]
fn a_corruption_error_a_call_got_makes_health_unhealthy() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("damaged.db");
    damaged_file(&path)?;
    let registry = Registry::new();
    let name = DbName::new("damaged")?;
    registry.register(&name, &path, config())?;
    let health = |registry: &Registry| {
        registry
            .health(Duration::from_secs(5))
            .databases
            .into_iter()
            .next()
            .expect("one database")
    };
    assert_eq!(
        health(&registry).status,
        HealthStatus::Healthy,
        "not damaged where it looks"
    );
    let read = read_damaged(&registry, &name);
    let Err(hive_db_core::Error::Sqlite { code, .. }) = &read else {
        panic!("the damaged table read: {read:?}");
    };
    assert_eq!(code.map(|c| c & 0xff), Some(11), "{read:?}");
    let db = health(&registry);
    assert_eq!(db.status, HealthStatus::Unhealthy, "{db:?}");
    assert!(
        db.error.as_deref().is_some_and(|e| e.contains("damaged")),
        "{db:?}"
    );
    // The async calls' errors count the same.
    let other = DbName::new("damaged_async")?;
    let copy = dir.path().join("damaged_async.db");
    damaged_file(&copy)?;
    registry.register(&other, &copy, config())?;
    let read = futures_executor::block_on(registry.read_async(&other, |c| {
        c.query_row("SELECT length(x) FROM t", [], |r| r.get::<_, i64>(0))
    }));
    assert!(read.is_err(), "{read:?}");
    let report = registry.health(Duration::from_secs(5));
    let db = report
        .databases
        .iter()
        .find(|d| d.name == other)
        .expect("listed");
    assert_eq!(db.status, HealthStatus::Unhealthy, "{db:?}");
    Ok(())
}

/// A file whose table `t` is damaged past the first page (the header and schema stay).
fn damaged_file(path: &std::path::Path) -> anyhow::Result<()> {
    {
        let conn = hive_db_core::rusqlite::Connection::open(path)?;
        conn.execute_batch("CREATE TABLE t (x BLOB); INSERT INTO t VALUES (randomblob(100000));")?;
    }
    let mut bytes = std::fs::read(path)?;
    bytes.iter_mut().skip(4096).for_each(|b| *b = 0x55);
    std::fs::write(path, &bytes)?;
    Ok(())
}

/// A read of `damaged_file`'s table `t`, which meets the damage.
fn read_damaged(registry: &Registry, name: &DbName) -> hive_db_core::Result<i64> {
    registry.read(name, |c| {
        c.query_row("SELECT length(x) FROM t", [], |r| r.get::<_, i64>(0))
    })
}

/// A read of `name` that attaches `dir/junk.db`, a file that is not a database, and reads
/// it: SQLITE_NOTADB from another file than `name`'s.
fn read_through_junk(
    registry: &Registry,
    name: &DbName,
    dir: &std::path::Path,
) -> anyhow::Result<hive_db_core::Result<i64>> {
    let junk = dir.join("junk.db");
    std::fs::write(&junk, vec![b'x'; 8192])?;
    let junk = junk.to_string_lossy().into_owned();
    Ok(registry.read(name, move |c| {
        c.execute("ATTACH ?1 AS other", [&junk])?;
        c.query_row("SELECT count(*) FROM other.sqlite_schema", [], |r| {
            r.get::<_, i64>(0)
        })
    }))
}

/// Bug caught (in the fix above): the corruption error kept with the name's counters, which
/// its next registration carries on with: a sound copy restored under the same name read
/// Unhealthy for ten minutes.
#[test]
fn a_restored_file_under_a_damaged_ones_name_is_healthy() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("damaged.db");
    damaged_file(&path)?;
    let registry = Registry::new();
    let name = DbName::new("restored")?;
    registry.register(&name, &path, config())?;
    let read = read_damaged(&registry, &name);
    assert!(read.is_err(), "{read:?}");
    registry.close(&name, Duration::from_secs(5))?;
    let sound = dir.path().join("restored.db");
    {
        let conn = hive_db_core::rusqlite::Connection::open(&sound)?;
        conn.execute_batch("CREATE TABLE t (x BLOB); INSERT INTO t VALUES (zeroblob(10));")?;
    }
    registry.register(&name, &sound, config())?;
    let db = registry.health(Duration::from_secs(5)).databases.remove(0);
    assert_eq!(db.status, HealthStatus::Healthy, "{db:?}");
    Ok(())
}

/// Bug caught (in the fix above): a corruption error a closure met on another file (here
/// an attached file that is not a database) made this sound database Unhealthy: health now
/// asks `integrity_check` of this database's own file, and forgets the error when it is
/// sound.
#[test]
fn a_corruption_error_from_another_file_is_forgotten() -> TestResult {
    let f = fixture("attach_junk", config())?;
    create_table(&f)?;
    let read = read_through_junk(&f.registry, &f.name, f.dir.path())?;
    assert!(read.is_err(), "{read:?}");
    for _ in 0..2 {
        let db = f
            .registry
            .health(Duration::from_secs(5))
            .databases
            .remove(0);
        assert_eq!(db.status, HealthStatus::Healthy, "{db:?}");
    }
    Ok(())
}

/// Bug caught (in the fix above): each new corruption error a call got unconfirmed the
/// damage health had confirmed, so a database whose calls kept meeting it was checked
/// whole again on every health check (and read Degraded where the check could not finish).
#[test]
fn confirmed_damage_stays_confirmed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("damaged.db");
    damaged_file(&path)?;
    let registry = Registry::new();
    let name = DbName::new("still_damaged")?;
    registry.register(&name, &path, config())?;
    let read = || read_damaged(&registry, &name);
    assert!(read().is_err());
    let db = registry.health(Duration::from_secs(5)).databases.remove(0);
    assert_eq!(db.status, HealthStatus::Unhealthy, "{db:?}");
    assert!(
        db.error
            .as_deref()
            .is_some_and(|e| e.contains("integrity_check")),
        "{db:?}"
    );
    assert!(read().is_err(), "the same damage again");
    let db = registry.health(Duration::from_secs(5)).databases.remove(0);
    assert_eq!(db.status, HealthStatus::Unhealthy, "{db:?}");
    assert!(
        db.error
            .as_deref()
            .is_some_and(|e| !e.contains("integrity_check")),
        "checked again: {db:?}"
    );
    Ok(())
}

/// A file whose two indexes swapped their trees: each points at the other table's rows, a
/// damage `quick_check` misses and every read through either index meets.
fn swapped_indexes(path: &std::path::Path) -> anyhow::Result<()> {
    {
        let conn = hive_db_core::rusqlite::Connection::open(path)?;
        conn.execute_batch(
            "CREATE TABLE t1 (a INTEGER, b TEXT); CREATE INDEX i1 ON t1(a);
             CREATE TABLE t2 (a INTEGER, b TEXT); CREATE INDEX i2 ON t2(a);
             WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 10)
             INSERT INTO t1 (rowid, a, b) SELECT i, i, 'x' FROM c;
             WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 10)
             INSERT INTO t2 (rowid, a, b) SELECT i + 100, i, 'y' FROM c;",
        )?;
        let root = |index: &str| -> hive_db_core::rusqlite::Result<i64> {
            conn.query_row(
                "SELECT rootpage FROM sqlite_schema WHERE name = ?1",
                [index],
                |r| r.get(0),
            )
        };
        let (r1, r2) = (root("i1")?, root("i2")?);
        // The two indexes swap their trees: each now points at the other table's rows.
        conn.execute_batch(&format!(
            "PRAGMA writable_schema = ON;
             UPDATE sqlite_schema SET rootpage = {r2} WHERE name = 'i1';
             UPDATE sqlite_schema SET rootpage = {r1} WHERE name = 'i2';
             PRAGMA writable_schema = OFF;"
        ))?;
        let quick: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        assert_eq!(
            quick, "ok",
            "the damage this test needs is one quick_check misses"
        );
    }
    Ok(())
}

/// Bug caught (in the fix above): the check was `quick_check`, which does not compare an
/// index with its table: an index pointing at rows its table lacks failed every read through
/// it with SQLITE_CORRUPT, passed the check, and the error was forgotten (Healthy).
#[test]
fn an_index_that_disagrees_with_its_table_is_damage() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("index_damaged.db");
    swapped_indexes(&path)?;
    let registry = Registry::new();
    let name = DbName::new("index_damaged")?;
    registry.register(&name, &path, config())?;
    let read = registry.read(&name, |c| {
        c.query_row("SELECT b FROM t1 WHERE a = 5", [], |r| {
            r.get::<_, String>(0)
        })
    });
    let Err(hive_db_core::Error::Sqlite { code, .. }) = &read else {
        panic!("the read through the damaged index: {read:?}");
    };
    assert_eq!(code.map(|c| c & 0xff), Some(11), "{read:?}");
    let db = registry.health(Duration::from_secs(5)).databases.remove(0);
    assert_eq!(db.status, HealthStatus::Unhealthy, "{db:?}");
    Ok(())
}

/// Bug caught (in the fix above): damage once confirmed stayed confirmed for as long as
/// calls got corruption errors, whatever their file: repaired with `REINDEX`, the database
/// read Unhealthy for good while a closure's attached file kept failing. Health checks the
/// file again a few seconds after it found damage.
#[test]
fn repaired_damage_is_seen_again() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("index_damaged.db");
    swapped_indexes(&path)?;
    let registry = Registry::new();
    let name = DbName::new("repaired")?;
    registry.register(&name, &path, config())?;
    let through_index = || {
        registry.read(&name, |c| {
            c.query_row("SELECT b FROM t1 WHERE a = 5", [], |r| {
                r.get::<_, String>(0)
            })
        })
    };
    assert!(through_index().is_err());
    let db = registry.health(Duration::from_secs(5)).databases.remove(0);
    assert_eq!(db.status, HealthStatus::Unhealthy, "{db:?}");
    registry.write(&name, |tx| tx.execute_batch("REINDEX"))?;
    assert_eq!(through_index()?, "x");
    // Another file's error keeps coming.
    assert!(read_through_junk(&registry, &name, dir.path())?.is_err());
    std::thread::sleep(Duration::from_millis(5200));
    assert!(read_through_junk(&registry, &name, dir.path())?.is_err());
    let db = registry.health(Duration::from_secs(5)).databases.remove(0);
    assert_eq!(db.status, HealthStatus::Healthy, "{db:?}");
    Ok(())
}

/// Bug caught: the snapshot and health silent about how the process's SQLite was built, so
/// an application built without the workspace's SQLite flags could not tell. In this
/// workspace (`.cargo/config.toml` sets them) the build is the tested one: extension loading
/// compiled out (checked against SQLite itself) and no health note.
#[test]
fn the_snapshot_and_health_say_how_sqlite_was_built() -> TestResult {
    let f = fixture("build_facts", config())?;
    let snapshot = f.registry.stats();
    let build = snapshot
        .sqlite_build
        .clone()
        .expect("a current snapshot has the build");
    assert_eq!(build.version, hive_db_core::rusqlite::version());
    let options: Vec<String> = f.registry.read(&f.name, |c| {
        c.prepare("PRAGMA compile_options")?
            .query_map([], |r| r.get(0))?
            .collect()
    })?;
    assert_eq!(
        build.load_extension_omitted,
        options.iter().any(|o| o == "OMIT_LOAD_EXTENSION"),
        "{options:?}"
    );
    assert_eq!(
        build.page_cache_per_connection,
        !options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
        "{options:?}"
    );
    assert_eq!(
        build.memory_statistics_off,
        options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
        "{options:?}"
    );
    assert!(build.deviations().is_empty(), "{build:?}");
    assert!(f.registry.health(Duration::from_secs(2)).notes.is_empty());
    // It travels in the wire format, and an older snapshot without it still reads.
    let json = serde_json::to_value(&snapshot)?;
    assert_eq!(json["sqlite_build"]["load_extension_omitted"], true);
    let mut old = json.clone();
    old.as_object_mut()
        .expect("an object")
        .remove("sqlite_build");
    let read: hive_db_core::RegistrySnapshot = serde_json::from_value(old)?;
    assert_eq!(read.sqlite_build, None);
    // A snapshot of the versions before `memory_statistics_off` still reads, as a build with
    // the statistics on (which every build of those versions had).
    let mut before = json.clone();
    before["sqlite_build"]
        .as_object_mut()
        .expect("an object")
        .remove("memory_statistics_off");
    let read: hive_db_core::RegistrySnapshot = serde_json::from_value(before)?;
    let build_before = read.sqlite_build.expect("the build is kept");
    assert!(!build_before.memory_statistics_off);
    assert_eq!(build_before.version, build.version);
    Ok(())
}
