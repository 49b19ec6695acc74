//! What [`EcoDb::integration_status`] reports: the backend in use, why, and whether a probe
//! query through it succeeds.

use std::path::PathBuf;

use hive_db_core::error_chain;

use super::{BackendKind, BackendReason, EcoDb};
use crate::error::{Error, Result};

/// What [`EcoDb::integration_status`] found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct IntegrationStatus {
    /// The backend in use.
    pub backend: BackendKind,
    /// Why it is in use.
    pub reason: BackendReason,
    /// The database file.
    pub path: PathBuf,
    /// True only when the backend is the shared pool and the probe went through it.
    pub shared_pool_in_use: bool,
    /// True when the probe query (`SELECT 1` and the schema version) succeeded.
    pub probe_ok: bool,
    /// The schema version the probe read.
    pub schema_version: Option<i64>,
    /// The probe's error, when it failed.
    pub probe_error: Option<String>,
}

impl EcoDb {
    /// Which backend is in use and why, and whether a probe query through it succeeds. It
    /// reports the shared pool as in use only when the probe went through it.
    pub fn integration_status(&self) -> IntegrationStatus {
        let probe = self.read(|conn| -> Result<i64> {
            conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .and_then(|_| conn.pragma_query_value(None, "user_version", |r| r.get(0)))
                .map_err(|e| Error::sqlite(&self.inner.name, "probe", e))
        });
        let backend = self.backend();
        IntegrationStatus {
            backend,
            reason: self.inner.reason,
            path: self.inner.path.clone(),
            shared_pool_in_use: backend == BackendKind::SharedPool && probe.is_ok(),
            probe_ok: probe.is_ok(),
            schema_version: probe.as_ref().ok().copied(),
            probe_error: probe.err().map(|e| error_chain(&e)),
        }
    }
}
