//! `cargo xtask loadtest`: an EcoSystemiser-shaped load on several databases of one
//! registry, watched live, then verified.
//!
//! Workers draw operations from a weighted mix (component lookups, event publishes and
//! histories, metric batches, study updates and the original load test's transaction on the
//! `ecosystemiser` database; the orchestrator's task records on the application databases),
//! each worker recording every write it saw acknowledged. Afterwards the verifier compares
//! the stored rows with those records, runs `integrity_check`, and checks what a sampler saw
//! of the pools, what closing left out, and the open files.
//!
//! With `--backend postgres` the same mix runs on databases made for the run on a
//! PostgreSQL server (`--url`, or a private one), with each SQL statement in PostgreSQL's
//! dialect beside SQLite's, and the same seven checks (amcheck for `integrity_check`, the
//! server's sessions next to the open files).

mod args;
mod compare;
mod eco;
mod eco_ops;
mod eco_sql;
mod eco_verify;
mod endpoint;
mod mix;
mod original;
mod pg_rows;
mod pgserver;
mod pool;
mod progress;
mod registry;
mod report;
mod run;
mod sampler;
mod setup;
mod store;
mod tasks;
mod verify;
mod workload;

use std::io::Write;

use anyhow::{Context, bail};

pub(crate) use args::LoadArgs;
use args::Plan;
use registry::run_registry;
use report::Report;
use workload::Faults;

/// Runs the load test `args` describe and prints its report.
///
/// # Errors
///
/// When it cannot run, or when a check fails (the error names the failed checks).
pub(crate) fn main(args: LoadArgs) -> anyhow::Result<()> {
    let plan = Plan::from_args(args)?;
    let report = execute(&plan, Faults::default())?;
    let mut out = std::io::stdout().lock();
    let printed = if plan.json {
        serde_json::to_writer(&mut out, &report)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        report.print(&mut out)
    };
    match printed {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.context("cannot write the report")?,
    }
    let failed = verify::failed(&report.checks);
    if !failed.is_empty() {
        bail!("verification failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Runs the load test of `plan` with `faults` injected, and `--compare`'s paths if asked.
///
/// # Errors
///
/// When the databases cannot be set up or a thread panics; failed checks are in the report.
pub(crate) fn execute(plan: &Plan, faults: Faults) -> anyhow::Result<Report> {
    let mut report = run_registry(plan, faults)?;
    if plan.compare {
        let compared = compare::run(plan, &report)?;
        report.compare = compared.rows;
        report.ratio_vs_serial_raw = compare::ratio_vs_serial_raw(&compared.ceiling_rounds);
        report.ceiling_rounds = compared.ceiling_rounds;
        report.data_layer_ratio = compare::data_layer_ratio(&compared.data_layer_rounds);
        report.data_layer_rounds = compared.data_layer_rounds;
    }
    Ok(report)
}

#[cfg(test)]
mod tests;
