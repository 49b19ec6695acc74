//! What a migration checks before it commits, so that it leaves a file working or leaves it
//! as it was: nothing someone added that compiled before the migration fails after it (a
//! view, a trigger), and every table has the columns of a fresh database, with the same type
//! affinity (the repositories read and write them by name and type).
//!
//! SQLite checks a view or a trigger body only when a statement uses it. A column added to a
//! table breaks a view declared with a column list over `SELECT *`, and a trigger that
//! copies a row with `SELECT *`; the statements that use them then fail for good, while the
//! migration that broke them reported success. Preparing a statement compiles the views and
//! triggers it uses without running anything, so each view is prepared, and each table's
//! `INSERT`, `UPDATE` and `DELETE` (which compile the table's triggers), before and after the
//! steps.

use std::collections::BTreeMap;

use hive_db_core::rusqlite::{Connection, OptionalExtension, Transaction};
use rusqlite_migration::{HookError, HookResult};

/// `name` as an SQL identifier.
pub(super) fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Whether `table` has an index `name` made exactly as `columns` (in order, ascending, the
/// default collation), neither unique nor partial: an index of that name made otherwise is
/// someone's own.
pub(super) fn is_plain_index(
    tx: &Transaction<'_>,
    table: &str,
    name: &str,
    columns: &[&str],
) -> Result<bool, HookError> {
    let keys: Option<String> = tx
        .query_row(
            "SELECT (SELECT group_concat(coalesce(x.name, '(expression)') || ' ' || x.\"desc\"
                                     || ' ' || x.coll, ',')
                 FROM (SELECT * FROM pragma_index_xinfo(l.name) WHERE key ORDER BY seqno) x)
         FROM pragma_index_list(?1) l
         WHERE l.name = ?2 AND NOT l.\"unique\" AND NOT l.partial",
            [table, name],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    let plain: Vec<String> = columns.iter().map(|c| format!("{c} 0 BINARY")).collect();
    Ok(keys.as_deref() == Some(plain.join(",").as_str()))
}

/// What each view, and each statement that fires triggers, gives when prepared: `None` when
/// it compiles, else SQLite's message; and the columns of each view that compiles
/// (lowercased).
#[derive(Debug)]
pub(super) struct Compiled {
    errors: BTreeMap<String, Option<String>>,
    view_columns: BTreeMap<String, Vec<String>>,
}

/// Prepares every view of the file, and an `INSERT`, an `UPDATE` of every column and a
/// `DELETE` of every table or view with triggers (none is run).
pub(super) fn compile(conn: &Connection) -> Result<Compiled, HookError> {
    let mut errors = BTreeMap::new();
    let mut view_columns = BTreeMap::new();
    let views: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'view' ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for view in views {
        let what = format!("view {view}");
        match conn.prepare(&format!("SELECT * FROM {} LIMIT 0", quoted(&view))) {
            Ok(stmt) => {
                let columns = stmt
                    .column_names()
                    .into_iter()
                    .map(str::to_lowercase)
                    .collect();
                view_columns.insert(what.clone(), columns);
                errors.insert(what, None);
            }
            Err(e) => {
                errors.insert(what, Some(e.to_string()));
            }
        }
    }
    let mut statements = Vec::new();
    let fired: Vec<String> = conn
        .prepare(
            "SELECT DISTINCT tbl_name FROM sqlite_schema WHERE type = 'trigger' ORDER BY tbl_name",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for table in fired {
        let q = quoted(&table);
        let set: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_xinfo(?1) WHERE hidden = 0 ORDER BY cid")?
            .query_map([&table], |r| r.get::<_, String>(0))?
            .map(|c| c.map(|c| format!("{0} = {0}", quoted(&c))))
            .collect::<Result<_, _>>()?;
        statements.push((
            format!("inserts into {table}"),
            format!("INSERT INTO {q} DEFAULT VALUES"),
        ));
        if !set.is_empty() {
            statements.push((
                format!("updates of {table}"),
                format!("UPDATE {q} SET {} WHERE 0", set.join(", ")),
            ));
        }
        statements.push((
            format!("deletes from {table}"),
            format!("DELETE FROM {q} WHERE 0"),
        ));
    }
    for (what, sql) in statements {
        let error = conn.prepare(&sql).err().map(|e| e.to_string());
        errors.insert(what, error);
    }
    Ok(Compiled {
        errors,
        view_columns,
    })
}

/// Refuses when something that compiled in `before` fails to now, or a view lost a column
/// it had (a `SELECT *` view of a table the migration rebuilt: the queries that read that
/// column from it would fail): the migration would break it (the transaction is rolled
/// back, the file left as it was). A view that gained columns is no concern.
pub(super) fn refuse_what_broke(conn: &Connection, before: &Compiled) -> HookResult {
    let after = compile(conn)?;
    let mut broken: Vec<String> = after
        .errors
        .iter()
        .filter_map(|(what, error)| {
            let error = error.as_ref()?;
            matches!(before.errors.get(what), Some(None)).then(|| format!("{what} ({error})"))
        })
        .collect();
    for (what, had) in &before.view_columns {
        let Some(has) = after.view_columns.get(what) else {
            continue;
        };
        let lost: Vec<&String> = had.iter().filter(|c| !has.contains(c)).collect();
        if !lost.is_empty() {
            broken.push(format!("{what} (loses its columns {lost:?})"));
        }
    }
    if broken.is_empty() {
        return Ok(());
    }
    Err(HookError::Hook(format!(
        "the migration would break what worked before it: {}; left unchanged (change them to \
         name their columns, then open the file again)",
        broken.join("; ")
    )))
}

/// SQLite's type affinity of a declared column type (its rules, in their order).
fn affinity(declared: &str) -> &'static str {
    let t = declared.to_ascii_uppercase();
    if t.contains("INT") {
        "INTEGER"
    } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
        "TEXT"
    } else if t.contains("BLOB") || t.is_empty() {
        "BLOB"
    } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
        "REAL"
    } else {
        "NUMERIC"
    }
}

/// A table's columns: lowercased name, declared type, and whether it is (part of) the
/// primary key.
pub(super) type Columns = Vec<(String, String, bool)>;

pub(super) fn columns(conn: &Connection, table: &str) -> Result<Columns, HookError> {
    Ok(conn
        .prepare("SELECT lower(name), type, pk > 0 FROM pragma_table_xinfo(?1) ORDER BY cid")?
        .query_map([table], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?)
}

/// What a fresh database has: each table's columns, and each index's table; and the
/// columns whose declared type is not compared (`kept`: table, column).
#[derive(Debug)]
pub(super) struct Fresh {
    columns: BTreeMap<&'static str, Columns>,
    indexes: BTreeMap<String, String>,
    kept: Vec<(&'static str, &'static str)>,
}

impl Fresh {
    /// The facts of the fresh database on `conn`, for its `tables`; `kept` as above.
    pub(super) fn of(
        conn: &Connection,
        tables: &[&'static str],
        kept: Vec<(&'static str, &'static str)>,
    ) -> Result<Self, HookError> {
        let mut columns = BTreeMap::new();
        for table in tables {
            columns.insert(*table, self::columns(conn, table)?);
        }
        let indexes = conn
            .prepare(
                "SELECT name, tbl_name FROM sqlite_schema WHERE type = 'index' AND sql IS NOT NULL",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(Self {
            columns,
            indexes,
            kept,
        })
    }
}

/// Refuses a file unlike a fresh database in a way the data layer cannot live with: a table
/// lacking a column the fresh one has, or declaring it with another type affinity (the
/// repositories would fail on it, or store values they cannot read back, from its first use
/// on); or an index of the data layer's name on another table (someone's own, of the same
/// name: `CREATE INDEX IF NOT EXISTS` then skips the data layer's, and its queries scan
/// whole tables without a word). Columns and indexes someone added are no concern, nor is
/// an index of the data layer's name made otherwise on its own table (someone's, kept). A
/// missing table is left to the caller's own check.
pub(super) fn refuse_unlike_fresh(conn: &Connection, fresh: &Fresh) -> HookResult {
    let mut wrong = Vec::new();
    for (name, table) in &fresh.indexes {
        let theirs: Option<String> = conn
            .query_row(
                "SELECT tbl_name FROM sqlite_schema
                 WHERE type = 'index' AND name = ?1 COLLATE NOCASE",
                [name],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(theirs) = theirs
            && !theirs.eq_ignore_ascii_case(table)
        {
            wrong.push(format!(
                "index {name} is on table {theirs}, where the data layer needs its own on \
                 {table} (rename the other index)"
            ));
        }
    }
    for (table, expected) in &fresh.columns {
        let found = columns(conn, table)?;
        if found.is_empty() {
            continue;
        }
        for (column, declared, key) in expected {
            let Some((_, theirs, their_key)) = found.iter().find(|(name, ..)| name == column)
            else {
                wrong.push(format!("{table} has no column {column}"));
                continue;
            };
            if *key && !their_key {
                // Without it, an `INTEGER PRIMARY KEY` (the rowid) is not filled on insert.
                wrong.push(format!(
                    "{table}.{column} is not the table's primary key, as a fresh database's is"
                ));
                continue;
            }
            let (theirs_is, fresh_is) = (affinity(theirs), affinity(declared));
            // A column a migration found already there under the name it adds is kept as
            // someone declared it (its step does, as older builds did): any type that hands
            // back the text written to it (TEXT, or none), not one that turns "404" into a
            // number the repositories cannot read as text.
            let kept = fresh
                .kept
                .iter()
                .any(|(t, c)| t == table && c.eq_ignore_ascii_case(column));
            // No affinity (an untyped or BLOB column) stores every value as given; a key's
            // column must still be the same type (an untyped key is not the rowid).
            let fits = theirs_is == fresh_is
                || (theirs_is == "BLOB" && !key)
                || (kept && theirs_is == "TEXT");
            if !fits {
                wrong.push(format!(
                    "{table}.{column} is declared {theirs:?} ({theirs_is} affinity), a fresh \
                     database's {declared:?} ({fresh_is})"
                ));
            }
        }
    }
    if wrong.is_empty() {
        return Ok(());
    }
    Err(HookError::Hook(format!(
        "the file's tables are not the data layer's: {}; left unchanged",
        wrong.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    use super::affinity;

    /// Bug caught: an affinity rule out of SQLite's order (`FLOATING POINT` has `INT` and is
    /// INTEGER; `CHARINT` is INTEGER too), which would refuse sound files or pass wrong ones.
    #[test]
    fn affinity_follows_sqlites_rules_in_order() {
        assert_eq!(affinity("INTEGER"), "INTEGER");
        assert_eq!(affinity("FLOATING POINT"), "INTEGER");
        assert_eq!(affinity("CHARINT"), "INTEGER");
        assert_eq!(affinity("VARCHAR(20)"), "TEXT");
        assert_eq!(affinity(""), "BLOB");
        assert_eq!(affinity("double precision"), "REAL");
        assert_eq!(affinity("TIMESTAMP"), "NUMERIC");
        assert_eq!(affinity("JSON"), "NUMERIC");
    }
}
