//! `--compare`: the same workload, same seed and worker count, through a connection opened
//! per operation (the original system's fallback) and through plain r2d2 with its defaults;
//! on PostgreSQL, through plain r2d2_postgres with its defaults. On SQLite also the serial
//! ceiling: the same workload and seed on one worker with a raw connection per database.
//! Two ratios sum it up: the registry over that ceiling, and the data layer's run over the
//! plain-SQL run (what the data layer costs), both through the registry.
//!
//! The data layer's repositories run only on the registry or on its own (reused) direct
//! connections, so every path runs the same mix with the `ecosystemiser` operations written
//! in plain SQL (`workload` `sql`: the same statements in the same transactions), next to a
//! registry run of it; the registry's run through the data layer (`full`) heads the table.
//!
//! Two runs one after the other see this machine at different speeds, so the data layer's
//! ratio is the median of [`DATA_LAYER_ROUNDS`] pairs, their order alternating: the
//! first pair is the table's `full` and `sql` rows, the others are shorter runs of the same
//! workload that together last as long as one more pair.

use anyhow::Context;

use crate::loadtest::args::Plan;
use crate::loadtest::progress::Style;
use crate::loadtest::registry::{run_registry, verify_content};
use crate::loadtest::report::{CompareRow, DataLayerRound, Report};
use crate::loadtest::run::{self, Limit};
use crate::loadtest::setup::{self, db_config};
use crate::loadtest::store::{
    ConnectPerOpStore, Path, R2d2PgStore, R2d2Store, SerialRawStore, Store,
};
use crate::loadtest::verify::{ACKNOWLEDGED_WRITES_PRESENT, NO_UNACKNOWLEDGED_WRITES};
use crate::loadtest::workload::{Faults, Layer, Workload};

/// Pairs of registry runs, through the data layer and in plain SQL, whose ratios' median is
/// `data_layer_ratio`.
pub(crate) const DATA_LAYER_ROUNDS: usize = 5;

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

/// The registry's ops/s over the serial ceiling's, both on the mix in plain SQL.
pub(crate) fn ratio_vs_serial_raw(rows: &[CompareRow]) -> Option<f64> {
    let of = |path: Path| {
        rows.iter()
            .find(|r| r.path == path.label() && r.workload == "sql")
            .map(|r| r.ops_per_sec)
    };
    Some(of(Path::Registry)? / of(Path::SerialRaw)?.max(1e-9))
}

/// The registry's ops/s through the data layer over its ops/s on the same mix in plain SQL:
/// the median of the verified rounds' ratios (the upper middle one of an even count); `None`
/// when no round ran without an error and stored what it acknowledged.
pub(crate) fn data_layer_ratio(rounds: &[DataLayerRound]) -> Option<f64> {
    let mut ratios: Vec<f64> = rounds
        .iter()
        .filter(|r| r.verified)
        .map(|r| r.ratio)
        .collect();
    ratios.sort_by(f64::total_cmp);
    ratios.get(ratios.len() / 2).copied()
}

fn round(full_first: bool, full: &Outcome, sql: &Outcome) -> DataLayerRound {
    DataLayerRound {
        full_first,
        full_ops_per_sec: full.ops_per_sec,
        sql_ops_per_sec: sql.ops_per_sec,
        ratio: full.ops_per_sec / sql.ops_per_sec.max(1e-9),
        verified: [full, sql]
            .iter()
            .all(|o| o.errors == 0 && o.content_verified),
    }
}

/// The pairs after the first, each run the way `plan` says in a fresh place for a share of
/// its length, the first of them in plain SQL first.
fn more_rounds(plan: &Plan) -> anyhow::Result<Vec<DataLayerRound>> {
    let share = (DATA_LAYER_ROUNDS - 1) as u32;
    let plan = Plan {
        limit: match plan.limit {
            Limit::OpsPerWorker(n) => Limit::OpsPerWorker((n / u64::from(share)).max(1)),
            Limit::Time(t) => Limit::Time(t / share),
        },
        ..plan.clone()
    };
    let mut rounds = Vec::new();
    for i in 1..DATA_LAYER_ROUNDS {
        let full_first = i % 2 == 0;
        if plan.progress != Style::Quiet {
            eprintln!(
                "compare: round {} of {DATA_LAYER_ROUNDS} of the data layer's pairs",
                i + 1
            );
        }
        let run = |layer| {
            let plan = Plan {
                layer,
                ..plan.clone()
            };
            anyhow::Ok(Outcome::of(&run_registry(&plan, Faults::default())?))
        };
        let (full, sql) = if full_first {
            let full = run(Layer::Repositories)?;
            (full, run(Layer::PlainSql)?)
        } else {
            let sql = run(Layer::PlainSql)?;
            (run(Layer::Repositories)?, sql)
        };
        rounds.push(round(full_first, &full, &sql));
    }
    Ok(rounds)
}

/// Runs the baselines and the data layer's pairs after `registry`, the run of `plan`:
/// one row per path and workload, the registry's first, and the pairs.
///
/// # Errors
///
/// When a baseline cannot be set up or a worker panics.
pub(crate) fn run(
    plan: &Plan,
    registry: &Report,
) -> anyhow::Result<(Vec<CompareRow>, Vec<DataLayerRound>)> {
    let full = Outcome::of(registry);
    let mut rows = vec![row(Path::Registry, "full", &full, registry.ops_per_sec)];
    // Each run in a place of its own: `--dir` holds the first run's rows.
    let sql = Plan {
        layer: Layer::PlainSql,
        dir: None,
        listen: None,
        compare: false,
        ..plan.clone()
    };
    if sql.progress != Style::Quiet {
        eprintln!("compare: the same mix in plain SQL, through the registry");
    }
    let reg = Outcome::of(&run_registry(&sql, Faults::default())?);
    rows.push(row(Path::Registry, "sql", &reg, reg.ops_per_sec));
    let mut rounds = vec![round(true, &full, &reg)];
    rounds.extend(more_rounds(&sql)?);
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
        return Ok((rows, rounds));
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
    Ok((rows, rounds))
}

/// Runs `plan`'s workload on `store`: ops/s, errors and the content checks.
fn baseline<S: Store>(plan: &Plan, path: Path, store: &S) -> anyhow::Result<Outcome> {
    if plan.progress != Style::Quiet {
        eprintln!("compare: the same workload through {}", path.label());
    }
    let workload = Workload::new(
        plan.mix.clone(),
        plan.app_dbs,
        plan.layer,
        Faults::default(),
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    fn round(ratio: f64, verified: bool) -> DataLayerRound {
        DataLayerRound {
            full_first: true,
            full_ops_per_sec: ratio,
            sql_ops_per_sec: 1.0,
            ratio,
            verified,
        }
    }

    /// Bug caught: `data_layer_ratio` counting a round whose runs failed or stored what they
    /// did not acknowledge, taking the middle of the unsorted rounds, or inventing a ratio
    /// when no round was verified.
    #[test]
    fn the_data_layer_ratio_is_the_median_of_the_verified_rounds() {
        let sorted = [round(1.3, true), round(0.7, true), round(1.0, true)];
        assert_eq!(data_layer_ratio(&sorted), Some(1.0));
        let some_wrong = [
            round(5.0, false),
            round(0.9, true),
            round(1.1, true),
            round(6.0, false),
            round(1.0, true),
        ];
        assert_eq!(data_layer_ratio(&some_wrong), Some(1.0));
        assert_eq!(data_layer_ratio(&[round(1.0, false)]), None);
    }
}
