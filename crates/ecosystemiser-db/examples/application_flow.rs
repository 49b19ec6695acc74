//! The EcoSystemiser application flow end to end, on a registry the application installs:
//! open the database, import a component library from YAML, run a study of two
//! simulations with events and metrics, read the histories back, export the library, and
//! report the backend's status and counters.
//!
//! Run with `cargo run -p ecosystemiser-db --example application_flow [FOLDER]`; without a
//! folder everything lives in a temporary one that is removed at the end.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ecosystemiser_db::{
    ComponentLibrary, EcoDb, Event, EventStore, Metric, NewSimulation, NewStudy, RunStatus, Runs,
    Settings, StatusUpdate,
};
use hive_db_core::{Registry, global};
use serde_json::json;

const LIBRARY: &[(&str, &str)] = &[
    (
        "energy/battery_lfp_10_v1.0.0.yaml",
        "type: battery\ncategory: energy\ndescription: electrical storage\nname: lfp_10\n\
         version: 1.0.0\nis_default: true\ntechnical:\n  capacity_kwh: 10.0\n  \
         round_trip_efficiency: 0.92\neconomic:\n  capex_eur: 6500\n",
    ),
    (
        "energy/solar_pv_roof_v1.0.0.yaml",
        "type: solar_pv\ncategory: energy\nname: roof\nis_default: true\ntechnical:\n  \
         peak_kw: 6.0\n  tilt_deg: 35\nenvironmental:\n  embodied_co2_kg: 1800\n",
    ),
];

fn main() -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let root = std::env::args_os()
        .nth(1)
        .map_or_else(|| temp.path().to_path_buf(), Into::into);

    // 1. The application installs the shared registry; the database layer finds it.
    global::install(Registry::new())?;
    let db = EcoDb::from_process(&Settings::new(root.join("ecosystemiser.db")))?;
    println!(
        "database: {} ({:?}, {:?})",
        db.path().display(),
        db.backend(),
        db.reason()
    );

    // 2. The component library, imported from YAML in one transaction.
    let source = root.join("library");
    for (file, text) in LIBRARY {
        write(&source.join(file), text)?;
    }
    let library = ComponentLibrary::new(&db);
    println!("imported {} component specs", library.import_yaml(&source)?);
    for t in library.list_types()? {
        println!(
            "  type {} ({}): {} spec(s)",
            t.name, t.category, t.spec_count
        );
    }
    let battery = library.spec("battery", None, None)?;
    println!("  default battery: {} v{}", battery.name, battery.version);

    // 3. Events, with a subscriber told after each commit.
    let events = EventStore::new(&db);
    let completed = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&completed);
    events.subscribe("simulation.*", move |e| {
        if e.event_type == "simulation.completed" {
            seen.fetch_add(1, Ordering::Relaxed);
        }
    })?;

    // 4. A study of two simulations.
    let runs = Runs::new(&db);
    runs.create_study(&NewStudy {
        study_id: "study-1".into(),
        study_type: "parametric".into(),
        total_simulations: 2,
        configuration: Some(json!({"battery_kwh": [5, 10]})),
        metadata: None,
    })?;
    for (i, kwh) in [5.0, 10.0].into_iter().enumerate() {
        let sim = format!("sim-{i}");
        runs.add_study_simulation(
            "study-1",
            &NewSimulation::new(&sim, "systems/house.yml", "milp"),
            Some(&json!({"battery_kwh": kwh})),
            i64::try_from(i)?,
        )?;
        events.publish(
            &Event::new("simulation.started", "solver", json!({"battery_kwh": kwh}))
                .for_simulation(&sim)
                .correlated("study-1"),
        )?;
        let mut done = StatusUpdate::to(RunStatus::Completed);
        done.duration_seconds = Some(1.0 + kwh / 10.0);
        let cost = 1000.0 + 40.0 * kwh;
        let progress = runs.finish_study_simulation(
            "study-1",
            &sim,
            &done,
            &[
                Metric::new("total_cost", cost, Some("EUR")),
                Metric::new("self_sufficiency", kwh / 12.0, None),
            ],
        )?;
        events.publish(
            &Event::new(
                "simulation.completed",
                "solver",
                json!({"total_cost": cost}),
            )
            .for_simulation(&sim)
            .correlated("study-1"),
        )?;
        println!(
            "  {sim}: study {} ({}/{})",
            progress.status,
            progress.completed_simulations,
            progress.total_simulations.unwrap_or_default()
        );
    }

    // 5. Histories, newest first.
    for e in events.simulation_history("sim-1", 10)? {
        println!("  sim-1 event {} {}", e.event_type, e.payload);
    }
    println!(
        "subscriber saw {} completions",
        completed.load(Ordering::Relaxed)
    );
    println!("sim-0 metrics: {:?}", runs.metrics("sim-0")?);

    // 6. Export the library, one file per spec.
    let exported = library.export_yaml(&root.join("export"))?;
    println!("exported {} files", exported.len());

    // 7. Status and counters, as a monitor would read them.
    println!(
        "{}",
        serde_json::to_string_pretty(&db.integration_status())?
    );
    println!("{}", serde_json::to_string(&db.stats()?)?);
    if let Some(registry) = global::get() {
        for report in registry.close_all(Duration::from_secs(2)) {
            println!("closed: {report:?}");
        }
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, text)?;
    Ok(())
}
