//! The event store: events published in one transaction each, in-process subscribers told
//! after the commit, and histories read back newest first. Its SQLite SQL is here, its
//! PostgreSQL SQL beside it in `pg.rs`; the event itself and subscription patterns have
//! files of their own.

mod event;
#[cfg(feature = "postgres")]
mod listener;
mod pattern;
#[cfg(feature = "postgres")]
pub(crate) mod pg;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use hive_db_core::DbName;
use hive_db_core::rusqlite::{Connection, Row, params};
use serde_json::Value;

use crate::backend::EcoDb;
use crate::error::{Error, Result};
use crate::json;

pub use event::{Event, HistoryOf};
#[cfg(feature = "postgres")]
pub use listener::{EventListener, LISTENER_APPLICATION_NAME};
pub use pattern::Pattern;

/// A subscription's id, for [`EventStore::unsubscribe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubscriptionId(u64);

type Callback = Arc<dyn Fn(&Event) + Send + Sync>;

struct Subscriber {
    id: SubscriptionId,
    pattern: Pattern,
    callback: Callback,
}

#[derive(Default)]
struct Subscribers {
    next: AtomicU64,
    list: RwLock<Vec<Subscriber>>,
}

impl Subscribers {
    /// The list to read. A subscriber that panicked is caught outside the lock, so a poisoned
    /// lock still holds a whole list: it is used as it is.
    fn read(&self) -> RwLockReadGuard<'_, Vec<Subscriber>> {
        self.list.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The list to change (see [`Subscribers::read`] on poisoning).
    fn write(&self) -> RwLockWriteGuard<'_, Vec<Subscriber>> {
        self.list.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a subscriber of `pattern`.
    fn add(
        &self,
        pattern: &str,
        callback: impl Fn(&Event) + Send + Sync + 'static,
    ) -> Result<SubscriptionId> {
        let pattern = Pattern::parse(pattern)?;
        let id = SubscriptionId(self.next.fetch_add(1, Ordering::Relaxed));
        self.write().push(Subscriber {
            id,
            pattern,
            callback: Arc::new(callback),
        });
        Ok(id)
    }

    /// Removes a subscriber; false if it was not there.
    fn remove(&self, id: SubscriptionId) -> bool {
        let mut list = self.write();
        let before = list.len();
        list.retain(|s| s.id != id);
        list.len() != before
    }

    /// Tells the subscribers whose pattern matches, in the order they subscribed. A
    /// subscriber that panics is logged and skipped.
    fn deliver(&self, event: &Event) {
        let callbacks: Vec<Callback> = self
            .read()
            .iter()
            .filter(|s| s.pattern.matches(&event.event_type))
            .map(|s| Arc::clone(&s.callback))
            .collect();
        // Called without the lock, so a callback may subscribe or publish.
        for callback in callbacks {
            if catch_unwind(AssertUnwindSafe(|| callback(event))).is_err() {
                tracing::error!(event_type = %event.event_type, event_id = %event.event_id,
                    "an event subscriber panicked");
            }
        }
    }

    fn len(&self) -> usize {
        self.read().len()
    }
}

/// The event store of one [`EcoDb`]. Cloning is cheap; clones share the subscribers.
#[derive(Clone)]
pub struct EventStore {
    db: EcoDb,
    subscribers: Arc<Subscribers>,
}

impl std::fmt::Debug for EventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.subscribers.len();
        f.debug_struct("EventStore")
            .field("db", self.db.name())
            .field("subscribers", &n)
            .finish()
    }
}

/// The query for events matching `$filter` (on `?1`), newest first, at most `?2`: one
/// constant string per filter, values bound.
macro_rules! select_events {
    ($filter:literal) => {
        concat!(
            "SELECT event_id, event_type, source, timestamp, correlation_id, simulation_id, \
             analysis_id, optimization_id, payload, metadata \
             FROM ecosystemiser_events WHERE ",
            $filter,
            // Not `LIMIT ?2`: SQLite plans a bare parameter in LIMIT by its bound value, so
            // every new binding would re-prepare the cached statement (about 4% of the load
            // test's CPU went to it).
            " ORDER BY seq DESC LIMIT CAST(?2 AS INTEGER)"
        )
    };
}

impl<'a> HistoryOf<'a> {
    /// Its query (key `?1`, limit `?2`) and key.
    pub(crate) fn query(self) -> (&'static str, &'a str) {
        match self {
            Self::Simulation(k) => (select_events!("simulation_id = ?1"), k),
            Self::Analysis(k) => (select_events!("analysis_id = ?1"), k),
            Self::Optimization(k) => (select_events!("optimization_id = ?1"), k),
            Self::Type(k) => (select_events!("event_type = ?1"), k),
            Self::Correlation(k) => (select_events!("correlation_id = ?1"), k),
        }
    }
}

/// The query of [`EventStore::get`] (key `?1`, limit `?2`).
pub(crate) const EVENT_BY_ID: &str = select_events!("event_id = ?1");

impl EventStore {
    /// The event store of `db`, with no subscribers yet.
    pub fn new(db: &EcoDb) -> Self {
        Self {
            db: db.clone(),
            subscribers: Arc::default(),
        }
    }

    /// Stores `event` in one transaction, then tells the matching subscribers (in the order
    /// they subscribed, on this thread). A subscriber that panics is logged and skipped.
    /// Returns the event id.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for an empty event id or type, or a NUL character in any of
    /// its text fields (on both engines: PostgreSQL text cannot hold it); [`Error::Json`] for a payload
    /// that cannot be encoded; [`Error::Sqlite`] (a duplicate event id among them) or the
    /// backend's errors; nothing is stored then and nobody told.
    pub fn publish(&self, event: &Event) -> Result<String> {
        let (payload, metadata) = encoded(event)?;
        #[cfg(feature = "postgres")]
        if let Some(pg) = self.db.pg() {
            pg::publish(pg, event, &payload, metadata.as_deref())?;
            self.notify(event);
            return Ok(event.event_id.clone());
        }
        let db = self.db.name();
        self.db.transaction_with(|conn| {
            insert_event(db, conn, event, &payload, metadata.as_deref())
        })?;
        self.notify(event);
        Ok(event.event_id.clone())
    }

    /// [`EventStore::publish`] as a future: the same checks and `INSERT`, in the database's
    /// writer lane, then the matching subscribers are told after the commit (on the thread
    /// that polls the future to its end).
    ///
    /// A future dropped once its write has started (a cancelled request, a `select!` that
    /// took another branch) still stores the event, as every async write does, but this
    /// process's subscribers are not told of it: they hear of what this store's callers saw
    /// committed. A consumer that must see every event reads the history (or, on
    /// PostgreSQL, an `EventListener`), which the store keeps in order.
    ///
    /// # Errors
    ///
    /// As [`EventStore::publish`]; [`Error::WrongEngine`] on PostgreSQL.
    #[cfg(feature = "async")]
    #[track_caller]
    pub fn publish_async(
        &self,
        event: &Event,
    ) -> impl Future<Output = Result<String>> + Send + 'static {
        let prepared = encoded(event).and_then(|(payload, metadata)| {
            let event = event.clone();
            self.db
                .write_async_with("EventStore::publish_async", move |conn| {
                    insert_event(
                        &crate::backend::ECO_NAME,
                        conn,
                        &event,
                        &payload,
                        metadata.as_deref(),
                    )?;
                    Ok(event)
                })
        });
        let subscribers = Arc::clone(&self.subscribers);
        async move {
            let event = prepared?.await?;
            subscribers.deliver(&event);
            Ok(event.event_id)
        }
    }

    fn notify(&self, event: &Event) {
        self.subscribers.deliver(event);
    }

    /// Calls `callback` after each later publish through this store (or a clone) of an event
    /// whose type matches `pattern` (see [`Pattern`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a bad pattern.
    pub fn subscribe(
        &self,
        pattern: &str,
        callback: impl Fn(&Event) + Send + Sync + 'static,
    ) -> Result<SubscriptionId> {
        self.subscribers.add(pattern, callback)
    }

    /// Removes a subscription; false if it was not there.
    pub fn unsubscribe(&self, id: SubscriptionId) -> bool {
        self.subscribers.remove(id)
    }

    /// Up to `limit` events of `of`, newest (last stored) first.
    ///
    /// # Errors
    ///
    /// The backend's errors; [`Error::Json`] for a stored value that is not JSON.
    pub fn history(&self, of: HistoryOf<'_>, limit: u32) -> Result<Vec<Event>> {
        // No event holds a NUL character (publish refuses one): nothing to find, on either
        // engine (PostgreSQL refused the query itself, 22021).
        if !crate::text::storable(of.query().1) {
            return Ok(Vec::new());
        }
        #[cfg(feature = "postgres")]
        if let Some(pg) = self.db.pg() {
            return pg::history(pg, of, limit);
        }
        let (sql, key) = of.query();
        self.db
            .read_with(|conn| query_events(self.db.name(), conn, sql, key, limit))
    }

    /// [`EventStore::history`] of a simulation.
    ///
    /// # Errors
    ///
    /// As [`EventStore::history`].
    pub fn simulation_history(&self, simulation_id: &str, limit: u32) -> Result<Vec<Event>> {
        self.history(HistoryOf::Simulation(simulation_id), limit)
    }

    /// [`EventStore::simulation_history`] as a future: the same query, on a reader thread of
    /// the database.
    ///
    /// # Errors
    ///
    /// As [`EventStore::history`]; [`Error::WrongEngine`] on PostgreSQL.
    #[cfg(feature = "async")]
    #[track_caller]
    pub fn simulation_history_async(
        &self,
        simulation_id: &str,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Event>>> + Send + 'static {
        let (sql, _) = HistoryOf::Simulation(simulation_id).query();
        let key = simulation_id.to_owned();
        let future = self
            .db
            .read_async_with("EventStore::simulation_history_async", move |conn| {
                query_events(&crate::backend::ECO_NAME, conn, sql, &key, limit)
            });
        async move { future?.await }
    }

    /// [`EventStore::history`] of an analysis run.
    ///
    /// # Errors
    ///
    /// As [`EventStore::history`].
    pub fn analysis_history(&self, analysis_id: &str, limit: u32) -> Result<Vec<Event>> {
        self.history(HistoryOf::Analysis(analysis_id), limit)
    }

    /// [`EventStore::history`] of an optimization run.
    ///
    /// # Errors
    ///
    /// As [`EventStore::history`].
    pub fn optimization_history(&self, optimization_id: &str, limit: u32) -> Result<Vec<Event>> {
        self.history(HistoryOf::Optimization(optimization_id), limit)
    }

    /// One event by id.
    ///
    /// # Errors
    ///
    /// As [`EventStore::history`].
    pub fn get(&self, event_id: &str) -> Result<Option<Event>> {
        if !crate::text::storable(event_id) {
            return Ok(None);
        }
        #[cfg(feature = "postgres")]
        if let Some(pg) = self.db.pg() {
            return pg::get(pg, event_id);
        }
        let mut found = self
            .db
            .read_with(|conn| query_events(self.db.name(), conn, EVENT_BY_ID, event_id, 1))?;
        Ok(found.pop())
    }
}

/// The checks of [`EventStore::publish`], then `event`'s payload and metadata as JSON.
fn encoded(event: &Event) -> Result<(String, Option<String>)> {
    for (what, value) in [
        ("event id", &event.event_id),
        ("event type", &event.event_type),
    ] {
        if value.is_empty() {
            return Err(Error::InvalidInput {
                what,
                value: String::new(),
                reason: "empty",
            });
        }
    }
    // Refused on both engines, so an event one accepts the other stores too (payload and
    // metadata are JSON, which escapes a NUL).
    crate::text::check_all(&[
        ("event id", Some(event.event_id.as_str())),
        ("event type", Some(event.event_type.as_str())),
        ("event source", Some(event.source.as_str())),
        ("event timestamp", Some(event.timestamp.as_str())),
        ("event correlation id", event.correlation_id.as_deref()),
        ("event simulation id", event.simulation_id.as_deref()),
        ("event analysis id", event.analysis_id.as_deref()),
        ("event optimization id", event.optimization_id.as_deref()),
    ])?;
    let db: &DbName = &crate::backend::ECO_NAME;
    let payload = json::encode(db, "event payload", &event.payload)?;
    let metadata = json::encode_opt(db, "event metadata", event.metadata.as_ref())?;
    Ok((payload, metadata))
}

/// The `INSERT` of [`EventStore::publish`] on `conn`: the sync and async calls' one statement.
fn insert_event(
    db: &DbName,
    conn: &Connection,
    event: &Event,
    payload: &str,
    metadata: Option<&str>,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO ecosystemiser_events
             (event_id, event_type, source, timestamp, correlation_id,
              simulation_id, analysis_id, optimization_id, payload, metadata)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            event.event_id,
            event.event_type,
            event.source,
            event.timestamp,
            event.correlation_id,
            event.simulation_id,
            event.analysis_id,
            event.optimization_id,
            payload,
            metadata,
        ])
    })
    .map_err(|e| Error::sqlite(db, "publish event", e))?;
    Ok(())
}

fn query_events(
    db: &hive_db_core::DbName,
    conn: &Connection,
    sql: &str,
    key: &str,
    limit: u32,
) -> Result<Vec<Event>> {
    let mut stmt = conn
        .prepare_cached(sql)
        .map_err(|e| Error::sqlite(db, "query events", e))?;
    let mut rows = stmt
        .query(params![key, limit])
        .map_err(|e| Error::sqlite(db, "query events", e))?;
    let mut events = Vec::new();
    while let Some(row) = rows
        .next()
        .map_err(|e| Error::sqlite(db, "query events", e))?
    {
        events.push(event_of(db, row)?);
    }
    Ok(events)
}

fn event_of(db: &hive_db_core::DbName, row: &Row<'_>) -> Result<Event> {
    let text = |i| {
        row.get::<_, String>(i)
            .map_err(|e| Error::sqlite(db, "read event", e))
    };
    let opt = |i| {
        row.get::<_, Option<String>>(i)
            .map_err(|e| Error::sqlite(db, "read event", e))
    };
    let event_id = text(0)?;
    Ok(Event {
        event_type: text(1)?,
        source: text(2)?,
        timestamp: text(3)?,
        correlation_id: opt(4)?,
        simulation_id: opt(5)?,
        analysis_id: opt(6)?,
        optimization_id: opt(7)?,
        payload: json::column(db, "event payload", row, 8)?.unwrap_or(Value::Null),
        metadata: json::column(db, "event metadata", row, 9)?,
        event_id,
    })
}

#[cfg(test)]
mod tests {
    use hive_db_core::rusqlite::StatementStatus;
    use serde_json::json;

    use super::*;
    use crate::Settings;

    /// Bug caught: a history query that scans the events table or sorts it, because an
    /// index it needs is missing or is a partial index SQLite cannot prove it may use.
    #[test]
    fn every_history_query_searches_an_index_in_order() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = EcoDb::direct(&Settings::new(dir.path().join("eco.db")))?;
        let filters = [
            select_events!("simulation_id = ?1"),
            select_events!("analysis_id = ?1"),
            select_events!("optimization_id = ?1"),
            select_events!("event_type = ?1"),
            select_events!("correlation_id = ?1"),
            select_events!("event_id = ?1"),
        ];
        Ok(db.read(|conn| {
            for sql in filters {
                let plan: Vec<String> = conn
                    .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?
                    .query_map(params!["x", 5], |r| r.get(3))?
                    .collect::<std::result::Result<_, _>>()?;
                let plan = plan.join("; ");
                assert!(
                    plan.starts_with("SEARCH ecosystemiser_events USING INDEX")
                        && !plan.contains("TEMP B-TREE"),
                    "{sql}: {plan}"
                );
            }
            Ok(())
        })?)
    }

    /// Bug caught: a history query's LIMIT written as a bare parameter, which SQLite plans by
    /// its bound value, so the cached statement is re-prepared at every call.
    #[test]
    fn a_history_query_is_prepared_once_whatever_its_limit() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = EcoDb::direct(&Settings::new(dir.path().join("eco.db")))?;
        let store = EventStore::new(&db);
        for n in 0..3 {
            let event = Event::new("simulation.progress", "test", json!({ "n": n }))
                .for_simulation("sim-1");
            store.publish(&event)?;
        }
        db.read_with(|conn| {
            let sql = select_events!("simulation_id = ?1");
            for limit in 1..=3 {
                let found = query_events(db.name(), conn, sql, "sim-1", limit)?;
                assert_eq!(found.len(), limit as usize);
            }
            let stmt = conn.prepare_cached(sql)?;
            assert_eq!(stmt.get_status(StatementStatus::RePrepare), 0);
            Ok(())
        })
    }
}
