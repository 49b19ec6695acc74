//! Tests of the load test in its short mode (about a second, two workers), with faults
//! injected to show the verifier names the check they break.

use std::time::Duration;

use clap::Parser;

use super::*;
use crate::loadtest::mix::{Mix, Op};
use crate::loadtest::pgserver::Server;
use crate::loadtest::progress::Style;
use crate::loadtest::run::Limit;
use crate::loadtest::store::Backend;
use crate::loadtest::verify;
use crate::loadtest::workload::Layer;

/// The short mode: about a second, two workers, every operation of the default mix.
fn short() -> Plan {
    Plan {
        workers: 2,
        limit: Limit::Time(Duration::from_secs(1)),
        app_dbs: 2,
        seed: 7,
        mix: Mix::default(),
        layer: Layer::Repositories,
        max_size: 4,
        dir: None,
        server: None,
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
        // Null without `--compare`, but always there for scripts to read.
        "ratio_vs_serial_raw",
        "data_layer_ratio",
    ] {
        assert!(value.get(key).is_some(), "--json lacks {key}");
    }
    assert_eq!(
        value["checks"][verify::ACKNOWLEDGED_WRITES_PRESENT]["passed"],
        true
    );
    assert!(value["mix"]["original_txn"].is_u64());
    assert_eq!(value["backend"], "sqlite");
    Ok(())
}

/// The short mode on the private PostgreSQL server.
fn short_pg() -> Plan {
    Plan {
        server: Some(Server::Private),
        ..short()
    }
}

/// Bug caught: the load test on PostgreSQL failing end to end: an operation whose SQL is
/// SQLite's (or claims a task twice under READ COMMITTED), a write acknowledged but not
/// stored, a check missing or left SQLite-only (the report short of seven), sessions left
/// on the server after close, a report without its backend or the pool figures.
#[test]
fn the_short_postgres_load_test_passes_every_check() -> anyhow::Result<()> {
    hive_pg_harness::require_postgres!();
    let plan = short_pg();
    let report = execute(&plan, Faults::default())?;
    assert!(
        report.verified,
        "failed: {:?}\n{:#?}\n{:#?}",
        failed(&report),
        report.checks,
        report.errors_by_kind
    );
    assert_eq!(report.backend, Backend::Postgres);
    assert_eq!(report.checks.len(), 7);
    assert_eq!(report.databases.len(), 1 + plan.app_dbs);
    for (op, _) in plan.mix.entries() {
        let o = report.operations.iter().find(|o| o.name == op.name());
        assert!(o.is_some_and(|o| o.count > 0), "{op} never ran");
    }
    let integrity = report
        .checks
        .iter()
        .find(|c| c.name == verify::INTEGRITY_CHECK);
    assert!(
        integrity.is_some_and(|c| c.detail.contains("amcheck")),
        "{integrity:?}"
    );
    assert!(report.databases.iter().all(|d| d.commits > 0));
    let value = serde_json::to_value(&report)?;
    assert_eq!(value["backend"], "postgres");
    assert!(value["databases"][0]["write_retries"].is_u64());
    Ok(())
}

/// Bug caught: a PostgreSQL verifier that trusts acknowledgements, or reads another
/// database than the one written (every row then looks absent and unacknowledged at once),
/// so a lost acknowledged write passes or the wrong check fails; or a report for people
/// that does not show the failure (or the PostgreSQL pool table).
#[test]
fn a_dropped_acknowledged_write_fails_its_check_on_postgres() -> anyhow::Result<()> {
    hive_pg_harness::require_postgres!();
    let faults = Faults {
        drop_acknowledged_write: true,
        ..Faults::default()
    };
    let report = execute(&short_pg(), faults)?;
    assert_eq!(failed(&report), [verify::ACKNOWLEDGED_WRITES_PRESENT]);
    assert!(!report.verified);
    let mut text = Vec::new();
    report.print(&mut text)?;
    let text = String::from_utf8(text)?;
    assert!(
        text.contains("FAILED acknowledged_writes_present")
            && text.contains("NOT verified: 1 of 7 checks failed")
            && text.contains("retries"),
        "{text}"
    );
    Ok(())
}

/// Bug caught: closing on PostgreSQL that does not see a client still borrowed, or a
/// sessions count that never looks at the server, so a leaked connection passes.
#[test]
fn a_leaked_postgres_connection_fails_its_checks() -> anyhow::Result<()> {
    hive_pg_harness::require_postgres!();
    let faults = Faults {
        leak_connection: true,
        ..Faults::default()
    };
    let plan = Plan {
        close_timeout: Duration::from_millis(200),
        ..short_pg()
    };
    let report = execute(&plan, faults)?;
    assert_eq!(
        failed(&report),
        [verify::NO_CONNECTION_LEFT_OUT, verify::OPEN_FILES_RELEASED]
    );
    Ok(())
}

/// Bug caught: `--compare` on PostgreSQL running another workload on r2d2_postgres than on
/// the registry, failing there, or storing what it did not acknowledge.
#[test]
fn compare_on_postgres_runs_r2d2_postgres() -> anyhow::Result<()> {
    hive_pg_harness::require_postgres!();
    let plan = Plan {
        limit: Limit::OpsPerWorker(40),
        compare: true,
        ..short_pg()
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
            ("registry", "sql"),
            ("r2d2_postgres", "sql")
        ]
    );
    for row in &report.compare {
        assert_eq!(row.ops, 80, "{}", row.path);
        assert_eq!(row.errors, 0, "{}", row.path);
        assert!(row.content_verified, "{}", row.path);
    }
    // A server has no serial ceiling; the data layer's pairs run as on SQLite.
    assert!(report.ceiling_rounds.is_empty());
    assert_eq!(report.ratio_vs_serial_raw, None);
    assert_eq!(report.data_layer_rounds.len(), 5);
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
            ("registry", "sql"),
            ("connect per op", "sql"),
            ("r2d2 defaults", "sql"),
            ("serial raw", "sql")
        ]
    );
    for row in &report.compare {
        assert_eq!(row.ops, 80, "{}", row.path);
        assert_eq!(row.errors, 0, "{}", row.path);
        assert!(row.content_verified, "{}", row.path);
    }
    // The two summary ratios are the medians of their rounds, whose first pairs are the
    // table's rows and whose order alternates.
    let rate = |i: usize| report.compare[i].ops_per_sec;
    let median = |mut ratios: Vec<f64>| {
        ratios.sort_by(f64::total_cmp);
        ratios[2]
    };
    let rounds = &report.data_layer_rounds;
    assert_eq!(rounds[0].ratio, rate(0) / rate(1));
    let order: Vec<_> = rounds.iter().map(|r| r.full_first).collect();
    assert_eq!(order, [true, false, true, false, true]);
    assert!(rounds.iter().all(|r| r.verified), "{rounds:?}");
    let ratios = rounds.iter().map(|r| r.ratio).collect();
    assert_eq!(report.data_layer_ratio, Some(median(ratios)));
    let ceiling = &report.ceiling_rounds;
    assert_eq!(ceiling[0].ratio, rate(1) / rate(4));
    let order: Vec<_> = ceiling.iter().map(|r| r.sql_first).collect();
    assert_eq!(order, [true, false, true, false, true]);
    assert!(ceiling.iter().all(|r| r.verified), "{ceiling:?}");
    // Each later round's plain-SQL run is the one both of its pairs share.
    for (d, c) in rounds.iter().zip(ceiling).skip(1) {
        assert_eq!(d.sql_ops_per_sec, c.registry_ops_per_sec);
    }
    let ratios = ceiling.iter().map(|r| r.ratio).collect();
    assert_eq!(report.ratio_vs_serial_raw, Some(median(ratios)));
    Ok(())
}

/// Bug caught: `--compare` with `--dir` running its other registry runs in the folder that
/// holds the first run's rows, where setting up the `ecosystemiser` database again fails
/// (its component specs exist already) and the report is lost.
#[test]
fn compare_with_a_data_folder_runs_the_others_elsewhere() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let plan = Plan {
        limit: Limit::OpsPerWorker(20),
        dir: Some(tmp.path().join("data")),
        compare: true,
        ..short()
    };
    let report = execute(&plan, Faults::default())?;
    assert!(report.verified, "{:?}", failed(&report));
    assert!(
        report
            .compare
            .iter()
            .all(|r| r.content_verified && r.errors == 0)
    );
    assert_eq!(report.data_layer_rounds.len(), 5);
    assert_eq!(report.ceiling_rounds.len(), 5);
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
    assert!(Cli::try_parse_from(["x", "--backend", "mysql"]).is_err());
    let cli = Cli::try_parse_from(["x", "--url", "postgres://h/db"])?;
    assert!(
        Plan::from_args(cli.args).is_err(),
        "--url without --backend postgres"
    );
    let cli = Cli::try_parse_from(["x", "--backend", "postgres", "--dir", "/nonexistent/x"])?;
    assert!(Plan::from_args(cli.args).is_err(), "--dir on PostgreSQL");
    let cli = Cli::try_parse_from(["x", "--backend", "postgres", "--url", "postgres://h/d"])?;
    let plan = Plan::from_args(cli.args)?;
    assert_eq!(plan.backend(), Backend::Postgres);
    assert!(matches!(plan.server, Some(Server::Given(ref u)) if u == "postgres://h/d"));
    let tasks_off: String = Op::ALL
        .iter()
        .filter(|op| op.is_task())
        .map(|op| format!("{op}=0,"))
        .collect();
    let cli = Cli::try_parse_from(["x", "--databases", "0", "--mix", &tasks_off])?;
    assert_eq!(Plan::from_args(cli.args)?.app_dbs, 0);
    Ok(())
}

/// One worker's run of the default mix on new files in `dir`, in `layer`: through the
/// registry (the data layer needs it), or in plain SQL on raw connections, which refuse the
/// data layer, so an operation that still used it fails.
fn one_worker_run(dir: &std::path::Path, layer: Layer) -> anyhow::Result<(run::Ran, bool)> {
    let plan = Plan {
        workers: 1,
        limit: Limit::OpsPerWorker(400),
        layer,
        ..short()
    };
    let workload =
        workload::Workload::new(plan.mix.clone(), plan.app_dbs, layer, Faults::default());
    fn drive<S: store::Store>(
        store: &S,
        plan: &Plan,
        workload: &workload::Workload,
    ) -> anyhow::Result<(run::Ran, bool)> {
        let ran = run::drive(store, workload, 1, plan.limit, plan.seed, Style::Quiet)?;
        let findings = registry::verify_content(store, plan.app_dbs, &ran.acks)?;
        Ok((ran, findings.checks().iter().all(|c| c.passed)))
    }
    match layer {
        Layer::Repositories => {
            let registry = hive_db_core::Registry::new();
            let site = setup::Site::Dir(dir.to_path_buf());
            let (handles, eco) = setup::register_all(&registry, &site, &plan)?;
            drive(&store::RegistryStore::new(handles, eco), &plan, &workload)
        }
        Layer::PlainSql => {
            let dbs = setup::create_files(dir, &plan)?;
            let store = store::SerialRawStore::new(dbs, &setup::db_config(&plan))?;
            drive(&store, &plan, &workload)
        }
    }
}

/// Bug caught: `--compare`'s plain-SQL run measuring another workload than the data
/// layer's: a plain-SQL operation that draws from the worker's stream differently (so the
/// two runs pick other operations), writes other rows, records other acknowledgements, or
/// still goes through the data layer; or the old reduced mix that left the data layer's
/// operations out of the `sql` run.
#[test]
fn plain_sql_runs_the_data_layers_operations_with_the_same_draws_and_writes() -> anyhow::Result<()>
{
    let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (layer, layer_stored) = one_worker_run(a.path(), Layer::Repositories)?;
    let (sql, sql_stored) = one_worker_run(b.path(), Layer::PlainSql)?;
    for (ran, stored, what) in [
        (&layer, layer_stored, "repositories"),
        (&sql, sql_stored, "sql"),
    ] {
        assert_eq!(ran.error_count(), 0, "{what}: {:?}", ran.errors);
        assert!(
            stored,
            "{what}: the stored rows differ from the acknowledged writes"
        );
    }
    let counts = |r: &run::Ran| r.latencies.iter().map(Vec::len).collect::<Vec<_>>();
    assert_eq!(counts(&layer), counts(&sql), "the same operations drawn");
    for op in Op::ALL {
        assert!(counts(&sql)[op.index()] > 0, "{op} never ran in plain SQL");
    }
    assert_eq!(
        layer.acks, sql.acks,
        "the same writes acknowledged, in order"
    );
    Ok(())
}
