//! The `ecosystemiser` database's operations, each through ecosystemiser-db's repositories:
//! component spec lookups, event publishes and histories, metric batches, and study steps
//! that span the studies, simulations, links and metrics tables.

use anyhow::ensure;
use ecosystemiser_db::{Event, Metric, NewSimulation, NewStudy, RunStatus, StatusUpdate};
use serde_json::json;

use crate::loadtest::eco::{
    BATCH, Eco, EcoAck, SIMULATIONS, SPECS, STUDY_SIZE, TYPES, event_id, event_payload, metric,
    sim_id, study_id, study_sim_id,
};
use crate::loadtest::store::Store;
use crate::loadtest::workload::{Ack, StudyStep, Worker};

/// Newest events a history query reads.
const HISTORY: u32 = 20;

fn repos<'s, S: Store>(w: &Worker<'s, S>) -> anyhow::Result<&'s Eco> {
    w.store.eco()
}

/// Reads one spec: a named one or a type's default.
///
/// # Errors
///
/// The repository's, or a spec other than the one asked for.
pub(crate) fn component_lookup<S: Store>(w: &mut Worker<'_, S>) -> anyhow::Result<()> {
    let (name, _) = TYPES[(w.rng.next() % TYPES.len() as u64) as usize];
    let pick = w.rng.next() % (SPECS + 1);
    let wanted = (pick < SPECS).then(|| format!("model-{pick}"));
    let spec = repos(w)?.library.spec(name, wanted.as_deref(), None)?;
    ensure!(
        spec.component_type == name && wanted.as_ref().map_or(spec.is_default, |n| spec.name == *n),
        "asked for {name} {wanted:?}, got {} {} (default {})",
        spec.component_type,
        spec.name,
        spec.is_default
    );
    Ok(())
}

/// Publishes one progress event of a random simulation.
///
/// # Errors
///
/// The repository's.
pub(crate) fn event_publish<S: Store>(w: &mut Worker<'_, S>) -> anyhow::Result<()> {
    let (worker, seq, sim) = (w.id, w.seq, w.rng.next() % SIMULATIONS);
    let mut event = Event::new(
        "simulation.progress",
        "loadtest",
        event_payload(worker, seq),
    )
    .for_simulation(sim_id(sim))
    .correlated(format!("worker-{worker}"));
    event.event_id = event_id(worker, seq);
    repos(w)?.events.publish(&event)?;
    w.acks.push(Ack::Eco(EcoAck::Event { worker, seq, sim }));
    Ok(())
}

/// Reads the newest events of a random simulation.
///
/// # Errors
///
/// The repository's, or a history of another simulation or over its limit.
pub(crate) fn event_history<S: Store>(w: &mut Worker<'_, S>) -> anyhow::Result<()> {
    let sim = sim_id(w.rng.next() % SIMULATIONS);
    let events = repos(w)?.events.simulation_history(&sim, HISTORY)?;
    ensure!(events.len() <= HISTORY as usize, "{} events", events.len());
    ensure!(
        events
            .iter()
            .all(|e| e.simulation_id.as_deref() == Some(&sim)),
        "history of {sim} holds another simulation's events"
    );
    Ok(())
}

/// Records a batch of metrics of a random simulation in one transaction.
///
/// # Errors
///
/// The repository's.
pub(crate) fn metrics_batch<S: Store>(w: &mut Worker<'_, S>) -> anyhow::Result<()> {
    let (worker, seq, sim) = (w.id, w.seq, w.rng.next() % SIMULATIONS);
    let metrics: Vec<Metric> = (0..BATCH)
        .map(|i| {
            let (name, value) = metric(worker, seq, i);
            Metric::new(name, value, Some("kWh"))
        })
        .collect();
    let n = repos(w)?.runs.record_metrics(&sim_id(sim), &metrics)?;
    ensure!(
        n == metrics.len(),
        "recorded {n} of {} metrics",
        metrics.len()
    );
    w.acks.push(Ack::Eco(EcoAck::Metrics { worker, seq, sim }));
    Ok(())
}

/// Moves this worker's study on by one step: create it; add its next simulation (the study
/// runs; studies, simulations and their links in one transaction); or finish a simulation
/// (its status, its score metric and the study's count, in one transaction).
///
/// # Errors
///
/// The repository's.
pub(crate) fn study_update<S: Store>(w: &mut Worker<'_, S>) -> anyhow::Result<()> {
    let (worker, seq) = (w.id, w.seq);
    let runs = &repos(w)?.runs;
    let step = w.eco.next_step();
    match step {
        StudyStep::Create { k } => runs.create_study(&NewStudy {
            study_id: study_id(worker, k),
            study_type: "parametric".to_owned(),
            total_simulations: STUDY_SIZE,
            configuration: Some(json!({"parameter": "capacity_kw"})),
            metadata: None,
        })?,
        StudyStep::Finish { k, n } => {
            let progress = runs.finish_study_simulation(
                &study_id(worker, k),
                &study_sim_id(worker, k, n),
                &StatusUpdate::to(RunStatus::Completed),
                &[Metric::new("score", seq as f64, None)],
            )?;
            ensure!(
                progress.completed_simulations == i64::from(n + 1),
                "study {} counts {} finished, expected {}",
                progress.study_id,
                progress.completed_simulations,
                n + 1
            );
        }
        StudyStep::Add { k, n } => runs.add_study_simulation(
            &study_id(worker, k),
            &NewSimulation::new(study_sim_id(worker, k, n), "configs/loadtest.yml", "milp"),
            Some(&json!({"capacity_kw": 10 * (n + 1)})),
            i64::from(n),
        )?,
    }
    let ack = w.eco.done(step, worker, seq);
    w.acks.push(Ack::Eco(ack));
    Ok(())
}
