//! Simulations, studies, analysis runs and optimization runs: the writes the application
//! makes, each one transaction (a batch of metrics, or a status change with the counters it
//! moves in other tables), and the reads that check them. Its SQLite SQL is all here, one
//! file per kind of run, and its PostgreSQL SQL beside it in `pg.rs`; this file holds the
//! repository handle and the helpers they share.

mod analysis;
mod optimization;
#[cfg(feature = "postgres")]
mod pg;
mod simulations;
mod status;
mod studies;

use hive_db_core::DbName;
use hive_db_core::rusqlite::{Connection, params};

use crate::backend::EcoDb;
use crate::error::{Error, Result};
use crate::text;

pub use analysis::NewAnalysisRun;
pub use optimization::{Individual, NewOptimizationRun, Objective, OptimizationProgress};
pub use simulations::{Metric, NewSimulation, Simulation};
pub use status::{RunStatus, StatusUpdate};
pub use studies::{NewStudy, StudyProgress};

/// The run repositories of one [`EcoDb`]. Cloning is cheap; it is `Send + Sync`, for many
/// threads at once.
#[derive(Debug, Clone)]
pub struct Runs {
    db: EcoDb,
}

/// The `UPDATE` of a status change, for the run table `$table` keyed by `$key`: one
/// template for every kind of run.
macro_rules! status_update_sql {
    ($table:literal, $key:literal) => {
        concat!(
            "UPDATE ",
            $table,
            " SET status = ?2,
                 completed_at = CASE WHEN ?3 THEN CURRENT_TIMESTAMP ELSE completed_at END,
                 duration_seconds = coalesce(?4, duration_seconds),
                 results_path = coalesce(?5, results_path),
                 error_message = coalesce(?6, error_message)
             WHERE ",
            $key,
            " = ?1"
        )
    };
}

/// A kind of run, as far as a status change is concerned.
#[derive(Debug, Clone, Copy)]
enum RunKind {
    Simulation,
    Study,
    Analysis,
    Optimization,
}

impl RunKind {
    /// The status change's SQL, the operation's name for errors, and what a missing row is.
    fn status_update(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::Simulation => (
                status_update_sql!("simulations", "simulation_id"),
                "update simulation status",
                "simulation",
            ),
            Self::Study => (
                status_update_sql!("studies", "study_id"),
                "update study status",
                "study",
            ),
            Self::Analysis => (
                status_update_sql!("analysis_runs", "analysis_id"),
                "update analysis status",
                "analysis run",
            ),
            Self::Optimization => (
                status_update_sql!("optimization_runs", "optimization_id"),
                "update optimization status",
                "optimization run",
            ),
        }
    }
}

/// Applies `update` to the run `id` of `kind`: every field given is stored (a final status
/// also sets `completed_at`), every field left `None` keeps its value.
fn update_status(
    db: &DbName,
    conn: &Connection,
    kind: RunKind,
    id: &str,
    update: &StatusUpdate,
) -> Result<()> {
    check_update(update)?;
    let (statement, op, what) = kind.status_update();
    let changed = conn
        .prepare_cached(statement)
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
        .map_err(sql(db, op))?;
    require_row(db, what, id, changed)
}

/// How many of a study's simulations (`$study`, a parameter) are in a final status, as a
/// one-column row `done`: both engines' SQL.
macro_rules! finished_in_study {
    ($study:literal) => {
        concat!(
            "SELECT count(DISTINCT ss.simulation_id) AS done
             FROM study_simulations ss JOIN simulations s ON s.simulation_id = ss.simulation_id
             WHERE ss.study_id = ",
            $study,
            " AND s.status IN ('completed', 'failed', 'cancelled')"
        )
    };
}
pub(crate) use finished_in_study;

/// `Err(InvalidInput)` for NaN: SQLite stores it as NULL (so a `NOT NULL` column refused
/// it, and an optional one read back `None`), PostgreSQL as NaN; the engines answered the
/// same call differently.
pub(crate) fn a_number(what: &'static str, value: f64) -> Result<()> {
    if value.is_nan() {
        return Err(Error::InvalidInput {
            what,
            value: value.to_string(),
            reason: "not a number",
        });
    }
    Ok(())
}

/// The checks of a status update, shared by both engines.
pub(crate) fn check_update(update: &StatusUpdate) -> Result<()> {
    text::check_all(&[
        ("results_path", update.results_path.as_deref()),
        ("error_message", update.error_message.as_deref()),
    ])?;
    update
        .duration_seconds
        .map_or(Ok(()), |d| a_number("duration_seconds", d))
}

/// The checks of metrics, shared by both engines.
pub(crate) fn check_metrics(metrics: &[Metric]) -> Result<()> {
    metrics.iter().try_for_each(|m| {
        text::check_all(&[
            ("metric name", Some(m.name.as_str())),
            ("metric unit", m.unit.as_deref()),
        ])?;
        a_number("metric value", m.value)
    })
}

/// The checks of a new simulation, shared by both engines.
pub(crate) fn check_simulation(sim: &NewSimulation) -> Result<()> {
    text::check_all(&[
        ("simulation id", Some(sim.simulation_id.as_str())),
        ("system config path", Some(sim.system_config_path.as_str())),
        ("solver type", Some(sim.solver_type.as_str())),
    ])
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

impl Runs {
    /// The run repositories of `db`.
    pub fn new(db: &EcoDb) -> Self {
        Self { db: db.clone() }
    }
}
