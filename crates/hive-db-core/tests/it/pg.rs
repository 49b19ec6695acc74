//! PostgreSQL databases in the registry, against a private server (`hive_pg_harness`): typed
//! reads and writes, retries, eviction of broken connections, session reset, typed errors
//! that never show a password, close, stats, health and metrics.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use hive_db_core::postgres;
use hive_db_core::{
    Backend, DbConfig, DbName, Error, HealthStatus, PgConfig, Registry, error_chain,
    prometheus_text,
};

use crate::support::TestResult;
use hive_pg_harness::{require_postgres, server};

/// Pool settings that fail fast.
fn config(max_size: u32, min_idle: u32) -> PgConfig {
    PgConfig {
        pool: DbConfig {
            max_size,
            min_idle,
            connection_timeout: Duration::from_secs(5),
            ..DbConfig::default()
        },
        ..PgConfig::default()
    }
}

/// A registry with `name` registered for a new database of the test server.
fn registered(name: &str, config: PgConfig) -> anyhow::Result<(Registry, DbName)> {
    let url = server()?.fresh_db()?;
    let registry = Registry::new();
    let name = DbName::new(name)?;
    registry.register_postgres(&name, &url, config)?;
    Ok((registry, name))
}

fn backend_pid(client: &mut postgres::Client) -> Result<i32, postgres::Error> {
    client.query_one("SELECT pg_backend_pid()", &[])?.try_get(0)
}

/// A port nothing listens on.
fn refused_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Bug caught: a write that did not commit, a read that cannot see it, or a PostgreSQL
/// database missing from the snapshot, health or metrics, or shown there as SQLite.
#[test]
fn a_write_commits_and_a_read_sees_it() -> TestResult {
    require_postgres!();
    let (registry, name) = registered("pg-round-trip", config(4, 1))?;
    let db = registry.postgres(&name)?;
    db.write(|tx| {
        tx.batch_execute("CREATE TABLE item (id serial PRIMARY KEY, label text NOT NULL)")?;
        tx.execute("INSERT INTO item (label) VALUES ($1)", &[&"bolt"])
    })?;
    let labels = db.read(|c| {
        c.query("SELECT label FROM item", &[])?
            .iter()
            .map(|r| r.try_get::<_, String>(0))
            .collect::<Result<Vec<_>, _>>()
    })?;
    assert_eq!(labels, ["bolt"]);

    let snap = registry.db_stats(&name)?;
    assert_eq!(snap.backend, Backend::Postgres);
    assert!(snap.open);
    assert_eq!(snap.totals.commits, 1);
    assert_eq!(snap.totals.write_transactions, 1);
    assert_eq!(snap.acquires(), 2);
    assert!(snap.live >= 1);
    assert!(
        snap.path
            .to_string_lossy()
            .starts_with("postgres://postgres@127.0.0.1:")
    );

    let health = registry.health(Duration::from_secs(5));
    assert_eq!(health.status, HealthStatus::Healthy, "{health:?}");
    let text = prometheus_text(&registry.stats());
    assert!(
        text.contains("hive_db_backend_info{db=\"pg-round-trip\",backend=\"postgres\"} 1"),
        "{text}"
    );
    // The snapshot's wire form reads back, backend and all.
    let json = serde_json::to_string(&registry.stats())?;
    let back: hive_db_core::RegistrySnapshot = serde_json::from_str(&json)?;
    assert_eq!(back.databases[0].backend, Backend::Postgres);
    let report = registry.close(&name, Duration::from_secs(2))?;
    assert!(report.still_out.is_empty());
    Ok(())
}

/// Bug caught: a connection string that does not parse registered anyway, failing later with
/// an untyped error, or an error that does not name the database or quotes the password.
#[test]
fn a_bad_url_is_a_typed_error_naming_the_database() -> TestResult {
    let registry = Registry::new();
    let name = DbName::new("pg-bad-url")?;
    for url in [
        "postgres://app:hunter2@127.0.0.1:notaport/db",
        "host=127.0.0.1 password=hunter2 hunter2x=1",
        "mysql://app:hunter2@127.0.0.1/db",
    ] {
        let err = registry
            .register_postgres(&name, url, PgConfig::default())
            .expect_err(url);
        assert!(matches!(err, Error::InvalidUrl { .. }), "{url}: {err:?}");
        let text = error_chain(&err);
        assert!(text.contains("pg-bad-url"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
    assert!(registry.stats().databases.is_empty());
    Ok(())
}

/// Bug caught: registering or reading a database whose server refuses connections hanging
/// (no connect timeout, an unbounded wait), or failing with an error that does not name the
/// database, does not say why, or shows the password.
#[test]
fn an_unreachable_server_gives_a_typed_error_within_the_timeout() -> TestResult {
    let registry = Registry::new();
    let url = format!("postgres://app:hunter2@127.0.0.1:{}/db", refused_port()?);
    let timeout = Duration::from_millis(500);
    let mut config = config(2, 1);
    config.pool.connection_timeout = timeout;

    let name = DbName::new("pg-refused")?;
    let start = Instant::now();
    let err = registry
        .register_postgres(&name, &url, config.clone())
        .expect_err("registered");
    assert!(start.elapsed() < timeout * 4, "{:?}", start.elapsed());
    let Error::Timeout { db, last_error, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(db, &name);
    let text = error_chain(&err);
    assert!(
        last_error.as_deref().is_some_and(|e| e.contains("refused")),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
    assert!(registry.stats().databases.is_empty());

    // With min_idle 0 it registers, and a read times out, typed, naming it.
    config.pool.min_idle = 0;
    registry.register_postgres(&name, &url, config)?;
    let start = Instant::now();
    let err = registry
        .postgres(&name)?
        .read(|c| c.batch_execute("SELECT 1"))
        .expect_err("read");
    assert!(start.elapsed() < timeout * 4, "{:?}", start.elapsed());
    assert!(
        matches!(&err, Error::Timeout { db, .. } if db == &name),
        "{err:?}"
    );
    assert!(!error_chain(&err).contains("hunter2"));
    let health = registry.health(Duration::from_millis(500));
    assert_eq!(health.status, HealthStatus::Unhealthy, "{health:?}");
    Ok(())
}

/// Bug caught: `register_postgres` on something that accepts the connection and never
/// answers (a frozen server, a wrong port that is not PostgreSQL) hung for good: the
/// monitor's first measure connected on the registering thread, and the client's connect
/// timeout bounds only the socket's connect, not the startup exchange after it. It held
/// the registry's lock for changes all that time, so every later `register` and `close`
/// hung too.
#[test]
fn a_server_that_never_answers_fails_registration_within_a_bound() -> TestResult {
    // Accepted by the kernel's backlog; nothing reads or answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!(
        "postgres://app@127.0.0.1:{}/db",
        silent.local_addr()?.port()
    );
    let registry = Registry::new();
    let name = DbName::new("pg-silent")?;
    let mut config = config(2, 1);
    config.pool.connection_timeout = Duration::from_secs(1);
    let (tx, rx) = std::sync::mpsc::channel();
    let registering = registry.clone();
    let registered_name = name.clone();
    thread::spawn(move || {
        let start = Instant::now();
        let result = registering.register_postgres(&registered_name, &url, config);
        let _ = tx.send((start.elapsed(), result.map(drop)));
    });
    let (took, result) = rx
        .recv_timeout(Duration::from_secs(60))
        .map_err(|_| anyhow::anyhow!("register_postgres still hangs after 60 s"))?;
    assert!(result.is_err(), "registered a server that never answered");
    // The monitor's measure (5 s and the connect timeout) and the pool's wait (1 s).
    assert!(took < Duration::from_secs(20), "took {took:?}");
    // The registry's lock for changes is free again.
    let other = DbName::new("after-silent")?;
    let start = Instant::now();
    let refused = registry.register_postgres(
        &other,
        &format!("postgres://app@127.0.0.1:{}/db", refused_port()?),
        PgConfig {
            pool: DbConfig {
                min_idle: 0,
                ..DbConfig::default()
            },
            ..PgConfig::default()
        },
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    drop(refused);
    drop(silent);
    Ok(())
}

/// Bug caught: an async call's first use of a database (and `async_handle`) took the
/// registry's lock for changes on the calling thread, an executor's, so it blocked that
/// executor for as long as another thread's `register_postgres` was connecting (for good,
/// on a server that never answered).
#[test]
fn a_first_async_call_does_not_wait_for_another_registration() -> TestResult {
    let f = crate::support::fixture("async-beside-register", crate::support::config())?;
    let silent = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!(
        "postgres://app@127.0.0.1:{}/db",
        silent.local_addr()?.port()
    );
    let registering = f.registry.clone();
    let register = thread::spawn(move || {
        let mut config = config(2, 1);
        config.pool.connection_timeout = Duration::from_secs(1);
        let pg = DbName::new("pg-silent-beside")?;
        registering.register_postgres(&pg, &url, config).map(drop)
    });
    // Well inside the registration's first measure (5 s of silence).
    thread::sleep(Duration::from_millis(500));
    assert!(
        !register.is_finished(),
        "the registration should still be waiting"
    );
    let start = Instant::now();
    let read = f.registry.read_async(&f.name, |c| {
        c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
    });
    let made_in = start.elapsed();
    assert_eq!(futures_executor::block_on(read)?, 1);
    assert!(
        made_in < Duration::from_millis(500),
        "making the future took {made_in:?}: it waited for the other registration"
    );
    assert!(
        register
            .join()
            .map_err(|_| anyhow::anyhow!("panicked"))?
            .is_err()
    );
    drop(silent);
    Ok(())
}

/// Bug caught: the sweep moved the connections idle in r2d2's list into its bag through
/// the return path, whose `DISCARD ALL` then ran on the shared maintenance threads, for
/// connections nobody had used: on backends that stopped answering, three such pools held
/// those threads, and with them every pool's connecting and sweeping.
#[test]
fn the_sweep_sends_no_statement_to_idle_connections() -> TestResult {
    require_postgres!();
    let url = server()?.fresh_db()?;
    let registry = Registry::new();
    let name = DbName::new("pg-sweep-quiet")?;
    registry.register_postgres(&name, &url, config(4, 2))?;
    let dbname = url.rsplit('/').next().unwrap_or_default().to_owned();
    // Three sweeps, a second apart.
    thread::sleep(Duration::from_millis(3500));
    let queries: Vec<String> = server()?
        .admin()?
        .query(
            "SELECT query FROM pg_stat_activity WHERE application_name = $1 AND datname = $2",
            &[&name.as_str(), &dbname],
        )?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    assert!(queries.len() >= 2, "{queries:?}");
    assert!(
        queries.iter().all(|q| q.is_empty()),
        "idle connections were sent {queries:?}"
    );
    Ok(())
}

/// Bug caught: the password of a registered URL in the snapshot (JSON), the metrics, the
/// health report or a `Debug` print.
#[test]
fn a_password_never_shows() -> TestResult {
    require_postgres!();
    let srv = server()?;
    let url = srv.fresh_db()?;
    // Trust authentication ignores the password; it is still in the string.
    let url = url.replace("postgres@", "postgres:hunter2@");
    let registry = Registry::new();
    let name = DbName::new("pg-password")?;
    registry.register_postgres(&name, &url, config(2, 1))?;
    let handle = registry.postgres(&name)?;
    handle.read(|c| c.batch_execute("SELECT 1"))?;
    let shown = [
        serde_json::to_string(&registry.stats())?,
        prometheus_text(&registry.stats()),
        format!("{:?}", registry.health(Duration::from_secs(5))),
        format!("{registry:?} {handle:?} {:?}", handle.get()?),
        handle.target().display().to_string(),
    ];
    for text in shown {
        assert!(!text.contains("hunter2"), "{text}");
    }
    Ok(())
}

/// Bug caught: the work of a write whose closure failed committed (in part), or the error
/// lost its SQLSTATE or the database's name.
#[test]
fn a_failing_write_rolls_back() -> TestResult {
    require_postgres!();
    let (registry, name) = registered("pg-rollback", config(2, 1))?;
    let db = registry.postgres(&name)?;
    db.write(|tx| tx.batch_execute("CREATE TABLE t (v int PRIMARY KEY)"))?;
    let err = db
        .write(|tx| {
            tx.execute("INSERT INTO t VALUES (1)", &[])?;
            tx.execute("INSERT INTO t VALUES (1)", &[])
        })
        .expect_err("duplicate key");
    let Error::Postgres {
        db: named, code, ..
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(named, &name);
    assert_eq!(code.as_deref(), Some("23505"));
    let n: i64 = db.read(|c| c.query_one("SELECT count(*) FROM t", &[])?.try_get(0))?;
    assert_eq!(n, 0, "the failed write's first insert committed");
    let totals = db.stats().totals;
    assert_eq!((totals.commits, totals.rollbacks), (1, 1));
    Ok(())
}

/// Bug caught: a serialization failure between two concurrent SERIALIZABLE writers returned
/// to the caller instead of re-running the write, or re-runs not counted.
#[test]
fn a_serialization_failure_is_retried_and_counted() -> TestResult {
    require_postgres!();
    let (registry, name) = registered("pg-serial", config(4, 2))?;
    let db = registry.postgres(&name)?;
    db.write(|tx| tx.batch_execute("CREATE TABLE duty (doctor text, on_call bool)"))?;
    db.write(|tx| tx.batch_execute("INSERT INTO duty VALUES ('a', true), ('b', true)"))?;
    // Write skew: each reads both rows, then, once both have read, takes itself off call.
    let barrier = Arc::new(Barrier::new(2));
    let writers: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|doctor| {
            let (db, barrier) = (db.clone(), Arc::clone(&barrier));
            thread::spawn(move || {
                let mut first = true;
                db.write(|tx| {
                    tx.batch_execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")?;
                    let on: i64 = tx
                        .query_one("SELECT count(*) FROM duty WHERE on_call", &[])?
                        .try_get(0)?;
                    if std::mem::take(&mut first) {
                        barrier.wait();
                    }
                    if on >= 2 {
                        tx.execute(
                            "UPDATE duty SET on_call = false WHERE doctor = $1",
                            &[&doctor],
                        )?;
                    }
                    Ok(())
                })
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer panicked")?;
    }
    let on: i64 = db.read(|c| {
        c.query_one("SELECT count(*) FROM duty WHERE on_call", &[])?
            .try_get(0)
    })?;
    assert_eq!(on, 1, "both writers committed over each other");
    assert!(
        db.stats().totals.write_retries >= 1,
        "{:?}",
        db.stats().totals
    );
    Ok(())
}

/// Bug caught: a write that keeps failing with a serialization failure re-run without bound,
/// or given up on with an untyped error or an uncounted retry.
#[test]
fn a_write_that_keeps_conflicting_gives_up_after_the_bound() -> TestResult {
    require_postgres!();
    let mut config = config(2, 1);
    config.write_retries = 2;
    let (registry, name) = registered("pg-give-up", config)?;
    let db = registry.postgres(&name)?;
    let mut runs = 0;
    let err = db
        .write(|tx| {
            runs += 1;
            tx.batch_execute(
                "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = 'serialization_failure'; END $$",
            )
        })
        .expect_err("conflict");
    assert_eq!(runs, 3);
    assert!(
        matches!(&err, Error::WriteConflict { db, attempts: 3, code, .. } if db == &name && code == "40001"),
        "{err:?}"
    );
    assert_eq!(db.stats().totals.write_retries, 2);
    // Not retried: any other error.
    let mut runs = 0;
    let _ = db.write(|tx| {
        runs += 1;
        tx.batch_execute("SELECT no_such_column FROM pg_class")
    });
    assert_eq!(runs, 1);
    Ok(())
}

/// Bug caught: a connection whose server process was terminated handed out again (every
/// later borrower failing), instead of closed so the next borrower gets a working one.
#[test]
fn a_connection_whose_backend_was_killed_is_evicted() -> TestResult {
    require_postgres!();
    let (registry, name) = registered("pg-killed", config(1, 1))?;
    let db = registry.postgres(&name)?;
    let pid = db.read(backend_pid)?;
    let killed: bool = server()?
        .admin()?
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])?
        .try_get(0)?;
    assert!(killed);
    // The first borrower meets the dead connection (the window skips validation)...
    let first = db.read(backend_pid);
    // ...and whatever it saw, the next one gets a working connection.
    let next = db.read(backend_pid)?;
    assert_ne!(next, pid);
    if let Ok(p) = first {
        assert_ne!(p, pid);
    }
    assert!(
        db.stats().totals.connections_closed.broken
            + db.stats().totals.connections_closed.validation_failed
            >= 1
    );
    Ok(())
}

/// Bug caught: a connection-class error forgotten once the closure returned: a client that
/// reported a read-only transaction (25006: a standby after a switchover) pooled again,
/// because its session reset succeeds.
#[test]
fn a_connection_class_error_evicts_the_connection() -> TestResult {
    require_postgres!();
    let (registry, name) = registered("pg-read-only", config(1, 1))?;
    let db = registry.postgres(&name)?;
    db.write(|tx| tx.batch_execute("CREATE TABLE t (v int)"))?;
    let pid = db.read(backend_pid)?;
    let err = db
        .read(|c| {
            c.batch_execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")?;
            c.batch_execute("INSERT INTO t VALUES (1)")
        })
        .expect_err("read-only");
    assert!(
        matches!(&err, Error::Postgres { code: Some(c), .. } if c == "25006"),
        "{err:?}"
    );
    assert_ne!(
        db.read(backend_pid)?,
        pid,
        "the connection was pooled again"
    );
    assert_eq!(db.stats().totals.connections_closed.broken, 1);
    Ok(())
}

/// Bug caught: session state a borrower changed (search_path, a temporary table,
/// statement_timeout) leaking to the next borrower of the same connection. The timeout set is
/// one no statement here reaches: a tiny one would cancel the reset itself on a busy machine.
#[test]
fn a_returned_connection_is_clean_for_the_next_borrower() -> TestResult {
    require_postgres!();
    let (registry, name) = registered("pg-session", config(1, 1))?;
    let db = registry.postgres(&name)?;
    let (pid, defaults) = db.read(|c| {
        let path: String = c.query_one("SHOW search_path", &[])?.try_get(0)?;
        Ok((backend_pid(c)?, path))
    })?;
    db.read(|c| {
        c.batch_execute(
            "CREATE SCHEMA elsewhere; SET search_path TO elsewhere; \
             CREATE TEMP TABLE scratch (x int); SET statement_timeout = '5min'; \
             PREPARE p AS SELECT 1",
        )
    })?;
    let (pid_after, path, temp, timeout, prepared) = db.read(|c| {
        let path: String = c.query_one("SHOW search_path", &[])?.try_get(0)?;
        let temp: Option<String> = c
            .query_one("SELECT to_regclass('pg_temp.scratch')::text", &[])?
            .try_get(0)?;
        let timeout: String = c.query_one("SHOW statement_timeout", &[])?.try_get(0)?;
        let prepared: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_prepared_statements WHERE name = 'p'",
                &[],
            )?
            .try_get(0)?;
        Ok((backend_pid(c)?, path, temp, timeout, prepared))
    })?;
    assert_eq!(pid_after, pid, "reset, not replaced");
    assert_eq!(path, defaults);
    assert_eq!(temp, None);
    assert_eq!(timeout, "0");
    assert_eq!(prepared, 0);
    // Typed queries still work after the reset dropped the server's statements.
    let n: i64 = db.read(|c| c.query_one("SELECT $1::bigint", &[&7i64])?.try_get(0))?;
    assert_eq!(n, 7);
    Ok(())
}

/// Bug caught: the return's `DISCARD ALL` ends a borrower's `LISTEN`, but notifications
/// its client had received already stayed in the client's buffer, and the next borrower of
/// the connection read them (another tenant's channel, say).
#[test]
fn notifications_received_by_one_borrower_do_not_reach_the_next() -> TestResult {
    require_postgres!();
    let url = server()?.fresh_db()?;
    let registry = Registry::new();
    let name = DbName::new("pg-notify-leak")?;
    registry.register_postgres(&name, &url, config(1, 1))?;
    let db = registry.postgres(&name)?;
    let first = {
        let mut c = db.get()?;
        c.batch_execute("LISTEN tenant_a")?;
        let mut other = postgres::Client::connect(&url, postgres::NoTls)?;
        other.batch_execute("NOTIFY tenant_a, 'tenant A only'")?;
        // A round trip after the notify brings it into the client's buffer.
        let deadline = Instant::now() + Duration::from_secs(5);
        while c.notifications().is_empty() {
            anyhow::ensure!(Instant::now() < deadline, "the notification never came");
            c.batch_execute("SELECT 1")?;
            thread::sleep(Duration::from_millis(10));
        }
        backend_pid(&mut c)?
    };
    let mut c = db.get()?;
    assert_eq!(backend_pid(&mut c)?, first, "not the same connection");
    assert_eq!(
        c.notifications().len(),
        0,
        "the next borrower got another's notifications"
    );
    Ok(())
}

/// Bug caught: a client returned by a `get` guard inside an open transaction handed to the
/// next borrower, who would run inside it (and could commit the first one's work).
#[test]
fn a_transaction_left_open_is_not_handed_on() -> TestResult {
    require_postgres!();
    let (registry, name) = registered("pg-open-tx", config(1, 1))?;
    let db = registry.postgres(&name)?;
    db.write(|tx| tx.batch_execute("CREATE TABLE t (v int)"))?;
    let pid = {
        let mut conn = db.get()?;
        conn.batch_execute("BEGIN; INSERT INTO t VALUES (1)")?;
        backend_pid(&mut conn)?
    };
    let (next, rows) = db.read(|c| {
        c.batch_execute("COMMIT")?;
        let rows: i64 = c.query_one("SELECT count(*) FROM t", &[])?.try_get(0)?;
        Ok((backend_pid(c)?, rows))
    })?;
    assert_ne!(next, pid);
    assert_eq!(
        rows, 0,
        "the next borrower committed the abandoned transaction"
    );
    assert_eq!(db.stats().totals.connections_closed.broken, 1);
    Ok(())
}

/// Bug caught: a checkout of an exhausted pool waiting past `connection_timeout`, or failing
/// with an untyped error that does not name the database.
#[test]
fn exhaustion_times_out_with_a_typed_error() -> TestResult {
    require_postgres!();
    let mut config = config(1, 1);
    config.pool.connection_timeout = Duration::from_millis(300);
    let (registry, name) = registered("pg-exhausted", config)?;
    let db = registry.postgres(&name)?;
    let held = db.get()?;
    let start = Instant::now();
    let err = db.get().expect_err("pool of one, held");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    assert!(
        matches!(&err, Error::Timeout { db, total: 1, active: 1, .. } if db == &name),
        "{err:?}"
    );
    assert_eq!(db.stats().totals.acquire_timeouts, 1);
    drop(held);
    db.read(|c| c.batch_execute("SELECT 1"))?;
    Ok(())
}

/// Bug caught: close not waiting for a borrowed client, not reporting one still out at the
/// deadline, or a handle working after close.
#[test]
fn close_waits_and_reports() -> TestResult {
    require_postgres!();
    let (registry, name) = registered("pg-close", config(2, 1))?;
    let db = registry.postgres(&name)?;
    let conn = db.get()?;
    let returner = thread::spawn(move || {
        thread::sleep(Duration::from_millis(200));
        drop(conn);
    });
    let report = registry.close(&name, Duration::from_secs(5))?;
    returner.join().expect("returner panicked");
    assert!(report.still_out.is_empty(), "{report:?}");
    assert!(report.waited >= Duration::from_millis(150), "{report:?}");
    assert!(matches!(db.get(), Err(Error::Closed { .. })));
    let snap = registry.db_stats(&name)?;
    assert!(!snap.open);
    assert_eq!(snap.backend, Backend::Postgres);

    // A client kept past the deadline is reported, with where it was taken.
    registry.register_postgres(&name, &server()?.fresh_db()?, config(2, 1))?;
    let kept = registry.postgres(&name)?.get()?;
    let report = registry.close(&name, Duration::from_millis(100))?;
    assert_eq!(report.still_out.len(), 1, "{report:?}");
    assert!(
        report.still_out[0].checked_out_at.contains("pg.rs"),
        "{report:?}"
    );
    drop(kept);
    Ok(())
}

/// Bug caught: a SQLite call on a PostgreSQL name (or the other way round) reaching the
/// wrong pool, or failing with an error that does not say which engine the name is; a name
/// taken by one engine registered again for the other.
#[test]
fn each_engine_refuses_the_others_names_and_calls() -> TestResult {
    require_postgres!();
    let (registry, pg) = registered("pg-engine", config(1, 0))?;
    let dir = tempfile::tempdir()?;
    let lite = DbName::new("lite")?;
    let lite_config = DbConfig {
        create_if_missing: true,
        ..DbConfig::default()
    };
    registry.register(&lite, dir.path().join("lite.db"), lite_config.clone())?;

    let err = registry
        .read(&pg, |c| c.execute_batch("SELECT 1"))
        .expect_err("sqlite call");
    assert!(
        matches!(&err, Error::WrongBackend { db, actual: Backend::Postgres, .. } if db == &pg),
        "{err:?}"
    );
    assert!(matches!(registry.get(&pg), Err(Error::WrongBackend { .. })));
    assert!(matches!(
        registry.write(&pg, |_| Ok(())),
        Err(Error::WrongBackend { .. })
    ));
    let err = registry.postgres(&lite).expect_err("postgres call");
    assert!(
        matches!(&err, Error::WrongBackend { db, actual: Backend::Sqlite, .. } if db == &lite),
        "{err:?}"
    );
    let url = server()?.fresh_db()?;
    assert!(matches!(
        registry.register_postgres(&lite, &url, config(1, 0)),
        Err(Error::NameConflict { .. })
    ));
    assert!(matches!(
        registry.register(&pg, dir.path().join("other.db"), lite_config),
        Err(Error::NameConflict { .. })
    ));
    // The same name for the same URL again is a no-op; for another URL, a conflict.
    let pg_url = registry.postgres(&pg)?.target().display().to_string();
    assert!(pg_url.starts_with("postgres://"));
    assert!(matches!(
        registry.register_postgres(&pg, &url, config(1, 0)),
        Err(Error::NameConflict { .. })
    ));
    let kinds: Vec<_> = registry
        .stats()
        .databases
        .iter()
        .map(|d| (d.name.to_string(), d.backend))
        .collect();
    assert_eq!(
        kinds,
        [
            ("lite".to_owned(), Backend::Sqlite),
            ("pg-engine".to_owned(), Backend::Postgres)
        ]
    );
    Ok(())
}

/// Bug caught: a PostgreSQL pool without the SQLite pools' leak reports (the shared scanner
/// not started for it), or without `max_lifetime` enforced at checkout.
#[test]
fn leaks_are_reported_and_lifetimes_kept() -> TestResult {
    require_postgres!();
    let mut config = config(1, 1);
    config.pool.leak_threshold = Some(Duration::from_millis(100));
    config.pool.max_lifetime = Some(Duration::from_millis(300));
    let (registry, name) = registered("pg-leak-life", config)?;
    let db = registry.postgres(&name)?;
    let mut conn = db.get()?;
    let pid = backend_pid(&mut conn)?;
    thread::sleep(Duration::from_millis(400));
    let snap = db.stats();
    assert_eq!(snap.totals.leaks, 1, "{:?}", snap.totals);
    assert_eq!(snap.held_past_leak_threshold, 1);
    drop(conn);
    // Past its lifetime: the checkout closes it and opens another.
    assert_ne!(db.read(backend_pid)?, pid);
    assert_eq!(db.stats().totals.connections_closed.max_lifetime, 1);
    Ok(())
}

/// Bug caught: a client returned while its thread panicked (in a write closure) pooled
/// again, or the panic swallowed.
#[test]
fn a_panicking_write_closes_its_connection_and_the_panic_goes_on() -> TestResult {
    require_postgres!();
    let (registry, name) = registered("pg-panic", config(1, 1))?;
    let db = registry.postgres(&name)?;
    db.write(|tx| tx.batch_execute("CREATE TABLE t (v int)"))?;
    let pid = db.read(backend_pid)?;
    let writer = db.clone();
    let panicked = thread::spawn(move || {
        writer.write(|tx| -> Result<(), postgres::Error> {
            tx.batch_execute("INSERT INTO t VALUES (1)")?;
            panic!("injected")
        })
    })
    .join();
    assert!(panicked.is_err(), "the panic did not reach the caller");
    let (next, rows) = db.read(|c| {
        let rows: i64 = c.query_one("SELECT count(*) FROM t", &[])?.try_get(0)?;
        Ok((backend_pid(c)?, rows))
    })?;
    assert_ne!(next, pid);
    assert_eq!(rows, 0);
    assert_eq!(db.stats().totals.connections_closed.broken, 1);
    Ok(())
}

/// Sends `sig` to process `pid` (a backend of the test's own server).
fn signal(sig: &str, pid: i32) {
    let _ = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status();
}

/// Resumes a stopped backend when dropped, whatever the test did.
struct Resume(i32);

impl Drop for Resume {
    fn drop(&mut self) {
        signal("-CONT", self.0);
    }
}

/// Bug caught: the health probe's round trip timed out on a backend that stopped answering,
/// and its client went back through the `DISCARD ALL` reset, which has no bound: the health
/// thread hung in it holding the pool's only connection, and every later caller timed out
/// (a new backend would have answered them).
#[test]
fn a_probe_that_times_out_closes_its_client_without_a_reset() -> TestResult {
    require_postgres!();
    let (registry, name) = registered("pg-probe-stall", config(1, 1))?;
    let db = registry.postgres(&name)?;
    let pid: i32 = db.read_primary(|c| c.query_one("SELECT pg_backend_pid()", &[])?.try_get(0))?;
    signal("-STOP", pid);
    let _resume = Resume(pid);
    let report = registry.health(Duration::from_millis(500));
    assert_ne!(report.status, HealthStatus::Healthy, "{report:#?}");
    let read = db.read_primary(|c| c.query_one("SELECT 1", &[]).map(drop));
    assert!(read.is_ok(), "{:?}", read.map_err(|e| error_chain(&e)));
    Ok(())
}

/// Bug caught: `max_replica_lag: Duration::MAX` (no bound on lag) passed validation and
/// then panicked in the monitor's first round, inside `register_postgres`, on an overflow.
#[test]
fn the_largest_replica_lag_registers() -> TestResult {
    require_postgres!();
    let config = PgConfig {
        max_replica_lag: Duration::MAX,
        retry_backoff: Duration::MAX,
        ..config(1, 0)
    };
    let (registry, name) = registered("pg-lag-max", config)?;
    registry
        .postgres(&name)?
        .read_primary(|c| c.query_one("SELECT 1", &[]).map(drop))?;
    Ok(())
}

/// Bug caught: the replica monitor's facts query had no bound, so one frozen backend (the
/// monitor's own) held the monitor for good: its last facts aged on, reported as current,
/// with no error and health Healthy. It must give that server up and reconnect.
#[test]
fn the_monitor_gets_past_a_frozen_backend() -> TestResult {
    require_postgres!();
    let url = server()?.fresh_db()?;
    let registry = Registry::new();
    let name = DbName::new("pg-monitor-frozen")?;
    // A round a second, and the backend stopped just after one: the next round's facts
    // query meets it, and must give it up at its 5 s bound.
    let config = PgConfig {
        monitor_interval: Duration::from_secs(1),
        ..config(1, 0)
    };
    registry.register_postgres(&name, &url, config)?;
    let dbname = url.rsplit('/').next().unwrap_or_default().to_owned();
    let monitor_pids = || -> anyhow::Result<Vec<i32>> {
        server()?
            .admin()?
            .query(
                "SELECT pid FROM pg_stat_activity \
                 WHERE application_name LIKE '%hive-db monitor%' AND datname = $1",
                &[&dbname],
            )?
            .iter()
            .map(|r| Ok(r.try_get(0)?))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid = loop {
        if let Some(&pid) = monitor_pids()?.first() {
            break pid;
        }
        anyhow::ensure!(Instant::now() < deadline, "no monitor connection");
        thread::sleep(Duration::from_millis(20));
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let facts = registry.db_stats(&name)?.postgres.expect("facts");
        if facts.primary.as_ref().is_some_and(|p| p.age_ms < 100) {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "no fresh round: {facts:#?}");
        thread::sleep(Duration::from_millis(5));
    }
    signal("-STOP", pid);
    let _resume = Resume(pid);
    thread::sleep(Duration::from_millis(500));
    // The monitor's round trip gives up within 5 s; then it reconnects and measures again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let facts = registry.db_stats(&name)?.postgres.expect("facts");
        let fresh = facts.primary.as_ref().is_some_and(|p| p.age_ms < 2000);
        if fresh && monitor_pids()?.iter().any(|&p| p != pid) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the monitor is stuck on its frozen backend: {facts:#?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Bug caught: a write whose closure swallowed a statement's error returned `Ok` though
/// nothing was committed: PostgreSQL answers `COMMIT` in a transaction an error aborted with
/// a rollback, and no error. It must fail, and the pool must go on.
#[test]
fn a_write_whose_transaction_an_error_aborted_is_not_ok() -> TestResult {
    require_postgres!();
    let (registry, name) = registered("pg-aborted", config(1, 1))?;
    let db = registry.postgres(&name)?;
    db.write(|tx| tx.batch_execute("CREATE TABLE t (v int)"))?;
    let swallowed = db.write(|tx| {
        tx.execute("INSERT INTO t (v) VALUES (1)", &[])?;
        // The caller's mistake: the error is dropped, and the transaction is aborted.
        let _ = tx.batch_execute("SELECT 1 / 0");
        Ok(())
    });
    assert!(
        matches!(&swallowed, Err(Error::Postgres { code: Some(code), .. }) if code == "25P02"),
        "{swallowed:?}"
    );
    db.write(|tx| tx.execute("INSERT INTO t (v) VALUES (2)", &[]).map(drop))?;
    let rows: Vec<i32> = db.read_primary(|c| {
        c.query("SELECT v FROM t ORDER BY v", &[])?
            .iter()
            .map(|r| r.try_get(0))
            .collect()
    })?;
    assert_eq!(rows, [2]);
    Ok(())
}

/// The backends of database `dbname` on the test server, the admin's own aside.
fn backends_of(dbname: &str) -> anyhow::Result<i64> {
    Ok(server()?
        .admin()?
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
            &[&dbname],
        )?
        .try_get(0)?)
}

/// Bug caught: a registry with a PostgreSQL database, dropped at the end of an `async fn`
/// (an `async fn main`, a task), aborted the process: each pooled client's drop blocked on
/// the client's own tokio runtime, which panics on a thread driving another, and a panic in
/// a destructor during unwinding aborts. `register_postgres` panicked there too. Both must
/// work on either tokio scheduler, and the drop must close the connections.
#[test]
fn a_registry_registered_and_dropped_in_async_code_works() -> TestResult {
    require_postgres!();
    let runtimes = [
        tokio::runtime::Builder::new_multi_thread().build()?,
        tokio::runtime::Builder::new_current_thread().build()?,
    ];
    for (i, rt) in runtimes.into_iter().enumerate() {
        let url = server()?.fresh_db()?;
        let dbname = url.rsplit('/').next().unwrap_or_default().to_owned();
        let name = DbName::new(&format!("pg-in-async-{i}"))?;
        rt.block_on(async {
            let registry = Arc::new(Registry::new());
            registry.register_postgres(&name, &url, config(4, 2))?;
            let (r, n) = (Arc::clone(&registry), name.clone());
            let one: i32 = tokio::task::spawn_blocking(move || {
                r.postgres(&n)?
                    .read(|c| c.query_one("SELECT 1", &[])?.try_get(0))
            })
            .await??;
            assert_eq!(one, 1);
            drop(registry);
            anyhow::Ok(())
        })?;
        // A backend ends a moment after its client's last message: a bounded wait, not a
        // sleep; connections that stay open fail it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while backends_of(&dbname)? != 0 {
            assert!(
                Instant::now() < deadline,
                "the dropped registry's connections stay open"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

/// Bug caught: a client closed after a round trip it gave up on (the server stopped
/// answering) kept the thread that dropped it until the server answered: the client's drop
/// waits for its connection to end. The drop must return within its bound.
#[test]
fn a_client_closed_on_a_silent_server_lets_its_thread_go() -> TestResult {
    require_postgres!();
    let (registry, name) = registered("pg-close-silent", config(1, 1))?;
    let mut conn = registry.postgres(&name)?.get()?;
    let pid = backend_pid(&mut conn)?;
    signal("-STOP", pid);
    let _resume = Resume(pid);
    assert!(conn.is_valid(Duration::from_millis(200)).is_err());
    conn.discard();
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        drop(conn);
        let _ = tx.send(());
    });
    assert!(
        rx.recv_timeout(Duration::from_secs(10)).is_ok(),
        "dropping the client waited for the stopped server"
    );
    Ok(())
}

/// Bug caught: a connect to a server whose postmaster is stopped (`SIGSTOP`, a hung host:
/// its kernel still accepts the TCP connection and acknowledges what is sent) waited in the
/// startup exchange for good, on the three threads every pool of the process shares for
/// opening connections: every other pool, a SQLite database's too, stopped opening
/// connections meanwhile (its register timed out), and callers of the stopped server's
/// pool got a timeout that named no cause. The connect is bounded by `connection_timeout`,
/// with the cause recorded, and a server's pool opens its connections on a thread of its
/// own.
#[test]
fn a_stopped_server_stops_no_other_pool_and_its_connects_say_why() -> TestResult {
    require_postgres!();
    let server = hive_pg_harness::Server::start()?;
    let registry = Registry::new();
    let name = DbName::new("stopped")?;
    let mut pg = config(8, 0);
    pg.pool.connection_timeout = Duration::from_secs(3);
    registry.register_postgres(&name, &server.url("postgres"), pg)?;
    let db = registry.postgres(&name)?;
    drop(db.get()?);

    server.node().freeze()?;
    let resumed = scopeguard(|| {
        let _ = server.node().thaw();
    });
    // Six callers at once, each needing a new connection (one is idle).
    let held = db.get()?;
    let callers: Vec<_> = (0..6)
        .map(|_| {
            let db = db.clone();
            thread::spawn(move || db.get().map(drop))
        })
        .collect();
    thread::sleep(Duration::from_millis(200));
    // Meanwhile another pool of the process opens its connections.
    let dir = tempfile::tempdir()?;
    let sqlite = DbName::new("beside")?;
    registry.register(
        &sqlite,
        dir.path().join("beside.db"),
        DbConfig {
            create_if_missing: true,
            min_idle: 2,
            connection_timeout: Duration::from_secs(1),
            ..DbConfig::default()
        },
    )?;
    let one: i64 = registry.read(&sqlite, |c| c.query_row("SELECT 1", [], |r| r.get(0)))?;
    assert_eq!(one, 1);
    for caller in callers {
        let got = caller
            .join()
            .map_err(|_| anyhow::anyhow!("a caller panicked"))?;
        assert!(
            matches!(got, Err(Error::Timeout { .. })),
            "a checkout of the stopped server: {got:?}"
        );
    }
    // The cause is recorded: the next caller's timeout names it.
    let err = db.get().map(drop).expect_err("the server is stopped");
    let chain = error_chain(&err);
    assert!(
        chain.contains("stopped") && chain.contains("startup"),
        "{chain}"
    );
    drop(held);
    drop(resumed);
    // Resumed, the pool serves again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match db.read(|c| c.query_one("SELECT 1", &[])?.try_get::<_, i32>(0)) {
            Ok(1) => break,
            other => anyhow::ensure!(Instant::now() < deadline, "not serving again: {other:?}"),
        }
        thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Runs `f` when dropped, also when the test fails.
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
