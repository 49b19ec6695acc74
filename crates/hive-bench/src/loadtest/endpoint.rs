//! The metrics endpoint the load test serves on loopback, for `db-monitor --attach`.

use std::net::SocketAddr;

use hive_db_core::Registry;
use hive_db_core::endpoint::{self, Endpoint, EndpointConfig};

/// Starts hive-db-core's endpoint (`/metrics`, `/stats`, `/health`) for `registry` on
/// `listen`, a loopback address.
///
/// # Errors
///
/// When the address is not loopback or cannot be bound.
pub(crate) fn serve(registry: &Registry, listen: SocketAddr) -> anyhow::Result<Endpoint> {
    let config = EndpointConfig {
        addr: listen,
        ..EndpointConfig::default()
    };
    Ok(endpoint::serve(registry, config)?)
}

/// The command that watches `endpoint` live.
pub(crate) fn monitor_command(endpoint: &Endpoint) -> String {
    // The endpoint announces itself, so the monitor finds it without an address; the
    // address is there for a monitor run as another user or from a copied command.
    format!(
        "cargo run -p db-monitor -- --continuous (or --attach {} --continuous)",
        endpoint.addr()
    )
}
