//! A registry of named, pooled SQLite databases, shared by every application on one host.
//!
//! Each database is registered once under a [`DbName`] for one file and gets an r2d2 pool of
//! connections that all carry the same settings ([`configure_connection`]), in WAL mode. The
//! registry hands out connections ([`Registry::get`], [`Registry::read`]), runs write
//! transactions through a per-database FIFO writer lane, committing the work of writers
//! queued together at once ([`Registry::write`], [`WriteTx`]), keeps
//! statistics ([`Registry::stats`]), checks health ([`Registry::health`]), reports leaks, and
//! closes cleanly ([`Registry::close`]). A connection is never handed on dirty: one returned
//! while its thread panics, inside an open transaction, after a failed rollback, or with its
//! session changed through SQL (a PRAGMA that sets something, a temporary table, an attached
//! database: see [`PooledConnection`]) is closed, not pooled.
//!
//! [`prometheus_text`] renders a snapshot as Prometheus text; with the `endpoint` cargo
//! feature, `endpoint::serve` serves it, the snapshot and health over HTTP on loopback, and
//! announces the endpoint in a per-user folder, where the `discovery` module (feature
//! `discovery`, part of `endpoint`) lists the running ones for a monitor.
//!
//! With the `postgres` cargo feature, a PostgreSQL database is registered by URL in the same
//! registry (`Registry::register_postgres`) and used through a `PgHandle`
//! (`Registry::postgres`), whose closures get the `postgres` crate's own client and
//! transaction types; it shares the pools' machinery, the snapshot, health and metrics.
//!
//! With the `async` cargo feature, every call has a future form (`Registry::read_async`,
//! `Registry::write_async`, `AsyncHandle`), on any executor and without a runtime of its own:
//! closures run on each database's own threads, and async writes share the writer lane, its
//! order and its group commit with sync ones (see the README's example).
//!
//! # Examples
//!
//! ```
//! use hive_db_core::{DbConfig, DbName, Registry};
//!
//! # fn main() -> anyhow::Result<()> {
//! let dir = tempfile::tempdir()?;
//! let registry = Registry::new();
//! let name = DbName::new("inventory")?;
//! let config = DbConfig { create_if_missing: true, ..DbConfig::default() };
//! registry.register(&name, dir.path().join("inventory.db"), config)?;
//!
//! registry.write(&name, |tx| {
//!     tx.execute_batch("CREATE TABLE item (id INTEGER PRIMARY KEY, label TEXT NOT NULL)")?;
//!     tx.execute("INSERT INTO item (label) VALUES (?1)", ["bolt"])?;
//!     Ok(())
//! })?;
//!
//! let count: i64 =
//!     registry.read(&name, |conn| conn.query_row("SELECT count(*) FROM item", [], |r| r.get(0)))?;
//! assert_eq!(count, 1);
//!
//! // A closure of the application's own error type: the `_with` forms.
//! let labels = registry.read_with(&name, |conn| -> anyhow::Result<Vec<String>> {
//!     let mut stmt = conn.prepare("SELECT label FROM item")?;
//!     let labels = stmt.query_map([], |r| r.get(0))?.collect::<Result<Vec<String>, _>>()?;
//!     anyhow::ensure!(!labels.is_empty(), "no items");
//!     Ok(labels)
//! })?;
//! assert_eq!(labels, ["bolt"]);
//!
//! let stats = registry.db_stats(&name)?;
//! assert_eq!(stats.totals.commits, 1);
//! let report = registry.close(&name, std::time::Duration::from_secs(1))?;
//! assert!(report.still_out.is_empty());
//! # Ok(())
//! # }
//! ```

// Layers, each using only those above it in this list (checked by the workspace's tidy
// test; see docs/ARCHITECTURE.md).
// Leaves.
mod backend;
mod clock;
mod histogram;
mod lane;
mod name;
mod sync;
// Vocabulary.
mod config;
mod error;
mod server_facts;
mod sqlite_build;
mod stats;
// SQLite.
mod open;
mod wal;
// One database's connections.
mod pool;
// Writes.
mod batch;
mod checkpoint;
mod keeper;
mod read_keeper;
mod reentry;
// One database.
mod database;
#[cfg(feature = "postgres")]
mod pg;
// The facade and its views.
#[cfg(feature = "async")]
mod asynch;
#[cfg(feature = "discovery")]
pub mod discovery;
#[cfg(test)]
mod doc_facts;
#[cfg(feature = "endpoint")]
pub mod endpoint;
pub mod global;
mod health;
mod metrics;
mod registry;

#[cfg(feature = "async")]
pub use asynch::{AsyncConfig, AsyncHandle, DbFuture};
pub use backend::Backend;
pub use batch::{WriteTx, immediate_transaction};
pub use config::{DbConfig, Synchronous};
pub use error::{Error, OpenCause, Reentry, Refusal, Result, error_chain};
pub use health::{DbHealth, HealthReport, HealthStatus};
pub use histogram::{Bucket, LatencySummary};
pub use metrics::{PROMETHEUS_CONTENT_TYPE, prometheus_text};
pub use name::{DbName, MAX_NAME_LEN, NameError};
pub use open::{PreparedDatabase, configure_connection, open_connection, prepare_database};
#[cfg(feature = "postgres")]
pub use pg::{PgConfig, PgConnection, PgHandle};
pub use pool::{CloseReport, OutstandingConnection, PooledConnection};
pub use registry::{DbHandle, Registry};
pub use stats::{
    ClosedTotals, DbSnapshot, PgFacts, RegistrySnapshot, ReplicaSnapshot, ReplicaStatus,
    SNAPSHOT_SCHEMA_VERSION, ServerFacts, SqliteBuild, SqliteFacts, Totals,
};

/// The rusqlite this crate is built against (one SQLite per process).
pub use rusqlite;

/// The `postgres` client crate this crate is built against (cargo feature `postgres`).
#[cfg(feature = "postgres")]
pub use postgres;

// The README's Rust snippets, compiled and run as doctests so they cannot go stale. They
// are whole programs, to be pasted as they are, so they carry no `cfg` of their own: they
// are tested with the features they use (the crate's tests always have them, through its
// dev-dependency on itself).
#[cfg(all(doctest, feature = "postgres", feature = "async"))]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
