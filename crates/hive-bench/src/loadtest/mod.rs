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
use hive_db_core::Registry;

pub(crate) use args::LoadArgs;
use args::Plan;
use mix::Op;
use pool::PoolFigures;
use report::{ORIGINAL_OPS_PER_SEC, Report};
use run::Limit;
use store::{RegistryStore, Store};
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
    eco::verify(store, acks, &mut findings).context("reading ecosystemiser back")?;
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
    checks.extend(verify_content(&store, plan.app_dbs, &ran.acks)?.checks());
    let mut damaged = Vec::new();
    for (db, name) in names.iter().enumerate() {
        let result =
            setup::integrity(&store, db).with_context(|| format!("integrity_check of {name}"))?;
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
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;
    use crate::loadtest::mix::Mix;
    use crate::loadtest::progress::Style;

    /// The short mode: about a second, two workers, every operation of the default mix.
    fn short() -> Plan {
        Plan {
            workers: 2,
            limit: Limit::Time(Duration::from_secs(1)),
            app_dbs: 2,
            seed: 7,
            mix: Mix::default(),
            max_size: 4,
            dir: None,
            listen: None,
            compare: false,
            json: true,
            progress: Style::Quiet,
            whole_process_files: false,
            close_timeout: Duration::from_secs(1),
        }
    }

    fn failed(report: &Report) -> Vec<&'static str> {
        verify::failed(&report.checks)
    }

    /// Bug caught: the README's main job failing end to end in its short mode: a failing
    /// operation, an acknowledged write missing or changed, a write nobody acknowledged, a
    /// damaged file, a pool over its size, a connection or file left open after close; or a
    /// report that leaves an operation of the mix or a database out.
    #[test]
    fn the_short_load_test_passes_every_check() -> anyhow::Result<()> {
        let plan = short();
        let report = execute(&plan, Faults::default())?;
        assert!(
            report.verified,
            "failed: {:?}\n{:#?}",
            failed(&report),
            report.checks
        );
        assert_eq!(report.checks.len(), 7);
        assert_eq!(report.databases.len(), 1 + plan.app_dbs);
        for (op, _) in plan.mix.entries() {
            let o = report.operations.iter().find(|o| o.name == op.name());
            assert!(o.is_some_and(|o| o.count > 0), "{op} never ran");
        }
        let value = serde_json::to_value(&report)?;
        for key in [
            "ops_per_sec",
            "errors",
            "verified",
            "peak_rss_bytes",
            "workers",
            "seconds",
        ] {
            assert!(value.get(key).is_some(), "--json lacks {key}");
        }
        assert_eq!(
            value["checks"][verify::ACKNOWLEDGED_WRITES_PRESENT]["passed"],
            true
        );
        assert!(value["mix"]["original_txn"].is_u64());
        Ok(())
    }

    /// Bug caught: a verifier that trusts acknowledgements instead of reading the rows back,
    /// so an acknowledged write that never reached the file passes.
    #[test]
    fn a_dropped_acknowledged_write_fails_its_check() -> anyhow::Result<()> {
        let faults = Faults {
            drop_acknowledged_write: true,
            ..Faults::default()
        };
        let report = execute(&short(), faults)?;
        assert_eq!(failed(&report), [verify::ACKNOWLEDGED_WRITES_PRESENT]);
        assert!(!report.verified);
        Ok(())
    }

    /// Bug caught: a verifier that does not look at what closing left checked out, so a
    /// leaked connection (and its open file) passes.
    #[test]
    fn a_leaked_connection_fails_its_check() -> anyhow::Result<()> {
        let faults = Faults {
            leak_connection: true,
            ..Faults::default()
        };
        let plan = Plan {
            close_timeout: Duration::from_millis(200),
            ..short()
        };
        let report = execute(&plan, faults)?;
        assert_eq!(
            failed(&report),
            [verify::NO_CONNECTION_LEFT_OUT, verify::OPEN_FILES_RELEASED]
        );
        Ok(())
    }

    /// Bug caught: `--compare` baselines that run another workload than the registry's (a
    /// different seed or mix), fail, or store something other than what they acknowledged.
    #[test]
    fn compare_runs_the_same_operations_on_every_path() -> anyhow::Result<()> {
        let plan = Plan {
            limit: Limit::OpsPerWorker(40),
            compare: true,
            ..short()
        };
        let report = execute(&plan, Faults::default())?;
        assert!(report.verified, "{:?}", failed(&report));
        let paths: Vec<_> = report
            .compare
            .iter()
            .map(|r| (r.path, r.workload))
            .collect();
        assert_eq!(
            paths,
            [
                ("registry", "full"),
                ("connect per op", "full"),
                ("registry", "sql"),
                ("r2d2 defaults", "sql")
            ]
        );
        for row in &report.compare {
            assert_eq!(row.ops, 80, "{}", row.path);
            assert_eq!(row.errors, 0, "{}", row.path);
            assert!(row.content_verified, "{}", row.path);
        }
        Ok(())
    }

    /// Bug caught: two runs with the same seed drawing different operations, so `--compare`
    /// and repeated runs measure different workloads.
    #[test]
    fn the_same_seed_draws_the_same_operations() -> anyhow::Result<()> {
        let plan = Plan {
            limit: Limit::OpsPerWorker(30),
            ..short()
        };
        let counts = |r: &Report| -> Vec<(&'static str, u64)> {
            r.operations.iter().map(|o| (o.name, o.count)).collect()
        };
        let a = execute(&plan, Faults::default())?;
        let b = execute(&plan, Faults::default())?;
        assert_eq!(counts(&a), counts(&b));
        let c = execute(&Plan { seed: 8, ..plan }, Faults::default())?;
        assert_ne!(counts(&a), counts(&c), "another seed, another draw");
        Ok(())
    }

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: LoadArgs,
    }

    /// Bug caught: bad flags accepted (zero workers, a negative time, an unknown operation),
    /// or a mix with task operations but no database to run them on.
    #[test]
    fn bad_flags_are_refused() -> anyhow::Result<()> {
        for bad in [
            &["x", "--workers", "0"][..],
            &["x", "--seconds", "-1"],
            &["x", "--seconds", "nan"],
            &["x", "--mix", "nope=1"],
            &["x", "--ops", "0"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?} accepted");
        }
        let cli = Cli::try_parse_from(["x", "--databases", "0"])?;
        assert!(Plan::from_args(cli.args).is_err());
        let tasks_off: String = Op::ALL
            .iter()
            .filter(|op| op.is_task())
            .map(|op| format!("{op}=0,"))
            .collect();
        let cli = Cli::try_parse_from(["x", "--databases", "0", "--mix", &tasks_off])?;
        assert_eq!(Plan::from_args(cli.args)?.app_dbs, 0);
        Ok(())
    }
}
