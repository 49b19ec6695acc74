//! Shared helpers: a registry with one database in a temporary folder.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hive_db_core::rusqlite::Connection;
use hive_db_core::{DbConfig, DbName, Registry};

pub(crate) type TestResult = anyhow::Result<()>;

pub(crate) struct Fixture {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) registry: Registry,
    pub(crate) name: DbName,
}

impl Fixture {
    pub(crate) fn path(&self) -> PathBuf {
        self.dir.path().join(format!("{}.db", self.name))
    }
}

/// A config that creates its file, with short timeouts so failing tests fail fast.
pub(crate) fn config() -> DbConfig {
    DbConfig {
        create_if_missing: true,
        connection_timeout: Duration::from_secs(5),
        ..DbConfig::default()
    }
}

pub(crate) fn fixture(name: &str, config: DbConfig) -> anyhow::Result<Fixture> {
    let dir = tempfile::tempdir()?;
    let registry = Registry::new();
    let name = DbName::new(name)?;
    registry.register(&name, dir.path().join(format!("{name}.db")), config)?;
    Ok(Fixture {
        dir,
        registry,
        name,
    })
}

/// Creates `t(id INTEGER PRIMARY KEY, v INTEGER)`.
pub(crate) fn create_table(f: &Fixture) -> TestResult {
    f.registry.write(&f.name, |tx| {
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)",
        )
    })?;
    Ok(())
}

pub(crate) fn count_rows(f: &Fixture) -> anyhow::Result<i64> {
    Ok(f.registry.read(&f.name, |c| {
        c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
    })?)
}

/// Polls `cond` until it holds or `limit` passes; background work (r2d2 replenishing idle
/// connections) is asynchronous, so exact counts are checked once it settles.
pub(crate) fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Open file descriptors of this process that point into `dir` (Linux `/proc/self/fd`).
pub(crate) fn open_fds_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    entries
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

/// A connection's identity: where its `rusqlite::Connection` lives, which stays put for the
/// connection's life (the pool boxes it) and differs between connections alive at once. Not a
/// temporary table: that changes the session, and the connection would be closed on return.
pub(crate) fn connection_id(conn: &Connection) -> usize {
    std::ptr::from_ref(conn).addr()
}

/// A registry of one database `x.db` in `dir` with three rows in `t`.
pub(crate) fn three_rows(dir: &Path, config: DbConfig) -> anyhow::Result<(Registry, DbName)> {
    let registry = Registry::new();
    let name = DbName::new("x")?;
    registry.register(&name, dir.join("x.db"), config)?;
    registry.write(&name, |tx| {
        tx.execute_batch("CREATE TABLE t (v INTEGER); INSERT INTO t VALUES (1), (2), (3);")
    })?;
    Ok((registry, name))
}

/// The WAL's frames and how many of them are checkpointed, by a `TRUNCATE` checkpoint from
/// a connection of its own that waits for no lock: `(0, 0)` once it has copied everything
/// and started the WAL again, which no read transaction of any connection may be holding up.
pub(crate) fn truncate_checkpoint(f: &Fixture) -> anyhow::Result<(i64, i64, i64)> {
    let conn = hive_db_core::open_connection(&f.name, &f.path(), &config())?;
    conn.busy_timeout(Duration::ZERO)?;
    Ok(conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })?)
}

/// Replaces `dir/x.db` (renamed over) with a database whose `t` holds one row, made with
/// `pragmas` first (`PRAGMA journal_mode = WAL;`: a connection opening it at that path then
/// reads the old database's `-wal` as its own).
pub(crate) fn replace_with_one_row(dir: &std::path::Path, pragmas: &str) -> TestResult {
    let other = dir.join("other.db");
    let conn = hive_db_core::rusqlite::Connection::open(&other)?;
    conn.execute_batch(&format!(
        "{pragmas} CREATE TABLE t (v INTEGER); INSERT INTO t VALUES (42);"
    ))?;
    drop(conn);
    std::fs::rename(&other, dir.join("x.db"))?;
    Ok(())
}

/// Fails unless the file now at `dir/x.db` (the replacement) still holds its one row.
pub(crate) fn replacement_kept(dir: &std::path::Path) -> TestResult {
    let conn = hive_db_core::rusqlite::Connection::open(dir.join("x.db"))?;
    let rows: i64 = conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?;
    assert_eq!(rows, 1, "the replacement took on the old database's WAL");
    Ok(())
}

/// The rows of `t`.
pub(crate) fn count_t(
    c: &hive_db_core::rusqlite::Connection,
) -> hive_db_core::rusqlite::Result<i64> {
    c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
}

/// Sets `stop` and joins `threads`: the first error any of them returned, or a panic.
pub(crate) fn stop_and_join(
    stop: &std::sync::atomic::AtomicBool,
    threads: Vec<std::thread::JoinHandle<TestResult>>,
) -> TestResult {
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("a reading thread panicked"))??;
    }
    Ok(())
}

/// Bug caught: an identity that is not kept by the connection (so every checkout looks new)
/// or shared between connections (so two look the same), which would blind the tests that
/// check a connection is never handed out twice.
#[test]
fn connection_ids_follow_the_connection() -> TestResult {
    let f = fixture(
        "ids",
        DbConfig {
            max_size: 2,
            ..config()
        },
    )?;
    let (a, b) = (f.registry.get(&f.name)?, f.registry.get(&f.name)?);
    let (id_a, id_b) = (connection_id(&a), connection_id(&b));
    assert_ne!(id_a, id_b, "two connections look the same");
    // The guard moves; the connection, and so its identity, does not.
    let moved = a;
    assert_eq!(
        connection_id(&moved),
        id_a,
        "the same connection changed identity"
    );
    drop((moved, b));
    let again = f.registry.get(&f.name)?;
    assert!(
        [id_a, id_b].contains(&connection_id(&again)),
        "a pooled connection came back with another identity"
    );
    Ok(())
}
