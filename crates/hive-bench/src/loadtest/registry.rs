//! One run of the load test through the registry: the databases set up, the workers driven
//! while a sampler watches the pools (and the endpoint serves them, if asked), then every
//! check: the rows against the acknowledged writes, `integrity_check`, the pools' sizes,
//! what closing left out, and the open files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use anyhow::Context;
use hive_db_core::endpoint::Endpoint;
use hive_db_core::{CloseReport, DbConfig, DbName, Registry};

use crate::loadtest::args::Plan;
use crate::loadtest::mix::Op;
use crate::loadtest::pool::PoolFigures;
use crate::loadtest::report::{self, ORIGINAL_OPS_PER_SEC, Report};
use crate::loadtest::run::{self, Limit, Ran};
use crate::loadtest::sampler::{self, Sampled};
use crate::loadtest::store::{ConnectPerOpStore, RegistryStore, Store};
use crate::loadtest::verify::{self, Check, Findings};
use crate::loadtest::workload::{Ack, Faults, Workload};
use crate::loadtest::{eco_verify, endpoint, original, setup, tasks};
use crate::procfs;

/// Runs the load test of `plan` through the registry with `faults` injected, and checks it.
///
/// # Errors
///
/// When the databases cannot be set up or a thread panics; failed checks are in the report.
pub(crate) fn run_registry(plan: &Plan, faults: Faults) -> anyhow::Result<Report> {
    let files_before = procfs::open_files().context("cannot list /proc/self/fd")?;
    let (_tmp, dir) = data_dir(plan)?;
    let workload = Workload::new(plan.mix.clone(), plan.app_dbs, faults);
    let registry = Registry::new();
    let (handles, eco) = setup::register_all(&registry, &dir, plan)?;
    let names: Vec<_> = handles.iter().map(|h| h.name().clone()).collect();
    let endpoint = serve(&registry, plan)?;
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
    let (ran, sampled) = drive_sampled(&registry, &store, &workload, plan)?;
    let databases = pool_figures(&registry, &sampled);

    let mut checks = vec![Check::new(
        verify::NO_ERRORS,
        ran.error_count() == 0,
        format!("{} of {} operations failed", ran.error_count(), ran.ops()),
    )];
    checks.extend(content_checks(&dir, plan, &names, &ran.acks)?);
    checks.push(live_within_max(&sampled));

    if let Some(endpoint) = endpoint {
        endpoint.stop();
    }
    drop(store);
    let closed = registry.close_all(plan.close_timeout);
    drop(registry);
    checks.push(no_connection_left_out(&closed));
    let files_after = procfs::open_files().context("cannot list /proc/self/fd")?;
    drop(leaked);
    let in_dir = procfs::files_under(&files_after, &dir);
    checks.push(open_files_released(
        plan,
        files_before.len(),
        files_after.len(),
        in_dir,
    ));
    Ok(Report {
        databases,
        open_files_before: files_before.len(),
        open_files_after: files_after.len(),
        samples: sampled.samples,
        metrics_endpoint: endpoint_addr,
        monitor_command: monitor,
        ..report_of(plan, &ran, checks)
    })
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

/// The metrics endpoint on `--listen`, if given.
fn serve(registry: &Registry, plan: &Plan) -> anyhow::Result<Option<Endpoint>> {
    plan.listen
        .map(|addr| {
            endpoint::serve(registry, addr)
                .with_context(|| format!("cannot serve the metrics endpoint on {addr}"))
        })
        .transpose()
}

/// Drives the workers on `store` while the pool sampler watches `registry`.
fn drive_sampled<S: Store>(
    registry: &Registry,
    store: &S,
    workload: &Workload,
    plan: &Plan,
) -> anyhow::Result<(Ran, Sampled)> {
    let stop = AtomicBool::new(false);
    let (ran, sampled) = std::thread::scope(|s| {
        let sampler = s.spawn(|| sampler::run(registry, &stop));
        let ran = run::drive(
            store,
            workload,
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
    Ok((ran, sampled))
}

/// Each database's figures: the last snapshot before close and the sampled peaks.
fn pool_figures(registry: &Registry, sampled: &Sampled) -> Vec<PoolFigures> {
    registry
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
        .collect()
}

/// Compares every database's rows with `acks`.
///
/// # Errors
///
/// When a table cannot be read.
pub(crate) fn verify_content<S: Store>(
    store: &S,
    app_dbs: usize,
    acks: &[Ack],
) -> anyhow::Result<Findings> {
    let mut findings = Findings::default();
    original::verify(store, acks, &mut findings).context("reading load_test back")?;
    eco_verify::verify(store, acks, &mut findings).context("reading ecosystemiser back")?;
    tasks::verify(store, app_dbs, acks, &mut findings).context("reading the tasks back")?;
    Ok(findings)
}

/// The content checks and `integrity_check` of the databases `names` in `dir`.
fn content_checks(
    dir: &Path,
    plan: &Plan,
    names: &[DbName],
    acks: &[Ack],
) -> anyhow::Result<Vec<Check>> {
    // Read back through new connections: what any new reader sees, with a small page cache
    // that is gone after each read.
    let reader = ConnectPerOpStore::new(
        setup::layout(dir, plan.app_dbs)?,
        DbConfig {
            cache_size_kib: 2048,
            ..setup::db_config(plan)
        },
    );
    let mut checks = verify_content(&reader, plan.app_dbs, acks)?
        .checks()
        .to_vec();
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
    Ok(checks)
}

fn live_within_max(sampled: &Sampled) -> Check {
    Check::new(
        verify::LIVE_WITHIN_MAX,
        sampled.over_max.is_empty() && sampled.samples > 0,
        match sampled.over_max.first() {
            None => format!("live <= max_size in all {} samples", sampled.samples),
            Some((db, live, max)) => format!("{db} had {live} connections open, max_size {max}"),
        },
    )
}

fn no_connection_left_out(closed: &[CloseReport]) -> Check {
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
    Check::new(
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
    )
}

fn open_files_released(plan: &Plan, before: usize, after: usize, in_dir: usize) -> Check {
    let same_count = !plan.whole_process_files || after == before;
    Check::new(
        verify::OPEN_FILES_RELEASED,
        in_dir == 0 && same_count,
        format!(
            "{before} open before, {after} after, {in_dir} of them database files{}",
            if plan.whole_process_files {
                ""
            } else {
                " (whole-process count not compared)"
            }
        ),
    )
}

/// The report of what `ran` did, with `checks`; the caller fills in the figures of the
/// pools, the open files and the endpoint, which are left empty here.
fn report_of(plan: &Plan, ran: &Ran, checks: Vec<Check>) -> Report {
    let secs = ran.elapsed.as_secs_f64().max(1e-9);
    let ops_per_sec = ran.ops() as f64 / secs;
    Report {
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
        operations: report::operations(ran, &plan.mix),
        databases: Vec::new(),
        peak_rss_bytes: procfs::peak_rss_bytes(),
        open_files_before: 0,
        open_files_after: 0,
        samples: 0,
        metrics_endpoint: None,
        monitor_command: None,
        compare: Vec::new(),
    }
}
