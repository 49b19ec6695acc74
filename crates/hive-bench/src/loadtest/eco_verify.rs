//! Reading the `ecosystemiser` tables back after a run and comparing them, row by row, with
//! the writes the workers saw acknowledged.

use std::collections::HashMap;

use hive_db_core::rusqlite::types::ValueRef;
use serde_json::Value;

use crate::loadtest::eco::{
    BATCH, ECO, EcoAck, SIMULATIONS, STUDY_SIZE, event_id, event_payload, metric, sim_id, study_id,
    study_sim_id,
};
use crate::loadtest::store::Store;
use crate::loadtest::verify::Findings;
use crate::loadtest::workload::Ack;

/// Calls `row` with each row of a query on the `ecosystemiser` database, as strings, one at a
/// time (the tables are not held in memory).
fn each_row<S: Store>(store: &S, sql: &str, mut row: impl FnMut(&[String])) -> anyhow::Result<()> {
    store.read(ECO, |c| {
        let mut stmt = c.prepare(sql)?;
        let n = stmt.column_count();
        let mut values = vec![String::new(); n];
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            for (i, value) in values.iter_mut().enumerate() {
                value.clear();
                match r.get_ref(i)? {
                    ValueRef::Null => value.push_str("NULL"),
                    ValueRef::Integer(n) => value.push_str(&n.to_string()),
                    ValueRef::Real(x) => value.push_str(&x.to_string()),
                    ValueRef::Text(t) => value.push_str(&String::from_utf8_lossy(t)),
                    ValueRef::Blob(b) => value.push_str(&format!("<{} bytes>", b.len())),
                }
            }
            row(&values);
        }
        Ok(())
    })
}

/// Compares the rows of `sql` (key first) with `expected`: `same` says whether a stored row
/// has the expected content. Acknowledged rows not stored, or stored otherwise, are missing;
/// stored rows nobody acknowledged are unexpected.
fn compare<S: Store, T: std::fmt::Debug>(
    store: &S,
    f: &mut Findings,
    what: &str,
    sql: &str,
    mut expected: HashMap<String, T>,
    same: impl Fn(&T, &[String]) -> bool,
) -> anyhow::Result<()> {
    each_row(store, sql, |row| match expected.remove(&row[0]) {
        Some(want) => {
            f.checked += 1;
            if !same(&want, &row[1..]) {
                f.missing(format!(
                    "{what} {}: expected {want:?}, stored {:?}",
                    row[0],
                    &row[1..]
                ));
            }
        }
        None => f.unexpected(format!("{what} {} was never acknowledged", row[0])),
    })?;
    for (key, want) in expected {
        f.checked += 1;
        f.missing(format!("{what} {key} ({want:?}) is absent"));
    }
    Ok(())
}

/// Compares events, metrics, studies and simulations with the acknowledged writes.
///
/// # Errors
///
/// When a table cannot be read.
pub(crate) fn verify<S: Store>(store: &S, acks: &[Ack], f: &mut Findings) -> anyhow::Result<()> {
    let mut events = HashMap::new();
    let mut metrics: HashMap<String, f64> = HashMap::new();
    let mut studies: HashMap<String, (u32, u32)> = HashMap::new();
    let mut sims: HashMap<String, &str> =
        (0..SIMULATIONS).map(|s| (sim_id(s), "pending")).collect();
    for ack in acks {
        let Ack::Eco(ack) = ack else { continue };
        match *ack {
            EcoAck::Event { worker, seq, sim } => {
                events.insert(event_id(worker, seq), (sim, worker, seq));
            }
            EcoAck::Metrics { worker, seq, sim } => {
                for i in 0..BATCH {
                    let (name, value) = metric(worker, seq, i);
                    metrics.insert(format!("{}/{name}", sim_id(sim)), value);
                }
            }
            EcoAck::StudyCreated { worker, k } => {
                studies.insert(study_id(worker, k), (0, 0));
            }
            EcoAck::StudySimAdded { worker, k, n } => {
                studies.entry(study_id(worker, k)).or_default().0 += 1;
                sims.insert(study_sim_id(worker, k, n), "pending");
            }
            EcoAck::StudySimFinished { worker, k, n, seq } => {
                studies.entry(study_id(worker, k)).or_default().1 += 1;
                sims.insert(study_sim_id(worker, k, n), "completed");
                metrics.insert(format!("{}/score", study_sim_id(worker, k, n)), seq as f64);
            }
        }
    }
    compare(
        store,
        f,
        "event",
        "SELECT event_id, simulation_id, payload FROM ecosystemiser_events",
        events,
        |&(sim, worker, seq), row| {
            row[0] == sim_id(sim)
                && serde_json::from_str::<Value>(&row[1])
                    .is_ok_and(|p| p == event_payload(worker, seq))
        },
    )?;
    compare(
        store,
        f,
        "metric",
        "SELECT simulation_id || '/' || metric_name, metric_value FROM simulation_metrics",
        metrics,
        |value, row| row[0].parse::<f64>().ok() == Some(*value),
    )?;
    let studies = studies
        .into_iter()
        .map(|(id, (added, finished))| {
            let status = match (added, finished) {
                (0, _) => "pending",
                (_, n) if n >= STUDY_SIZE => "completed",
                _ => "running",
            };
            (
                id,
                [status.to_owned(), finished.to_string(), added.to_string()],
            )
        })
        .collect();
    compare(
        store,
        f,
        "study",
        "SELECT s.study_id, s.status, s.completed_simulations,
                (SELECT count(*) FROM study_simulations l WHERE l.study_id = s.study_id)
         FROM studies s",
        studies,
        |want, row| want[..] == *row,
    )?;
    compare(
        store,
        f,
        "simulation",
        "SELECT simulation_id, status FROM simulations",
        sims,
        |status, row| row[0] == *status,
    )
}
