//! The load test's databases: `ecosystemiser` with its full schema, and the application
//! databases with the orchestrator's tasks table, registered in one registry.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use hive_db_core::{DbConfig, DbHandle, DbName, Registry};

use crate::loadtest::args::Plan;
use crate::loadtest::eco::{self, Eco};
use crate::loadtest::store::Store;
use crate::loadtest::tasks;

/// The name of the EcoSystemiser database.
pub(crate) const ECO_DB: &str = "ecosystemiser";

/// The settings of every database of the run.
pub(crate) fn db_config(plan: &Plan) -> DbConfig {
    DbConfig {
        create_if_missing: true,
        max_size: plan.max_size,
        min_idle: 2.min(plan.max_size),
        leak_threshold: Some(Duration::from_secs(5)),
        ..DbConfig::default()
    }
}

/// The names and files of the run's databases in `dir`, `ecosystemiser` first.
pub(crate) fn layout(dir: &Path, app_dbs: usize) -> anyhow::Result<Vec<(DbName, PathBuf)>> {
    let mut dbs = vec![(DbName::new(ECO_DB)?, dir.join("ecosystemiser.db"))];
    for i in 1..=app_dbs {
        let name = format!("app-{i}");
        dbs.push((DbName::new(&name)?, dir.join(format!("{name}.db"))));
    }
    Ok(dbs)
}

/// Registers every database of the run in `registry`, creates the schemas, and returns a
/// handle on each, in store order, with the data layer's repositories on `ecosystemiser`.
///
/// # Errors
///
/// When a database cannot be registered or its schema created.
pub(crate) fn register_all(
    registry: &Registry,
    dir: &Path,
    plan: &Plan,
) -> anyhow::Result<(Vec<DbHandle>, Eco)> {
    let config = db_config(plan);
    let dbs = layout(dir, plan.app_dbs)?;
    let mut handles = Vec::new();
    let mut eco = None;
    for (i, (name, path)) in dbs.into_iter().enumerate() {
        let context = || format!("cannot set up database {name} at {}", path.display());
        if i == 0 {
            eco = Some(eco::register(registry, &path, &config).with_context(context)?);
        } else {
            registry
                .register(&name, &path, config.clone())
                .map_err(anyhow::Error::from)
                .and_then(|()| registry.write_with(&name, |tx| tasks::create(tx)))
                .with_context(context)?;
        }
        handles.push(registry.handle(&name)?);
    }
    let eco = eco.context("no ecosystemiser database in the layout")?;
    Ok((handles, eco))
}

/// Creates the run's databases in `dir` with their schemas, through a registry that is
/// closed again, for the `--compare` paths that open the files their own way.
///
/// # Errors
///
/// As [`register_all`].
pub(crate) fn create_files(dir: &Path, plan: &Plan) -> anyhow::Result<Vec<(DbName, PathBuf)>> {
    let registry = Registry::new();
    let (handles, eco) = register_all(&registry, dir, plan)?;
    drop((handles, eco));
    registry.close_all(plan.close_timeout);
    layout(dir, plan.app_dbs)
}

/// `PRAGMA integrity_check` of database `db`: `ok`, or SQLite's list of problems.
///
/// # Errors
///
/// When the check cannot run.
pub(crate) fn integrity<S: Store>(store: &S, db: usize) -> anyhow::Result<String> {
    store.read(db, |c| {
        let mut stmt = c.prepare("PRAGMA integrity_check")?;
        let lines = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(lines.collect::<Result<Vec<_>, _>>()?.join("; "))
    })
}
