//! The EcoSystemiser data layer on the hive-db-core registry, with a bounded fallback.
//!
//! WIP
mod backend;
mod clock;
mod direct;
mod error;
mod path;
mod schema;

pub use backend::{
    BackendKind, BackendReason, BackendStats, DB_NAME, DIRECT_MAX_VAR, EcoConnection, EcoDb,
    IntegrationStatus, Settings, ecosystemiser_db, integration_status,
};
pub use direct::DirectStats;
pub use error::{Error, Result};
pub use path::{DB_PATH_VAR, db_path_from_lookup, ecosystemiser_db_path};
pub use schema::SCHEMA_VERSION;
