//! The load test's `ecosystemiser` database: its repositories, what it is filled with, and
//! the names and values its writes use, from which the verifier rebuilds them.

use std::path::Path;

use ecosystemiser_db::{
    ComponentLibrary, ComponentSpec, EcoDb, EventStore, NewSimulation, Runs, Settings,
};
use hive_db_core::{DbConfig, PgConfig, Registry};
use serde_json::{Value, json};

/// The `ecosystemiser` database's index in the store.
pub(crate) const ECO: usize = 0;

/// Component types of the library, with their categories.
pub(crate) const TYPES: [(&str, &str); 5] = [
    ("battery", "storage"),
    ("solar_pv", "generation"),
    ("heat_pump", "conversion"),
    ("grid", "transmission"),
    ("wind_turbine", "generation"),
];
/// Specs per type; `model-0` is the default.
pub(crate) const SPECS: u64 = 4;
/// Simulations events and metrics are written for.
pub(crate) const SIMULATIONS: u64 = 16;
/// Simulations of each study.
pub(crate) const STUDY_SIZE: u32 = 3;
/// Metrics per batch.
pub(crate) const BATCH: u64 = 10;

/// The repositories of one `ecosystemiser` database.
#[derive(Debug)]
pub(crate) struct Eco {
    pub(crate) library: ComponentLibrary,
    pub(crate) events: EventStore,
    pub(crate) runs: Runs,
}

impl Eco {
    fn new(db: &EcoDb) -> Self {
        Self {
            library: ComponentLibrary::new(db),
            events: EventStore::new(db),
            runs: Runs::new(db),
        }
    }
}

fn settings(path: &Path, config: &DbConfig) -> Settings {
    let mut settings = Settings::new(path);
    settings.db = config.clone();
    settings
}

/// Registers the `ecosystemiser` database in `registry` at `path` (the data layer migrates
/// it to its full schema) and fills the component library and the simulations.
///
/// # Errors
///
/// When it cannot be registered, migrated or filled.
pub(crate) fn register(registry: &Registry, path: &Path, config: &DbConfig) -> anyhow::Result<Eco> {
    fill(&EcoDb::with_registry(registry, &settings(path, config))?)
}

/// Registers the `ecosystemiser` database in `registry` on the PostgreSQL database `url`
/// (the data layer migrates it to its full schema) and fills it as [`register`] does.
///
/// # Errors
///
/// When it cannot be registered, migrated or filled.
pub(crate) fn register_postgres(
    registry: &Registry,
    url: &str,
    config: PgConfig,
) -> anyhow::Result<Eco> {
    fill(&EcoDb::with_postgres(registry, url, config)?)
}

/// The repositories on `db`, with the component library and the simulations filled in.
fn fill(db: &EcoDb) -> anyhow::Result<Eco> {
    let eco = Eco::new(db);
    for (t, (name, category)) in TYPES.iter().enumerate() {
        eco.library.add_type(name, category, Some("load test"))?;
        for s in 0..SPECS {
            let technical =
                json!({"capacity_kw": 10 * (t as u64 + 1) * (s + 1), "efficiency": 0.9});
            let Value::Object(technical) = technical else {
                unreachable!("a JSON object literal")
            };
            eco.library.add_spec(&ComponentSpec::new(
                *name,
                *category,
                format!("model-{s}"),
                technical,
            ))?;
        }
        eco.library.set_default(name, "model-0", "1.0.0")?;
    }
    for s in 0..SIMULATIONS {
        eco.runs.create_simulation(&NewSimulation::new(
            sim_id(s),
            "configs/loadtest.yml",
            "milp",
        ))?;
    }
    Ok(eco)
}

pub(crate) fn sim_id(n: u64) -> String {
    format!("sim-{n}")
}

pub(crate) fn event_id(worker: u32, seq: u64) -> String {
    format!("w{worker}-s{seq}")
}

pub(crate) fn event_payload(worker: u32, seq: u64) -> Value {
    json!({"worker": worker, "seq": seq, "progress": seq % 100})
}

pub(crate) fn metric(worker: u32, seq: u64, i: u64) -> (String, f64) {
    (format!("w{worker}-s{seq}-m{i}"), (seq * BATCH + i) as f64)
}

pub(crate) fn study_id(worker: u32, k: u32) -> String {
    format!("study-w{worker}-{k}")
}

pub(crate) fn study_sim_id(worker: u32, k: u32, n: u32) -> String {
    format!("study-w{worker}-{k}-sim-{n}")
}

/// A write to the `ecosystemiser` database's tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EcoAck {
    /// An event of simulation `sim`.
    Event { worker: u32, seq: u64, sim: u64 },
    /// A batch of [`BATCH`] metrics of simulation `sim`.
    Metrics { worker: u32, seq: u64, sim: u64 },
    /// Study `k` of `worker` created.
    StudyCreated { worker: u32, k: u32 },
    /// Simulation `n` of the study added.
    StudySimAdded { worker: u32, k: u32, n: u32 },
    /// Simulation `n` of the study finished, with its score, in operation `seq`.
    StudySimFinished {
        worker: u32,
        k: u32,
        n: u32,
        seq: u64,
    },
}
