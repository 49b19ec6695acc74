//! Adopted files against fresh ones, on both backends: for every shape the original code
//! could leave, the schema of a fresh file (nothing missing, nothing taken away) and history
//! queries that search an index; what someone added to a file stays, or adoption refuses and
//! leaves the file as it was.

use std::collections::BTreeMap;
use std::path::Path;

use hive_db_core::rusqlite::{Connection, params};
use hive_db_core::{DbConfig, DbName, Registry, open_connection, prepare_database};

use crate::backend::{EcoDb, Settings};
use crate::error::Error;
use crate::events::{EVENT_BY_ID, HistoryOf};
use crate::schema::SCHEMA_VERSION;

const TABLES: &str = include_str!("../../../tests/fixtures/original/schema.sql");
const TABLES_DATA: &str = include_str!("../../../tests/fixtures/original/data.sql");
const EVENTS_SCHEMA_MODULE: &str =
    include_str!("../../../tests/fixtures/original/events_schema_module.sql");
const EVENTS_SCHEMA_MODULE_DATA: &str =
    include_str!("../../../tests/fixtures/original/events_schema_module_data.sql");
const EVENTS_BUS: &str = include_str!("../../../tests/fixtures/original/events_bus.sql");
const EVENTS_BUS_DATA: &str = include_str!("../../../tests/fixtures/original/events_bus_data.sql");
const COMPONENTS: &str = include_str!("../../../tests/fixtures/original/components.sql");
const COMPONENTS_DATA: &str = include_str!("../../../tests/fixtures/original/components_data.sql");

#[derive(Debug, Clone, Copy)]
enum Backend {
    Pooled,
    Direct,
}

fn open(backend: Backend, path: &Path) -> crate::Result<(EcoDb, Option<Registry>)> {
    let mut settings = Settings::new(path);
    settings.db = DbConfig {
        max_size: 2,
        min_idle: 1,
        ..DbConfig::default()
    };
    Ok(match backend {
        Backend::Pooled => {
            let registry = Registry::new();
            (EcoDb::with_registry(&registry, &settings)?, Some(registry))
        }
        Backend::Direct => (EcoDb::direct(&settings)?, None),
    })
}

/// The events table the original code left, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OldEvents {
    None,
    SchemaModule,
    EventBus,
}

/// What the original code could leave in a file: its tables, an events table of either
/// shape, the component repository's table, each alone or together, each with rows.
#[derive(Debug, Clone, Copy)]
struct Shape {
    tables: bool,
    events: OldEvents,
    components: bool,
}

fn shapes() -> Vec<Shape> {
    let mut all = Vec::new();
    for tables in [false, true] {
        for events in [
            OldEvents::None,
            OldEvents::SchemaModule,
            OldEvents::EventBus,
        ] {
            for components in [false, true] {
                if tables || events != OldEvents::None || components {
                    all.push(Shape {
                        tables,
                        events,
                        components,
                    });
                }
            }
        }
    }
    all
}

/// A connection to `path` (made if missing) without any migration, for what the original
/// code or someone with a SQLite shell did to a file.
fn raw(path: &Path) -> anyhow::Result<Connection> {
    let db = DbName::new("ecosystemiser")?;
    let config = DbConfig {
        create_if_missing: true,
        ..DbConfig::default()
    };
    let path = prepare_database(&db, path, &config)?.path;
    Ok(open_connection(&db, &path, &config)?)
}

/// Writes `shape` to `path` as the original code did: plain SQLite, no migration.
fn build(path: &Path, shape: Shape) -> anyhow::Result<()> {
    let conn = raw(path)?;
    let mut parts = Vec::new();
    if shape.tables {
        parts.extend([TABLES, TABLES_DATA]);
    }
    match shape.events {
        OldEvents::None => {}
        OldEvents::SchemaModule => parts.extend([EVENTS_SCHEMA_MODULE, EVENTS_SCHEMA_MODULE_DATA]),
        OldEvents::EventBus => parts.extend([EVENTS_BUS, EVENTS_BUS_DATA]),
    }
    if shape.components {
        parts.extend([COMPONENTS, COMPONENTS_DATA]);
    }
    for sql in parts {
        conn.execute_batch(sql)?;
    }
    Ok(())
}

fn strings(conn: &Connection, sql: &str, arg: &str) -> anyhow::Result<Vec<String>> {
    Ok(conn
        .prepare(sql)?
        .query_map([arg], |r| r.get(0))?
        .collect::<Result<_, _>>()?)
}

fn collapse(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every object of the schema, `kind name` to its definition in SQLite's own terms (so
/// that spacing in the original's DDL does not count): tables, their columns (type,
/// default, not null, key) and foreign keys, indexes (table, columns in order with
/// direction and collation, unique, origin, partial `WHERE`), triggers and views.
fn schema(conn: &Connection) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let objects: Vec<(String, String, String, Option<String>)> = conn
        .prepare("SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY type, name")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<Result<_, _>>()?;
    for (kind, name, table, sql) in objects {
        match kind.as_str() {
            "table" => {
                out.insert(format!("table {name}"), String::new());
                let mut cols = conn.prepare(
                    "SELECT name, type, \"notnull\", dflt_value, pk, hidden
                     FROM pragma_table_xinfo(?1)",
                )?;
                let mut rows = cols.query([&name])?;
                while let Some(r) = rows.next()? {
                    let column: String = r.get(0)?;
                    out.insert(
                        format!("column {name}.{column}"),
                        format!(
                            "type={:?} notnull={} default={:?} pk={} hidden={}",
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, Option<String>>(3)?,
                            r.get::<_, i64>(4)?,
                            r.get::<_, i64>(5)?
                        ),
                    );
                }
                let mut fks = conn.prepare(
                    "SELECT \"from\", \"table\", \"to\", on_update, on_delete
                     FROM pragma_foreign_key_list(?1)",
                )?;
                let mut rows = fks.query([&name])?;
                while let Some(r) = rows.next()? {
                    out.insert(
                        format!("foreign key {name}.{}", r.get::<_, String>(0)?),
                        format!(
                            "{}({:?}) on update {} on delete {}",
                            r.get::<_, String>(1)?,
                            r.get::<_, Option<String>>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, String>(4)?
                        ),
                    );
                }
            }
            "index" => {
                let (unique, origin, partial): (i64, String, i64) = conn.query_row(
                    "SELECT \"unique\", origin, partial FROM pragma_index_list(?1)
                     WHERE name = ?2",
                    params![table, name],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )?;
                let columns = conn
                    .prepare(
                        "SELECT coalesce(name, '<expr>') || ' ' || \"desc\" || ' ' || coll
                         FROM pragma_index_xinfo(?1) WHERE key = 1 ORDER BY seqno",
                    )?
                    .query_map([&name], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()?;
                let sql = sql.as_deref().map(collapse).unwrap_or_default();
                let filter = sql.to_uppercase().find(" WHERE ").map(|i| &sql[i + 7..]);
                out.insert(
                    format!("index {name}"),
                    format!(
                        "on {table} ({}) unique={unique} origin={origin} partial={partial} \
                         where={filter:?}",
                        columns.join(", ")
                    ),
                );
            }
            _ => {
                out.insert(
                    format!("{kind} {name}"),
                    format!(
                        "on {table}: {}",
                        sql.as_deref().map(collapse).unwrap_or_default()
                    ),
                );
            }
        }
    }
    Ok(out)
}

/// Each history query's plan (and that of `get`), as `EXPLAIN QUERY PLAN` reports it.
fn plans(conn: &Connection) -> anyhow::Result<Vec<(&'static str, String)>> {
    let queries = [
        HistoryOf::Simulation("x").query().0,
        HistoryOf::Analysis("x").query().0,
        HistoryOf::Optimization("x").query().0,
        HistoryOf::Type("x").query().0,
        HistoryOf::Correlation("x").query().0,
        EVENT_BY_ID,
    ];
    queries
        .into_iter()
        .map(|sql| {
            let plan: Vec<String> = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?
                .query_map(params!["x", 5], |r| r.get(3))?
                .collect::<Result<_, _>>()?;
            Ok((sql, plan.join("; ")))
        })
        .collect()
}

/// Bug caught: an adopted file missing what a fresh one has: the schema module's events
/// indexes, whose names the renamed old table took along, so that `CREATE INDEX IF NOT
/// EXISTS` skipped them and dropping the old table dropped them (a correlation or type
/// history then scanned every event); or an adoption that removed what the original left
/// (the components table and its indexes), on either backend.
#[test]
fn every_original_shape_adopts_to_the_fresh_schema_and_indexed_histories() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    for backend in [Backend::Pooled, Backend::Direct] {
        let fresh_path = dir.path().join(format!("fresh-{backend:?}.db"));
        let (fresh_db, _fresh_registry) = open(backend, &fresh_path)?;
        let fresh_conn = fresh_db.connection()?;
        let fresh = schema(&fresh_conn)?;
        let fresh_plans = plans(&fresh_conn)?;
        for (sql, plan) in &fresh_plans {
            assert!(
                plan.starts_with("SEARCH ecosystemiser_events USING INDEX")
                    && !plan.contains("TEMP B-TREE"),
                "fresh: {sql}: {plan}"
            );
        }
        // What the original's components table brings, which adoption must keep.
        let components_path = dir.path().join(format!("components-{backend:?}.db"));
        raw(&components_path)?.execute_batch(COMPONENTS)?;
        let components = schema(&raw(&components_path)?)?;

        for (i, shape) in shapes().into_iter().enumerate() {
            let path = dir.path().join(format!("adopted-{backend:?}-{i}.db"));
            build(&path, shape)?;
            let (db, _registry) = open(backend, &path)?;
            let conn = db.connection()?;
            let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
            assert_eq!(version, SCHEMA_VERSION as i64, "{backend:?} {shape:?}");
            let adopted = schema(&conn)?;
            let missing_or_changed: Vec<String> = fresh
                .iter()
                .filter(|(k, v)| adopted.get(*k) != Some(*v))
                .map(|(k, v)| format!("{k}: fresh {v:?}, adopted {:?}", adopted.get(k)))
                .collect();
            assert!(
                missing_or_changed.is_empty(),
                "{backend:?} {shape:?}:\n{}",
                missing_or_changed.join("\n")
            );
            let extra: BTreeMap<String, String> = adopted
                .into_iter()
                .filter(|(k, _)| !fresh.contains_key(k))
                .collect();
            let expected = if shape.components {
                components.clone()
            } else {
                BTreeMap::new()
            };
            assert_eq!(extra, expected, "{backend:?} {shape:?}: extra objects");
            for ((sql, fresh_plan), (_, plan)) in fresh_plans.iter().zip(plans(&conn)?) {
                assert!(
                    !plan.contains("SCAN ecosystemiser_events") && !plan.contains("TEMP B-TREE"),
                    "{backend:?} {shape:?}: {sql}: {plan}"
                );
                assert_eq!(&plan, fresh_plan, "{backend:?} {shape:?}: {sql}");
            }
        }
    }
    Ok(())
}

/// What someone added to a file of the original's schema-module shape: a column (and a run
/// id) on the events table, a partial index and a trigger on it, a view of it, a trigger on
/// another table that writes from it, and a column and an index on another table.
const ADDED: &str = "
ALTER TABLE ecosystemiser_events ADD COLUMN priority INTEGER NOT NULL DEFAULT 3;
ALTER TABLE ecosystemiser_events ADD COLUMN simulation_id TEXT;
UPDATE ecosystemiser_events SET priority = 7, simulation_id = 'sim-a' WHERE event_id = 'old-2';
CREATE INDEX my_urgent_events ON ecosystemiser_events (priority) WHERE priority > 5;
CREATE TABLE my_audit (event_id TEXT, what TEXT);
CREATE TRIGGER my_event_audit AFTER INSERT ON ecosystemiser_events
    BEGIN INSERT INTO my_audit VALUES (new.event_id, 'event'); END;
CREATE VIEW my_recent_events AS SELECT event_id, event_type, priority FROM ecosystemiser_events;
CREATE TRIGGER my_simulation_audit AFTER INSERT ON simulations
    BEGIN INSERT INTO my_audit SELECT max(event_id), 'simulation' FROM ecosystemiser_events; END;
ALTER TABLE simulations ADD COLUMN owner TEXT DEFAULT 'ops';
CREATE INDEX my_simulations_owner ON simulations (owner);
";

/// Bug caught: adoption dropping what it does not know: columns someone added to the old
/// events table not copied, its own indexes and triggers dropped with it, views and other
/// tables' triggers rewritten to the set-aside name (broken once it is dropped), a trigger
/// firing for every row carried over; or any other table's additions touched.
#[test]
fn what_someone_added_stays() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    for backend in [Backend::Pooled, Backend::Direct] {
        let path = dir.path().join(format!("added-{backend:?}.db"));
        for sql in [
            TABLES,
            TABLES_DATA,
            EVENTS_SCHEMA_MODULE,
            EVENTS_SCHEMA_MODULE_DATA,
            ADDED,
        ] {
            raw(&path)?.execute_batch(sql)?;
        }
        let before = schema(&raw(&path)?)?;
        let (db, _registry) = open(backend, &path)?;
        let conn = db.connection()?;
        let after = schema(&conn)?;
        for (k, v) in &before {
            // The events table itself is replaced; its added columns are checked below.
            if k.contains("ecosystemiser_events") {
                continue;
            }
            assert_eq!(after.get(k), Some(v), "{backend:?}: {k}");
        }
        for column in ["priority", "simulation_id"] {
            let k = format!("column ecosystemiser_events.{column}");
            assert_eq!(after.get(&k), before.get(&k), "{backend:?}: {k}");
        }
        let rows = strings(
            &conn,
            "SELECT event_id || ' ' || priority || ' ' || coalesce(simulation_id, '-')
             FROM ecosystemiser_events WHERE event_type LIKE ?1 ORDER BY seq",
            "%",
        )?;
        assert_eq!(rows, ["old-1 3 -", "old-2 7 sim-a"], "{backend:?}");
        let seen = "SELECT event_id FROM my_recent_events WHERE event_type LIKE ?1 ORDER BY 1";
        assert_eq!(
            strings(&conn, seen, "%")?,
            ["old-1", "old-2"],
            "{backend:?}"
        );
        let audit = "SELECT event_id || ' ' || what FROM my_audit WHERE what LIKE ?1";
        assert!(strings(&conn, audit, "%")?.is_empty(), "{backend:?}: fired");
        drop(conn);

        // The triggers work on the new table.
        crate::EventStore::new(&db).publish(&crate::Event::new("t", "s", serde_json::json!(1)))?;
        crate::Runs::new(&db).create_simulation(&crate::NewSimulation::new("s", "a", "b"))?;
        let conn = db.connection()?;
        assert_eq!(strings(&conn, audit, "%")?.len(), 2, "{backend:?}");
    }
    Ok(())
}

/// Bug caught: an addition adoption cannot carry over (an index, a view or a trigger naming
/// the old `source_agent` column, a `UNIQUE` or `CHECK` column whose constraint the copy
/// would not have, a trigger that copies whole rows of the events table or inserts into it
/// without a column list) silently dropped or broken instead of refused with the file left
/// as it was. The triggers were carried over, and SQLite checks a trigger's body only when
/// it fires: the file opened, and every publish (or every new simulation) failed after.
#[test]
fn what_cannot_be_carried_over_is_refused_and_left_as_it_was() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // A UNIQUE column can only be there from the start (`ADD COLUMN` refuses it).
    let with_unique = EVENTS_SCHEMA_MODULE.replace(
        "created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP",
        "created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, external_ref TEXT UNIQUE",
    );
    assert_ne!(with_unique, EVENTS_SCHEMA_MODULE);
    let cases = [
        (
            EVENTS_SCHEMA_MODULE,
            "CREATE INDEX my_by_agent ON ecosystemiser_events (source_agent)",
        ),
        (
            EVENTS_SCHEMA_MODULE,
            "CREATE VIEW my_agents AS SELECT DISTINCT source_agent FROM ecosystemiser_events",
        ),
        (&with_unique, ""),
        (
            EVENTS_SCHEMA_MODULE,
            "ALTER TABLE ecosystemiser_events ADD COLUMN level INTEGER CHECK (level > 0)",
        ),
        (
            EVENTS_SCHEMA_MODULE,
            "CREATE TABLE my_audit (who TEXT);
             CREATE TRIGGER my_audit_events AFTER INSERT ON ecosystemiser_events
                 BEGIN INSERT INTO my_audit VALUES (new.source_agent); END;",
        ),
        (
            EVENTS_SCHEMA_MODULE,
            "CREATE TRIGGER my_sim_event AFTER INSERT ON simulations BEGIN
                 INSERT INTO ecosystemiser_events (event_id, event_type, \"Source_Agent\",
                     timestamp, payload)
                 VALUES ('sim-' || new.simulation_id, 'created', 'db', 'now', '{}');
             END;",
        ),
        // Triggers that depend on the old table's width: a copy with `SELECT *`, and an
        // insert without a column list. Neither names a column the new table lacks.
        (
            EVENTS_SCHEMA_MODULE,
            "CREATE TABLE my_events_copy AS SELECT * FROM ecosystemiser_events WHERE 0;
             CREATE TRIGGER my_copy AFTER INSERT ON ecosystemiser_events BEGIN
                 INSERT INTO my_events_copy
                     SELECT * FROM ecosystemiser_events WHERE event_id = new.event_id;
             END;",
        ),
        (
            EVENTS_SCHEMA_MODULE,
            "CREATE TRIGGER my_sim_row AFTER INSERT ON simulations BEGIN
                 INSERT INTO ecosystemiser_events VALUES ('sim-' || new.simulation_id,
                     'created', 'db', 'now', NULL, '{}', NULL, NULL);
             END;",
        ),
        // A foreign key to the old table, in any case: the rename would rewrite it to the
        // set-aside name, which is dropped, and the table could take no row again.
        (
            EVENTS_SCHEMA_MODULE,
            "CREATE TABLE my_notes (note TEXT,
                 event_id TEXT REFERENCES Ecosystemiser_Events (event_id));",
        ),
        // A view of the whole old table: it would read the new one, whose source column
        // is `source`, and the queries reading `source_agent` from it would fail.
        (
            EVENTS_SCHEMA_MODULE,
            "CREATE VIEW my_events AS SELECT * FROM ecosystemiser_events",
        ),
    ];
    for backend in [Backend::Pooled, Backend::Direct] {
        for (i, (events, added)) in cases.iter().enumerate() {
            let path = dir.path().join(format!("refused-{backend:?}-{i}.db"));
            for sql in [TABLES, events, EVENTS_SCHEMA_MODULE_DATA, added] {
                raw(&path)?.execute_batch(sql)?;
            }
            let dump = |conn: &Connection| -> anyhow::Result<_> {
                let events = strings(
                    conn,
                    "SELECT group_concat(event_id) FROM ecosystemiser_events WHERE ?1",
                    "1",
                )?;
                let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
                Ok((schema(conn)?, events, version))
            };
            let before = dump(&raw(&path)?)?;
            let err = open(backend, &path).err();
            assert!(
                matches!(err, Some(Error::Migration { .. })),
                "{backend:?} case {i}: {err:?}"
            );
            assert_eq!(dump(&raw(&path)?)?, before, "{backend:?} {added}");
        }
    }
    Ok(())
}

/// Bug caught: what someone added to the old events table, naming it in another case
/// (SQLite's names match in any case and keep the case they were written in), was not
/// found as the table's own: a trigger `ON Ecosystemiser_Events` went with the set-aside
/// table and was dropped with it, and adoption reported success; and a table declared as
/// `Ecosystemiser_Events` was refused with a bare "no rows" error.
#[test]
fn what_someone_added_naming_the_events_table_in_another_case_stays() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let events = EVENTS_SCHEMA_MODULE.replace(
        "CREATE TABLE ecosystemiser_events (",
        "CREATE TABLE Ecosystemiser_Events (",
    );
    assert_ne!(events, EVENTS_SCHEMA_MODULE);
    let added = "CREATE TABLE my_audit (event_id TEXT);
        CREATE TRIGGER my_event_audit AFTER INSERT ON ECOSYSTEMISER_EVENTS
            BEGIN INSERT INTO my_audit VALUES (new.event_id); END;
        CREATE INDEX my_by_time ON Ecosystemiser_Events (timestamp);";
    for backend in [Backend::Pooled, Backend::Direct] {
        let path = dir.path().join(format!("case-{backend:?}.db"));
        for sql in [TABLES, &events, EVENTS_SCHEMA_MODULE_DATA, added] {
            raw(&path)?.execute_batch(sql)?;
        }
        let (db, _registry) = open(backend, &path)?;
        crate::EventStore::new(&db).publish(&crate::Event::new("t", "s", serde_json::json!(1)))?;
        let conn = db.connection()?;
        let audit = strings(&conn, "SELECT event_id FROM my_audit WHERE ?1", "1")?;
        assert_eq!(
            audit.len(),
            1,
            "{backend:?}: the trigger did not fire: {audit:?}"
        );
        let index = "SELECT name FROM sqlite_schema WHERE type = 'index' AND name = ?1";
        assert_eq!(
            strings(&conn, index, "my_by_time")?,
            ["my_by_time"],
            "{backend:?}"
        );
        let old = "SELECT event_id FROM ecosystemiser_events WHERE event_id LIKE ?1 ORDER BY 1";
        assert_eq!(
            strings(&conn, old, "old-%")?,
            ["old-1", "old-2"],
            "{backend:?}"
        );
    }
    Ok(())
}

/// Bug caught: an index of the old events table under one of the names the new table's
/// own indexes replace was dropped by its name alone, whatever it was: someone's `UNIQUE`
/// index on `(simulation_id, event_type)` went with the old table, and the duplicates it
/// refused were stored from then on, without a word. Only the index the original code made
/// under that name is replaced; one made otherwise is carried over.
#[test]
fn an_index_under_a_replaced_name_made_otherwise_stays() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let unique = EVENTS_BUS.replace(
        "CREATE INDEX idx_ecosys_events_simulation ON ecosystemiser_events(simulation_id, timestamp);",
        "CREATE UNIQUE INDEX idx_ecosys_events_simulation
             ON ecosystemiser_events(simulation_id, event_type);",
    );
    let descending = EVENTS_BUS.replace(
        "ON ecosystemiser_events(analysis_id, timestamp)",
        "ON ecosystemiser_events(analysis_id, timestamp DESC)",
    );
    assert_ne!(unique, EVENTS_BUS);
    assert_ne!(descending, EVENTS_BUS);
    for backend in [Backend::Pooled, Backend::Direct] {
        for (events, kept) in [
            (&unique, "idx_ecosys_events_simulation"),
            (&descending, "idx_ecosys_events_analysis"),
        ] {
            let path = dir.path().join(format!("{kept}-{backend:?}.db"));
            for sql in [events.as_str(), EVENTS_BUS_DATA] {
                raw(&path)?.execute_batch(sql)?;
            }
            let key = format!("index {kept}");
            let before = schema(&raw(&path)?)?.remove(&key);
            assert!(before.is_some(), "{backend:?}: no {key} to begin with");
            let (db, _registry) = open(backend, &path)?;
            let conn = db.connection()?;
            let after = schema(&conn)?.remove(&key);
            assert_eq!(after, before, "{backend:?}: {key}");
        }
        // The unique index still refuses a duplicate.
        let path = dir
            .path()
            .join(format!("idx_ecosys_events_simulation-{backend:?}.db"));
        let (db, _registry) = open(backend, &path)?;
        let events = crate::EventStore::new(&db);
        let event = || {
            let mut e = crate::Event::new("simulation.started", "solver", serde_json::json!(1));
            e.simulation_id = Some("sim-a".to_owned());
            e
        };
        assert!(
            events.publish(&event()).is_err(),
            "{backend:?}: a duplicate was stored"
        );
    }
    Ok(())
}

/// Bug caught: a refused adoption of a file in the original code's rollback-journal mode
/// left it changed (the registry switched it to WAL before the migration ran: header bytes
/// 18 and 19 went from 1 to 2), and left the name registered in the application's
/// registry, so a write by name reached the file whose migration had been refused.
#[test]
fn a_refused_adoption_leaves_the_file_byte_for_byte_and_the_name_unregistered() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("original.db");
    {
        // An empty file is an empty database; the core's open leaves its journal mode alone.
        std::fs::write(&path, b"")?;
        let conn = open_connection(&DbName::new("original")?, &path, &DbConfig::default())?;
        for sql in [
            TABLES,
            EVENTS_SCHEMA_MODULE,
            EVENTS_SCHEMA_MODULE_DATA,
            "CREATE INDEX my_by_agent ON ecosystemiser_events (source_agent)",
        ] {
            conn.execute_batch(sql)?;
        }
    }
    let before = std::fs::read(&path)?;
    assert_eq!(
        before[18..20],
        [1, 1],
        "the fixture is not in rollback-journal mode"
    );
    let registry = Registry::new();
    let err = EcoDb::with_registry(&registry, &Settings::new(&path)).err();
    assert!(matches!(err, Some(Error::Migration { .. })), "{err:?}");
    assert!(std::fs::read(&path)? == before, "the refused file changed");
    let name = DbName::new("ecosystemiser")?;
    assert!(
        registry.handle(&name).is_err(),
        "the refused file stays registered"
    );
    Ok(())
}
