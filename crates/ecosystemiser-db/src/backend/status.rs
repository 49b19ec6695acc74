//! What [`EcoDb::integration_status`] reports: why the backend is in use (which implies the
//! backend), and whether a probe query through it succeeds.

use hive_db_core::error_chain;

use super::{BackendKind, BackendReason, EcoDb};

/// What [`EcoDb::integration_status`] found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct IntegrationStatus {
    /// Why the backend is in use ([`IntegrationStatus::backend`] follows from it).
    pub reason: BackendReason,
    /// The engine the database is on. The fallback ([`BackendKind::Direct`]) is always
    /// SQLite: direct connections are a SQLite feature.
    pub engine: hive_db_core::Backend,
    /// The probe (`SELECT 1`, then the schema version): the version it read, or its error
    /// with its sources.
    pub probe: Result<i64, String>,
}

impl IntegrationStatus {
    /// The backend in use.
    pub fn backend(&self) -> BackendKind {
        self.reason.backend()
    }

    /// True only when the backend is the shared pool and the probe went through it.
    pub fn shared_pool_in_use(&self) -> bool {
        self.backend() == BackendKind::SharedPool && self.probe.is_ok()
    }
}

impl EcoDb {
    /// Which backend is in use and why, and whether a probe query through it succeeds.
    pub fn integration_status(&self) -> IntegrationStatus {
        #[cfg(feature = "postgres")]
        if let Some(pg) = self.pg() {
            let probe = crate::schema::pg::read_version(pg);
            return IntegrationStatus {
                reason: self.reason(),
                engine: self.engine(),
                probe: probe.map_err(|e| error_chain(&e)),
            };
        }
        let probe = self.read(|conn| {
            conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?;
            conn.pragma_query_value(None, "user_version", |r| r.get(0))
        });
        IntegrationStatus {
            reason: self.reason(),
            engine: self.engine(),
            probe: probe.map_err(|e| error_chain(&e)),
        }
    }
}
