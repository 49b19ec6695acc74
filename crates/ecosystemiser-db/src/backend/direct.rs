//! The fallback, for a process without a shared registry: a private hive-db-core registry of
//! its own, so its connections are pooled, validated, bounded and counted by the core exactly
//! as the shared pool's are; and the one warning per process that it is in use.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hive_db_core::DbConfig;

use super::settings::Settings;
use crate::error::{Error, Result};

/// Warnings about the fallback this process has logged: at most one.
static WARNED: AtomicBool = AtomicBool::new(false);
static WARNINGS: AtomicU64 = AtomicU64::new(0);

/// Logs, once per process, that the fallback is in use and why.
pub(crate) fn warn_once(reason: &str, path: &Path) {
    if !WARNED.swap(true, Ordering::Relaxed) {
        WARNINGS.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            reason,
            path = %path.display(),
            "EcoSystemiser uses a private connection pool, not the shared registry's"
        );
    }
}

/// How many fallback warnings this process has logged (0 or 1).
#[cfg(test)]
pub(crate) fn warnings_logged() -> u64 {
    WARNINGS.load(Ordering::Relaxed)
}

/// The private registry's settings: `settings.db` with the fallback's bound as `max_size`
/// (and `min_idle` cut to it) and its wait as `connection_timeout`.
///
/// # Errors
///
/// [`Error::InvalidInput`] for a bound of zero connections or a zero wait.
pub(crate) fn config(settings: &Settings) -> Result<DbConfig> {
    let config = settings.db_config();
    let limit = settings.direct_max_connections.unwrap_or(config.max_size);
    let wait = settings
        .direct_acquire_timeout
        .unwrap_or(config.connection_timeout);
    if limit == 0 || wait.is_zero() {
        return Err(Error::InvalidInput {
            what: "direct connection settings",
            value: format!("{limit} connections, {wait:?} wait"),
            reason: "need at least one connection and a wait longer than zero",
        });
    }
    Ok(DbConfig {
        max_size: limit,
        min_idle: config.min_idle.min(limit),
        connection_timeout: wait,
        ..config
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bug caught: the fallback warning logged on every open or call instead of once per
    /// process, or not at all.
    #[test]
    fn the_warning_is_logged_once_per_process() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|source| Error::Io {
            op: "create temporary folder",
            path: std::env::temp_dir(),
            source,
        })?;
        for file in ["a.db", "b.db"] {
            let db = crate::EcoDb::direct(&Settings::new(dir.path().join(file)))?;
            db.read(|c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)))?;
        }
        assert_eq!(warnings_logged(), 1);
        Ok(())
    }
}
