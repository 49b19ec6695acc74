//! `cargo xtask loadtest`: an EcoSystemiser-shaped load on several databases of one
//! registry, watched live, then verified.
//!
//! Workers draw operations from a weighted mix (component lookups, event publishes and
//! histories, metric batches, study updates and the original load test's transaction on the
//! `ecosystemiser` database; the orchestrator's task records on the application databases),
//! each worker recording every write it saw acknowledged. Afterwards the verifier compares
//! the stored rows with those records, runs `integrity_check`, and checks what a sampler saw
//! of the pools, what closing left out, and the open files.

mod args;
mod compare;
mod eco;
mod eco_verify;
mod endpoint;
mod mix;
mod original;
mod pool;
mod progress;
mod report;
mod run;
mod sampler;
mod setup;
mod store;
mod tasks;
mod verify;
mod workload;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use anyhow::{Context, bail};
use hive_db_core::{DbConfig, Registry};

pub(crate) use args::LoadArgs;
use args::Plan;
use mix::Op;
use pool::PoolFigures;
use report::{ORIGINAL_OPS_PER_SEC, Report};
use run::Limit;
use store::{ConnectPerOpStore, RegistryStore, Store};
use verify::{Check, Findings};
use workload::{Ack, Faults, Workload};

use crate::procfs;

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
        report.compare = compare::run(plan, &report)?;
    }
    Ok(report)
}

/// The folder for the database files: `--dir`, created if needed, or a temporary one.
fn data_dir(plan: &Plan) -> anyhow::Result<(Option<tempfile::TempDir>, PathBuf)> {
    match &plan.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            Ok((None, dir.canonicalize()?))
        }
        None => {
            let tmp = tempfile::Builder::new()
                .prefix("hive-loadtest-")
                .tempdir()?;
            let dir = tmp.path().canonicalize()?;
            Ok((Some(tmp), dir))
        }
    }
}

/// Compares every database's rows with `acks`.
fn verify_content<S: Store>(store: &S, app_dbs: usize, acks: &[Ack]) -> anyhow::Result<Findings> {
    let mut findings = Findings::default();
    original::verify(store, acks, &mut findings).context("reading load_test back")?;
    eco_verify::verify(store, acks, &mut findings).context("reading ecosystemiser back")?;
    tasks::verify(store, app_dbs, acks, &mut findings).context("reading the tasks back")?;
    Ok(findings)
}

fn run_registry(plan: &Plan, faults: Faults) -> anyhow::Result<Report> {
    let files_before = procfs::open_files().context("cannot list /proc/self/fd")?;
    let (_tmp, dir) = data_dir(plan)?;
    let workload = Workload::new(plan.mix.clone(), plan.app_dbs, faults);
    let registry = Registry::new();
    let (handles, eco) = setup::register_all(&registry, &dir, plan)?;
    let names: Vec<_> = handles.iter().map(|h| h.name().clone()).collect();
    let endpoint = match plan.listen {
        Some(addr) => Some(
            endpoint::serve(&registry, addr)
                .with_context(|| format!("cannot serve the metrics endpoint on {addr}"))?,
        ),
        None => None,
    };
    let endpoint_addr = endpoint.as_ref().map(|e| e.addr().to_string());
    let monitor = endpoint.as_ref().map(endpoint::monitor_command);
    if let Some(line) = &monitor {
        eprintln!("watch it live: {line}");
    }
    let leaked = match workload.faults.leak_connection {
        true => Some(registry.get(&names[0])?),
        false => None,
    };
    let store = RegistryStore::new(handles, eco);
    let stop = AtomicBool::new(false);
    let (ran, sampled) = std::thread::scope(|s| {
        let sampler = s.spawn(|| sampler::run(&registry, &stop));
        let ran = run::drive(
            &store,
            &workload,
            plan.workers,
            plan.limit,
            plan.seed,
            plan.progress,
        );
        stop.store(true, Relaxed);
        sampler.thread().unpark();
        (ran, sampler.join())
    });
    let ran = ran?;
    let sampled = sampled.map_err(|_| anyhow::anyhow!("the pool sampler panicked"))?;
    let databases: Vec<PoolFigures> = registry
        .stats()
        .databases
        .iter()
        .map(|s| {
            PoolFigures::new(
                s,
                &sampled
                    .peaks
                    .get(s.name.as_str())
                    .copied()
                    .unwrap_or_default(),
            )
        })
        .collect();

    let mut checks = vec![Check::new(
        verify::NO_ERRORS,
        ran.error_count() == 0,
        format!("{} of {} operations failed", ran.error_count(), ran.ops()),
    )];
    // Read back through new connections: what any new reader sees, with a small page cache
    // that is gone after each read.
    let reader = ConnectPerOpStore::new(
        setup::layout(&dir, plan.app_dbs)?,
        DbConfig {
            cache_size_kib: 2048,
            ..setup::db_config(plan)
        },
    );
    checks.extend(verify_content(&reader, plan.app_dbs, &ran.acks)?.checks());
    let mut damaged = Vec::new();
    for (db, name) in names.iter().enumerate() {
        let result =
            setup::integrity(&reader, db).with_context(|| format!("integrity_check of {name}"))?;
        if result != "ok" {
            damaged.push(format!("{name}: {result}"));
        }
    }
    checks.push(Check::new(
        verify::INTEGRITY_CHECK,
        damaged.is_empty(),
        if damaged.is_empty() {
            format!("ok on all {} databases", names.len())
        } else {
            damaged.join("; ")
        },
    ));
    checks.push(Check::new(
        verify::LIVE_WITHIN_MAX,
        sampled.over_max.is_empty() && sampled.samples > 0,
        match sampled.over_max.first() {
            None => format!("live <= max_size in all {} samples", sampled.samples),
            Some((db, live, max)) => format!("{db} had {live} connections open, max_size {max}"),
        },
    ));

    if let Some(endpoint) = endpoint {
        endpoint.stop();
    }
    drop(store);
    let closed = registry.close_all(plan.close_timeout);
    drop(registry);
    let still_out: Vec<String> = closed
        .iter()
        .flat_map(|r| {
            r.still_out.iter().map(move |o| {
                format!(
                    "{} (checked out at {}, held {:?})",
                    r.db, o.checked_out_at, o.held
                )
            })
        })
        .collect();
    checks.push(Check::new(
        verify::NO_CONNECTION_LEFT_OUT,
        still_out.is_empty(),
        if still_out.is_empty() {
            format!(
                "all {} databases closed with every connection back",
                closed.len()
            )
        } else {
            format!(
                "{} still checked out: {}",
                still_out.len(),
                still_out.join("; ")
            )
        },
    ));
    let files_after = procfs::open_files().context("cannot list /proc/self/fd")?;
    drop(leaked);
    let in_dir = procfs::files_under(&files_after, &dir);
    let same_count = !plan.whole_process_files || files_after.len() == files_before.len();
    checks.push(Check::new(
        verify::OPEN_FILES_RELEASED,
        in_dir == 0 && same_count,
        format!(
            "{} open before, {} after, {in_dir} of them database files{}",
            files_before.len(),
            files_after.len(),
            if plan.whole_process_files {
                ""
            } else {
                " (whole-process count not compared)"
            }
        ),
    ));

    let secs = ran.elapsed.as_secs_f64().max(1e-9);
    let ops_per_sec = ran.ops() as f64 / secs;
    Ok(Report {
        verified: checks.iter().all(|c| c.passed),
        checks,
        workers: plan.workers,
        seconds: secs,
        ops_per_worker: match plan.limit {
            Limit::OpsPerWorker(n) => Some(n),
            Limit::Time(_) => None,
        },
        seed: plan.seed,
        mix: Op::ALL
            .into_iter()
            .map(|op| (op.name(), plan.mix.weight(op)))
            .collect::<BTreeMap<_, _>>(),
        ops: ran.ops(),
        ops_per_sec,
        errors: ran.error_count(),
        errors_by_kind: ran.errors.clone(),
        original_ops_per_sec: ORIGINAL_OPS_PER_SEC,
        ratio_to_original: ops_per_sec / ORIGINAL_OPS_PER_SEC,
        operations: report::operations(&ran, &plan.mix),
        databases,
        peak_rss_bytes: procfs::peak_rss_bytes(),
        open_files_before: files_before.len(),
        open_files_after: files_after.len(),
        samples: sampled.samples,
        metrics_endpoint: endpoint_addr,
        monitor_command: monitor,
        compare: Vec::new(),
    })
}

#[cfg(test)]
mod tests;
