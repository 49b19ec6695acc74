//! The event store's SQL on PostgreSQL: the publish (in store order, with a notification to
//! listeners in other processes) and the history queries, which mirror SQLite's in
//! `mod.rs`.

use hive_db_core::postgres::{GenericClient, Row};
use hive_db_core::{DbName, PgHandle};
use serde_json::Value;

use super::event::{Event, HistoryOf};
use crate::backend::read_primary;
use crate::error::{Error, Result};
use crate::json;

/// The channel publishes notify on, with the event's `seq` as payload.
pub(crate) const CHANNEL: &str = "ecosystemiser_events";

/// The query for events matching `$filter` (on `$1`), newest first, at most `$2`.
macro_rules! select_events {
    ($filter:literal) => {
        concat!(
            "SELECT event_id, event_type, source, timestamp, correlation_id, simulation_id, \
             analysis_id, optimization_id, payload, metadata, seq \
             FROM ecosystemiser_events WHERE ",
            $filter,
            " ORDER BY seq DESC LIMIT $2"
        )
    };
}

/// Events stored after `$1`, oldest first, at most `$2`: the listener's catch-up.
pub(crate) const EVENTS_AFTER: &str = "SELECT event_id, event_type, source, timestamp, \
     correlation_id, simulation_id, analysis_id, optimization_id, payload, metadata, seq \
     FROM ecosystemiser_events WHERE seq > $1 ORDER BY seq LIMIT $2";

/// The highest `seq` stored, 0 for none.
pub(crate) const LAST_SEQ: &str = "SELECT coalesce(max(seq), 0) FROM ecosystemiser_events";

const BY_ID: &str = select_events!("event_id = $1");

fn query(of: HistoryOf<'_>) -> (&'static str, &str) {
    match of {
        HistoryOf::Simulation(k) => (select_events!("simulation_id = $1"), k),
        HistoryOf::Analysis(k) => (select_events!("analysis_id = $1"), k),
        HistoryOf::Optimization(k) => (select_events!("optimization_id = $1"), k),
        HistoryOf::Type(k) => (select_events!("event_type = $1"), k),
        HistoryOf::Correlation(k) => (select_events!("correlation_id = $1"), k),
    }
}

/// Stores `event` (payload and metadata already encoded) in one transaction. The row lock of
/// `ecosystemiser_event_order` is held from before the insert to the commit, so `seq` order
/// is commit order, as on SQLite, and a listener that has seen `seq` n has seen every
/// event below it.
pub(super) fn publish(
    pg: &PgHandle,
    event: &Event,
    payload: &str,
    metadata: Option<&str>,
) -> Result<()> {
    let db = pg.name();
    pg.write_with(|tx| {
        tx.execute(
            "SELECT id FROM ecosystemiser_event_order WHERE id = 1 FOR UPDATE",
            &[],
        )
        .map_err(|e| Error::pg(db, "publish event", e))?;
        let seq: i64 = tx
            .query_one(
                "INSERT INTO ecosystemiser_events
                     (event_id, event_type, source, timestamp, correlation_id,
                      simulation_id, analysis_id, optimization_id, payload, metadata)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING seq",
                &[
                    &event.event_id,
                    &event.event_type,
                    &event.source,
                    &event.timestamp,
                    &event.correlation_id,
                    &event.simulation_id,
                    &event.analysis_id,
                    &event.optimization_id,
                    &payload,
                    &metadata,
                ],
            )
            .and_then(|r| r.try_get(0))
            .map_err(|e| Error::pg(db, "publish event", e))?;
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &seq.to_string()])
            .map_err(|e| Error::pg(db, "notify listeners", e))?;
        Ok(())
    })
}

/// Up to `limit` events of `of`, newest first.
pub(super) fn history(pg: &PgHandle, of: HistoryOf<'_>, limit: u32) -> Result<Vec<Event>> {
    let (sql, key) = query(of);
    read_events(pg, sql, key, limit)
}

/// One event by id.
pub(super) fn get(pg: &PgHandle, event_id: &str) -> Result<Option<Event>> {
    Ok(read_events(pg, BY_ID, event_id, 1)?.pop())
}

fn read_events(pg: &PgHandle, sql: &str, key: &str, limit: u32) -> Result<Vec<Event>> {
    let db = pg.name();
    read_primary(pg, |c| {
        let rows = c
            .query(sql, &[&key, &i64::from(limit)])
            .map_err(|e| Error::pg(db, "query events", e))?;
        rows.iter()
            .map(|r| event_of(db, r).map(|(e, _)| e))
            .collect()
    })
}

/// Up to `limit` events after `seq`, in store order, each row on its own: its `seq`, and its
/// event or why it cannot be read (a payload that is not JSON, say), so that one bad row does
/// not hold up those after it.
pub(crate) fn each_event_after(
    db: &DbName,
    client: &mut impl GenericClient,
    seq: i64,
    limit: i64,
) -> Result<Vec<(i64, Result<Event>)>> {
    let rows = client
        .query(EVENTS_AFTER, &[&seq, &limit])
        .map_err(|e| Error::pg(db, "catch up on events", e))?;
    rows.iter()
        .map(|r| {
            let seq: i64 = r.try_get(10).map_err(|e| Error::pg(db, "read event", e))?;
            Ok((seq, event_of(db, r).map(|(event, _)| event)))
        })
        .collect()
}

fn event_of(db: &DbName, row: &Row) -> Result<(Event, i64)> {
    let bad = |e| Error::pg(db, "read event", e);
    let payload: String = row.try_get(8).map_err(bad)?;
    let metadata: Option<String> = row.try_get(9).map_err(bad)?;
    Ok((
        Event {
            event_id: row.try_get(0).map_err(bad)?,
            event_type: row.try_get(1).map_err(bad)?,
            source: row.try_get(2).map_err(bad)?,
            timestamp: row.try_get(3).map_err(bad)?,
            correlation_id: row.try_get(4).map_err(bad)?,
            simulation_id: row.try_get(5).map_err(bad)?,
            analysis_id: row.try_get(6).map_err(bad)?,
            optimization_id: row.try_get(7).map_err(bad)?,
            payload: json::parse(db, "event payload", Some(&payload))?.unwrap_or(Value::Null),
            metadata: json::parse(db, "event metadata", metadata.as_deref())?,
        },
        row.try_get(10).map_err(bad)?,
    ))
}
