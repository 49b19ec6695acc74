//! The process-wide registry (its own test binary: `install` can happen once per process).

use hive_db_core::{DbConfig, Error, Registry, global};
use hive_tests::registry_with;

/// Bug caught: a second `install` silently replacing the registry other code already uses.
#[test]
fn install_once_and_share() -> anyhow::Result<()> {
    assert!(global::get().is_none(), "installed before the test");
    let dir = tempfile::tempdir()?;
    let (registry, db) = registry_with(dir.path(), "global", DbConfig::default())?;
    global::install(registry.clone())?;
    let again = global::install(Registry::new());
    assert!(matches!(again, Err(Error::AlreadyInstalled)));
    let installed = global::get().expect("installed registry");
    // The installed registry is the same one: it knows the database registered through the
    // original handle.
    drop(installed.get(&db)?);
    assert_eq!(registry.db_stats(&db)?.acquires(), 1);
    Ok(())
}
