//! `--compare`: the same workload, same seed and worker count, through a connection opened
//! per operation and through plain r2d2, next to the registry's run.

use anyhow::Context;
use hive_db_core::DbName;

use crate::loadtest::args::Plan;
use crate::loadtest::progress::Style;
use crate::loadtest::report::{CompareRow, Report};
use crate::loadtest::run::{self};
use crate::loadtest::setup::{self, db_config};
use crate::loadtest::store::{ConnectPerOpStore, Path, R2d2Store, Store};
use crate::loadtest::verify_content;
use crate::loadtest::workload::{Faults, Workload};

/// Runs the baselines and returns one row per path, the registry's first.
///
/// # Errors
///
/// When a baseline cannot be set up or a worker panics.
pub fn run(plan: &Plan, registry: &Report) -> anyhow::Result<Vec<CompareRow>> {
    let mut rows = vec![CompareRow {
        path: Path::Registry.label(),
        ops: registry.ops,
        seconds: registry.seconds,
        ops_per_sec: registry.ops_per_sec,
        errors: registry.errors,
        registry_ratio: 1.0,
        content_verified: registry
            .checks
            .iter()
            .filter(|c| c.name.contains("writes"))
            .all(|c| c.passed),
    }];
    for path in [Path::ConnectPerOp, Path::R2d2] {
        let tmp = tempfile::Builder::new()
            .prefix("hive-loadtest-")
            .tempdir()?;
        let dir = tmp.path().canonicalize()?;
        let dbs = setup::create_files(&dir, plan)?;
        let row = match path {
            Path::ConnectPerOp => baseline(
                plan,
                path,
                &ConnectPerOpStore::new(dbs, db_config(plan)),
                registry,
            ),
            _ => {
                let paths: Vec<_> = dbs.into_iter().map(|(_, p): (DbName, _)| p).collect();
                baseline(plan, path, &R2d2Store::new(&paths)?, registry)
            }
        }
        .with_context(|| format!("the {} baseline", path.label()))?;
        rows.push(row);
    }
    Ok(rows)
}

fn baseline<S: Store>(
    plan: &Plan,
    path: Path,
    store: &S,
    registry: &Report,
) -> anyhow::Result<CompareRow> {
    if plan.progress != Style::Quiet {
        eprintln!("compare: the same workload through {}", path.label());
    }
    let workload = Workload::new(plan.mix.clone(), plan.app_dbs, Faults::default());
    let ran = run::drive(
        store,
        &workload,
        plan.workers,
        plan.limit,
        plan.seed,
        plan.progress,
    )?;
    let findings = verify_content(store, plan.app_dbs, &ran.acks)?;
    let secs = ran.elapsed.as_secs_f64().max(1e-9);
    let ops_per_sec = ran.ops() as f64 / secs;
    Ok(CompareRow {
        path: path.label(),
        ops: ran.ops(),
        seconds: secs,
        ops_per_sec,
        errors: ran.error_count(),
        registry_ratio: registry.ops_per_sec / ops_per_sec.max(1e-9),
        content_verified: findings.checks().iter().all(|c| c.passed),
    })
}
