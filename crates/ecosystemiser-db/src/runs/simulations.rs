//! Simulations and their metrics: create, record, change status, read back.

use hive_db_core::DbName;
use hive_db_core::rusqlite::{Connection, params};
use serde_json::Value;

use super::{RunKind, Runs, StatusUpdate, require_row, sql, update_status};
use crate::error::Result;
use crate::json;
use crate::text;

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

pub(super) fn insert_simulation(db: &DbName, conn: &Connection, sim: &NewSimulation) -> Result<()> {
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
            json::Lite(metadata.as_deref())
        ])
    })
    .map_err(sql(db, "create simulation"))?;
    Ok(())
}

pub(super) fn insert_metrics(
    db: &DbName,
    conn: &Connection,
    simulation_id: &str,
    metrics: &[Metric],
) -> Result<()> {
    super::check_metrics(metrics)?;
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

impl Runs {
    /// Creates a simulation, status `pending`.
    ///
    /// # Errors
    ///
    /// [`Error::Sqlite`](crate::Error::Sqlite) for a duplicate id; the backend's errors.
    pub fn create_simulation(&self, sim: &NewSimulation) -> Result<()> {
        super::check_simulation(sim)?;
        #[cfg(feature = "postgres")]
        if let Some(p) = self.db.pg() {
            return super::pg::create_simulation(p, sim);
        }
        self.db
            .transaction_with(|conn| insert_simulation(self.db.name(), conn, sim))
    }

    /// Records `metrics` of a simulation, all in one transaction. Returns how many.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`](crate::Error::NotFound) for an unknown simulation (nothing is
    /// written); the backend's errors.
    pub fn record_metrics(&self, simulation_id: &str, metrics: &[Metric]) -> Result<usize> {
        text::check("simulation id", simulation_id)?;
        #[cfg(feature = "postgres")]
        if let Some(p) = self.db.pg() {
            return super::pg::record_metrics(p, simulation_id, metrics);
        }
        self.db
            .transaction_with(|conn| metrics_on(self.db.name(), conn, simulation_id, metrics))
    }

    /// [`Runs::record_metrics`] as a future: the same check and `INSERT`s, in one
    /// transaction in the database's writer lane.
    ///
    /// # Errors
    ///
    /// As [`Runs::record_metrics`]; [`Error::WrongEngine`](crate::Error::WrongEngine) on
    /// PostgreSQL.
    #[cfg(feature = "async")]
    #[track_caller]
    pub fn record_metrics_async(
        &self,
        simulation_id: &str,
        metrics: &[Metric],
    ) -> impl Future<Output = Result<usize>> + Send + 'static {
        let metrics = metrics.to_vec();
        // Refused as the sync call refuses it, before anything is queued (the closure would
        // find no such simulation first, and answer NotFound).
        let future = text::check("simulation id", simulation_id).and_then(|()| {
            let simulation_id = simulation_id.to_owned();
            self.db
                .write_async_with("Runs::record_metrics_async", move |conn| {
                    metrics_on(&crate::backend::ECO_NAME, conn, &simulation_id, &metrics)
                })
        });
        async move { future?.await }
    }

    /// Changes a simulation's status (and the other fields given), in one transaction.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`](crate::Error::NotFound) for an unknown simulation; the backend's errors.
    pub fn update_simulation_status(
        &self,
        simulation_id: &str,
        update: &StatusUpdate,
    ) -> Result<()> {
        text::check("simulation id", simulation_id)?;
        #[cfg(feature = "postgres")]
        if let Some(p) = self.db.pg() {
            return super::pg::status(p, RunKind::Simulation, simulation_id, update);
        }
        self.db.transaction_with(|conn| {
            update_status(
                self.db.name(),
                conn,
                RunKind::Simulation,
                simulation_id,
                update,
            )
        })
    }

    /// A simulation, if it exists.
    ///
    /// # Errors
    ///
    /// The backend's errors.
    pub fn simulation(&self, simulation_id: &str) -> Result<Option<Simulation>> {
        if !text::storable(simulation_id) {
            return Ok(None);
        }
        #[cfg(feature = "postgres")]
        if let Some(p) = self.db.pg() {
            return super::pg::simulation(p, simulation_id);
        }
        let db = self.db.name();
        self.db.read_with(|conn| {
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
        if !text::storable(simulation_id) {
            return Ok(Vec::new());
        }
        #[cfg(feature = "postgres")]
        if let Some(p) = self.db.pg() {
            return super::pg::metrics(p, simulation_id);
        }
        let db = self.db.name();
        self.db.read_with(|conn| {
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
}

fn simulation_exists(db: &DbName, conn: &Connection, id: &str) -> Result<()> {
    let n: i64 = conn
        .prepare_cached("SELECT count(*) FROM simulations WHERE simulation_id = ?1")
        .and_then(|mut s| s.query_row([id], |r| r.get(0)))
        .map_err(sql(db, "find simulation"))?;
    require_row(db, "simulation", id, usize::try_from(n).unwrap_or(0))
}

/// The batch of [`Runs::record_metrics`] on `conn` (in a transaction): the sync and async
/// calls' one check and `INSERT`s.
fn metrics_on(
    db: &DbName,
    conn: &Connection,
    simulation_id: &str,
    metrics: &[Metric],
) -> Result<usize> {
    simulation_exists(db, conn, simulation_id)?;
    insert_metrics(db, conn, simulation_id, metrics)?;
    Ok(metrics.len())
}
