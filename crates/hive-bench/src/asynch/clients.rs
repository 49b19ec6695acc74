//! The async clients the registry's async API is measured against, on the same file with the
//! same PRAGMAs: deadpool-sqlite (`interact`), tokio-rusqlite (one connection on its own
//! thread, its design), async-sqlite (a pool of connections, a thread each) and sqlx's
//! `SqlitePool`. They open their own connections, which is why the tidy test lets this file
//! do so. Every one links the workspace's one `libsqlite3-sys`.

use std::path::Path;
use std::time::Duration;

use hive_db_core::rusqlite::{Connection, TransactionBehavior};
use hive_db_core::{AsyncHandle, DbConfig, configure_connection};

/// The registry's setup of a connection, then SQLite's own automatic checkpoint back in
/// place of the registry's WAL hook: without it, a baseline's commits would leave the WAL to
/// grow for the registry's next commit to checkpoint, billing the registry for their work.
fn configure(conn: &Connection, config: &DbConfig) -> hive_db_core::rusqlite::Result<()> {
    configure_connection(conn, config)?;
    conn.pragma_update(None, "wal_autocheckpoint", 1000)
}

/// The point read every client runs.
pub(super) const POINT_READ: &str = "SELECT v FROM kv WHERE id = ?1";
/// The single-row write every client runs in a `BEGIN IMMEDIATE` transaction.
pub(super) const INSERT: &str = "INSERT INTO events (thread, seq, payload) VALUES (?1, ?2, ?3)";
/// `journal_size_limit` as the registry sets it (`configure_connection`): for sqlx, which
/// cannot run that function on its own connections.
const JOURNAL_SIZE_LIMIT: i64 = 20_000 * (4096 + 24);

/// Which client a path measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// `AsyncHandle::read` / `write`: the registry's reader threads and writer.
    Hive,
    /// `AsyncHandle::read_inline`: on the calling thread when a connection is idle.
    HiveInline,
    Deadpool,
    TokioRusqlite,
    AsyncSqlite,
    Sqlx,
}

impl Kind {
    pub(super) const ALL: [Kind; 6] = [
        Kind::Hive,
        Kind::HiveInline,
        Kind::Deadpool,
        Kind::TokioRusqlite,
        Kind::AsyncSqlite,
        Kind::Sqlx,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Hive => "hive-db async",
            Kind::HiveInline => "hive-db async inline",
            Kind::Deadpool => "deadpool-sqlite",
            Kind::TokioRusqlite => "tokio-rusqlite",
            Kind::AsyncSqlite => "async-sqlite",
            Kind::Sqlx => "sqlx",
        }
    }

    /// Whether the path writes: the inline mode is for reads only.
    pub(super) fn writes(self) -> bool {
        self != Kind::HiveInline
    }
}

/// Every client, open on one file. Made inside the runtime it is measured on (sqlx's pool
/// and deadpool's `interact` belong to one).
#[derive(Clone)]
pub(super) struct Clients {
    pub(super) hive: AsyncHandle,
    deadpool: deadpool_sqlite::Pool,
    tokio_rusqlite: tokio_rusqlite::Connection,
    async_sqlite: async_sqlite::Pool,
    sqlx: sqlx::SqlitePool,
}

impl Clients {
    /// Opens every baseline on `path` with `config`'s settings, `max_size` connections each
    /// (tokio-rusqlite: one), beside the registry's `hive`.
    pub(super) async fn open(
        hive: AsyncHandle,
        path: &Path,
        config: &DbConfig,
    ) -> anyhow::Result<Self> {
        let size = config.max_size as usize;
        let deadpool = deadpool_sqlite::Config {
            path: path.to_path_buf(),
            pool: Some(deadpool_sqlite::PoolConfig::new(size)),
        }
        .create_pool(deadpool_sqlite::Runtime::Tokio1)?;
        // Every connection set up: all of them checked out at once, each configured.
        let mut objects = Vec::new();
        for _ in 0..size {
            let object = deadpool.get().await?;
            let c = config.clone();
            object
                .interact(move |conn| configure(conn, &c))
                .await
                .map_err(|e| anyhow::anyhow!("deadpool interact: {e}"))??;
            objects.push(object);
        }
        drop(objects);

        let tokio_rusqlite = tokio_rusqlite::Connection::open(path).await?;
        let c = config.clone();
        tokio_rusqlite
            .call(move |conn| configure(conn, &c))
            .await
            .map_err(|e| anyhow::anyhow!("tokio-rusqlite: {e}"))?;

        let async_sqlite = async_sqlite::PoolBuilder::new()
            .path(path)
            .num_conns(size)
            .open()
            .await?;
        let c = config.clone();
        for done in async_sqlite
            .conn_for_each(move |conn| configure(conn, &c))
            .await
        {
            done?;
        }

        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
            .busy_timeout(config.busy_timeout)
            .foreign_keys(config.foreign_keys)
            .pragma("cache_size", format!("-{}", config.cache_size_kib))
            .pragma("temp_store", "MEMORY")
            .pragma("journal_size_limit", JOURNAL_SIZE_LIMIT.to_string());
        let sqlx = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(config.max_size)
            .min_connections(config.max_size)
            .acquire_timeout(config.connection_timeout)
            .connect_with(options)
            .await?;
        Ok(Self {
            hive,
            deadpool,
            tokio_rusqlite,
            async_sqlite,
            sqlx,
        })
    }

    /// One point read of row `id` through `kind`.
    pub(super) async fn read(&self, kind: Kind, id: i64) -> anyhow::Result<String> {
        Ok(match kind {
            Kind::Hive => self.hive.read(move |c| point_read(c, id)).await?,
            Kind::HiveInline => self.hive.read_inline(move |c| point_read(c, id)).await?,
            Kind::Deadpool => self
                .deadpool
                .get()
                .await?
                .interact(move |c| point_read(c, id))
                .await
                .map_err(|e| anyhow::anyhow!("deadpool interact: {e}"))??,
            Kind::TokioRusqlite => self
                .tokio_rusqlite
                .call(move |c| point_read(c, id))
                .await
                .map_err(|e| anyhow::anyhow!("tokio-rusqlite: {e}"))?,
            Kind::AsyncSqlite => self.async_sqlite.conn(move |c| point_read(c, id)).await?,
            Kind::Sqlx => {
                sqlx::query_scalar::<_, String>(POINT_READ)
                    .bind(id)
                    .fetch_one(&self.sqlx)
                    .await?
            }
        })
    }

    /// One single-row write transaction through `kind` (`BEGIN IMMEDIATE`, as the registry's).
    pub(super) async fn write(&self, kind: Kind, task: i64, seq: i64) -> anyhow::Result<()> {
        match kind {
            Kind::Hive | Kind::HiveInline => {
                self.hive
                    .write(move |tx| tx.execute(INSERT, (task, seq, PAYLOAD)).map(drop))
                    .await?;
            }
            Kind::Deadpool => self
                .deadpool
                .get()
                .await?
                .interact(move |c| insert_tx(c, task, seq))
                .await
                .map_err(|e| anyhow::anyhow!("deadpool interact: {e}"))??,
            Kind::TokioRusqlite => self
                .tokio_rusqlite
                .call(move |c| insert_tx(c, task, seq))
                .await
                .map_err(|e| anyhow::anyhow!("tokio-rusqlite: {e}"))?,
            Kind::AsyncSqlite => {
                self.async_sqlite
                    .conn_mut(move |c| insert_tx(c, task, seq))
                    .await?;
            }
            Kind::Sqlx => {
                let mut tx = self.sqlx.begin_with("BEGIN IMMEDIATE").await?;
                sqlx::query(INSERT)
                    .bind(task)
                    .bind(seq)
                    .bind(PAYLOAD)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Closes what needs closing before its runtime ends.
    pub(super) async fn close(self) {
        self.sqlx.close().await;
        let _ = self.async_sqlite.close().await;
        let _ = self.tokio_rusqlite.close().await;
        self.deadpool.close();
        // Give deadpool's blocking-thread drops a moment inside the runtime.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const PAYLOAD: &str = "payload-of-a-simulation-event";

fn point_read(c: &Connection, id: i64) -> hive_db_core::rusqlite::Result<String> {
    c.prepare_cached(POINT_READ)?.query_row([id], |r| r.get(0))
}

fn insert_tx(c: &mut Connection, task: i64, seq: i64) -> hive_db_core::rusqlite::Result<()> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.prepare_cached(INSERT)?.execute((task, seq, PAYLOAD))?;
    tx.commit()
}
