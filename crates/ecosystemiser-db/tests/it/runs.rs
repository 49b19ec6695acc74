//! The run repositories: each write one transaction, counters moved together.

use ecosystemiser_db::{
    Error, Individual, Metric, NewAnalysisRun, NewOptimizationRun, NewSimulation, NewStudy,
    Objective, RunStatus, Runs, StatusUpdate,
};
use serde_json::json;

use crate::common::{contract_test, count_of, open};

/// A genetic-algorithm optimization run `id` minimising cost, with nothing else given.
fn ga_run(id: &str) -> NewOptimizationRun {
    NewOptimizationRun {
        optimization_id: id.into(),
        algorithm_type: "ga".into(),
        objective_function: "cost".into(),
        configuration: None,
        metadata: None,
    }
}

contract_test! {
/// Bug caught: a study's counter moved without its simulation's status (or the other way
/// round), a study that never completes, metrics written for an unknown simulation, a
/// simulation finished twice (a retry) counted twice and the study completed early, or one
/// whose status was set to finished first never counted.
fn a_study_runs_to_completion(kind: Kind) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, _registry) = open(kind, dir.path(), "eco.db")?;
    let runs = Runs::new(&db);
    runs.create_study(&NewStudy {
        study_id: "st".into(),
        study_type: "parametric".into(),
        total_simulations: 2,
        configuration: Some(json!({"grid": [1, 2]})),
        metadata: None,
    })?;
    for i in 0..2 {
        runs.add_study_simulation(
            "st",
            &NewSimulation::new(format!("s{i}"), "a.yml", "milp"),
            Some(&json!({"p": i})),
            i,
        )?;
    }
    assert_eq!(
        runs.study("st")?.map(|s| s.status),
        Some("running".to_owned())
    );
    let mut done = StatusUpdate::to(RunStatus::Completed);
    done.duration_seconds = Some(1.5);
    let p = runs.finish_study_simulation(
        "st",
        "s0",
        &done,
        &[Metric::new("cost", 3.0, Some("EUR"))],
    )?;
    assert_eq!((p.completed_simulations, p.status.as_str()), (1, "running"));
    // A retry of the same finish: counted once, the study still waits for s1.
    let p = runs.finish_study_simulation("st", "s0", &done, &[])?;
    assert_eq!((p.completed_simulations, p.status.as_str()), (1, "running"));
    // s1 marked finished on its own first, then finished in the study: counted.
    runs.update_simulation_status("s1", &done)?;
    let p = runs.finish_study_simulation("st", "s1", &done, &[])?;
    assert_eq!(
        (
            p.completed_simulations,
            p.status.as_str(),
            p.linked_simulations
        ),
        (2, "completed", 2)
    );
    let s0 = runs
        .simulation("s0")?
        .ok_or_else(|| anyhow::anyhow!("no s0"))?;
    assert_eq!(
        (s0.status.as_str(), s0.duration_seconds),
        ("completed", Some(1.5))
    );
    assert!(s0.completed_at.is_some());
    assert_eq!(runs.metrics("s0")?, [Metric::new("cost", 3.0, Some("EUR"))]);

    // Not linked: nothing moves.
    runs.create_simulation(&NewSimulation::new("loose", "a.yml", "milp"))?;
    let err =
        runs.finish_study_simulation("st", "loose", &done, &[Metric::new("x", 1.0, None)]);
    assert!(
        matches!(
            err,
            Err(Error::NotFound {
                what: "study simulation",
                ..
            })
        ),
        "{err:?}"
    );
    assert!(runs.metrics("loose")?.is_empty());
    assert_eq!(runs.study("st")?.map(|s| s.completed_simulations), Some(2));
    let running =
        runs.finish_study_simulation("st", "s0", &StatusUpdate::to(RunStatus::Running), &[]);
    assert!(matches!(running, Err(Error::InvalidInput { .. })));
    assert!(matches!(
        runs.record_metrics("ghost", &[]),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        runs.update_simulation_status("ghost", &done),
        Err(Error::NotFound { .. })
    ));
    Ok(())
}
}

contract_test! {
/// Bug caught: best fitness taken the wrong way round, generations miscounted, a generation
/// recorded for an unknown run.
fn optimization_and_analysis_runs(kind: Kind) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, _registry) = open(kind, dir.path(), "eco.db")?;
    let runs = Runs::new(&db);
    runs.create_optimization_run(&ga_run("o"))?;
    let ind = |id: &str, fitness| Individual {
        individual_id: id.into(),
        fitness,
        parameters: json!({"x": fitness}),
    };
    runs.record_generation("o", 0, Objective::Minimize, &[ind("a", 3.0), ind("b", 2.0)])?;
    runs.record_generation("o", 1, Objective::Minimize, &[ind("c", 2.5)])?;
    let p = runs
        .optimization("o")?
        .ok_or_else(|| anyhow::anyhow!("no run"))?;
    assert_eq!(
        (p.generations_completed, p.best_fitness, p.iterations),
        (2, Some(2.0), 3)
    );
    assert_eq!(p.status, "running");
    runs.update_optimization_status("o", &StatusUpdate::to(RunStatus::Completed))?;
    assert_eq!(
        runs.optimization("o")?.map(|p| p.status),
        Some("completed".into())
    );
    assert!(matches!(
        runs.record_generation("x", 0, Objective::Maximize, &[ind("a", 1.0)]),
        Err(Error::NotFound { .. })
    ));

    runs.create_analysis_run(&NewAnalysisRun {
        analysis_id: "an".into(),
        source_type: "study".into(),
        source_id: "st".into(),
        strategies: Some(json!(["economic"])),
        metadata: None,
    })?;
    assert_eq!(
        runs.record_analysis_results(
            "an",
            "economic",
            &[("kpi".into(), json!({"lcoe": 0.1}))]
        )?,
        1
    );
    runs.update_analysis_status("an", &StatusUpdate::to(RunStatus::Failed))?;
    assert!(matches!(
        runs.record_analysis_results("none", "e", &[]),
        Err(Error::NotFound { .. })
    ));
    Ok(())
}
}

contract_test! {
/// Bug caught: a caller's failure reason dropped: `StatusUpdate::error_message` accepted for
/// optimization runs and studies but not stored (their tables had no such column), or a
/// later update without one erasing it.
fn every_kind_of_run_keeps_its_error_message(kind: Kind) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, _registry) = open(kind, dir.path(), "eco.db")?;
    let runs = Runs::new(&db);
    let failed = |why: &str| {
        let mut u = StatusUpdate::to(RunStatus::Failed);
        u.error_message = Some(why.to_owned());
        u
    };
    runs.create_simulation(&NewSimulation::new("s", "a.yml", "milp"))?;
    runs.update_simulation_status("s", &failed("solver diverged"))?;
    runs.create_optimization_run(&ga_run("o"))?;
    runs.update_optimization_status("o", &failed("population collapsed"))?;
    runs.create_study(&NewStudy {
        study_id: "st".into(),
        study_type: "parametric".into(),
        total_simulations: 2,
        configuration: None,
        metadata: None,
    })?;
    runs.update_study_status("st", &failed("grid invalid"))?;
    runs.create_analysis_run(&NewAnalysisRun {
        analysis_id: "an".into(),
        source_type: "study".into(),
        source_id: "st".into(),
        strategies: None,
        metadata: None,
    })?;
    runs.update_analysis_status("an", &failed("no results"))?;
    // An update without a message keeps the stored one.
    runs.update_optimization_status("o", &StatusUpdate::to(RunStatus::Cancelled))?;
    runs.update_study_status("st", &StatusUpdate::to(RunStatus::Cancelled))?;

    let sim = runs
        .simulation("s")?
        .ok_or_else(|| anyhow::anyhow!("no s"))?;
    assert_eq!(sim.error_message.as_deref(), Some("solver diverged"));
    let opt = runs
        .optimization("o")?
        .ok_or_else(|| anyhow::anyhow!("no o"))?;
    assert_eq!(
        (opt.status.as_str(), opt.error_message.as_deref()),
        ("cancelled", Some("population collapsed"))
    );
    let study = runs.study("st")?.ok_or_else(|| anyhow::anyhow!("no st"))?;
    assert_eq!(
        (study.status.as_str(), study.error_message.as_deref()),
        ("cancelled", Some("grid invalid"))
    );
    // Analysis runs have no read of their own.
    let sql = "SELECT count(*) FROM analysis_runs \
               WHERE analysis_id = 'an' AND error_message = 'no results'";
    assert_eq!(count_of(&db, sql, sql, None)?, 1, "{kind:?}");
    Ok(())
}
}

contract_test! {
/// Bug caught: NaN answered differently by the engines (SQLite refused a NaN metric as NULL
/// in a NOT NULL column and read a NaN duration back as `None`; PostgreSQL stored both, and
/// a NaN fitness made the run's best fitness NaN), and a generation of `i64::MAX` that
/// SQLite stored as a REAL it could never read back. Each must be `InvalidInput` on every
/// engine, with nothing written.
fn nan_and_the_last_generation_are_refused_alike(kind: Kind) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, _registry) = open(kind, dir.path(), "eco.db")?;
    let runs = Runs::new(&db);
    runs.create_simulation(&NewSimulation::new("s", "a.yml", "milp"))?;
    let refused = |r: ecosystemiser_db::Result<()>| {
        assert!(matches!(r, Err(Error::InvalidInput { .. })), "{r:?}");
    };
    refused(
        runs.record_metrics("s", &[Metric::new("cost", f64::NAN, None)])
            .map(drop),
    );
    assert!(runs.metrics("s")?.is_empty());
    let update = StatusUpdate {
        duration_seconds: Some(f64::NAN),
        ..StatusUpdate::to(RunStatus::Completed)
    };
    refused(runs.update_simulation_status("s", &update));
    assert_eq!(runs.simulation("s")?.map(|s| s.status), Some("pending".into()));
    runs.create_optimization_run(&ga_run("o"))?;
    let ind = |fitness| Individual {
        individual_id: "a".into(),
        fitness,
        parameters: json!({}),
    };
    refused(runs.record_generation("o", 0, Objective::Minimize, &[ind(f64::NAN)]));
    refused(runs.record_generation("o", i64::MAX, Objective::Minimize, &[ind(1.0)]));
    let p = runs.optimization("o")?.ok_or_else(|| anyhow::anyhow!("no run"))?;
    assert_eq!((p.generations_completed, p.best_fitness, p.iterations), (0, None, 0));
    Ok(())
}
}

contract_test! {
/// Bug caught: a JSON value that is a number, stored whole in a run's `JSON`-typed column,
/// came back changed on SQLite (NUMERIC affinity turned the text into a number):
/// `u64::MAX` as `1.8446744073709552e19`, `1.0` as `1`, `-0.0` as `0`; PostgreSQL kept
/// them. Every value must read back exactly, on every engine.
fn a_number_stored_as_a_runs_json_comes_back_exactly(kind: Kind) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, _registry) = open(kind, dir.path(), "eco.db")?;
    let runs = Runs::new(&db);
    let values = [
        json!(u64::MAX),
        json!(i64::MIN),
        json!(1.0),
        json!(-0.0),
        json!(100.0),
        json!(0.1),
        json!("7"),
        json!(true),
        json!([1.0, 2]),
    ];
    for (i, v) in values.iter().enumerate() {
        let mut sim = NewSimulation::new(format!("s{i}"), "a.yml", "milp");
        sim.metadata = Some(v.clone());
        runs.create_simulation(&sim)?;
        let back = runs
            .simulation(&format!("s{i}"))?
            .and_then(|s| s.metadata)
            .ok_or_else(|| anyhow::anyhow!("no metadata"))?;
        assert_eq!(back.to_string(), v.to_string(), "{v}");
    }
    Ok(())
}
}

contract_test! {
/// Bug caught: text holding a NUL character answered differently by the engines: SQLite
/// stored a run id, path or description with one (rows eco-move could then not move) and
/// looked such keys up as "not found", where PostgreSQL failed every one of those calls
/// (22021). Writes refuse it as `InvalidInput` with nothing stored; lookups find nothing.
fn nul_in_text_is_refused_alike_and_finds_nothing(kind: Kind) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, _registry) = open(kind, dir.path(), "eco.db")?;
    let runs = Runs::new(&db);
    let refused = |r: ecosystemiser_db::Result<()>| {
        assert!(matches!(r, Err(Error::InvalidInput { .. })), "{r:?}");
    };
    refused(runs.create_simulation(&NewSimulation::new("a\0b", "a.yml", "milp")));
    refused(runs.create_simulation(&NewSimulation::new("s", "a\0.yml", "milp")));
    runs.create_simulation(&NewSimulation::new("s", "a.yml", "milp"))?;
    refused(
        runs.record_metrics("s", &[Metric::new("co\0st", 1.0, None)])
            .map(drop),
    );
    if kind != crate::common::Kind::Postgres {
        // The async twin (SQLite's only) answers as the sync call does, not NotFound.
        let metric = [Metric::new("cost", 1.0, None)];
        refused(futures_executor::block_on(runs.record_metrics_async("s\0", &metric)).map(drop));
    }
    let update = StatusUpdate {
        error_message: Some("bad\0".into()),
        ..StatusUpdate::to(RunStatus::Failed)
    };
    refused(runs.update_simulation_status("s", &update));
    refused(
        ecosystemiser_db::ComponentLibrary::new(&db)
            .add_type("battery", "energy", Some("d\0"))
            .map(drop),
    );
    assert!(runs.simulation("x\0y")?.is_none());
    assert!(runs.metrics("x\0y")?.is_empty());
    assert!(runs.study("x\0y")?.is_none());
    assert!(runs.optimization("x\0y")?.is_none());
    let events = ecosystemiser_db::EventStore::new(&db);
    assert!(events.simulation_history("x\0y", 10)?.is_empty());
    assert!(events.get("x\0y")?.is_none());
    let n = |sql: &str| count_of(&db, sql, sql, None);
    assert_eq!(n("SELECT count(*) FROM simulations")?, 1);
    assert_eq!(n("SELECT count(*) FROM component_types")?, 0);
    Ok(())
}
}
