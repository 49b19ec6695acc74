//! The target's side: its tables and columns, the order foreign keys ask for, the copy of
//! a table in batches, its identity sequences, and the table read back for the checksum.

use std::collections::{BTreeMap, BTreeSet};

use hive_db_core::postgres::Transaction;
use hive_db_core::postgres::binary_copy::BinaryCopyInWriter;
use hive_db_core::postgres::types::{ToSql, Type};
use hive_db_core::rusqlite::Connection;

use super::cells::{Cell, Sum};
use super::cli::Progress;
use super::failure::{Context, Failure, fail};

/// The version table each engine keeps for itself: never copied.
pub(super) const SKIPPED: [&str; 1] = ["ecosystemiser_schema_version"];

/// One column of a target table.
#[derive(Debug, Clone)]
pub(super) struct Column {
    pub(super) name: String,
    pub(super) ty: Type,
}

/// A quoted identifier.
pub(super) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The tables of the target's schema (the first of its `search_path`, where the data
/// layer's migration made them) with their columns.
pub(super) fn target_tables(
    tx: &mut Transaction<'_>,
) -> Result<BTreeMap<String, Vec<Column>>, Failure> {
    let rows = tx
        .query(
            "SELECT c.relname::text, a.attname::text, a.atttypid
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_attribute a ON a.attrelid = c.oid
         WHERE n.nspname = current_schema() AND c.relkind = 'r' AND a.attnum > 0
           AND NOT a.attisdropped
         ORDER BY c.relname, a.attnum",
            &[],
        )
        .context(|| "cannot read the target's tables".to_owned())?;
    let mut tables: BTreeMap<String, Vec<Column>> = BTreeMap::new();
    for r in rows {
        let columns = || -> Result<(String, String, u32), hive_db_core::postgres::Error> {
            Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))
        };
        let (table, name, oid) =
            columns().context(|| "cannot read the target's columns".to_owned())?;
        if SKIPPED.contains(&table.as_str()) {
            continue;
        }
        let ty = Type::from_oid(oid).unwrap_or(Type::UNKNOWN);
        tables.entry(table).or_default().push(Column { name, ty });
    }
    Ok(tables)
}

/// `Err` naming the first column of `tables` of a type eco-move does not move. Only the
/// tables it moves are asked: a table of someone else's in the schema (an audit log, an
/// extension's) is none of its business.
pub(super) fn movable<'a>(
    tables: impl IntoIterator<Item = (&'a String, &'a Vec<Column>)>,
) -> Result<(), Failure> {
    for (table, columns) in tables {
        for Column { name, ty } in columns {
            if ![Type::TEXT, Type::INT8, Type::INT4, Type::FLOAT8, Type::BOOL].contains(ty) {
                return fail(format!(
                    "{table}.{name} has type {ty}, which eco-move does not move"
                ));
            }
        }
    }
    Ok(())
}

/// The tables of `tables` in dependency order: parents first.
pub(super) fn dependency_order(
    tx: &mut Transaction<'_>,
    tables: &BTreeMap<String, Vec<Column>>,
) -> Result<Vec<String>, Failure> {
    let edges = tx
        .query(
            "SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint
         WHERE contype = 'f' AND conrelid <> confrelid",
            &[],
        )
        .context(|| "cannot read the target's foreign keys".to_owned())?;
    let mut needs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for e in edges {
        let pair = || -> Result<(String, String), hive_db_core::postgres::Error> {
            Ok((e.try_get(0)?, e.try_get(1)?))
        };
        let (child, parent) = pair().context(|| "cannot read a foreign key".to_owned())?;
        needs.entry(child).or_default().insert(parent);
    }
    let mut order = Vec::new();
    let mut left: BTreeSet<&String> = tables.keys().collect();
    while !left.is_empty() {
        let ready: Vec<&String> = left
            .iter()
            .filter(|t| {
                needs
                    .get(t.as_str())
                    .is_none_or(|ps| ps.iter().all(|p| !left.iter().any(|l| *l == p)))
            })
            .copied()
            .collect();
        if ready.is_empty() {
            return fail("the target's foreign keys form a cycle");
        }
        for t in ready {
            left.remove(t);
            order.push(t.clone());
        }
    }
    Ok(order)
}

/// Copies `table` in batches of `batch` rows: the source's checksum of what was sent.
pub(super) fn copy_table(
    source: &Connection,
    tx: &mut Transaction<'_>,
    table: &str,
    columns: &[Column],
    batch: usize,
    progress: &Progress,
) -> Result<Sum, Failure> {
    let list: Vec<String> = columns.iter().map(|c| ident(&c.name)).collect();
    let list = list.join(", ");
    let total: i64 = source
        .query_row(&format!("SELECT count(*) FROM {}", ident(table)), [], |r| {
            r.get(0)
        })
        .context(|| format!("cannot count the source's {table}"))?;
    let mut stmt = source
        .prepare(&format!(
            "SELECT {list} FROM {} ORDER BY rowid",
            ident(table)
        ))
        .context(|| format!("the source's {table} lacks a column the target has"))?;
    let mut rows = stmt
        .query([])
        .context(|| format!("cannot read the source's {table}"))?;
    let types: Vec<Type> = columns.iter().map(|c| c.ty.clone()).collect();
    let copy_sql = format!("COPY {} ({list}) FROM STDIN BINARY", ident(table));
    let mut sum = Sum::default();
    let mut cells = Vec::with_capacity(columns.len());
    let mut more = true;
    while more {
        let sink = tx
            .copy_in(&copy_sql)
            .context(|| format!("cannot start copying {table}"))?;
        let mut writer = BinaryCopyInWriter::new(sink, &types);
        let mut in_batch = 0;
        while in_batch < batch {
            let Some(row) = rows
                .next()
                .context(|| format!("cannot read the source's {table}"))?
            else {
                more = false;
                break;
            };
            cells.clear();
            for (i, c) in columns.iter().enumerate() {
                let v = row
                    .get_ref(i)
                    .context(|| format!("cannot read the source's {table}"))?;
                cells.push(
                    Cell::from_sqlite(v, &c.ty)
                        .map_err(|e| Failure(format!("{table}.{}: {e}", c.name)))?,
                );
            }
            let values: Vec<Box<dyn ToSql + Sync>> = cells
                .iter()
                .zip(&types)
                .map(|(c, ty)| c.to_sql(ty))
                .collect();
            let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v.as_ref()).collect();
            writer
                .write(&refs)
                .context(|| format!("cannot copy a row of {table}"))?;
            sum.add(&cells);
            in_batch += 1;
        }
        writer.finish().context(|| format!("cannot copy {table}"))?;
        progress.show(table, sum.rows, total as u64);
    }
    Ok(sum)
}

/// Sets `table`'s identity sequences past the ids copied in, and past `mark` (the source's
/// AUTOINCREMENT high-water mark): ids the source handed out once are never handed out
/// again, even when their rows were deleted (an event listener past a `seq` would miss a
/// new event given it).
pub(super) fn reset_identity(
    tx: &mut Transaction<'_>,
    table: &str,
    mark: Option<i64>,
) -> Result<(), Failure> {
    let identity = tx
        .query(
            "SELECT column_name::text FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name = $1 AND is_identity = 'YES'",
            &[&table],
        )
        .context(|| format!("cannot read {table}'s identity columns"))?;
    for r in identity {
        let column: String = r
            .try_get(0)
            .context(|| format!("cannot read {table}'s identity columns"))?;
        tx.execute(
            &format!(
                "SELECT setval(pg_get_serial_sequence($1, $2), m) \
             FROM (SELECT greatest(max({c})::bigint, $3::bigint) AS m FROM {t}) s \
             WHERE m >= 1",
                c = ident(&column),
                t = ident(table)
            ),
            &[&ident(table), &column, &mark],
        )
        .context(|| format!("cannot set {table}.{column}'s sequence"))?;
    }
    Ok(())
}

/// `table` read back from the target, in batches through a cursor.
pub(super) fn read_back(
    tx: &mut Transaction<'_>,
    table: &str,
    columns: &[Column],
) -> Result<Sum, Failure> {
    let list: Vec<String> = columns.iter().map(|c| ident(&c.name)).collect();
    let sql = format!("SELECT {} FROM {}", list.join(", "), ident(table));
    let mut inner = tx
        .transaction()
        .context(|| "cannot open a cursor".to_owned())?;
    let portal = inner
        .bind(sql.as_str(), &[])
        .context(|| format!("cannot read back {table}"))?;
    let mut sum = Sum::default();
    let mut cells = Vec::with_capacity(columns.len());
    loop {
        let rows = inner
            .query_portal(&portal, 10_000)
            .context(|| format!("cannot read back {table}"))?;
        for r in &rows {
            cells.clear();
            for (i, c) in columns.iter().enumerate() {
                cells.push(
                    Cell::from_pg(r, i, &c.ty)
                        .map_err(|e| Failure(format!("{table}.{}: {e}", c.name)))?,
                );
            }
            sum.add(&cells);
        }
        if rows.len() < 10_000 {
            break;
        }
    }
    inner
        .commit()
        .context(|| "cannot close the cursor".to_owned())?;
    Ok(sum)
}
