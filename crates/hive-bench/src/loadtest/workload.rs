//! What the load test's workers share and hold: the workload, each worker's own random
//! stream and state, and the record of every write it saw acknowledged. A leaf: the
//! operations use these types, and the runner dispatches to the operations.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::loadtest::eco::{EcoAck, STUDY_SIZE};
use crate::loadtest::mix::{Mix, Op};
use crate::measure::Rng;

/// Faults a test can switch on to prove the verifier catches them. All off by default, and
/// not reachable from the command line.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// The first original-test transaction deletes its own row before committing, and its
    /// worker still records the insert as acknowledged: an acknowledged write goes missing.
    pub(crate) drop_acknowledged_write: bool,
    /// The load test checks out one connection of the `ecosystemiser` database and keeps it
    /// until after every database is closed.
    pub(crate) leak_connection: bool,
}

/// How the `ecosystemiser` operations reach their tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layer {
    /// Through ecosystemiser-db's repositories (the registry's path only).
    Repositories,
    /// The same statements in plain SQL on the store's connections (every path).
    PlainSql,
}

/// What every worker shares: the mix, the databases, and the faults.
#[derive(Debug)]
pub(crate) struct Workload {
    /// The operations and their weights.
    pub(crate) mix: Mix,
    /// Application databases (indexes `1..=app_dbs` of the store).
    pub(crate) app_dbs: usize,
    /// How the `ecosystemiser` operations run.
    pub(crate) layer: Layer,
    /// Injected faults (tests only).
    pub(crate) faults: Faults,
    /// Set once the dropped-write fault has fired.
    drop_fired: AtomicBool,
}

impl Workload {
    pub(crate) fn new(mix: Mix, app_dbs: usize, layer: Layer, faults: Faults) -> Self {
        Self {
            mix,
            app_dbs,
            layer,
            faults,
            drop_fired: AtomicBool::new(false),
        }
    }

    /// True exactly once when the dropped-write fault is on.
    pub(crate) fn take_drop_fault(&self) -> bool {
        self.faults.drop_acknowledged_write && !self.drop_fired.swap(true, Ordering::Relaxed)
    }
}

/// A write a worker saw acknowledged (its `write` returned `Ok`). Contents are derived from
/// `(worker, seq)`, so the record stays small and the verifier can rebuild them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ack {
    /// A row of the original test's `load_test` table.
    Original { id: i64, worker: u32, seq: u64 },
    /// A task enqueued on application database `db`.
    TaskEnqueued {
        db: usize,
        id: i64,
        worker: u32,
        seq: u64,
    },
    /// A task claimed by `worker`.
    TaskClaimed { db: usize, id: i64, worker: u32 },
    /// A task completed by `worker` in its operation `seq`.
    TaskDone {
        db: usize,
        id: i64,
        worker: u32,
        seq: u64,
    },
    /// A write to the `ecosystemiser` database's own tables.
    Eco(EcoAck),
}

/// Where a worker's current study is (see `eco_ops::study_update`).
#[derive(Debug, Default)]
pub(crate) struct EcoWorker {
    /// Studies created so far; the current one is the last.
    studies: u32,
    added: u32,
    finished: u32,
}

/// The next step of a worker's study, the same through the data layer and in plain SQL.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StudyStep {
    /// Create study `k` (the first, or the next once the last one finished).
    Create { k: u32 },
    /// Add simulation `n` to study `k`, which runs.
    Add { k: u32, n: u32 },
    /// Finish simulation `n` of study `k`.
    Finish { k: u32, n: u32 },
}

impl EcoWorker {
    /// What comes next: a new study, or the study's next simulation added or finished.
    pub(crate) fn next_step(&self) -> StudyStep {
        if self.studies == 0 || self.finished == STUDY_SIZE {
            StudyStep::Create { k: self.studies }
        } else if self.finished < self.added {
            StudyStep::Finish {
                k: self.studies - 1,
                n: self.finished,
            }
        } else {
            StudyStep::Add {
                k: self.studies - 1,
                n: self.added,
            }
        }
    }

    /// Moves on past `step`, which worker `worker` did in its operation `seq`, and returns
    /// the write to record as acknowledged.
    pub(crate) fn done(&mut self, step: StudyStep, worker: u32, seq: u64) -> EcoAck {
        match step {
            StudyStep::Create { k } => {
                *self = EcoWorker {
                    studies: k + 1,
                    added: 0,
                    finished: 0,
                };
                EcoAck::StudyCreated { worker, k }
            }
            StudyStep::Add { k, n } => {
                self.added += 1;
                EcoAck::StudySimAdded { worker, k, n }
            }
            StudyStep::Finish { k, n } => {
                self.finished += 1;
                EcoAck::StudySimFinished { worker, k, n, seq }
            }
        }
    }
}

/// One worker's state.
pub(crate) struct Worker<'a, S> {
    /// Its number, from 0.
    pub(crate) id: u32,
    /// Its operations so far (the current one's number while it runs).
    pub(crate) seq: u64,
    pub(crate) rng: Rng,
    pub(crate) store: &'a S,
    pub(crate) workload: &'a Workload,
    /// Tasks this worker claimed and has not completed yet, per application database.
    pub(crate) claimed: Vec<Vec<i64>>,
    /// Every write it saw acknowledged, in order.
    pub(crate) acks: Vec<Ack>,
    /// Per-worker state of the `ecosystemiser` operations.
    pub(crate) eco: EcoWorker,
}

impl<S> std::fmt::Debug for Worker<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.id)
            .field("seq", &self.seq)
            .field("acks", &self.acks.len())
            .finish_non_exhaustive()
    }
}

impl<'a, S> Worker<'a, S> {
    pub(crate) fn new(id: u32, seed: u64, store: &'a S, workload: &'a Workload) -> Self {
        Self {
            id,
            seq: 0,
            // Each worker its own stream of the same seed: runs with the same seed and
            // worker count draw the same operations.
            rng: Rng::new(seed ^ (u64::from(id) + 1).wrapping_mul(0xA24B_AED4_963E_E407)),
            store,
            workload,
            claimed: vec![Vec::new(); workload.app_dbs],
            acks: Vec::new(),
            eco: EcoWorker::default(),
        }
    }

    /// Draws the next operation.
    pub(crate) fn next_op(&mut self) -> Op {
        self.workload.mix.pick(&mut self.rng)
    }

    /// A random application database's index in the store.
    pub(crate) fn random_app_db(&mut self) -> usize {
        1 + (self.rng.next() % self.workload.app_dbs.max(1) as u64) as usize
    }
}
