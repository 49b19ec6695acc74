//! Helpers: databases in temporary folders, on either backend.

use std::path::Path;

use ecosystemiser_db::{EcoDb, Settings};
use hive_db_core::{DbConfig, Registry};

/// Settings for `file` in `dir`, with small pools so tests stay light.
pub(crate) fn settings(dir: &Path, file: &str) -> Settings {
    let mut s = Settings::new(dir.join(file));
    s.db = DbConfig {
        max_size: 4,
        min_idle: 1,
        ..DbConfig::default()
    };
    s
}

/// The two backends the crate can run on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Pooled,
    Direct,
}

/// A database of `kind` for `file` in `dir`; the registry (if any) is returned to keep it.
pub(crate) fn open(
    kind: Kind,
    dir: &Path,
    file: &str,
) -> anyhow::Result<(EcoDb, Option<Registry>)> {
    let s = settings(dir, file);
    Ok(match kind {
        Kind::Pooled => {
            let registry = Registry::new();
            (EcoDb::with_registry(&registry, &s)?, Some(registry))
        }
        Kind::Direct => (EcoDb::direct(&s)?, None),
    })
}

/// Both backends, for tests that must hold on each.
pub(crate) const BOTH: [Kind; 2] = [Kind::Pooled, Kind::Direct];
