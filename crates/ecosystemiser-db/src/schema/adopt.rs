//! Adopting what the original Python code left in a file: the events table in either of its
//! two shapes, the repository's separate `components` table, duplicate default specs. Every
//! row is kept, and so is every column, index, trigger and view someone added; what cannot
//! be kept is refused, with the file left as it was.

use hive_db_core::rusqlite::{Transaction, params};
use rusqlite_migration::{HookError, HookResult};

use super::shape::{is_plain_index, quoted};

/// The events table's earlier shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OldEvents {
    /// The schema module's: `source_agent`, no run ids.
    SchemaModule,
    /// The event bus's: `source_component` and the three run ids.
    EventBus,
}

const SET_ASIDE: &str = "ecosystemiser_events_before_v1";

/// Indexes of the old events tables that the new table's own replace, with the columns the
/// original made them on: the schema module's two, which the new table has under the same
/// names (version 4 makes them, once the names are free), and the event bus's three on
/// `(x, timestamp)`. Any other index or trigger of the old table is someone's own and is
/// carried over, and so is one of these names made otherwise (unique, say).
const SUPERSEDED: [(&str, &[&str]); 5] = [
    (
        "idx_ecosystemiser_events_type",
        &["event_type", "timestamp"],
    ),
    ("idx_ecosystemiser_events_correlation", &["correlation_id"]),
    (
        "idx_ecosys_events_simulation",
        &["simulation_id", "timestamp"],
    ),
    ("idx_ecosys_events_analysis", &["analysis_id", "timestamp"]),
    (
        "idx_ecosys_events_optimization",
        &["optimization_id", "timestamp"],
    ),
];

/// An events table of an earlier shape, set aside to be copied.
#[derive(Debug)]
pub(super) struct SetAside {
    shape: OldEvents,
    /// Its columns that its shape does not have (someone added them); copied as they are.
    extra_columns: Vec<OldColumn>,
    /// `CREATE INDEX` and `CREATE TRIGGER` statements of its own indexes and triggers (not
    /// the [`SUPERSEDED`] ones), as they named the table before it was set aside.
    own_objects: Vec<(String, String)>,
}

/// A column of the old events table, as `pragma_table_xinfo` describes it.
#[derive(Debug)]
struct OldColumn {
    name: String,
    decl_type: String,
    not_null: bool,
    default: Option<String>,
}

pub(super) fn columns(tx: &Transaction<'_>, table: &str) -> Result<Vec<String>, HookError> {
    let mut stmt = tx.prepare("SELECT name FROM pragma_table_xinfo(?1)")?;
    let names = stmt
        .query_map([table], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(names)
}

fn table_exists(tx: &Transaction<'_>, table: &str) -> Result<bool, HookError> {
    Ok(tx.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1 COLLATE NOCASE",
        [table],
        |r| r.get::<_, i64>(0),
    )? > 0)
}

/// The columns of each old shape, in the new table's terms: (new column, old column).
fn mapping(shape: OldEvents) -> &'static [(&'static str, &'static str)] {
    match shape {
        OldEvents::SchemaModule => &[
            ("event_id", "event_id"),
            ("event_type", "event_type"),
            ("source", "source_agent"),
            ("timestamp", "timestamp"),
            ("correlation_id", "correlation_id"),
            ("payload", "payload"),
            ("metadata", "metadata"),
            ("created_at", "created_at"),
        ],
        OldEvents::EventBus => &[
            ("event_id", "event_id"),
            ("event_type", "event_type"),
            ("source", "source_component"),
            ("timestamp", "timestamp"),
            ("correlation_id", "correlation_id"),
            ("simulation_id", "simulation_id"),
            ("analysis_id", "analysis_id"),
            ("optimization_id", "optimization_id"),
            ("payload", "payload"),
            ("metadata", "metadata"),
            ("created_at", "created_at"),
        ],
    }
}

/// Renames an events table of an earlier shape out of the way (its indexes and triggers go
/// with it), so that the new table and its indexes can be created; returns what
/// [`copy_old_events`] needs to carry everything over. Refuses (changing nothing) what it
/// could not carry over whole.
pub(super) fn set_aside_old_events(tx: &Transaction<'_>) -> Result<Option<SetAside>, HookError> {
    let cols = columns(tx, "ecosystemiser_events")?;
    if cols.is_empty() || cols.iter().any(|c| c == "seq") {
        return Ok(None);
    }
    let has = |name: &str| cols.iter().any(|c| c == name);
    let shape = if has("source_component") {
        OldEvents::EventBus
    } else if has("source_agent") {
        OldEvents::SchemaModule
    } else {
        return Err(HookError::Hook(format!(
            "ecosystemiser_events has an unknown shape (columns {cols:?}); left unchanged"
        )));
    };
    if table_exists(tx, SET_ASIDE)? {
        return Err(HookError::Hook(format!(
            "{SET_ASIDE} exists already; left unchanged"
        )));
    }
    refuse_constraints_the_copy_loses(tx)?;
    refuse_triggers_naming_the_old_source(tx, shape)?;
    let extra_columns = extra_columns(tx, shape)?;
    // A rename rewrites other tables' foreign keys to the set-aside name, which is dropped.
    // SQLite's names match in any case (ASCII), and keep the case they were written in: so
    // does every comparison with one here.
    let referencing: Vec<String> = tx
        .prepare(
            "SELECT DISTINCT m.name FROM sqlite_schema m, pragma_foreign_key_list(m.name) f
             WHERE m.type = 'table' AND f.\"table\" = 'ecosystemiser_events' COLLATE NOCASE",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if !referencing.is_empty() {
        return Err(HookError::Hook(format!(
            "tables {referencing:?} have foreign keys to the old ecosystemiser_events; left unchanged"
        )));
    }
    let mut own_objects = Vec::new();
    let objects: Vec<(String, String)> = tx
        .prepare(
            "SELECT name, sql FROM sqlite_schema
             WHERE tbl_name = 'ecosystemiser_events' COLLATE NOCASE
               AND type IN ('index', 'trigger')
               AND sql IS NOT NULL ORDER BY rowid",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (name, sql) in objects {
        let superseded = match SUPERSEDED.iter().find(|(n, _)| *n == name) {
            Some((_, columns)) => is_plain_index(tx, "ecosystemiser_events", &name, columns)?,
            None => false,
        };
        if !superseded {
            own_objects.push((name, sql));
        }
    }
    // Legacy mode: views and other tables' triggers keep naming `ecosystemiser_events`, which
    // is the new table once this migration commits, instead of following the old one into
    // the set-aside name and breaking when it is dropped.
    let legacy: bool = tx.pragma_query_value(None, "legacy_alter_table", |r| r.get(0))?;
    tx.pragma_update(None, "legacy_alter_table", true)?;
    let renamed = tx.execute_batch(&format!(
        "ALTER TABLE ecosystemiser_events RENAME TO {SET_ASIDE}"
    ));
    tx.pragma_update(None, "legacy_alter_table", legacy)?;
    renamed?;
    Ok(Some(SetAside {
        shape,
        extra_columns,
        own_objects,
    }))
}

/// Refuses an old events table with constraints that its copy would not have: a key or
/// `UNIQUE` beyond `event_id`, or a `CHECK`, `COLLATE`, `REFERENCES` or generated column
/// (neither shape has any; the test is by word, so it errs towards refusing).
fn refuse_constraints_the_copy_loses(tx: &Transaction<'_>) -> HookResult {
    let sql: String = tx.query_row(
        "SELECT sql FROM sqlite_schema
         WHERE type = 'table' AND name = 'ecosystemiser_events' COLLATE NOCASE",
        [],
        |r| r.get(0),
    )?;
    let words: Vec<String> = sql
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .map(str::to_uppercase)
        .collect();
    let keys: Vec<String> = tx
        .prepare(
            "SELECT l.name FROM pragma_index_list('ecosystemiser_events') l
             WHERE l.origin <> 'c'
               AND (SELECT group_concat(i.name) FROM pragma_index_info(l.name) i)
                   IS NOT 'event_id'",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let found: Vec<&str> = ["CHECK", "COLLATE", "REFERENCES", "GENERATED"]
        .into_iter()
        .filter(|w| words.iter().any(|x| x == w))
        .collect();
    if !found.is_empty() || !keys.is_empty() {
        return Err(HookError::Hook(format!(
            "ecosystemiser_events has constraints its copy would lose ({found:?}, keys \
             {keys:?}); left unchanged"
        )));
    }
    Ok(())
}

/// The words of `sql`, lowercased (identifiers and keywords; quotes and operators split them).
fn words(sql: &str) -> Vec<String> {
    sql.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Refuses a trigger that would break on the new events table: one on it, or one of another
/// table that names it, whose SQL names the shape's old source column (`source_agent`,
/// `source_component`; the new table calls it `source`). SQLite checks a trigger's body only
/// when it fires, so carried over it would fail every publish (or every write that fires it)
/// from then on. By word, so it errs towards refusing.
fn refuse_triggers_naming_the_old_source(tx: &Transaction<'_>, shape: OldEvents) -> HookResult {
    let old_source = match shape {
        OldEvents::SchemaModule => "source_agent",
        OldEvents::EventBus => "source_component",
    };
    let triggers: Vec<(String, String, String)> = tx
        .prepare(
            "SELECT name, tbl_name, sql FROM sqlite_schema
             WHERE type = 'trigger' AND sql IS NOT NULL ORDER BY name",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let broken: Vec<String> = triggers
        .into_iter()
        .filter(|(_, table, sql)| {
            let words = words(sql);
            words.iter().any(|w| w == old_source)
                && (table.eq_ignore_ascii_case("ecosystemiser_events")
                    || words.iter().any(|w| w == "ecosystemiser_events"))
        })
        .map(|(name, ..)| name)
        .collect();
    if !broken.is_empty() {
        return Err(HookError::Hook(format!(
            "triggers {broken:?} name ecosystemiser_events' old column {old_source}, which the \
             new table calls source; left unchanged"
        )));
    }
    Ok(())
}

/// The old table's columns that its shape does not have.
fn extra_columns(tx: &Transaction<'_>, shape: OldEvents) -> Result<Vec<OldColumn>, HookError> {
    let known = mapping(shape);
    let mut stmt = tx.prepare(
        "SELECT name, type, \"notnull\", dflt_value, pk, hidden
         FROM pragma_table_xinfo('ecosystemiser_events') ORDER BY cid",
    )?;
    let mut rows = stmt.query([])?;
    let mut extra = Vec::new();
    while let Some(r) = rows.next()? {
        let name: String = r.get(0)?;
        if known.iter().any(|(_, old)| *old == name) {
            continue;
        }
        let (pk, hidden): (i64, i64) = (r.get(4)?, r.get(5)?);
        if pk != 0 || hidden != 0 {
            return Err(HookError::Hook(format!(
                "column {name} of ecosystemiser_events is part of its key or generated, which \
                 the new table cannot carry; left unchanged"
            )));
        }
        // `source` is filled from the shape's own source column.
        if name == "source" {
            return Err(HookError::Hook(
                "ecosystemiser_events has both a source column and its shape's own; left \
                 unchanged"
                    .to_owned(),
            ));
        }
        extra.push(OldColumn {
            name,
            decl_type: r.get(1)?,
            not_null: r.get(2)?,
            default: r.get(3)?,
        });
    }
    Ok(extra)
}

/// Copies every row of the set-aside events table into the new one, in insertion order,
/// with the columns someone added to it; checks the count, and only then drops the old table
/// and makes its own indexes and triggers again on the new one.
pub(super) fn copy_old_events(tx: &Transaction<'_>, old: &SetAside) -> HookResult {
    let new_columns = columns(tx, "ecosystemiser_events")?;
    let mut targets = Vec::new();
    let mut sources = Vec::new();
    for (new, from) in mapping(old.shape) {
        targets.push(quoted(new));
        // JSON columns of the old tables had NUMERIC affinity: a payload such as `5` was
        // stored as a number, hence the casts. A NULL event id (possible in a TEXT primary
        // key) gets a stable stand-in.
        sources.push(match *new {
            "event_id" => "coalesce(event_id, 'legacy-' || rowid)".to_owned(),
            "payload" | "metadata" => format!("CAST({from} AS TEXT)"),
            _ => quoted(from),
        });
    }
    for c in &old.extra_columns {
        // A column the new table has (a run id added to the schema module's table) is
        // filled; any other is added, declared as it was. The text comes from the file's own
        // schema, never from a caller.
        if !new_columns.contains(&c.name) {
            let mut add = format!(
                "ALTER TABLE ecosystemiser_events ADD COLUMN {} {}",
                quoted(&c.name),
                c.decl_type
            );
            if c.not_null {
                add.push_str(" NOT NULL");
            }
            if let Some(d) = &c.default {
                add.push_str(&format!(" DEFAULT {d}"));
            }
            tx.execute_batch(&add).map_err(|e| {
                HookError::Hook(format!(
                    "column {} of the old ecosystemiser_events cannot be added to the new one \
                     ({e}); left unchanged",
                    c.name
                ))
            })?;
        }
        targets.push(quoted(&c.name));
        sources.push(quoted(&c.name));
    }
    let copy = format!(
        "INSERT INTO ecosystemiser_events ({}) SELECT {} FROM {SET_ASIDE} ORDER BY rowid",
        targets.join(", "),
        sources.join(", ")
    );
    let copied = tx.execute(&copy, [])?;
    let count: i64 = tx.query_row(&format!("SELECT count(*) FROM {SET_ASIDE}"), [], |r| {
        r.get(0)
    })?;
    if i64::try_from(copied).ok() != Some(count) {
        return Err(HookError::Hook(format!(
            "copied {copied} of {count} events; left unchanged"
        )));
    }
    tx.execute_batch(&format!("DROP TABLE {SET_ASIDE}"))?;
    // After the copy, so that a trigger does not fire for the rows carried over.
    for (name, sql) in &old.own_objects {
        tx.execute_batch(sql).map_err(|e| {
            HookError::Hook(format!(
                "{name} of the old ecosystemiser_events cannot be made on the new one ({e}); \
                 left unchanged"
            ))
        })?;
    }
    tracing::info!(rows = count, shape = ?old.shape, "events table adopted");
    Ok(())
}

/// Copies the rows of the repository's `components` table, if there is one, into the
/// library as version 1.0.0 specs of a type named after their class. The table itself is
/// kept as it is.
pub(super) fn copy_components_table(tx: &Transaction<'_>) -> HookResult {
    let cols = columns(tx, "components")?;
    let needed = [
        "id",
        "category",
        "component_class",
        "technical_data",
        "economic_data",
        "metadata",
    ];
    if cols.is_empty() {
        return Ok(());
    }
    if !needed.iter().all(|n| cols.iter().any(|c| c == n)) {
        tracing::warn!(columns = ?cols, "a components table of an unknown shape is left as it is");
        return Ok(());
    }
    tx.execute(
        "INSERT OR IGNORE INTO component_types (name, category)
         SELECT component_class, min(category) FROM components GROUP BY component_class",
        [],
    )?;
    let copied = tx.execute(
        "INSERT OR IGNORE INTO component_specs
             (component_type_id, name, version, technical_params, economic_params, metadata,
              created_at, updated_at)
         SELECT t.id, c.id, '1.0.0', CAST(c.technical_data AS TEXT),
                CAST(c.economic_data AS TEXT), CAST(c.metadata AS TEXT),
                coalesce(c.created_at, CURRENT_TIMESTAMP), coalesce(c.updated_at, CURRENT_TIMESTAMP)
         FROM components c JOIN component_types t ON t.name = c.component_class
         ORDER BY c.rowid",
        params![],
    )?;
    tracing::info!(
        rows = copied,
        "components table copied into the component library"
    );
    Ok(())
}

/// Leaves at most one default spec per type, the newest, before the unique index is made.
pub(super) fn resolve_duplicate_defaults(tx: &Transaction<'_>) -> HookResult {
    let changed = tx.execute(
        "UPDATE component_specs SET is_default = 0
         WHERE is_default = 1 AND id NOT IN
             (SELECT max(id) FROM component_specs WHERE is_default = 1
              GROUP BY component_type_id)",
        [],
    )?;
    if changed > 0 {
        tracing::warn!(
            specs = changed,
            "component types had several default specs; the newest of each stays the default"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
