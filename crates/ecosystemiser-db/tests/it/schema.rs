//! Migrations: from an empty file, adopting files made by the original Python code (the
//! events table in either of its shapes, the separate components table), and refusing files
//! it must not touch.
//!
//! The original's DDL and rows are in `tests/fixtures/original/`, shared with the unit tests
//! that compare adopted schemas with fresh ones.

use std::path::Path;

use ecosystemiser_db::{
    ComponentLibrary, EcoDb, Error, EventStore, HistoryOf, RunStatus, Runs, SCHEMA_VERSION,
    StatusUpdate,
};
use hive_db_core::Registry;
use hive_db_core::rusqlite::{Connection, types::Value};
use serde_json::json;

use crate::common::{BOTH, Kind, open, settings};

const PY_SCHEMA: &str = include_str!("../fixtures/original/schema.sql");

const PY_EVENTS_SCHEMA_MODULE: &str = include_str!("../fixtures/original/events_schema_module.sql");

const PY_EVENTS_BUS: &str = include_str!("../fixtures/original/events_bus.sql");

const PY_COMPONENTS: &str = include_str!("../fixtures/original/components.sql");

const PY_DATA: &str = include_str!("../fixtures/original/data.sql");

const PY_EVENTS_SCHEMA_MODULE_DATA: &str =
    include_str!("../fixtures/original/events_schema_module_data.sql");

const PY_EVENTS_BUS_DATA: &str = include_str!("../fixtures/original/events_bus_data.sql");

const PY_COMPONENTS_DATA: &str = include_str!("../fixtures/original/components_data.sql");

fn build(path: &Path, sql: &[&str]) -> anyhow::Result<()> {
    let conn = Connection::open(path)?;
    for s in sql {
        conn.execute_batch(s)?;
    }
    Ok(())
}

/// Rows of `table` as text, in insertion order.
fn rows(conn: &Connection, table: &str, cols: &str) -> anyhow::Result<Vec<String>> {
    let mut stmt = conn.prepare(&format!("SELECT {cols} FROM {table} ORDER BY rowid"))?;
    let n = stmt.column_count();
    let out = stmt
        .query_map([], |r| {
            (0..n)
                .map(|i| r.get::<_, Value>(i).map(|v| format!("{v:?}")))
                .collect::<Result<Vec<_>, _>>()
                .map(|v| v.join("|"))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(out)
}

const KEPT_TABLES: &[&str] = &[
    "simulations",
    "simulation_metrics",
    "studies",
    "study_simulations",
    "analysis_runs",
    "analysis_results",
    "optimization_runs",
    "optimization_iterations",
    "component_types",
    "event_subscriptions",
];

/// The kept tables' rows in the original's columns (later versions add columns, NULL in
/// the rows they find).
fn snapshot(path: &Path) -> anyhow::Result<Vec<Vec<String>>> {
    let conn = Connection::open(path)?;
    let original = Connection::open_in_memory()?;
    original.execute_batch(PY_SCHEMA)?;
    KEPT_TABLES
        .iter()
        .map(|t| {
            let cols: Vec<String> = original
                .prepare("SELECT name FROM pragma_table_info(?1)")?
                .query_map([t], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            rows(&conn, t, &cols.join(", "))
        })
        .collect()
}

fn user_version(path: &Path) -> anyhow::Result<i64> {
    Ok(Connection::open(path)?.pragma_query_value(None, "user_version", |r| r.get(0))?)
}

/// Bug caught: a fresh file left without the tables or indexes, or at another version.
#[test]
fn an_empty_file_gets_the_whole_schema() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    for (kind, file) in [(Kind::Pooled, "p.db"), (Kind::Direct, "d.db")] {
        let (db, _registry) = open(kind, dir.path(), file)?;
        let conn = db.connection()?;
        let names: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%' ORDER BY name")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for t in KEPT_TABLES.iter().chain(&[
            "component_specs",
            "version_history",
            "ecosystemiser_events",
        ]) {
            assert!(names.iter().any(|n| n == t), "{kind:?}: no table {t}");
        }
        let indexes = names.iter().filter(|n| n.starts_with("idx_")).count();
        // The original 13, version 2's 7, less version 3's 4 replaced by 3.
        assert_eq!(indexes, 13 + 7 - 4 + 3, "{kind:?}: {names:?}");
        drop(conn);
        assert_eq!(user_version(db.path())?, SCHEMA_VERSION as i64);
    }
    // The folder is made on first open, private.
    let nested = dir.path().join("a").join("b");
    EcoDb::direct(&settings(&nested, "eco.db"))?;
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&nested)?.permissions().mode() & 0o777,
        0o700
    );
    Ok(())
}

/// Bug caught: the events table dropped or rows lost when adopting the schema module's shape
/// (the original event bus dropped it), payloads that were stored as numbers unreadable.
#[test]
fn adopts_a_file_with_the_schema_modules_events_table() -> anyhow::Result<()> {
    for kind in BOTH {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("eco.db");
        build(
            &path,
            &[
                PY_SCHEMA,
                PY_EVENTS_SCHEMA_MODULE,
                PY_DATA,
                PY_EVENTS_SCHEMA_MODULE_DATA,
            ],
        )?;
        let before = snapshot(&path)?;
        let (db, _registry) = open(kind, dir.path(), "eco.db")?;
        assert_eq!(snapshot(&path)?, before, "{kind:?}: a kept table changed");
        assert_eq!(user_version(&path)?, SCHEMA_VERSION as i64);
        let events = EventStore::new(&db);
        let wf = events.history(HistoryOf::Correlation("wf-1"), 10)?;
        assert_eq!(wf.len(), 2);
        assert_eq!(wf[0].event_id, "old-2");
        assert_eq!(wf[0].source, "cli");
        assert_eq!(wf[0].payload, json!(5));
        assert_eq!(wf[0].metadata, Some(json!({"m": true})));
        assert_eq!(wf[1].event_id, "old-1");
        assert_eq!(wf[1].timestamp, "2025-09-01T10:00:00+00:00");
        assert_eq!(wf[1].metadata, None);
        // Both old defaults of `battery`: the newest stays the default.
        let lib = ComponentLibrary::new(&db);
        assert_eq!(lib.spec("battery", None, None)?.name, "nmc");
        assert_eq!(lib.list_specs(Some("battery"))?.len(), 2);
    }
    Ok(())
}

/// Bug caught: the event bus's shape (with the run ids) or the repository's `components`
/// table losing rows, or simulation events that cannot be read back.
#[test]
fn adopts_a_file_with_the_event_bus_table_and_components() -> anyhow::Result<()> {
    for kind in BOTH {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("eco.db");
        build(
            &path,
            &[
                PY_SCHEMA,
                PY_EVENTS_BUS,
                PY_COMPONENTS,
                PY_DATA,
                PY_EVENTS_BUS_DATA,
                PY_COMPONENTS_DATA,
            ],
        )?;
        let before = snapshot(&path)?;
        let components_before = rows(&Connection::open(&path)?, "components", "*")?;
        let (db, _registry) = open(kind, dir.path(), "eco.db")?;
        let after = snapshot(&path)?;
        // component_types gains the two classes of the components table, after the old rows.
        for (t, (b, a)) in KEPT_TABLES.iter().zip(before.iter().zip(&after)) {
            if *t == "component_types" {
                assert_eq!(&a[..b.len()], &b[..], "{kind:?}");
                assert_eq!(a.len(), b.len() + 2, "{kind:?}");
            } else {
                assert_eq!(a, b, "{kind:?}: {t} changed");
            }
        }
        assert_eq!(
            rows(&Connection::open(&path)?, "components", "*")?,
            components_before
        );

        let events = EventStore::new(&db);
        let sim = events.simulation_history("sim-a", 10)?;
        assert_eq!(sim.len(), 1);
        assert_eq!(
            (sim[0].event_id.as_str(), sim[0].source.as_str()),
            ("bus-1", "solver")
        );
        assert_eq!(sim[0].payload, json!({"n": 1}));
        assert_eq!(sim[0].metadata, Some(json!({})));
        let an = events.analysis_history("an-1", 10)?;
        assert_eq!(an[0].event_id, "bus-2");
        let opt = events.optimization_history("opt-1", 10)?;
        assert_eq!(opt[0].payload, json!([1, 2]));
        assert_eq!(events.history(HistoryOf::Correlation("wf-2"), 10)?.len(), 2);

        let lib = ComponentLibrary::new(&db);
        let sonnen = lib.spec("Battery", Some("sonnen_eco_10"), None)?;
        assert_eq!(sonnen.category, "energy");
        assert_eq!(sonnen.technical["capacity_kwh"], json!(10));
        assert_eq!(sonnen.economic, json!({"capex": 9000}).as_object().cloned());
        assert_eq!(
            sonnen.metadata,
            json!({"vendor": "sonnen"}).as_object().cloned()
        );
        let grid = lib.spec("WaterGrid", Some("water_grid"), Some("1.0.0"))?;
        assert_eq!(grid.technical["max_flow"], json!(5.5));
        assert_eq!(grid.economic, None);
    }
    Ok(())
}

/// Bug caught: a file from the original code adopted without the version 4 columns, so
/// the failure reason of its optimization runs and studies is still dropped.
#[test]
fn an_original_file_stores_error_messages_of_its_runs() -> anyhow::Result<()> {
    for kind in BOTH {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("eco.db");
        build(
            &path,
            &[PY_SCHEMA, PY_EVENTS_BUS, PY_DATA, PY_EVENTS_BUS_DATA],
        )?;
        let (db, _registry) = open(kind, dir.path(), "eco.db")?;
        assert_eq!(user_version(&path)?, SCHEMA_VERSION as i64);
        let runs = Runs::new(&db);
        let mut failed = StatusUpdate::to(RunStatus::Failed);
        failed.error_message = Some("out of memory".into());
        runs.update_optimization_status("opt-1", &failed)?;
        runs.update_study_status("study-1", &failed)?;
        let opt = runs
            .optimization("opt-1")?
            .ok_or_else(|| anyhow::anyhow!("no opt-1"))?;
        assert_eq!(
            (
                opt.generations_completed,
                opt.iterations,
                opt.error_message.as_deref()
            ),
            (2, 2, Some("out of memory"))
        );
        let study = runs
            .study("study-1")?
            .ok_or_else(|| anyhow::anyhow!("no study-1"))?;
        assert_eq!(
            (study.linked_simulations, study.error_message.as_deref()),
            (2, Some("out of memory"))
        );
    }
    Ok(())
}

/// Bug caught: a second open re-running a migration, or a migrated file drifting.
#[test]
fn opening_again_changes_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("eco.db");
    build(
        &path,
        &[PY_SCHEMA, PY_EVENTS_BUS, PY_DATA, PY_EVENTS_BUS_DATA],
    )?;
    drop(EcoDb::direct(&settings(dir.path(), "eco.db"))?);
    let once = snapshot(&path)?;
    let events_once = rows(&Connection::open(&path)?, "ecosystemiser_events", "*")?;
    drop(EcoDb::direct(&settings(dir.path(), "eco.db"))?);
    assert_eq!(snapshot(&path)?, once);
    assert_eq!(
        rows(&Connection::open(&path)?, "ecosystemiser_events", "*")?,
        events_once
    );
    Ok(())
}

/// Bug caught: a file from a newer version of this code migrated down, written to, or
/// switched to WAL before the refusal.
#[test]
fn a_newer_schema_is_refused_and_left_untouched() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("eco.db");
    build(
        &path,
        &["CREATE TABLE future (x); PRAGMA user_version = 99;"],
    )?;
    let bytes = std::fs::read(&path)?;
    let s = settings(dir.path(), "eco.db");
    let direct = EcoDb::direct(&s).err();
    assert!(
        matches!(direct, Some(Error::SchemaTooNew { found: 99, .. })),
        "{direct:?}"
    );
    let registry = Registry::new();
    let pooled = EcoDb::with_registry(&registry, &s).err();
    assert!(
        matches!(pooled, Some(Error::SchemaTooNew { found: 99, ref path, .. }) if path.ends_with("eco.db")),
        "{pooled:?}"
    );
    assert_eq!(std::fs::read(&path)?, bytes);
    assert!(!dir.path().join("eco.db-wal").exists());
    Ok(())
}

/// Bug caught: a file that is not a database reported as a generic failure, without its
/// path, or overwritten.
#[test]
fn a_file_that_is_not_a_database_is_a_typed_error() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("eco.db");
    let junk = "this is a text file, not SQLite\n".repeat(200);
    std::fs::write(&path, &junk)?;
    let s = settings(dir.path(), "eco.db");
    for result in [
        EcoDb::direct(&s),
        EcoDb::with_registry(&Registry::new(), &s),
    ] {
        let err = result.err();
        assert!(
            matches!(err, Some(Error::NotADatabase { ref path, .. }) if path.ends_with("eco.db")),
            "{err:?}"
        );
        assert!(
            err.map(|e| e.to_string())
                .unwrap_or_default()
                .contains("eco.db")
        );
    }
    assert_eq!(std::fs::read_to_string(&path)?, junk);
    Ok(())
}

/// Bug caught: a schema version added in the code while docs/MIGRATION.md kept stating the
/// old one (it said 2 when the code was at 3).
#[test]
fn migration_doc_states_the_current_schema_version() {
    let doc = include_str!("../../../../docs/MIGRATION.md");
    let doc = doc.split_whitespace().collect::<Vec<_>>().join(" ");
    let stated = format!("`PRAGMA user_version` (now {SCHEMA_VERSION})");
    assert!(
        doc.contains(&stated),
        "docs/MIGRATION.md does not say {stated:?}"
    );
    let describes = format!("Version {SCHEMA_VERSION} adds");
    assert!(
        doc.contains(&describes),
        "docs/MIGRATION.md does not say what {describes:?}"
    );
}

/// Bug caught: opening the database again while the registry has it checked and migrated
/// the file on a connection of its own, opened on the path without the registry's identity
/// check: with another file renamed over the path, that connection read the other file with
/// the registered file's `-wal`, and its close copied the registered commits into the other
/// file and deleted the `-wal`.
#[test]
fn opening_again_never_reads_a_file_renamed_over_the_registered_path() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let registry = Registry::new();
    let s = settings(dir.path(), "eco.db");
    let db = EcoDb::with_registry(&registry, &s)?;
    let name = hive_db_core::DbName::new("ecosystemiser")?;
    // Commits kept in the `-wal`, as they are between checkpoints, on a connection held
    // throughout.
    let held = registry.get(&name)?;
    held.execute_batch(
        "PRAGMA wal_autocheckpoint = 0;
         CREATE TABLE kept (v); INSERT INTO kept VALUES ('registered');",
    )?;
    let path = db.path().to_path_buf();
    let wal = std::path::PathBuf::from(format!("{}-wal", path.display()));
    let other = dir.path().join("other.db");
    drop(EcoDb::direct(&settings(dir.path(), "other.db"))?);
    std::fs::rename(&path, dir.path().join("moved.db"))?;
    std::fs::rename(&other, &path)?;
    // Refused by the registry (the file changed), or not: either way nothing reads the
    // other file through the registered `-wal`.
    let _again = EcoDb::with_registry(&registry, &s);
    assert!(wal.exists(), "the registered file's -wal was deleted");
    let v: String = held.query_row("SELECT v FROM kept", [], |r| r.get(0))?;
    assert_eq!(v, "registered", "the registered file lost its commits");
    Ok(())
}
