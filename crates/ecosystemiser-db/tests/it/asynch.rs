//! The async calls (feature `async`): each against its sync twin, on tokio and on a plain
//! executor, over both SQLite backends.

use std::sync::{Arc, Mutex};

use ecosystemiser_db::{
    ComponentLibrary, ComponentSpec, EcoDb, Event, EventStore, Metric, NewSimulation, Runs,
};
use futures_executor::block_on;
use hive_db_core::Registry;
use serde_json::json;

use crate::common::{BOTH, Kind, open};

/// A spec with one technical parameter.
fn spec(name: &str, version: &str, default: bool) -> anyhow::Result<ComponentSpec> {
    let serde_json::Value::Object(technical) = json!({"capacity_kwh": 10.0}) else {
        anyhow::bail!("not an object");
    };
    let mut s = ComponentSpec::new("battery", "energy", name, technical);
    s.version = version.into();
    s.is_default = default;
    Ok(s)
}

/// A database of `kind` with two battery specs and simulation `s1`.
/// The registry (if any) is returned to keep it.
fn seeded(kind: Kind, dir: &std::path::Path) -> anyhow::Result<(EcoDb, Option<Registry>)> {
    let (db, registry) = open(kind, dir, "eco.db")?;
    let lib = ComponentLibrary::new(&db);
    lib.add_type("battery", "energy", None)?;
    lib.add_spec(&spec("lfp", "1.0.0", true)?)?;
    lib.add_spec(&spec("lfp", "2.0.0", false)?)?;
    Runs::new(&db).create_simulation(&NewSimulation::new("s1", "a.yml", "milp"))?;
    Ok((db, registry))
}

/// The multi-threaded tokio runtime of the tests.
fn tokio_rt() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()?)
}

/// Bug caught: `spec_async` running another query than `spec` (another default, another
/// "latest" version) or turning its not-found error into another.
#[test]
fn spec_async_answers_as_spec() -> anyhow::Result<()> {
    for kind in BOTH {
        let dir = tempfile::tempdir()?;
        let (db, _registry) = seeded(kind, dir.path())?;
        let lib = ComponentLibrary::new(&db);
        let rt = tokio_rt()?;
        for (name, version) in [
            (None, None),
            (Some("lfp"), None),
            (Some("lfp"), Some("1.0.0")),
            (None, Some("1.0.0")),
        ] {
            let sync = lib.spec("battery", name, version)?;
            assert_eq!(block_on(lib.spec_async("battery", name, version))?, sync);
            let on_tokio = rt.spawn(lib.spec_async("battery", name, version));
            assert_eq!(rt.block_on(on_tokio)??, sync, "{kind:?}");
        }
        for (ty, name, version) in [
            ("battery", Some("nmc"), None),
            ("battery", None, Some("2.0.0")),
            ("heat_pump", None, None),
        ] {
            let sync = lib.spec(ty, name, version).map_err(|e| e.to_string());
            let fut = block_on(lib.spec_async(ty, name, version)).map_err(|e| e.to_string());
            assert!(sync.is_err(), "{ty} {name:?} {version:?} found");
            assert_eq!(fut, sync, "{kind:?}");
        }
    }
    Ok(())
}

/// Bug caught: `publish_async` storing another row than `publish` (so the history differs),
/// accepting what `publish` refuses (a duplicate id, an empty type), or
/// `simulation_history_async` reading another order or limit than `simulation_history`.
#[test]
fn publish_and_history_async_match_their_sync_twins() -> anyhow::Result<()> {
    for kind in BOTH {
        let dir = tempfile::tempdir()?;
        let (db, _registry) = seeded(kind, dir.path())?;
        let store = EventStore::new(&db);
        let rt = tokio_rt()?;
        for i in 0..6 {
            let mut e = Event::new(format!("simulation.step{i}"), "test", json!({"i": i}));
            e.simulation_id = Some("s1".into());
            if i % 2 == 0 {
                assert_eq!(store.publish(&e)?, e.event_id);
            } else {
                assert_eq!(rt.block_on(store.publish_async(&e))?, e.event_id);
            }
        }
        let sync = store.simulation_history("s1", 4)?;
        assert_eq!(sync.len(), 4);
        assert_eq!(block_on(store.simulation_history_async("s1", 4))?, sync);
        assert_eq!(
            rt.block_on(rt.spawn(store.simulation_history_async("s1", 4)))??,
            sync
        );
        let mut stored = store.get(&sync[0].event_id)?;
        if let Some(e) = stored.as_mut() {
            // A duplicate id: the same error both ways, nothing more stored.
            let sync_err = store.publish(e).map(|_| ()).map_err(|e| e.to_string());
            let async_err = block_on(store.publish_async(e))
                .map(|_| ())
                .map_err(|e| e.to_string());
            assert!(sync_err.is_err());
            assert_eq!(async_err, sync_err, "{kind:?}");
        } else {
            anyhow::bail!("the newest event is not stored");
        }
        let empty = Event::new("", "test", json!(null));
        assert_eq!(
            block_on(store.publish_async(&empty)).map_err(|e| e.to_string()),
            store.publish(&empty).map_err(|e| e.to_string())
        );
        assert_eq!(store.simulation_history("s1", 100)?.len(), 6);
    }
    Ok(())
}

/// Bug caught: `publish_async` telling subscribers before its transaction commits (a
/// subscriber that reads the event back misses it), or not telling them at all.
#[test]
fn publish_async_notifies_after_commit() -> anyhow::Result<()> {
    for kind in BOTH {
        let dir = tempfile::tempdir()?;
        let (db, _registry) = seeded(kind, dir.path())?;
        let store = EventStore::new(&db);
        let seen: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
        let (reader, log) = (store.clone(), Arc::clone(&seen));
        store.subscribe("simulation.*", move |e| {
            let stored = matches!(reader.get(&e.event_id), Ok(Some(_)));
            if let Ok(mut log) = log.lock() {
                log.push((e.event_id.clone(), stored));
            }
        })?;
        let e = Event::new("simulation.completed", "test", json!({}));
        let other = Event::new("study.completed", "test", json!({}));
        block_on(store.publish_async(&other))?;
        tokio_rt()?.block_on(store.publish_async(&e))?;
        let seen = seen
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .clone();
        assert_eq!(seen, vec![(e.event_id.clone(), true)], "{kind:?}");
    }
    Ok(())
}

/// Bug caught: concurrent `record_metrics_async` batches losing or mixing rows (a batch
/// written outside its transaction, a writer lane that drops calls), or an unknown
/// simulation answered otherwise than by `record_metrics`.
#[test]
fn concurrent_async_metric_batches_are_all_stored() -> anyhow::Result<()> {
    for kind in BOTH {
        let dir = tempfile::tempdir()?;
        let (db, _registry) = seeded(kind, dir.path())?;
        let runs = Runs::new(&db);
        let rt = tokio_rt()?;
        let tasks: Vec<_> = (0..16)
            .map(|t| {
                let batch: Vec<Metric> = (0..5)
                    .map(|i| Metric::new(format!("m{t}_{i}"), f64::from(t * 10 + i), Some("kW")))
                    .collect();
                rt.spawn(runs.record_metrics_async("s1", &batch))
            })
            .collect();
        for task in tasks {
            assert_eq!(rt.block_on(task)??, 5);
        }
        let mut stored = runs.metrics("s1")?;
        stored.sort_by(|a, b| a.value.total_cmp(&b.value));
        assert_eq!(stored.len(), 80, "{kind:?}");
        assert_eq!(stored[79], Metric::new("m15_4", 154.0, Some("kW")));
        let batch = [Metric::new("cost", 1.0, None)];
        assert_eq!(
            block_on(runs.record_metrics_async("nope", &batch)).map_err(|e| e.to_string()),
            runs.record_metrics("nope", &batch)
                .map_err(|e| e.to_string())
        );
        assert_eq!(runs.metrics("s1")?.len(), 80);
    }
    Ok(())
}

/// Bug caught: an async call on PostgreSQL that runs SQLite's statements, hangs, or fails
/// with anything but `Error::WrongEngine` naming the call (the core's async API is SQLite's).
#[test]
fn async_calls_on_postgres_answer_wrong_engine() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, _registry) = open(Kind::Postgres, dir.path(), "eco.db")?;
    let wrong = |r: Result<(), ecosystemiser_db::Error>, call: &str| match r {
        Err(ecosystemiser_db::Error::WrongEngine { call: c, .. }) if c == call => Ok(()),
        other => Err(anyhow::anyhow!("{call}: {other:?}")),
    };
    let e = Event::new("simulation.step", "test", json!({}));
    let store = EventStore::new(&db);
    wrong(
        block_on(ComponentLibrary::new(&db).spec_async("battery", None, None)).map(|_| ()),
        "ComponentLibrary::spec_async",
    )?;
    wrong(
        block_on(store.publish_async(&e)).map(|_| ()),
        "EventStore::publish_async",
    )?;
    wrong(
        block_on(store.simulation_history_async("s1", 5)).map(|_| ()),
        "EventStore::simulation_history_async",
    )?;
    wrong(
        block_on(Runs::new(&db).record_metrics_async("s1", &[])).map(|_| ()),
        "Runs::record_metrics_async",
    )?;
    assert_eq!(store.get(&e.event_id)?, None);
    Ok(())
}
