//! Shared helpers: a registry with one database in a temporary folder.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hive_db_core::rusqlite::{self, Connection};
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

/// A connection's identity: the row of a temp table it carries for life, made on first use
/// with the id `fresh` gives.
pub(crate) fn connection_id(conn: &Connection, fresh: impl FnOnce() -> i64) -> anyhow::Result<i64> {
    conn.execute_batch("CREATE TEMP TABLE IF NOT EXISTS ident (id INTEGER)")?;
    match conn.query_row("SELECT id FROM ident", [], |r| r.get(0)) {
        Ok(id) => Ok(id),
        Err(rusqlite::Error::QueryReturnedNoRows) => {
            let id = fresh();
            conn.execute("INSERT INTO ident VALUES (?1)", [id])?;
            Ok(id)
        }
        Err(e) => Err(e.into()),
    }
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
    let (id_a, id_b) = (connection_id(&a, || 1)?, connection_id(&b, || 2)?);
    assert_eq!((id_a, id_b), (1, 2));
    assert_eq!(
        connection_id(&a, || 3)?,
        1,
        "the same connection changed identity"
    );
    Ok(())
}
