//! The `ecosystemiser` operations of [`eco_ops`](crate::loadtest::eco_ops) written in plain
//! SQL on the store's connections, as an application without the data layer would write
//! them: the same statements in the same transactions, the same draws from the worker's
//! random stream, the same acknowledged writes. `--compare` runs the mix this way through
//! the registry and through every baseline, so the registry's two runs differ only by the
//! data layer, and the baselines run every operation the registry runs.

use anyhow::{Context, ensure};
use hive_db_core::rusqlite::{OptionalExtension, Row};
use serde_json::Value;

use crate::loadtest::eco::{
    BATCH, ECO, EcoAck, SIMULATIONS, SPECS, STUDY_SIZE, TYPES, event_id, event_payload, metric,
    sim_id, study_id, study_sim_id,
};
use crate::loadtest::store::{Read, Store, Write};
use crate::loadtest::workload::{Ack, StudyStep, Worker};

/// Newest events a history query reads (as through the data layer).
const HISTORY: i64 = 20;

/// The columns of a full spec, then the filter and order of one lookup.
macro_rules! select_spec {
    ($filter:literal) => {
        concat!(
            "SELECT ct.name, ct.category, cs.name, cs.version, cs.technical_params, \
             cs.economic_params, cs.environmental_params, cs.metadata, ct.description, \
             cs.is_default \
             FROM component_specs cs JOIN component_types ct ON cs.component_type_id = ct.id \
             WHERE ",
            $filter,
            " ORDER BY cs.id DESC LIMIT 1"
        )
    };
}

/// A spec as the lookup reads it: its keys, its default flag, and its parameters parsed.
#[derive(Debug)]
struct Spec {
    component_type: String,
    name: String,
    is_default: bool,
    /// Technical, economic and environmental parameters and metadata, as stored.
    params: [Option<Value>; 4],
}

fn parse(text: Option<String>) -> anyhow::Result<Option<Value>> {
    text.map(|t| serde_json::from_str(&t).context("a spec's parameters are not JSON"))
        .transpose()
}

fn spec_of_sqlite(r: &Row<'_>) -> hive_db_core::rusqlite::Result<(Spec, [Option<String>; 4])> {
    let _category: String = r.get(1)?;
    let _version: String = r.get(3)?;
    let _description: Option<String> = r.get(8)?;
    Ok((
        Spec {
            component_type: r.get(0)?,
            name: r.get(2)?,
            is_default: r.get::<_, Option<bool>>(9)?.unwrap_or(false),
            params: Default::default(),
        },
        [r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?],
    ))
}

/// Reads one spec: a named one or a type's default.
///
/// # Errors
///
/// The database's, or a spec other than the one asked for.
pub(crate) fn component_lookup<S: Store>(w: &mut Worker<'_, S>) -> anyhow::Result<()> {
    let (name, _) = TYPES[(w.rng.next() % TYPES.len() as u64) as usize];
    let pick = w.rng.next() % (SPECS + 1);
    let wanted = (pick < SPECS).then(|| format!("model-{pick}"));
    let found = w.store.read(ECO, |c| -> anyhow::Result<_> {
        let (mut spec, texts) = match (c, &wanted) {
            (Read::Sqlite(c), Some(spec)) => c
                .prepare_cached(select_spec!("ct.name = ?1 AND cs.name = ?2"))?
                .query_row((name, spec), spec_of_sqlite)
                .optional()?,
            (Read::Sqlite(c), None) => c
                .prepare_cached(select_spec!("ct.name = ?1 AND cs.is_default = 1"))?
                .query_row([name], spec_of_sqlite)
                .optional()?,
            (Read::Pg(c), wanted) => {
                let row = match wanted {
                    Some(spec) => c.query_opt(
                        select_spec!("ct.name = $1 AND cs.name = $2"),
                        &[&name, spec],
                    )?,
                    None => {
                        c.query_opt(select_spec!("ct.name = $1 AND cs.is_default"), &[&name])?
                    }
                };
                match row {
                    None => None,
                    Some(r) => {
                        let _: (String, String, Option<String>) =
                            (r.try_get(1)?, r.try_get(3)?, r.try_get(8)?);
                        Some((
                            Spec {
                                component_type: r.try_get(0)?,
                                name: r.try_get(2)?,
                                is_default: r.try_get::<_, Option<bool>>(9)?.unwrap_or(false),
                                params: Default::default(),
                            },
                            [r.try_get(4)?, r.try_get(5)?, r.try_get(6)?, r.try_get(7)?],
                        ))
                    }
                }
            }
        }
        .with_context(|| format!("no spec {name} {wanted:?}"))?;
        for (param, text) in spec.params.iter_mut().zip(texts) {
            *param = parse(text)?;
        }
        Ok(spec)
    })?;
    ensure!(
        found.component_type == name
            && wanted
                .as_ref()
                .map_or(found.is_default, |n| found.name == *n)
            && found.params[0].is_some(),
        "asked for {name} {wanted:?}, got {found:?}"
    );
    Ok(())
}

/// Publishes one progress event of a random simulation: on PostgreSQL under the event order
/// row's lock and with a notification, as the event store keeps commit order there.
///
/// # Errors
///
/// The database's.
pub(crate) fn event_publish<S: Store>(w: &mut Worker<'_, S>) -> anyhow::Result<()> {
    let (worker, seq, sim) = (w.id, w.seq, w.rng.next() % SIMULATIONS);
    let (id, simulation) = (event_id(worker, seq), sim_id(sim));
    let correlation = format!("worker-{worker}");
    let payload = serde_json::to_string(&event_payload(worker, seq))?;
    // Stamped here, outside the transaction, as the data layer stamps an event when it is
    // made (microseconds since the Unix epoch: the application's own format).
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros()
        .to_string();
    w.store.write(ECO, |tx| {
        match tx {
            Write::Sqlite(tx) => {
                tx.prepare_cached(
                    "INSERT INTO ecosystemiser_events
                         (event_id, event_type, source, timestamp, correlation_id,
                          simulation_id, payload)
                     VALUES (?1, 'simulation.progress', 'loadtest', ?2, ?3, ?4, ?5)",
                )?
                .execute((
                    &id,
                    &timestamp,
                    &correlation,
                    &simulation,
                    &payload,
                ))?;
            }
            Write::Pg(tx) => {
                tx.execute(
                    "SELECT id FROM ecosystemiser_event_order WHERE id = 1 FOR UPDATE",
                    &[],
                )?;
                let seq: i64 = tx
                    .query_one(
                        "INSERT INTO ecosystemiser_events
                             (event_id, event_type, source, timestamp, correlation_id,
                              simulation_id, payload)
                         VALUES ($1, 'simulation.progress', 'loadtest', $2, $3, $4, $5)
                         RETURNING seq",
                        &[&id, &timestamp, &correlation, &simulation, &payload],
                    )?
                    .try_get(0)?;
                tx.execute(
                    "SELECT pg_notify('ecosystemiser_events', $1)",
                    &[&seq.to_string()],
                )?;
            }
        }
        Ok(())
    })?;
    w.acks.push(Ack::Eco(EcoAck::Event { worker, seq, sim }));
    Ok(())
}

/// An event's ten columns as the history reads them.
type EventRow = (
    String,
    String,
    String,
    String,
    [Option<String>; 4],
    String,
    Option<String>,
);

/// Reads the newest events of a random simulation.
///
/// # Errors
///
/// The database's, or a history of another simulation or over its limit.
pub(crate) fn event_history<S: Store>(w: &mut Worker<'_, S>) -> anyhow::Result<()> {
    let sim = sim_id(w.rng.next() % SIMULATIONS);
    let events: Vec<EventRow> = w.store.read(ECO, |c| match c {
        Read::Sqlite(c) => {
            let mut stmt = c.prepare_cached(
                "SELECT event_id, event_type, source, timestamp, correlation_id, simulation_id,
                        analysis_id, optimization_id, payload, metadata
                 FROM ecosystemiser_events WHERE simulation_id = ?1
                 ORDER BY seq DESC LIMIT CAST(?2 AS INTEGER)",
            )?;
            let rows = stmt.query_map((&sim, HISTORY), |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    [r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?],
                    r.get(8)?,
                    r.get(9)?,
                ))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        }
        Read::Pg(c) => c
            .query(
                "SELECT event_id, event_type, source, timestamp, correlation_id, simulation_id,
                        analysis_id, optimization_id, payload, metadata
                 FROM ecosystemiser_events WHERE simulation_id = $1
                 ORDER BY seq DESC LIMIT $2",
                &[&sim, &HISTORY],
            )?
            .iter()
            .map(|r| {
                Ok((
                    r.try_get(0)?,
                    r.try_get(1)?,
                    r.try_get(2)?,
                    r.try_get(3)?,
                    [r.try_get(4)?, r.try_get(5)?, r.try_get(6)?, r.try_get(7)?],
                    r.try_get(8)?,
                    r.try_get(9)?,
                ))
            })
            .collect(),
    })?;
    ensure!(events.len() <= HISTORY as usize, "{} events", events.len());
    for (_, _, _, _, ids, payload, metadata) in &events {
        ensure!(
            ids[1].as_deref() == Some(&sim),
            "history of {sim} holds another simulation's events"
        );
        // What the application reads an event for: its payload (and metadata), as values.
        serde_json::from_str::<Value>(payload).context("an event's payload is not JSON")?;
        parse(metadata.clone())?;
    }
    Ok(())
}

/// Inserts the metrics `(name, value, unit)` of `simulation` with one statement.
fn insert_metrics(
    tx: &mut Write<'_, '_>,
    simulation: &str,
    metrics: &[(String, f64, Option<&str>)],
) -> anyhow::Result<()> {
    match tx {
        Write::Sqlite(tx) => {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO simulation_metrics (simulation_id, metric_name, metric_value, unit)
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (name, value, unit) in metrics {
                stmt.execute((simulation, name, value, unit))?;
            }
        }
        Write::Pg(tx) => {
            let stmt = tx.prepare(
                "INSERT INTO simulation_metrics (simulation_id, metric_name, metric_value, unit)
                 VALUES ($1, $2, $3, $4)",
            )?;
            for (name, value, unit) in metrics {
                tx.execute(&stmt, &[&simulation, name, value, unit])?;
            }
        }
    }
    Ok(())
}

/// Counts the rows `sql` counts (keys `keys`, in both dialects' placeholders).
fn count(tx: &mut Write<'_, '_>, sqlite: &str, pg: &str, keys: &[&str]) -> anyhow::Result<i64> {
    Ok(match tx {
        Write::Sqlite(tx) => tx
            .prepare_cached(sqlite)?
            .query_row(hive_db_core::rusqlite::params_from_iter(keys), |r| r.get(0))?,
        Write::Pg(tx) => {
            let params: Vec<&(dyn hive_db_core::postgres::types::ToSql + Sync)> =
                keys.iter().map(|k| k as _).collect();
            tx.query_one(pg, &params)?.try_get(0)?
        }
    })
}

/// Records a batch of metrics of a random simulation in one transaction, once the
/// simulation is found.
///
/// # Errors
///
/// The database's, or an unknown simulation.
pub(crate) fn metrics_batch<S: Store>(w: &mut Worker<'_, S>) -> anyhow::Result<()> {
    let (worker, seq, sim) = (w.id, w.seq, w.rng.next() % SIMULATIONS);
    let simulation = sim_id(sim);
    let metrics: Vec<_> = (0..BATCH)
        .map(|i| {
            let (name, value) = metric(worker, seq, i);
            (name, value, Some("kWh"))
        })
        .collect();
    w.store.write(ECO, |mut tx| {
        let found = count(
            &mut tx,
            "SELECT count(*) FROM simulations WHERE simulation_id = ?1",
            "SELECT count(*) FROM simulations WHERE simulation_id = $1",
            &[&simulation],
        )?;
        ensure!(found == 1, "simulation {simulation} not found");
        insert_metrics(&mut tx, &simulation, &metrics)
    })?;
    w.acks.push(Ack::Eco(EcoAck::Metrics { worker, seq, sim }));
    Ok(())
}

/// Moves this worker's study on by one step, as `eco_ops::study_update` does through the
/// repositories: create it; add its next simulation; or finish a simulation.
///
/// # Errors
///
/// The database's, or a study whose stored count is not the worker's.
pub(crate) fn study_update<S: Store>(w: &mut Worker<'_, S>) -> anyhow::Result<()> {
    let (worker, seq) = (w.id, w.seq);
    let step = w.eco.next_step();
    match step {
        StudyStep::Create { k } => {
            let study = study_id(worker, k);
            let configuration = serde_json::json!({"parameter": "capacity_kw"}).to_string();
            w.store
                .write(ECO, |mut tx| create(&mut tx, &study, &configuration))?;
        }
        StudyStep::Finish { k, n } => {
            let (study, simulation) = (study_id(worker, k), study_sim_id(worker, k, n));
            let score = [("score".to_owned(), seq as f64, None)];
            let completed = w
                .store
                .write(ECO, |mut tx| finish(&mut tx, &study, &simulation, &score))?;
            ensure!(
                completed == i64::from(n + 1),
                "study {study} counts {completed} finished, expected {}",
                n + 1
            );
        }
        StudyStep::Add { k, n } => {
            let (study, simulation) = (study_id(worker, k), study_sim_id(worker, k, n));
            let parameters = serde_json::json!({"capacity_kw": 10 * (n + 1)}).to_string();
            w.store.write(ECO, |mut tx| {
                add(&mut tx, &study, &simulation, &parameters, n)
            })?;
        }
    }
    let ack = w.eco.done(step, worker, seq);
    w.acks.push(Ack::Eco(ack));
    Ok(())
}

/// Creates a study, pending, none of its simulations completed.
fn create(tx: &mut Write<'_, '_>, study: &str, configuration: &str) -> anyhow::Result<()> {
    match tx {
        Write::Sqlite(tx) => {
            tx.prepare_cached(
                "INSERT INTO studies (study_id, study_type, status, total_simulations,
                                      completed_simulations, configuration)
                 VALUES (?1, 'parametric', 'pending', ?2, 0, ?3)",
            )?
            .execute((study, STUDY_SIZE, configuration))?;
        }
        Write::Pg(tx) => {
            tx.execute(
                "INSERT INTO studies (study_id, study_type, status, total_simulations,
                                      completed_simulations, configuration)
                 VALUES ($1, 'parametric', 'pending', $2, 0, $3)",
                &[&study, &i64::from(STUDY_SIZE), &configuration],
            )?;
        }
    }
    Ok(())
}

/// Starts the study if it is pending, creates its simulation `n` and links it.
fn add(
    tx: &mut Write<'_, '_>,
    study: &str,
    simulation: &str,
    parameters: &str,
    n: u32,
) -> anyhow::Result<()> {
    let started = match tx {
        Write::Sqlite(tx) => tx
            .prepare_cached(
                "UPDATE studies SET status = 'running' WHERE study_id = ?1 AND status = 'pending'",
            )?
            .execute([study])? as u64,
        Write::Pg(tx) => tx.execute(
            "UPDATE studies SET status = 'running' WHERE study_id = $1 AND status = 'pending'",
            &[&study],
        )?,
    };
    if started == 0 {
        let found = count(
            tx,
            "SELECT count(*) FROM studies WHERE study_id = ?1",
            "SELECT count(*) FROM studies WHERE study_id = $1",
            &[study],
        )?;
        ensure!(found == 1, "study {study} not found");
    }
    match tx {
        Write::Sqlite(tx) => {
            tx.prepare_cached(
                "INSERT INTO simulations (simulation_id, system_config_path, solver_type, status)
                 VALUES (?1, 'configs/loadtest.yml', 'milp', 'pending')",
            )?
            .execute([simulation])?;
            tx.prepare_cached(
                "INSERT INTO study_simulations
                     (study_id, simulation_id, parameter_set, sequence_number)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute((study, simulation, parameters, n))?;
        }
        Write::Pg(tx) => {
            tx.execute(
                "INSERT INTO simulations (simulation_id, system_config_path, solver_type, status)
                 VALUES ($1, 'configs/loadtest.yml', 'milp', 'pending')",
                &[&simulation],
            )?;
            tx.execute(
                "INSERT INTO study_simulations
                     (study_id, simulation_id, parameter_set, sequence_number)
                 VALUES ($1, $2, $3, $4)",
                &[&study, &simulation, &parameters, &i64::from(n)],
            )?;
        }
    }
    Ok(())
}

/// A study's progress, as the application reads it back after counting a simulation in it.
macro_rules! progress {
    ($key:literal) => {
        concat!(
            "SELECT s.study_id, s.status, s.total_simulations, \
             coalesce(s.completed_simulations, 0), \
             (SELECT count(*) FROM study_simulations l WHERE l.study_id = s.study_id), \
             s.error_message FROM studies s WHERE s.study_id = ",
            $key
        )
    };
}

/// The completed count of a progress row, its other columns read as the application would.
fn progress_of(r: &Row<'_>) -> hive_db_core::rusqlite::Result<i64> {
    let _: (String, String, i64, i64, Option<String>) =
        (r.get(0)?, r.get(1)?, r.get(2)?, r.get(4)?, r.get(5)?);
    r.get(3)
}

/// Completes a linked simulation with its score, counts it in the study, and returns the
/// study's completed count.
fn finish(
    tx: &mut Write<'_, '_>,
    study: &str,
    simulation: &str,
    score: &[(String, f64, Option<&str>)],
) -> anyhow::Result<i64> {
    let linked = count(
        tx,
        "SELECT count(*) FROM study_simulations WHERE study_id = ?1 AND simulation_id = ?2",
        "SELECT count(*) FROM study_simulations WHERE study_id = $1 AND simulation_id = $2",
        &[study, simulation],
    )?;
    ensure!(linked == 1, "{simulation} is not linked to {study}");
    let completed_sim = match tx {
        Write::Sqlite(tx) => tx
            .prepare_cached(
                "UPDATE simulations SET status = 'completed', completed_at = CURRENT_TIMESTAMP
                 WHERE simulation_id = ?1",
            )?
            .execute([simulation])? as u64,
        Write::Pg(tx) => tx.execute(
            "UPDATE simulations SET status = 'completed',
                 completed_at = to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')
             WHERE simulation_id = $1",
            &[&simulation],
        )?,
    };
    ensure!(completed_sim == 1, "simulation {simulation} not found");
    insert_metrics(tx, simulation, score)?;
    Ok(match tx {
        Write::Sqlite(tx) => {
            tx.prepare_cached(
                "UPDATE studies SET completed_simulations = coalesce(completed_simulations, 0) + 1,
                     status = CASE WHEN coalesce(completed_simulations, 0) + 1 >= total_simulations
                                   THEN 'completed' ELSE 'running' END,
                     completed_at = CASE WHEN coalesce(completed_simulations, 0) + 1 >= total_simulations
                                         THEN CURRENT_TIMESTAMP ELSE completed_at END
                 WHERE study_id = ?1",
            )?
            .execute([study])?;
            tx.prepare_cached(progress!("?1"))?
                .query_row([study], progress_of)?
        }
        Write::Pg(tx) => {
            tx.execute(
                "UPDATE studies SET completed_simulations = coalesce(completed_simulations, 0) + 1,
                     status = CASE WHEN coalesce(completed_simulations, 0) + 1 >= total_simulations
                                   THEN 'completed' ELSE 'running' END,
                     completed_at = CASE WHEN coalesce(completed_simulations, 0) + 1 >= total_simulations
                                         THEN to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')
                                         ELSE completed_at END
                 WHERE study_id = $1",
                &[&study],
            )?;
            let r = tx.query_one(progress!("$1"), &[&study])?;
            let _: (String, String, i64, Option<String>) =
                (r.try_get(0)?, r.try_get(1)?, r.try_get(4)?, r.try_get(5)?);
            r.try_get::<_, i64>(2)?;
            r.try_get(3)?
        }
    })
}
