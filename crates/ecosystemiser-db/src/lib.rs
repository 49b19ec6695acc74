//! The EcoSystemiser data layer on the hive-db-core registry, with a bounded fallback.
//!
//! WIP
mod backend;
mod clock;
mod components;
mod direct;
mod error;
mod events;
mod json;
mod legacy;
mod path;
mod runs;
mod schema;
mod yaml;

pub use backend::{
    BackendKind, BackendReason, BackendStats, DB_NAME, DIRECT_MAX_VAR, EcoConnection, EcoDb,
    IntegrationStatus, Settings, ecosystemiser_connection, ecosystemiser_db,
    ecosystemiser_transaction, integration_status,
};
pub use components::{ComponentLibrary, ComponentSpec, ComponentType, SpecSummary, VersionEntry};
pub use direct::DirectStats;
pub use error::{Error, Result};
pub use events::{Event, EventStore, HistoryOf, Pattern, SubscriptionId};
#[expect(deprecated, reason = "the legacy API is re-exported for its callers")]
pub use legacy::{
    ConnectionPool, ecosystemiser_transaction_at, get_connection_pool, get_db_connection,
    validate_hive_integration,
};
pub use path::{DB_PATH_VAR, db_path_from_lookup, ecosystemiser_db_path};
pub use runs::{
    Individual, Metric, NewAnalysisRun, NewOptimizationRun, NewSimulation, NewStudy, Objective,
    OptimizationProgress, RunStatus, Runs, Simulation, StatusUpdate, StudyProgress,
};
pub use schema::SCHEMA_VERSION;
