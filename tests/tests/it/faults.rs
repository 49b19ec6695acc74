//! Faults, each bounded in time: a lock held by another process, a full disk, no file
//! descriptors left, permission denied, panics inside `write`, calls back into the registry
//! from a closure, and settings at their extremes.
//!
//! Over 400 lines on purpose: one test per fault scenario of docs/RELIABILITY.md, each short,
//! sharing this file's child-process helpers.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hive_db_core::{DbConfig, DbName, Error, HealthStatus, Reentry, Registry};
use hive_tests::{NO_HANG, have_tool, registry_with, run_bounded, wait_bounded, within};

const PEER: &str = env!("CARGO_BIN_EXE_hive-peer");
const CHILD: &str = env!("CARGO_BIN_EXE_fault-child");

/// A few seconds of slack on top of the timeouts a call is allowed: enough for a loaded
/// 2-core machine, far below a hang.
const SLACK: Duration = Duration::from_secs(5);

fn tree(dir: &Path) -> anyhow::Result<BTreeSet<PathBuf>> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            }
            out.insert(entry.path());
        }
    }
    Ok(out)
}

fn create_table(registry: &Registry, db: &DbName) -> anyhow::Result<()> {
    registry.write_with(db, |tx| -> anyhow::Result<_> {
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)",
        )?;
        Ok(())
    })
}

fn count(registry: &Registry, db: &DbName, table: &str) -> anyhow::Result<i64> {
    registry.read_with(db, |c| -> anyhow::Result<_> {
        Ok(c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?)
    })
}

/// Bug caught: a `write` (or `read`, `get`, `health`) that waits past connection timeout +
/// busy timeout while another process holds the write lock (a retry loop without a deadline,
/// a lane held while waiting on SQLite), an untyped error for it, or a registry that stays
/// broken after the other process lets go.
#[test]
fn a_lock_held_by_another_process_bounds_every_call() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = DbConfig {
        busy_timeout: Duration::from_millis(300),
        connection_timeout: Duration::from_secs(1),
        max_size: 4,
        ..DbConfig::default()
    };
    let bound = config.connection_timeout + config.busy_timeout + SLACK;
    let (registry, db) = registry_with(dir.path(), "held", config)?;
    create_table(&registry, &db)?;
    let mut peer = Command::new(PEER)
        .args(["hold", &dir.path().join("held.db").display().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(peer.stdout.take().expect("piped stdout")).read_line(&mut line)?;
    assert_eq!(line.trim(), "locked", "peer did not take the lock");

    let writers: Vec<_> = (0..4)
        .map(|i| {
            let (registry, db) = (registry.clone(), db.clone());
            std::thread::spawn(move || {
                (0..3)
                    .map(|j| {
                        let start = Instant::now();
                        let result = registry.write_with(&db, |tx| -> Result<(), Error> {
                            tx.execute("INSERT INTO t (v) VALUES (?1)", [i * 10 + j])
                                .map(drop)
                                .map_err(|e| panic!("insert after BEGIN IMMEDIATE failed: {e}"))
                        });
                        (start.elapsed(), result)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let start = Instant::now();
    let read = count(&registry, &db, "t");
    let read_took = start.elapsed();
    let start = Instant::now();
    let health = registry.health(Duration::from_millis(500));
    let health_took = start.elapsed();
    let mut outcomes = Vec::new();
    for w in writers {
        outcomes.extend(
            w.join()
                .map_err(|_| anyhow::anyhow!("writer thread panicked"))?,
        );
    }
    drop(peer.stdin.take());
    let status = wait_bounded(&mut peer, NO_HANG)?;
    assert!(status.is_some_and(|s| s.success()), "peer: {status:?}");

    for (took, result) in &outcomes {
        assert!(*took < bound, "a write took {took:?} (bound {bound:?})");
        match result {
            Err(e @ Error::Sqlite { .. }) => assert!(e.is_busy(), "{e:?}"),
            Err(Error::WriterLaneTimeout { .. }) => {}
            other => panic!("a write under another process's lock gave {other:?}"),
        }
    }
    // WAL readers are not blocked by a writer.
    assert_eq!(read?, 0);
    assert!(read_took < bound, "read took {read_took:?}");
    assert!(health_took < bound, "health took {health_took:?}");
    assert_ne!(health.status, HealthStatus::Healthy, "{health:#?}");
    // The first call after the release succeeds.
    registry.write(&db, |tx| {
        tx.execute("INSERT INTO t (v) VALUES (1)", [])?;
        Ok(())
    })?;
    assert_eq!(count(&registry, &db, "t")?, 1);
    Ok(())
}

/// A database with table `t (id INTEGER PRIMARY KEY, v BLOB)` and `rows` rows, no pool open.
fn blob_table(path: &Path, rows: i64) -> anyhow::Result<()> {
    let registry = Registry::new();
    let db = DbName::new("maker")?;
    registry.register(
        &db,
        path,
        DbConfig {
            create_if_missing: true,
            ..DbConfig::default()
        },
    )?;
    registry.write(&db, |tx| {
        tx.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")?;
        for _ in 0..rows {
            tx.execute("INSERT INTO t (v) VALUES (zeroblob(100))", [])?;
        }
        Ok(())
    })?;
    registry.close_all(Duration::from_secs(5));
    Ok(())
}

/// True for SQLite's "disk full" and "I/O error" families (primary codes 13 and 10), as an
/// error word of `fault-child`.
fn is_full_or_ioerr(word: &str) -> bool {
    let code = word
        .rsplit(':')
        .next()
        .and_then(|c| c.parse::<i32>().ok())
        .unwrap_or(-1);
    (word.starts_with("sqlite:") || word.starts_with("Sqlite:")) && matches!(code & 0xff, 10 | 13)
}

/// Runs `fault-child fill` under a 256 KiB soft file-size limit (SIGXFSZ ignored, so writes
/// past it fail with EFBIG), raises the soft limit to the (unlimited) hard one once the child
/// reports the failure, and returns its output.
fn fill_under_fsize_limit(path: &Path) -> anyhow::Result<String> {
    let mut child = Command::new("sh")
        .args([
            "-c",
            "trap '' XFSZ; exec prlimit --fsize=262144:unlimited -- \"$0\" fill \"$1\"",
            CHILD,
            &path.display().to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let pid = child.id();
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut out = String::new();
    let deadline = Instant::now() + NO_HANG;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            child.kill()?;
            child.wait()?;
            anyhow::bail!("fill child stopped or hung before waiting:\n{out}");
        };
        out.push_str(&line);
        out.push('\n');
        if line == "waiting" {
            break;
        }
    }
    let lifted = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), "--fsize=unlimited:unlimited"])
        .status()?;
    anyhow::ensure!(lifted.success(), "prlimit --pid failed");
    writeln!(child.stdin.take().expect("piped"), "go")?;
    let status = wait_bounded(&mut child, NO_HANG)?;
    out.extend(rx.try_iter().map(|l| l + "\n"));
    anyhow::ensure!(
        status.is_some_and(|s| s.success()),
        "fill child: {status:?}\n{out}"
    );
    Ok(out)
}

fn value<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or("")
}

/// Bug caught: a write that fails for lack of space leaving part of its work committed, losing
/// earlier commits, or leaving the pool unable to write once space returns (a connection
/// stuck in a failed transaction, a poisoned writer lane).
#[test]
fn a_file_size_limit_rolls_back_the_failed_write_and_writing_resumes() -> anyhow::Result<()> {
    if !have_tool("prlimit") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("full.db");
    blob_table(&path, 5)?;
    let out = fill_under_fsize_limit(&path)?;
    let committed: i64 = out
        .lines()
        .filter(|l| l.starts_with("committed "))
        .count()
        .try_into()?;
    assert!(committed > 0, "nothing fitted under the limit:\n{out}");
    let failed = value(&out, "failed");
    assert!(
        is_full_or_ioerr(failed),
        "failure was {failed:?}, not disk full / I/O error"
    );
    // The failed write rolled back; every earlier commit stayed.
    assert_eq!(value(&out, "rows").parse::<i64>()?, 5 + committed, "{out}");
    assert_eq!(value(&out, "after"), "ok", "no write once space returned");
    assert_eq!(value(&out, "rows-after").parse::<i64>()?, 6 + committed);
    // And the file is sound for another process.
    let registry = Registry::new();
    let db = DbName::new("check")?;
    registry.register(&db, &path, DbConfig::default())?;
    let integrity: String = registry.read(&db, |c| {
        c.query_row("PRAGMA integrity_check", [], |r| r.get(0))
    })?;
    assert_eq!(integrity, "ok");
    assert_eq!(count(&registry, &db, "t")?, 6 + committed);
    Ok(())
}

/// Bug caught: `health` reporting Healthy for a database whose writes cannot commit.
#[test]
fn health_is_not_healthy_after_commits_fail() -> anyhow::Result<()> {
    if !have_tool("prlimit") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("full.db");
    blob_table(&path, 5)?;
    let out = fill_under_fsize_limit(&path)?;
    assert_ne!(value(&out, "health"), "Healthy", "{out}");
    Ok(())
}

/// Bug caught: `max_page_count` reached (SQLITE_FULL) leaving part of the failed closure's
/// work in the database, losing earlier commits, or a pool that cannot write again once the
/// limit is gone.
#[test]
fn max_page_count_full_rolls_back_and_writing_resumes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = DbConfig {
        max_size: 1,
        min_idle: 1,
        ..DbConfig::default()
    };
    let (registry, db) = registry_with(dir.path(), "pages", config)?;
    registry.write(&db, |tx| {
        tx.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB); CREATE TABLE marks (v INTEGER);",
        )?;
        Ok(())
    })?;
    // `max_page_count` is a session setting: set inside each write, it lasts as long as that
    // write's connection, which is closed (not pooled) once its batch ends.
    let insert = |registry: &Registry, max_pages: Option<i64>| {
        registry.write(&db, |tx| {
            if let Some(pages) = max_pages {
                tx.execute_batch(&format!("PRAGMA max_page_count = {pages}"))?;
            }
            tx.execute("INSERT INTO marks VALUES (1)", [])?;
            tx.execute("INSERT INTO t (v) VALUES (zeroblob(16384))", [])?;
            Ok(())
        })
    };
    for _ in 0..3 {
        insert(&registry, None)?;
    }
    let pages: i64 = registry.read(&db, |c| c.query_row("PRAGMA page_count", [], |r| r.get(0)))?;
    let mut committed = 3;
    let err = loop {
        match insert(&registry, Some(pages + 6)) {
            Ok(()) => committed += 1,
            Err(e) => break anyhow::Error::from(e),
        }
        assert!(committed < 100, "max_page_count was never reached");
    };
    let code = err
        .chain()
        .find_map(|e| match e.downcast_ref::<rusqlite::Error>() {
            Some(rusqlite::Error::SqliteFailure(f, _)) => Some(f.extended_code),
            _ => e.downcast_ref::<Error>().and_then(Error::sqlite_code),
        });
    assert_eq!(code.map(|c| c & 0xff), Some(13), "not SQLITE_FULL: {err:#}");
    // The failed closure's first insert rolled back with its second.
    assert_eq!(count(&registry, &db, "marks")?, committed);
    assert_eq!(count(&registry, &db, "t")?, committed);
    // Without the limit, writing works again.
    insert(&registry, None)?;
    assert_eq!(count(&registry, &db, "t")?, committed + 1);
    Ok(())
}

/// Bug caught: running out of file descriptors panicking, hanging or giving an untyped error
/// when a database is registered, or breaking the connections a pool already has.
#[test]
fn no_file_descriptors_left_is_a_typed_error_and_open_pools_keep_working() -> anyhow::Result<()> {
    if !have_tool("prlimit") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let out = run_bounded(
        Command::new("prlimit").args([
            "--nofile=64:64",
            "--",
            CHILD,
            "nofile",
            &dir.path().join("good.db").display().to_string(),
            &dir.path().join("new.db").display().to_string(),
        ]),
        NO_HANG,
    )?;
    assert!(out.success(), "{out:?}");
    assert!(out.value("hoarded").parse::<u32>()? > 0);
    let new = out.value("new");
    assert!(
        new.starts_with("Io:") || new.starts_with("Open:") || new.starts_with("Sqlite:"),
        "registering without descriptors gave {new:?}"
    );
    assert_eq!(out.value("good"), "ok", "{out:?}");
    assert_eq!(out.value("new-after"), "ok", "{out:?}");
    Ok(())
}

/// The set-up for the permission tests: a world-readable temporary folder holding a copy of
/// `fault-child` and databases owned by root. Returns `None` (with the reason printed) when
/// not running as root.
fn as_nobody_setup() -> anyhow::Result<Option<(tempfile::TempDir, PathBuf)>> {
    let uid = Command::new("id").arg("-u").output()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        eprintln!("skipped: dropping privileges needs root (the CI runs as root)");
        return Ok(None);
    }
    if !have_tool("setpriv") {
        return Ok(None);
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    let mode = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
    mode(dir.path(), 0o755)?;
    let bin = dir.path().join("fault-child");
    std::fs::copy(CHILD, &bin)?;
    mode(&bin, 0o755)?;
    for (folder, folder_mode, file_mode) in [
        ("locked", 0o700, 0o600),
        ("ro", 0o755, 0o644),
        ("sharedro", 0o755, 0o666),
        ("noaccess", 0o755, 0o000),
        ("writeonly", 0o755, 0o200),
        ("walblocked", 0o777, 0o666),
    ] {
        let folder = dir.path().join(folder);
        let made = run_bounded(
            Command::new(CHILD).args(["create", &folder.join("x.db").display().to_string()]),
            NO_HANG,
        )?;
        anyhow::ensure!(made.success(), "{made:?}");
        mode(&folder, folder_mode)?;
        mode(&folder.join("x.db"), file_mode)?;
    }
    Ok(Some((dir, bin)))
}

/// Runs the copy of `fault-child` at `bin` with `args` as user and group 65534 (nobody).
fn as_nobody(bin: &Path, args: &[&str]) -> anyhow::Result<hive_tests::ChildOutcome> {
    let bin = bin.display().to_string();
    let out = run_bounded(
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
                &bin,
            ])
            .args(args),
        NO_HANG,
    )?;
    anyhow::ensure!(out.success(), "{out:?}");
    Ok(out)
}

/// Runs `fault-child perm` as nobody; returns `(result word, ms)`.
fn perm_as_nobody(bin: &Path, path: &Path, create: bool) -> anyhow::Result<(String, u64)> {
    let path = path.display().to_string();
    let out = as_nobody(
        bin,
        &["perm", &path, if create { "create" } else { "open" }],
    )?;
    Ok((out.value("result").to_owned(), out.value("ms").parse()?))
}

/// Bug caught: as a user without the rights, registering waits (a busy loop on EACCES),
/// panics, returns an untyped or misleading error, or creates files or folders anywhere on
/// the way to failing. (Run as nobody: root ignores permission bits, so `chmod` alone proves
/// nothing.)
#[test]
fn permission_denied_fails_fast_typed_and_creates_nothing() -> anyhow::Result<()> {
    let Some((dir, bin)) = as_nobody_setup()? else {
        return Ok(());
    };
    let root = dir.path();
    let before = tree(root)?;
    let cases: [(&str, bool, &[&str]); 5] = [
        ("locked/x.db", false, &["Open:PermissionDenied"]),
        ("locked/new.db", true, &["Open:PermissionDenied"]),
        (
            "ro/x.db",
            false,
            &["Open:ReadOnly", "Open:PermissionDenied"],
        ),
        (
            "ro/new.db",
            true,
            &["Io:create file:PermissionDenied", "Open:PermissionDenied"],
        ),
        (
            "ro/sub/deeper/new.db",
            true,
            &["Io:create folder:PermissionDenied", "Open:PermissionDenied"],
        ),
    ];
    for (path, create, expected) in cases {
        let (result, ms) = perm_as_nobody(&bin, &root.join(path), create)?;
        assert!(
            expected.contains(&result.as_str()),
            "{path}: {result} (expected one of {expected:?})"
        );
        assert!(ms < 5_000, "{path}: failing took {ms} ms");
    }
    assert_eq!(
        tree(root)?,
        before,
        "files created by refused registrations"
    );
    Ok(())
}

/// Bug caught: a database file the user may write in a folder it may not (so no `-wal` or
/// `-shm` can be created) accepted at register, after which every write fails with
/// SQLITE_READONLY_DIRECTORY.
#[test]
fn a_database_in_a_read_only_folder_is_refused_at_register() -> anyhow::Result<()> {
    let Some((dir, bin)) = as_nobody_setup()? else {
        return Ok(());
    };
    let (result, _) = perm_as_nobody(&bin, &dir.path().join("sharedro/x.db"), false)?;
    assert!(
        result.starts_with("Open:"),
        "a database whose folder is read-only gave {result} (register should refuse it)"
    );
    Ok(())
}

/// Bug caught: a database file the user may not read (mode 0000, or 0200: write-only), or a
/// `-wal` next to it that it may not open, refused as `Open { CannotOpen }` (SQLite's "unable
/// to open database file") instead of with the operating system's cause, permission denied;
/// or the error not naming the database and the file.
#[test]
fn an_unreadable_database_file_is_permission_denied_at_register() -> anyhow::Result<()> {
    let Some((dir, bin)) = as_nobody_setup()? else {
        return Ok(());
    };
    use std::os::unix::fs::PermissionsExt;
    let wal = dir.path().join("walblocked/x.db-wal");
    std::fs::write(&wal, b"")?;
    std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o000))?;
    for (folder, names) in [
        ("noaccess", "x.db"),
        ("writeonly", "x.db"),
        ("walblocked", "x.db-wal"),
    ] {
        let path = std::fs::canonicalize(dir.path().join(folder).join("x.db"))?;
        let out = as_nobody(&bin, &["perm", &path.display().to_string(), "open"])?;
        assert_eq!(
            out.value("result"),
            "Open:PermissionDenied",
            "{folder}: {out:?}"
        );
        assert_eq!(out.value("error-db"), "perm", "{folder}: {out:?}");
        let message = out.value("error");
        assert!(
            message.contains(&path.display().to_string()) && message.contains(names),
            "{folder}: {message}"
        );
    }
    Ok(())
}

/// Bug caught: when the database file's mode changes under a live pool so that this user may
/// no longer open it, a checkout that must open a new connection waits out its timeout, or
/// fails as `Open { CannotOpen }` instead of naming the database, the file and permission
/// denied; or the refusal spoils the connection already open, or the pool once the mode is
/// back.
#[test]
fn a_file_made_unreadable_under_a_live_pool_is_permission_denied_at_the_next_open()
-> anyhow::Result<()> {
    let Some((dir, bin)) = as_nobody_setup()? else {
        return Ok(());
    };
    // A folder of nobody's own, where its child makes and chmods its database.
    let own = dir.path().join("own");
    std::fs::create_dir(&own)?;
    std::os::unix::fs::chown(&own, Some(65534), Some(65534))?;
    let path = own.join("x.db");
    let out = as_nobody(&bin, &["perm-live", &path.display().to_string()])?;
    assert_eq!(out.value("second"), "Open:PermissionDenied", "{out:?}");
    assert_eq!(out.value("second-error-db"), "live", "{out:?}");
    let message = out.value("second-error");
    assert!(message.contains(&path.display().to_string()), "{message}");
    // Refused at the first failed open, not at the 2 s connection timeout.
    assert!(out.value("second-ms").parse::<u64>()? < 1_500, "{out:?}");
    assert_eq!(out.value("held"), "ok", "{out:?}");
    assert_eq!(out.value("after"), "ok", "{out:?}");
    Ok(())
}

/// Bug caught: a panicking `write` closure leaving its rows behind, a transaction open on a
/// pooled connection, a connection leaked out of the pool, or the writer lane held, so that
/// after enough panics the pool has no capacity left; and a panic in one writer of a group
/// commit undoing another's work.
#[test]
fn a_thousand_panics_inside_write_roll_back_and_leave_capacity_intact() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = DbConfig {
        max_size: 3,
        min_idle: 1,
        connection_timeout: Duration::from_secs(5),
        ..DbConfig::default()
    };
    let (registry, db) = registry_with(dir.path(), "panics", config)?;
    registry.write_with(&db, |tx| -> anyhow::Result<_> {
        tx.execute_batch("CREATE TABLE lost (v INTEGER); CREATE TABLE kept (v INTEGER);")?;
        Ok(())
    })?;
    let panics = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let (registry, db, panics) = (registry.clone(), db.clone(), Arc::clone(&panics));
            std::thread::spawn(move || -> anyhow::Result<()> {
                for i in 0..500 {
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        registry.write(&db, |tx| -> hive_db_core::rusqlite::Result<()> {
                            tx.execute("INSERT INTO lost VALUES (?1)", [t * 1000 + i])?;
                            panic!("injected panic {t} {i}");
                        })
                    }));
                    anyhow::ensure!(result.is_err(), "the panic did not propagate");
                    panics.fetch_add(1, Ordering::Relaxed);
                    // A writer that may share a batch with the next panicking one.
                    registry.write(&db, |tx| {
                        tx.execute("INSERT INTO kept VALUES (?1)", [t * 1000 + i])?;
                        Ok(())
                    })?;
                }
                Ok(())
            })
        })
        .collect();
    // Silence 1,000 panic messages; restore the hook afterwards.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let joined: Vec<_> = threads.into_iter().map(|t| t.join()).collect();
    std::panic::set_hook(hook);
    for j in joined {
        j.map_err(|_| anyhow::anyhow!("a writer thread panicked outside write"))??;
    }
    assert_eq!(panics.load(Ordering::Relaxed), 1000);
    assert_eq!(
        count(&registry, &db, "lost")?,
        0,
        "a panicked write committed"
    );
    assert_eq!(
        count(&registry, &db, "kept")?,
        1000,
        "a good write was lost"
    );
    // Every connection can be checked out at once, each outside a transaction.
    let held: Vec<_> = (0..3)
        .map(|_| registry.get(&db))
        .collect::<Result<_, _>>()?;
    for conn in &held {
        assert!(
            conn.is_autocommit(),
            "a connection came back mid-transaction"
        );
    }
    drop(held);
    let stats = registry.db_stats(&db)?;
    assert!(stats.totals.rollbacks >= 1000, "{:?}", stats.totals);
    registry.write(&db, |tx| {
        tx.execute("INSERT INTO kept VALUES (-1)", [])?;
        Ok(())
    })?;
    Ok(())
}

/// What a closure calls back into the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Read,
    Write,
    Get,
}

/// One nested call: `inner` on `target` from inside `outer` on `a`, with pools of `size`.
#[derive(Debug, Clone, Copy)]
struct Nested {
    outer: Call,
    inner: Call,
    same_db: bool,
    size: u32,
}

impl Nested {
    fn all() -> Vec<Self> {
        let mut cases = Vec::new();
        for outer in [Call::Read, Call::Write] {
            for inner in [Call::Read, Call::Write, Call::Get] {
                for same_db in [true, false] {
                    for size in [1, 4] {
                        cases.push(Self {
                            outer,
                            inner,
                            same_db,
                            size,
                        });
                    }
                }
            }
        }
        cases
    }

    /// True when the inner call cannot be served while the outer one runs: another lane turn
    /// on the same database, or another connection from a pool of one.
    fn cannot_work(self) -> bool {
        self.same_db && (self.size == 1 || (self.outer == Call::Write && self.inner == Call::Write))
    }
}

fn call(registry: &Registry, db: &DbName, what: Call) -> Result<(), Error> {
    match what {
        Call::Read => registry.read(db, |c| {
            c.query_row("SELECT 1", [], |_| Ok(()))
                .map_err(|e| panic!("{e}"))
        }),
        Call::Write => registry.write(db, |tx| {
            tx.execute("INSERT INTO t (v) VALUES (2)", [])
                .map(drop)
                .map_err(|e| panic!("{e}"))
        }),
        Call::Get => registry.get(db).map(drop),
    }
}

/// Runs one nested case on a fresh registry; returns the inner result and the time the
/// whole outer call took, or `None` if it hung past `bound`.
fn run_nested(
    case: Nested,
    config: &DbConfig,
    bound: Duration,
) -> anyhow::Result<Option<(Result<(), Error>, Duration)>> {
    let dir = tempfile::tempdir()?;
    let registry = Registry::new();
    let (a, b) = (DbName::new("a")?, DbName::new("b")?);
    for db in [&a, &b] {
        registry.register(
            db,
            dir.path().join(format!("{db}.db")),
            DbConfig {
                max_size: case.size,
                min_idle: 1,
                create_if_missing: true,
                ..config.clone()
            },
        )?;
        create_table(&registry, db)?;
    }
    let target = if case.same_db { a.clone() } else { b.clone() };
    let (r, db) = (registry.clone(), a.clone());
    let outcome = within(bound, move || {
        let start = Instant::now();
        let mut inner = None;
        let outer = match case.outer {
            Call::Read => r.read_with(&db, |_| -> Result<(), Error> {
                inner = Some(call(&r, &target, case.inner));
                Ok(())
            }),
            Call::Write => r.write_with(&db, |_| -> Result<(), Error> {
                inner = Some(call(&r, &target, case.inner));
                Ok(())
            }),
            Call::Get => r.get(&db).map(|_held| {
                inner = Some(call(&r, &target, case.inner));
            }),
        };
        (outer, inner, start.elapsed())
    });
    let Some(outcome) = outcome else {
        return Ok(None);
    };
    let (outer, inner, took) =
        outcome.map_err(|_| anyhow::anyhow!("{case:?}: the nested call panicked"))?;
    outer.map_err(|e| anyhow::anyhow!("{case:?}: the outer call failed: {e}"))?;
    let inner = inner.ok_or_else(|| anyhow::anyhow!("{case:?}: closure did not run"))?;
    // Nothing was left stuck: both databases still read and write.
    for db in [&a, &b] {
        call(&registry, db, Call::Write)?;
        call(&registry, db, Call::Read)?;
    }
    Ok(Some((inner, took)))
}

/// Bug caught: a call from inside a `read` or `write` closure back into the registry (same
/// database or another, pools of one and of four) that hangs (a self-deadlock on the writer
/// lane or the pool), panics, or leaves the lane or a connection stuck afterwards; or one
/// that could be served (another database, a free connection) failing.
#[test]
fn calls_back_into_the_registry_from_a_closure_never_hang() -> anyhow::Result<()> {
    let config = DbConfig {
        connection_timeout: Duration::from_secs(1),
        busy_timeout: Duration::from_secs(1),
        ..DbConfig::default()
    };
    let bound = config.connection_timeout + config.busy_timeout + SLACK;
    let cases = Nested::all();
    // Two at a time: most of the cases that cannot work wait out a timeout.
    for pair in cases.chunks(2) {
        let runs: Vec<_> = pair
            .iter()
            .map(|&case| {
                let config = config.clone();
                (
                    case,
                    std::thread::spawn(move || run_nested(case, &config, bound)),
                )
            })
            .collect();
        for (case, run) in runs {
            let result = run
                .join()
                .map_err(|_| anyhow::anyhow!("{case:?}: panicked"))??;
            let Some((inner, took)) = result else {
                panic!("{case:?}: hung past {bound:?}");
            };
            assert!(took < bound, "{case:?}: took {took:?}");
            if case.cannot_work() {
                assert!(
                    matches!(inner, Err(Error::Reentrant { .. })),
                    "{case:?}: {inner:?}"
                );
            } else {
                assert!(inner.is_ok(), "{case:?}: {inner:?}");
            }
        }
    }
    Ok(())
}

/// Bug caught: a nested call that cannot work waiting out the whole connection timeout and
/// then reporting a plain timeout, instead of failing at once with an error that says the
/// call was made from inside a closure of the same database, and which kind of wait it was
/// (the writer lane for a write inside a write, else every connection held).
#[test]
fn calls_back_into_the_registry_that_cannot_work_fail_fast_and_say_why() -> anyhow::Result<()> {
    let config = DbConfig {
        connection_timeout: Duration::from_secs(30),
        busy_timeout: Duration::from_secs(1),
        ..DbConfig::default()
    };
    for case in Nested::all().into_iter().filter(|c| c.cannot_work()) {
        let fast = Duration::from_secs(5);
        let Some((inner, took)) = run_nested(case, &config, fast)? else {
            panic!("{case:?}: still waiting after {fast:?}");
        };
        assert!(took < fast, "{case:?}: took {took:?}");
        let expected = if case.outer == Call::Write && case.inner == Call::Write {
            Reentry::Write
        } else {
            Reentry::Connection
        };
        assert!(
            matches!(&inner, Err(Error::Reentrant { call, .. }) if *call == expected),
            "{case:?}: {inner:?}"
        );
    }
    Ok(())
}

/// Every `DbConfig` field, by the name `fault-child config` takes.
const FIELDS: [&str; 14] = [
    "max_size",
    "min_idle",
    "connection_timeout",
    "busy_timeout",
    "validate_after_idle",
    "max_lifetime",
    "idle_timeout",
    "leak_threshold",
    "create_if_missing",
    "synchronous",
    "cache_size_kib",
    "foreign_keys",
    "group_commit_max_writers",
    "group_commit_max_age",
];

/// Every numeric `HIVE_DB_*` variable with the field it sets, and the largest value of its
/// type.
const VARS: [(&str, &str, &str); 11] = [
    ("HIVE_DB_MAX_CONNECTIONS", "max_size", "4294967295"),
    ("HIVE_DB_MIN_IDLE", "min_idle", "4294967295"),
    ("HIVE_DB_CACHE_SIZE_KIB", "cache_size_kib", "4294967295"),
    (
        "HIVE_DB_GROUP_COMMIT_MAX_WRITERS",
        "group_commit_max_writers",
        "4294967295",
    ),
    (
        "HIVE_DB_CONNECTION_TIMEOUT_MS",
        "connection_timeout",
        "18446744073709551615",
    ),
    (
        "HIVE_DB_BUSY_TIMEOUT_MS",
        "busy_timeout",
        "18446744073709551615",
    ),
    (
        "HIVE_DB_VALIDATE_AFTER_IDLE_MS",
        "validate_after_idle",
        "18446744073709551615",
    ),
    (
        "HIVE_DB_MAX_LIFETIME_MS",
        "max_lifetime",
        "18446744073709551615",
    ),
    (
        "HIVE_DB_IDLE_TIMEOUT_MS",
        "idle_timeout",
        "18446744073709551615",
    ),
    (
        "HIVE_DB_LEAK_THRESHOLD_MS",
        "leak_threshold",
        "18446744073709551615",
    ),
    (
        "HIVE_DB_GROUP_COMMIT_MAX_AGE_MS",
        "group_commit_max_age",
        "18446744073709551615",
    ),
];

/// The extreme settings that panic or abort today (see docs/RELIABILITY.md's findings):
/// `(field or variable, value)`.
const EXTREMES_THAT_FAIL: [(&str, &str); 5] = [
    ("max_size", "max"),
    ("HIVE_DB_MAX_CONNECTIONS", "4294967295"),
    ("connection_timeout", "max"),
    ("max_lifetime", "zero"),
    ("idle_timeout", "zero"),
];

/// One extreme case: its arguments to `fault-child` and the field it is about.
fn extreme_cases() -> Vec<(Vec<String>, &'static str)> {
    let mut cases = Vec::new();
    for field in FIELDS {
        for extreme in ["zero", "max"] {
            cases.push((vec!["config".into(), field.into(), extreme.into()], field));
        }
    }
    for (var, field, max) in VARS {
        for value in ["0", max] {
            cases.push((vec!["env".into(), var.into(), value.into()], field));
        }
    }
    cases
}

/// A case's `fault-child` arguments and what came of it.
type Verdict = (Vec<String>, Result<(), String>);

/// Runs the cases in children, four at a time; returns `(args, field, verdict)` where the
/// verdict is `Ok` when the setting was accepted and worked or was refused naming its field.
fn judge_extremes(cases: Vec<(Vec<String>, &'static str)>) -> anyhow::Result<Vec<Verdict>> {
    let mut verdicts = Vec::new();
    for chunk in cases.chunks(4) {
        let runs: Vec<_> = chunk
            .iter()
            .cloned()
            .map(|(args, field)| {
                std::thread::spawn(move || -> anyhow::Result<_> {
                    let dir = tempfile::tempdir()?;
                    let out = run_bounded(
                        Command::new(CHILD)
                            .args(&args)
                            .arg(dir.path())
                            .env("RUST_BACKTRACE", "0"),
                        NO_HANG,
                    )?;
                    let register = out.value("register");
                    let reason = out.value("reason");
                    let verdict = if !out.success() {
                        Err(format!(
                            "child ended with {:?}: {}",
                            out.status,
                            out.stderr.lines().take(3).collect::<Vec<_>>().join(" | ")
                        ))
                    } else if register == "ok" {
                        let words = [out.value("use"), out.value("health"), out.value("close")];
                        if words == ["ok", "Healthy", "ok"] {
                            Ok(())
                        } else {
                            Err(format!("accepted, then use/health/close gave {words:?}"))
                        }
                    } else if (register == "InvalidConfig" || register.starts_with("InvalidEnv"))
                        && (reason.contains(field) || register.contains(&args[1]))
                    {
                        Ok(())
                    } else {
                        Err(format!(
                            "refused as {register} ({reason}), not naming {field}"
                        ))
                    };
                    Ok((args, verdict))
                })
            })
            .collect();
        for run in runs {
            verdicts.push(run.join().map_err(|_| anyhow::anyhow!("panicked"))??);
        }
    }
    Ok(verdicts)
}

fn known_failure(args: &[String]) -> bool {
    EXTREMES_THAT_FAIL
        .iter()
        .any(|(what, value)| args[1] == *what && args[2] == *value)
}

/// Bug caught: a `DbConfig` field or `HIVE_DB_*` value at zero or at its type's largest value
/// that panics (`Instant` overflow, an r2d2 assertion), aborts (a capacity-sized allocation),
/// hangs, or is refused without naming the field; each runs in its own child process so an
/// abort is caught. The settings in `EXTREMES_THAT_FAIL` are left to the ignored test below.
#[test]
fn every_setting_at_its_extremes_works_or_is_refused_by_name() -> anyhow::Result<()> {
    let cases = extreme_cases()
        .into_iter()
        .filter(|(args, _)| !known_failure(args))
        .collect();
    let failures: Vec<_> = judge_extremes(cases)?
        .into_iter()
        .filter_map(|(args, v)| v.err().map(|e| format!("{}: {e}", args.join(" "))))
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
    Ok(())
}

/// Bug caught: as above, for the settings that panic or abort today.
#[test]
fn settings_that_panic_or_abort_today_are_refused_by_name() -> anyhow::Result<()> {
    let cases = extreme_cases()
        .into_iter()
        .filter(|(args, _)| known_failure(args))
        .collect();
    let failures: Vec<_> = judge_extremes(cases)?
        .into_iter()
        .filter_map(|(args, v)| v.err().map(|e| format!("{}: {e}", args.join(" "))))
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
    Ok(())
}

/// Runs `fault-child timeouts`; returns its output.
fn timeouts_child() -> anyhow::Result<hive_tests::ChildOutcome> {
    let dir = tempfile::tempdir()?;
    let out = run_bounded(
        Command::new(CHILD)
            .args(["timeouts"])
            .arg(dir.path())
            .env("RUST_BACKTRACE", "0"),
        NO_HANG,
    )?;
    anyhow::ensure!(out.success(), "{out:?}");
    Ok(out)
}

/// Bug caught: a zero timeout argument (`health`, `close`, `close_all`) that panics, hangs or
/// divides by zero.
#[test]
fn zero_timeout_arguments_work() -> anyhow::Result<()> {
    let out = timeouts_child()?;
    for call in ["health-zero", "close-zero", "close_all-zero"] {
        assert_eq!(out.value(call), "ok", "{call}: {out:?}");
    }
    Ok(())
}

/// Bug caught: a `HIVE_DB_*` value that is not UTF-8 taken for a variable not set, the
/// default silently standing in for it (`std::env::var(..).ok()`); it must be `InvalidEnv`
/// naming the variable, as any value that does not parse.
#[test]
fn an_env_value_that_is_not_utf8_is_refused_by_name() -> anyhow::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let run = |value: &std::ffi::OsStr| {
        run_bounded(
            Command::new(CHILD)
                .arg("from-env")
                .env("HIVE_DB_MAX_CONNECTIONS", value),
            NO_HANG,
        )
    };
    let out = run(std::ffi::OsStr::from_bytes(b"\xff7"))?;
    assert!(out.success(), "{out:?}");
    assert_eq!(
        out.value("from-env"),
        "InvalidEnv:HIVE_DB_MAX_CONNECTIONS",
        "{out:?}"
    );
    // The same variable, readable: taken.
    let out = run(std::ffi::OsStr::new("7"))?;
    assert_eq!(out.value("from-env"), "ok max_size 7", "{out:?}");
    Ok(())
}

/// Bug caught: a `Duration::MAX` timeout argument panicking on `Instant + timeout` instead of
/// meaning "no deadline" (or being clamped).
#[test]
fn largest_timeout_arguments_work() -> anyhow::Result<()> {
    let out = timeouts_child()?;
    for call in ["health-max", "close-max", "close_all-max"] {
        assert_eq!(out.value(call), "ok", "{call}: {out:?}");
    }
    Ok(())
}

/// Bug caught: SQLite running out of memory (its hard heap limit) inside a `write` leaving
/// part of the closure's work committed, breaking the pool's connection or writer lane, or
/// crashing the process; the pool must be usable right after.
#[test]
fn sqlite_out_of_memory_rolls_back_and_the_pool_stays_usable() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // `hard_heap_limit` is process-wide: in a child, so no other test shares it.
    let out = run_bounded(
        Command::new(CHILD)
            .args(["oom", &dir.path().join("oom.db").display().to_string()])
            .env("RUST_BACKTRACE", "0"),
        NO_HANG,
    )?;
    assert!(out.success(), "{out:?}");
    let failed = out.value("failed");
    assert!(
        failed.rsplit(':').next() == Some("7"),
        "not SQLITE_NOMEM: {failed:?}"
    );
    assert_eq!(out.value("after"), "ok", "{out:?}");
    // Only the small write's row: the failed closure's first insert rolled back too.
    assert_eq!(out.value("rows"), "1", "{out:?}");
    assert_eq!(out.value("health"), "Healthy", "{out:?}");
    Ok(())
}

/// Databases for the many-databases health test: `HIVE_HEALTH_DATABASES`, default 250
/// (registering costs a few syncs each; 1,000 take about 20 s here).
fn many_databases() -> usize {
    std::env::var("HIVE_HEALTH_DATABASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(250)
}

/// Runs `fault-child many`; returns its output and the number of databases.
fn health_over_many() -> anyhow::Result<(hive_tests::ChildOutcome, usize)> {
    let dir = tempfile::tempdir()?;
    let n = many_databases();
    let out = run_bounded(
        Command::new(CHILD)
            .args(["many", &n.to_string()])
            .arg(dir.path()),
        Duration::from_secs(300),
    )?;
    anyhow::ensure!(out.success(), "{out:?}");
    Ok((out, n))
}

/// Bug caught: `health` over many databases running past its timeout (checks run one after
/// another, or a report that waits for the slowest), or reporting healthy databases as not.
#[test]
fn health_over_many_databases_returns_within_its_timeout() -> anyhow::Result<()> {
    let (out, n) = health_over_many()?;
    let took = Duration::from_millis(out.value("health-ms").parse()?);
    // The child's timeout is 10 s; the report adds a 200 ms grace.
    assert!(
        took < Duration::from_secs(10) + SLACK,
        "health took {took:?}"
    );
    assert_eq!(out.value("status"), "Healthy", "{out:?}");
    assert_eq!(out.value("healthy"), n.to_string(), "{out:?}");
    Ok(())
}

/// Bug caught: `health` starting one thread per database, so a host with thousands of
/// databases spawns thousands of threads every check.
#[test]
fn health_over_many_databases_uses_a_bounded_number_of_threads() -> anyhow::Result<()> {
    let (out, _) = health_over_many()?;
    let before: usize = out.value("threads-before").parse()?;
    let peak: usize = out.value("threads-peak").parse()?;
    assert!(
        peak.saturating_sub(before) <= 64,
        "health ran {} threads at once",
        peak.saturating_sub(before)
    );
    Ok(())
}
