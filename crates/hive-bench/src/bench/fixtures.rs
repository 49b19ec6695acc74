//! The databases the scenarios run on, and the statements they run.

use std::path::{Path, PathBuf};

use hive_db_core::rusqlite::Connection;
use hive_db_core::{DbConfig, DbName, Registry, open_connection, prepare_database};

use crate::measure::Rng;

pub(super) const POINT_READ: &str = "SELECT v FROM kv WHERE id = ?1";
const INSERT: &str = "INSERT INTO events (thread, seq, payload) VALUES (?1, ?2, ?3)";

/// A temporary folder of databases, all registered in one registry.
pub(super) struct Setup {
    dir: tempfile::TempDir,
    pub(super) config: DbConfig,
    pub(super) registry: Registry,
}

impl Setup {
    pub(super) fn new() -> anyhow::Result<Self> {
        Ok(Self {
            dir: tempfile::tempdir()?,
            config: DbConfig {
                create_if_missing: true,
                max_size: 10,
                ..DbConfig::default()
            },
            registry: Registry::new(),
        })
    }

    /// A fresh database with `rows` rows in `kv` and an empty `events` table, registered.
    pub(super) fn database(&self, name: &str, rows: u64) -> anyhow::Result<(DbName, PathBuf)> {
        self.database_with(name, rows, self.config.clone())
    }

    /// Like [`Setup::database`], registered with `config`.
    pub(super) fn database_with(
        &self,
        name: &str,
        rows: u64,
        config: DbConfig,
    ) -> anyhow::Result<(DbName, PathBuf)> {
        let db = DbName::new(name)?;
        let path = self.dir.path().join(format!("{name}.db"));
        let prepared = prepare_database(&db, &path, &self.config)?;
        let mut conn = open_connection(&db, &prepared.path, &self.config)?;
        let tx = conn.transaction()?;
        tx.execute_batch(
            "CREATE TABLE kv (id INTEGER PRIMARY KEY, v TEXT NOT NULL);
             CREATE TABLE events (id INTEGER PRIMARY KEY, thread INTEGER, seq INTEGER, payload TEXT);",
        )?;
        {
            let mut insert = tx.prepare("INSERT INTO kv (id, v) VALUES (?1, ?2)")?;
            for id in 1..=rows {
                insert.execute((id as i64, format!("value-{id:08}")))?;
            }
        }
        tx.commit()?;
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
        drop(conn);
        self.registry.register(&db, &prepared.path, config)?;
        Ok((db, prepared.path))
    }

    pub(super) fn raw(&self, db: &DbName, path: &Path) -> anyhow::Result<Connection> {
        Ok(open_connection(db, path, &self.config)?)
    }
}

/// One point read of a random row.
pub(super) fn point_read(
    conn: &Connection,
    rng: &mut Rng,
    rows: u64,
) -> hive_db_core::rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(POINT_READ)?;
    let v: String = stmt.query_row([rng.below(rows)], |r| r.get(0))?;
    std::hint::black_box(v);
    Ok(())
}

/// Three inserts into `events`: the write scenarios' transaction.
pub(super) fn three_inserts(tx: &Connection, rng: &mut Rng) -> hive_db_core::rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(INSERT)?;
    let t = (rng.next() % 1024) as i64;
    for seq in 0..3 {
        stmt.execute((t, seq, "payload-of-a-simulation-event"))?;
    }
    Ok(())
}
