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

/// Text without NUL, which no engine stores in text fields (payloads are JSON, which may).
fn opt_text() -> impl Strategy<Value = Option<String>> {
    prop::option::of("[^\\x00]{0,20}")
}

fn event() -> impl Strategy<Value = Event> {
    (
        "[^\\x00]{1,30}",
        "[^\\x00]{0,30}",
        "[^\\x00]{0,40}",
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

/// Publishes `events` and reads each back by id and in its simulation's history.
fn read_back(db: &ecosystemiser_db::EcoDb, events: &[Event]) -> Result<(), TestCaseError> {
    let store = EventStore::new(db);
    for e in events {
        store
            .publish(e)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
    for e in events {
        let back = store
            .get(&e.event_id)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back.as_ref(), Some(e));
        if let Some(sim) = &e.simulation_id {
            let hist = store
                .simulation_history(sim, 100)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(hist.contains(e));
        }
    }
    Ok(())
}

const EVENT_CASES: u32 = 48;

proptest! {
    #![proptest_config(ProptestConfig { cases: EVENT_CASES, ..ProptestConfig::default() })]

    /// Bug caught: any field lost or altered on the way through SQLite (floats rounded,
    /// unicode mangled, an id in the wrong column, simulation events unreadable).
    #[test]
    fn every_event_reads_back_exactly(events in prop::collection::vec(event(), 1..6)) {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let (db, _registry) = open(Kind::Direct, dir.path(), "eco.db")
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        read_back(&db, &events)?;
    }
}

/// Bug caught: any field lost or altered on the way through PostgreSQL (floats rounded by
/// a column type, unicode or NUL handling, an id in the wrong column), with the same cases
/// as on SQLite, on one database emptied between cases.
#[test]
fn every_event_reads_back_exactly_on_postgres() -> anyhow::Result<()> {
    hive_pg_harness::require_postgres!();
    let dir = tempfile::tempdir()?;
    let (db, _registry) = open(Kind::Postgres, dir.path(), "unused.db")?;
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: EVENT_CASES,
        ..ProptestConfig::default()
    });
    runner
        .run(&prop::collection::vec(event(), 1..6), |events| {
            crate::common::empty(&db).map_err(|e| TestCaseError::fail(e.to_string()))?;
            read_back(&db, &events)
        })
        .map_err(|e| anyhow::anyhow!("{e}"))
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

contract_test! {
/// Bug caught: an event with a NUL character in a text field stored on one engine and
/// refused by the other (PostgreSQL text cannot hold NUL), so a database could not move; or
/// the refusal's message showing the value escaped twice (`"an\\0x"`).
fn a_nul_in_a_text_field_is_refused_on_every_engine(kind: Kind) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, _registry) = open(kind, dir.path(), "eco.db")?;
    let store = EventStore::new(&db);
    let bad = Event::new("a", "s", json!("payload \u{0} is JSON")).for_analysis("an\0x");
    let err = store.publish(&bad).err();
    assert!(
        matches!(err, Some(Error::InvalidInput { what: "event analysis id", .. })),
        "{kind:?}: {err:?}"
    );
    // The message shows the value escaped once, as the other refusals do.
    let message = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains(r#""an\0x""#), "{message}");
    let mut good = bad.clone();
    good.analysis_id = Some("an".into());
    store.publish(&good)?;
    assert_eq!(store.get(&good.event_id)?, Some(good));
    Ok(())
}
}

/// Receives what a listener delivers, for the tests below.
fn collector(
    listener: &ecosystemiser_db::EventListener,
) -> anyhow::Result<std::sync::mpsc::Receiver<Event>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = Mutex::new(tx);
    listener.subscribe("*", move |e| {
        if let Ok(tx) = tx.lock() {
            let _ = tx.send(e.clone());
        }
    })?;
    Ok(rx)
}

/// The payloads of the next `n` events from `rx`, waiting at most 30 s in all.
fn take(rx: &std::sync::mpsc::Receiver<Event>, n: usize) -> anyhow::Result<Vec<Value>> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    (0..n)
        .map(|_| {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            Ok(rx.recv_timeout(left)?.payload)
        })
        .collect()
}

/// Bug caught: subscribers of another process (a second registry) never told of an event,
/// told twice, or out of store order; a listener that misses what was stored before its
/// first notification.
#[test]
fn a_listener_hears_another_registrys_events_in_order() -> anyhow::Result<()> {
    hive_pg_harness::require_postgres!();
    let url = hive_pg_harness::server()?.fresh_db()?;
    let dir = tempfile::tempdir()?;
    let publisher_registry = crate::common::pg_registry(&url)?;
    let publisher = EventStore::new(&ecosystemiser_db::EcoDb::with_registry(
        &publisher_registry,
        &crate::common::settings(dir.path(), "unused.db"),
    )?);
    publisher.publish(&Event::new("before", "a", json!("before")))?;
    let listener_registry = crate::common::pg_registry(&url)?;
    let listening = EventStore::new(&ecosystemiser_db::EcoDb::with_registry(
        &listener_registry,
        &crate::common::settings(dir.path(), "unused.db"),
    )?);
    let listener = listening.listen()?;
    let rx = collector(&listener)?;
    for i in 0..20 {
        publisher.publish(&Event::new("simulation.step", "a", json!(i)))?;
    }
    let expected: Vec<_> = (0..20).map(|i| json!(i)).collect();
    assert_eq!(take(&rx, 20)?, expected);
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert!(rx.try_recv().is_err(), "an event delivered twice");
    Ok(())
}

/// Bug caught: a listener whose connection is killed staying deaf, or coming back without
/// catching up, so the events published while it was away are missed silently.
#[test]
fn a_listener_catches_up_after_its_connection_is_killed() -> anyhow::Result<()> {
    hive_pg_harness::require_postgres!();
    let url = hive_pg_harness::server()?.fresh_db()?;
    let dir = tempfile::tempdir()?;
    let (db, _registry) = {
        let registry = crate::common::pg_registry(&url)?;
        let db = ecosystemiser_db::EcoDb::with_registry(
            &registry,
            &crate::common::settings(dir.path(), "unused.db"),
        )?;
        (db, registry)
    };
    let store = EventStore::new(&db);
    let listener = store.listen()?;
    let rx = collector(&listener)?;
    for i in 0..5 {
        store.publish(&Event::new("x", "a", json!(i)))?;
    }
    assert_eq!(take(&rx, 5)?.len(), 5);
    let killed: i64 = db.postgres()?.read_primary(|c| {
        c.query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name = $1 AND datname = current_database()",
            &[&ecosystemiser_db::LISTENER_APPLICATION_NAME],
        )?
        .try_get(0)
    })?;
    assert_eq!(killed, 1);
    // Published while the listener is down or reconnecting.
    for i in 5..10 {
        store.publish(&Event::new("x", "a", json!(i)))?;
    }
    let expected: Vec<_> = (5..10).map(|i| json!(i)).collect();
    assert_eq!(take(&rx, 5)?, expected);
    assert!(listener.reconnects() >= 1);
    Ok(())
}

/// Bug caught: a listener started on SQLite, which has no other processes' notifications to
/// hear, instead of a typed error.
#[test]
fn listening_needs_postgres() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, _registry) = open(Kind::Direct, dir.path(), "eco.db")?;
    let err = EventStore::new(&db).listen().err();
    assert!(matches!(err, Some(Error::WrongEngine { .. })), "{err:?}");
    Ok(())
}

/// Bug caught: events committed out of `seq` order on PostgreSQL (identity values are handed
/// out at insert, not at commit), so a listener that has read past a `seq` never sees a
/// lower one that commits later: an event missed silently under concurrent publishers.
#[test]
fn a_listener_misses_nothing_under_concurrent_publishers() -> anyhow::Result<()> {
    hive_pg_harness::require_postgres!();
    const THREADS: usize = 8;
    let per_thread: usize = std::env::var("ECO_PG_LISTENER_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let url = hive_pg_harness::server()?.fresh_db()?;
    let dir = tempfile::tempdir()?;
    let (db, _registry) = {
        let registry = crate::common::pg_registry(&url)?;
        let mut settings = crate::common::settings(dir.path(), "unused.db");
        settings.db.max_size = THREADS as u32;
        let db = ecosystemiser_db::EcoDb::with_registry(&registry, &settings)?;
        (db, registry)
    };
    let store = EventStore::new(&db);
    let listener = store.listen()?;
    let rx = collector(&listener)?;
    let barrier = Arc::new(std::sync::Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = store.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || -> anyhow::Result<()> {
                barrier.wait();
                for i in 0..per_thread {
                    store.publish(&Event::new("x", "a", json!([t, i])))?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("publisher panicked"))??;
    }
    let got = take(&rx, THREADS * per_thread)?;
    let distinct: std::collections::HashSet<String> = got.iter().map(|v| v.to_string()).collect();
    assert_eq!(distinct.len(), THREADS * per_thread);
    Ok(())
}

/// Bug caught: one stored event the listener cannot read (a payload that is not JSON,
/// written by something other than `publish`) failed every catch-up from then on: the
/// listener reconnected in a loop, hundreds of times a second, and delivered nothing more.
#[test]
fn a_stored_event_the_listener_cannot_read_is_skipped() -> anyhow::Result<()> {
    hive_pg_harness::require_postgres!();
    let url = hive_pg_harness::server()?.fresh_db()?;
    let dir = tempfile::tempdir()?;
    let registry = crate::common::pg_registry(&url)?;
    let db = ecosystemiser_db::EcoDb::with_registry(
        &registry,
        &crate::common::settings(dir.path(), "unused.db"),
    )?;
    let store = EventStore::new(&db);
    let listener = store.listen()?;
    let rx = collector(&listener)?;
    store.publish(&Event::new("x", "a", json!(0)))?;
    assert_eq!(take(&rx, 1)?, [json!(0)]);
    db.postgres()?.write(|tx| {
        tx.execute(
            "INSERT INTO ecosystemiser_events (event_id, event_type, source, timestamp, payload) \
             VALUES ('legacy-1', 'x', 'legacy', '2024-01-01T00:00:00', 'not json')",
            &[],
        )
    })?;
    for i in 1..4 {
        store.publish(&Event::new("x", "a", json!(i)))?;
    }
    assert_eq!(take(&rx, 3)?, [json!(1), json!(2), json!(3)]);
    assert_eq!(listener.skipped(), 1);
    assert_eq!(listener.reconnects(), 0);
    Ok(())
}

contract_test! {
/// Bug caught: a payload nested deeper than serde_json reads back (128 levels) was
/// published, and from then on every read of that simulation's history failed. It must be
/// refused at publish, with nothing stored; one at the limit round-trips.
fn a_payload_nested_too_deep_is_refused_at_publish(kind: Kind) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, _registry) = open(kind, dir.path(), "eco.db")?;
    let store = EventStore::new(&db);
    let nested = |levels: usize| (0..levels).fold(json!(1), |v, _| json!([v]));
    let deep = Event::new("t", "s", nested(200)).for_simulation("sim");
    let refused = store.publish(&deep);
    assert!(matches!(refused, Err(Error::Json { .. })), "{refused:?}");
    let fine = Event::new("t", "s", nested(100)).for_simulation("sim");
    store.publish(&fine)?;
    let history = store.simulation_history("sim", 10)?;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].payload, nested(100));
    Ok(())
}
}
