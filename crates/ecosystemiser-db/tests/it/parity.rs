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
