//! Simulations, studies, analysis runs and optimization runs: the writes the application
//! makes, each one transaction (a batch of metrics, or a status change with the counters it
//! moves in other tables), and the reads that check them. Its SQL is all here, one file per
//! kind of run; this file holds the repository handle and the helpers they share.

mod analysis;
mod optimization;
mod simulations;
mod status;
mod studies;

use hive_db_core::DbName;

use crate::backend::EcoDb;
use crate::error::{Error, Result};

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
