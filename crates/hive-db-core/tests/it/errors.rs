//! Typed errors: conflicts, bad paths, exhaustion and connect failures.

use std::time::{Duration, Instant};

use hive_db_core::{DbConfig, DbName, Error, OpenCause, Registry, rusqlite};

use crate::support::{TestResult, config, create_table, fixture};

/// Bug caught: a second registration with another path silently ignored.
#[test]
fn same_name_other_path_is_a_conflict_and_same_path_is_idempotent() -> TestResult {
    let f = fixture("conflict", config())?;
    f.registry.register(&f.name, f.path(), config())?;
    let other = f.dir.path().join("other.db");
    let err = f.registry.register(&f.name, &other, config()).unwrap_err();
    assert!(
        matches!(&err, Error::NameConflict { db, requested, .. } if db == &f.name && requested.ends_with("other.db")),
        "{err:?}"
    );
    assert!(!other.exists(), "a refused registration created a file");
    // Another name for the same file would give it two writer lanes: refused too.
    let alias = DbName::new("alias")?;
    let err = f.registry.register(&alias, f.path(), config()).unwrap_err();
    assert!(
        matches!(err, Error::PathInUse { ref db, ref registered_as, .. }
            if db == &alias && registered_as == &f.name),
        "{err:?}"
    );
    // A relative spelling of the same file is the same file.
    let relative = f.dir.path().join(".").join("conflict.db");
    f.registry.register(&f.name, relative, config())?;
    Ok(())
}

/// Bad paths fail fast with a typed error naming the database, and register nothing.
#[test]
fn bad_paths_fail_fast_and_register_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let registry = Registry::new();
    let name = DbName::new("badpath")?;
    let text = dir.path().join("text.db");
    std::fs::write(&text, vec![b'x'; 4096])?;
    let not_a_dir = text.join("inner.db");
    let cases = [
        (
            dir.path().join("missing.db"),
            DbConfig::default(),
            OpenCause::Missing,
        ),
        (dir.path().to_path_buf(), config(), OpenCause::IsDirectory),
        (text.clone(), config(), OpenCause::NotADatabase),
        (not_a_dir, config(), OpenCause::CannotOpen),
    ];
    for (path, cfg, want) in cases {
        let start = Instant::now();
        match registry.register(&name, &path, cfg) {
            Err(Error::Open { db, cause, .. }) => {
                assert_eq!(db, name);
                assert_eq!(cause, want, "{}", path.display());
            }
            other => panic!("{}: expected Open({want:?}), got {other:?}", path.display()),
        }
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "did not fail fast"
        );
        assert!(matches!(
            registry.get(&name),
            Err(Error::UnknownDatabase { .. })
        ));
    }
    Ok(())
}

/// Bug caught: exhaustion giving a bare "queue empty" after ~15 s, naming neither the
/// database nor the cause.
#[test]
fn exhaustion_is_a_typed_timeout_with_counts() -> TestResult {
    let timeout = Duration::from_millis(300);
    let f = fixture(
        "exhausted",
        DbConfig {
            max_size: 2,
            min_idle: 0,
            connection_timeout: timeout,
            ..config()
        },
    )?;
    let _a = f.registry.get(&f.name)?;
    let _b = f.registry.get(&f.name)?;
    let start = Instant::now();
    let err = f.registry.get(&f.name).unwrap_err();
    let waited = start.elapsed();
    match &err {
        Error::Timeout {
            db,
            total,
            active,
            idle,
            waiting,
            ..
        } => {
            assert_eq!(db, &f.name);
            assert_eq!((*total, *active, *idle, *waiting), (2, 2, 0, 1));
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(waited >= timeout, "gave up early: {waited:?}");
    // A generous bound: the wait must end, not hang.
    assert!(waited < timeout * 10, "waited {waited:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("exhausted") && msg.contains("active 2"),
        "{msg}"
    );
    assert_eq!(f.registry.db_stats(&f.name)?.totals.acquire_timeouts, 1);
    Ok(())
}

/// Bug caught: connection errors swallowed and replaced by a generic error. A
/// permanent cause (here the file vanished) fails fast, well before the timeout, with the
/// cause and SQLite's extended code.
#[test]
fn connect_errors_keep_their_cause_and_fail_fast() -> TestResult {
    let f = fixture(
        "vanishing",
        DbConfig {
            min_idle: 0,
            connection_timeout: Duration::from_secs(30),
            ..config()
        },
    )?;
    let parked = f.dir.path().join("parked");
    std::fs::create_dir(&parked)?;
    for suffix in ["", "-wal", "-shm"] {
        let from = f.dir.path().join(format!("vanishing.db{suffix}"));
        if from.exists() {
            std::fs::rename(&from, parked.join(format!("x{suffix}")))?;
        }
    }
    let start = Instant::now();
    let err = f.registry.get(&f.name).unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "waited out the timeout"
    );
    match &err {
        Error::Open {
            db, cause, code, ..
        } => {
            assert_eq!(db, &f.name);
            assert_eq!(*cause, OpenCause::CannotOpen);
            assert_eq!(code.map(|c| c & 0xff), Some(rusqlite::ffi::SQLITE_CANTOPEN));
        }
        other => panic!("expected Open, got {other:?}"),
    }
    // The whole chain, as a binary prints it, says each thing once: the database, our
    // words, SQLite's.
    let chain = format!("{:#}", anyhow::Error::new(err));
    for once in [
        "database vanishing",
        "cannot open",
        "unable to open database file",
    ] {
        assert_eq!(chain.matches(once).count(), 1, "{once:?} in {chain}");
    }
    assert!(f.registry.db_stats(&f.name)?.totals.connect_errors >= 1);
    Ok(())
}

/// Unknown and closed names are different errors, both naming the database.
#[test]
fn unknown_and_closed_are_distinct() -> TestResult {
    let f = fixture("gone", config())?;
    let other = DbName::new("never")?;
    assert!(matches!(f.registry.get(&other), Err(Error::UnknownDatabase { db }) if db == other));
    f.registry.close(&f.name, Duration::from_secs(1))?;
    assert!(matches!(f.registry.get(&f.name), Err(Error::Closed { ref db }) if db == &f.name));
    assert!(matches!(
        f.registry.close(&f.name, Duration::ZERO),
        Err(Error::Closed { .. })
    ));
    Ok(())
}

/// Unworkable settings are refused before anything is opened.
#[test]
fn invalid_config_registers_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let registry = Registry::new();
    let name = DbName::new("cfg")?;
    let path = dir.path().join("cfg.db");
    let bad = DbConfig {
        max_size: 1,
        min_idle: 2,
        ..config()
    };
    assert!(matches!(
        registry.register(&name, &path, bad),
        Err(Error::InvalidConfig { .. })
    ));
    assert!(!path.exists());
    Ok(())
}

/// Bug caught: a writer that gave up waiting for the writer lane counted as a connection
/// timeout (or not at all), so a monitor blames the pool for a slow writer.
#[test]
fn a_writer_lane_timeout_is_typed_and_counted_apart() -> TestResult {
    let f = fixture(
        "lane-timeout",
        DbConfig {
            connection_timeout: Duration::from_millis(100),
            // Registering waits for `min_idle` connections within the 100 ms: one, so that
            // a loaded machine's slow second connect does not fail the set-up.
            min_idle: 1,
            ..config()
        },
    )?;
    create_table(&f)?;
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (release_tx, release) = std::sync::mpsc::channel::<()>();
    let f = &f;
    std::thread::scope(|scope| -> TestResult {
        let holder = scope.spawn(move || {
            f.registry
                .write_with(&f.name, move |_tx| -> anyhow::Result<()> {
                    entered_tx.send(())?;
                    // Holds the lane until the other writer has given up.
                    release.recv_timeout(Duration::from_secs(20))?;
                    Ok(())
                })
        });
        entered.recv_timeout(Duration::from_secs(20))?;
        let refused = f.registry.write(&f.name, |_tx| Ok(()));
        release_tx.send(())?;
        holder.join().expect("holder")?;
        assert!(
            matches!(refused, Err(Error::WriterLaneTimeout { ref db, .. }) if db == &f.name),
            "{refused:?}"
        );
        Ok(())
    })?;
    let totals = f.registry.db_stats(&f.name)?.totals;
    assert_eq!((totals.writer_timeouts, totals.acquire_timeouts), (1, 0));
    Ok(())
}

/// Bug caught: a closure's rusqlite error coming back without the database's name, or with
/// SQLite's extended code lost, from the short `read`/`write` forms (on the registry and on a
/// handle); and a failed short `write` leaving its work behind.
#[test]
fn closure_errors_name_the_database_and_keep_the_extended_code() -> TestResult {
    let f = fixture("closure_err", config())?;
    create_table(&f)?;
    f.registry.write(&f.name, |tx| {
        tx.execute_batch("CREATE TABLE u (k INTEGER PRIMARY KEY, v TEXT UNIQUE)")?;
        tx.execute("INSERT INTO u (k, v) VALUES (1, 'a')", [])?;
        Ok(())
    })?;
    let handle = f.registry.handle(&f.name)?;
    let results = [
        f.registry.read(&f.name, |c| {
            c.query_row("SELECT nope FROM u", [], |r| r.get::<_, i64>(0))
        }),
        handle.read(|c| c.query_row("SELECT nope FROM u", [], |r| r.get::<_, i64>(0))),
        f.registry.write(&f.name, |tx| {
            tx.execute("INSERT INTO t (v) VALUES (1)", [])?;
            tx.execute("INSERT INTO u (k, v) VALUES (2, 'a')", [])
                .map(|n| n as i64)
        }),
        handle.write(|tx| {
            tx.execute("INSERT INTO t (v) VALUES (1)", [])?;
            tx.execute("INSERT INTO u (k, v) VALUES (1, 'b')", [])
                .map(|n| n as i64)
        }),
    ];
    let expected = [
        ("read", None),
        ("read", None),
        ("write", Some(rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)),
        ("write", Some(rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)),
    ];
    for (result, (op_wanted, code_wanted)) in results.into_iter().zip(expected) {
        let err = result.expect_err("the closure failed");
        assert!(
            matches!(&err, Error::Sqlite { db, op, .. } if db == &f.name && *op == op_wanted),
            "{err:?}"
        );
        assert!(err.to_string().contains("closure_err"), "{err}");
        if let Some(code) = code_wanted {
            assert_eq!(err.sqlite_code(), Some(code), "{err:?}");
        } else {
            assert_eq!(
                err.sqlite_code(),
                Some(rusqlite::ffi::SQLITE_ERROR),
                "{err:?}"
            );
        }
    }
    // Neither failed write left its row in `t`.
    assert_eq!(crate::support::count_rows(&f)?, 0);
    Ok(())
}
