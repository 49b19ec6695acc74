//! One run of the load test through the registry: the databases set up (SQLite files, or
//! databases made for the run on a PostgreSQL server), the workers driven while a sampler
//! watches the pools (and the endpoint serves them, if asked), then every check: the rows
//! against the acknowledged writes, the integrity check, the pools' sizes, what closing left
//! out, and the open files (and on PostgreSQL the server's sessions).

use std::collections::BTreeMap;
use std::path::PathBuf;
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
use crate::loadtest::setup::Site;
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
    // A private server is started before the files are counted: its pipes stay open.
    if let Some(server) = &plan.server {
        server.start()?;
    }
    let files_before = procfs::open_files().context("cannot list /proc/self/fd")?;
    let (_tmp, site) = site(plan)?;
    let outcome = run_on(plan, faults, &site, files_before.len());
    if let Site::Pg(dbs) = &site
        && let Err(e) = dbs.drop_all()
    {
        eprintln!("warning: the run's databases stay on the server: {e:#}");
    }
    outcome
}

/// Runs the load test on the databases of `site`, and checks it.
fn run_on(plan: &Plan, faults: Faults, site: &Site, files_before: usize) -> anyhow::Result<Report> {
    let workload = Workload::new(plan.mix.clone(), plan.app_dbs, plan.layer, faults);
    let registry = Registry::new();
    let (handles, eco) = setup::register_all(&registry, site, plan)?;
    let names: Vec<_> = handles.iter().map(|h| h.name().clone()).collect();
    let endpoint = serve(&registry, plan)?;
    let endpoint_addr = endpoint.as_ref().map(|e| e.addr().to_string());
    let monitor = endpoint.as_ref().map(endpoint::monitor_command);
    if let Some(line) = &monitor {
        eprintln!("watch it live: {line}");
    }
    let leaked: Option<Box<dyn std::any::Any>> = match workload.faults.leak_connection {
        false => None,
        true => Some(match site {
            Site::Dir(_) => Box::new(registry.get(&names[0])?),
            Site::Pg(_) => Box::new(registry.postgres(&names[0])?.get()?),
        }),
    };
    let store = RegistryStore::new(handles, eco);
    let (ran, sampled) = drive_sampled(&registry, &store, &workload, plan)?;
    let databases = pool_figures(&registry, &sampled);

    let mut checks = vec![Check::new(
        verify::NO_ERRORS,
        ran.error_count() == 0,
        format!("{} of {} operations failed", ran.error_count(), ran.ops()),
    )];
    // A server has no page cache of the client's to bypass: the pools read it back.
    if let Site::Pg(_) = site {
        checks.extend(content_checks(&store, plan, &names, &ran.acks)?);
    }
    checks.push(live_within_max(&sampled));

    if let Some(endpoint) = endpoint {
        endpoint.stop();
    }
    drop(store);
    let closed = registry.close_all(plan.close_timeout);
    drop(registry);
    if let Site::Dir(dir) = site {
        // Read back once the pools are closed, through new connections: what the next
        // process sees, so a write lost at close (a WAL left behind) fails the run; with a
        // small page cache that is gone after each read. Listed where the content checks
        // stand in the report, after `no_errors`.
        let reader = ConnectPerOpStore::new(
            setup::layout(dir, plan.app_dbs)?,
            DbConfig {
                cache_size_kib: 2048,
                ..setup::db_config(plan)
            },
        );
        let content = content_checks(&reader, plan, &names, &ran.acks)?;
        checks.splice(1..1, content);
    }
    checks.push(no_connection_left_out(&closed));
    let left_open = match site {
        Site::Dir(dir) => Left::Files(procfs::files_under(
            &procfs::open_files().context("cannot list /proc/self/fd")?,
            dir,
        )),
        Site::Pg(dbs) => Left::Sessions(
            dbs.sessions(plan.close_timeout)
                .context("cannot count the server's sessions")?,
        ),
    };
    let files_after = procfs::open_files().context("cannot list /proc/self/fd")?;
    drop(leaked);
    checks.push(open_files_released(
        plan,
        files_before,
        files_after.len(),
        left_open,
    ));
    Ok(Report {
        databases,
        open_files_before: files_before,
        open_files_after: files_after.len(),
        samples: sampled.samples,
        metrics_endpoint: endpoint_addr,
        monitor_command: monitor,
        ..report_of(plan, &ran, checks)
    })
}

/// Where the run's databases are: the SQLite folder (with the temporary folder that holds
/// it, if it is one), or databases made for the run on the PostgreSQL server.
fn site(plan: &Plan) -> anyhow::Result<(Option<tempfile::TempDir>, Site)> {
    match &plan.server {
        None => data_dir(plan).map(|(tmp, dir)| (tmp, Site::Dir(dir))),
        Some(server) => Ok((None, Site::Pg(server.create(1 + plan.app_dbs)?))),
    }
}

/// What the run left open after closing: database files in the folder, or sessions on the
/// run's PostgreSQL databases.
#[derive(Debug, Clone, Copy)]
enum Left {
    Files(usize),
    Sessions(i64),
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

/// The content checks and the integrity check of the databases `names`, read back through
/// `reader`.
fn content_checks<S: Store>(
    reader: &S,
    plan: &Plan,
    names: &[DbName],
    acks: &[Ack],
) -> anyhow::Result<Vec<Check>> {
    let mut checks = verify_content(reader, plan.app_dbs, acks)?
        .checks()
        .to_vec();
    let mut damaged = Vec::new();
    let mut how = setup::SQLITE_INTEGRITY;
    for (db, name) in names.iter().enumerate() {
        let (result, used) =
            setup::integrity(reader, db).with_context(|| format!("integrity check of {name}"))?;
        if used != setup::AMCHECK || how == setup::SQLITE_INTEGRITY {
            how = used;
        }
        if result != "ok" {
            damaged.push(format!("{name}: {result}"));
        }
    }
    checks.push(Check::new(
        verify::INTEGRITY_CHECK,
        damaged.is_empty(),
        if damaged.is_empty() {
            format!("ok on all {} databases ({how})", names.len())
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

fn open_files_released(plan: &Plan, before: usize, after: usize, left: Left) -> Check {
    let same_count = !plan.whole_process_files || after == before;
    let (none_left, what) = match left {
        Left::Files(n) => (n == 0, format!("{n} of them database files")),
        Left::Sessions(n) => (
            n == 0,
            format!("{n} sessions left on the run's PostgreSQL databases"),
        ),
    };
    Check::new(
        verify::OPEN_FILES_RELEASED,
        none_left && same_count,
        format!(
            "{before} open before, {after} after, {what}{}",
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
        backend: plan.backend(),
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
        ratio_vs_serial_raw: None,
        ceiling_rounds: Vec::new(),
        data_layer_ratio: None,
        data_layer_rounds: Vec::new(),
    }
}
