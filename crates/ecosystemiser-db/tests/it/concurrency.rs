//! Many threads at once: nothing lost, order kept.

use std::sync::{Arc, Barrier};

use ecosystemiser_db::{Event, EventStore, HistoryOf, Metric, NewSimulation, Runs};
use serde_json::json;

use crate::common::{contract_test, open};

const THREADS: usize = 8;
const PER_THREAD: usize = 40;

contract_test! {
/// Bug caught: events lost or duplicated under concurrent publishing (a shared transaction
/// rolled back, a permit leaked, a busy error swallowed), or a history out of order.
fn eight_threads_publish_and_nothing_is_lost(kind: Kind) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, _registry) = open(kind, dir.path(), "eco.db")?;
    let store = EventStore::new(&db);
    let runs = Runs::new(&db);
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = store.clone();
            let runs = runs.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || -> anyhow::Result<()> {
                let sim = format!("sim-{t}");
                runs.create_simulation(&NewSimulation::new(&sim, "s.yml", "milp"))?;
                barrier.wait();
                for i in 0..PER_THREAD {
                    let e =
                        Event::new("simulation.step", format!("worker-{t}"), json!({"i": i}))
                            .for_simulation(&sim)
                            .correlated(format!("wf-{t}"));
                    store.publish(&e)?;
                    runs.record_metrics(&sim, &[Metric::new("step", i as f64, None)])?;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("thread panicked"))??;
    }
    let all = store.history(HistoryOf::Type("simulation.step"), 10_000)?;
    assert_eq!(all.len(), THREADS * PER_THREAD, "{kind:?}");
    for t in 0..THREADS {
        let mine = store.simulation_history(&format!("sim-{t}"), 1000)?;
        let order: Vec<_> = mine.iter().map(|e| e.payload["i"].clone()).collect();
        let expected: Vec<_> = (0..PER_THREAD).rev().map(|i| json!(i)).collect();
        assert_eq!(order, expected, "{kind:?} thread {t}");
        assert_eq!(runs.metrics(&format!("sim-{t}"))?.len(), PER_THREAD);
    }
    Ok(())
}
}

/// Bug caught: a repository handle that cannot be shared with the worker threads of the
/// application or the load test.
#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync + Clone>() {}
    check::<ecosystemiser_db::EcoDb>();
    check::<EventStore>();
    check::<Runs>();
    check::<ecosystemiser_db::ComponentLibrary>();
}
