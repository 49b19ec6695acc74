//! The shared pool and the direct fallback behave the same: same PRAGMAs, same results.

use std::time::Duration;

use ecosystemiser_db::{
    BackendKind, ComponentLibrary, ComponentSpec, EcoDb, Event, EventStore, Metric, NewSimulation,
    RunStatus, Runs, Settings, StatusUpdate,
};
use hive_db_core::rusqlite::Connection;
use hive_db_core::rusqlite::config::DbConfig as SqliteConfig;
use hive_db_core::rusqlite::types::Value;
use hive_db_core::{DbConfig, Registry, Synchronous};
use serde_json::json;

use crate::common::{Kind, open};

/// Every per-connection and per-file setting a connection can report.
const PRAGMAS: &[&str] = &[
    "journal_mode",
    "synchronous",
    "cache_size",
    "foreign_keys",
    "temp_store",
    "busy_timeout",
    "user_version",
    "wal_autocheckpoint",
    "page_size",
    "auto_vacuum",
    "encoding",
    "recursive_triggers",
    "secure_delete",
    "automatic_index",
    "cell_size_check",
    "query_only",
    "trusted_schema",
    "defer_foreign_keys",
    "mmap_size",
    "journal_size_limit",
    "locking_mode",
    "legacy_alter_table",
    "reverse_unordered_selects",
    "ignore_check_constraints",
    "cache_spill",
    "threads",
    "hard_heap_limit",
    "soft_heap_limit",
    "application_id",
];

/// Every setting in `PRAGMAS`, and defensive mode (a setting the core makes that no PRAGMA
/// reports).
fn pragmas(conn: &Connection) -> hive_db_core::rusqlite::Result<Vec<(String, String)>> {
    let mut out = PRAGMAS
        .iter()
        .map(|p| {
            let v: Value = conn.pragma_query_value(None, p, |r| r.get(0))?;
            Ok(((*p).to_owned(), format!("{v:?}")))
        })
        .collect::<hive_db_core::rusqlite::Result<Vec<_>>>()?;
    let defensive = conn.db_config(SqliteConfig::SQLITE_DBCONFIG_DEFENSIVE)?;
    out.push(("defensive".to_owned(), defensive.to_string()));
    Ok(out)
}

/// Bug caught: direct connections opened with settings of their own (no WAL, another busy
/// timeout, pages instead of KiB), as the original's fallback was.
#[test]
fn every_pragma_is_the_same_on_both_paths() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (pooled, _registry) = open(Kind::Pooled, dir.path(), "pooled.db")?;
    let (direct, _) = open(Kind::Direct, dir.path(), "direct.db")?;
    assert_eq!(pooled.backend(), BackendKind::SharedPool);
    assert_eq!(direct.backend(), BackendKind::Direct);
    let a = pragmas(&*pooled.connection()?)?;
    let b = pragmas(&*direct.connection()?)?;
    assert_eq!(a, b);
    // And inside a transaction, where the pooled path runs in the registry's writer lane.
    let a = pooled.transaction(pragmas)?;
    let b = direct.transaction(pragmas)?;
    assert_eq!(a, b);
    assert!(a.contains(&("journal_mode".to_owned(), "Text(\"wal\")".to_owned())));
    Ok(())
}

/// Bug caught: the fallback's pool built from settings of its own (the core's defaults, or
/// only some of the application's), so its connections differ from the shared pool's.
#[test]
fn the_fallback_carries_every_setting_of_the_shared_pool() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // None of these is a default, so a fallback that ignored one would differ.
    let custom = |file: &str| {
        let mut s = Settings::new(dir.path().join(file));
        s.db = DbConfig {
            busy_timeout: Duration::from_millis(1234),
            cache_size_kib: 2048,
            synchronous: Synchronous::Full,
            foreign_keys: false,
            min_idle: 0,
            ..DbConfig::default()
        };
        s
    };
    let registry = Registry::new();
    let pooled = EcoDb::with_registry(&registry, &custom("pooled.db"))?;
    let direct = EcoDb::direct(&custom("direct.db"))?;
    let shared = pragmas(&*pooled.connection()?)?;
    assert_eq!(shared, pragmas(&*direct.connection()?)?);
    for want in [
        ("busy_timeout", "Integer(1234)"),
        ("cache_size", "Integer(-2048)"),
        ("synchronous", "Integer(2)"),
        ("foreign_keys", "Integer(0)"),
        ("journal_mode", "Text(\"wal\")"),
        ("defensive", "true"),
    ] {
        assert!(
            shared.contains(&(want.0.to_owned(), want.1.to_owned())),
            "{want:?} not in {shared:?}"
        );
    }
    Ok(())
}

fn exercise(db: &ecosystemiser_db::EcoDb) -> anyhow::Result<()> {
    let lib = ComponentLibrary::new(db);
    lib.add_type("battery", "energy", Some("stores energy"))?;
    let mut spec = ComponentSpec::new(
        "battery",
        "energy",
        "lithium",
        json!({"capacity_kwh": 10.5, "cycles": 6000})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    );
    spec.is_default = true;
    lib.add_spec(&spec)?;
    spec.version = "1.1.0".into();
    spec.is_default = false;
    lib.add_spec(&spec)?;
    lib.set_default("battery", "lithium", "1.1.0")?;
    assert!(lib.add_spec(&spec).is_err());

    let events = EventStore::new(db);
    for i in 0..3 {
        let mut e = Event::new("simulation.step", "solver", json!({"step": i}));
        e.event_id = format!("e{i}");
        e.timestamp = "2026-01-01T00:00:00Z".into();
        events.publish(&e.for_simulation("sim-1"))?;
    }

    let runs = Runs::new(db);
    runs.create_simulation(&NewSimulation::new("sim-1", "systems/a.yml", "milp"))?;
    runs.record_metrics("sim-1", &[Metric::new("cost", 1.5, Some("EUR"))])?;
    runs.update_simulation_status("sim-1", &StatusUpdate::to(RunStatus::Completed))?;
    assert!(
        runs.record_metrics("nope", &[Metric::new("x", 1.0, None)])
            .is_err()
    );
    runs.create_study(&ecosystemiser_db::NewStudy {
        study_id: "st".into(),
        study_type: "parametric".into(),
        total_simulations: 1,
        configuration: Some(json!({"grid": [1, 2.5]})),
        metadata: None,
    })?;
    runs.add_study_simulation(
        "st",
        &NewSimulation::new("st-0", "systems/b.yml", "milp"),
        Some(&json!({"p": 1})),
        0,
    )?;
    let mut done = StatusUpdate::to(RunStatus::Completed);
    done.duration_seconds = Some(2.25);
    runs.finish_study_simulation("st", "st-0", &done, &[Metric::new("npv", -3.5, None)])?;
    runs.create_optimization_run(&ecosystemiser_db::NewOptimizationRun {
        optimization_id: "o".into(),
        algorithm_type: "ga".into(),
        objective_function: "cost".into(),
        configuration: None,
        metadata: Some(json!({"seed": 7})),
    })?;
    let individual = |id: &str, fitness: f64| ecosystemiser_db::Individual {
        individual_id: id.into(),
        fitness,
        parameters: json!({"x": fitness}),
    };
    runs.record_generation(
        "o",
        0,
        ecosystemiser_db::Objective::Maximize,
        &[individual("a", 1.0), individual("b", 3.0)],
    )?;
    let mut failed = StatusUpdate::to(RunStatus::Failed);
    failed.error_message = Some("diverged".into());
    runs.update_optimization_status("o", &failed)?;
    runs.create_analysis_run(&ecosystemiser_db::NewAnalysisRun {
        analysis_id: "an".into(),
        source_type: "study".into(),
        source_id: "st".into(),
        strategies: Some(json!(["economic"])),
        metadata: None,
    })?;
    runs.record_analysis_results("an", "economic", &[("kpi".into(), json!({"lcoe": 0.1}))])?;
    Ok(())
}

/// Every row of every table, without the columns SQLite fills with the time.
fn dump(conn: &Connection) -> anyhow::Result<Vec<String>> {
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for t in tables {
        let cols: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info(?1)")?
            .query_map([&t], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let kept: Vec<&String> = cols
            .iter()
            .filter(|c| {
                (!c.ends_with("_at") && c.as_str() != "timestamp")
                    || (t == "ecosystemiser_events" && c.as_str() == "timestamp")
            })
            .collect();
        let list = kept
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let mut stmt = conn.prepare(&format!("SELECT {list} FROM \"{t}\" ORDER BY rowid"))?;
        let n = kept.len();
        let rows = stmt.query_map([], |r| {
            (0..n)
                .map(|i| r.get::<_, Value>(i).map(|v| format!("{v:?}")))
                .collect::<Result<Vec<_>, _>>()
        })?;
        for row in rows {
            out.push(format!("{t}: {}", row?.join(" | ")));
        }
    }
    Ok(out)
}

/// Bug caught: one path committing what the other rolls back (a failed spec insert leaving a
/// row, a savepoint not undone), or reading different results.
#[test]
fn the_same_operations_leave_the_same_rows() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (pooled, _registry) = open(Kind::Pooled, dir.path(), "pooled.db")?;
    let (direct, _) = open(Kind::Direct, dir.path(), "direct.db")?;
    exercise(&pooled)?;
    exercise(&direct)?;
    let a = dump(&*pooled.connection()?)?;
    let b = dump(&*direct.connection()?)?;
    assert!(a.len() > 10, "{a:?}");
    assert_eq!(a, b);
    let ea = EventStore::new(&pooled).simulation_history("sim-1", 10)?;
    let eb = EventStore::new(&direct).simulation_history("sim-1", 10)?;
    assert_eq!(ea, eb);
    Ok(())
}

/// Bug caught: the status claiming the shared pool when the probe did not go through it (the
/// original reported "integrated" from an import succeeding), or naming the wrong reason.
#[test]
fn status_never_claims_a_pool_that_is_not_in_use() -> anyhow::Result<()> {
    use ecosystemiser_db::BackendReason;
    let dir = tempfile::tempdir()?;
    let (pooled, registry) = open(Kind::Pooled, dir.path(), "pooled.db")?;
    let s = pooled.integration_status();
    assert_eq!(
        (s.backend(), s.reason),
        (BackendKind::SharedPool, BackendReason::GivenRegistry)
    );
    assert!(s.shared_pool_in_use());
    assert_eq!(s.probe, Ok(ecosystemiser_db::SCHEMA_VERSION as i64));
    if let Some(registry) = registry {
        registry.close(pooled.name(), std::time::Duration::from_secs(1))?;
    }
    let s = pooled.integration_status();
    assert!(!s.shared_pool_in_use(), "{s:?}");
    assert!(s.probe.is_err_and(|e| e.contains("closed")));

    let (direct, _) = open(Kind::Direct, dir.path(), "direct.db")?;
    let s = direct.integration_status();
    assert_eq!(
        (s.backend(), s.reason),
        (BackendKind::Direct, BackendReason::GivenDirect)
    );
    assert!(!s.shared_pool_in_use() && s.probe.is_ok());
    Ok(())
}

/// The columns of `table` that hold data rather than the time the database wrote it, in
/// table order.
fn data_columns(table: &str, columns: Vec<String>) -> Vec<String> {
    columns
        .into_iter()
        .filter(|c| {
            (!c.ends_with("_at") && c.as_str() != "timestamp")
                || (table == "ecosystemiser_events" && c.as_str() == "timestamp")
        })
        .collect()
}

/// Every row of every table in `TABLES`, each value as text (booleans as 1 / 0, numbers as
/// Rust prints them), in key order: a form both engines can be compared in.
fn dump_as_text(db: &ecosystemiser_db::EcoDb) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for table in ecosystemiser_db::TABLES {
        let rows: Vec<Vec<Option<String>>> = match db.engine() {
            hive_db_core::Backend::Postgres => db.postgres()?.read_primary(|c| {
                let columns: Vec<(String, String)> = c
                    .query(
                        "SELECT column_name::text, data_type::text FROM information_schema.columns
                         WHERE table_name = $1 ORDER BY ordinal_position",
                        &[&table],
                    )?
                    .iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect::<Result<_, hive_db_core::postgres::Error>>()?;
                let names = data_columns(table, columns.iter().map(|(n, _)| n.clone()).collect());
                let list = names
                    .iter()
                    .map(|n| {
                        let boolean = columns.iter().any(|(c, t)| c == n && t == "boolean");
                        if boolean {
                            format!("(\"{n}\")::int::text")
                        } else {
                            format!("(\"{n}\")::text")
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                c.query(&format!("SELECT {list} FROM {table} ORDER BY 1"), &[])?
                    .iter()
                    .map(|r| (0..names.len()).map(|i| r.try_get(i)).collect())
                    .collect()
            })?,
            _ => db.read(|c| {
                let columns: Vec<String> = c
                    .prepare("SELECT name FROM pragma_table_info(?1)")?
                    .query_map([table], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                let names = data_columns(table, columns);
                let list = names
                    .iter()
                    .map(|n| format!("CAST(\"{n}\" AS TEXT)"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let mut stmt = c.prepare(&format!("SELECT {list} FROM {table} ORDER BY 1"))?;
                let rows = stmt
                    .query_map([], |r| (0..names.len()).map(|i| r.get(i)).collect())?
                    .collect::<Result<_, _>>()?;
                Ok(rows)
            })?,
        };
        for row in rows {
            let cells: Vec<String> = row
                .into_iter()
                // Numbers as Rust prints them: SQLite writes a REAL 3 as `3.0`, PostgreSQL
                // a double precision 3 as `3`.
                .map(|v| match v {
                    None => "NULL".to_owned(),
                    Some(v) => v.parse::<f64>().map_or(v, |f| f.to_string()),
                })
                .collect();
            out.push(format!("{table}: {}", cells.join(" | ")));
        }
    }
    Ok(out)
}

/// Bug caught: a PostgreSQL statement that stores something other than its SQLite twin (a
/// default flag left set, a counter or a JSON text written differently, a history entry
/// missing), so the same calls leave different databases and a move between engines would
/// not be exact.
#[test]
fn the_same_operations_leave_the_same_rows_on_both_engines() -> anyhow::Result<()> {
    hive_pg_harness::require_postgres!();
    let dir = tempfile::tempdir()?;
    let (sqlite, _r) = open(Kind::Pooled, dir.path(), "eco.db")?;
    let (pg, _rp) = open(Kind::Postgres, dir.path(), "unused.db")?;
    exercise(&sqlite)?;
    exercise(&pg)?;
    let a = dump_as_text(&sqlite)?;
    let b = dump_as_text(&pg)?;
    assert!(a.len() > 10, "{a:?}");
    assert_eq!(a, b);
    Ok(())
}
