//! The run repositories' SQL on PostgreSQL, statement for statement the counterpart of the
//! SQLite SQL in the files beside it (`simulations.rs`, `studies.rs`, `analysis.rs`,
//! `optimization.rs`, and the status change in `mod.rs`). Each write is one transaction.

use hive_db_core::postgres::{GenericClient, Transaction};
use hive_db_core::{DbName, PgHandle};

use super::{
    Individual, Metric, NewAnalysisRun, NewOptimizationRun, NewSimulation, NewStudy, Objective,
    OptimizationProgress, RunKind, Simulation, StatusUpdate, StudyProgress, require_row,
};
use crate::backend::read_primary;
use crate::error::{Error, Result};
use crate::json;

/// SQLite's `CURRENT_TIMESTAMP` text (UTC, `YYYY-MM-DD HH:MM:SS`), so both engines store the
/// same form.
macro_rules! now_text {
    () => {
        "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')"
    };
}

/// The `UPDATE` of a status change, for the run table `$table` keyed by `$key`.
macro_rules! status_update_sql {
    ($table:literal, $key:literal) => {
        concat!(
            "UPDATE ",
            $table,
            " SET status = $2, completed_at = CASE WHEN $3 THEN ",
            now_text!(),
            " ELSE completed_at END, \
             duration_seconds = coalesce($4::double precision, duration_seconds), \
             results_path = coalesce($5::text, results_path), \
             error_message = coalesce($6::text, error_message) WHERE ",
            $key,
            " = $1"
        )
    };
}

/// The update of a run for a new generation, keeping the `least` or `greatest` fitness.
macro_rules! record_generation_sql {
    ($better:literal) => {
        concat!(
            "UPDATE optimization_runs SET status = 'running', \
             generations_completed = greatest(coalesce(generations_completed, 0), $2::bigint + 1), \
             best_fitness = CASE WHEN $3::double precision IS NULL THEN best_fitness \
                                 WHEN best_fitness IS NULL THEN $3 \
                                 ELSE ",
            $better,
            "(best_fitness, $3) END WHERE optimization_id = $1"
        )
    };
}

fn status_sql(kind: RunKind) -> &'static str {
    match kind {
        RunKind::Simulation => status_update_sql!("simulations", "simulation_id"),
        RunKind::Study => status_update_sql!("studies", "study_id"),
        RunKind::Analysis => status_update_sql!("analysis_runs", "analysis_id"),
        RunKind::Optimization => status_update_sql!("optimization_runs", "optimization_id"),
    }
}

fn pg<'a>(
    db: &'a DbName,
    op: &'static str,
) -> impl Fn(hive_db_core::postgres::Error) -> Error + 'a {
    move |e| Error::pg(db, op, e)
}

fn count(
    db: &DbName,
    c: &mut impl GenericClient,
    sql: &str,
    key: &str,
    op: &'static str,
) -> Result<usize> {
    let n: i64 = c
        .query_one(sql, &[&key])
        .and_then(|r| r.try_get(0))
        .map_err(pg(db, op))?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Applies `update` to the run `id` of `kind` (see the SQLite `update_status`).
pub(super) fn update_status(
    db: &DbName,
    tx: &mut Transaction<'_>,
    kind: RunKind,
    id: &str,
    update: &StatusUpdate,
) -> Result<()> {
    super::check_update(update)?;
    let (_, op, what) = kind.status_update();
    let changed = tx
        .execute(
            status_sql(kind),
            &[
                &id,
                &update.status.as_str(),
                &update.status.is_final(),
                &update.duration_seconds,
                &update.results_path,
                &update.error_message,
            ],
        )
        .map_err(pg(db, op))?;
    require_row(db, what, id, usize::try_from(changed).unwrap_or(0))
}

pub(super) fn status(pg_: &PgHandle, kind: RunKind, id: &str, update: &StatusUpdate) -> Result<()> {
    let db = pg_.name();
    pg_.write_with(|tx| update_status(db, tx, kind, id, update))
}

fn insert_simulation(db: &DbName, tx: &mut Transaction<'_>, sim: &NewSimulation) -> Result<()> {
    let metadata = json::encode_opt(db, "simulation metadata", sim.metadata.as_ref())?;
    tx.execute(
        "INSERT INTO simulations (simulation_id, system_config_path, solver_type, status, metadata)
         VALUES ($1, $2, $3, 'pending', $4)",
        &[
            &sim.simulation_id,
            &sim.system_config_path,
            &sim.solver_type,
            &metadata,
        ],
    )
    .map_err(pg(db, "create simulation"))?;
    Ok(())
}

fn insert_metrics(
    db: &DbName,
    tx: &mut Transaction<'_>,
    simulation_id: &str,
    metrics: &[Metric],
) -> Result<()> {
    super::check_metrics(metrics)?;
    if metrics.is_empty() {
        return Ok(());
    }
    let stmt = tx
        .prepare(
            "INSERT INTO simulation_metrics (simulation_id, metric_name, metric_value, unit)
             VALUES ($1, $2, $3, $4)",
        )
        .map_err(pg(db, "record metrics"))?;
    for m in metrics {
        tx.execute(&stmt, &[&simulation_id, &m.name, &m.value, &m.unit])
            .map_err(pg(db, "record metrics"))?;
    }
    Ok(())
}

pub(super) fn create_simulation(p: &PgHandle, sim: &NewSimulation) -> Result<()> {
    let db = p.name();
    p.write_with(|tx| insert_simulation(db, tx, sim))
}

pub(super) fn record_metrics(
    p: &PgHandle,
    simulation_id: &str,
    metrics: &[Metric],
) -> Result<usize> {
    let db = p.name();
    p.write_with(|tx| {
        let n = count(
            db,
            tx,
            "SELECT count(*) FROM simulations WHERE simulation_id = $1",
            simulation_id,
            "find simulation",
        )?;
        require_row(db, "simulation", simulation_id, n)?;
        insert_metrics(db, tx, simulation_id, metrics)?;
        Ok(metrics.len())
    })
}

pub(super) fn simulation(p: &PgHandle, simulation_id: &str) -> Result<Option<Simulation>> {
    let db = p.name();
    read_primary(p, |c| {
        let row = c
            .query_opt(
                "SELECT simulation_id, system_config_path, solver_type, status, created_at,
                        completed_at, duration_seconds, results_path, error_message, metadata
                 FROM simulations WHERE simulation_id = $1",
                &[&simulation_id],
            )
            .map_err(pg(db, "read simulation"))?;
        row.map(|r| -> Result<Simulation> {
            let read = pg(db, "read simulation");
            let metadata: Option<String> = r.try_get(9).map_err(&read)?;
            Ok(Simulation {
                simulation_id: r.try_get(0).map_err(&read)?,
                system_config_path: r.try_get(1).map_err(&read)?,
                solver_type: r.try_get(2).map_err(&read)?,
                status: r.try_get(3).map_err(&read)?,
                created_at: r.try_get(4).map_err(&read)?,
                completed_at: r.try_get(5).map_err(&read)?,
                duration_seconds: r.try_get(6).map_err(&read)?,
                results_path: r.try_get(7).map_err(&read)?,
                error_message: r.try_get(8).map_err(&read)?,
                metadata: json::parse(db, "simulation metadata", metadata.as_deref())?,
            })
        })
        .transpose()
    })
}

pub(super) fn metrics(p: &PgHandle, simulation_id: &str) -> Result<Vec<Metric>> {
    let db = p.name();
    read_primary(p, |c| {
        c.query(
            "SELECT metric_name, metric_value, unit FROM simulation_metrics
             WHERE simulation_id = $1 ORDER BY id",
            &[&simulation_id],
        )
        .and_then(|rows| {
            rows.iter()
                .map(|r| {
                    Ok(Metric {
                        name: r.try_get(0)?,
                        value: r.try_get(1)?,
                        unit: r.try_get(2)?,
                    })
                })
                .collect()
        })
        .map_err(pg(db, "read metrics"))
    })
}

pub(super) fn create_study(
    p: &PgHandle,
    study: &NewStudy,
    configuration: Option<&str>,
    metadata: Option<&str>,
) -> Result<()> {
    let db = p.name();
    p.write_with(|tx| {
        tx.execute(
            "INSERT INTO studies (study_id, study_type, status, total_simulations,
                                  completed_simulations, configuration, metadata)
             VALUES ($1, $2, 'pending', $3, 0, $4, $5)",
            &[
                &study.study_id,
                &study.study_type,
                &i64::from(study.total_simulations),
                &configuration,
                &metadata,
            ],
        )
        .map_err(pg(db, "create study"))?;
        Ok(())
    })
}

pub(super) fn add_study_simulation(
    p: &PgHandle,
    study_id: &str,
    sim: &NewSimulation,
    parameters: Option<&str>,
    sequence_number: i64,
) -> Result<()> {
    let db = p.name();
    p.write_with(|tx| {
        let changed = tx
            .execute(
                "UPDATE studies SET status = 'running' WHERE study_id = $1 AND status = 'pending'",
                &[&study_id],
            )
            .map_err(pg(db, "start study"))?;
        if changed == 0 {
            let n = count(
                db,
                tx,
                "SELECT count(*) FROM studies WHERE study_id = $1",
                study_id,
                "find study",
            )?;
            require_row(db, "study", study_id, n)?;
        }
        insert_simulation(db, tx, sim)?;
        tx.execute(
            "INSERT INTO study_simulations (study_id, simulation_id, parameter_set, sequence_number)
             VALUES ($1, $2, $3, $4)",
            &[&study_id, &sim.simulation_id, &parameters, &sequence_number],
        )
        .map_err(pg(db, "link study simulation"))?;
        Ok(())
    })
}

pub(super) fn finish_study_simulation(
    p: &PgHandle,
    study_id: &str,
    simulation_id: &str,
    update: &StatusUpdate,
    metrics: &[Metric],
) -> Result<StudyProgress> {
    let db = p.name();
    p.write_with(|tx| {
        // The study's row first: two finishes of its simulations at once take turns, and
        // the second's count (a statement after the lock, so a snapshot after the first's
        // commit) sees the first's simulation finished.
        tx.query_opt(
            "SELECT 1 FROM studies WHERE study_id = $1 FOR UPDATE",
            &[&study_id],
        )
        .map_err(pg(db, "lock study"))?;
        let linked: i64 = tx
            .query_one(
                "SELECT count(*) FROM study_simulations WHERE study_id = $1 AND simulation_id = $2",
                &[&study_id, &simulation_id],
            )
            .and_then(|r| r.try_get(0))
            .map_err(pg(db, "find study simulation"))?;
        require_row(
            db,
            "study simulation",
            &format!("{study_id}/{simulation_id}"),
            usize::try_from(linked).unwrap_or(0),
        )?;
        update_status(db, tx, RunKind::Simulation, simulation_id, update)?;
        insert_metrics(db, tx, simulation_id, metrics)?;
        // Counted from the simulations' statuses (see the SQLite twin).
        tx.execute(
            concat!(
                "UPDATE studies SET completed_simulations = n.done,
                     status = CASE WHEN n.done >= total_simulations
                                   THEN 'completed' ELSE 'running' END,
                     completed_at = CASE WHEN n.done >= total_simulations
                                         THEN coalesce(completed_at, ",
                now_text!(),
                ") ELSE completed_at END FROM (",
                super::finished_in_study!("$1"),
                ") AS n WHERE study_id = $1"
            ),
            &[&study_id],
        )
        .map_err(pg(db, "count study simulation"))?;
        study_progress(db, tx, study_id)?.ok_or_else(|| Error::NotFound {
            db: db.clone(),
            what: "study",
            key: study_id.to_owned(),
        })
    })
}

pub(super) fn study(p: &PgHandle, study_id: &str) -> Result<Option<StudyProgress>> {
    let db = p.name();
    read_primary(p, |c| study_progress(db, c, study_id))
}

fn study_progress(
    db: &DbName,
    c: &mut impl GenericClient,
    id: &str,
) -> Result<Option<StudyProgress>> {
    c.query_opt(
        "SELECT s.study_id, s.status, s.total_simulations, coalesce(s.completed_simulations, 0),
                (SELECT count(*) FROM study_simulations l WHERE l.study_id = s.study_id),
                s.error_message
         FROM studies s WHERE s.study_id = $1",
        &[&id],
    )
    .and_then(|row| {
        row.map(|r| {
            Ok(StudyProgress {
                study_id: r.try_get(0)?,
                status: r.try_get(1)?,
                total_simulations: r.try_get(2)?,
                completed_simulations: r.try_get(3)?,
                linked_simulations: r.try_get(4)?,
                error_message: r.try_get(5)?,
            })
        })
        .transpose()
    })
    .map_err(pg(db, "read study"))
}

pub(super) fn create_analysis_run(
    p: &PgHandle,
    run: &NewAnalysisRun,
    strategies: Option<&str>,
    metadata: Option<&str>,
) -> Result<()> {
    let db = p.name();
    p.write_with(|tx| {
        tx.execute(
            "INSERT INTO analysis_runs (analysis_id, source_type, source_id, status,
                                        strategies_executed, metadata)
             VALUES ($1, $2, $3, 'pending', $4, $5)",
            &[
                &run.analysis_id,
                &run.source_type,
                &run.source_id,
                &strategies,
                &metadata,
            ],
        )
        .map_err(pg(db, "create analysis run"))?;
        Ok(())
    })
}

pub(super) fn record_analysis_results(
    p: &PgHandle,
    analysis_id: &str,
    strategy_name: &str,
    encoded: &[(&String, String)],
) -> Result<usize> {
    let db = p.name();
    p.write_with(|tx| {
        let n = count(
            db,
            tx,
            "SELECT count(*) FROM analysis_runs WHERE analysis_id = $1",
            analysis_id,
            "find analysis run",
        )?;
        require_row(db, "analysis run", analysis_id, n)?;
        for (kind, data) in encoded {
            tx.execute(
                "INSERT INTO analysis_results (analysis_id, strategy_name, result_type, result_data)
                 VALUES ($1, $2, $3, $4)",
                &[&analysis_id, &strategy_name, kind, data],
            )
            .map_err(pg(db, "record analysis results"))?;
        }
        Ok(encoded.len())
    })
}

pub(super) fn create_optimization_run(
    p: &PgHandle,
    run: &NewOptimizationRun,
    configuration: Option<&str>,
    metadata: Option<&str>,
) -> Result<()> {
    let db = p.name();
    p.write_with(|tx| {
        tx.execute(
            "INSERT INTO optimization_runs (optimization_id, algorithm_type, objective_function,
                                            status, generations_completed, configuration, metadata)
             VALUES ($1, $2, $3, 'pending', 0, $4, $5)",
            &[
                &run.optimization_id,
                &run.algorithm_type,
                &run.objective_function,
                &configuration,
                &metadata,
            ],
        )
        .map_err(pg(db, "create optimization run"))?;
        Ok(())
    })
}

pub(super) fn record_generation(
    p: &PgHandle,
    optimization_id: &str,
    generation: i64,
    objective: Objective,
    best: Option<f64>,
    encoded: &[(&Individual, String)],
) -> Result<()> {
    let db = p.name();
    let update = match objective {
        Objective::Minimize => record_generation_sql!("least"),
        Objective::Maximize => record_generation_sql!("greatest"),
    };
    p.write_with(|tx| {
        let changed = tx
            .execute(update, &[&optimization_id, &generation, &best])
            .map_err(pg(db, "record generation"))?;
        require_row(
            db,
            "optimization run",
            optimization_id,
            usize::try_from(changed).unwrap_or(0),
        )?;
        for (i, parameters) in encoded {
            tx.execute(
                "INSERT INTO optimization_iterations
                     (optimization_id, generation, individual_id, fitness, parameters)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &optimization_id,
                    &generation,
                    &i.individual_id,
                    &i.fitness,
                    parameters,
                ],
            )
            .map_err(pg(db, "record generation"))?;
        }
        Ok(())
    })
}

pub(super) fn optimization(
    p: &PgHandle,
    optimization_id: &str,
) -> Result<Option<OptimizationProgress>> {
    let db = p.name();
    read_primary(p, |c| {
        c.query_opt(
            "SELECT r.optimization_id, r.status, coalesce(r.generations_completed, 0),
                    r.best_fitness,
                    (SELECT count(*) FROM optimization_iterations i
                     WHERE i.optimization_id = r.optimization_id),
                    r.error_message
             FROM optimization_runs r WHERE r.optimization_id = $1",
            &[&optimization_id],
        )
        .and_then(|row| {
            row.map(|r| {
                Ok(OptimizationProgress {
                    optimization_id: r.try_get(0)?,
                    status: r.try_get(1)?,
                    generations_completed: r.try_get(2)?,
                    best_fitness: r.try_get(3)?,
                    iterations: r.try_get(4)?,
                    error_message: r.try_get(5)?,
                })
            })
            .transpose()
        })
        .map_err(pg(db, "read optimization run"))
    })
}
