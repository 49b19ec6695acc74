//! Cross-crate and cross-process tests of the hive-db workspace. The tests live in `tests/`;
//! this library only holds what they share.

use std::path::Path;
use std::time::Duration;

use hive_db_core::{DbConfig, DbName, Registry};

/// A registry with one database `name` at `dir/name.db`, created if missing.
///
/// # Errors
///
/// Any registration error.
pub fn registry_with(
    dir: &Path,
    name: &str,
    config: DbConfig,
) -> anyhow::Result<(Registry, DbName)> {
    let registry = Registry::new();
    let db = DbName::new(name)?;
    registry.register(
        &db,
        dir.join(format!("{name}.db")),
        DbConfig {
            create_if_missing: true,
            ..config
        },
    )?;
    Ok((registry, db))
}

/// A generous bound for "this finishes instead of hanging" checks.
pub const NO_HANG: Duration = Duration::from_secs(20);
