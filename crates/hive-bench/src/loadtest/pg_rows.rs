//! Reading a whole PostgreSQL table row by row, through a cursor fetched in batches, so the
//! verifier never holds a table in memory (as it reads SQLite's a row at a time).

use hive_db_core::postgres::{Client, Row};

/// Rows fetched per round trip.
const BATCH: i32 = 2_000;

/// Calls `row` with each row of `sql` on `client`, in batches of [`BATCH`].
///
/// # Errors
///
/// PostgreSQL's, or the first error `row` returns.
pub(crate) fn each(
    client: &mut Client,
    sql: &str,
    mut row: impl FnMut(&Row) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    // A portal lives in a transaction; this one only reads.
    let mut tx = client.build_transaction().read_only(true).start()?;
    let portal = tx.bind(sql, &[])?;
    loop {
        let rows = tx.query_portal(&portal, BATCH)?;
        for r in &rows {
            row(r)?;
        }
        if rows.len() < BATCH as usize {
            break;
        }
    }
    tx.commit()?;
    Ok(())
}
