//! The event store: exact round trips, subscribers after commit, histories.

use std::sync::{Arc, Mutex};

use ecosystemiser_db::{Error, Event, EventStore, HistoryOf};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::common::{Kind, contract_test, count_of, open};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".*".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".*", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    prop::option::of(".{0,20}")
}

fn event() -> impl Strategy<Value = Event> {
    (
        ".{1,30}",
        ".{0,30}",
        ".{0,40}",
        (opt_text(), opt_text(), opt_text(), opt_text()),
        json_value(),
        prop::option::of(json_value()),
    )
        .prop_map(|(event_type, source, timestamp, ids, payload, metadata)| {
            let mut e = Event::new(event_type, source, payload);
            e.timestamp = timestamp;
            (
                e.correlation_id,
                e.simulation_id,
                e.analysis_id,
                e.optimization_id,
            ) = ids;
            e.metadata = metadata;
            e
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Bug caught: any field lost or altered on the way through SQLite (floats rounded,
    /// unicode mangled, an id in the wrong column, simulation events unreadable).
    #[test]
    fn every_event_reads_back_exactly(events in prop::collection::vec(event(), 1..6)) {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let (db, _registry) = open(Kind::Direct, dir.path(), "eco.db")
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let store = EventStore::new(&db);
        for e in &events {
            store.publish(e).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        for e in &events {
            let back = store.get(&e.event_id).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back.as_ref(), Some(e));
            if let Some(sim) = &e.simulation_id {
                let hist = store.simulation_history(sim, 100).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(hist.contains(e));
            }
        }
    }
}

contract_test! {
/// Bug caught: histories in timestamp order instead of store order, limits ignored, a
/// filter on the wrong column.
fn histories_are_newest_first_with_a_limit(kind: Kind) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, _registry) = open(kind, dir.path(), "eco.db")?;
    let store = EventStore::new(&db);
    for i in 0..5 {
        // Timestamps deliberately out of order: history follows the store order.
        let mut e = Event::new(format!("simulation.step{}", i % 2), "s", json!(i))
            .for_simulation("sim")
            .for_analysis(format!("an-{}", i % 2))
            .for_optimization("opt")
            .correlated("wf");
        e.timestamp = format!("2026-01-0{}T00:00:00Z", 9 - i);
        store.publish(&e)?;
    }
    let payloads = |h: Vec<Event>| h.into_iter().map(|e| e.payload).collect::<Vec<_>>();
    assert_eq!(
        payloads(store.simulation_history("sim", 3)?),
        [json!(4), json!(3), json!(2)]
    );
    assert_eq!(
        payloads(store.analysis_history("an-1", 10)?),
        [json!(3), json!(1)]
    );
    assert_eq!(payloads(store.optimization_history("opt", 1)?), [json!(4)]);
    assert_eq!(
        payloads(store.history(HistoryOf::Type("simulation.step0"), 10)?),
        [json!(4), json!(2), json!(0)]
    );
    assert_eq!(store.history(HistoryOf::Correlation("wf"), 10)?.len(), 5);
    assert!(store.simulation_history("other", 10)?.is_empty());
    Ok(())
}
}

contract_test! {
/// Bug caught: subscribers told before the commit or of a failed publish, patterns that
/// match too much or too little, a panicking subscriber breaking the publisher.
fn subscribers_are_told_after_commit_by_pattern(kind: Kind) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, _registry) = open(kind, dir.path(), "eco.db")?;
    let store = EventStore::new(&db);
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = |tag: &'static str| {
        let seen = Arc::clone(&seen);
        let db = db.clone();
        move |e: &Event| {
            // The event is committed and visible from another connection by now.
            let stored = count_of(
                &db,
                "SELECT count(*) FROM ecosystemiser_events WHERE event_id = ?1",
                "SELECT count(*) FROM ecosystemiser_events WHERE event_id = $1",
                Some(&e.event_id),
            )
            .unwrap_or(-1);
            if let Ok(mut s) = seen.lock() {
                s.push(format!("{tag}:{}:{stored}", e.event_type));
            }
        }
    };
    store.subscribe("*", record("all"))?;
    let exact = store.subscribe("simulation.completed", record("exact"))?;
    store.subscribe("simulation.*", record("prefix"))?;
    store.subscribe("analysis.*", |_| panic!("deliberate subscriber panic"))?;
    assert!(matches!(
        store.subscribe("sim*", |_| {}),
        Err(Error::InvalidInput { .. })
    ));

    let done = Event::new("simulation.completed", "s", json!({}));
    store.publish(&done)?;
    store.publish(&Event::new("simulation", "s", json!({})))?;
    store.publish(&Event::new("analysis.done", "s", json!({})))?;
    // A duplicate id fails, and nobody hears of it.
    let dup = store.publish(&done);
    assert!(
        matches!(dup, Err(ref e) if e.is_unique_violation()),
        "{kind:?}: {dup:?}"
    );
    let mut unnamed = Event::new("", "s", json!({}));
    assert!(matches!(
        store.publish(&unnamed),
        Err(Error::InvalidInput { .. })
    ));
    unnamed.event_type = "simulation.x".into();
    unnamed.event_id.clear();
    assert!(matches!(
        store.publish(&unnamed),
        Err(Error::InvalidInput { .. })
    ));
    assert!(store.unsubscribe(exact));
    assert!(!store.unsubscribe(exact));
    store.publish(&Event::new("simulation.completed", "s", json!({})))?;

    let seen = seen
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    assert_eq!(
        seen,
        [
            "all:simulation.completed:1",
            "exact:simulation.completed:1",
            "prefix:simulation.completed:1",
            "all:simulation:1",
            "all:analysis.done:1",
            "all:simulation.completed:1",
            "prefix:simulation.completed:1",
        ],
        "{kind:?}"
    );
    Ok(())
}
}
