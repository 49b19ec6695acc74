//! Running the workers: each draws operations from the mix until the time is up or it has
//! run its share, runs each (the one place that maps an operation to its code), timing every
//! operation and counting errors by kind.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Condvar, Mutex, PoisonError};
use std::thread::ScopedJoinHandle;
use std::time::{Duration, Instant};

use crate::loadtest::mix::Op;
use crate::loadtest::progress::{self, Goal, Live, Style};
use crate::loadtest::store::Store;
use crate::loadtest::workload::{Ack, Layer, Worker, Workload};
use crate::loadtest::{eco_ops, eco_sql, original, tasks};

/// How long the workers run.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Limit {
    /// Until this much time has passed.
    Time(Duration),
    /// Until each worker has run this many operations.
    OpsPerWorker(u64),
}

/// Errors of one kind.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub(crate) struct ErrorKind {
    /// How many.
    pub(crate) count: u64,
    /// The first one's message, with its causes.
    pub(crate) first: String,
}

/// What the workers did.
#[derive(Debug, Default)]
pub(crate) struct Ran {
    /// From the start signal to the last worker's end.
    pub(crate) elapsed: Duration,
    /// Sorted latencies in nanoseconds, per operation (index of [`Op::ALL`]), failed ones
    /// included.
    pub(crate) latencies: Vec<Vec<u64>>,
    /// Failed operations, per operation.
    pub(crate) failed: Vec<u64>,
    /// Errors by kind.
    pub(crate) errors: BTreeMap<String, ErrorKind>,
    /// Every acknowledged write of every worker.
    pub(crate) acks: Vec<Ack>,
}

impl Ran {
    /// Operations run, failed ones included.
    pub(crate) fn ops(&self) -> u64 {
        self.latencies.iter().map(|l| l.len() as u64).sum()
    }

    /// Operations failed.
    pub(crate) fn error_count(&self) -> u64 {
        self.failed.iter().sum()
    }

    /// Takes in the workers' results: `true` when a worker panicked.
    fn absorb(&mut self, results: Vec<std::thread::Result<WorkerResult>>) -> bool {
        self.latencies = vec![Vec::new(); Op::ALL.len()];
        self.failed = vec![0; Op::ALL.len()];
        let mut panicked = false;
        // Room for every acknowledgement at once: growing the vector by doubling while the
        // workers' own vectors are still held was the run's peak memory.
        let total = results
            .iter()
            .map(|r| r.as_ref().map_or(0, |r| r.acks.len()))
            .sum();
        self.acks.reserve_exact(total);
        for result in results {
            match result {
                Ok(r) => {
                    for (all, mine) in self.latencies.iter_mut().zip(r.latencies) {
                        all.extend(mine);
                    }
                    for (all, mine) in self.failed.iter_mut().zip(r.failed) {
                        *all += mine;
                    }
                    for (kind, e) in r.errors {
                        let entry = self.errors.entry(kind).or_insert_with(|| ErrorKind {
                            count: 0,
                            first: e.first.clone(),
                        });
                        entry.count += e.count;
                    }
                    self.acks.extend(r.acks);
                }
                Err(_) => panicked = true,
            }
        }
        panicked
    }
}

#[derive(Debug)]
struct WorkerResult {
    latencies: Vec<Vec<u64>>,
    failed: Vec<u64>,
    errors: BTreeMap<String, ErrorKind>,
    acks: Vec<Ack>,
}

/// A short name for the kind of `e`: the core error's variant, SQLite's error code,
/// PostgreSQL's SQLSTATE, or the kind of pool error.
pub(crate) fn error_kind(e: &anyhow::Error) -> String {
    if let Some(core) = e.downcast_ref::<hive_db_core::Error>() {
        // The variant's name: the Debug text up to its fields.
        let debug = format!("{core:?}");
        let variant = debug
            .split(|c: char| !c.is_alphanumeric())
            .next()
            .unwrap_or("");
        return format!("core {variant}");
    }
    if let Some(sqlite) = e.downcast_ref::<hive_db_core::rusqlite::Error>() {
        return match sqlite.sqlite_error_code() {
            Some(code) => format!("sqlite {code:?}"),
            None => "sqlite (no code)".to_owned(),
        };
    }
    if let Some(pg) = e.downcast_ref::<hive_db_core::postgres::Error>() {
        return match pg.code() {
            Some(code) => format!("postgres {}", code.code()),
            None => "postgres (no SQLSTATE)".to_owned(),
        };
    }
    if e.downcast_ref::<r2d2::Error>().is_some() {
        return "r2d2 checkout timeout".to_owned();
    }
    "other".to_owned()
}

/// Runs `workers` workers on `store` until `limit`, showing progress as `style` says.
///
/// # Errors
///
/// When a worker thread panics.
pub(crate) fn drive<S: Store>(
    store: &S,
    workload: &Workload,
    workers: usize,
    limit: Limit,
    seed: u64,
    style: Style,
) -> anyhow::Result<Ran> {
    let live = Live::default();
    let stop = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    let gate = Gate::default();
    let goal = match limit {
        Limit::Time(d) => Goal::Time(d),
        Limit::OpsPerWorker(n) => Goal::Ops(n * workers as u64),
    };
    std::thread::scope(|scope| -> anyhow::Result<Ran> {
        let handles = (0..workers)
            .map(|id| {
                let (live, stop, gate) = (&live, &stop, &gate);
                std::thread::Builder::new()
                    .name(format!("load-worker-{id}"))
                    .spawn_scoped(scope, move || {
                        let mut w = Worker::new(id as u32, seed, store, workload);
                        let limit = if gate.wait() {
                            limit
                        } else {
                            Limit::OpsPerWorker(0)
                        };
                        work(&mut w, limit, live, stop)
                    })
            })
            .collect::<Result<Vec<_>, _>>();
        // A worker that cannot be started must not leave the others waiting to start.
        let handles = match handles {
            Ok(handles) => {
                gate.open(true);
                handles
            }
            Err(e) => {
                gate.open(false);
                return Err(anyhow::Error::from(e).context("cannot start a load-test worker"));
            }
        };
        let start = Instant::now();
        let shown = scope.spawn(|| progress::show("loadtest", &live, goal, style, &done));
        if let Limit::Time(d) = limit {
            stop_at(start + d, &handles, &stop);
        }
        let results: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
        let mut ran = Ran::default();
        let panicked = ran.absorb(results);
        ran.elapsed = start.elapsed();
        done.store(true, Relaxed);
        shown.thread().unpark();
        shown
            .join()
            .map_err(|_| anyhow::anyhow!("the progress thread panicked"))?;
        anyhow::ensure!(!panicked, "a load-test worker panicked");
        for l in &mut ran.latencies {
            l.sort_unstable();
        }
        Ok(ran)
    })
}

/// Waits until `deadline`, or until every worker has stopped, then tells the workers to stop.
fn stop_at<T>(deadline: Instant, workers: &[ScopedJoinHandle<'_, T>], stop: &AtomicBool) {
    // Woken early only if every worker has already stopped (never, by time).
    while Instant::now() < deadline && !workers.iter().all(|h| h.is_finished()) {
        std::thread::park_timeout(deadline.saturating_duration_since(Instant::now()));
    }
    stop.store(true, Relaxed);
}

/// Where the workers wait until all of them are started: then they run, or, when one could
/// not be started, they stop at once.
#[derive(Debug, Default)]
struct Gate {
    open: Mutex<Option<bool>>,
    opened: Condvar,
}

impl Gate {
    /// Waits until the gate opens: `true` to run.
    fn wait(&self) -> bool {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(run) = *open {
                return run;
            }
            open = self
                .opened
                .wait(open)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn open(&self, run: bool) {
        *self.open.lock().unwrap_or_else(PoisonError::into_inner) = Some(run);
        self.opened.notify_all();
    }
}

fn work<S: Store>(
    w: &mut Worker<'_, S>,
    limit: Limit,
    live: &Live,
    stop: &AtomicBool,
) -> WorkerResult {
    let mut r = WorkerResult {
        latencies: vec![Vec::new(); Op::ALL.len()],
        failed: vec![0; Op::ALL.len()],
        errors: BTreeMap::new(),
        acks: Vec::new(),
    };
    let mut n = 0u64;
    loop {
        match limit {
            Limit::Time(_) if stop.load(Relaxed) => break,
            Limit::OpsPerWorker(max) if n >= max => break,
            _ => {}
        }
        let op = w.next_op();
        let t0 = Instant::now();
        let outcome = run_op(w, op);
        r.latencies[op.index()].push(t0.elapsed().as_nanos() as u64);
        n += 1;
        live.ops.fetch_add(1, Relaxed);
        if let Err(e) = outcome {
            live.errors.fetch_add(1, Relaxed);
            r.failed[op.index()] += 1;
            let entry = r.errors.entry(error_kind(&e)).or_default();
            if entry.count == 0 {
                entry.first = format!("{op}: {e:#}");
            }
            entry.count += 1;
        }
    }
    r.acks = std::mem::take(&mut w.acks);
    r
}

/// Runs `op` once as worker `w`'s next operation.
///
/// # Errors
///
/// The operation's error; nothing of a failed write is recorded as acknowledged.
fn run_op<S: Store>(w: &mut Worker<'_, S>, op: Op) -> anyhow::Result<()> {
    w.seq += 1;
    let layer = w.workload.layer;
    match (op, layer) {
        (Op::OriginalTxn, _) => original::transaction(w),
        (Op::TaskEnqueue, _) => tasks::enqueue(w),
        (Op::TaskClaim, _) => tasks::claim(w),
        (Op::TaskComplete, _) => tasks::complete(w),
        (Op::TaskList, _) => tasks::list(w),
        (Op::ComponentLookup, Layer::Repositories) => eco_ops::component_lookup(w),
        (Op::ComponentLookup, Layer::PlainSql) => eco_sql::component_lookup(w),
        (Op::EventPublish, Layer::Repositories) => eco_ops::event_publish(w),
        (Op::EventPublish, Layer::PlainSql) => eco_sql::event_publish(w),
        (Op::EventHistory, Layer::Repositories) => eco_ops::event_history(w),
        (Op::EventHistory, Layer::PlainSql) => eco_sql::event_history(w),
        (Op::MetricsBatch, Layer::Repositories) => eco_ops::metrics_batch(w),
        (Op::MetricsBatch, Layer::PlainSql) => eco_sql::metrics_batch(w),
        (Op::StudyUpdate, Layer::Repositories) => eco_ops::study_update(w),
        (Op::StudyUpdate, Layer::PlainSql) => eco_sql::study_update(w),
    }
}

#[cfg(test)]
mod tests {
    use hive_db_core::{DbName, Registry};

    use super::*;

    /// Bug caught: errors by kind lumping every failure together as `other` (the core's
    /// variant or SQLite's code lost behind anyhow's wrapping), so the report cannot say what
    /// failed.
    #[test]
    fn errors_are_sorted_by_kind() -> anyhow::Result<()> {
        let registry = Registry::new();
        let unknown = registry
            .read_with(&DbName::new("nowhere")?, |_| Ok::<_, anyhow::Error>(()))
            .unwrap_err()
            .context("an operation");
        assert_eq!(error_kind(&unknown), "core UnknownDatabase");
        let conn = hive_db_core::rusqlite::Connection::open_in_memory()?;
        let sqlite = anyhow::Error::from(
            conn.execute("INSERT INTO missing VALUES (1)", [])
                .unwrap_err(),
        );
        assert!(
            error_kind(&sqlite).starts_with("sqlite "),
            "{}",
            error_kind(&sqlite)
        );
        assert_eq!(error_kind(&anyhow::anyhow!("something else")), "other");
        Ok(())
    }
}
