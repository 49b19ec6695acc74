//! The EcoSystemiser data layer on the hive-db-core registry, with a bounded fallback.
//!
//! [`EcoDb`] is the EcoSystemiser database: when the process has a hive-db-core registry
//! (installed with `hive_db_core::global::install`, or handed over with
//! [`EcoDb::with_registry`]) it uses that registry's pool named `ecosystemiser`; otherwise it
//! falls back to a private registry of its own (so the same pool, PRAGMAs, validation and
//! counters), at most [`Settings::direct_max_connections`] connections with a bounded wait,
//! counted ([`EcoDb::stats`]) and warned about once per process. Opening it
//! migrates the schema ([`SCHEMA_VERSION`], in `PRAGMA user_version`), adopting files made
//! by the original Python code in place. On top sit the repositories: the
//! [`ComponentLibrary`] (with YAML import and export), the [`EventStore`] (subscribers and
//! histories) and [`Runs`] (simulations, studies, analysis and optimization runs). The old
//! API is still there as deprecated shims ([`get_db_connection`], [`ConnectionPool`], ...);
//! `docs/MIGRATION.md` maps each old call to its successor.
//!
//! The database may also live on PostgreSQL: when the registry names `ecosystemiser` as a
//! PostgreSQL database (`Registry::register_postgres`, or `EcoDb::with_postgres`), every
//! repository runs its PostgreSQL SQL there instead, with the same behaviour (one contract
//! test suite runs on both engines), the schema versioned the same way, and an
//! `EventListener` for subscribers in other processes (cargo feature `postgres`, on by
//! default).
//!
//! The process-wide database is [`ecosystemiser_db`]: the path from
//! [`ecosystemiser_db_path`] (`ECOSYSTEMISER_DB_PATH`, else the per-user data folder), the
//! backend chosen once.
//!
//! # Examples
//!
//! ```
//! use ecosystemiser_db::{
//!     ComponentLibrary, ComponentSpec, EcoDb, Event, EventStore, Metric, NewSimulation,
//!     RunStatus, Runs, Settings, StatusUpdate,
//! };
//! use hive_db_core::Registry;
//! use serde_json::json;
//!
//! # fn main() -> anyhow::Result<()> {
//! let dir = tempfile::tempdir()?;
//! let registry = Registry::new();
//! let db = EcoDb::with_registry(&registry, &Settings::new(dir.path().join("eco.db")))?;
//!
//! let library = ComponentLibrary::new(&db);
//! library.add_type("battery", "energy", Some("electrical storage"))?;
//! let technical = json!({"capacity_kwh": 10.0}).as_object().cloned().unwrap_or_default();
//! let mut spec = ComponentSpec::new("battery", "energy", "lfp_10", technical);
//! spec.is_default = true;
//! library.add_spec(&spec)?;
//! assert_eq!(library.spec("battery", None, None)?.name, "lfp_10");
//!
//! let runs = Runs::new(&db);
//! runs.create_simulation(&NewSimulation::new("sim-1", "systems/house.yml", "milp"))?;
//! runs.record_metrics("sim-1", &[Metric::new("total_cost", 1234.5, Some("EUR"))])?;
//! runs.update_simulation_status("sim-1", &StatusUpdate::to(RunStatus::Completed))?;
//!
//! let events = EventStore::new(&db);
//! events.publish(&Event::new("simulation.completed", "solver", json!({"cost": 1234.5}))
//!     .for_simulation("sim-1"))?;
//! let history = events.simulation_history("sim-1", 10)?;
//! assert_eq!(history[0].payload["cost"], json!(1234.5));
//!
//! // Plain SQL, in one BEGIN IMMEDIATE transaction, with bound parameters.
//! let n: i64 = db.transaction(|conn| {
//!     let sql = "SELECT count(*) FROM simulations WHERE status = ?1";
//!     conn.query_row(sql, ["completed"], |r| r.get(0))
//! })?;
//! assert_eq!(n, 1);
//! assert!(db.integration_status().shared_pool_in_use());
//! # Ok(())
//! # }
//! ```

mod backend;
mod clock;
mod components;
mod error;
mod events;
mod json;
mod legacy;
mod path;
mod runs;
mod schema;
mod text;

pub use backend::{
    BackendKind, BackendReason, BackendStats, DB_NAME, DIRECT_MAX_VAR, EcoConnection, EcoDb,
    IntegrationStatus, Settings, ecosystemiser_connection, ecosystemiser_db,
    ecosystemiser_transaction, integration_status,
};
pub use components::{ComponentLibrary, ComponentSpec, ComponentType, SpecSummary, VersionEntry};
pub use error::{Error, Result};
pub use events::{Event, EventStore, HistoryOf, Pattern, SubscriptionId};
#[cfg(feature = "postgres")]
pub use events::{EventListener, LISTENER_APPLICATION_NAME};
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
/// For tools that move or check whole databases (not part of the stable API).
#[doc(hidden)]
pub use schema::TABLES;
