//! Simulations, studies, analysis runs and optimization runs: the writes the application
//! makes, each one transaction (a batch of metrics, or a status change with the counters it
//! moves in other tables), and the reads that check them. Its SQL is all here.

use hive_db_core::DbName;
use hive_db_core::rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use crate::backend::EcoDb;
use crate::error::{Error, Result};
use crate::json;

/// The status of a simulation, study, analysis or optimization run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Created, not started.
    Pending,
    /// Started.
    Running,
    /// Finished successfully.
    Completed,
    /// Finished with an error.
    Failed,
    /// Stopped before it finished.
    Cancelled,
}

impl RunStatus {
    /// The text stored in the `status` columns.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// True for the statuses a run ends in (`completed_at` is set then).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A simulation to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSimulation {
    /// Its id.
    pub simulation_id: String,
    /// The system configuration it runs.
    pub system_config_path: String,
    /// The solver (`milp`, `rule_based`).
    pub solver_type: String,
    /// Anything else; stored as JSON.
    pub metadata: Option<Value>,
}

impl NewSimulation {
    /// A simulation with no metadata.
    pub fn new(
        simulation_id: impl Into<String>,
        system_config_path: impl Into<String>,
        solver_type: impl Into<String>,
    ) -> Self {
        Self {
            simulation_id: simulation_id.into(),
            system_config_path: system_config_path.into(),
            solver_type: solver_type.into(),
            metadata: None,
        }
    }
}

/// One metric of a simulation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Metric {
    /// Its name (`total_cost`).
    pub name: String,
    /// Its value.
    pub value: f64,
    /// Its unit, if any.
    pub unit: Option<String>,
}

impl Metric {
    /// A metric with a unit.
    pub fn new(name: impl Into<String>, value: f64, unit: Option<&str>) -> Self {
        Self {
            name: name.into(),
            value,
            unit: unit.map(str::to_owned),
        }
    }
}

/// A status change of a run. `None` fields keep their stored value.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusUpdate {
    /// The new status; a final one also sets `completed_at`.
    pub status: RunStatus,
    /// How long the run took.
    pub duration_seconds: Option<f64>,
    /// Where its results are.
    pub results_path: Option<String>,
    /// Why it failed (not stored for studies, whose table has no such column).
    pub error_message: Option<String>,
}

impl StatusUpdate {
    /// A change to `status` and nothing else.
    pub fn to(status: RunStatus) -> Self {
        Self {
            status,
            duration_seconds: None,
            results_path: None,
            error_message: None,
        }
    }
}

/// A simulation as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Simulation {
    /// Its id.
    pub simulation_id: String,
    /// Its system configuration.
    pub system_config_path: String,
    /// Its solver.
    pub solver_type: String,
    /// Its status, as stored (text, since older code may have written others).
    pub status: String,
    /// When it was created (UTC).
    pub created_at: Option<String>,
    /// When it ended (UTC).
    pub completed_at: Option<String>,
    /// How long it took.
    pub duration_seconds: Option<f64>,
    /// Where its results are.
    pub results_path: Option<String>,
    /// Why it failed.
    pub error_message: Option<String>,
    /// Its metadata.
    pub metadata: Option<Value>,
}

/// A study (many simulations) to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewStudy {
    /// Its id.
    pub study_id: String,
    /// Its type (`parametric`, `monte_carlo`).
    pub study_type: String,
    /// How many simulations it will run.
    pub total_simulations: u32,
    /// Its configuration; stored as JSON.
    pub configuration: Option<Value>,
    /// Anything else; stored as JSON.
    pub metadata: Option<Value>,
}

/// A study's progress as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct StudyProgress {
    /// Its id.
    pub study_id: String,
    /// Its status, as stored.
    pub status: String,
    /// How many simulations it will run.
    pub total_simulations: Option<i64>,
    /// How many have ended.
    pub completed_simulations: i64,
    /// Simulations linked to it.
    pub linked_simulations: i64,
}

/// An analysis run to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAnalysisRun {
    /// Its id.
    pub analysis_id: String,
    /// What it analyses (`simulation`, `study`).
    pub source_type: String,
    /// The id of what it analyses.
    pub source_id: String,
    /// The strategies it runs; stored as JSON.
    pub strategies: Option<Value>,
    /// Anything else; stored as JSON.
    pub metadata: Option<Value>,
}

/// An optimization run to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOptimizationRun {
    /// Its id.
    pub optimization_id: String,
    /// Its algorithm (`genetic_algorithm`, `monte_carlo`).
    pub algorithm_type: String,
    /// What it optimises.
    pub objective_function: String,
    /// Its configuration; stored as JSON.
    pub configuration: Option<Value>,
    /// Anything else; stored as JSON.
    pub metadata: Option<Value>,
}

/// Whether higher or lower fitness is better, for `best_fitness`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objective {
    /// Lower is better.
    Minimize,
    /// Higher is better.
    Maximize,
}

/// One individual of an optimization generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Individual {
    /// Its id within the run.
    pub individual_id: String,
    /// Its fitness.
    pub fitness: f64,
    /// Its parameters; stored as JSON.
    pub parameters: Value,
}

/// An optimization run's progress as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct OptimizationProgress {
    /// Its id.
    pub optimization_id: String,
    /// Its status, as stored.
    pub status: String,
    /// Generations recorded.
    pub generations_completed: i64,
    /// The best fitness recorded.
    pub best_fitness: Option<f64>,
    /// Individuals recorded.
    pub iterations: i64,
}

/// The run repositories of one [`EcoDb`]. Cloning is cheap; it is `Send + Sync`, for many
/// threads at once.
#[derive(Debug, Clone)]
pub struct Runs {
    db: EcoDb,
}

/// The update of a run for a new generation, keeping the `min` or `max` best fitness.
macro_rules! record_generation_sql {
    ($better:literal) => {
        concat!(
            "UPDATE optimization_runs SET status = 'running', \
             generations_completed = max(coalesce(generations_completed, 0), ?2 + 1), \
             best_fitness = CASE WHEN ?3 IS NULL THEN best_fitness \
                                 WHEN best_fitness IS NULL THEN ?3 \
                                 ELSE ",
            $better,
            "(best_fitness, ?3) END WHERE optimization_id = ?1"
        )
    };
}

fn sql<'a>(
    db: &'a DbName,
    op: &'static str,
) -> impl Fn(hive_db_core::rusqlite::Error) -> Error + 'a {
    move |e| Error::sqlite(db, op, e)
}

fn require_row(db: &DbName, what: &'static str, key: &str, changed: usize) -> Result<()> {
    if changed == 0 {
        return Err(Error::NotFound {
            db: db.clone(),
            what,
            key: key.to_owned(),
        });
    }
    Ok(())
}

fn insert_simulation(db: &DbName, conn: &Connection, sim: &NewSimulation) -> Result<()> {
    let metadata = json::encode_opt(db, "simulation metadata", sim.metadata.as_ref())?;
    conn.prepare_cached(
        "INSERT INTO simulations (simulation_id, system_config_path, solver_type, status, metadata)
         VALUES (?1, ?2, ?3, 'pending', ?4)",
    )
    .and_then(|mut s| {
        s.execute(params![
            sim.simulation_id,
            sim.system_config_path,
            sim.solver_type,
            metadata
        ])
    })
    .map_err(sql(db, "create simulation"))?;
    Ok(())
}

fn insert_metrics(
    db: &DbName,
    conn: &Connection,
    simulation_id: &str,
    metrics: &[Metric],
) -> Result<()> {
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO simulation_metrics (simulation_id, metric_name, metric_value, unit)
             VALUES (?1, ?2, ?3, ?4)",
        )
        .map_err(sql(db, "record metrics"))?;
    for m in metrics {
        stmt.execute(params![simulation_id, m.name, m.value, m.unit])
            .map_err(sql(db, "record metrics"))?;
    }
    Ok(())
}

fn update_simulation(
    db: &DbName,
    conn: &Connection,
    id: &str,
    update: &StatusUpdate,
) -> Result<()> {
    let changed = conn
        .prepare_cached(
            "UPDATE simulations SET status = ?2,
                 completed_at = CASE WHEN ?3 THEN CURRENT_TIMESTAMP ELSE completed_at END,
                 duration_seconds = coalesce(?4, duration_seconds),
                 results_path = coalesce(?5, results_path),
                 error_message = coalesce(?6, error_message)
             WHERE simulation_id = ?1",
        )
        .and_then(|mut s| {
            s.execute(params![
                id,
                update.status.as_str(),
                update.status.is_final(),
                update.duration_seconds,
                update.results_path,
                update.error_message
            ])
        })
        .map_err(sql(db, "update simulation status"))?;
    require_row(db, "simulation", id, changed)
}

impl Runs {
    /// The run repositories of `db`.
    pub fn new(db: &EcoDb) -> Self {
        Self { db: db.clone() }
    }

    /// Creates a simulation, status `pending`.
    ///
    /// # Errors
    ///
    /// [`Error::Sqlite`] for a duplicate id; the backend's errors.
    pub fn create_simulation(&self, sim: &NewSimulation) -> Result<()> {
        self.db
            .transaction(|conn| insert_simulation(self.db.name(), conn, sim))
    }

    /// Records `metrics` of a simulation, all in one transaction. Returns how many.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown simulation (nothing is written); the backend's
    /// errors.
    pub fn record_metrics(&self, simulation_id: &str, metrics: &[Metric]) -> Result<usize> {
        let db = self.db.name();
        self.db.transaction(|conn| {
            simulation_exists(db, conn, simulation_id)?;
            insert_metrics(db, conn, simulation_id, metrics)?;
            Ok(metrics.len())
        })
    }

    /// Changes a simulation's status (and the other fields given), in one transaction.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown simulation; the backend's errors.
    pub fn update_simulation_status(
        &self,
        simulation_id: &str,
        update: &StatusUpdate,
    ) -> Result<()> {
        self.db
            .transaction(|conn| update_simulation(self.db.name(), conn, simulation_id, update))
    }

    /// A simulation, if it exists.
    ///
    /// # Errors
    ///
    /// The backend's errors.
    pub fn simulation(&self, simulation_id: &str) -> Result<Option<Simulation>> {
        let db = self.db.name();
        self.db.read(|conn| {
            let row = conn
                .prepare_cached(
                    "SELECT simulation_id, system_config_path, solver_type, status, created_at,
                            completed_at, duration_seconds, results_path, error_message, metadata
                     FROM simulations WHERE simulation_id = ?1",
                )
                .map_err(sql(db, "read simulation"))?
                .query([simulation_id])
                .map_err(sql(db, "read simulation"))?
                .next()
                .map_err(sql(db, "read simulation"))?
                .map(|r| -> Result<Simulation> {
                    let read = sql(db, "read simulation");
                    Ok(Simulation {
                        simulation_id: r.get(0).map_err(&read)?,
                        system_config_path: r.get(1).map_err(&read)?,
                        solver_type: r.get(2).map_err(&read)?,
                        status: r.get(3).map_err(&read)?,
                        created_at: r.get(4).map_err(&read)?,
                        completed_at: r.get(5).map_err(&read)?,
                        duration_seconds: r.get(6).map_err(&read)?,
                        results_path: r.get(7).map_err(&read)?,
                        error_message: r.get(8).map_err(&read)?,
                        metadata: json::column(db, "simulation metadata", r, 9)?,
                    })
                })
                .transpose()?;
            Ok(row)
        })
    }

    /// A simulation's metrics, in the order recorded.
    ///
    /// # Errors
    ///
    /// The backend's errors.
    pub fn metrics(&self, simulation_id: &str) -> Result<Vec<Metric>> {
        let db = self.db.name();
        self.db.read(|conn| {
            conn.prepare_cached(
                "SELECT metric_name, metric_value, unit FROM simulation_metrics
                 WHERE simulation_id = ?1 ORDER BY id",
            )
            .and_then(|mut s| {
                s.query_map([simulation_id], |r| {
                    Ok(Metric {
                        name: r.get(0)?,
                        value: r.get(1)?,
                        unit: r.get(2)?,
                    })
                })?
                .collect()
            })
            .map_err(sql(db, "read metrics"))
        })
    }

    /// Creates a study, status `pending`, none of its simulations completed.
    ///
    /// # Errors
    ///
    /// [`Error::Sqlite`] for a duplicate id; the backend's errors.
    pub fn create_study(&self, study: &NewStudy) -> Result<()> {
        let db = self.db.name();
        let configuration =
            json::encode_opt(db, "study configuration", study.configuration.as_ref())?;
        let metadata = json::encode_opt(db, "study metadata", study.metadata.as_ref())?;
        self.db.transaction(|conn| {
            conn.prepare_cached(
                "INSERT INTO studies (study_id, study_type, status, total_simulations,
                                      completed_simulations, configuration, metadata)
                 VALUES (?1, ?2, 'pending', ?3, 0, ?4, ?5)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    study.study_id,
                    study.study_type,
                    study.total_simulations,
                    configuration,
                    metadata
                ])
            })
            .map_err(sql(db, "create study"))?;
            Ok(())
        })
    }

    /// Creates simulation `sim` as number `sequence_number` of study `study_id` with its
    /// parameter set, in one transaction; the study becomes `running`.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown study (nothing is written); the backend's errors.
    pub fn add_study_simulation(
        &self,
        study_id: &str,
        sim: &NewSimulation,
        parameter_set: Option<&Value>,
        sequence_number: i64,
    ) -> Result<()> {
        let db = self.db.name();
        let parameters = json::encode_opt(db, "parameter set", parameter_set)?;
        self.db.transaction(|conn| {
            let changed = conn
                .prepare_cached(
                    "UPDATE studies SET status = 'running'
                     WHERE study_id = ?1 AND status = 'pending'",
                )
                .and_then(|mut s| s.execute([study_id]))
                .map_err(sql(db, "start study"))?;
            if changed == 0 {
                study_exists(db, conn, study_id)?;
            }
            insert_simulation(db, conn, sim)?;
            conn.prepare_cached(
                "INSERT INTO study_simulations (study_id, simulation_id, parameter_set, sequence_number)
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut s| s.execute(params![study_id, sim.simulation_id, parameters, sequence_number]))
            .map_err(sql(db, "link study simulation"))?;
            Ok(())
        })
    }

    /// Ends simulation `simulation_id` of study `study_id` with `update` and its final
    /// `metrics`, and counts it in the study (which becomes `completed` with its last
    /// simulation), all in one transaction. Returns the study's progress.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when `update.status` is not final; [`Error::NotFound`] when the
    /// simulation is not linked to the study; the backend's errors. Nothing is written then.
    pub fn finish_study_simulation(
        &self,
        study_id: &str,
        simulation_id: &str,
        update: &StatusUpdate,
        metrics: &[Metric],
    ) -> Result<StudyProgress> {
        if !update.status.is_final() {
            return Err(Error::InvalidInput {
                what: "status",
                value: update.status.to_string(),
                reason: "a finished simulation needs a final status",
            });
        }
        let db = self.db.name();
        self.db.transaction(|conn| {
            let linked: i64 = conn
                .prepare_cached(
                    "SELECT count(*) FROM study_simulations WHERE study_id = ?1 AND simulation_id = ?2",
                )
                .and_then(|mut s| s.query_row([study_id, simulation_id], |r| r.get(0)))
                .map_err(sql(db, "find study simulation"))?;
            require_row(
                db,
                "study simulation",
                &format!("{study_id}/{simulation_id}"),
                usize::try_from(linked).unwrap_or(0),
            )?;
            update_simulation(db, conn, simulation_id, update)?;
            insert_metrics(db, conn, simulation_id, metrics)?;
            conn.prepare_cached(
                "UPDATE studies SET completed_simulations = coalesce(completed_simulations, 0) + 1,
                     status = CASE WHEN coalesce(completed_simulations, 0) + 1 >= total_simulations
                                   THEN 'completed' ELSE 'running' END,
                     completed_at = CASE WHEN coalesce(completed_simulations, 0) + 1 >= total_simulations
                                         THEN CURRENT_TIMESTAMP ELSE completed_at END
                 WHERE study_id = ?1",
            )
            .and_then(|mut s| s.execute([study_id]))
            .map_err(sql(db, "count study simulation"))?;
            study_progress(db, conn, study_id)?.ok_or_else(|| Error::NotFound {
                db: db.clone(),
                what: "study",
                key: study_id.to_owned(),
            })
        })
    }

    /// Changes a study's status (and duration and results path when given).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown study; the backend's errors.
    pub fn update_study_status(&self, study_id: &str, update: &StatusUpdate) -> Result<()> {
        let db = self.db.name();
        self.db.transaction(|conn| {
            let changed = conn
                .prepare_cached(
                    "UPDATE studies SET status = ?2,
                         completed_at = CASE WHEN ?3 THEN CURRENT_TIMESTAMP ELSE completed_at END,
                         duration_seconds = coalesce(?4, duration_seconds),
                         results_path = coalesce(?5, results_path)
                     WHERE study_id = ?1",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        study_id,
                        update.status.as_str(),
                        update.status.is_final(),
                        update.duration_seconds,
                        update.results_path
                    ])
                })
                .map_err(sql(db, "update study status"))?;
            require_row(db, "study", study_id, changed)
        })
    }

    /// A study's progress, if it exists.
    ///
    /// # Errors
    ///
    /// The backend's errors.
    pub fn study(&self, study_id: &str) -> Result<Option<StudyProgress>> {
        self.db
            .read(|conn| study_progress(self.db.name(), conn, study_id))
    }

    /// Creates an analysis run, status `pending`.
    ///
    /// # Errors
    ///
    /// [`Error::Sqlite`] for a duplicate id; the backend's errors.
    pub fn create_analysis_run(&self, run: &NewAnalysisRun) -> Result<()> {
        let db = self.db.name();
        let strategies = json::encode_opt(db, "analysis strategies", run.strategies.as_ref())?;
        let metadata = json::encode_opt(db, "analysis metadata", run.metadata.as_ref())?;
        self.db.transaction(|conn| {
            conn.prepare_cached(
                "INSERT INTO analysis_runs (analysis_id, source_type, source_id, status,
                                            strategies_executed, metadata)
                 VALUES (?1, ?2, ?3, 'pending', ?4, ?5)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    run.analysis_id,
                    run.source_type,
                    run.source_id,
                    strategies,
                    metadata
                ])
            })
            .map_err(sql(db, "create analysis run"))?;
            Ok(())
        })
    }

    /// Records the results of one strategy of an analysis run, in one transaction.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown run; the backend's errors.
    pub fn record_analysis_results(
        &self,
        analysis_id: &str,
        strategy_name: &str,
        results: &[(String, Value)],
    ) -> Result<usize> {
        let db = self.db.name();
        let encoded = results
            .iter()
            .map(|(kind, data)| Ok((kind, json::encode(db, "analysis result", data)?)))
            .collect::<Result<Vec<_>>>()?;
        self.db.transaction(|conn| {
            let exists: i64 = conn
                .prepare_cached("SELECT count(*) FROM analysis_runs WHERE analysis_id = ?1")
                .and_then(|mut s| s.query_row([analysis_id], |r| r.get(0)))
                .map_err(sql(db, "find analysis run"))?;
            require_row(db, "analysis run", analysis_id, usize::try_from(exists).unwrap_or(0))?;
            let mut stmt = conn
                .prepare_cached(
                    "INSERT INTO analysis_results (analysis_id, strategy_name, result_type, result_data)
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(sql(db, "record analysis results"))?;
            for (kind, data) in &encoded {
                stmt.execute(params![analysis_id, strategy_name, kind, data])
                    .map_err(sql(db, "record analysis results"))?;
            }
            Ok(encoded.len())
        })
    }

    /// Changes an analysis run's status (and the other fields given).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown run; the backend's errors.
    pub fn update_analysis_status(&self, analysis_id: &str, update: &StatusUpdate) -> Result<()> {
        let db = self.db.name();
        self.db.transaction(|conn| {
            let changed = conn
                .prepare_cached(
                    "UPDATE analysis_runs SET status = ?2,
                         completed_at = CASE WHEN ?3 THEN CURRENT_TIMESTAMP ELSE completed_at END,
                         duration_seconds = coalesce(?4, duration_seconds),
                         results_path = coalesce(?5, results_path),
                         error_message = coalesce(?6, error_message)
                     WHERE analysis_id = ?1",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        analysis_id,
                        update.status.as_str(),
                        update.status.is_final(),
                        update.duration_seconds,
                        update.results_path,
                        update.error_message
                    ])
                })
                .map_err(sql(db, "update analysis status"))?;
            require_row(db, "analysis run", analysis_id, changed)
        })
    }

    /// Creates an optimization run, status `pending`, no generations.
    ///
    /// # Errors
    ///
    /// [`Error::Sqlite`] for a duplicate id; the backend's errors.
    pub fn create_optimization_run(&self, run: &NewOptimizationRun) -> Result<()> {
        let db = self.db.name();
        let configuration =
            json::encode_opt(db, "optimization configuration", run.configuration.as_ref())?;
        let metadata = json::encode_opt(db, "optimization metadata", run.metadata.as_ref())?;
        self.db.transaction(|conn| {
            conn.prepare_cached(
                "INSERT INTO optimization_runs (optimization_id, algorithm_type, objective_function,
                                                status, generations_completed, configuration, metadata)
                 VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?5)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    run.optimization_id,
                    run.algorithm_type,
                    run.objective_function,
                    configuration,
                    metadata
                ])
            })
            .map_err(sql(db, "create optimization run"))?;
            Ok(())
        })
    }

    /// Records generation `generation` of an optimization run: its individuals, the run's
    /// generation count and best fitness (by `objective`), and status `running`, in one
    /// transaction.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown run (nothing is written); the backend's errors.
    pub fn record_generation(
        &self,
        optimization_id: &str,
        generation: i64,
        objective: Objective,
        individuals: &[Individual],
    ) -> Result<()> {
        let db = self.db.name();
        let encoded = individuals
            .iter()
            .map(|i| Ok((i, json::encode(db, "individual parameters", &i.parameters)?)))
            .collect::<Result<Vec<_>>>()?;
        let best = individuals
            .iter()
            .map(|i| i.fitness)
            .reduce(|a, b| match objective {
                Objective::Minimize => a.min(b),
                Objective::Maximize => a.max(b),
            });
        let update = match objective {
            Objective::Minimize => record_generation_sql!("min"),
            Objective::Maximize => record_generation_sql!("max"),
        };
        self.db.transaction(|conn| {
            let changed = conn
                .prepare_cached(update)
                .and_then(|mut s| s.execute(params![optimization_id, generation, best]))
                .map_err(sql(db, "record generation"))?;
            require_row(db, "optimization run", optimization_id, changed)?;
            let mut stmt = conn
                .prepare_cached(
                    "INSERT INTO optimization_iterations
                         (optimization_id, generation, individual_id, fitness, parameters)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(sql(db, "record generation"))?;
            for (i, parameters) in &encoded {
                stmt.execute(params![
                    optimization_id,
                    generation,
                    i.individual_id,
                    i.fitness,
                    parameters
                ])
                .map_err(sql(db, "record generation"))?;
            }
            Ok(())
        })
    }

    /// Changes an optimization run's status (and duration and results path when given).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown run; the backend's errors.
    pub fn update_optimization_status(
        &self,
        optimization_id: &str,
        update: &StatusUpdate,
    ) -> Result<()> {
        let db = self.db.name();
        self.db.transaction(|conn| {
            let changed = conn
                .prepare_cached(
                    "UPDATE optimization_runs SET status = ?2,
                         completed_at = CASE WHEN ?3 THEN CURRENT_TIMESTAMP ELSE completed_at END,
                         duration_seconds = coalesce(?4, duration_seconds),
                         results_path = coalesce(?5, results_path)
                     WHERE optimization_id = ?1",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        optimization_id,
                        update.status.as_str(),
                        update.status.is_final(),
                        update.duration_seconds,
                        update.results_path
                    ])
                })
                .map_err(sql(db, "update optimization status"))?;
            require_row(db, "optimization run", optimization_id, changed)
        })
    }

    /// An optimization run's progress, if it exists.
    ///
    /// # Errors
    ///
    /// The backend's errors.
    pub fn optimization(&self, optimization_id: &str) -> Result<Option<OptimizationProgress>> {
        let db = self.db.name();
        self.db.read(|conn| {
            conn.prepare_cached(
                "SELECT r.optimization_id, r.status, coalesce(r.generations_completed, 0),
                        r.best_fitness,
                        (SELECT count(*) FROM optimization_iterations i
                         WHERE i.optimization_id = r.optimization_id)
                 FROM optimization_runs r WHERE r.optimization_id = ?1",
            )
            .and_then(|mut s| {
                s.query_row([optimization_id], |r| {
                    Ok(OptimizationProgress {
                        optimization_id: r.get(0)?,
                        status: r.get(1)?,
                        generations_completed: r.get(2)?,
                        best_fitness: r.get(3)?,
                        iterations: r.get(4)?,
                    })
                })
                .optional()
            })
            .map_err(sql(db, "read optimization run"))
        })
    }
}

fn simulation_exists(db: &DbName, conn: &Connection, id: &str) -> Result<()> {
    let n: i64 = conn
        .prepare_cached("SELECT count(*) FROM simulations WHERE simulation_id = ?1")
        .and_then(|mut s| s.query_row([id], |r| r.get(0)))
        .map_err(sql(db, "find simulation"))?;
    require_row(db, "simulation", id, usize::try_from(n).unwrap_or(0))
}

fn study_exists(db: &DbName, conn: &Connection, id: &str) -> Result<()> {
    let n: i64 = conn
        .prepare_cached("SELECT count(*) FROM studies WHERE study_id = ?1")
        .and_then(|mut s| s.query_row([id], |r| r.get(0)))
        .map_err(sql(db, "find study"))?;
    require_row(db, "study", id, usize::try_from(n).unwrap_or(0))
}

fn study_progress(db: &DbName, conn: &Connection, id: &str) -> Result<Option<StudyProgress>> {
    conn.prepare_cached(
        "SELECT s.study_id, s.status, s.total_simulations, coalesce(s.completed_simulations, 0),
                (SELECT count(*) FROM study_simulations l WHERE l.study_id = s.study_id)
         FROM studies s WHERE s.study_id = ?1",
    )
    .and_then(|mut s| {
        s.query_row([id], |r| {
            Ok(StudyProgress {
                study_id: r.get(0)?,
                status: r.get(1)?,
                total_simulations: r.get(2)?,
                completed_simulations: r.get(3)?,
                linked_simulations: r.get(4)?,
            })
        })
        .optional()
    })
    .map_err(sql(db, "read study"))
}
