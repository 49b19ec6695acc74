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
//! Two runs one after the other see this machine at different speeds, so each ratio is the
//! median of [`ROUNDS`] pairs, their order alternating. The first pairs are the table's rows:
//! `full` and `sql` for the data layer, `sql` and `serial raw` (run right after it) for the
//! ceiling. Each later round runs the three once more, shorter, the `sql` run between the
//! other two (`serial raw` first in one round, `full` first in the next), so that each pair is
//! measured side by side; the later rounds together last as long as one more round.

use anyhow::Context;

use crate::loadtest::args::Plan;
use crate::loadtest::progress::Style;
use crate::loadtest::registry::{run_registry, verify_content};
use crate::loadtest::report::{CeilingRound, CompareRow, DataLayerRound, Report};
use crate::loadtest::run::{self, Limit};
use crate::loadtest::setup::{self, db_config};
use crate::loadtest::store::{
    ConnectPerOpStore, Path, R2d2PgStore, R2d2Store, SerialRawStore, Store,
};
use crate::loadtest::verify::{ACKNOWLEDGED_WRITES_PRESENT, NO_UNACKNOWLEDGED_WRITES};
use crate::loadtest::workload::{Faults, Layer, Workload};

/// Rounds of pairs: of registry runs through the data layer and in plain SQL, whose ratios'
/// median is `data_layer_ratio`; and of the registry's plain-SQL run and the serial ceiling's,
/// whose ratios' median is `ratio_vs_serial_raw`.
pub(crate) const ROUNDS: usize = 5;

/// What `--compare` measured: the table's rows and each summary ratio's rounds.
#[derive(Debug)]
pub(crate) struct Compared {
    pub(crate) rows: Vec<CompareRow>,
    pub(crate) data_layer_rounds: Vec<DataLayerRound>,
    /// Empty on PostgreSQL, which has no serial ceiling.
    pub(crate) ceiling_rounds: Vec<CeilingRound>,
}

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

/// The median of the verified rounds' ratios (the upper middle one of an even count); `None`
/// when no round ran without an error and stored what it acknowledged.
fn median_of_verified(rounds: impl Iterator<Item = (f64, bool)>) -> Option<f64> {
    let mut ratios: Vec<f64> = rounds
        .filter(|&(_, verified)| verified)
        .map(|(ratio, _)| ratio)
        .collect();
    ratios.sort_by(f64::total_cmp);
    ratios.get(ratios.len() / 2).copied()
}

/// The registry's ops/s through the data layer over its ops/s on the same mix in plain SQL:
/// the median of the verified rounds.
pub(crate) fn data_layer_ratio(rounds: &[DataLayerRound]) -> Option<f64> {
    median_of_verified(rounds.iter().map(|r| (r.ratio, r.verified)))
}

/// The registry's ops/s over the serial ceiling's, both on the mix in plain SQL: the median
/// of the verified rounds.
pub(crate) fn ratio_vs_serial_raw(rounds: &[CeilingRound]) -> Option<f64> {
    median_of_verified(rounds.iter().map(|r| (r.ratio, r.verified)))
}

/// Both runs without an error, and each stored exactly what it acknowledged.
fn verified(a: &Outcome, b: &Outcome) -> bool {
    [a, b].iter().all(|o| o.errors == 0 && o.content_verified)
}

fn data_layer_round(full_first: bool, full: &Outcome, sql: &Outcome) -> DataLayerRound {
    DataLayerRound {
        full_first,
        full_ops_per_sec: full.ops_per_sec,
        sql_ops_per_sec: sql.ops_per_sec,
        ratio: full.ops_per_sec / sql.ops_per_sec.max(1e-9),
        verified: verified(full, sql),
    }
}

fn ceiling_round(sql_first: bool, sql: &Outcome, serial: &Outcome) -> CeilingRound {
    CeilingRound {
        sql_first,
        registry_ops_per_sec: sql.ops_per_sec,
        serial_ops_per_sec: serial.ops_per_sec,
        ratio: sql.ops_per_sec / serial.ops_per_sec.max(1e-9),
        verified: verified(sql, serial),
    }
}

/// The rounds after the first, each run the way `plan` says in fresh places for a share of
/// its length: the registry through the data layer and in plain SQL, and (with `ceiling`)
/// the serial ceiling, the plain-SQL run always between the other two. The first of them
/// runs the ceiling first, the next the data layer first, and so on.
fn more_rounds(
    plan: &Plan,
    ceiling: bool,
) -> anyhow::Result<(Vec<DataLayerRound>, Vec<CeilingRound>)> {
    let share = (ROUNDS - 1) as u32;
    let plan = Plan {
        limit: match plan.limit {
            Limit::OpsPerWorker(n) => Limit::OpsPerWorker((n / u64::from(share)).max(1)),
            Limit::Time(t) => Limit::Time(t / share),
        },
        ..plan.clone()
    };
    let run = |layer| {
        let plan = Plan {
            layer,
            ..plan.clone()
        };
        anyhow::Ok(Outcome::of(&run_registry(&plan, Faults::default())?))
    };
    let serial = || ceiling.then(|| serial_raw(&plan)).transpose();
    let (mut data_layer, mut ceilings) = (Vec::new(), Vec::new());
    for i in 1..ROUNDS {
        let forward = i % 2 == 0;
        if plan.progress != Style::Quiet {
            eprintln!("compare: round {} of {ROUNDS} of the pairs", i + 1);
        }
        let (full, sql, raw) = if forward {
            let full = run(Layer::Repositories)?;
            let sql = run(Layer::PlainSql)?;
            (full, sql, serial()?)
        } else {
            let raw = serial()?;
            let sql = run(Layer::PlainSql)?;
            (run(Layer::Repositories)?, sql, raw)
        };
        data_layer.push(data_layer_round(forward, &full, &sql));
        if let Some(raw) = raw {
            ceilings.push(ceiling_round(forward, &sql, &raw));
        }
    }
    Ok((data_layer, ceilings))
}

/// The serial ceiling on `plan`'s workload in a fresh place: one worker with a raw connection
/// per database (no pool, no lane), as many operations in all as `plan`'s workers run, or for
/// the same time.
fn serial_raw(plan: &Plan) -> anyhow::Result<Outcome> {
    let tmp = tempfile::Builder::new()
        .prefix("hive-loadtest-")
        .tempdir()?;
    let dbs = setup::create_files(&tmp.path().canonicalize()?, plan)?;
    let limit = match plan.limit {
        Limit::OpsPerWorker(n) => Limit::OpsPerWorker(n.saturating_mul(plan.workers as u64)),
        time @ Limit::Time(_) => time,
    };
    let serial = Plan {
        workers: 1,
        limit,
        ..plan.clone()
    };
    let store = SerialRawStore::new(dbs, &db_config(plan))?;
    baseline(&serial, Path::SerialRaw, &store).context("the serial raw baseline")
}

/// Runs the baselines and the rounds of pairs after `registry`, the run of `plan`: one row
/// per path and workload, the registry's first, and the rounds.
///
/// # Errors
///
/// When a baseline cannot be set up or a worker panics.
pub(crate) fn run(plan: &Plan, registry: &Report) -> anyhow::Result<Compared> {
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
    let mut data_layer_rounds = vec![data_layer_round(true, &full, &reg)];
    if let Some(server) = &sql.server {
        data_layer_rounds.extend(more_rounds(&sql, false)?.0);
        let dbs = server.create(1 + sql.app_dbs)?;
        let outcome = setup::create_postgres(&dbs, &sql).and_then(|()| {
            let store = R2d2PgStore::new(&dbs.urls)?;
            baseline(&sql, Path::R2d2Postgres, &store).context("the r2d2_postgres baseline")
        });
        if let Err(e) = dbs.drop_all() {
            eprintln!("warning: the baseline's databases stay on the server: {e:#}");
        }
        rows.push(row(Path::R2d2Postgres, "sql", &outcome?, reg.ops_per_sec));
        return Ok(Compared {
            rows,
            data_layer_rounds,
            ceiling_rounds: Vec::new(),
        });
    }

    // The ceiling right after the registry's run of the same mix: its first pair.
    let raw = serial_raw(&sql)?;
    let mut ceiling_rounds = vec![ceiling_round(true, &reg, &raw)];
    let (more_data_layer, more_ceiling) = more_rounds(&sql, true)?;
    data_layer_rounds.extend(more_data_layer);
    ceiling_rounds.extend(more_ceiling);

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
    rows.push(row(Path::SerialRaw, "sql", &raw, reg.ops_per_sec));
    Ok(Compared {
        rows,
        data_layer_rounds,
        ceiling_rounds,
    })
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

    fn ceiling(ratio: f64, verified: bool) -> CeilingRound {
        CeilingRound {
            sql_first: true,
            registry_ops_per_sec: ratio,
            serial_ops_per_sec: 1.0,
            ratio,
            verified,
        }
    }

    /// Bug caught: `data_layer_ratio` or `ratio_vs_serial_raw` counting a round whose runs
    /// failed or stored what they did not acknowledge, taking the middle of the unsorted
    /// rounds, or inventing a ratio when no round was verified.
    #[test]
    fn each_ratio_is_the_median_of_its_verified_rounds() {
        let cases = [
            (vec![(1.3, true), (0.7, true), (1.0, true)], Some(1.0)),
            (
                vec![
                    (5.0, false),
                    (0.9, true),
                    (1.1, true),
                    (6.0, false),
                    (1.0, true),
                ],
                Some(1.0),
            ),
            (vec![(1.0, false)], None),
        ];
        for (rounds, median) in cases {
            let data: Vec<_> = rounds.iter().map(|&(r, v)| round(r, v)).collect();
            assert_eq!(data_layer_ratio(&data), median, "{rounds:?}");
            let ceilings: Vec<_> = rounds.iter().map(|&(r, v)| ceiling(r, v)).collect();
            assert_eq!(ratio_vs_serial_raw(&ceilings), median, "{rounds:?}");
        }
    }
}
