//! The metrics endpoint the load test serves on loopback, for `db-monitor --attach`.

use std::net::SocketAddr;

use hive_db_core::Registry;

/// A running endpoint; dropping it stops it.
#[derive(Debug)]
pub struct Endpoint {
    addr: SocketAddr,
}

impl Endpoint {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops it and waits until it has stopped.
    pub fn stop(self) {}
}

/// Starts the endpoint for `registry` on `listen`, or `None` where this build has none.
///
/// The seam for hive-db-core's metrics endpoint: this build of the core has no endpoint yet,
/// so there is nothing to serve and the report prints no monitor line.
///
/// # Errors
///
/// When the address cannot be bound.
pub fn serve(_registry: &Registry, _listen: SocketAddr) -> anyhow::Result<Option<Endpoint>> {
    Ok(None)
}

/// The command that watches `endpoint` live.
pub fn monitor_command(endpoint: &Endpoint) -> String {
    format!(
        "cargo run -p db-monitor -- --attach {} --continuous",
        endpoint.addr()
    )
}
