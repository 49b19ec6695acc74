//! `--compare`: the same workload, same seed and worker count, through a connection opened
//! per operation (the original system's fallback) and through plain r2d2 with its defaults;
//! on PostgreSQL, through plain r2d2_postgres with its defaults. On SQLite also the serial
//! ceiling: the same workload and seed on one worker with a raw connection per database.
//! Two ratios sum it up: the registry over that ceiling, and the whole mix over the mix
//! without the data layer (what the data layer costs), both through the registry.
//!
//! The data layer's repositories run only on the registry or on its own (reused) direct
//! connections, so the baselines run the mix without the data layer's operations, next to a
//! registry run of that same reduced mix; the registry's run of the whole mix heads the table.

use anyhow::Context;

use crate::loadtest::args::Plan;
use crate::loadtest::progress::Style;
use crate::loadtest::registry::{run_registry, verify_content};
use crate::loadtest::report::{CompareRow, Report};
use crate::loadtest::run::{self, Limit};
use crate::loadtest::setup::{self, db_config};
use crate::loadtest::store::{
    ConnectPerOpStore, Path, R2d2PgStore, R2d2Store, SerialRawStore, Store,
};
use crate::loadtest::verify::{ACKNOWLEDGED_WRITES_PRESENT, NO_UNACKNOWLEDGED_WRITES};
use crate::loadtest::workload::{Faults, Workload};

/// What one path's run came to.
#[derive(Debug)]
struct Outcome {
    ops: u64,
    seconds: f64,
    ops_per_sec: f64,
    errors: u64,
    content_verified: bool,
}

impl Outcome {
    fn of(report: &Report) -> Self {
        Self {
            ops: report.ops,
            seconds: report.seconds,
            ops_per_sec: report.ops_per_sec,
            errors: report.errors,
            content_verified: report
                .checks
                .iter()
                .filter(|c| {
                    [ACKNOWLEDGED_WRITES_PRESENT, NO_UNACKNOWLEDGED_WRITES].contains(&c.name)
                })
                .all(|c| c.passed),
        }
    }
}

fn row(path: Path, workload: &'static str, o: &Outcome, registry_ops_per_sec: f64) -> CompareRow {
    CompareRow {
        path: path.label(),
        workload,
        ops: o.ops,
        seconds: o.seconds,
        ops_per_sec: o.ops_per_sec,
        errors: o.errors,
        registry_ratio: registry_ops_per_sec / o.ops_per_sec.max(1e-9),
        content_verified: o.content_verified,
    }
}

/// The registry's ops/s on the mix without the data layer over the serial ceiling's.
pub(crate) fn ratio_vs_serial_raw(rows: &[CompareRow]) -> Option<f64> {
    let of = |path: Path| {
        rows.iter()
            .find(|r| r.path == path.label() && r.workload == "sql")
            .map(|r| r.ops_per_sec)
    };
    Some(of(Path::Registry)? / of(Path::SerialRaw)?.max(1e-9))
}

/// The registry's ops/s on the whole mix over its ops/s on the mix without the data layer.
pub(crate) fn data_layer_ratio(rows: &[CompareRow]) -> Option<f64> {
    let of = |workload: &str| {
        rows.iter()
            .find(|r| r.path == Path::Registry.label() && r.workload == workload)
            .map(|r| r.ops_per_sec)
    };
    Some(of("full")? / of("sql")?.max(1e-9))
}

/// Runs the baselines and returns one row per path and workload, the registry's first.
///
/// # Errors
///
/// When a baseline cannot be set up or a worker panics.
pub(crate) fn run(plan: &Plan, registry: &Report) -> anyhow::Result<Vec<CompareRow>> {
    let mut rows = vec![row(
        Path::Registry,
        "full",
        &Outcome::of(registry),
        registry.ops_per_sec,
    )];
    let Some(mix) = plan.mix.without_data_layer() else {
        return Ok(rows);
    };
    let sql = Plan {
        mix,
        listen: None,
        compare: false,
        ..plan.clone()
    };
    if sql.progress != Style::Quiet {
        eprintln!("compare: the mix without the data layer, through the registry");
    }
    let reg = Outcome::of(&run_registry(&sql, Faults::default())?);
    rows.push(row(Path::Registry, "sql", &reg, reg.ops_per_sec));
    if let Some(server) = &sql.server {
        let dbs = server.create(1 + sql.app_dbs)?;
        let outcome = setup::create_postgres(&dbs, &sql).and_then(|()| {
            let store = R2d2PgStore::new(&dbs.urls)?;
            baseline(&sql, Path::R2d2Postgres, &store).context("the r2d2_postgres baseline")
        });
        if let Err(e) = dbs.drop_all() {
            eprintln!("warning: the baseline's databases stay on the server: {e:#}");
        }
        rows.push(row(Path::R2d2Postgres, "sql", &outcome?, reg.ops_per_sec));
        return Ok(rows);
    }

    let tmp = tempfile::Builder::new()
        .prefix("hive-loadtest-")
        .tempdir()?;
    let dbs = setup::create_files(&tmp.path().canonicalize()?, &sql)?;
    let store = ConnectPerOpStore::new(dbs, db_config(&sql));
    let cpo = baseline(&sql, Path::ConnectPerOp, &store).context("the connect-per-op baseline")?;
    rows.push(row(Path::ConnectPerOp, "sql", &cpo, reg.ops_per_sec));

    let tmp = tempfile::Builder::new()
        .prefix("hive-loadtest-")
        .tempdir()?;
    let paths: Vec<_> = setup::create_files(&tmp.path().canonicalize()?, &sql)?
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    let r2d2 = baseline(&sql, Path::R2d2, &R2d2Store::new(&paths)?).context("the r2d2 baseline")?;
    rows.push(row(Path::R2d2, "sql", &r2d2, reg.ops_per_sec));

    // The ceiling: the same workload, one worker, a raw connection per database.
    let tmp = tempfile::Builder::new()
        .prefix("hive-loadtest-")
        .tempdir()?;
    let dbs = setup::create_files(&tmp.path().canonicalize()?, &sql)?;
    // As many operations in all as the registry's workers ran, or the same time.
    let limit = match sql.limit {
        Limit::OpsPerWorker(n) => Limit::OpsPerWorker(n.saturating_mul(sql.workers as u64)),
        time @ Limit::Time(_) => time,
    };
    let serial = Plan {
        workers: 1,
        limit,
        ..sql.clone()
    };
    let store = SerialRawStore::new(dbs, &db_config(&sql))?;
    let raw = baseline(&serial, Path::SerialRaw, &store).context("the serial raw baseline")?;
    rows.push(row(Path::SerialRaw, "sql", &raw, reg.ops_per_sec));
    Ok(rows)
}

/// Runs `plan`'s workload on `store`: ops/s, errors and the content checks.
fn baseline<S: Store>(plan: &Plan, path: Path, store: &S) -> anyhow::Result<Outcome> {
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
    let seconds = ran.elapsed.as_secs_f64().max(1e-9);
    Ok(Outcome {
        ops: ran.ops(),
        seconds,
        ops_per_sec: ran.ops() as f64 / seconds,
        errors: ran.error_count(),
        content_verified: findings.checks().iter().all(|c| c.passed),
    })
}
