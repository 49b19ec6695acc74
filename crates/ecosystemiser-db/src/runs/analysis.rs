//! Analysis runs: create, record results, change status.

use hive_db_core::rusqlite::params;
use serde_json::Value;

use super::{RunKind, Runs, StatusUpdate, require_row, sql, update_status};
use crate::error::Result;
use crate::json;
use crate::text;

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

impl Runs {
    /// Creates an analysis run, status `pending`.
    ///
    /// # Errors
    ///
    /// [`Error::Sqlite`](crate::Error::Sqlite) for a duplicate id; the backend's errors.
    pub fn create_analysis_run(&self, run: &NewAnalysisRun) -> Result<()> {
        text::check_all(&[
            ("analysis id", Some(run.analysis_id.as_str())),
            ("source type", Some(run.source_type.as_str())),
            ("source id", Some(run.source_id.as_str())),
        ])?;
        let db = self.db.name();
        let strategies = json::encode_opt(db, "analysis strategies", run.strategies.as_ref())?;
        let metadata = json::encode_opt(db, "analysis metadata", run.metadata.as_ref())?;
        #[cfg(feature = "postgres")]
        if let Some(p) = self.db.pg() {
            return super::pg::create_analysis_run(
                p,
                run,
                strategies.as_deref(),
                metadata.as_deref(),
            );
        }
        self.db.transaction_with(|conn| {
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
                    json::Lite(strategies.as_deref()),
                    json::Lite(metadata.as_deref())
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
    /// [`Error::NotFound`](crate::Error::NotFound) for an unknown run; the backend's errors.
    pub fn record_analysis_results(
        &self,
        analysis_id: &str,
        strategy_name: &str,
        results: &[(String, Value)],
    ) -> Result<usize> {
        text::check_all(&[
            ("analysis id", Some(analysis_id)),
            ("strategy name", Some(strategy_name)),
        ])?;
        for (kind, _) in results {
            text::check("result type", kind)?;
        }
        let db = self.db.name();
        let encoded = results
            .iter()
            .map(|(kind, data)| Ok((kind, json::encode(db, "analysis result", data)?)))
            .collect::<Result<Vec<_>>>()?;
        #[cfg(feature = "postgres")]
        if let Some(p) = self.db.pg() {
            return super::pg::record_analysis_results(p, analysis_id, strategy_name, &encoded);
        }
        self.db.transaction_with(|conn| {
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
                stmt.execute(params![analysis_id, strategy_name, kind, json::Lite(Some(data))])
                    .map_err(sql(db, "record analysis results"))?;
            }
            Ok(encoded.len())
        })
    }

    /// Changes an analysis run's status (and the other fields given).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`](crate::Error::NotFound) for an unknown run; the backend's errors.
    pub fn update_analysis_status(&self, analysis_id: &str, update: &StatusUpdate) -> Result<()> {
        text::check("analysis id", analysis_id)?;
        #[cfg(feature = "postgres")]
        if let Some(p) = self.db.pg() {
            return super::pg::status(p, RunKind::Analysis, analysis_id, update);
        }
        let db = self.db.name();
        self.db.transaction_with(|conn| {
            update_status(db, conn, RunKind::Analysis, analysis_id, update)
        })
    }
}
