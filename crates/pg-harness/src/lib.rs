//! Private PostgreSQL 15 servers for tests and benchmarks: one server, or a replication
//! cluster to fail over.
//!
//! Each server is made by `initdb` in a temporary folder and listens on a free loopback
//! port, with trust authentication for the superuser `postgres`; when this process runs as
//! root, the server's programs run as the `postgres` user. A small shell per folder stops
//! its servers and removes the folder when its input closes, that is when the `Server` or
//! `Cluster` is dropped or this process exits however it exits.
//!
//! The server's programs are Debian's `postgresql-15` ([`BIN`]). Every PostgreSQL test
//! starts with [`require_postgres!`], which returns early where they are missing (one note
//! on stderr per process) unless `CI=true`, where a missing server is a failure.
//!
//! # Examples
//!
//! ```no_run
//! fn reads_back() -> anyhow::Result<()> {
//!     hive_pg_harness::require_postgres!();
//!     let server = hive_pg_harness::server()?;
//!     let mut client = postgres::Client::connect(&server.fresh_db()?, postgres::NoTls)?;
//!     let one: i32 = client.query_one("SELECT 1", &[])?.try_get(0)?;
//!     assert_eq!(one, 1);
//!     Ok(())
//! }
//! ```

mod cluster;
mod node;
mod process;
mod server;
mod skip;

pub use cluster::{Cluster, multi_host_url};
pub use node::Node;
pub use server::{Server, server};
pub use skip::{BIN, available};

/// Returns `Ok(())` from the enclosing test when [`available`] says the PostgreSQL tests are
/// skipped here, and propagates its error (with `?`) under `CI=true`.
///
/// ```no_run
/// fn a_test() -> anyhow::Result<()> {
///     hive_pg_harness::require_postgres!();
///     let url = hive_pg_harness::server()?.fresh_db()?;
///     # let _ = url;
///     Ok(())
/// }
/// ```
#[macro_export]
macro_rules! require_postgres {
    () => {
        if !$crate::available()? {
            return Ok(());
        }
    };
}
