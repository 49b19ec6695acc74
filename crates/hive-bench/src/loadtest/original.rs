//! The original load test's transaction, kept as one operation of the mix: create the table
//! if it does not exist, insert one row, count the rows, all in one transaction.

use std::collections::{HashMap, HashSet};

use anyhow::ensure;
use hive_db_core::postgres::types::Type;

use crate::loadtest::pg_rows;
use crate::loadtest::store::{Read, Store, Write};
use crate::loadtest::verify::Findings;
use crate::loadtest::workload::{Ack, Worker};

/// The `ecosystemiser` database's index in the store.
const ECO: usize = 0;

const CREATE: &str = "CREATE TABLE IF NOT EXISTS load_test (
    id INTEGER PRIMARY KEY, worker INTEGER NOT NULL, seq INTEGER NOT NULL, payload TEXT NOT NULL,
    UNIQUE (worker, seq))";

/// [`CREATE`] on PostgreSQL. The table is also made before the run there: two first
/// transactions creating it at once would fail on the catalog's unique index, where SQLite
/// lets one writer in at a time.
pub(crate) const CREATE_PG: &str = "CREATE TABLE IF NOT EXISTS load_test (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, worker BIGINT NOT NULL,
    seq BIGINT NOT NULL, payload TEXT NOT NULL, UNIQUE (worker, seq))";

/// The row worker `worker` writes in its operation `seq`.
fn payload(worker: u32, seq: u64) -> String {
    format!("worker {worker} transaction {seq}")
}

/// Runs the transaction and records its row once it has committed.
///
/// # Errors
///
/// The store's or SQLite's error.
pub(crate) fn transaction<S: Store>(w: &mut Worker<'_, S>) -> anyhow::Result<()> {
    let (worker, seq) = (w.id, w.seq);
    let drop_it = w.workload.take_drop_fault();
    let id = w.store.write(ECO, |tx| match tx {
        Write::Sqlite(tx) => {
            // The original's SQL, each statement prepared once per connection, as an
            // application would: parsing it again at every call cost the writer lane a few
            // microseconds.
            tx.prepare_cached(CREATE)?.execute([])?;
            tx.prepare_cached("INSERT INTO load_test (worker, seq, payload) VALUES (?1, ?2, ?3)")?
                .execute((worker, seq as i64, payload(worker, seq)))?;
            let id = tx.last_insert_rowid();
            let count: i64 = tx
                .prepare_cached("SELECT count(*) FROM load_test")?
                .query_row([], |r| r.get(0))?;
            ensure!(count >= 1, "count after insert was {count}");
            if drop_it {
                tx.execute("DELETE FROM load_test WHERE id = ?1", [id])?;
            }
            Ok(id)
        }
        Write::Pg(tx) => {
            // One round trip each, nothing prepared: the registry resets a returned
            // client's session, which drops prepared statements.
            tx.batch_execute(CREATE_PG)?;
            let id: i64 = tx
                .query_typed_one(
                    "INSERT INTO load_test (worker, seq, payload) VALUES ($1, $2, $3)
                     RETURNING id",
                    &[
                        (&i64::from(worker), Type::INT8),
                        (&(seq as i64), Type::INT8),
                        (&payload(worker, seq), Type::TEXT),
                    ],
                )?
                .try_get(0)?;
            let count: i64 = tx
                .query_typed_one("SELECT count(*) FROM load_test", &[])?
                .try_get(0)?;
            ensure!(count >= 1, "count after insert was {count}");
            if drop_it {
                tx.query_typed("DELETE FROM load_test WHERE id = $1", &[(&id, Type::INT8)])?;
            }
            Ok(id)
        }
    })?;
    w.acks.push(Ack::Original { id, worker, seq });
    Ok(())
}

/// Compares the `load_test` table with the acknowledged rows.
///
/// # Errors
///
/// When the table cannot be read.
pub(crate) fn verify<S: Store>(
    store: &S,
    acks: &[Ack],
    findings: &mut Findings,
) -> anyhow::Result<()> {
    let mut stored: HashMap<i64, (u32, i64, String)> = HashMap::new();
    store.read(ECO, |c| match c {
        Read::Sqlite(c) => {
            let exists: bool = c.query_row(
                "SELECT count(*) > 0 FROM sqlite_schema WHERE name = 'load_test'",
                [],
                |r| r.get(0),
            )?;
            if !exists {
                return Ok(());
            }
            let mut stmt = c.prepare("SELECT id, worker, seq, payload FROM load_test")?;
            let rows =
                stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?))))?;
            for row in rows {
                let (id, row) = row?;
                stored.insert(id, row);
            }
            Ok(())
        }
        Read::Pg(c) => {
            let exists: bool = c
                .query_one("SELECT to_regclass('load_test') IS NOT NULL", &[])?
                .try_get(0)?;
            if !exists {
                return Ok(());
            }
            pg_rows::each(c, "SELECT id, worker, seq, payload FROM load_test", |r| {
                let worker: i64 = r.try_get(1)?;
                stored.insert(
                    r.try_get(0)?,
                    (u32::try_from(worker)?, r.try_get(2)?, r.try_get(3)?),
                );
                Ok(())
            })
        }
    })?;
    let mut acked = HashSet::new();
    for ack in acks {
        let Ack::Original { id, worker, seq } = ack else {
            continue;
        };
        acked.insert(*id);
        findings.checked += 1;
        let expected = (*worker, *seq as i64, payload(*worker, *seq));
        match stored.get(id) {
            Some(row) if *row == expected => {}
            Some(row) => findings.missing(format!(
                "load_test row {id}: expected {expected:?}, found {row:?}"
            )),
            None => findings.missing(format!("load_test row {id} ({}) is absent", expected.2)),
        }
    }
    for (id, row) in &stored {
        if !acked.contains(id) {
            findings.unexpected(format!("load_test row {id} {row:?} was never acknowledged"));
        }
    }
    Ok(())
}
