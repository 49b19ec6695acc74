//! Optimization runs: create, record generations (keeping the best fitness), change
//! status, read progress.

use hive_db_core::rusqlite::{OptionalExtension, params};
use serde_json::Value;

use super::{RunKind, Runs, StatusUpdate, require_row, sql, update_status};
use crate::error::{Error, Result};
use crate::json;
use crate::text;

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
    /// Why it failed, as last given.
    pub error_message: Option<String>,
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

impl Runs {
    /// Creates an optimization run, status `pending`, no generations.
    ///
    /// # Errors
    ///
    /// [`Error::Sqlite`](crate::Error::Sqlite) for a duplicate id; the backend's errors.
    pub fn create_optimization_run(&self, run: &NewOptimizationRun) -> Result<()> {
        text::check_all(&[
            ("optimization id", Some(run.optimization_id.as_str())),
            ("algorithm type", Some(run.algorithm_type.as_str())),
            ("objective function", Some(run.objective_function.as_str())),
        ])?;
        let db = self.db.name();
        let configuration =
            json::encode_opt(db, "optimization configuration", run.configuration.as_ref())?;
        let metadata = json::encode_opt(db, "optimization metadata", run.metadata.as_ref())?;
        #[cfg(feature = "postgres")]
        if let Some(p) = self.db.pg() {
            return super::pg::create_optimization_run(
                p,
                run,
                configuration.as_deref(),
                metadata.as_deref(),
            );
        }
        self.db.transaction_with(|conn| {
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
                    json::Lite(configuration.as_deref()),
                    json::Lite(metadata.as_deref())
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
    /// [`Error::NotFound`](crate::Error::NotFound) for an unknown run (nothing is written); the
    /// backend's errors.
    pub fn record_generation(
        &self,
        optimization_id: &str,
        generation: i64,
        objective: Objective,
        individuals: &[Individual],
    ) -> Result<()> {
        text::check("optimization id", optimization_id)?;
        for i in individuals {
            text::check("individual id", &i.individual_id)?;
        }
        let db = self.db.name();
        // `generation + 1` is stored: at i64::MAX, SQLite made it a REAL it could not read
        // back (the run unreadable for good) and PostgreSQL refused it.
        if generation < 0 || generation == i64::MAX {
            return Err(Error::InvalidInput {
                what: "generation",
                value: generation.to_string(),
                reason: "not a generation number (0 up to i64::MAX - 1)",
            });
        }
        for i in individuals {
            super::a_number("fitness", i.fitness)?;
        }
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
        #[cfg(feature = "postgres")]
        if let Some(p) = self.db.pg() {
            return super::pg::record_generation(
                p,
                optimization_id,
                generation,
                objective,
                best,
                &encoded,
            );
        }
        let update = match objective {
            Objective::Minimize => record_generation_sql!("min"),
            Objective::Maximize => record_generation_sql!("max"),
        };
        self.db.transaction_with(|conn| {
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
                    json::Lite(Some(parameters))
                ])
                .map_err(sql(db, "record generation"))?;
            }
            Ok(())
        })
    }

    /// Changes an optimization run's status (and the other fields given).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`](crate::Error::NotFound) for an unknown run; the backend's errors.
    pub fn update_optimization_status(
        &self,
        optimization_id: &str,
        update: &StatusUpdate,
    ) -> Result<()> {
        text::check("optimization id", optimization_id)?;
        #[cfg(feature = "postgres")]
        if let Some(p) = self.db.pg() {
            return super::pg::status(p, RunKind::Optimization, optimization_id, update);
        }
        let db = self.db.name();
        self.db.transaction_with(|conn| {
            update_status(db, conn, RunKind::Optimization, optimization_id, update)
        })
    }

    /// An optimization run's progress, if it exists.
    ///
    /// # Errors
    ///
    /// The backend's errors.
    pub fn optimization(&self, optimization_id: &str) -> Result<Option<OptimizationProgress>> {
        if !text::storable(optimization_id) {
            return Ok(None);
        }
        #[cfg(feature = "postgres")]
        if let Some(p) = self.db.pg() {
            return super::pg::optimization(p, optimization_id);
        }
        let db = self.db.name();
        self.db.read_with(|conn| {
            conn.prepare_cached(
                "SELECT r.optimization_id, r.status, coalesce(r.generations_completed, 0),
                        r.best_fitness,
                        (SELECT count(*) FROM optimization_iterations i
                         WHERE i.optimization_id = r.optimization_id),
                        r.error_message
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
                        error_message: r.get(5)?,
                    })
                })
                .optional()
            })
            .map_err(sql(db, "read optimization run"))
        })
    }
}
