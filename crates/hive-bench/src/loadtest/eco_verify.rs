//! Reading the `ecosystemiser` tables back after a run and comparing them, row by row, with
//! the writes the workers saw acknowledged.

use std::collections::HashMap;

use hive_db_core::rusqlite::types::ValueRef;
use serde_json::Value;

use crate::loadtest::eco::{
    BATCH, ECO, EcoAck, SIMULATIONS, STUDY_SIZE, event_id, event_payload, metric, sim_id, study_id,
    study_sim_id,
};
use crate::loadtest::pg_rows;
use crate::loadtest::store::{Read, Store};
use crate::loadtest::verify::Findings;
use crate::loadtest::workload::Ack;

/// A metric row's key, `simulation/metric`, without its strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum MetricKey {
    /// `sim-{sim}/w{worker}-s{seq}-m{i}` (see [`metric`]).
    Batch {
        sim: u64,
        worker: u32,
        seq: u64,
        i: u64,
    },
    /// `study-w{worker}-{k}-sim-{n}/score`.
    Score { worker: u32, k: u32, n: u32 },
}

impl MetricKey {
    /// The key of a stored row, if an acknowledged write could have made it: it must read
    /// back to the very string such a write used.
    fn parse(key: &str) -> Option<Self> {
        let (simulation, name) = key.split_once('/')?;
        let parsed = if name == "score" {
            let rest = simulation.strip_prefix("study-w")?;
            let (worker, rest) = rest.split_once('-')?;
            let (k, n) = rest.split_once("-sim-")?;
            Self::Score {
                worker: worker.parse().ok()?,
                k: k.parse().ok()?,
                n: n.parse().ok()?,
            }
        } else {
            let rest = name.strip_prefix('w')?;
            let (worker, rest) = rest.split_once("-s")?;
            let (seq, i) = rest.split_once("-m")?;
            Self::Batch {
                sim: simulation.strip_prefix("sim-")?.parse().ok()?,
                worker: worker.parse().ok()?,
                seq: seq.parse().ok()?,
                i: i.parse().ok()?,
            }
        };
        (parsed.to_key() == key).then_some(parsed)
    }

    fn to_key(self) -> String {
        match self {
            Self::Batch {
                sim,
                worker,
                seq,
                i,
            } => {
                format!("{}/{}", sim_id(sim), metric(worker, seq, i).0)
            }
            Self::Score { worker, k, n } => format!("{}/score", study_sim_id(worker, k, n)),
        }
    }
}

/// One query of the verifier in both dialects. PostgreSQL's casts every column to text, so
/// both read back as the same strings.
#[derive(Debug, Clone, Copy)]
struct Query {
    sqlite: &'static str,
    pg: &'static str,
}

/// Calls `row` with each row of a query on the `ecosystemiser` database, as strings, one at a
/// time (the tables are not held in memory).
fn each_row<S: Store>(store: &S, sql: Query, mut row: impl FnMut(&[String])) -> anyhow::Result<()> {
    store.read(ECO, |c| match c {
        Read::Sqlite(c) => {
            let mut stmt = c.prepare(sql.sqlite)?;
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
        }
        Read::Pg(c) => {
            let mut values = Vec::new();
            pg_rows::each(c, sql.pg, |r| {
                values.clear();
                for i in 0..r.len() {
                    let v: Option<String> = r.try_get(i)?;
                    values.push(v.unwrap_or_else(|| "NULL".to_owned()));
                }
                row(&values);
                Ok(())
            })
        }
    })
}

/// Compares the rows of `sql` (key first) with `expected`: `same` says whether a stored row
/// has the expected content. Acknowledged rows not stored, or stored otherwise, are missing;
/// stored rows nobody acknowledged are unexpected.
fn compare<S: Store, T: std::fmt::Debug>(
    store: &S,
    f: &mut Findings,
    what: &str,
    sql: Query,
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
    // One table at a time, each expectation built just before its comparison and dropped
    // after it: together they would be most of the run's peak memory.
    verify_events(store, acks, f)?;
    verify_metrics(store, acks, f)?;
    verify_studies(store, acks, f)
}

/// The acknowledged writes to the `ecosystemiser` tables.
fn eco(acks: &[Ack]) -> impl Iterator<Item = &EcoAck> {
    acks.iter().filter_map(|a| match a {
        Ack::Eco(ack) => Some(ack),
        _ => None,
    })
}

fn verify_events<S: Store>(store: &S, acks: &[Ack], f: &mut Findings) -> anyhow::Result<()> {
    let events: HashMap<String, (u64, u32, u64)> = eco(acks)
        .filter_map(|ack| match *ack {
            EcoAck::Event { worker, seq, sim } => Some((event_id(worker, seq), (sim, worker, seq))),
            _ => None,
        })
        .collect();
    compare(
        store,
        f,
        "event",
        Query {
            sqlite: "SELECT event_id, simulation_id, payload FROM ecosystemiser_events",
            pg: "SELECT event_id, simulation_id, payload FROM ecosystemiser_events",
        },
        events,
        |&(sim, worker, seq), row| {
            row[0] == sim_id(sim)
                && serde_json::from_str::<Value>(&row[1])
                    .is_ok_and(|p| p == event_payload(worker, seq))
        },
    )
}

fn verify_metrics<S: Store>(store: &S, acks: &[Ack], f: &mut Findings) -> anyhow::Result<()> {
    // One entry per acknowledged batch, not per metric: a batch's ten values follow from its
    // key, so a map of every metric (the largest thing a run held) is not needed.
    let mut batches: HashMap<(u32, u64), (u64, u16)> = HashMap::new();
    let mut scores: HashMap<(u32, u32, u32), u64> = HashMap::new();
    for ack in eco(acks) {
        match *ack {
            EcoAck::Metrics { worker, seq, sim } => {
                batches.insert((worker, seq), (sim, 0));
            }
            EcoAck::StudySimFinished { worker, k, n, seq } => {
                scores.insert((worker, k, n), seq);
            }
            _ => {}
        }
    }
    each_row(
        store,
        Query {
            sqlite: "SELECT simulation_id || '/' || metric_name, metric_value \
                     FROM simulation_metrics",
            pg: "SELECT simulation_id || '/' || metric_name, metric_value::text \
                 FROM simulation_metrics",
        },
        |row| {
            let stored = row[1].parse::<f64>().ok();
            let expected = take_expected(&row[0], &mut batches, &mut scores);
            match expected {
                Some(want) => {
                    f.checked += 1;
                    if stored != Some(want) {
                        f.missing(format!(
                            "metric {}: expected {want}, stored {}",
                            row[0], row[1]
                        ));
                    }
                }
                None => f.unexpected(format!("metric {} was never acknowledged", row[0])),
            }
        },
    )?;
    for ((worker, seq), (sim, seen)) in batches {
        for i in (0..BATCH).filter(|i| seen & (1 << i) == 0) {
            let (name, value) = metric(worker, seq, i);
            f.checked += 1;
            f.missing(format!("metric {}/{name} ({value}) is absent", sim_id(sim)));
        }
    }
    for ((worker, k, n), seq) in scores {
        f.checked += 1;
        f.missing(format!(
            "metric {}/score ({seq}) is absent",
            study_sim_id(worker, k, n)
        ));
    }
    Ok(())
}

/// The value acknowledged for the metric row `key`, taken out of `batches` (a batch's
/// values are marked seen one by one) or `scores`; `None` when nobody acknowledged it.
fn take_expected(
    key: &str,
    batches: &mut HashMap<(u32, u64), (u64, u16)>,
    scores: &mut HashMap<(u32, u32, u32), u64>,
) -> Option<f64> {
    match MetricKey::parse(key)? {
        MetricKey::Batch {
            sim,
            worker,
            seq,
            i,
        } => batches
            .get_mut(&(worker, seq))
            .filter(|(want_sim, seen)| i < BATCH && *want_sim == sim && seen & (1 << i) == 0)
            .map(|(_, seen)| {
                *seen |= 1 << i;
                metric(worker, seq, i).1
            }),
        MetricKey::Score { worker, k, n } => scores.remove(&(worker, k, n)).map(|seq| seq as f64),
    }
}

/// Studies (status, finished and added simulations) and simulations (status).
fn verify_studies<S: Store>(store: &S, acks: &[Ack], f: &mut Findings) -> anyhow::Result<()> {
    let mut studies: HashMap<String, (u32, u32)> = HashMap::new();
    let mut sims: HashMap<String, &str> =
        (0..SIMULATIONS).map(|s| (sim_id(s), "pending")).collect();
    for ack in eco(acks) {
        match *ack {
            EcoAck::StudyCreated { worker, k } => {
                studies.insert(study_id(worker, k), (0, 0));
            }
            EcoAck::StudySimAdded { worker, k, n } => {
                studies.entry(study_id(worker, k)).or_default().0 += 1;
                sims.insert(study_sim_id(worker, k, n), "pending");
            }
            EcoAck::StudySimFinished { worker, k, n, .. } => {
                studies.entry(study_id(worker, k)).or_default().1 += 1;
                sims.insert(study_sim_id(worker, k, n), "completed");
            }
            _ => {}
        }
    }
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
        Query {
            sqlite: "SELECT s.study_id, s.status, s.completed_simulations,
                        (SELECT count(*) FROM study_simulations l WHERE l.study_id = s.study_id)
                     FROM studies s",
            pg: "SELECT s.study_id, s.status, s.completed_simulations::text,
                    (SELECT count(*) FROM study_simulations l
                     WHERE l.study_id = s.study_id)::text
                 FROM studies s",
        },
        studies,
        |want, row| want[..] == *row,
    )?;
    compare(
        store,
        f,
        "simulation",
        Query {
            sqlite: "SELECT simulation_id, status FROM simulations",
            pg: "SELECT simulation_id, status FROM simulations",
        },
        sims,
        |status, row| row[0] == *status,
    )
}

#[cfg(test)]
mod tests {
    use super::MetricKey;

    /// Bug caught: a metric key that does not read back from its own row (every batch metric
    /// reported missing and unexpected), or a stored key spelled differently from any
    /// acknowledged write (a leading zero, a stray suffix) taken for one.
    #[test]
    fn metric_keys_read_back_exactly() {
        for key in [
            MetricKey::Batch {
                sim: 3,
                worker: 7,
                seq: 12_345,
                i: 9,
            },
            MetricKey::Score {
                worker: 2,
                k: 4,
                n: 1,
            },
        ] {
            assert_eq!(MetricKey::parse(&key.to_key()), Some(key));
        }
        for stored in [
            "sim-03/w7-s12345-m9",
            "sim-3/w7-s12345-m9x",
            "sim-3/score",
            "study-w2-4-sim-1/w2-s1-m1x",
            "no-slash",
        ] {
            assert_eq!(MetricKey::parse(stored), None, "{stored}");
        }
    }
}
