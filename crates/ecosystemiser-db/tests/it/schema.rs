//! Migrations: from an empty file, adopting files made by the original Python code (the
//! events table in either of its shapes, the separate components table), and refusing files
//! it must not touch.
//!
//! Over 400 lines on purpose: the old schemas' DDL and rows it adopts are spelled out here,
//! next to the checks of every row.

use std::path::Path;

use ecosystemiser_db::{ComponentLibrary, EcoDb, Error, EventStore, HistoryOf, SCHEMA_VERSION};
use hive_db_core::Registry;
use hive_db_core::rusqlite::{Connection, types::Value};
use serde_json::json;

use crate::common::{BOTH, Kind, open, settings};

/// The original schema module's tables, with its events table (`source_agent`).
const PY_SCHEMA: &str = r#"
CREATE TABLE simulations (simulation_id TEXT PRIMARY KEY, system_config_path TEXT NOT NULL,
    solver_type TEXT NOT NULL, status TEXT NOT NULL, created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    completed_at TIMESTAMP, duration_seconds REAL, results_path TEXT, error_message TEXT, metadata JSON);
CREATE TABLE simulation_metrics (id INTEGER PRIMARY KEY AUTOINCREMENT, simulation_id TEXT NOT NULL,
    metric_name TEXT NOT NULL, metric_value REAL NOT NULL, unit TEXT,
    timestamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (simulation_id) REFERENCES simulations (simulation_id));
CREATE INDEX idx_simulations_status ON simulations(status, created_at);
CREATE INDEX idx_simulation_metrics_sim ON simulation_metrics(simulation_id, metric_name);
CREATE TABLE studies (study_id TEXT PRIMARY KEY, study_type TEXT NOT NULL, status TEXT NOT NULL,
    total_simulations INTEGER, completed_simulations INTEGER DEFAULT 0,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, completed_at TIMESTAMP, duration_seconds REAL,
    results_path TEXT, configuration JSON, metadata JSON);
CREATE TABLE study_simulations (id INTEGER PRIMARY KEY AUTOINCREMENT, study_id TEXT NOT NULL,
    simulation_id TEXT NOT NULL, parameter_set JSON, sequence_number INTEGER,
    FOREIGN KEY (study_id) REFERENCES studies (study_id),
    FOREIGN KEY (simulation_id) REFERENCES simulations (simulation_id));
CREATE INDEX idx_studies_status ON studies(status, created_at);
CREATE INDEX idx_study_simulations ON study_simulations(study_id, sequence_number);
CREATE TABLE analysis_runs (analysis_id TEXT PRIMARY KEY, source_type TEXT NOT NULL,
    source_id TEXT NOT NULL, status TEXT NOT NULL, strategies_executed JSON,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, completed_at TIMESTAMP, duration_seconds REAL,
    results_path TEXT, error_message TEXT, metadata JSON);
CREATE TABLE analysis_results (id INTEGER PRIMARY KEY AUTOINCREMENT, analysis_id TEXT NOT NULL,
    strategy_name TEXT NOT NULL, result_type TEXT NOT NULL, result_data JSON NOT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (analysis_id) REFERENCES analysis_runs (analysis_id));
CREATE INDEX idx_analysis_runs_source ON analysis_runs(source_type, source_id);
CREATE INDEX idx_analysis_results ON analysis_results(analysis_id, strategy_name);
CREATE TABLE optimization_runs (optimization_id TEXT PRIMARY KEY, algorithm_type TEXT NOT NULL,
    objective_function TEXT NOT NULL, status TEXT NOT NULL, generations_completed INTEGER DEFAULT 0,
    best_fitness REAL, created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, completed_at TIMESTAMP,
    duration_seconds REAL, results_path TEXT, configuration JSON, metadata JSON);
CREATE TABLE optimization_iterations (id INTEGER PRIMARY KEY AUTOINCREMENT,
    optimization_id TEXT NOT NULL, generation INTEGER NOT NULL, individual_id TEXT NOT NULL,
    fitness REAL NOT NULL, parameters JSON NOT NULL, timestamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (optimization_id) REFERENCES optimization_runs (optimization_id));
CREATE INDEX idx_optimization_runs_status ON optimization_runs(status, created_at);
CREATE INDEX idx_optimization_iterations ON optimization_iterations(optimization_id, generation, fitness);
CREATE TABLE component_types (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE NOT NULL,
    category TEXT NOT NULL, description TEXT, created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE component_specs (id INTEGER PRIMARY KEY AUTOINCREMENT,
    component_type_id INTEGER NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL DEFAULT '1.0.0',
    technical_params JSON NOT NULL, economic_params JSON, environmental_params JSON, metadata JSON,
    is_default BOOLEAN DEFAULT 0, created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (component_type_id) REFERENCES component_types (id),
    UNIQUE(component_type_id, name, version));
CREATE INDEX idx_component_type ON component_specs (component_type_id);
CREATE INDEX idx_is_default ON component_specs (is_default);
CREATE TABLE event_subscriptions (id INTEGER PRIMARY KEY AUTOINCREMENT, subscriber_id TEXT NOT NULL,
    event_type TEXT NOT NULL, callback_url TEXT, active BOOLEAN DEFAULT 1,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP);
CREATE INDEX idx_event_subscriptions ON event_subscriptions(event_type, active);
"#;

const PY_EVENTS_SCHEMA_MODULE: &str = r#"
CREATE TABLE ecosystemiser_events (event_id TEXT PRIMARY KEY, event_type TEXT NOT NULL,
    source_agent TEXT NOT NULL, timestamp TEXT NOT NULL, correlation_id TEXT,
    payload JSON NOT NULL, metadata JSON, created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP);
CREATE INDEX idx_ecosystemiser_events_type ON ecosystemiser_events(event_type, timestamp);
CREATE INDEX idx_ecosystemiser_events_correlation ON ecosystemiser_events(correlation_id);
"#;

const PY_EVENTS_BUS: &str = r#"
CREATE TABLE ecosystemiser_events (event_id TEXT PRIMARY KEY, event_type TEXT NOT NULL,
    timestamp TEXT NOT NULL, source_component TEXT NOT NULL, correlation_id TEXT,
    simulation_id TEXT, analysis_id TEXT, optimization_id TEXT, payload TEXT NOT NULL,
    metadata TEXT NOT NULL, created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP);
CREATE INDEX idx_ecosys_events_simulation ON ecosystemiser_events(simulation_id, timestamp);
CREATE INDEX idx_ecosys_events_analysis ON ecosystemiser_events(analysis_id, timestamp);
CREATE INDEX idx_ecosys_events_optimization ON ecosystemiser_events(optimization_id, timestamp);
"#;

/// The component repository's own table.
const PY_COMPONENTS: &str = r#"
CREATE TABLE components (id TEXT PRIMARY KEY, category TEXT NOT NULL, component_class TEXT NOT NULL,
    technical_data TEXT NOT NULL, economic_data TEXT, metadata TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP);
CREATE INDEX idx_components_category ON components(category);
CREATE INDEX idx_components_class ON components(component_class);
"#;

/// Rows in every original table, as the Python code wrote them.
const PY_DATA: &str = r#"
INSERT INTO simulations VALUES ('sim-a', 'sys/a.yml', 'milp', 'completed', '2025-09-01 10:00:00',
    '2025-09-01 10:05:00', 300.5, '/r/a', NULL, '{"run": 1}');
INSERT INTO simulations (simulation_id, system_config_path, solver_type, status)
    VALUES ('sim-b', 'sys/b.yml', 'rule_based', 'failed');
INSERT INTO simulation_metrics (simulation_id, metric_name, metric_value, unit)
    VALUES ('sim-a', 'cost', 12.5, 'EUR'), ('sim-a', 'co2', 3.25, 'kg');
INSERT INTO studies (study_id, study_type, status, total_simulations, completed_simulations, configuration)
    VALUES ('study-1', 'parametric', 'running', 2, 1, '{"grid": [1, 2]}');
INSERT INTO study_simulations (study_id, simulation_id, parameter_set, sequence_number)
    VALUES ('study-1', 'sim-a', '{"p": 1}', 0), ('study-1', 'sim-b', '{"p": 2}', 1);
INSERT INTO analysis_runs (analysis_id, source_type, source_id, status, strategies_executed)
    VALUES ('an-1', 'simulation', 'sim-a', 'completed', '["economic"]');
INSERT INTO analysis_results (analysis_id, strategy_name, result_type, result_data)
    VALUES ('an-1', 'economic', 'kpi', '{"lcoe": 0.12}');
INSERT INTO optimization_runs (optimization_id, algorithm_type, objective_function, status,
    generations_completed, best_fitness) VALUES ('opt-1', 'ga', 'cost', 'running', 2, 0.5);
INSERT INTO optimization_iterations (optimization_id, generation, individual_id, fitness, parameters)
    VALUES ('opt-1', 0, 'i0', 0.9, '{"x": 1}'), ('opt-1', 1, 'i1', 0.5, '{"x": 2}');
INSERT INTO component_types (name, category, description) VALUES ('battery', 'energy', 'storage');
INSERT INTO component_specs (component_type_id, name, version, technical_params, is_default)
    VALUES (1, 'lfp', '1.0.0', '{"capacity_kwh": 10}', 1), (1, 'nmc', '1.0.0', '{"capacity_kwh": 12}', 1);
INSERT INTO event_subscriptions (subscriber_id, event_type, callback_url)
    VALUES ('ui', 'simulation.*', 'http://localhost/cb');
"#;

const PY_EVENTS_SCHEMA_MODULE_DATA: &str = r#"
INSERT INTO ecosystemiser_events (event_id, event_type, source_agent, timestamp, correlation_id, payload, metadata)
    VALUES ('old-1', 'simulation.started', 'cli', '2025-09-01T10:00:00+00:00', 'wf-1', '{"n": 1}', NULL),
           ('old-2', 'simulation.completed', 'cli', '2025-09-01T10:05:00+00:00', 'wf-1', '5', '{"m": true}');
"#;

const PY_EVENTS_BUS_DATA: &str = r#"
INSERT INTO ecosystemiser_events (event_id, event_type, timestamp, source_component, correlation_id,
    simulation_id, analysis_id, optimization_id, payload, metadata)
    VALUES ('bus-1', 'simulation.started', '2025-09-01T10:00:00+00:00', 'solver', 'wf-2', 'sim-a', NULL, NULL, '{"n": 1}', '{}'),
           ('bus-2', 'analysis.completed', '2025-09-01T10:06:00+00:00', 'analyser', 'wf-2', NULL, 'an-1', NULL, '{"kpi": 0.12}', '{}'),
           ('bus-3', 'optimization.generation', '2025-09-01T10:07:00+00:00', 'ga', NULL, NULL, NULL, 'opt-1', '[1, 2]', '{"g": 1}');
"#;

const PY_COMPONENTS_DATA: &str = r#"
INSERT INTO components (id, category, component_class, technical_data, economic_data, metadata)
    VALUES ('sonnen_eco_10', 'energy', 'Battery', '{"capacity_kwh": 10}', '{"capex": 9000}', '{"vendor": "sonnen"}'),
           ('water_grid', 'water', 'WaterGrid', '{"max_flow": 5.5}', NULL, NULL);
"#;

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

fn snapshot(path: &Path) -> anyhow::Result<Vec<Vec<String>>> {
    let conn = Connection::open(path)?;
    KEPT_TABLES.iter().map(|t| rows(&conn, t, "*")).collect()
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
