//! The application databases' workload: the platform orchestrator's task records. Tasks are
//! enqueued pending, claimed by one worker (the oldest pending first), completed by the
//! worker that claimed them, and listed by status.

use std::collections::HashMap;

use anyhow::ensure;
use hive_db_core::postgres::Transaction;
use hive_db_core::postgres::types::Type;
use hive_db_core::rusqlite::OptionalExtension;

use crate::loadtest::pg_rows;
use crate::loadtest::store::{Read, Store, Write};
use crate::loadtest::verify::Findings;
use crate::loadtest::workload::{Ack, Worker};

/// The schema of an application database.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY,
    queue TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'claimed', 'done')),
    enqueued_by INTEGER NOT NULL,
    enqueue_seq INTEGER NOT NULL,
    claimed_by INTEGER,
    result TEXT,
    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    UNIQUE (enqueued_by, enqueue_seq)
);
CREATE INDEX IF NOT EXISTS tasks_status ON tasks (status, id);";

/// The schema of an application database on PostgreSQL.
pub(crate) const SCHEMA_PG: &str = "
CREATE TABLE IF NOT EXISTS tasks (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'claimed', 'done')),
    enqueued_by BIGINT NOT NULL,
    enqueue_seq BIGINT NOT NULL,
    claimed_by BIGINT,
    result TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (enqueued_by, enqueue_seq)
);
CREATE INDEX IF NOT EXISTS tasks_status ON tasks (status, id);";

const QUEUES: [&str; 3] = ["simulation", "analysis", "optimization"];

fn payload(worker: u32, seq: u64) -> String {
    format!(r#"{{"kind":"run","worker":{worker},"seq":{seq}}}"#)
}

fn result(worker: u32, seq: u64) -> String {
    format!(r#"{{"ok":true,"worker":{worker},"seq":{seq}}}"#)
}

/// Creates the tasks table on a new application database.
///
/// # Errors
///
/// The database's.
pub(crate) fn create(tx: Write<'_, '_>) -> anyhow::Result<()> {
    match tx {
        Write::Sqlite(c) => c.execute_batch(SCHEMA)?,
        Write::Pg(tx) => tx.batch_execute(SCHEMA_PG)?,
    }
    Ok(())
}

/// Enqueues one pending task on a random application database.
///
/// # Errors
///
/// The store's or SQLite's.
pub(crate) fn enqueue<S: Store>(w: &mut Worker<'_, S>) -> anyhow::Result<()> {
    let db = w.random_app_db();
    let (worker, seq) = (w.id, w.seq);
    let queue = QUEUES[(seq % 3) as usize];
    let id = w.store.write(db, |tx| match tx {
        Write::Sqlite(tx) => {
            tx.prepare_cached(
                "INSERT INTO tasks (queue, payload, status, enqueued_by, enqueue_seq)
                 VALUES (?1, ?2, 'pending', ?3, ?4)",
            )?
            .execute((queue, payload(worker, seq), worker, seq as i64))?;
            Ok(tx.last_insert_rowid())
        }
        Write::Pg(tx) => Ok(tx
            .query_typed_one(
                "INSERT INTO tasks (queue, payload, status, enqueued_by, enqueue_seq)
                 VALUES ($1, $2, 'pending', $3, $4) RETURNING id",
                &[
                    (&queue, Type::TEXT),
                    (&payload(worker, seq), Type::TEXT),
                    (&i64::from(worker), Type::INT8),
                    (&(seq as i64), Type::INT8),
                ],
            )?
            .try_get(0)?),
    })?;
    w.acks.push(Ack::TaskEnqueued {
        db,
        id,
        worker,
        seq,
    });
    Ok(())
}

fn claim_oldest(tx: &mut Write<'_, '_>, worker: u32) -> anyhow::Result<Option<i64>> {
    match tx {
        Write::Sqlite(tx) => Ok(tx
            .prepare_cached(
                "UPDATE tasks SET status = 'claimed', claimed_by = ?1,
                     updated_at = CURRENT_TIMESTAMP
                 WHERE id = (SELECT id FROM tasks WHERE status = 'pending' ORDER BY id LIMIT 1)
                 RETURNING id",
            )?
            .query_row([worker], |r| r.get(0))
            .optional()?),
        // Under READ COMMITTED two claimers could pick the same oldest row, and the second
        // would claim it again once the first commits: the row lock is taken in the
        // subquery, and rows another claimer holds are passed over.
        Write::Pg(tx) => claim_oldest_pg(tx, worker),
    }
}

fn claim_oldest_pg(tx: &mut Transaction<'_>, worker: u32) -> anyhow::Result<Option<i64>> {
    let row = tx.query_typed(
        "UPDATE tasks SET status = 'claimed', claimed_by = $1, updated_at = now()
         WHERE id = (SELECT id FROM tasks WHERE status = 'pending' ORDER BY id LIMIT 1
                     FOR UPDATE SKIP LOCKED)
         RETURNING id",
        &[(&i64::from(worker), Type::INT8)],
    )?;
    Ok(match row.first() {
        Some(r) => Some(r.try_get(0)?),
        None => None,
    })
}

fn finish(tx: &mut Write<'_, '_>, id: i64, worker: u32, seq: u64) -> anyhow::Result<()> {
    let changed = match tx {
        Write::Sqlite(tx) => tx
            .prepare_cached(
                "UPDATE tasks SET status = 'done', result = ?3, updated_at = CURRENT_TIMESTAMP
                 WHERE id = ?1 AND status = 'claimed' AND claimed_by = ?2",
            )?
            .execute((id, worker, result(worker, seq)))? as u64,
        Write::Pg(tx) => tx
            .query_typed(
                "UPDATE tasks SET status = 'done', result = $3, updated_at = now()
                 WHERE id = $1 AND status = 'claimed' AND claimed_by = $2 RETURNING id",
                &[
                    (&id, Type::INT8),
                    (&i64::from(worker), Type::INT8),
                    (&result(worker, seq), Type::TEXT),
                ],
            )?
            .len() as u64,
    };
    ensure!(
        changed == 1,
        "task {id} claimed by worker {worker} is no longer its claim"
    );
    Ok(())
}

/// Claims the oldest pending task of a random application database (none may be pending).
///
/// # Errors
///
/// The store's or SQLite's.
pub(crate) fn claim<S: Store>(w: &mut Worker<'_, S>) -> anyhow::Result<()> {
    let db = w.random_app_db();
    let worker = w.id;
    if let Some(id) = w.store.write(db, |mut tx| claim_oldest(&mut tx, worker))? {
        w.acks.push(Ack::TaskClaimed { db, id, worker });
        w.claimed[db - 1].push(id);
    }
    Ok(())
}

/// Completes the oldest task this worker holds on a random application database; holding
/// none there, claims one and completes it in the same transaction.
///
/// # Errors
///
/// The store's or SQLite's.
pub(crate) fn complete<S: Store>(w: &mut Worker<'_, S>) -> anyhow::Result<()> {
    let db = w.random_app_db();
    let (worker, seq) = (w.id, w.seq);
    let held = w.claimed[db - 1].first().copied();
    let done = w.store.write(db, |mut tx| {
        let Some(id) = held.map_or_else(|| claim_oldest(&mut tx, worker), |id| Ok(Some(id)))?
        else {
            return Ok(None);
        };
        finish(&mut tx, id, worker, seq)?;
        Ok(Some(id))
    })?;
    if let Some(id) = done {
        if held.is_some() {
            w.claimed[db - 1].remove(0);
        } else {
            w.acks.push(Ack::TaskClaimed { db, id, worker });
        }
        w.acks.push(Ack::TaskDone {
            db,
            id,
            worker,
            seq,
        });
    }
    Ok(())
}

/// Lists the newest 20 tasks of one status on a random application database.
///
/// # Errors
///
/// The store's or SQLite's.
pub(crate) fn list<S: Store>(w: &mut Worker<'_, S>) -> anyhow::Result<()> {
    let db = w.random_app_db();
    let status = ["pending", "claimed", "done"][(w.rng.next() % 3) as usize];
    let n = w.store.read(db, |c| match c {
        Read::Sqlite(c) => {
            let mut stmt = c.prepare_cached(
                "SELECT id, queue, payload, claimed_by FROM tasks WHERE status = ?1
                 ORDER BY id DESC LIMIT 20",
            )?;
            let mut rows = stmt.query([status])?;
            let mut n = 0;
            while let Some(row) = rows.next()? {
                let _: (i64, String, String, Option<u32>) =
                    (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
                n += 1;
            }
            Ok(n)
        }
        Read::Pg(c) => {
            let rows = c.query_typed(
                "SELECT id, queue, payload, claimed_by FROM tasks WHERE status = $1
                 ORDER BY id DESC LIMIT 20",
                &[(&status, Type::TEXT)],
            )?;
            for row in &rows {
                let _: (i64, String, String, Option<i64>) = (
                    row.try_get(0)?,
                    row.try_get(1)?,
                    row.try_get(2)?,
                    row.try_get(3)?,
                );
            }
            Ok(rows.len())
        }
    })?;
    ensure!(n <= 20, "listed {n} tasks with LIMIT 20");
    Ok(())
}

/// A task as the acknowledged writes say it must be: who enqueued it in which operation,
/// who claimed it, who completed it in which operation.
#[derive(Debug, Default, PartialEq, Eq)]
struct Expected {
    enqueued: Option<(u32, u64)>,
    claimed_by: Option<u32>,
    done: Option<(u32, u64)>,
}

impl Expected {
    fn status(&self) -> &'static str {
        match (self.done, self.claimed_by) {
            (Some(_), _) => "done",
            (None, Some(_)) => "claimed",
            (None, None) => "pending",
        }
    }
}

/// Compares each application database's tasks with the acknowledged writes: every
/// acknowledged task is there with its payload, in the state of its last acknowledged step
/// (claimed by whom, completed with what), and no task or step is there that nobody saw
/// acknowledged. The tables are read row by row, not held.
///
/// # Errors
///
/// When a tasks table cannot be read.
pub(crate) fn verify<S: Store>(
    store: &S,
    app_dbs: usize,
    acks: &[Ack],
    findings: &mut Findings,
) -> anyhow::Result<()> {
    let mut expected: Vec<HashMap<i64, Expected>> = (0..app_dbs).map(|_| HashMap::new()).collect();
    for ack in acks {
        match *ack {
            Ack::TaskEnqueued {
                db,
                id,
                worker,
                seq,
            } => expected[db - 1].entry(id).or_default().enqueued = Some((worker, seq)),
            Ack::TaskClaimed { db, id, worker } => {
                expected[db - 1].entry(id).or_default().claimed_by = Some(worker);
            }
            Ack::TaskDone {
                db,
                id,
                worker,
                seq,
            } => expected[db - 1].entry(id).or_default().done = Some((worker, seq)),
            _ => {}
        }
    }
    for (i, mut want) in expected.into_iter().enumerate() {
        let db = i + 1;
        store.read(db, |c| match c {
            Read::Sqlite(c) => {
                let mut stmt =
                    c.prepare("SELECT id, payload, status, claimed_by, result FROM tasks")?;
                let mut rows = stmt.query([])?;
                while let Some(r) = rows.next()? {
                    let id: i64 = r.get(0)?;
                    let row: (String, String, Option<u32>, Option<String>) =
                        (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
                    compare(db, id, want.remove(&id), &row, findings);
                }
                Ok(())
            }
            Read::Pg(c) => pg_rows::each(
                c,
                "SELECT id, payload, status, claimed_by, result FROM tasks",
                |r| {
                    let id: i64 = r.try_get(0)?;
                    let claimed_by: Option<i64> = r.try_get(3)?;
                    let row = (
                        r.try_get(1)?,
                        r.try_get(2)?,
                        claimed_by.map(u32::try_from).transpose()?,
                        r.try_get(4)?,
                    );
                    compare(db, id, want.remove(&id), &row, findings);
                    Ok(())
                },
            ),
        })?;
        for (id, e) in want {
            findings.checked += 1;
            findings.missing(format!("database {db}: task {id} ({e:?}) is absent"));
        }
    }
    Ok(())
}

/// Compares one stored task with what was acknowledged of it.
fn compare(
    db: usize,
    id: i64,
    want: Option<Expected>,
    (stored_payload, status, claimed_by, stored_result): &(
        String,
        String,
        Option<u32>,
        Option<String>,
    ),
    findings: &mut Findings,
) {
    let Some(e) = want.filter(|e| e.enqueued.is_some()) else {
        findings.unexpected(format!(
            "database {db}: task {id} was never acknowledged as enqueued"
        ));
        return;
    };
    findings.checked += 1;
    if e.enqueued
        .is_some_and(|(w, s)| payload(w, s) != *stored_payload)
    {
        findings.missing(format!("database {db}: task {id} payload {stored_payload}"));
    }
    let fields_ok = status == e.status()
        && (e.claimed_by.is_none() || *claimed_by == e.claimed_by)
        && e.done
            .is_none_or(|(w, s)| stored_result.as_deref() == Some(&result(w, s)));
    if !fields_ok {
        // A later step than any acknowledged one is an unacknowledged write; an earlier
        // state means an acknowledged step was lost.
        let text = format!(
            "database {db}: task {id} is {status} (by {claimed_by:?}, result \
             {stored_result:?}); acknowledged: {e:?}"
        );
        if rank(status) > rank(e.status()) {
            findings.unexpected(text);
        } else {
            findings.missing(text);
        }
    }
}

fn rank(status: &str) -> u8 {
    match status {
        "pending" => 0,
        "claimed" => 1,
        _ => 2,
    }
}
