//! The load test's databases: `ecosystemiser` with its full schema, and the application
//! databases with the orchestrator's tasks table, registered in one registry, as SQLite
//! files in a folder or as databases of a PostgreSQL server.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use hive_db_core::postgres::Client;
use hive_db_core::{DbConfig, DbName, PgConfig, Registry};

use crate::loadtest::args::Plan;
use crate::loadtest::eco::{self, Eco};
use crate::loadtest::pgserver::RunDatabases;
use crate::loadtest::store::{Handle, Read, Store, Write};
use crate::loadtest::{original, tasks};

/// Where one run's databases are.
#[derive(Debug)]
pub(crate) enum Site {
    /// SQLite files in this folder.
    Dir(PathBuf),
    /// Databases made for the run on a PostgreSQL server.
    Pg(RunDatabases),
}

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
    site: &Site,
    plan: &Plan,
) -> anyhow::Result<(Vec<Handle>, Eco)> {
    match site {
        Site::Dir(dir) => register_files(registry, dir, plan),
        Site::Pg(dbs) => register_postgres(registry, dbs, plan),
    }
}

fn register_files(
    registry: &Registry,
    dir: &Path,
    plan: &Plan,
) -> anyhow::Result<(Vec<Handle>, Eco)> {
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
                .and_then(|()| registry.write_with(&name, |tx| tasks::create(Write::Sqlite(tx))))
                .with_context(context)?;
        }
        handles.push(Handle::Sqlite(registry.handle(&name)?));
    }
    let eco = eco.context("no ecosystemiser database in the layout")?;
    Ok((handles, eco))
}

fn register_postgres(
    registry: &Registry,
    dbs: &RunDatabases,
    plan: &Plan,
) -> anyhow::Result<(Vec<Handle>, Eco)> {
    let config = PgConfig {
        pool: db_config(plan),
        ..PgConfig::default()
    };
    let names = layout(Path::new(""), plan.app_dbs)?;
    let mut handles = Vec::new();
    let mut eco = None;
    for (i, ((name, _), (url, server_name))) in names
        .into_iter()
        .zip(dbs.urls.iter().zip(&dbs.names))
        .enumerate()
    {
        let context = || format!("cannot set up database {name} (PostgreSQL {server_name})");
        if i == 0 {
            eco =
                Some(eco::register_postgres(registry, url, config.clone()).with_context(context)?);
            registry
                .postgres(&name)?
                .write_with(|tx| {
                    tx.batch_execute(original::CREATE_PG)
                        .map_err(anyhow::Error::from)
                })
                .with_context(context)?;
        } else {
            registry
                .register_postgres(&name, url, config.clone())
                .map_err(anyhow::Error::from)
                .and_then(|()| {
                    registry
                        .postgres(&name)?
                        .write_with(|tx| tasks::create(Write::Pg(tx)))
                })
                .with_context(context)?;
        }
        handles.push(Handle::Pg(registry.postgres(&name)?));
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
    let (handles, eco) = register_all(&registry, &Site::Dir(dir.to_path_buf()), plan)?;
    drop((handles, eco));
    registry.close_all(plan.close_timeout);
    layout(dir, plan.app_dbs)
}

/// How the integrity of a database was checked.
pub(crate) const SQLITE_INTEGRITY: &str = "PRAGMA integrity_check";
/// On PostgreSQL, with amcheck: every B-tree index well formed and holding every row of
/// its table.
pub(crate) const AMCHECK: &str = "amcheck bt_index_check(heapallindexed) on every index";
/// On PostgreSQL without amcheck (a user who may not create the extension): every table
/// read in full, which fails on a page the server cannot read.
pub(crate) const FULL_SCAN: &str = "every table read in full, amcheck not being available";

/// The integrity check of database `db`: `ok` or the problems found, and how it was checked
/// (`PRAGMA integrity_check` on SQLite; on PostgreSQL amcheck, or full reads without it).
///
/// # Errors
///
/// When the check cannot run.
pub(crate) fn integrity<S: Store>(store: &S, db: usize) -> anyhow::Result<(String, &'static str)> {
    store.read(db, |c| match c {
        Read::Sqlite(c) => {
            let mut stmt = c.prepare("PRAGMA integrity_check")?;
            let lines = stmt.query_map([], |r| r.get::<_, String>(0))?;
            let found = lines.collect::<Result<Vec<_>, _>>()?.join("; ");
            Ok((found, SQLITE_INTEGRITY))
        }
        Read::Pg(c) => pg_integrity(c),
    })
}

fn pg_integrity(c: &mut Client) -> anyhow::Result<(String, &'static str)> {
    let amcheck = c
        .batch_execute("CREATE EXTENSION IF NOT EXISTS amcheck")
        .is_ok();
    let (sql, how) = if amcheck {
        (
            "SELECT format('SELECT bt_index_check(%s::regclass, true)', quote_literal(
                 quote_ident(n.nspname) || '.' || quote_ident(c.relname)))
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_am a ON a.oid = c.relam
             WHERE c.relkind = 'i' AND a.amname = 'btree' AND n.nspname = 'public'",
            AMCHECK,
        )
    } else {
        (
            "SELECT format('SELECT count(*) FROM %I.%I', n.nspname, c.relname)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind = 'r' AND n.nspname = 'public'",
            FULL_SCAN,
        )
    };
    let checks: Vec<String> = c
        .query(sql, &[])?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    let mut problems = Vec::new();
    for check in &checks {
        if let Err(e) = c.batch_execute(check) {
            problems.push(format!("{check}: {e}"));
        }
    }
    if checks.is_empty() {
        problems.push("no index or table to check".to_owned());
    }
    Ok(match problems.is_empty() {
        true => ("ok".to_owned(), how),
        false => (problems.join("; "), how),
    })
}

/// Creates the schemas of the run's databases `dbs` on PostgreSQL through a registry that
/// is closed again, for `--compare`'s r2d2_postgres path.
///
/// # Errors
///
/// As [`register_all`].
pub(crate) fn create_postgres(dbs: &RunDatabases, plan: &Plan) -> anyhow::Result<()> {
    let registry = Registry::new();
    let (handles, eco) = register_postgres(&registry, dbs, plan)?;
    drop((handles, eco));
    registry.close_all(plan.close_timeout);
    Ok(())
}
