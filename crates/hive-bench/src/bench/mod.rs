//! `cargo xtask bench`: the registry against a raw connection per thread, r2d2 (with and
//! without its check on every checkout), deadpool-sqlite and a connection per operation, and
//! on PostgreSQL against a raw client, r2d2_postgres and deadpool-postgres, all in one process
//! and one run, so the ratios compare like with like.
//!
//! - `flags`: the command line;
//! - `fixtures`: the databases and the statements the scenarios run;
//! - `baselines`: the r2d2 and deadpool pools measured against;
//! - `harness`: rotating rounds, medians, paired ratios, the table's rows;
//! - `scenarios`: what is measured;
//! - `pg`: PostgreSQL point reads against r2d2_postgres and deadpool-postgres, on a private
//!   server;
//! - `report`: the ratios, the targets table and the summary.

pub(crate) mod baselines;
mod fixtures;
mod flags;
mod harness;
mod pg;
mod report;
mod scenarios;

use anyhow::Context;

use fixtures::Setup;
pub(crate) use flags::BenchArgs;
use harness::Bench;

pub(crate) fn main(args: BenchArgs) -> anyhow::Result<()> {
    report::report(&measure_all(args)?)
}

/// Runs every scenario `args` asks for.
fn measure_all(args: BenchArgs) -> anyhow::Result<Bench> {
    let mut bench = Bench::new(args);
    if !bench.args.json {
        let a = &bench.args;
        println!(
            "hive-db bench: each cell the median of {} rounds of {} s (reads) or {} of {} s \
             (writes), {} rows, {} threads, optimised build",
            a.read_rounds, a.read_seconds, a.rounds, a.seconds, a.rows, a.threads
        );
        harness::print_header();
    }
    let setup = Setup::new()?;
    if bench.wants("checkout") {
        scenarios::checkout(&mut bench, &setup).context("checkout")?;
    }
    if bench.wants("point_read") {
        scenarios::point_reads(&mut bench, &setup).context("point_read")?;
    }
    if bench.wants("write_contention") {
        scenarios::write_contention(&mut bench, &setup).context("write_contention")?;
    }
    if bench.wants("mixed") {
        scenarios::mixed(&mut bench, &setup).context("mixed")?;
    }
    if bench.wants("multi_db") {
        scenarios::multi_db(&mut bench, &setup).context("multi_db")?;
    }
    if bench.wants(pg::SCENARIO) {
        pg::point_reads(&mut bench, &setup).context(pg::SCENARIO)?;
    }
    if bench.wants("async") {
        let plan = crate::asynch::Plan {
            rounds: bench.args.rounds.min(3),
            each: std::time::Duration::from_secs_f64(bench.args.seconds),
            rows: bench.args.rows,
        };
        bench.asynch = crate::asynch::bench(plan, bench.args.json).context("async")?;
    }
    if bench.wants("many_dbs") {
        let round = std::time::Duration::from_secs_f64(bench.args.read_seconds / 4.0);
        bench.many_dbs = crate::many_dbs::bench(round, bench.args.json).context("many_dbs")?;
    }
    Ok(bench)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bug caught: a scenario or path of `cargo xtask bench` that fails to set up or errors
    /// while measuring (a wrong statement, a pool that cannot be built, an API change the
    /// bench no longer matches). Tiny rounds: this checks that everything runs, not speed.
    #[test]
    fn every_scenario_and_path_runs() -> anyhow::Result<()> {
        let bench = measure_all(BenchArgs {
            seconds: 0.01,
            rounds: 1,
            read_seconds: 0.005,
            read_rounds: 1,
            rows: 200,
            threads: 4,
            only: Vec::new(),
            paths: Vec::new(),
            verbose: false,
            json: true,
        })?;
        // checkout 4, point_read 8 paths at 1 and 4 threads, write_contention 4, mixed 2,
        // multi_db 2; pg_point_read 5 paths at 1 and 4 threads where PostgreSQL runs.
        let pg = if hive_pg_harness::available()? { 10 } else { 0 };
        assert_eq!(
            bench.rows.len(),
            28 + pg,
            "one row per scenario, path and thread count"
        );
        for row in &bench.rows {
            let m = &row.measured;
            assert!(
                m.ops > 0 && m.errors == 0,
                "{} / {} / {}: {} ops, {} errors, first: {:?}",
                row.scenario,
                row.path,
                row.threads,
                m.ops,
                m.errors,
                m.first_error
            );
        }
        report::report(&bench)
    }
}
