//! Studies: many simulations with a counter of those completed, moved in the same
//! transaction as each simulation's final status.

use hive_db_core::DbName;
use hive_db_core::rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::simulations::{insert_metrics, insert_simulation};
use super::{Metric, NewSimulation, RunKind, Runs, StatusUpdate, require_row, sql, update_status};
use crate::error::{Error, Result};
use crate::json;
use crate::text;

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
    /// Why it failed, as last given.
    pub error_message: Option<String>,
}

impl Runs {
    /// Creates a study, status `pending`, none of its simulations completed.
    ///
    /// # Errors
    ///
    /// [`Error::Sqlite`] for a duplicate id; the backend's errors.
    pub fn create_study(&self, study: &NewStudy) -> Result<()> {
        text::check_all(&[
            ("study id", Some(study.study_id.as_str())),
            ("study type", Some(study.study_type.as_str())),
        ])?;
        let db = self.db.name();
        let configuration =
            json::encode_opt(db, "study configuration", study.configuration.as_ref())?;
        let metadata = json::encode_opt(db, "study metadata", study.metadata.as_ref())?;
        #[cfg(feature = "postgres")]
        if let Some(p) = self.db.pg() {
            return super::pg::create_study(
                p,
                study,
                configuration.as_deref(),
                metadata.as_deref(),
            );
        }
        self.db.transaction_with(|conn| {
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
                    json::Lite(configuration.as_deref()),
                    json::Lite(metadata.as_deref())
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
        text::check("study id", study_id)?;
        super::check_simulation(sim)?;
        let db = self.db.name();
        let parameters = json::encode_opt(db, "parameter set", parameter_set)?;
        #[cfg(feature = "postgres")]
        if let Some(p) = self.db.pg() {
            return super::pg::add_study_simulation(
                p,
                study_id,
                sim,
                parameters.as_deref(),
                sequence_number,
            );
        }
        self.db.transaction_with(|conn| {
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
            .and_then(|mut s| s.execute(params![
                study_id,
                sim.simulation_id,
                json::Lite(parameters.as_deref()),
                sequence_number
            ]))
            .map_err(sql(db, "link study simulation"))?;
            Ok(())
        })
    }

    /// Ends simulation `simulation_id` of study `study_id` with `update` and its final
    /// `metrics`, and counts it in the study (which becomes `completed` with its last
    /// simulation), all in one transaction. Returns the study's progress. The study's count
    /// is of its simulations in a final status: a retried finish counts once, and a
    /// simulation whose status was set to finished before counts too.
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
        text::check_all(&[
            ("study id", Some(study_id)),
            ("simulation id", Some(simulation_id)),
        ])?;
        if !update.status.is_final() {
            return Err(Error::InvalidInput {
                what: "status",
                value: update.status.to_string(),
                reason: "a finished simulation needs a final status",
            });
        }
        #[cfg(feature = "postgres")]
        if let Some(p) = self.db.pg() {
            return super::pg::finish_study_simulation(p, study_id, simulation_id, update, metrics);
        }
        let db = self.db.name();
        self.db.transaction_with(|conn| {
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
            update_status(db, conn, RunKind::Simulation, simulation_id, update)?;
            insert_metrics(db, conn, simulation_id, metrics)?;
            // The count is of the study's simulations in a final status, not a counter moved
            // per call: a retried finish counted twice (the study completed with one still
            // pending), and one finished by `update_simulation_status` first was never
            // counted by a rule that skipped finished simulations.
            conn.prepare_cached(concat!(
                "UPDATE studies SET completed_simulations = n.done,
                     status = CASE WHEN n.done >= total_simulations
                                   THEN 'completed' ELSE 'running' END,
                     completed_at = CASE WHEN n.done >= total_simulations
                                         THEN coalesce(completed_at, CURRENT_TIMESTAMP)
                                         ELSE completed_at END
                 FROM (",
                super::finished_in_study!("?1"),
                ") AS n WHERE study_id = ?1"
            ))
            .and_then(|mut s| s.execute([study_id]))
            .map_err(sql(db, "count study simulation"))?;
            study_progress(db, conn, study_id)?.ok_or_else(|| Error::NotFound {
                db: db.clone(),
                what: "study",
                key: study_id.to_owned(),
            })
        })
    }

    /// Changes a study's status (and the other fields given).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown study; the backend's errors.
    pub fn update_study_status(&self, study_id: &str, update: &StatusUpdate) -> Result<()> {
        text::check("study id", study_id)?;
        #[cfg(feature = "postgres")]
        if let Some(p) = self.db.pg() {
            return super::pg::status(p, RunKind::Study, study_id, update);
        }
        let db = self.db.name();
        self.db
            .transaction_with(|conn| update_status(db, conn, RunKind::Study, study_id, update))
    }

    /// A study's progress, if it exists.
    ///
    /// # Errors
    ///
    /// The backend's errors.
    pub fn study(&self, study_id: &str) -> Result<Option<StudyProgress>> {
        if !text::storable(study_id) {
            return Ok(None);
        }
        #[cfg(feature = "postgres")]
        if let Some(p) = self.db.pg() {
            return super::pg::study(p, study_id);
        }
        self.db
            .read_with(|conn| study_progress(self.db.name(), conn, study_id))
    }
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
                (SELECT count(*) FROM study_simulations l WHERE l.study_id = s.study_id),
                s.error_message
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
                error_message: r.get(5)?,
            })
        })
        .optional()
    })
    .map_err(sql(db, "read study"))
}
