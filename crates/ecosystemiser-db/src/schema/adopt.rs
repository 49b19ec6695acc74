//! Adopting what the original Python code left in a file: the events table in either of its
//! two shapes, the repository's separate `components` table, duplicate default specs. Every
//! row is kept.

use hive_db_core::rusqlite::{Transaction, params};
use rusqlite_migration::{HookError, HookResult};

/// The events table's earlier shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OldEvents {
    /// The schema module's: `source_agent`, no run ids.
    SchemaModule,
    /// The event bus's: `source_component` and the three run ids.
    EventBus,
}

const SET_ASIDE: &str = "ecosystemiser_events_before_v1";

fn columns(tx: &Transaction<'_>, table: &str) -> Result<Vec<String>, HookError> {
    let mut stmt = tx.prepare("SELECT name FROM pragma_table_info(?1)")?;
    let names = stmt
        .query_map([table], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(names)
}

fn table_exists(tx: &Transaction<'_>, table: &str) -> Result<bool, HookError> {
    Ok(tx.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1",
        [table],
        |r| r.get::<_, i64>(0),
    )? > 0)
}

/// Renames an events table of an earlier shape out of the way (its indexes go with it), so
/// that the new table and its indexes can be created; returns its shape.
pub(super) fn set_aside_old_events(tx: &Transaction<'_>) -> Result<Option<OldEvents>, HookError> {
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
    tx.execute_batch(&format!(
        "ALTER TABLE ecosystemiser_events RENAME TO {SET_ASIDE}"
    ))?;
    Ok(Some(shape))
}

/// Copies every row of the set-aside events table into the new one, in insertion order,
/// checks the count, and only then drops the old table.
pub(super) fn copy_old_events(tx: &Transaction<'_>, shape: OldEvents) -> HookResult {
    // JSON columns of the old tables had NUMERIC affinity: a payload such as `5` was stored
    // as a number, hence the casts. A NULL event id (possible in a TEXT primary key) gets a
    // stable stand-in.
    let copy = match shape {
        OldEvents::SchemaModule => format!(
            "INSERT INTO ecosystemiser_events
                 (event_id, event_type, source, timestamp, correlation_id,
                  payload, metadata, created_at)
             SELECT coalesce(event_id, 'legacy-' || rowid), event_type, source_agent,
                    timestamp, correlation_id, CAST(payload AS TEXT), CAST(metadata AS TEXT),
                    created_at
             FROM {SET_ASIDE} ORDER BY rowid"
        ),
        OldEvents::EventBus => format!(
            "INSERT INTO ecosystemiser_events
                 (event_id, event_type, source, timestamp, correlation_id,
                  simulation_id, analysis_id, optimization_id, payload, metadata, created_at)
             SELECT coalesce(event_id, 'legacy-' || rowid), event_type, source_component,
                    timestamp, correlation_id, simulation_id, analysis_id, optimization_id,
                    CAST(payload AS TEXT), CAST(metadata AS TEXT), created_at
             FROM {SET_ASIDE} ORDER BY rowid"
        ),
    };
    let copied = tx.execute(&copy, [])?;
    let old: i64 = tx.query_row(&format!("SELECT count(*) FROM {SET_ASIDE}"), [], |r| {
        r.get(0)
    })?;
    if i64::try_from(copied).ok() != Some(old) {
        return Err(HookError::Hook(format!(
            "copied {copied} of {old} events; left unchanged"
        )));
    }
    tx.execute_batch(&format!("DROP TABLE {SET_ASIDE}"))?;
    tracing::info!(rows = old, ?shape, "events table adopted");
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
