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
mod path;
mod runs;
mod schema;
mod yaml;

pub use backend::{
    BackendKind, BackendReason, BackendStats, DB_NAME, DIRECT_MAX_VAR, EcoConnection, EcoDb,
    IntegrationStatus, Settings, ecosystemiser_db, integration_status,
};
pub use direct::DirectStats;
pub use error::{Error, Result};
pub use path::{DB_PATH_VAR, db_path_from_lookup, ecosystemiser_db_path};
pub use schema::SCHEMA_VERSION;
pub use components::{ComponentLibrary, ComponentSpec, ComponentType, SpecSummary, VersionEntry};
pub use events::{Event, EventStore, HistoryOf, Pattern, SubscriptionId};
pub use runs::{
    Individual, Metric, NewAnalysisRun, NewOptimizationRun, NewSimulation, NewStudy, Objective,
    OptimizationProgress, RunStatus, Runs, Simulation, StatusUpdate, StudyProgress,
};
